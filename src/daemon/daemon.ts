import { isDeepStrictEqual } from 'node:util';
import { loadConfig } from '../config/load.js';
import { configWarnings } from '../config/summary.js';
import type { Config } from '../config/types.js';
import { errorLogFields, isAppError, ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import { Metrics } from '../metrics.js';
import { DeliveryService } from '../sinks/delivery.js';
import { SubjectInbox } from '../subjects/inbox.js';
import { backpressureFor, backpressuredEServices, pruneDelivered, sinkStatus } from '../sinks/status.js';
import { openDatabase, type Db } from '../store/db.js';
import { EServiceStore } from '../store/eservices.js';
import { WriterLock } from '../store/lock.js';
import { OutboxStore } from '../store/outbox.js';
import { ResyncStore } from '../store/resync.js';
import type { SyncEngine } from '../sync/engine.js';
import { closeRemotes, createEngine, createRemotes, type Remotes } from '../sync/runtime.js';
import { countSubjectsByTenant } from '../sync/status.js';
import { RetentionWatch } from './alerts.js';
import { HealthServer, type Readiness } from './http.js';
import { processNotifier, Watchdog, type SystemdNotifier } from './notify.js';
import { Scheduler, staleEServices, summarize, type EServiceStatus, type EServiceSyncer, type ScheduledEService } from './scheduler.js';

export interface DaemonOptions {
  config: Config;
  /** The file SIGHUP re-reads. */
  configFile: string;
  logger: Logger;
  metrics?: Metrics;
  /** Default: the process-wide notifier (NOTIFY_SOCKET from the environment). */
  notifier?: SystemdNotifier;
  /** The log level was forced on the command line: a reload must not change it. */
  keepLogLevel?: boolean;
  /** Pages per scheduled run, so one e-service's long catch-up does not starve the others. Default 20. */
  maxPagesPerRun?: number;
  /** How often sink backlogs are re-checked against outbox.max_pending. Default 5 s. */
  backpressureIntervalMs?: number;
  /** How often gauges and the STATUS= line are refreshed from the database. Default 15 s. */
  refreshIntervalMs?: number;
  /** How often delivered events past outbox.keep_days are pruned. Default 1 h. */
  housekeepingIntervalMs?: number;
  /** How often the inbox of queued subject imports is looked at. */
  inboxIntervalMs?: number;
  /** The clock of the retention alerts (alerts.*): tests drive it. Default Date.now. */
  now?: () => number;
}

export interface ReloadOutcome {
  applied: boolean;
  /** Why the new file was rejected, one line per problem. */
  problems: string[];
  /** Changed settings that only a restart applies. */
  needRestart: string[];
  /** Stopped sinks resumed by the reload. */
  resumedSinks: string[];
}

export interface Daemon {
  /** The running configuration (the last one accepted). */
  readonly config: Config;
  readonly metrics: Metrics;
  /** Base URL of the health/metrics endpoint, when http.enabled. */
  readonly httpUrl: string | undefined;
  eservices(): EServiceStatus[];
  readiness(): Readiness;
  /** The one-line summary sent as STATUS=. */
  statusLine(): string;
  /** SIGHUP: re-read the config file; an invalid file is logged and the running config kept. */
  reload(): Promise<ReloadOutcome>;
  /**
   * Graceful stop: no new pulls, running page transactions finish or roll back, sinks get
   * part of `daemon.shutdown_timeout_seconds` to finish their batch, then everything closes.
   */
  stop(): Promise<void>;
}

/**
 * The long-running composition of `signalhub-sync run` (and the demo): the database under the
 * single-writer lock, the sync engine driven by the scheduler, delivery to the sinks, the
 * health/metrics endpoint, systemd notifications and periodic housekeeping.
 */
export async function startDaemon(options: DaemonOptions): Promise<Daemon> {
  const logger = options.logger;
  const metrics = options.metrics ?? new Metrics();
  const notifier = options.notifier ?? processNotifier(logger);
  for (const warning of configWarnings(options.config)) logger.warn({ warning }, 'configuration warning');

  const lock = WriterLock.acquire(options.config.database, 'run');
  let db: Db;
  try {
    db = openDatabase(options.config.database);
  } catch (err) {
    lock.release();
    throw err;
  }
  const closeDb = (): void => {
    try {
      db.close();
    } finally {
      lock.release();
    }
  };

  try {
    const runtime = new DaemonRuntime({ ...options, metrics, notifier }, db, closeDb);
    await runtime.start();
    return runtime;
  } catch (err) {
    closeDb();
    throw err;
  }
}

class DaemonRuntime implements Daemon {
  config: Config;
  readonly metrics: Metrics;
  httpUrl: string | undefined;
  private readonly options: DaemonOptions & { metrics: Metrics; notifier: SystemdNotifier };
  private readonly logger: Logger;
  private readonly db: Db;
  private readonly closeDb: () => void;
  private readonly remotes: Remotes;
  private readonly notifier: SystemdNotifier;
  private readonly watchdog: Watchdog;
  private readonly scheduler: Scheduler;
  private engine: SyncEngine;
  private delivery: DeliveryService;
  private http: HealthServer | undefined;
  private paused = new Map<string, string>();
  private readonly timers: NodeJS.Timeout[] = [];
  private statusTimer: NodeJS.Timeout | undefined;
  private lastStatusLine = '';
  /** Subjects per tenant, counted at start and after each import (recountSubjects). */
  private subjectCounts: { tenant: string; subjects: number }[] | undefined;
  private reloading: Promise<ReloadOutcome> | undefined;
  private stopping: Promise<void> | undefined;
  private readonly inbox: SubjectInbox;
  /** Set while queued subject changes are applied: pulling pauses meanwhile. */
  private inboxRun: Promise<void> | undefined;
  /** Warnings before data is lost: stale / critical e-services, the retention margin gauge. */
  private readonly retention: RetentionWatch;

  constructor(options: DaemonRuntime['options'], db: Db, closeDb: () => void) {
    this.options = options;
    this.config = options.config;
    this.metrics = options.metrics;
    this.logger = options.logger;
    this.notifier = options.notifier;
    this.db = db;
    this.closeDb = closeDb;
    this.remotes = createRemotes(this.config, { logger: this.logger, metrics: this.metrics });
    this.inbox = new SubjectInbox(this.config.database);
    this.delivery = this.createDelivery(this.config);
    this.engine = this.createEngine(this.config);
    this.watchdog = new Watchdog({ notifier: this.notifier, logger: this.logger });
    this.retention = new RetentionWatch(db, { logger: this.logger, metrics: this.metrics, now: options.now ?? Date.now });
    // The engine is replaced on reload; runs already started finish with the one they had.
    const syncer: EServiceSyncer = { syncEService: (id, opts) => this.engine.syncEService(id, opts) };
    this.scheduler = new Scheduler({
      eservices: scheduled(this.config),
      syncer,
      concurrency: this.config.daemon.concurrency,
      jitter: this.config.hub.pollJitter,
      maxPagesPerRun: options.maxPagesPerRun ?? 20,
      isPaused: (id) => this.pauseReason(id),
      onTick: () => this.watchdog.beat(),
      onChange: () => this.scheduleStatus(),
      logger: this.logger,
      metrics: this.metrics,
    });
  }

  async start(): Promise<void> {
    this.refreshBackpressure();
    this.registerEServices();
    await this.recountSubjects();
    this.refreshGauges();
    if (this.config.http.enabled) {
      this.http = new HealthServer({ host: this.config.http.host, port: this.config.http.port, readiness: () => this.readiness(), metrics: this.metrics, logger: this.logger });
      this.httpUrl = (await this.http.start()).url;
    }
    this.delivery.start();
    this.scheduler.start();
    this.watchdog.start();
    this.every(this.options.backpressureIntervalMs ?? 5_000, () => this.refreshBackpressure());
    this.every(this.options.refreshIntervalMs ?? 15_000, () => {
      this.refreshGauges();
      this.scheduleStatus();
    });
    this.every(this.options.housekeepingIntervalMs ?? 3_600_000, () => this.housekeeping());
    this.every(this.options.inboxIntervalMs ?? 2_000, () => this.applyInbox());
    // Once soon after start too: a daemon restarted daily would otherwise never prune.
    this.timers.push(setTimeout(() => this.housekeeping(), 60_000).unref());
    this.notifier.ready();
    this.sendStatus();
    this.logger.info(
      { eservices: this.config.eservices.length, sinks: this.config.sinks.length, database: this.config.database, http: this.httpUrl ?? 'disabled', watchdogMs: this.watchdog.intervalMs },
      'signalhub-sync running',
    );
  }

  eservices(): EServiceStatus[] {
    return this.scheduler.snapshot();
  }

  readiness(): Readiness {
    const reasons = staleEServices(this.scheduler.snapshot(), { jitter: this.config.hub.pollJitter });
    // Warnings before data is lost (alerts.*) and hub 403s with their back-office fix.
    reasons.push(...this.retention.evaluate(this.config));
    for (const sink of sinkStatus(this.db, this.config.sinks)) {
      if (sink.state === 'stopped') reasons.push(`sink ${sink.name} is stopped: ${sink.lastError ?? 'permanent error'} (send SIGHUP or restart after fixing the receiver)`);
    }
    return { ready: reasons.length === 0, reasons };
  }

  statusLine(): string {
    const summary = summarize(this.scheduler.snapshot());
    const sinks = this.config.sinks.length > 0 ? sinkStatus(this.db, this.config.sinks) : [];
    if (sinks.length === 0) return summary;
    const pending = Math.max(...sinks.map((s) => s.pending));
    const stopped = sinks.filter((s) => s.state === 'stopped').map((s) => s.name);
    return `${summary}; ${pending} event${pending === 1 ? '' : 's'} pending${stopped.length > 0 ? `; sink STOPPED: ${stopped.join(', ')}` : ''}`;
  }

  reload(): Promise<ReloadOutcome> {
    // Overlapping reloads (SIGHUP twice) read the file once more after the running one.
    const run = (this.reloading ?? Promise.resolve()).then(() => this.doReload());
    this.reloading = run.finally(() => {
      if (this.reloading === run) this.reloading = undefined;
    }) as Promise<ReloadOutcome>;
    return run;
  }

  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  // ---- reload ----------------------------------------------------------------------------

  private async doReload(): Promise<ReloadOutcome> {
    const outcome: ReloadOutcome = { applied: false, problems: [], needRestart: [], resumedSinks: [] };
    if (this.stopping) return outcome;
    let next: Config;
    try {
      next = await loadConfig(this.options.configFile);
    } catch (err) {
      outcome.problems = err instanceof ConfigError ? err.problems.map((p) => `${p.path || '(root)'}: ${p.message}`) : [isAppError(err) ? err.message : String(err)];
      this.logger.error({ file: this.options.configFile, problems: outcome.problems, ...errorLogFields(err) }, `configuration reload rejected, keeping the running configuration: ${outcome.problems.join('; ')}`);
      return outcome;
    }
    if (this.stopping) return outcome;
    for (const warning of configWarnings(next)) this.logger.warn({ warning }, 'configuration warning');
    outcome.needRestart = restartOnlyChanges(this.config, next);
    if (outcome.needRestart.length > 0) {
      this.logger.warn({ settings: outcome.needRestart }, `configuration changes that take effect only after a restart: ${outcome.needRestart.join(', ')}`);
    }

    const previous = this.config;
    const effective = withRunningRestartOnly(previous, next);
    const sinksChanged = !isDeepStrictEqual(previous.sinks, effective.sinks);
    let engine: SyncEngine;
    let delivery: DeliveryService | undefined;
    try {
      engine = this.createEngine(effective);
      delivery = sinksChanged ? this.createDelivery(effective) : undefined;
    } catch (err) {
      outcome.problems = [isAppError(err) ? err.message : String(err)];
      this.logger.error({ file: this.options.configFile, ...errorLogFields(err) }, `configuration reload rejected, keeping the running configuration: ${outcome.problems.join('; ')}`);
      return outcome;
    }
    this.config = effective;
    this.engine = engine;
    // Key files are read again and vouchers requested anew: a rotated key takes effect now.
    this.remotes.vouchers.reloadCredentials(effective.pdnd);
    if (!this.options.keepLogLevel && effective.log.level !== previous.log.level) this.logger.level = effective.log.level;
    if (delivery) {
      // The old loops finish their batch; the new ones start from the stored positions.
      const old = this.delivery;
      this.delivery = delivery;
      await old.stop(5_000);
      if (this.stopping) return outcome;
      this.delivery.start();
      this.logger.info({ sinks: effective.sinks.map((s) => s.name) }, 'sinks reconfigured');
    } else {
      this.delivery.reopen();
    }
    // `sinks retry NAME` cannot run while the daemon holds the database: a reload resumes
    // every stopped sink instead (the operator fixed the receiver, then sent SIGHUP).
    outcome.resumedSinks = this.delivery.retry();
    this.scheduler.setEServices(scheduled(effective));
    this.registerEServices();
    this.refreshBackpressure();
    this.refreshGauges();
    this.scheduleStatus();
    outcome.applied = true;
    this.logger.info({ eservices: effective.eservices.map((e) => e.name), sinks: effective.sinks.map((s) => s.name), resumedSinks: outcome.resumedSinks }, 'configuration reloaded');
    return outcome;
  }

  // ---- stop ------------------------------------------------------------------------------

  private async doStop(): Promise<void> {
    const started = Date.now();
    const budgetMs = this.config.daemon.shutdownTimeoutSeconds * 1000;
    this.notifier.stopping();
    for (const timer of this.timers) clearInterval(timer);
    if (this.statusTimer) clearTimeout(this.statusTimer);
    this.watchdog.stop();
    await this.reloading?.catch(() => undefined);
    await this.scheduler.stop();
    // A queued import finishes its transaction (it is applied at most once, never half).
    await this.inboxRun;
    // Sinks may finish their in-flight batch with part of what is left of the budget; the rest
    // is kept for closing, so the process exits 0 before the signal handler's hard timeout.
    const left = budgetMs - (Date.now() - started);
    await this.delivery.stop(Math.max(0, Math.min(10_000, left / 2)));
    await this.http?.close();
    await closeRemotes(this.remotes);
    this.closeDb();
    this.logger.info({ ms: Date.now() - started }, 'daemon stopped');
    await this.notifier.flush();
  }

  // ---- parts -----------------------------------------------------------------------------

  private createEngine(config: Config): SyncEngine {
    return createEngine(config, this.db, this.remotes, { logger: this.logger, metrics: this.metrics, onEvents: () => this.delivery.notify() });
  }

  private createDelivery(config: Config): DeliveryService {
    return new DeliveryService({ db: this.db, sinks: config.sinks, batchSize: config.outbox.deliveryBatchSize, metrics: this.metrics, logger: this.logger });
  }

  private pauseReason(eserviceId: string): string | undefined {
    if (this.inboxRun) return 'applying queued subject changes (subjects import --queue)';
    const sink = backpressureFor(this.paused, eserviceId);
    return sink === undefined ? undefined : `sink ${sink} has more than ${this.config.outbox.maxPending} undelivered events (outbox.max_pending)`;
  }

  /**
   * Applies subject imports queued by `subjects import --queue`, one at a time, with pulling
   * paused and no sync run in progress: an import may hold one transaction for its whole file.
   */
  private applyInbox(): void {
    if (this.inboxRun || this.stopping || this.inbox.pending().length === 0) return;
    this.inboxRun = (async () => {
      const waitUntil = Date.now() + 120_000;
      while (this.scheduler.snapshot().some((s) => s.state === 'syncing') && Date.now() < waitUntil) await new Promise((r) => setTimeout(r, 100));
      for (const id of this.inbox.pending()) {
        if (this.stopping) break;
        const result = await this.inbox.apply(id, this.db, this.config);
        if (result.error) this.logger.error({ job: id, code: result.error.code, message: result.error.message }, 'queued subject import failed');
        else {
          const r = result.report!;
          this.logger.info({ job: id, read: r.read, imported: r.imported, updated: r.updated, unchanged: r.unchanged, removed: r.removed, rejected: r.rejectedCount, committed: r.committed, refilledEpochs: r.refilledEpochs }, 'queued subject import applied');
        }
      }
      this.inbox.pruneResults(7 * 86_400_000);
      await this.recountSubjects();
      this.refreshGauges();
    })()
      .catch((err: unknown) => this.logger.error({ ...errorLogFields(err) }, 'applying queued subject changes failed'))
      .finally(() => {
        this.inboxRun = undefined;
        this.scheduler.kick();
      });
  }

  private refreshBackpressure(): void {
    this.safely('backpressure check', () => {
      this.paused = backpressuredEServices(this.db, this.config.sinks, this.config.outbox.maxPending);
    });
  }

  /**
   * Records every configured e-service in the database at start and reload, so that one the hub
   * never answers still has a "first configured" time for the retention alerts to count from.
   */
  private registerEServices(): void {
    this.safely('e-service registration', () => {
      const store = new EServiceStore(this.db);
      const now = (this.options.now ?? Date.now)();
      for (const es of this.config.eservices) if (!store.get(es.id)) store.ensure(es.id, es.name, now);
    });
  }

  /** Gauges the engine and delivery set only when they act: fresh after start, reload and periodically. */
  /**
   * Subjects change only through this daemon's import queue while it runs (it holds the writer
   * lock): they are counted at start and after each import, not on every refresh, and in slices.
   */
  private async recountSubjects(): Promise<void> {
    try {
      this.subjectCounts = await countSubjectsByTenant(this.db);
    } catch (err) {
      this.logger.warn({ ...errorLogFields(err) }, 'counting subjects per tenant failed; the gauge keeps its last value');
    }
  }

  private refreshGauges(): void {
    this.safely('retention alerts', () => void this.retention.evaluate(this.config));
    this.safely('metrics refresh', () => {
      const rows = new Map(new EServiceStore(this.db).all().map((r) => [r.eserviceId, r]));
      const open = new ResyncStore(this.db).openCountByEService();
      for (const es of this.config.eservices) {
        this.metrics.cursor.set({ eservice: es.id }, rows.get(es.id)?.cursor ?? 0);
        this.metrics.resyncOpen.set({ eservice: es.id }, open.get(es.id) ?? 0);
      }
      // A rename on reload must not leave the old name's series behind.
      this.metrics.eserviceInfo.reset();
      for (const es of this.config.eservices) this.metrics.eserviceInfo.set({ eservice: es.id, name: es.name }, 1);
      // Tenants come and go with imports: series of a tenant with no subjects left are dropped.
      this.metrics.subjects.reset();
      for (const t of this.subjectCounts ?? []) this.metrics.subjects.set({ tenant: t.tenant }, t.subjects);
      const outbox = new OutboxStore(this.db);
      const now = Date.now();
      for (const sink of sinkStatus(this.db, this.config.sinks)) {
        const oldest = outbox.oldestCreatedAfter(sink.position, { eservices: sink.eservices, tenants: sink.tenants, signalTypes: sink.signalTypes });
        this.metrics.sinkOldestPendingAge.set({ sink: sink.name }, oldest === null ? 0 : Math.max(0, (now - oldest) / 1000));
        this.metrics.sinkPending.set({ sink: sink.name }, sink.pending);
        this.metrics.sinkStopped.set({ sink: sink.name }, sink.state === 'stopped' ? 1 : 0);
      }
    });
  }

  private housekeeping(): void {
    if (this.stopping) return;
    this.safely('outbox pruning', () => {
      const pruned = pruneDelivered(this.db, this.config.sinks, this.config.outbox.keepDays);
      if (pruned > 0) this.logger.info({ pruned, keepDays: this.config.outbox.keepDays }, 'delivered events pruned from the outbox');
    });
  }

  /** STATUS= at most every second: e-services change state on every run. */
  private scheduleStatus(): void {
    if (this.statusTimer || this.stopping) return;
    this.statusTimer = setTimeout(() => {
      this.statusTimer = undefined;
      this.sendStatus();
    }, 1_000);
    this.statusTimer.unref();
  }

  private sendStatus(): void {
    this.safely('status line', () => {
      const line = this.statusLine();
      if (line === this.lastStatusLine) return;
      this.lastStatusLine = line;
      this.notifier.status(line);
      this.logger.debug({ status: line }, 'status');
    });
  }

  private every(ms: number, fn: () => void): void {
    this.timers.push(setInterval(fn, ms).unref());
  }

  private safely(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.logger.error({ ...errorLogFields(err) }, `${what} failed`);
    }
  }
}

