import type { SinkConfig } from '../config/types.js';
import { AppError, errorLogFields, isAppError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Db } from '../store/db.js';
import { OutboxStore, type OutboxRow } from '../store/outbox.js';
import { DeadLetterStore, type DeadLetter } from '../store/dead-letters.js';
import { SinkPositionStore, type SinkState } from '../store/sink-positions.js';
import { backoffDelay, sleep } from './backoff.js';
import { createSink, type SinkFactoryOptions } from './factory.js';
import { isPermanentSinkError, SinkRejectedError, type Sink } from './sink.js';
import { sinkFilter, sinkStatus, type SinkStatus } from './status.js';
import { retryAfterOf } from './webhook.js';

export interface DeliveryOptions {
  db: Db;
  sinks: readonly SinkConfig[];
  /** Most events read from the outbox per delivery (outbox.delivery_batch_size). */
  batchSize: number;
  metrics?: Metrics;
  logger?: Logger;
  /** How often an idle loop looks for events written without `notify()` (another process). */
  pollIntervalMs?: number;
  /** Backoff after a failed batch: about `retryBaseMs`, doubling up to `retryMaxMs`, with jitter. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /**
   * `drain()` gives a failing sink this many attempts per batch before reporting it failed;
   * a webhook gets one, its own max_retries being its budget (keeps `sync --once` bounded).
   */
  drainAttempts?: number;
  /** Passed to the sink constructors (stdout stream, webhook retry delays). */
  sinkOptions?: Omit<SinkFactoryOptions, 'batchSize' | 'logger'>;
}

export interface DrainSinkResult {
  name: string;
  /** Events confirmed by this drain. */
  delivered: number;
  /** Events the receiver refused for good and this drain set aside (on_reject = "dead-letter"); left out when none. */
  deadLettered?: number;
  /** Events still waiting for the sink afterwards. */
  pending: number;
  state: SinkState;
  /** Why the sink did not finish, if it did not. */
  error: string | null;
}

export interface DrainResult {
  /** Every sink confirmed everything that was pending when the drain began. */
  complete: boolean;
  sinks: DrainSinkResult[];
}

type StepOutcome =
  | { kind: 'delivered'; count: number }
  /** An event refused for good was set aside (on_reject = "dead-letter"); delivery goes on. */
  | { kind: 'dead-lettered' }
  /** A refused batch of several events: they are offered one by one next, to set aside only the refused ones. */
  | { kind: 'isolating' }
  | { kind: 'idle' }
  | { kind: 'stopped'; error: string | null }
  | { kind: 'failed'; error: string; retryAfterMs: number | undefined }
  | { kind: 'aborted' };

interface Runner {
  config: SinkConfig;
  sink: Sink;
  state: SinkState;
  consecutiveFailures: number;
  /** Set while the loop waits; calling it ends the wait early. */
  wake: (() => void) | undefined;
  waitingFor: 'events' | 'retry' | 'backoff' | undefined;
  /** notify() arrived while the loop was busy: look again before sleeping. */
  notified: boolean;
  pendingGaugeAt: number;
  /** After a refused batch, batches of one event up to this outbox seq (see deadLetter). */
  isolateThrough: number;
}

/**
 * Delivers the outbox to the configured sinks, at least once (ARCHITECTURE invariant 2).
 *
 * One loop per sink reads the events after that sink's position, in outbox order, filtered by
 * its e-services, tenants and signal types (sinkFilter), hands them to the sink, and advances
 * the position in one small transaction only after the sink confirmed the batch. A crash between the two re-delivers the batch (the
 * event ids let receivers de-duplicate); nothing is ever skipped. Sinks are independent: a
 * failing one backs off alone; one that failed permanently is STOPPED (persisted in
 * sink_positions) until `retry()` or `signalhub-sync sinks retry NAME`.
 */
export class DeliveryService {
  private readonly db: Db;
  private readonly outbox: OutboxStore;
  private readonly positions: SinkPositionStore;
  private readonly deadLetters: DeadLetterStore;
  private readonly runners: Runner[];
  private readonly logger: Logger;
  private readonly metrics: Metrics | undefined;
  private readonly abort = new AbortController();
  private loops: Promise<void>[] | undefined;
  private stopping = false;

