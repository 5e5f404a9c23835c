/**
 * One side of the reseed benchmark, in its own process so that its peak RSS (VmHWM) is its own.
 *
 *   node reseed-child.mjs engine <db> <eserviceId> <seed>
 *     the daemon's code path: a new (pending) epoch row, then ensureFilled (src/sync/reseed.ts):
 *     chunks hashed on worker threads, each chunk its own short transaction, while a timer
 *     measures the longest event-loop stall.
 *   node reseed-child.mjs bare <db> <eserviceId> <seed>
 *     the limit: the same hashing and key-ordered writes with nothing else: subjects read by id
 *     in packed pages of 20 k, hashed on the same worker threads (a page in flight on each),
 *     every (prefix, subject_id) pair kept in memory (no spool on disk: memory grows with N),
 *     put in buckets by a counting sort, each sorted the same way, and inserted in key order
 *     into a fresh table of the same shape with the same multi-row statement, one transaction
 *     per 50 k rows, autocheckpoint as configured. No spool files, no resumability bookkeeping,
 *     no skips, no bound on memory.
 *   node reseed-child.mjs prime <db>
 *     fills every pending epoch (the fixture's first epochs), so later phases time matching only.
 *
 * Prints one JSON line: {rows, seconds, peakRssMb, stallMs, epochId|table, bytesPerPseudonym}.
 */
import fs from 'node:fs';
import { openDatabase } from '../../dist/store/db.js';
import { EServiceStore } from '../../dist/store/eservices.js';
import { EpochStore } from '../../dist/store/epochs.js';
import { PseudonymStore } from '../../dist/store/pseudonyms.js';
import { ensureFilled } from '../../dist/sync/reseed.js';
import { HashPool } from '../../dist/sync/hash-pool.js';
import { bucketBitsFor, bucketOf, sortRecords } from '../../dist/store/fill-spool.js';
import { PseudonymHasher, seedFingerprint } from '../../dist/crypto/pseudonym.js';
import { stallMonitor } from './stall.mjs';

const [mode, file, eserviceId, seed] = process.argv.slice(2);
if (!mode || !file || (mode !== 'prime' && (!eserviceId || !seed))) {
  process.stderr.write('usage: reseed-child.mjs engine|bare <db> <eserviceId> <seed> | prime <db>\n');
  process.exit(64);
}

function peakRssMb() {
  const match = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return match ? Number(match[1]) / 1024 : null;
}

const TEMPLATE = '${subject}${seed}';

/** Bytes the table's pages take (dbstat), per row. */
function bytesPerRow(db, table) {
  const bytes = db.prepare('SELECT sum(pgsize) AS b FROM dbstat WHERE name = ?').get(table).b ?? 0;
  const rows = db.prepare(`SELECT count(*) AS n FROM ${table}`).get().n;
  return rows > 0 ? bytes / rows : null;
}

async function engine() {
  const db = openDatabase(file);
  const es = new EServiceStore(db).get(eserviceId);
  if (!es) throw new Error(`e-service ${eserviceId} not in ${file}`);
  const epochs = new EpochStore(db);
  const last = epochs.forEService(es.id).at(-1);
  const stall = stallMonitor();
  const started = process.hrtime.bigint();
  const epoch = epochs.create(
    {
      eservice: es.id,
      startSignalId: (last?.startSignalId ?? 0) + 1_000_000_000,
      status: 'known',
      seed,
      seedFingerprint: seedFingerprint(seed),
      algorithm: 'SHA-256',
      template: TEMPLATE,
      encoding: 'base64',
      producerSignalId: null,
    },
    Date.now(),
  );
  const result = await ensureFilled(db, epoch.id, { eserviceId });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const stallMs = stall.stop();
  const bytesPerPseudonym = bytesPerRow(db, `pseudonyms_${epoch.id}`);
  db.close();
  return { rows: result.pseudonyms, seconds, stallMs, epochId: epoch.id, bytesPerPseudonym };
}

