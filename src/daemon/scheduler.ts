import { AppError, errorLogFields, isAppError, type ErrorCode } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';

/** The sync engine as the scheduler sees it: one bounded run over one e-service. */
export interface EServiceSyncer {
  syncEService(eserviceId: string, opts: { signal?: AbortSignal; maxPages?: number }): Promise<SyncRunResult>;
}

export interface SyncRunResult {
  /** False when the hub answered 206 on the last page (or maxPages stopped the run). */
  caughtUp: boolean;
  pages: number;
  signals: number;
  matches: number;
}

export interface ScheduledEService {
  id: string;
  /** Human name from the config, for logs and the STATUS= line. */
  name?: string;
  pollIntervalSeconds: number;
}

export type EServiceRunState = 'idle' | 'syncing' | 'failing' | 'paused';

export interface EServiceStatus {
  id: string;
  name: string;
  state: EServiceRunState;
  pollIntervalSeconds: number;
  /** Why backpressure holds this e-service, while state is 'paused'. */
  pausedReason: string | undefined;
  /** The most recent failure, kept after recovery so operators can see what happened. */
  lastError: { code: string; message: string; status?: number; correlationId?: string; at: Date } | undefined;
  consecutiveFailures: number;
  lastAttemptAt: Date | undefined;
  lastSuccessAt: Date | undefined;
  lastResult: SyncRunResult | undefined;
  /** Undefined while a run is in progress. */
  nextRunAt: Date | undefined;
}

export interface BackoffPolicy {
  /** First retry delay after a transient failure; doubles with each further failure. */
  baseMs: number;
  maxMs: number;
  /** Delay after a failure that retrying soon cannot fix (403, persistent 401, 400). */
  permanentMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 5_000, maxMs: 15 * 60_000, permanentMs: 60 * 60_000 };

/**
 * Failures that will not go away by retrying in a few seconds: a missing agreement or purpose
 * (SPEC §3: 403 is not transient), credentials PDND keeps refusing, a request the hub calls
 * malformed, a recipe we cannot compute. They are retried hourly, so that a fix made on the
 * PDND back office is picked up without a restart, but not hammered.
 */
const PERMANENT_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'HUB_FORBIDDEN',
  'HUB_UNAUTHORIZED',
  'HUB_BAD_REQUEST',
  'TOKEN_REJECTED',
  'CRYPTO_UNAUTHORIZED',
  'UNSUPPORTED_ALGORITHM',
  'CONFIG_INVALID',
]);

export interface SchedulerOptions {
  eservices: ScheduledEService[];
  syncer: EServiceSyncer;
  /** Most e-services syncing at the same time (`daemon.concurrency`). */
  concurrency: number;
  /** Fraction of the poll interval added or removed at random (`hub.pollJitter`, 0..0.5). */
  jitter: number;
  /** Backpressure: a reason while the e-service must not pull (e.g. outbox full), else undefined. */
  isPaused?: (eserviceId: string) => string | undefined;
  /** Pages per run, so that a long backlog yields to the other e-services between runs. */
  maxPagesPerRun?: number;
  backoff?: Partial<BackoffPolicy>;
  /** How often due runs are looked for; each tick is also the main loop's heartbeat. */
  tickMs?: number;
  /** Called on every tick: where the systemd watchdog learns the loop is alive. */
  onTick?: () => void;
  /** Called after every state change of an e-service (e.g. to refresh the STATUS= line). */
  onChange?: (status: EServiceStatus) => void;
  logger?: Logger;
  metrics?: Metrics;
  /** Source of randomness for jitter, in [0, 1). */
  random?: () => number;
}

interface Entry {
  config: ScheduledEService;
  status: EServiceStatus;
  running: Promise<void> | undefined;
  /** Set when the e-service was removed by a reload while it was running. */
  removed: boolean;
}

/**
 * Runs every e-service's sync on its own timetable: poll interval with jitter, again at once
 * while the hub has more (206), at most `concurrency` at a time, oldest-due first. A failing
 * e-service backs off on its own and never delays the others.
 */
export class Scheduler {
  private readonly entries = new Map<string, Entry>();
  private readonly options: SchedulerOptions;
  private readonly backoff: BackoffPolicy;
  private readonly logger: Logger;
  private readonly random: () => number;
  private readonly tickMs: number;
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private kickQueued = false;
  private started = false;
  private stopping: Promise<void> | undefined;

