import type { Db } from './db.js';
import type { OutboxEvent } from '../events.js';

export interface OutboxRow {
  seq: number;
  eventId: string;
  eserviceId: string;
  signalId: number | null;
  kind: OutboxEvent['type'];
  /** The event as JSON text, delivered as is. */
  payload: string;
  createdAt: number;
}

interface RawRow {
  seq: number;
  event_id: string;
  eservice_id: string;
  signal_id: number | null;
  kind: OutboxEvent['type'];
  payload: string;
  created_at: number;
}

const toRow = (r: RawRow): OutboxRow => ({
  seq: r.seq,
  eventId: r.event_id,
  eserviceId: r.eservice_id,
  signalId: r.signal_id,
  kind: r.kind,
  payload: r.payload,
  createdAt: r.created_at,
});

/** Outbox access. Writers call `append` inside the page transaction of the sync engine. */
export class OutboxStore {
  private readonly insert;
  private readonly after;
  private readonly afterFiltered;
  private readonly maxSeqStmt;
  private readonly countAfterStmt;
  private readonly countAfterFilteredStmt;

  constructor(private readonly db: Db) {
    this.insert = db.prepare(
      'INSERT OR IGNORE INTO outbox (event_id, eservice_id, signal_id, kind, payload, created_at, tenant, signal_type) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.after = db.prepare('SELECT * FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?');
    this.afterFiltered = db.prepare(
      'SELECT * FROM outbox WHERE seq > ? AND eservice_id IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?',
    );
    this.maxSeqStmt = db.prepare('SELECT COALESCE(MAX(seq), 0) AS m FROM outbox');
    this.countAfterStmt = db.prepare('SELECT COUNT(*) AS n FROM outbox WHERE seq > ?');
    this.countAfterFilteredStmt = db.prepare('SELECT COUNT(*) AS n FROM outbox WHERE seq > ? AND eservice_id IN (SELECT value FROM json_each(?))');
  }

  /** created_at (ms) of the first event after `seq` (of `eserviceIds` when non-empty), or null: the oldest a sink has not confirmed. */
  oldestCreatedAfter(seq: number, eserviceIds: readonly string[] = []): number | null {
    const row = (eserviceIds.length > 0
      ? this.db.prepare('SELECT created_at AS t FROM outbox WHERE seq > ? AND eservice_id IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT 1').get(seq, JSON.stringify(eserviceIds))
      : this.db.prepare('SELECT created_at AS t FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1').get(seq)) as { t: number } | undefined;
    return row?.t ?? null;
  }

  /** Returns false when an event with this id already exists (a rescan or a replayed page). */
  append(event: OutboxEvent, now = Date.now()): boolean {
    const signal = event.type === 'signal' ? event : null;
    return (
      this.insert.run(event.id, event.eserviceId, signal?.signalId ?? null, event.type, JSON.stringify(event), now, signal ? (signal.tenant ?? '') : null, signal?.signalType ?? null).changes === 1
    );
  }

  /** Events after `seq`, in order; only those of `eserviceIds` when given and non-empty. */
  readAfter(seq: number, limit: number, eserviceIds?: string[]): OutboxRow[] {
    const rows = (eserviceIds && eserviceIds.length > 0
      ? this.afterFiltered.all(seq, JSON.stringify(eserviceIds), limit)
      : this.after.all(seq, limit)) as RawRow[];
    return rows.map(toRow);
  }

  maxSeq(): number {
    return (this.maxSeqStmt.get() as { m: number }).m;
  }

  countAfter(seq: number, eserviceIds?: string[]): number {
    const row = eserviceIds && eserviceIds.length > 0 ? this.countAfterFilteredStmt.get(seq, JSON.stringify(eserviceIds)) : this.countAfterStmt.get(seq);
    return (row as { n: number }).n;
  }

  /** Deletes events older than `before` (ms) that every sink has confirmed (seq <= minPosition). */
  prune(before: number, minPosition: number): number {
    return this.db.prepare('DELETE FROM outbox WHERE created_at < ? AND seq <= ?').run(before, minPosition).changes;
  }

  all(sinceSeq = 0): OutboxRow[] {
    return (this.db.prepare('SELECT * FROM outbox WHERE seq > ? ORDER BY seq').all(sinceSeq) as RawRow[]).map(toRow);
  }
}