  constructor(private readonly options: DeliveryOptions) {
    this.db = options.db;
    this.outbox = new OutboxStore(options.db);
    this.positions = new SinkPositionStore(options.db);
    this.deadLetters = new DeadLetterStore(options.db);
    this.logger = (options.logger ?? silentLogger).child({ component: 'delivery' });
    this.metrics = options.metrics;
    const names = new Set<string>();
    for (const s of options.sinks) {
      if (names.has(s.name)) throw new AppError('CONFIG_INVALID', `sinks: the name "${s.name}" is used twice; each sink needs its own name (it keys its position)`);
      names.add(s.name);
    }
    this.runners = options.sinks.map((config) => ({
      config,
      sink: createSink(config, { ...options.sinkOptions, batchSize: options.batchSize, logger: options.logger }),
      state: 'active',
      consecutiveFailures: 0,
      wake: undefined,
      waitingFor: undefined,
      notified: false,
      pendingGaugeAt: 0,
      isolateThrough: 0,
    }));
  }

  /** Starts one loop per sink; they run until `stop`. */
  start(): void {
    if (this.loops) return;
    this.loadStates();
    this.loops = this.runners.map((r) => this.loop(r));
  }

  /** New events were written: idle loops look now instead of at their next poll. */
  notify(): void {
    for (const r of this.runners) {
      r.notified = true;
      if (r.waitingFor === 'events') r.wake?.();
    }
  }

  /**
   * Delivers everything pending now and returns (`sync --once`); for a service not started.
   * A sink that keeps failing (drainAttempts per batch) or stops is reported, not waited for.
   */
  async drain(opts: { signal?: AbortSignal } = {}): Promise<DrainResult> {
    if (this.loops) throw new AppError('INTERNAL', 'drain() is for a delivery service that was not started');
    this.loadStates();
    const signal = opts.signal ? AbortSignal.any([opts.signal, this.abort.signal]) : this.abort.signal;
    const target = this.outbox.maxSeq();
    const results = await Promise.all(this.runners.map((r) => this.drainOne(r, target, signal)));
    return { complete: results.every((s) => s.error === null && s.pending === 0), sinks: results };
  }

  /**
   * Ends the loops. An in-flight batch may finish within `graceMs` (and then counts as
   * delivered); after that it is abandoned WITHOUT advancing the position, to be re-delivered
   * on the next start. Closes the sinks.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    for (const r of this.runners) r.wake?.();
    const loops = Promise.all(this.loops ?? []);
    const graceOver = new AbortController();
    const finished = await Promise.race([loops.then(() => true), sleep(graceMs, graceOver.signal).then(() => false)]);
    graceOver.abort();
    if (!finished) {
      this.logger.warn({ graceMs }, 'abandoning in-flight deliveries; they will be re-delivered after restart');
      this.abort.abort();
      await loops;
    }
    await Promise.all(this.runners.map((r) => r.sink.close().catch(() => undefined)));
  }

  /** SIGHUP: file sinks reopen their path (logrotate). */
  reopen(): void {
    for (const r of this.runners) r.sink.reopen?.();
  }

  /**
   * Resumes a stopped sink (or every stopped sink without a name): what the running daemon
   * does for `sinks retry`, e.g. on SIGHUP. Returns the names resumed.
   */
  retry(name?: string): string[] {
    const targets = name === undefined ? this.runners : this.runners.filter((r) => r.config.name === name);
    if (name !== undefined && targets.length === 0) {
      throw new AppError('USAGE', `no sink named "${name}" (configured: ${this.runners.map((r) => r.config.name).join(', ') || 'none'})`);
    }
    const resumed: string[] = [];
    for (const r of targets) {
      if (!this.positions.resume(r.config.name) && r.state !== 'stopped') continue;
      r.state = 'active';
      r.consecutiveFailures = 0;
      this.metrics?.sinkStopped.set({ sink: r.config.name }, 0);
      this.logger.info({ sink: r.config.name }, 'sink resumed');
      resumed.push(r.config.name);
      r.wake?.();
    }
    return resumed;
  }

  status(): SinkStatus[] {
    return sinkStatus(this.db, this.options.sinks);
  }

