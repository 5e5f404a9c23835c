import type { SinkConfig } from '../config/types.js';
import type { Db } from '../store/db.js';
import { OutboxStore, type OutboxFilter } from '../store/outbox.js';
import { SinkPositionStore, type SinkState } from '../store/sink-positions.js';

export interface SinkStatus {
  name: string;
  type: SinkConfig['type'];
  /** E-service ids the sink takes; empty = all. */
  eservices: string[];
  /** Tenants whose signal events the sink takes ('' = own subjects); empty = all. */
  tenants: string[];
  /** Signal types the sink takes; empty = all. */
  signalTypes: string[];
  /** Last confirmed outbox seq. */
  position: number;
  /** Events after the position that this sink takes, not yet confirmed (events its filter leaves out are not counted). */
  pending: number;
  state: SinkState;
  delivered: number;
  lastError: string | null;
  /** ISO time of the last error, if any. */
  lastErrorAt: string | null;
}

/** Per configured sink: position, pending, state, last error. Works on a read-only connection. */
export function sinkStatus(db: Db, sinks: readonly SinkConfig[]): SinkStatus[] {
  const positions = new SinkPositionStore(db);
  const outbox = new OutboxStore(db);
  return sinks.map((sink) => {
    const p = positions.get(sink.name);
    return {
      name: sink.name,
      type: sink.type,
      eservices: [...sink.eservices],
      tenants: [...(sink.tenants ?? [])],
      signalTypes: [...(sink.signalTypes ?? [])],
      position: p.position,
      pending: outbox.countAfter(p.position, sinkFilter(sink)),
      state: p.state,
      delivered: p.delivered,
      lastError: p.lastError,
      lastErrorAt: p.lastErrorAt === null ? null : new Date(p.lastErrorAt).toISOString(),
    };
  });
}

/** What the sink takes from the outbox (its eservices, tenants and signal_types). */
export function sinkFilter(sink: SinkConfig): OutboxFilter {
  return { eservices: sink.eservices, tenants: sink.tenants ?? [], signalTypes: sink.signalTypes ?? [] };
}

/** Whether more than `limit` events wait for the sink; counts at most limit+1 rows. */
export function pendingExceeds(db: Db, position: number, filter: OutboxFilter, limit: number): boolean {
  return new OutboxStore(db).countAfterExceeds(position, filter, limit);
}

/** The key meaning "every e-service" in `backpressuredEServices`. */
export const ALL_ESERVICES = '*';

/**
 * Backpressure (outbox.max_pending): the e-services whose pulling should pause because a sink
 * they feed has more than `maxPending` undelivered events, each mapped to that sink's name
 * (for `status`: "paused: sink X has more than N pending"). A sink without an e-service filter
 * feeds all of them: its entry is `ALL_ESERVICES`. Stopped sinks count too: their backlog grows
 * just the same. `maxPending <= 0` disables backpressure.
 */
export function backpressuredEServices(db: Db, sinks: readonly SinkConfig[], maxPending: number): Map<string, string> {
  const paused = new Map<string, string>();
  if (maxPending <= 0) return paused;
  const positions = new SinkPositionStore(db);
  for (const sink of sinks) {
    const { position } = positions.get(sink.name);
    if (!pendingExceeds(db, position, sinkFilter(sink), maxPending)) continue;
    const keys = sink.eservices.length > 0 ? sink.eservices : [ALL_ESERVICES];
    for (const key of keys) if (!paused.has(key)) paused.set(key, sink.name);
  }
  return paused;
}

/** Why pulling of `eserviceId` is paused, per `backpressuredEServices`' answer; undefined if it is not. */
export function backpressureFor(paused: ReadonlyMap<string, string>, eserviceId: string): string | undefined {
  return paused.get(eserviceId) ?? paused.get(ALL_ESERVICES);
}

/**
 * Retention (outbox.keep_days): deletes events older than `keepDays` that every configured
 * sink has confirmed (seq <= the lowest position). Undelivered events are never deleted, so a
 * stopped or lagging sink holds the outbox back. With no sinks configured nobody waits for
 * any event: they are kept `keepDays` (for `events` and for a sink added later) and then
 * deleted. Returns the number of events deleted.
 */
export function pruneDelivered(db: Db, sinks: readonly SinkConfig[], keepDays: number, now = Date.now()): number {
  const outbox = new OutboxStore(db);
  const positions = new SinkPositionStore(db);
  const minPosition = sinks.length === 0 ? outbox.maxSeq() : Math.min(...sinks.map((s) => positions.get(s.name).position));
  return outbox.prune(now - keepDays * 86_400_000, minPosition);
}
