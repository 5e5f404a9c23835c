import fs from 'node:fs';
import Database from 'better-sqlite3';
import { procStatusMb, progress, sleep, startCli, stopChild } from './proc.mjs';
import { round } from './fixture.mjs';

/**
 * Footprint: the RSS of the daemon (`run`) idle after the catch-up, and the database's size per
 * subject (file + WAL after a checkpoint, divided by N), with a per-table breakdown (dbstat).
 */
export async function benchFootprint(fixture, { settleSeconds }) {
  const daemon = await idleDaemonRss(fixture, settleSeconds);
  const db = databaseSize(fixture);
  return { ...daemon, ...db };
}

async function idleDaemonRss(fixture, settleSeconds) {
  progress('footprint: starting "run" and waiting until every e-service is caught up');
  const startedAt = Date.now();
  const child = startCli(['--config', fixture.configFile, 'run']);
  const deadline = startedAt + 180_000;
  try {
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        const why = child.collected.trim().split('\n').at(-1) ?? '';
        return { idleRssMb: null, idleNote: `"run" exited with ${child.exitCode ?? child.signalCode} before catching up: ${why.slice(0, 200)}` };
      }
      if (caughtUpSince(fixture, startedAt)) break;
      if (Date.now() > deadline) return { idleRssMb: null, idleNote: '"run" did not report every e-service caught up within 180 s' };
      await sleep(250);
    }
    await sleep(settleSeconds * 1000);
    const idleRssMb = procStatusMb(child.pid, 'VmRSS');
    const peakRssMb = procStatusMb(child.pid, 'VmHWM');
    progress(`  idle RSS ${idleRssMb.toFixed(1)} MB (peak ${peakRssMb.toFixed(1)} MB) after ${settleSeconds} s idle`);
    return { idleRssMb: round(idleRssMb, 1), daemonPeakRssMb: round(peakRssMb, 1), idleAfterSeconds: settleSeconds };
  } finally {
    await stopChild(child);
  }
}

function caughtUpSince(fixture, since) {
  let db;
  try {
    db = new Database(fixture.dbFile, { readonly: true, timeout: 1000 });
    const rows = db.prepare('SELECT eservice_id, caught_up_at FROM eservices').all();
    const ids = Object.values(fixture.eservices).map((e) => e.id);
    return ids.every((id) => (rows.find((r) => r.eservice_id === id)?.caught_up_at ?? 0) >= since);
  } catch {
    return false;
  } finally {
    db?.close();
  }
}

/** The per-epoch pseudonym tables (src/store/pseudonyms.ts). */
function pseudonymTables(db) {
  return db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name GLOB 'pseudonyms_[0-9]*'").pluck().all();
}

function databaseSize(fixture) {
  const db = new Database(fixture.dbFile);
  try {
    db.pragma('wal_checkpoint(TRUNCATE)');
    const sizeOf = (suffix) => (fs.existsSync(fixture.dbFile + suffix) ? fs.statSync(fixture.dbFile + suffix).size : 0);
    const bytes = sizeOf('') + sizeOf('-wal');
    // Group each index with its table, so the breakdown reads as "what a subject costs".
    const owners = new Map(db.prepare("SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')").all().map((r) => [r.name, r.tbl_name]));
    const byTable = {};
    for (const { name, bytes: b } of db.prepare('SELECT name, sum(pgsize) AS bytes FROM dbstat GROUP BY name').all()) {
      const table = owners.get(name) ?? name;
      byTable[table] = (byTable[table] ?? 0) + b;
    }
    const counts = {
      subjects: db.prepare('SELECT count(*) AS n FROM subjects').get().n,
      pseudonyms: pseudonymTables(db).reduce((n, t) => n + db.prepare(`SELECT count(*) AS n FROM ${t}`).get().n, 0),
      signalLog: db.prepare('SELECT count(*) AS n FROM signal_log').get().n,
      outbox: db.prepare('SELECT count(*) AS n FROM outbox').get().n,
    };
    const pseudonymBytes = pseudonymTables(db).reduce((b, t) => b + (byTable[t] ?? 0), 0);
    const perSubject = ((byTable.subjects ?? 0) + (byTable.subject_eservices ?? 0) + pseudonymBytes) / fixture.subjects;
    progress(`  database ${(bytes / 2 ** 20).toFixed(1)} MB = ${(bytes / fixture.subjects).toFixed(0)} bytes per subject`);
    return {
      dbBytes: bytes,
      dbBytesPerSubject: Math.round(bytes / fixture.subjects),
      subjectBytesPerSubject: Math.round(perSubject),
      dbBytesByTable: byTable,
      dbRows: counts,
      bytesPerPseudonym: counts.pseudonyms > 0 ? Math.round((pseudonymBytes / counts.pseudonyms) * 10) / 10 : null,
      dbNote: 'dbBytesPerSubject = whole file / N, including the signal log of every pulled signal and the outbox; subjectBytesPerSubject = subjects + the pseudonyms of the live epochs (one per e-service), per subject',
    };
  } finally {
    db.close();
  }
}
