import type { Db } from './db.js';
import type { SkipReason } from '../hub/types.js';

export interface SkippedSignal {
  eservice: number;
  signalId: number;
  signalType: string;
  objectType: string;
  reason: SkipReason;
  skippedAt: number;
}

/** Signals passed without matching (ARCHITECTURE invariant 7), kept as long as the signal log. */
export class SkippedSignalStore {
  private readonly insert;

  constructor(private readonly db: Db) {
    this.insert = db.prepare('INSERT OR IGNORE INTO skipped_signals (eservice, signal_id, signal_type, object_type, reason, skipped_at) VALUES (?, ?, ?, ?, ?, ?)');
  }

  /** True when the row is new (a re-read signal was recorded already). */
  add(s: SkippedSignal): boolean {
    return this.insert.run(s.eservice, s.signalId, s.signalType.slice(0, 64), s.objectType.slice(0, 64), s.reason, s.skippedAt).changes === 1;
  }

  has(eservice: number, signalId: number): boolean {
    return this.db.prepare('SELECT 1 FROM skipped_signals WHERE eservice = ? AND signal_id = ?').get(eservice, signalId) !== undefined;
  }

  /** Counts per e-service (hub id) and reason. */
  counts(): { eserviceId: string; reason: SkipReason; count: number; lastSignalId: number }[] {
    return this.db
      .prepare(
        `SELECT e.eservice_id AS eserviceId, k.reason AS reason, COUNT(*) AS count, MAX(k.signal_id) AS lastSignalId
         FROM skipped_signals k JOIN eservices e ON e.id = k.eservice GROUP BY e.eservice_id, k.reason ORDER BY e.eservice_id, k.reason`,
      )
      .all() as { eserviceId: string; reason: SkipReason; count: number; lastSignalId: number }[];
  }

  prune(before: number): number {
    return this.db.prepare('DELETE FROM skipped_signals WHERE skipped_at < ?').run(before).changes;
  }
}
