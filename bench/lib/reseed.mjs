import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { progress, runNode } from './proc.mjs';
import { round } from './fixture.mjs';

const CHILD = path.join(import.meta.dirname, 'reseed-child.mjs');

/**
 * Reseed: the pseudonyms of every subject for a new epoch (what a SEEDUPDATE costs), through the
 * engine's ensureFilled, against a bare chunked key-ordered hash-and-insert loop on all cores.
 * Both run in their own child process on the same copy of the consumer database (N subjects, the
 * current epochs' pseudonyms), so each peak RSS is its own; the engine's rows are then checked
 * equal to the bare loop's. Each also reports its longest event-loop stall.
 */
export async function benchReseed(fixture) {
  const copy = path.join(fixture.dir, 'reseed.db');
  for (const suffix of ['', '-wal', '-shm']) {
    if (fs.existsSync(fixture.dbFile + suffix)) fs.copyFileSync(fixture.dbFile + suffix, copy + suffix);
  }
  const seed = randomBytes(16).toString('base64');
  const eserviceId = fixture.eservices.catchup.id;
  try {
    progress('reseed limit: bare hash + insert loop (own process)');
    const bare = JSON.parse((await runNode([CHILD, 'bare', copy, eserviceId, seed])).stdout);
    progress(`  ${bare.rows} rows in ${bare.seconds.toFixed(2)} s; reseed through ensureFilled (own process)`);
    const engine = JSON.parse((await runNode([CHILD, 'engine', copy, eserviceId, seed])).stdout);
    progress(`  ${engine.rows} rows in ${engine.seconds.toFixed(2)} s, peak RSS ${engine.peakRssMb.toFixed(0)} MB, longest stall ${engine.stallMs} ms, ${engine.bytesPerPseudonym?.toFixed(1)} bytes per pseudonym`);
    const verified = verify(copy, engine.epochId, bare.table, fixture.subjects);
    return {
      subjects: fixture.subjects,
      seconds: round(engine.seconds),
      limitSeconds: round(bare.seconds),
      ratio: round(engine.seconds / bare.seconds, 2),
      peakRssMb: round(engine.peakRssMb, 1),
      limitPeakRssMb: round(bare.peakRssMb, 1),
      stallMs: engine.stallMs,
      limitStallMs: bare.stallMs,
      bytesPerPseudonym: round(engine.bytesPerPseudonym, 1),
      limit: 'key-ordered hash-and-insert on all cores: every pair in memory, sorted by bucket, inserted in key order with the same multi-row statement, no spool, no resumability (bench/lib/reseed-child.mjs bare)',
      targets: { maxRatio: 1.5, maxPeakRssMb: 250, maxStallMs: 250, maxSecondsAt10M: 20 },
      verified,
    };
  } finally {
    for (const suffix of ['', '-wal', '-shm']) fs.rmSync(copy + suffix, { force: true });
  }
}

/** Every subject got exactly the pseudonym the bare loop computed. */
function verify(file, epochId, bareTable, subjects) {
  const db = new Database(file, { readonly: true });
  try {
    const engineRows = db.prepare(`SELECT count(*) AS n FROM pseudonyms_${epochId}`).get().n;
    const same = db.prepare(`SELECT count(*) AS n FROM pseudonyms_${epochId} p JOIN ${bareTable} b ON b.prefix = p.prefix AND b.subject_id = p.subject_id`).get().n;
    const counted = db.prepare('SELECT pseudonym_count AS n FROM epochs WHERE id = ?').get(epochId).n;
    const ok = engineRows === subjects && same === subjects && counted === subjects;
    if (!ok) throw new Error(`reseed rows differ: engine ${engineRows}, equal to the bare loop's ${same}, epoch count ${counted}, subjects ${subjects}`);
    return { rows: engineRows, equalToLimit: same };
  } finally {
    db.close();
  }
}
