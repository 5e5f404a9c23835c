import type { Db } from './db.js';

export type EServiceState = 'new' | 'syncing' | 'idle' | 'failing' | 'stopped' | 'paused';

export interface EServiceRow {
  id: number;
  eserviceId: string;
  name: string;
  cursor: number;
  /** Highest signalId ever processed: ids at or below it may be re-reads (rescans, cursor moved back). */
  highWater: number;
  /** The highest cursor an operator moved forward to: the lookback never re-reads below it. */
  skipFloor: number;
  lastPullAt: number | null;
  /** When the last run that pulled anything began: the late-lower-id lookback counts from it. */
  lastRunStartedAt: number | null;
  caughtUpAt: number | null;
  state: EServiceState;
  lastError: string | null;
  lastErrorCode: string | null;
  lastErrorAt: number | null;
  signalsSeen: number;
  matches: number;
  createdAt: number;
}

interface RawRow {
  id: number;
  eservice_id: string;
  name: string;
  cursor: number;
  high_water: number;
  skip_floor: number;
  last_pull_at: number | null;
  last_run_started_at: number | null;
  caught_up_at: number | null;
  state: EServiceState;
  last_error: string | null;
  last_error_code: string | null;
  last_error_at: number | null;
  signals_seen: number;
  matches: number;
  created_at: number;
}

const toRow = (r: RawRow): EServiceRow => ({
  id: r.id,
  eserviceId: r.eservice_id,
  name: r.name,
  cursor: r.cursor,
  highWater: r.high_water,
  skipFloor: r.skip_floor,
  lastPullAt: r.last_pull_at,
  lastRunStartedAt: r.last_run_started_at,
  caughtUpAt: r.caught_up_at,
  state: r.state,
  lastError: r.last_error,
  lastErrorCode: r.last_error_code,
  lastErrorAt: r.last_error_at,
  signalsSeen: r.signals_seen,
  matches: r.matches,
  createdAt: r.created_at,
});

/** The followed e-services: cursor, last successful pull, state and counters. */
export class EServiceStore {
  private readonly byId;
  private readonly advanceStmt;
  private readonly pulledStmt;
  private readonly stateStmt;

  constructor(private readonly db: Db) {
    this.byId = db.prepare('SELECT * FROM eservices WHERE eservice_id = ?');
    // MAX(): the cursor only moves forward (invariant 4), even if a caller passes an older id.
    this.advanceStmt = db.prepare(
      'UPDATE eservices SET cursor = MAX(cursor, ?), high_water = MAX(high_water, ?), signals_seen = signals_seen + ?, matches = matches + ? WHERE id = ?',
    );
    this.pulledStmt = db.prepare(
      `UPDATE eservices SET last_pull_at = ?, last_run_started_at = ?, caught_up_at = CASE WHEN ? THEN ? ELSE caught_up_at END,
         state = CASE WHEN ? THEN 'idle' ELSE 'syncing' END, last_error = NULL, last_error_code = NULL WHERE id = ?`,
    );
    this.stateStmt = db.prepare('UPDATE eservices SET state = ? WHERE id = ?');
  }

  ensure(eserviceId: string, name: string, now = Date.now()): EServiceRow {
    this.db
      .prepare('INSERT INTO eservices (eservice_id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (eservice_id) DO UPDATE SET name = excluded.name')
      .run(eserviceId, name, now);
    return this.get(eserviceId)!;
  }

  get(eserviceId: string): EServiceRow | undefined {
    const r = this.byId.get(eserviceId) as RawRow | undefined;
    return r && toRow(r);
  }

  all(): EServiceRow[] {
    return (this.db.prepare('SELECT * FROM eservices ORDER BY name').all() as RawRow[]).map(toRow);
  }

  /** Call inside the page transaction. */
  advance(rowId: number, cursor: number, signals: number, matches: number): void {
    this.advanceStmt.run(cursor, cursor, signals, matches, rowId);
  }

  /**
   * Administrative: sets the cursor to any value (cursor set/reset). Moving it forward also
   * raises the skip floor: the late-lower-id lookback re-reads only what was processed, never
   * back into the range the operator chose to skip.
   */
  setCursor(eserviceId: string, cursor: number): boolean {
    const row = this.get(eserviceId);
    const forward = row !== undefined && cursor > row.cursor;
    return this.db.prepare(`UPDATE eservices SET cursor = ?${forward ? ', skip_floor = MAX(skip_floor, ?)' : ''} WHERE eservice_id = ?`).run(...(forward ? [cursor, cursor, eserviceId] : [cursor, eserviceId])).changes === 1;
  }

  markPulled(rowId: number, now: number, caughtUp: boolean, runStartedAt: number): void {
    this.pulledStmt.run(now, runStartedAt, caughtUp ? 1 : 0, now, caughtUp ? 1 : 0, rowId);
  }

  markState(rowId: number, state: EServiceState): void {
    this.stateStmt.run(state, rowId);
  }

  markError(rowId: number, code: string, message: string, now: number): void {
    this.db
      .prepare("UPDATE eservices SET state = 'failing', last_error = ?, last_error_code = ?, last_error_at = ? WHERE id = ?")
      .run(message, code, now, rowId);
  }
}