  pending(sinkName: string): number {
    const r = this.runners.find((x) => x.config.name === sinkName);
    if (!r) throw new AppError('USAGE', `no sink named "${sinkName}"`);
    return this.outbox.countAfter(this.positions.get(sinkName).position, sinkFilter(r.config));
  }

  private loadStates(): void {
    for (const r of this.runners) {
      r.state = this.positions.ensure(r.config.name).state;
      this.metrics?.sinkStopped.set({ sink: r.config.name }, r.state === 'stopped' ? 1 : 0);
      this.updatePendingGauge(r, true);
      if (r.state === 'stopped') this.logger.error({ sink: r.config.name }, 'sink is stopped on a permanent error; run "signalhub-sync sinks retry" after fixing the receiver');
    }
  }

  private async loop(r: Runner): Promise<void> {
    const pollMs = this.options.pollIntervalMs ?? 1000;
    while (!this.stopping) {
      const outcome = await this.step(r, this.abort.signal);
      if (this.stopping) break;
      switch (outcome.kind) {
        case 'delivered':
        case 'dead-lettered':
        case 'isolating':
          break;
        case 'idle':
          await this.wait(r, 'events', pollMs);
          break;
        case 'stopped':
          await this.wait(r, 'retry', undefined);
          break;
        case 'failed':
          await this.wait(r, 'backoff', this.failureDelay(r, outcome.retryAfterMs));
          break;
        case 'aborted':
          return;
      }
    }
  }

  private async drainOne(r: Runner, target: number, signal: AbortSignal): Promise<DrainSinkResult> {
    const name = r.config.name;
    let delivered = 0;
    let deadLettered = 0;
    let error: string | null = null;
    let attempts = 0;
    // Dead letters queued by "sinks dead-letters retry" are offered too, even with the outbox done.
    while (!signal.aborted && (this.positions.get(name).position < target || (r.state === 'active' && this.deadLetters.nextRetry(name) !== undefined))) {
      const outcome = await this.step(r, signal);
      if (outcome.kind === 'delivered') {
        delivered += outcome.count;
        attempts = 0;
      } else if (outcome.kind === 'dead-lettered' || outcome.kind === 'isolating') {
        if (outcome.kind === 'dead-lettered') deadLettered += 1;
        attempts = 0;
      } else if (outcome.kind === 'failed') {
        error = outcome.error;
        if (++attempts >= (r.sink.retriesItself ? 1 : (this.options.drainAttempts ?? 3))) break;
        await sleep(this.failureDelay(r, outcome.retryAfterMs), signal);
        continue;
      } else if (outcome.kind === 'stopped') {
        error = outcome.error ?? 'stopped';
        break;
      } else if (outcome.kind === 'aborted') {
        error = 'interrupted';
        break;
      } else {
        break;
      }
      error = null;
    }
    if (signal.aborted && error === null && this.positions.get(name).position < target) error = 'interrupted';
    const pending = this.outbox.countAfter(this.positions.get(name).position, sinkFilter(r.config));
    this.metrics?.sinkPending.set({ sink: name }, pending);
    return { name, delivered, ...(deadLettered > 0 ? { deadLettered } : {}), pending, state: r.state, error: pending === 0 ? null : error };
  }