function scheduled(config: Config): ScheduledEService[] {
  return config.eservices.map((e) => ({ id: e.id, name: e.name, pollIntervalSeconds: e.pollIntervalSeconds }));
}

/**
 * Settings read once at start (connections, credentials, listeners, scheduler shape): a reload
 * cannot apply them. Named as in the config file.
 */
export function restartOnlyChanges(running: Config, next: Config): string[] {
  const changed: string[] = [];
  const check = (name: string, a: unknown, b: unknown): void => {
    if (!isDeepStrictEqual(a, b)) changed.push(name);
  };
  check('database', running.database, next.database);
  check('log.destination', running.log.destination, next.log.destination);
  // The M2M client (key rotation: next_key_id promoted to key_id) is applied by a reload.
  check('pdnd', { ...running.pdnd, m2m: undefined }, { ...next.pdnd, m2m: undefined });
  check('hub.base_url', running.hub.baseUrl, next.hub.baseUrl);
  check('hub.request_timeout_ms', running.hub.requestTimeoutMs, next.hub.requestTimeoutMs);
  check('hub.max_retries', running.hub.maxRetries, next.hub.maxRetries);
  check('hub.max_retry_delay_ms', running.hub.maxRetryDelayMs, next.hub.maxRetryDelayMs);
  check('hub.max_rate_limit_wait_ms', running.hub.maxRateLimitWaitMs, next.hub.maxRateLimitWaitMs);
  check('hub.initial_rate_limit', running.hub.initialRateLimit, next.hub.initialRateLimit);
  check('hub.poll_jitter', running.hub.pollJitter, next.hub.pollJitter);
  check('crypto.request_timeout_ms', running.crypto.requestTimeoutMs, next.crypto.requestTimeoutMs);
  check('http', running.http, next.http);
  check('daemon', running.daemon, next.daemon);
  return changed;
}

/** The new config with the restart-only settings (restartOnlyChanges) kept as they run. */
function withRunningRestartOnly(running: Config, next: Config): Config {
  return {
    ...next,
    database: running.database,
    log: { ...next.log, destination: running.log.destination },
    pdnd: { ...running.pdnd, m2m: next.pdnd.m2m },
    hub: {
      ...next.hub,
      baseUrl: running.hub.baseUrl,
      requestTimeoutMs: running.hub.requestTimeoutMs,
      maxRetries: running.hub.maxRetries,
      maxRetryDelayMs: running.hub.maxRetryDelayMs,
      maxRateLimitWaitMs: running.hub.maxRateLimitWaitMs,
      initialRateLimit: running.hub.initialRateLimit,
      pollJitter: running.hub.pollJitter,
    },
    crypto: { ...next.crypto, requestTimeoutMs: running.crypto.requestTimeoutMs },
    http: running.http,
    daemon: running.daemon,
  };
}