async function bare() {
  const db = openDatabase(file);
  db.exec('DROP TABLE IF EXISTS bench_bare_pseudonyms');
  db.exec('CREATE TABLE bench_bare_pseudonyms (prefix INTEGER NOT NULL, subject_id INTEGER NOT NULL, PRIMARY KEY (prefix, subject_id)) WITHOUT ROWID');
  const recipe = new PseudonymHasher({ template: TEMPLATE, encoding: 'base64' }, seed, 'SHA-256').workerRecipe();
  const pool = new HashPool();
  const stall = stallMonitor();
  const started = process.hrtime.bigint();
  const PAGE = 20_000;
  // The same packed page read as the engine's (one string a page), without the e-service filter.
  const select = db.prepare("SELECT count(*), max(id), group_concat(id || char(31) || key, char(30)) FROM (SELECT id, key FROM subjects WHERE id > ? ORDER BY id LIMIT ?)").raw();
  const total = db.prepare('SELECT count(*) FROM subjects').pluck().get();
  const bits = bucketBitsFor(total);
  const prefixes = new Float64Array(total);
  const ids = new Float64Array(total);
  let n = 0;
  const read = (after) => {
    const [count, maxId, packed] = select.get(after, PAGE);
    return count === 0 ? undefined : { maxId, hashing: pool.packedPrefixes(recipe, { count, packed }) };
  };
  // Pages in flight on every thread, as the engine keeps them.
  const inFlight = [];
  let after = 0;
  for (;;) {
    while (inFlight.length < pool.threads + 1) {
      const page = read(after);
      if (!page) break;
      after = page.maxId;
      inFlight.push(page);
    }
    const page = inFlight.shift();
    if (!page) break;
    const hashed = await page.hashing;
    prefixes.set(hashed.prefixes, n);
    ids.set(hashed.ids, n);
    n += hashed.ids.length;
  }
  // Every pair in memory, by bucket (a counting sort), each bucket sorted as the engine sorts it.
  const buckets = 2 ** bits;
  const starts = new Uint32Array(buckets + 1);
  for (let i = 0; i < n; i++) starts[(bits === 0 ? 0 : bucketOf(prefixes[i], bits)) + 1]++;
  for (let b = 0; b < buckets; b++) starts[b + 1] += starts[b];
  const at = starts.slice(0, buckets);
  const records = new Float64Array(n * 2);
  for (let i = 0; i < n; i++) {
    const k = at[bits === 0 ? 0 : bucketOf(prefixes[i], bits)]++;
    records[k * 2] = prefixes[i];
    records[k * 2 + 1] = ids[i];
  }
  const R = 100;
  const insertBatch = db.prepare(`INSERT INTO bench_bare_pseudonyms (prefix, subject_id) VALUES ${Array(R).fill('(?, ?)').join(', ')}`);
  const insertOne = db.prepare('INSERT INTO bench_bare_pseudonyms (prefix, subject_id) VALUES (?, ?)');
  const args = new Array(2 * R);
  let rows = 0;
  let inTxn = 0;
  db.exec('BEGIN');
  for (let b = 0; b < buckets; b++) {
    const count = starts[b + 1] - starts[b];
    const sorted = sortRecords(records.subarray(starts[b] * 2, starts[b + 1] * 2), count, bits, b);
    let filled = 0;
    for (let i = 0; i < count; i++) {
      args[filled * 2] = sorted.prefixes[i];
      args[filled * 2 + 1] = sorted.subjectIds[i];
      if (++filled === R) {
        insertBatch.run(args);
        filled = 0;
      }
    }
    for (let k = 0; k < filled; k++) insertOne.run(args[k * 2], args[k * 2 + 1]);
    rows += count;
    inTxn += count;
    if (inTxn >= 50_000) {
      db.exec('COMMIT');
      db.exec('BEGIN');
      inTxn = 0;
    }
  }
  db.exec('COMMIT');
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const stallMs = stall.stop();
  await pool.close();
  const bytesPerPseudonym = bytesPerRow(db, 'bench_bare_pseudonyms');
  db.close();
  return { rows, seconds, stallMs, table: 'bench_bare_pseudonyms', bytesPerPseudonym };
}

async function prime() {
  const db = openDatabase(file);
  const eservices = new EServiceStore(db).all();
  const epochs = new EpochStore(db);
  let rows = 0;
  const started = process.hrtime.bigint();
  for (const es of eservices) {
    for (const epoch of epochs.forEService(es.id)) {
      if (epoch.retiredAt !== null || epoch.status === 'unknown') continue;
      rows += (await ensureFilled(db, epoch.id, { eserviceId: es.eserviceId })).pseudonyms;
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const tables = new PseudonymStore(db).tables();
  db.close();
  return { rows, seconds, tables };
}

const run = { engine, bare, prime }[mode];
if (!run) {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(64);
}
const result = await run();
process.stdout.write(`${JSON.stringify({ ...result, peakRssMb: peakRssMb() })}\n`);