  /** One batch: read after the position, deliver, advance. Never throws. */
  private async step(r: Runner, signal: AbortSignal): Promise<StepOutcome> {
    const name = r.config.name;
    if (r.state === 'stopped') return { kind: 'stopped', error: this.positions.get(name).lastError };
    r.notified = false;
    const redelivery = await this.redeliverDeadLetter(r, signal);
    if (redelivery !== undefined) return redelivery;
    let rows: OutboxRow[];
    let position: number;
    let maxSeq: number;
    let limit = Math.max(1, Math.min(this.options.batchSize, r.sink.maxBatchSize));
    try {
      // One read transaction: the batch and the outbox end come from the same snapshot.
      ({ rows, position, maxSeq, limit } = this.db.transaction(() => {
        const pos = this.positions.get(name).position;
        const lim = pos < r.isolateThrough ? 1 : limit;
        return { position: pos, limit: lim, rows: this.outbox.readAfter(pos, lim, sinkFilter(r.config)), maxSeq: this.outbox.maxSeq() };
      })());
    } catch (err) {
      return this.failed(r, err);
    }
    // Events after the last one this sink takes are not for it: move past them, so that
    // pruning and the pending count see a filtered sink as caught up.
    const end = rows.length < limit ? maxSeq : rows[rows.length - 1]!.seq;
    if (rows.length === 0) {
      if (end > position) this.safely(() => this.advance(r, end, 0));
      this.updatePendingGauge(r, true);
      return { kind: 'idle' };
    }
    try {
      await r.sink.deliver(rows, signal);
    } catch (err) {
      if (signal.aborted) return { kind: 'aborted' };
      if (isPermanentSinkError(err) && r.config.type !== 'file' && r.config.type !== 'stdout' && r.config.onReject === 'dead-letter') return this.deadLetter(r, rows, end, err);
      return this.failed(r, err);
    }
    try {
      this.advance(r, end, rows.length);
    } catch (err) {
      // The batch went out but its confirmation is not stored: it will go out again (at-least-once).
      return this.failed(r, err);
    }
    if (r.consecutiveFailures > 0) this.logger.info({ sink: name, afterFailures: r.consecutiveFailures }, 'sink delivering again');
    r.consecutiveFailures = 0;
    this.metrics?.eventsDelivered.inc({ sink: name }, rows.length);
    this.updatePendingGauge(r, false);
    return { kind: 'delivered', count: rows.length };
  }

  /**
   * on_reject = "dead-letter": a refused single event goes to the dead letters and the position
   * moves past it, in one transaction. A refused batch of several events says nothing about
   * which one the receiver objects to: its events are offered one at a time next (isolateThrough),
   * so only the refused ones are set aside.
   */
  private deadLetter(r: Runner, rows: readonly OutboxRow[], end: number, err: unknown): StepOutcome {
    const name = r.config.name;
    this.metrics?.sinkFailures.inc({ sink: name });
    if (rows.length > 1) {
      r.isolateThrough = rows[rows.length - 1]!.seq;
      this.logger.warn({ sink: name, events: rows.length, ...errorLogFields(err) }, 'batch refused: offering its events one at a time to set aside only the refused ones');
      return { kind: 'isolating' };
    }
    const row = rows[0]!;
    const rejection = err as SinkRejectedError;
    const status = rejection.status ?? exitCodeOf(rejection);
    try {
      this.db
        .transaction(() => {
          this.deadLetters.add({ sink: name, seq: row.seq, eventId: row.eventId, eserviceId: row.eserviceId, payload: row.payload, status, response: rejection instanceof SinkRejectedError ? (rejection.response ?? null) : null, error: rejection.message });
          this.positions.advance(name, end, 0);
        })
        .immediate();
    } catch (storeErr) {
      return this.failed(r, storeErr);
    }
    this.metrics?.deadLetters.inc({ sink: name });
    this.logger.warn({ sink: name, eventId: row.eventId, seq: row.seq, ...errorLogFields(err) }, 'event refused by the receiver: set aside as a dead letter, delivery goes on ("sinks dead-letters list")');
    this.updatePendingGauge(r, false);
    return { kind: 'dead-lettered' };
  }

  /** A dead letter queued by "sinks dead-letters retry", offered again before the outbox. */
  private async redeliverDeadLetter(r: Runner, signal: AbortSignal): Promise<StepOutcome | undefined> {
    const name = r.config.name;
    let letter: DeadLetter | undefined;
    try {
      letter = this.deadLetters.nextRetry(name);
    } catch (err) {
      return this.failed(r, err);
    }
    if (letter === undefined) return undefined;
    const row: OutboxRow = { seq: letter.seq, eventId: letter.eventId, eserviceId: letter.eserviceId, signalId: null, kind: kindOf(letter.payload), payload: letter.payload, createdAt: letter.createdAt };
    try {
      await r.sink.deliver([row], signal);
    } catch (err) {
      if (signal.aborted) return { kind: 'aborted' };
      if (!isPermanentSinkError(err)) return this.failed(r, err);
      const rejection = err as SinkRejectedError;
      this.safely(() => this.deadLetters.add({ sink: name, seq: row.seq, eventId: row.eventId, eserviceId: row.eserviceId, payload: row.payload, status: rejection.status ?? exitCodeOf(rejection), response: rejection instanceof SinkRejectedError ? (rejection.response ?? null) : null, error: rejection.message }));
      this.metrics?.deadLetters.inc({ sink: name });
      this.logger.warn({ sink: name, eventId: row.eventId, deadLetter: letter.id, ...errorLogFields(err) }, 'dead letter refused again: it stays a dead letter');
      return { kind: 'dead-lettered' };
    }
    this.safely(() => this.deadLetters.remove(letter.id));
    this.metrics?.eventsDelivered.inc({ sink: name });
    this.logger.info({ sink: name, eventId: row.eventId, deadLetter: letter.id }, 'dead letter delivered');
    return { kind: 'delivered', count: 1 };
  }

