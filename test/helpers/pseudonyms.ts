import type { Db } from '../../src/store/db.js';
import { PseudonymStore } from '../../src/store/pseudonyms.js';

/** Every stored pseudonym row of every epoch table, ordered by epoch then subject. */
export function pseudonymRows(db: Db): { epoch: number; prefix: number; subjectId: number }[] {
  const rows: { epoch: number; prefix: number; subjectId: number }[] = [];
  for (const epoch of new PseudonymStore(db).tables()) {
    for (const r of db.prepare(`SELECT prefix, subject_id AS subjectId FROM pseudonyms_${epoch} ORDER BY subject_id`).all() as { prefix: number; subjectId: number }[]) rows.push({ epoch, ...r });
  }
  return rows;
}

/** Pseudonym rows stored across all epochs (or of one epoch). */
export function pseudonymCount(db: Db, epoch?: number): { n: number } {
  const store = new PseudonymStore(db);
  const epochs = epoch === undefined ? store.tables() : [epoch];
  return { n: epochs.reduce((sum, e) => sum + store.count(e), 0) };
}
