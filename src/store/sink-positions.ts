import type { Db } from './db.js';

export type SinkState = 'active' | 'stopped';

export interface SinkPosition {
  sink: string;
  /** Last outbox seq the sink confirmed (0: nothing yet). */
  position: number;
  state: SinkState;
  /** Events confirmed since the row was created. */
  delivered: number;
  lastError: string | null;
  /** ms since the epoch */
  lastErrorAt: number | null;
  updatedAt: number | null;
}

interface RawRow {
  sink: string;
  position: number;
  state: string;
  delivered: number;
  last_error: string | null;
  last_error_at: number | null;
  updated_at: number | null;
}

const toPosition = (r: RawRow): SinkPosition => ({
  sink: r.sink,
  position: r.position,
  state: r.state === 'stopped' ? 'stopped' : 'active',
  delivered: r.delivered,
  lastError: r.last_error,
  lastErrorAt: r.last_error_at,
  updatedAt: r.updated_at,
});

/** What a sink that has never been seen looks like: it starts from the oldest retained event. */
export const initialPosition = (sink: string): SinkPosition => ({
  sink,
  position: 0,
  state: 'active',
  delivered: 0,
  lastError: null,
  lastErrorAt: null,
  updatedAt: null,
});

/**
 * The `sink_positions` table: per sink, the last confirmed outbox seq and whether the sink is
 * stopped on a permanent error. Read methods work on a read-only connection; write methods
 * need the writer (WriterLock holder).
 */
export class SinkPositionStore {
  // The delivery loop reads and advances a position once per batch (one event per batch for a
  // default webhook): those statements are prepared once.
  private readonly getStmt;
  private readonly insertStmt;
  private readonly advanceStmt;

  constructor(private readonly db: Db) {
    this.getStmt = db.prepare('SELECT * FROM sink_positions WHERE sink = ?');
    this.insertStmt = db.prepare('INSERT OR IGNORE INTO sink_positions (sink, updated_at) VALUES (?, ?)');
    this.advanceStmt = db.prepare(
      `UPDATE sink_positions
          SET position = MAX(position, ?),
              delivered = delivered + (CASE WHEN ? > position THEN ? ELSE 0 END),
              last_error = NULL, last_error_at = NULL, updated_at = ?
        WHERE sink = ?`,
    );
  }

  get(sink: string): SinkPosition {
    const row = this.getStmt.get(sink) as RawRow | undefined;
    return row ? toPosition(row) : initialPosition(sink);
  }

  all(): SinkPosition[] {
    return (this.db.prepare('SELECT * FROM sink_positions ORDER BY sink').all() as RawRow[]).map(toPosition);
  }

  /** Creates the row if missing, so later updates have something to update. */
  ensure(sink: string, now = Date.now()): SinkPosition {
    this.insertStmt.run(sink, now);
    return this.get(sink);
  }

  /**
   * Records that the sink confirmed everything up to `seq` (`count` events). Never moves
   * backwards: a stale or repeated confirmation leaves the position where it is. Clears the
   * last error, since the sink evidently works again.
   */
  advance(sink: string, seq: number, count: number, now = Date.now()): void {
    this.insertStmt.run(sink, now);
    this.advanceStmt.run(seq, seq, count, now, sink);
  }

  /** A transient failure: remembered for `status`, the sink stays active. */
  recordError(sink: string, message: string, now = Date.now()): void {
    this.insertStmt.run(sink, now);
    this.db.prepare('UPDATE sink_positions SET last_error = ?, last_error_at = ?, updated_at = ? WHERE sink = ?').run(message, now, now, sink);
  }

  /** A permanent failure: the sink delivers nothing until `resume`. */
  stop(sink: string, message: string, now = Date.now()): void {
    this.insertStmt.run(sink, now);
    this.db
      .prepare("UPDATE sink_positions SET state = 'stopped', last_error = ?, last_error_at = ?, updated_at = ? WHERE sink = ?")
      .run(message, now, now, sink);
  }

  /** Clears the stopped state; returns whether the sink was stopped. The last error stays visible until the next success. */
  resume(sink: string, now = Date.now()): boolean {
    this.insertStmt.run(sink, now);
    return this.db.prepare("UPDATE sink_positions SET state = 'active', updated_at = ? WHERE sink = ? AND state = 'stopped'").run(now, sink).changes === 1;
  }
}
