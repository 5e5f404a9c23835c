import type { Config } from '../config/types.js';
import type { Db } from '../store/db.js';
import { EpochStore, epochForSignal, type Epoch, type EpochStatus } from '../store/epochs.js';
import { EServiceStore, type EServiceRow, type EServiceState } from '../store/eservices.js';
import { ResyncStore } from '../store/resync.js';
import { backpressureFor, backpressuredEServices, sinkStatus, type SinkStatus } from '../sinks/status.js';
import { SkippedSignalStore } from '../store/skipped-signals.js';
import { SubjectStore } from '../store/subjects.js';
import { OutboxStore } from '../store/outbox.js';
import type { SkipReason } from '../hub/types.js';
import { forbiddenState, retentionAlert, type ForbiddenState, type RetentionAlert } from './alerts.js';

/** A moment, as ISO text and as its age at the time the status was collected. */
export interface Moment {
  at: string;
  ageSeconds: number;
}

export interface EpochSummary {
  /** Local epoch id (the `epoch` field of events). */
  id: number;
  status: EpochStatus;
  /** First 8 hex of SHA-256(seed); null for an unknown epoch. The seed itself is never exposed. */
  seedFingerprint: string | null;
  algorithm: string | null;
  /** The SEEDUPDATE id that opened it (0: from the beginning). */
  startSignalId: number;
  /** Why the epoch is unknown or assumed, if recorded. */
  note: string | null;
  /** When this consumer opened the epoch. */
  opened: Moment;
}

export interface EServiceStatus {
  id: string;
  name: string;
  /** False for e-services the database knows but the configuration no longer lists. */
  configured: boolean;
  /** `new` until the first sync run. */
  state: EServiceState;
  /** The sink whose backlog pauses pulling (outbox.max_pending), if any. */
  pausedBySink: string | null;
  cursor: number;
  lastPull: Moment | null;
  caughtUp: Moment | null;
  signalsSeen: number;
  matches: number;
  lastError: { code: string | null; message: string; at: Moment | null } | null;
  /** The epoch in force for the next signal after the cursor. */
  epoch: EpochSummary | null;
  /** Resync reports not yet acknowledged. */
  openResyncReports: number;
  /** Signals passed without matching within the retention period, by reason (invariant 7). */
  skippedSignals: Partial<Record<SkipReason, number>>;
  /**
   * Age of the last successful pull against alerts.* and the hub's retention; null for an
   * e-service no longer configured or not yet seen by any sync run.
   */
  retention: RetentionAlert | null;
  /** Set while the last run ended in a hub 403: why, and the back-office step that fixes it. */
  forbidden: ForbiddenState | null;
}

export interface StatusTotals {
  eservices: number;
  signalsSeen: number;
  matches: number;
  openResyncReports: number;
  skippedSignals: number;
  /** E-services whose last successful pull is older than alerts.stale_after_hours / critical_after_days. */
  staleEServices: number;
  criticalEServices: number;
  /** Events currently in the outbox (delivered ones are pruned after outbox.keep_days). */
  outboxEvents: number;
  /** Highest seq in the outbox (0: empty); `events list --since` takes seqs. */
  lastSeq: number;
  /** Largest backlog among the sinks. */
  maxPending: number;
}

/** Per tenant (SPEC §8c delegations): the consumer's own subjects, and each delegator's. */
export interface TenantStatus {
  /** The delegator's id; null for the consumer's own subjects. */
  tenant: string | null;
  /** Keys stored for this tenant (a key shared by tenants counts for each). */
  subjects: number;
  /** Signal events of this tenant currently in the outbox (delivered ones are pruned after outbox.keep_days). */
  events: number;
}

export interface SyncStatus {
  generatedAt: string;
  database: string;
  eservices: EServiceStatus[];
  sinks: SinkStatus[];
  /** By tenant, own subjects first; a tenant appears once it has subjects or events. */
  tenants: TenantStatus[];
  totals: StatusTotals;
}

/**
 * The operator's view of the sync state: what `status` prints and the daemon can serve. Reads
 * only, so it works on a read-only connection next to a running writer. Secrets stay out by
 * construction: epochs are summarised by their seed fingerprint.
 */