  constructor(options: SchedulerOptions) {
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) {
      throw new AppError('CONFIG_INVALID', `daemon.concurrency must be a positive integer (got ${options.concurrency})`);
    }
    this.options = options;
    this.backoff = { ...DEFAULT_BACKOFF, ...(options.backoff ?? {}) };
    this.logger = options.logger ?? silentLogger;
    this.random = options.random ?? Math.random;
    this.tickMs = options.tickMs ?? 1_000;
    this.setEServices(options.eservices);
  }

  /** Arms the schedule: every e-service is due at once, then on its own interval. */
  start(): void {
    if (this.started || this.stopping) return;
    this.started = true;
    this.tick();
  }

  /**
   * Replaces the list of e-services (config reload). New ones are due at once; removed ones
   * finish their current run and are dropped; kept ones keep their state and timetable.
   */
  setEServices(eservices: ScheduledEService[]): void {
    const wanted = new Set(eservices.map((e) => e.id));
    for (const [id, entry] of this.entries) {
      if (wanted.has(id)) continue;
      if (entry.running) entry.removed = true;
      else this.entries.delete(id);
    }
    for (const config of eservices) {
      const existing = this.entries.get(config.id);
      if (existing) {
        const intervalChanged = existing.config.pollIntervalSeconds !== config.pollIntervalSeconds;
        existing.config = config;
        existing.removed = false;
        existing.status.name = config.name ?? config.id;
        existing.status.pollIntervalSeconds = config.pollIntervalSeconds;
        if (intervalChanged) this.bringForward(existing);
        continue;
      }
      this.entries.set(config.id, {
        config,
        running: undefined,
        removed: false,
        status: {
          id: config.id,
          name: config.name ?? config.id,
          state: 'idle',
          pollIntervalSeconds: config.pollIntervalSeconds,
          pausedReason: undefined,
          lastError: undefined,
          consecutiveFailures: 0,
          lastAttemptAt: undefined,
          lastSuccessAt: undefined,
          lastResult: undefined,
          nextRunAt: new Date(),
        },
      });
    }
    if (this.started) this.kick();
  }

  /** A copy of every e-service's runtime state. */
  snapshot(): EServiceStatus[] {
    return [...this.entries.values()].map((e) => ({
      ...e.status,
      lastError: e.status.lastError ? { ...e.status.lastError } : undefined,
      lastResult: e.status.lastResult ? { ...e.status.lastResult } : undefined,
    }));
  }

  /**
   * No new runs; running ones get an abort signal (the engine finishes or abandons its page
   * transaction) and are waited for. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      this.abort.abort(new AppError('SHUTTING_DOWN', 'signalhub-sync is shutting down'));
      const running = [...this.entries.values()].map((e) => e.running).filter((p): p is Promise<void> => p !== undefined);
      await Promise.allSettled(running);
    })();
    return this.stopping;
  }

  /** Runs a tick soon, without waiting for the timer (a run ended, the hub has more, a reload). */
  kick(): void {
    if (this.kickQueued || this.stopping) return;
    this.kickQueued = true;
    setImmediate(() => {
      this.kickQueued = false;
      this.tick();
    });
  }

  private tick(): void {
    if (this.stopping) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.tick(), this.tickMs);
    this.options.onTick?.();

    const now = Date.now();
    const due: Entry[] = [];
    let running = 0;
    for (const entry of this.entries.values()) {
      if (entry.running) {
        running++;
        continue;
      }
      this.updatePause(entry);
      this.recordAge(entry, now);
      if (entry.status.state !== 'paused' && entry.status.nextRunAt && entry.status.nextRunAt.getTime() <= now) due.push(entry);
    }
    due.sort((a, b) => a.status.nextRunAt!.getTime() - b.status.nextRunAt!.getTime());
    for (const entry of due) {
      if (running >= this.options.concurrency) break;
      this.startRun(entry);
      running++;
    }
  }

  private updatePause(entry: Entry): void {
    const reason = this.options.isPaused?.(entry.config.id);
    const status = entry.status;
    if (reason !== undefined && (status.state !== 'paused' || status.pausedReason !== reason)) {
      status.state = 'paused';
      status.pausedReason = reason;
      this.logger.warn({ eservice: status.id, eserviceName: status.name, reason }, 'e-service paused');
      this.changed(entry);
    } else if (reason === undefined && status.state === 'paused') {
      status.state = status.consecutiveFailures > 0 ? 'failing' : 'idle';
      status.pausedReason = undefined;
      this.logger.info({ eservice: status.id, eserviceName: status.name }, 'e-service resumed');
      this.changed(entry);
    }
  }

  private startRun(entry: Entry): void {
    const status = entry.status;
    status.state = 'syncing';
    status.lastAttemptAt = new Date();
    status.nextRunAt = undefined;
    this.changed(entry);
    const opts: { signal: AbortSignal; maxPages?: number } = { signal: this.abort.signal };
    if (this.options.maxPagesPerRun !== undefined) opts.maxPages = this.options.maxPagesPerRun;
    const run = Promise.resolve()
      .then(() => this.options.syncer.syncEService(entry.config.id, opts))
      .then(
        (result) => this.succeeded(entry, result),
        (err: unknown) => this.failed(entry, err),
      )
      .catch((err: unknown) => {
        // A bug in a callback (onChange, metrics) must not kill the scheduler.
        this.logger.error({ eservice: status.id, ...errorLogFields(err) }, 'scheduler bookkeeping failed');
      })
      .finally(() => {
        entry.running = undefined;
        if (entry.removed) this.entries.delete(entry.config.id);
        this.kick();
      });
    entry.running = run;
  }

  private succeeded(entry: Entry, result: SyncRunResult): void {
    const status = entry.status;
    const now = Date.now();
    if (status.consecutiveFailures > 0) {
      this.logger.info({ eservice: status.id, eserviceName: status.name, after: status.consecutiveFailures }, 'e-service recovered');
    }
    status.state = 'idle';
    status.consecutiveFailures = 0;
    status.lastSuccessAt = new Date(now);
    status.lastResult = { caughtUp: result.caughtUp, pages: result.pages, signals: result.signals, matches: result.matches };
    status.nextRunAt = new Date(result.caughtUp || this.stopping ? now + this.pollDelayMs(entry) : now);
    this.logger.debug({ eservice: status.id, ...status.lastResult }, 'e-service sync run finished');
    const metrics = this.options.metrics;
    if (metrics) {
      metrics.eserviceUp.set({ eservice: status.id }, 1);
      metrics.lastSuccessfulPull.set({ eservice: status.id }, now / 1000);
      metrics.secondsSinceLastPull.set({ eservice: status.id }, 0);
      metrics.caughtUp.set({ eservice: status.id }, result.caughtUp ? 1 : 0);
    }
    this.changed(entry);
  }

  private failed(entry: Entry, err: unknown): void {
    const status = entry.status;
    const now = Date.now();
    if (this.stopping && (this.abort.signal.aborted || (isAppError(err) && err.code === 'SHUTTING_DOWN'))) {
      // Interrupted by our own shutdown: not a failure of the e-service.
      status.state = status.consecutiveFailures > 0 ? 'failing' : 'idle';
      status.nextRunAt = new Date(now);
      this.logger.info({ eservice: status.id, eserviceName: status.name }, 'e-service sync interrupted by shutdown');
      this.changed(entry);
      return;
    }
    status.consecutiveFailures++;
    status.state = 'failing';
    status.lastError = describeError(err, new Date(now));
    const delay = this.failureDelayMs(err, status.consecutiveFailures);
    status.nextRunAt = new Date(now + delay);
    this.logger.warn(
      { eservice: status.id, eserviceName: status.name, failures: status.consecutiveFailures, retryInSeconds: Math.round(delay / 1000), ...errorLogFields(err) },
      'e-service sync failed',
    );
    this.options.metrics?.eserviceUp.set({ eservice: status.id }, 0);
    this.changed(entry);
  }

  /**
   * A shorter interval applies at once: the waiting run moves to last success + new interval
   * when that is sooner. Never later (a longer one applies from the next run), and never for a
   * run that is in progress or backing off after a failure.
   */
  private bringForward(entry: Entry): void {
    const { lastSuccessAt, nextRunAt, consecutiveFailures } = entry.status;
    if (entry.running || consecutiveFailures > 0 || !lastSuccessAt || !nextRunAt) return;
    const sooner = lastSuccessAt.getTime() + this.pollDelayMs(entry);
    if (sooner < nextRunAt.getTime()) entry.status.nextRunAt = new Date(sooner);
  }

  private pollDelayMs(entry: Entry): number {
    const jitter = Math.min(Math.max(this.options.jitter, 0), 0.5);
    return entry.config.pollIntervalSeconds * 1000 * (1 + jitter * (2 * this.random() - 1));
  }

  private failureDelayMs(err: unknown, failures: number): number {
    const permanent = isAppError(err) && PERMANENT_CODES.has(err.code);
    const base = permanent
      ? this.backoff.permanentMs
      : Math.min(this.backoff.maxMs, this.backoff.baseMs * 2 ** Math.min(failures - 1, 30));
    // ±20 % so that e-services failing together (hub outage) do not retry in lockstep.
    return base * (0.8 + 0.4 * this.random());
  }

  private recordAge(entry: Entry, now: number): void {
    const last = entry.status.lastSuccessAt;
    if (last && this.options.metrics) {
      this.options.metrics.secondsSinceLastPull.set({ eservice: entry.status.id }, Math.max(0, (now - last.getTime()) / 1000));
    }
  }

  private changed(entry: Entry): void {
    if (!this.options.onChange) return;
    try {
      this.options.onChange({ ...entry.status });
    } catch (err) {
      this.logger.error({ ...errorLogFields(err) }, 'scheduler onChange callback failed');
    }
  }
}

