import type { Db } from '../store/db.js';
import { PseudonymHasher, type PseudonymEncoding } from '../crypto/pseudonym.js';

export interface ReseedInput {
  epochId: number;
  eserviceId: string;
  seed: string;
  algorithm: string;
  template: string;
  encoding: PseudonymEncoding;
}

const BATCH = 10_000;

/**
 * Computes the pseudonyms of every subject following the e-service for one epoch: the hot
 * path of a SEEDUPDATE. Call inside the caller's transaction (the epoch, its pseudonyms and the
 * cursor move past the SEEDUPDATE commit together).
 *
 * Subjects are read in id order in batches (bounded memory). Digests go first to an unindexed
 * TEMP table and are then copied in digest order into `pseudonyms`: the primary key is then
 * built by appending instead of by a million random B-tree inserts (measured ~1.5x faster).
 */
export function fillEpochPseudonyms(db: Db, input: ReseedInput): number {
  const hasher = new PseudonymHasher({ template: input.template, encoding: input.encoding }, input.seed, input.algorithm);
  db.exec('CREATE TEMP TABLE IF NOT EXISTS reseed_stage (digest BLOB NOT NULL, subject_id INTEGER NOT NULL)');
  db.exec('DELETE FROM temp.reseed_stage');
  const select = db.prepare(
    `SELECT id, key FROM subjects
     WHERE id > ? AND (all_eservices = 1 OR EXISTS (SELECT 1 FROM subject_eservices se WHERE se.subject_id = subjects.id AND se.eservice_id = ?))
     ORDER BY id LIMIT ?`,
  ).raw();
  const stage = db.prepare('INSERT INTO temp.reseed_stage (digest, subject_id) VALUES (?, ?)');
  let after = 0;
  let count = 0;
  for (;;) {
    const rows = select.all(after, input.eserviceId, BATCH) as [number, string][];
    if (rows.length === 0) break;
    for (const [id, key] of rows) stage.run(hasher.digest(key), id);
    count += rows.length;
    after = rows[rows.length - 1]![0];
  }
  db.prepare('INSERT OR IGNORE INTO pseudonyms (epoch, digest, subject_id) SELECT ?, digest, subject_id FROM temp.reseed_stage ORDER BY digest').run(input.epochId);
  db.exec('DELETE FROM temp.reseed_stage');
  db.prepare('UPDATE epochs SET pseudonym_count = ? WHERE id = ?').run(count, input.epochId);
  return count;
}
