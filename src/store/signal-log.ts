import type { Statement } from 'better-sqlite3';
import type { Db } from './db.js';

/** Rows per multi-row INSERT (8 parameters each, well under SQLite's 32766). */
const MULTI_ROWS = 100;

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
/** An unmatched logged signal, as back-matching needs it. */
export interface UnmatchedSignal {
  signalId: number;
  signalType: string;
  objectType: string;
  objectId: string;
  receivedAt: number;
}

export class SignalLogStore {
  private readonly insert;
  private readonly existsStmt;
  private readonly markMatchedStmt;
  private readonly markLookupStmt;
  private readonly unmatchedStmt;
  private readonly lookupStateStmt;
  private readonly multiInserts = new Map<number, Statement>();

  constructor(private readonly db: Db) {
    this.insert = db.prepare(
      'INSERT OR IGNORE INTO signal_log (eservice, signal_id, epoch, unmatched, signal_type, object_type, object_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.existsStmt = db.prepare('SELECT 1 FROM signal_log WHERE eservice = ? AND signal_id = ?').pluck();
    this.markMatchedStmt = db.prepare('UPDATE signal_log SET unmatched = 0 WHERE eservice = ? AND signal_id = ?');
    // What the lookup was built from lives beside it in TEMP (per connection, as TEMP tables
    // are), so a rolled-back transaction takes back both the rebuild and the mark together.
    db.exec(
      `CREATE TEMP TABLE IF NOT EXISTS unmatched_lookup (epoch INTEGER NOT NULL, object_id TEXT NOT NULL, eservice INTEGER NOT NULL, signal_id INTEGER NOT NULL, PRIMARY KEY (epoch, object_id, eservice, signal_id)) WITHOUT ROWID;
       CREATE TEMP TABLE IF NOT EXISTS unmatched_lookup_source (built_from TEXT NOT NULL);`,
    );
    this.markLookupStmt = db.prepare('DELETE FROM temp.unmatched_lookup WHERE eservice = ? AND signal_id = ?');
    this.unmatchedStmt = db.prepare(
      `SELECT l.signal_id AS signalId, l.signal_type AS signalType, l.object_type AS objectType, l.object_id AS objectId, l.received_at AS receivedAt
       FROM temp.unmatched_lookup u JOIN signal_log l ON l.eservice = u.eservice AND l.signal_id = u.signal_id
       WHERE u.epoch = ? AND u.object_id = ? AND l.unmatched = 1 ORDER BY l.signal_id`,
    );
    // The log changes when this connection's engine processes signals (signals_seen) or another
    // connection commits (data_version).
    this.lookupStateStmt = db.prepare(
      `SELECT (SELECT COALESCE(group_concat(id || ':' || signals_seen), '') FROM eservices) || '/' || (SELECT data_version FROM pragma_data_version()) AS current,
              (SELECT built_from FROM temp.unmatched_lookup_source) AS built`,
    );
  }

  add(s: LoggedSignal): void {
    this.insert.run(s.eservice, s.signalId, s.epoch, s.unmatched ? 1 : 0, s.signalType, s.objectType, s.objectId, s.receivedAt);
  }

  /** One multi-row INSERT per chunk: a page of signals costs a few native calls, not one per signal. */
  addMany(signals: LoggedSignal[]): void {
    for (let i = 0; i < signals.length; i += MULTI_ROWS) {
      const chunk = signals.slice(i, i + MULTI_ROWS);
      const params: unknown[] = [];
      for (const s of chunk) params.push(s.eservice, s.signalId, s.epoch, s.unmatched ? 1 : 0, s.signalType, s.objectType, s.objectId, s.receivedAt);
      this.multiInsert(chunk.length).run(params);
    }
  }

  private multiInsert(rows: number) {
    let stmt = this.multiInserts.get(rows);
    if (!stmt) {
      stmt = this.db.prepare(
        `INSERT OR IGNORE INTO signal_log (eservice, signal_id, epoch, unmatched, signal_type, object_type, object_id, received_at) VALUES ${Array.from({ length: rows }, () => '(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
      );
      this.multiInserts.set(rows, stmt);
    }
    return stmt;
  }

  /** Logged signals with ids in `(after, upTo]`, ascending. */
  range(eservice: number, after: number, upTo: number): { signalId: number; epoch: number | null; unmatched: boolean; signalType: string; objectType: string; objectId: string; receivedAt: number }[] {
    const rows = this.db
      .prepare('SELECT signal_id AS signalId, epoch, unmatched, signal_type AS signalType, object_type AS objectType, object_id AS objectId, received_at AS receivedAt FROM signal_log WHERE eservice = ? AND signal_id > ? AND signal_id <= ? ORDER BY signal_id')
      .all(eservice, after, upTo) as { signalId: number; epoch: number | null; unmatched: number; signalType: string; objectType: string; objectId: string; receivedAt: number }[];
    return rows.map((r) => ({ ...r, unmatched: r.unmatched === 1 }));
  }

  /** A logged signal now belongs to another epoch (a SEEDUPDATE that became visible late). */
  reassign(eservice: number, signalId: number, epoch: number, unmatched: boolean): void {
    this.db.prepare('UPDATE signal_log SET epoch = ?, unmatched = ? WHERE eservice = ? AND signal_id = ?').run(epoch, unmatched ? 1 : 0, eservice, signalId);
  }

  has(eservice: number, signalId: number): boolean {
    return this.existsStmt.get(eservice, signalId) !== undefined;
  }

  /**
   * A lookup of the unmatched signals of an epoch with an objectId, oldest first. It reads a
   * sorted TEMP table built from the log on first use and rebuilt only when the engine has
   * processed signals since: an import of many subjects pays one sort, not one scan per
   * subject. Freshness is checked once, here, not per objectId (a check cost as much as the
   * lookup: 4 µs): use the lookup within one synchronous stretch, where the engine cannot
   * process signals meanwhile.
   */
  unmatchedLookup(): (epoch: number, objectId: string) => UnmatchedSignal[] {
    this.refreshLookup();
    return (epoch, objectId) => this.unmatchedStmt.all(epoch, objectId) as UnmatchedSignal[];
  }

  markMatched(eservice: number, signalId: number): void {
    this.markMatchedStmt.run(eservice, signalId);
    this.markLookupStmt.run(eservice, signalId);
  }

  private refreshLookup(): void {
    const { current, built } = this.lookupStateStmt.get() as { current: string; built: string | null };
    if (current === built) return;
    this.db.exec(`DELETE FROM temp.unmatched_lookup;
      INSERT INTO temp.unmatched_lookup (epoch, object_id, eservice, signal_id)
        SELECT epoch, object_id, eservice, signal_id FROM signal_log WHERE unmatched = 1 AND epoch IS NOT NULL ORDER BY epoch, object_id, eservice, signal_id;
      DELETE FROM temp.unmatched_lookup_source;`);
    this.db.prepare('INSERT INTO temp.unmatched_lookup_source (built_from) VALUES (?)').run(current);
  }

  /**
   * Where to re-read from for late lower ids (SPEC §10): the highest id processed before the
   * first signal seen since `since`, but no further back than the last `maxSignals` signals.
   * Undefined when nothing was seen since `since`. Every query walks the primary key over at
   * most `maxSignals` rows, so this stays cheap right after a catch-up of millions.
   */
  lookbackStart(eservice: number, since: number, maxSignals: number): number | undefined {
    const floor = (this.db.prepare('SELECT signal_id FROM signal_log WHERE eservice = ? ORDER BY signal_id DESC LIMIT 1 OFFSET ?').pluck().get(eservice, maxSignals) as number | undefined) ?? 0;
    const firstRecent = this.db
      .prepare('SELECT MIN(signal_id) FROM (SELECT signal_id, received_at FROM signal_log WHERE eservice = ? AND signal_id > ? ORDER BY signal_id) WHERE received_at >= ?')
      .pluck()
      .get(eservice, floor, since) as number | null;
    if (firstRecent === null) return undefined;
    const before = (this.db.prepare('SELECT MAX(signal_id) FROM signal_log WHERE eservice = ? AND signal_id < ?').pluck().get(eservice, firstRecent) as number | null) ?? 0;
    return Math.max(before, floor);
  }

  prune(before: number): number {
    return this.db.prepare('DELETE FROM signal_log WHERE received_at < ?').run(before).changes;
  }
}
