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

/**
 * Which events a sink takes; an empty (or missing) list means all. `tenants` ('' = the
 * consumer's own subjects) and `signalTypes` apply to signal events only: a resync-required
 * event concerns every tenant and every signal type of its e-service, so only `eservices`
 * routes it.
 */
export interface OutboxFilter {
  eservices?: readonly string[];
  tenants?: readonly string[];
  signalTypes?: readonly string[];
}

const isEmpty = (f: OutboxFilter | undefined): boolean => !f || ((f.eservices?.length ?? 0) === 0 && (f.tenants?.length ?? 0) === 0 && (f.signalTypes?.length ?? 0) === 0);

/** The filter as statement parameters: JSON arrays, '[]' for "any". */
const filterParams = (f: OutboxFilter) => ({
  eservices: JSON.stringify(f.eservices ?? []),
  tenants: JSON.stringify(f.tenants ?? []),
  types: JSON.stringify(f.signalTypes ?? []),
});

const FILTER_SQL = `(@eservices = '[]' OR eservice_id IN (SELECT value FROM json_each(@eservices)))
  AND (kind != 'signal' OR @tenants = '[]' OR tenant IN (SELECT value FROM json_each(@tenants)))
  AND (kind != 'signal' OR @types = '[]' OR signal_type IN (SELECT value FROM json_each(@types)))`;

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
    this.afterFiltered = db.prepare(`SELECT * FROM outbox WHERE seq > @seq AND ${FILTER_SQL} ORDER BY seq LIMIT @limit`);
    this.maxSeqStmt = db.prepare('SELECT COALESCE(MAX(seq), 0) AS m FROM outbox');
    this.countAfterStmt = db.prepare('SELECT COUNT(*) AS n FROM outbox WHERE seq > ?');
    this.countAfterFilteredStmt = db.prepare(`SELECT COUNT(*) AS n FROM outbox WHERE seq > @seq AND ${FILTER_SQL}`);
  }

  /** created_at (ms) of the first event after `seq` that `filter` takes, or null: the oldest a sink has not confirmed. */
  oldestCreatedAfter(seq: number, filter?: OutboxFilter): number | null {
    const row = (isEmpty(filter)
      ? this.db.prepare('SELECT created_at AS t FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1').get(seq)
      : this.db.prepare(`SELECT created_at AS t FROM outbox WHERE seq > @seq AND ${FILTER_SQL} ORDER BY seq LIMIT 1`).get({ seq, ...filterParams(filter!) })) as { t: number } | undefined;
    return row?.t ?? null;
  }

  /** Returns false when an event with this id already exists (a rescan or a replayed page). */
  append(event: OutboxEvent, now = Date.now()): boolean {
    const signal = event.type === 'signal' ? event : null;
    return (
      this.insert.run(event.id, event.eserviceId, signal?.signalId ?? null, event.type, JSON.stringify(event), now, signal ? (signal.tenant ?? '') : null, signal?.signalType ?? null).changes === 1
    );
  }

  /** Events after `seq`, in order; only those `filter` takes when given. */
  readAfter(seq: number, limit: number, filter?: OutboxFilter): OutboxRow[] {
    const rows = (isEmpty(filter) ? this.after.all(seq, limit) : this.afterFiltered.all({ seq, limit, ...filterParams(filter!) })) as RawRow[];
    return rows.map(toRow);
  }

  maxSeq(): number {
    return (this.maxSeqStmt.get() as { m: number }).m;
  }

  countAfter(seq: number, filter?: OutboxFilter): number {
    const row = isEmpty(filter) ? this.countAfterStmt.get(seq) : this.countAfterFilteredStmt.get({ seq, ...filterParams(filter!) });
    return (row as { n: number }).n;
  }

  /** Whether more than `limit` events after `seq` are taken by `filter`; counts at most limit+1 rows. */
  countAfterExceeds(seq: number, filter: OutboxFilter | undefined, limit: number): boolean {
    const row = isEmpty(filter)
      ? this.db.prepare('SELECT COUNT(*) AS n FROM (SELECT 1 FROM outbox WHERE seq > ? LIMIT ?)').get(seq, limit + 1)
      : this.db.prepare(`SELECT COUNT(*) AS n FROM (SELECT 1 FROM outbox WHERE seq > @seq AND ${FILTER_SQL} LIMIT @limit)`).get({ seq, limit: limit + 1, ...filterParams(filter!) });
    return (row as { n: number }).n > limit;
  }

  /** Events retained per tenant ('' = own subjects), signal events only. */
  countByTenant(): { tenant: string; events: number }[] {
    return this.db.prepare("SELECT tenant, COUNT(*) AS events FROM outbox WHERE kind = 'signal' AND tenant IS NOT NULL GROUP BY tenant ORDER BY tenant").all() as { tenant: string; events: number }[];
  }

  /** Deletes events older than `before` (ms) that every sink has confirmed (seq <= minPosition). */
  prune(before: number, minPosition: number): number {
    return this.db.prepare('DELETE FROM outbox WHERE created_at < ? AND seq <= ?').run(before, minPosition).changes;
  }

  all(sinceSeq = 0): OutboxRow[] {
    return (this.db.prepare('SELECT * FROM outbox WHERE seq > ? ORDER BY seq').all(sinceSeq) as RawRow[]).map(toRow);
  }
}