  private advance(r: Runner, seq: number, count: number): void {
    this.db.transaction(() => this.positions.advance(r.config.name, seq, count)).immediate();
  }

  private failed(r: Runner, err: unknown): StepOutcome {
    const name = r.config.name;
    this.updatePendingGauge(r, false);
    const message = isAppError(err) ? err.message : `sink "${name}": ${(err as Error)?.message ?? String(err)}`;
    this.metrics?.sinkFailures.inc({ sink: name });
    if (isPermanentSinkError(err)) {
      r.state = 'stopped';
      this.safely(() => this.positions.stop(name, message));
      this.metrics?.sinkStopped.set({ sink: name }, 1);
      this.logger.error({ sink: name, ...errorLogFields(err) }, 'sink STOPPED on a permanent error: nothing more is delivered to it until "signalhub-sync sinks retry"');
      return { kind: 'stopped', error: message };
    }
    r.consecutiveFailures += 1;
    this.safely(() => this.positions.recordError(name, message));
    this.logger.warn({ sink: name, failures: r.consecutiveFailures, ...errorLogFields(err) }, 'delivery failed; the batch will be retried');
    return { kind: 'failed', error: message, retryAfterMs: retryAfterOf(err) };
  }

  private failureDelay(r: Runner, retryAfterMs: number | undefined): number {
    const delay = backoffDelay(Math.max(1, r.consecutiveFailures), this.options.retryBaseMs ?? 1000, this.options.retryMaxMs ?? 60_000);
    return Math.max(delay, Math.min(retryAfterMs ?? 0, this.options.retryMaxMs ?? 60_000));
  }

  /** Waits `ms` (forever if undefined) or until woken (notify/retry/stop). */
  private async wait(r: Runner, why: NonNullable<Runner['waitingFor']>, ms: number | undefined): Promise<void> {
    const woken = new AbortController();
    r.wake = () => woken.abort();
    r.waitingFor = why;
    try {
      // Whatever should end the wait may have happened while the loop was busy.
      if (this.stopping || (why === 'events' && r.notified) || (why === 'retry' && r.state !== 'stopped')) return;
      await sleep(ms ?? 2 ** 31 - 1, woken.signal);
    } finally {
      r.wake = undefined;
      r.waitingFor = undefined;
    }
  }

  private updatePendingGauge(r: Runner, force: boolean): void {
    if (!this.metrics) return;
    const now = Date.now();
    // Counting a large backlog costs a scan: while busy, at most once a second.
    if (!force && now - r.pendingGaugeAt < 1000) return;
    r.pendingGaugeAt = now;
    this.safely(() => this.metrics!.sinkPending.set({ sink: r.config.name }, this.outbox.countAfter(this.positions.get(r.config.name).position, sinkFilter(r.config))));
  }

  private safely(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.logger.error({ ...errorLogFields(err) }, 'cannot record sink state');
    }
  }
}

/** The exec sink's exit code, when that is what refused. */
function exitCodeOf(err: { details?: Record<string, unknown> }): number | null {
  const code = err.details?.exitCode;
  return typeof code === 'number' ? code : null;
}

function kindOf(payload: string): OutboxRow['kind'] {
  try {
    return (JSON.parse(payload) as { type: OutboxRow['kind'] }).type;
  } catch {
    return 'signal';
  }
}
