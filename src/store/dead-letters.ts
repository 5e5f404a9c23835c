import type { Db } from './db.js';

export type DeadLetterState = 'dead' | 'retry';

export interface DeadLetter {
  id: number;
  sink: string;
  seq: number;
  eventId: string;
  eserviceId: string;
  payload: string;
  /** HTTP status, or the exec command's exit code; null when the refusal had neither. */
  status: number | null;
  /** The receiver's answer, clipped. */
  response: string | null;
  error: string;
  state: DeadLetterState;
  attempts: number;
  createdAt: number;
  updatedAt: number;
}

interface RawRow {
  id: number;
  sink: string;
  seq: number;
  event_id: string;
  eservice_id: string;
  payload: string;
  status: number | null;
  response: string | null;
  error: string;
  state: string;
  attempts: number;
  created_at: number;
  updated_at: number;
}

const toDeadLetter = (r: RawRow): DeadLetter => ({
  id: r.id,
  sink: r.sink,
  seq: r.seq,
  eventId: r.event_id,
  eserviceId: r.eservice_id,
  payload: r.payload,
  status: r.status,
  response: r.response,
  error: r.error,
  state: r.state === 'retry' ? 'retry' : 'dead',
  attempts: r.attempts,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export interface NewDeadLetter {
  sink: string;
  seq: number;
  eventId: string;
  eserviceId: string;
  payload: string;
  status: number | null;
  response: string | null;
  error: string;
}

/** Which dead letters a command acts on: all of a sink's, or the given ids. */
export type DeadLetterSelection = { sink: string; ids?: readonly number[] };

/**
 * The `dead_letters` table (on_reject = "dead-letter"). Reads work on a read-only connection;
 * writes need the writer. The delivery loop of a sink redelivers the rows in state `retry`
 * before its next outbox batch.
 */
export class DeadLetterStore {
  private readonly nextRetryStmt;

  constructor(private readonly db: Db) {
    this.nextRetryStmt = db.prepare("SELECT * FROM dead_letters WHERE sink = ? AND state = 'retry' ORDER BY id LIMIT 1");
  }

  /** Records a refused event; refused again (after a retry), its row is updated and counts one more attempt. */
  add(letter: NewDeadLetter, now = Date.now()): void {
    this.db
      .prepare(
        `INSERT INTO dead_letters (sink, seq, event_id, eservice_id, payload, status, response, error, created_at, updated_at)
         VALUES (@sink, @seq, @eventId, @eserviceId, @payload, @status, @response, @error, @now, @now)
         ON CONFLICT (sink, event_id) DO UPDATE SET state = 'dead', status = excluded.status, response = excluded.response,
           error = excluded.error, attempts = attempts + 1, updated_at = excluded.updated_at`,
      )
      .run({ ...letter, now });
  }

  list(options: { sink?: string; limit?: number } = {}): DeadLetter[] {
    const rows = options.sink === undefined
      ? this.db.prepare('SELECT * FROM dead_letters ORDER BY id LIMIT ?').all(options.limit ?? -1)
      : this.db.prepare('SELECT * FROM dead_letters WHERE sink = ? ORDER BY id LIMIT ?').all(options.sink, options.limit ?? -1);
    return (rows as RawRow[]).map(toDeadLetter);
  }

  /** The oldest dead letter of `sink` queued for redelivery, if any. */
  nextRetry(sink: string): DeadLetter | undefined {
    const row = this.nextRetryStmt.get(sink) as RawRow | undefined;
    return row ? toDeadLetter(row) : undefined;
  }

  /** Queues dead letters for redelivery; returns how many. */
  markForRetry(selection: DeadLetterSelection, now = Date.now()): number {
    return this.update("UPDATE dead_letters SET state = 'retry', updated_at = ? WHERE sink = ? AND state = 'dead'", [now], selection);
  }

  /** Deletes dead letters for good; returns how many. */
  drop(selection: DeadLetterSelection): number {
    return this.update('DELETE FROM dead_letters WHERE sink = ?', [], selection);
  }

  /** A redelivered dead letter was accepted: it is no longer dead. */
  remove(id: number): void {
    this.db.prepare('DELETE FROM dead_letters WHERE id = ?').run(id);
  }

  /** Dead letters per sink (for status and the gauge). */
  countBySink(): Map<string, number> {
    const rows = this.db.prepare('SELECT sink, COUNT(*) AS n FROM dead_letters GROUP BY sink').all() as { sink: string; n: number }[];
    return new Map(rows.map((r) => [r.sink, r.n]));
  }

  /** Dead letters recorded (or refused again) at or after `since` (ms): what a run added. */
  countSince(since: number): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM dead_letters WHERE updated_at >= ? AND state = \'dead\'').get(since) as { n: number }).n;
  }

  private update(sql: string, leading: unknown[], selection: DeadLetterSelection): number {
    const { sink, ids } = selection;
    if (ids === undefined) return this.db.prepare(sql).run(...leading, sink).changes;
    return this.db.prepare(`${sql} AND id IN (SELECT value FROM json_each(?))`).run(...leading, sink, JSON.stringify(ids)).changes;
  }
}
