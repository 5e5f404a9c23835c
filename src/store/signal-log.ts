import type { Db } from './db.js';

export interface LoggedSignal {
  eservice: number;
  signalId: number;
  epoch: number | null;
  unmatched: boolean;
  signalType: string;
  objectType: string;
  objectId: string;
  receivedAt: number;
}

/**
 * Signals processed within the retention period: no personal data (objectIds are pseudonyms).
 * Serves the de-duplication of rescanned late lower ids and back-matching of new subjects.
 */
export class SignalLogStore {
  private readonly insert;
  private readonly existsStmt;
  private readonly unmatchedStmt;
  private readonly markMatchedStmt;

  constructor(private readonly db: Db) {
    this.insert = db.prepare(
      'INSERT OR IGNORE INTO signal_log (eservice, signal_id, epoch, unmatched, signal_type, object_type, object_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.existsStmt = db.prepare('SELECT 1 FROM signal_log WHERE eservice = ? AND signal_id = ?').pluck();
    this.unmatchedStmt = db.prepare(
      'SELECT signal_id AS signalId, signal_type AS signalType, object_type AS objectType, object_id AS objectId, received_at AS receivedAt FROM signal_log WHERE epoch = ? AND object_id = ? AND unmatched = 1 ORDER BY signal_id',
    );
    this.markMatchedStmt = db.prepare('UPDATE signal_log SET unmatched = 0 WHERE eservice = ? AND signal_id = ?');
  }

  add(s: LoggedSignal): void {
    this.insert.run(s.eservice, s.signalId, s.epoch, s.unmatched ? 1 : 0, s.signalType, s.objectType, s.objectId, s.receivedAt);
  }

  has(eservice: number, signalId: number): boolean {
    return this.existsStmt.get(eservice, signalId) !== undefined;
  }

  /** Unmatched signals of an epoch with this objectId, oldest first. */
  unmatched(epoch: number, objectId: string): { signalId: number; signalType: string; objectType: string; objectId: string; receivedAt: number }[] {
    return this.unmatchedStmt.all(epoch, objectId) as { signalId: number; signalType: string; objectType: string; objectId: string; receivedAt: number }[];
  }

  markMatched(eservice: number, signalId: number): void {
    this.markMatchedStmt.run(eservice, signalId);
  }

  prune(before: number): number {
    return this.db.prepare('DELETE FROM signal_log WHERE received_at < ?').run(before).changes;
  }
}
