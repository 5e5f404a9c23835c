/**
 * One side of the reseed benchmark, in its own process so that its peak RSS (VmHWM) is its own.
 *
 *   node reseed-child.mjs engine <db> <eserviceId> <seed>
 *     the engine's code path: a new epoch row and fillEpochPseudonyms in one transaction,
 *     on a database that already holds the subjects and the pseudonyms of earlier epochs.
 *   node reseed-child.mjs bare <db> <eserviceId> <seed>
 *     the limit: the same keys read with one SELECT, hashed in a plain loop with the same
 *     algorithm and template (SHA-256 of subject + seed), the same (epoch, digest, subject_id)
 *     rows inserted into a fresh table of the same shape, in one transaction.
 *
 * Prints one JSON line: {rows, seconds, peakRssMb, epochId|table}.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import Database from 'better-sqlite3';
import { openDatabase } from '../../dist/store/db.js';
import { EServiceStore } from '../../dist/store/eservices.js';
import { EpochStore } from '../../dist/store/epochs.js';
import { fillEpochPseudonyms } from '../../dist/sync/reseed.js';
import { seedFingerprint } from '../../dist/crypto/pseudonym.js';

const [mode, file, eserviceId, seed] = process.argv.slice(2);
if (!mode || !file || !eserviceId || !seed) {
  process.stderr.write('usage: reseed-child.mjs engine|bare <db> <eserviceId> <seed>\n');
  process.exit(64);
}

function peakRssMb() {
  const match = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return match ? Number(match[1]) / 1024 : null;
}

const TEMPLATE = '${subject}${seed}';

// The fastest digest Node offers (one-shot crypto.hash, Node >= 20.12), so the limit is a tight one.
const sha256 = typeof crypto.hash === 'function' ? (text) => crypto.hash('sha256', text, 'buffer') : (text) => crypto.createHash('sha256').update(text, 'utf8').digest();

function engine() {
  const db = openDatabase(file);
  const es = new EServiceStore(db).get(eserviceId);
  if (!es) throw new Error(`e-service ${eserviceId} not in ${file}`);
  const epochs = new EpochStore(db);
  const last = epochs.forEService(es.id).at(-1);
  const started = process.hrtime.bigint();
  let epochId = 0;
  let rows = 0;
  db.transaction(() => {
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
    epochId = epoch.id;
    rows = fillEpochPseudonyms(db, { epochId, eserviceId, seed, algorithm: 'SHA-256', template: TEMPLATE, encoding: 'base64' });
  }).immediate();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  db.close();
  return { rows, seconds, epochId };
}

function bare() {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('DROP TABLE IF EXISTS bench_bare_pseudonyms');
  db.exec('CREATE TABLE bench_bare_pseudonyms (epoch INTEGER NOT NULL, digest BLOB NOT NULL, subject_id INTEGER NOT NULL, PRIMARY KEY (epoch, digest)) WITHOUT ROWID');
  const started = process.hrtime.bigint();
  let rows = 0;
  db.transaction(() => {
    const insert = db.prepare('INSERT INTO bench_bare_pseudonyms (epoch, digest, subject_id) VALUES (?, ?, ?)');
    const all = db.prepare('SELECT id, key FROM subjects').raw().all();
    for (const [id, key] of all) {
      insert.run(1, sha256(key + seed), id);
      rows++;
    }
  }).immediate();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  db.close();
  return { rows, seconds, table: 'bench_bare_pseudonyms' };
}

const result = mode === 'engine' ? engine() : mode === 'bare' ? bare() : null;
if (!result) {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(64);
}
process.stdout.write(`${JSON.stringify({ ...result, peakRssMb: peakRssMb() })}\n`);