export function collectStatus(db: Db, config: Pick<Config, 'database' | 'eservices' | 'sinks' | 'outbox' | 'alerts' | 'hub'>, now: number = Date.now()): SyncStatus {
  const eserviceStore = new EServiceStore(db);
  const epochs = new EpochStore(db);
  const openReports = new ResyncStore(db).openCountByEService();
  const skipped = new Map<string, Partial<Record<SkipReason, number>>>();
  for (const c of new SkippedSignalStore(db).counts()) skipped.set(c.eserviceId, { ...skipped.get(c.eserviceId), [c.reason]: c.count });
  const paused = backpressuredEServices(db, config.sinks, config.outbox.maxPending);
  const rows = new Map(eserviceStore.all().map((r) => [r.eserviceId, r]));

  const moment = (ms: number | null): Moment | null =>
    ms === null ? null : { at: new Date(ms).toISOString(), ageSeconds: Math.max(0, Math.round((now - ms) / 1000)) };

  const describe = (id: string, name: string, configured: boolean, row: EServiceRow | undefined): EServiceStatus => {
    const epoch = row ? epochForSignal(epochs.forEService(row.id), row.cursor + 1) : undefined;
    return {
      id,
      name,
      configured,
      state: row?.state ?? 'new',
      pausedBySink: backpressureFor(paused, id) ?? null,
      cursor: row?.cursor ?? 0,
      lastPull: moment(row?.lastPullAt ?? null),
      caughtUp: moment(row?.caughtUpAt ?? null),
      signalsSeen: row?.signalsSeen ?? 0,
      matches: row?.matches ?? 0,
      lastError: row?.lastError != null ? { code: row.lastErrorCode, message: row.lastError, at: moment(row.lastErrorAt) } : null,
      epoch: epoch
        ? {
            id: epoch.id,
            status: epoch.status,
            seedFingerprint: epoch.seedFingerprint,
            algorithm: epoch.algorithm,
            startSignalId: epoch.startSignalId,
            note: epoch.note,
            opened: moment(epoch.createdAt)!,
          }
        : null,
      openResyncReports: openReports.get(id) ?? 0,
      skippedSignals: skipped.get(id) ?? {},
      retention: configured && row ? retentionAlert(row.lastPullAt, row.createdAt, now, config) : null,
      // A successful pull clears last_error: a 403 shown here is still in force.
      forbidden: row ? forbiddenState(row.lastErrorCode, row.lastError) : null,
    };
  };

  const eservices = config.eservices.map((es) => describe(es.id, es.name, true, rows.get(es.id)));
  const configuredIds = new Set(config.eservices.map((e) => e.id));
  for (const row of rows.values()) {
    if (!configuredIds.has(row.eserviceId)) eservices.push(describe(row.eserviceId, row.name, false, row));
  }
  // Reports of e-services nobody lists any more still need an operator's eyes.
  for (const [id] of openReports) {
    if (!eservices.some((e) => e.id === id)) eservices.push(describe(id, id, false, undefined));
  }

  const sinks = sinkStatus(db, config.sinks);
  const outbox = db.prepare('SELECT COUNT(*) AS n, COALESCE(MAX(seq), 0) AS lastSeq FROM outbox').get() as { n: number; lastSeq: number };
  const tenants = tenantStatus(db);
  return {
    generatedAt: new Date(now).toISOString(),
    database: config.database,
    eservices,
    sinks,
    tenants,
    totals: {
      eservices: eservices.length,
      signalsSeen: eservices.reduce((n, e) => n + e.signalsSeen, 0),
      matches: eservices.reduce((n, e) => n + e.matches, 0),
      openResyncReports: eservices.reduce((n, e) => n + e.openResyncReports, 0),
      skippedSignals: eservices.reduce((n, e) => n + Object.values(e.skippedSignals).reduce((a, b) => a + b, 0), 0),
      staleEServices: eservices.filter((e) => e.retention?.level === 'stale').length,
      criticalEServices: eservices.filter((e) => e.retention?.level === 'critical').length,
      outboxEvents: outbox.n,
      lastSeq: outbox.lastSeq,
      maxPending: sinks.reduce((n, s) => Math.max(n, s.pending), 0),
    },
  };
}


/**
 * Subjects per tenant ('' = own), by tenant, counted in slices of subject ids with the event loop
 * free between them: one COUNT over 10 M memberships blocks about half a second (ARCHITECTURE
 * invariant 8), and the daemon's gauge needs it after every import.
 */
export async function countSubjectsByTenant(db: Db, sliceIds = 250_000): Promise<{ tenant: string; subjects: number }[]> {
  const store = new SubjectStore(db);
  const totals = new Map<string, number>();
  const upTo = store.maxId();
  for (let after = 0; after < upTo; after += sliceIds) {
    for (const c of store.countByTenantBetween(after, Math.min(upTo, after + sliceIds))) totals.set(c.tenant, (totals.get(c.tenant) ?? 0) + c.subjects);
    await new Promise((resolve) => setImmediate(resolve));
  }
  return [...totals].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([tenant, subjects]) => ({ tenant, subjects }));
}

/** Subjects and retained events per tenant, own ('' in the store, null here) first. */
export function tenantStatus(db: Db): TenantStatus[] {
  const byTenant = new Map<string, TenantStatus>();
  const entry = (tenant: string): TenantStatus => {
    let e = byTenant.get(tenant);
    if (!e) byTenant.set(tenant, (e = { tenant: tenant === '' ? null : tenant, subjects: 0, events: 0 }));
    return e;
  };
  for (const c of new SubjectStore(db).countByTenant()) entry(c.tenant).subjects = c.subjects;
  for (const c of new OutboxStore(db).countByTenant()) entry(c.tenant).events = c.events;
  return [...byTenant.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, e]) => e);
}