function describeError(err: unknown, at: Date): NonNullable<EServiceStatus['lastError']> {
  if (isAppError(err)) {
    const described: NonNullable<EServiceStatus['lastError']> = { code: err.code, message: err.message, at };
    if (err.status !== undefined) described.status = err.status;
    if (err.correlationId !== undefined) described.correlationId = err.correlationId;
    return described;
  }
  return { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err), at };
}

export interface ReadinessPolicy {
  jitter: number;
  /** Slack beyond the poll interval for a run's own duration and retries. Default 60 s. */
  graceMs?: number;
  now?: number;
}

/**
 * Why the e-services are not "synced within their expected interval" (empty when they are):
 * each must have succeeded within pollInterval × (1 + jitter) + grace.
 */
export function staleEServices(snapshot: EServiceStatus[], policy: ReadinessPolicy): string[] {
  const now = policy.now ?? Date.now();
  const grace = policy.graceMs ?? 60_000;
  const reasons: string[] = [];
  for (const s of snapshot) {
    const expectedMs = s.pollIntervalSeconds * 1000 * (1 + policy.jitter) + grace;
    const why = s.state === 'paused' ? ` (paused: ${s.pausedReason})` : s.lastError && s.state === 'failing' ? ` (last error ${s.lastError.code})` : '';
    if (!s.lastSuccessAt) {
      reasons.push(`e-service ${s.name} (${s.id}) has not synced yet${why}`);
    } else if (now - s.lastSuccessAt.getTime() > expectedMs) {
      const ago = Math.round((now - s.lastSuccessAt.getTime()) / 1000);
      reasons.push(`e-service ${s.name} (${s.id}) last synced ${ago} s ago, expected within ${Math.round(expectedMs / 1000)} s${why}`);
    }
  }
  return reasons;
}

/** The one-line summary for systemd's STATUS= and logs, e.g. `3 e-services: 2 idle, 1 failing (Anagrafe: HUB_FORBIDDEN)`. */
export function summarize(snapshot: EServiceStatus[]): string {
  const counts: Record<EServiceRunState, number> = { idle: 0, syncing: 0, failing: 0, paused: 0 };
  for (const s of snapshot) counts[s.state]++;
  const parts = (Object.keys(counts) as EServiceRunState[]).filter((k) => counts[k] > 0).map((k) => `${counts[k]} ${k}`);
  const failing = snapshot
    .filter((s) => s.state === 'failing' && s.lastError)
    .slice(0, 3)
    .map((s) => `${s.name}: ${s.lastError!.code}`);
  const more = snapshot.filter((s) => s.state === 'failing').length - failing.length;
  const detail = failing.length > 0 ? ` (${failing.join(', ')}${more > 0 ? `, +${more}` : ''})` : '';
  const n = snapshot.length;
  return `${n} e-service${n === 1 ? '' : 's'}: ${parts.join(', ') || 'none'}${detail}`;
}
