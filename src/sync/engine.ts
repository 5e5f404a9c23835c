import { setImmediate as yieldToLoop, setTimeout as delay } from 'node:timers/promises';
import type { Config, EServiceConfig } from '../config/types.js';
import type { CryptoInfo } from '../crypto/crypto-info-client.js';
import { IDENTITY_ALGORITHM, PseudonymHasher, decodeObjectId, digestLength, type PseudonymEncoding } from '../crypto/pseudonym.js';
import { AppError, errorLogFields, isAppError } from '../errors.js';
import type { SignalEvent } from '../events.js';
import type { Page, Signal, SkipReason } from '../hub/types.js';
import { silentLogger, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Db } from '../store/db.js';
import { EpochStore, epochForSignal, type Epoch } from '../store/epochs.js';
import { EServiceStore, type EServiceRow } from '../store/eservices.js';
import { OutboxStore } from '../store/outbox.js';
import { TenantFanout } from './tenant-events.js';
import { SignalLogStore, type LoggedSignal } from '../store/signal-log.js';
import { SkippedSignalStore } from '../store/skipped-signals.js';
import { storeError } from '../store/sqlite-errors.js';
import { PseudonymStore, digestPrefix, type PseudonymCandidate } from '../store/pseudonyms.js';
import { ensureFilled, fillProgressReporter, needsFill, reclaimPseudonymSpace } from './reseed.js';
import { ResyncReporter } from './resync-reports.js';
import { decideInitial, decideRotation, type CryptoAnswer, type EpochPlan, type RotationDecision } from './rotation.js';

/** What the engine needs of the Signal Hub pull client (src/hub/client.ts). */
export interface PageSource {
  pull(eserviceId: string, cursor: number, size?: number, signal?: AbortSignal): Promise<Page>;
}

/** What the engine needs of the crypto-info client (src/crypto/crypto-info-client.ts). */
export interface CryptoSource {
  /** `signal` (shutdown) must end a slow or retrying fetch at once. */
  fetch(eservice: EServiceConfig, opts?: { signalId?: number; signal?: AbortSignal }): Promise<CryptoInfo>;
}

export interface SyncEngineOptions {
  db: Db;
  config: Config;
  hub: PageSource;
  crypto: CryptoSource;
  metrics?: Metrics;
  logger?: Logger;
  /** Called after a transaction wrote outbox events (wakes the delivery loops). */
  onEvents?: () => void;
  now?: () => number;
  /** How the rotation race is waited out; tests pass a fake clock's. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export interface SyncOutcome {
  eserviceId: string;
  /** The hub answered 200: nothing more to pull now. */
  caughtUp: boolean;
  pages: number;
  /** Signals processed for the first time (re-reads of the lookback are not counted). */
  signals: number;
  matches: number;
  skipped: number;
  cursor: number;
}

/** One syncEService call: what it works on and what it has learnt so far. */
interface RunContext {
  es: EServiceConfig;
  row: EServiceRow;
  log: Logger;
  signal: AbortSignal | undefined;
  identity: boolean;
  /**
   * A whole rotation wait already expired in this run: the producer's answers are settled, so
   * later stale answers conclude at once and a backlog spanning N rotations waits once, not N times.
   */
  raceWaitSpent: boolean;
  skippedWarned: number;
  skipped: number;
  /** When the run began, before its first pull (the lookback's re-reads came after it). */
  startedAt: number;
}

interface MatchContext {
  epoch: Epoch;
  encoding: PseudonymEncoding;
  length: number;
  /** Recomputes a candidate's full digest: the index stores only a prefix. */
  hasher: PseudonymHasher;
}

const DAY_MS = 86_400_000;
/** Warn lines for skipped signals per run; the rest are counted in one summary line. */
const SKIP_WARN_LINES = 10;

/**
 * The sync engine: per e-service, pulls pages from the stored cursor and turns each page into
 * one SQLite transaction that writes the outbox events of its matched signals and advances the
 * cursor (invariant 1). SEEDUPDATEs open new seed epochs (the policy is in rotation.ts); every
 * signal is matched only against the epoch in force for its id, and signals no seed can be had
 * for are reported (invariant 3, resync-reports.ts). A signal that cannot be matched is recorded
 * and passed (invariant 7).
 */
export class SyncEngine {
  private readonly db: Db;
  private readonly config: Config;
  private readonly hub: PageSource;
  private readonly crypto: CryptoSource;
  private readonly metrics: Metrics | undefined;
  private readonly logger: Logger;
  private readonly onEvents: () => void;
  private readonly now: () => number;
  private readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  private readonly eservices: EServiceStore;
  private readonly epochs: EpochStore;
  private readonly outbox: OutboxStore;
  private readonly reports: ResyncReporter;
  private readonly signalLog: SignalLogStore;
  private readonly skippedSignals: SkippedSignalStore;
  private readonly pseudonyms: PseudonymStore;
  private readonly fanout: TenantFanout;
  /** Events appended per tenant since the last flush; counted in metrics only after a commit. */
  private emittedByTenant = new Map<string, number>();
  /** Per epoch id: its hasher, for as long as its recipe and seed stay what they were. */
  private readonly hashers = new Map<number, { recipeKey: string; length: number; hasher: PseudonymHasher }>();
  private readonly keepSignalLog: boolean;

  constructor(options: SyncEngineOptions) {
    this.db = options.db;
    this.config = options.config;
    this.hub = options.hub;
    this.crypto = options.crypto;
    this.metrics = options.metrics;
    this.logger = options.logger ?? silentLogger;
    this.onEvents = options.onEvents ?? (() => {});
    this.now = options.now ?? Date.now;
    this.sleep = options.sleep ?? ((ms, signal) => delay(ms, undefined, signal ? { signal } : {}));
    this.eservices = new EServiceStore(this.db);
    this.epochs = new EpochStore(this.db);
    this.outbox = new OutboxStore(this.db);
    this.reports = new ResyncReporter(this.db, this.epochs, this.outbox, this.logger, this.metrics, this.now);
    this.signalLog = new SignalLogStore(this.db);
    this.skippedSignals = new SkippedSignalStore(this.db);
    this.fanout = new TenantFanout(this.db);
    this.pseudonyms = new PseudonymStore(this.db);
    // The log de-duplicates re-reads (lookback, rescan overlap) and feeds back-matching.
    this.keepSignalLog = this.config.subjects.backfill || this.config.hub.rescanOverlap > 0 || this.config.hub.timeWindowSeconds > 0;
  }

  private eserviceConfig(eserviceId: string): EServiceConfig {
    const es = this.config.eservices.find((e) => e.id === eserviceId);
    if (!es) throw new AppError('USAGE', `e-service ${eserviceId} is not in the configuration`);
    return es;
  }

  /**
   * Syncs one e-service until the hub answers 200 (caught up), `maxPages` pages were read, or
   * `signal` aborts (between transactions: a started page always commits or rolls back whole).
   */
  async syncEService(eserviceId: string, opts: { signal?: AbortSignal; maxPages?: number } = {}): Promise<SyncOutcome> {
    try {
      return await this.runEService(eserviceId, opts);
    } catch (err) {
      // A raw SQLite failure (busy, disk full) becomes the AppError naming the database file.
      throw storeError(err, this.db.name);
    }
  }

  private async runEService(eserviceId: string, opts: { signal?: AbortSignal; maxPages?: number }): Promise<SyncOutcome> {
    const es = this.eserviceConfig(eserviceId);
    const row = this.eservices.ensure(es.id, es.name, this.now());
    const ctx: RunContext = {
      es,
      row,
      log: this.logger.child({ eservice: es.id, eserviceName: es.name }),
      signal: opts.signal,
      identity: es.recipe.encoding === 'identity',
      raceWaitSpent: false,
      skippedWarned: 0,
      skipped: 0,
      startedAt: this.now(),
    };
    const outcome: SyncOutcome = { eserviceId, caughtUp: false, pages: 0, signals: 0, matches: 0, skipped: 0, cursor: row.cursor };
    this.eservices.markState(row.id, 'syncing');
    try {
      const retentionGapSince = this.retentionGapSince(row);
      let from = this.pullStart(row);
      let next: Promise<Page> | undefined;
      let advancing = 0;
      for (;;) {
        opts.signal?.throwIfAborted();
        const page = await (next ?? this.hub.pull(es.id, from, this.config.hub.pageSize, opts.signal));
        next = undefined;
        const cursorBefore = this.cursorOf(row);
        // Pages wholly behind the cursor (the lookback's re-reads) do not count against maxPages:
        // a run always gets its budget of new signals, whatever the page size.
        const counted = advancing + (page.lastSignalId !== null && page.lastSignalId > cursorBefore ? 1 : 0);
        const more = page.status === 206 && page.lastSignalId !== null && (opts.maxPages === undefined || counted < opts.maxPages);
        if (more) {
          // Pipelining: the next page's bound is known now; fetch it while this one is written.
          // From the page's last id, not the cursor: a re-read behind the cursor (lookback,
          // rescan overlap) goes on page by page until it has passed the cursor.
          next = this.hub.pull(es.id, page.lastSignalId!, this.config.hub.pageSize, opts.signal);
          next.catch(() => {}); // observed when awaited; never an unhandled rejection
          // undici writes a request on a reused keep-alive socket from a setImmediate queued once
          // the pull's awaits have run, i.e. after one queued here now: yield two turns so that
          // the request is on the wire while this page's (synchronous) transaction runs, not after.
          await yieldToLoop();
          await yieldToLoop();
        }
        // The first pull comes before any crypto fetch: a hub 401/403 is what a new installation
        // must hear about first, not a producer's 404 behind it.
        if (outcome.pages === 0) {
          await this.ensureInitialEpoch(ctx);
        }
        if (retentionGapSince !== undefined && outcome.pages === 0) {
          // The seed first: should the producer fail, the next run still finds the gap.
          await this.revalidateSeedAfterGap(ctx, page);
          this.recordRetentionGap(ctx, page, retentionGapSince);
        }
        // A late SEEDUPDATE's re-match a crash or shutdown interrupted, or the one a retention
        // gap's seed check just found owed.
        if (outcome.pages === 0) await this.settleRematches(ctx);
        // An empty page is the end of what is visible now, even on a 206 (time window).
        const caughtUp = page.status === 200 || page.signals.length === 0;
        const { signals, matches, pullRecorded } = await this.processPage(ctx, page, caughtUp);
        outcome.pages++;
        advancing = counted;
        outcome.signals += signals;
        outcome.matches += matches;
        // Usually in the page's last transaction; on its own when the page ends in a SEEDUPDATE or is empty.
        if (!pullRecorded) this.eservices.markPulled(row.id, this.now(), caughtUp, ctx.startedAt);
        this.metrics?.lastSuccessfulPull.set({ eservice: es.id }, this.now() / 1000);
        // Caught up: an assumed seed is confirmed when no SEEDUPDATE on the hub at its fetch can
        // still be unseen. A 200 says nothing exists above the page, but a lower id (SPEC §10)
        // may stay hidden for a window after a higher one was seen: only the seeds fetched a
        // window before this run began, whose lookback re-read what was hidden then, are confirmed.
        // A hub without a window (the simulator preset) hides nothing: all fetched so far.
        if (page.status === 200) {
          const windowMs = this.config.hub.timeWindowSeconds * 1000;
          this.epochs.confirmAssumed(row.id, windowMs > 0 ? ctx.startedAt - windowMs : this.now(), this.now());
        }
        if (caughtUp) {
          if (this.reports.closeGrowing(es, row.id, undefined)) this.onEvents();
          outcome.caughtUp = true;
          break;
        }
        if (!more) break;
        from = page.lastSignalId!;
      }
      this.retireUnneededEpochs(row);
      await reclaimPseudonymSpace(this.db, opts.signal ? { signal: opts.signal } : {});
      this.pruneSignalLog();
      outcome.cursor = this.cursorOf(row);
      outcome.skipped = ctx.skipped;
      if (ctx.skipped > ctx.skippedWarned) ctx.log.warn({ skipped: ctx.skipped, logged: ctx.skippedWarned }, 'more signals were skipped than logged one by one: see status');
      ctx.log.debug({ pages: outcome.pages, signals: outcome.signals, matches: outcome.matches, skipped: outcome.skipped, cursor: outcome.cursor, caughtUp: outcome.caughtUp }, 'sync run finished');
      return outcome;
    } catch (err) {
      // An abort surfaces in many shapes (its reason, the hub client's SHUTTING_DOWN, an
      // AbortError): ask the signal, not the error, or every shutdown leaves 'failing' behind.
      const failure = storeError(err, this.db.name);
      try {
        if (opts.signal?.aborted) {
          this.eservices.markState(row.id, 'idle');
        } else {
          const code = isAppError(failure) ? failure.code : 'INTERNAL';
          this.eservices.markError(row.id, code, failure instanceof Error ? failure.message : String(failure), this.now());
        }
      } catch (recordErr) {
        // The database that just failed (busy, full) may refuse this small write too: the
        // failure itself is what must reach the caller and the log.
        ctx.log.warn(errorLogFields(storeError(recordErr, this.db.name)), 'cannot record the e-service state');
      }
      if (!opts.signal?.aborted) ctx.log.warn(errorLogFields(failure), 'sync run failed');
      throw failure;
    } finally {
      this.metrics?.cursor.set({ eservice: es.id }, this.cursorOf(row));
      this.metrics?.resyncOpen.set({ eservice: es.id }, this.reports.openCount(es.id));
    }
  }

  private cursorOf(row: EServiceRow): number {
    return this.eservices.get(row.eserviceId)!.cursor;
  }

  // ---- where to pull from --------------------------------------------------------------------

  /**
   * The cursor, minus `rescan_overlap`, minus the late-lower-id lookback: after a signal was
   * seen, a lower id can still become visible for about one time window (SPEC §10). Re-reads
   * are de-duplicated against the signal log.
   */
  private pullStart(row: EServiceRow): number {
    const cursor = this.cursorOf(row);
    const overlap = this.config.hub.rescanOverlap;
    const from = overlap > 0 ? Math.max(0, cursor - overlap) : cursor;
    const lookback = this.lookbackStart(row);
    return lookback === undefined ? from : Math.min(from, lookback);
  }

  private lookbackStart(row: EServiceRow): number | undefined {
    const windowMs = this.config.hub.timeWindowSeconds * 1000;
    if (windowMs <= 0) return undefined;
    // A lower id is visible at most one window after a higher one was seen; one more window
    // covers the clock difference between the hub and us. Counted from the start of the last
    // run, not from now: when runs are further apart than that (a daemon polling every minute),
    // what the last run saw must still be re-read once by the next one, even when that run
    // lasted minutes (a rotation race wait) after seeing it.
    const current = this.eservices.get(row.eserviceId)!;
    const anchor = Math.min(this.now(), current.lastRunStartedAt ?? current.lastPullAt ?? this.now());
    const start = this.signalLog.lookbackStart(row.id, anchor - 2 * windowMs, this.config.hub.lookbackMaxSignals);
    return start === undefined ? undefined : Math.max(start, current.skipFloor);
  }

  // ---- epochs ------------------------------------------------------------------------------

  /** Before the first page is processed: the epoch(s) the backlog starts in (rotation.ts: decideInitial). */
  private async ensureInitialEpoch(ctx: RunContext): Promise<void> {
    const { es, row, log, signal } = ctx;
    if (this.epochs.forEService(row.id).length > 0) return;
    signal?.throwIfAborted();
    const cursor = this.cursorOf(row);
    let plans: EpochPlan[];
    if (ctx.identity) {
      // No seed: the objectId is the key in clear (SPEC §8b), matched through its digest.
      plans = [{ start: 0, status: 'known', info: { seed: '', cryptoHashFunction: IDENTITY_ALGORITHM, fingerprint: 'identity', signalId: undefined } }];
    } else {
      const first: CryptoAnswer | undefined = es.cryptoHistory && cursor === 0 ? await this.askSeed(es, 0, signal) : undefined;
      const decided = decideInitial({ cursor, history: es.cryptoHistory, ...(first ? { first } : {}) });
      plans = decided !== 'need-current' ? decided : (decideInitial({ cursor, history: es.cryptoHistory, ...(first ? { first } : {}), current: await this.crypto.fetch(es, signal ? { signal } : {}) }) as EpochPlan[]);
    }
    this.db.transaction(() => {
      for (const plan of plans) this.createEpoch(ctx, plan);
    }).immediate();
    for (const plan of plans) {
      log.info({ start: plan.start, epochStatus: plan.status, ...(plan.status === 'unknown' ? { note: plan.reason } : { seedFingerprint: ctx.identity ? undefined : plan.info.fingerprint, algorithm: plan.info.cryptoHashFunction, producerSignalId: plan.info.signalId }) }, 'initial seed epoch ready');
    }
  }

  private createEpoch(ctx: RunContext, plan: EpochPlan, note?: string): Epoch {
    const { es, row } = ctx;
    if (plan.status === 'unknown') {
      return this.epochs.create({ eservice: row.id, startSignalId: plan.start, status: 'unknown', seed: null, seedFingerprint: null, algorithm: null, template: null, encoding: null, producerSignalId: null, note: plan.reason }, this.now());
    }
    const { info } = plan;
    const epoch = this.epochs.create(
      {
        eservice: row.id,
        startSignalId: plan.start,
        status: plan.status,
        seed: info.seed,
        seedFingerprint: ctx.identity ? null : info.fingerprint,
        algorithm: info.cryptoHashFunction,
        template: es.recipe.template,
        encoding: es.recipe.encoding,
        producerSignalId: info.signalId ?? null,
        ...(note ? { note } : {}),
      },
      this.now(),
    );
    // Created 'pending': its pseudonyms are computed when a signal of it must be matched (ensureFilled).
    return epoch;
  }

  /**
   * After a retention gap, a SEEDUPDATE may have been deleted unseen: the seed in force for what
   * follows is then not the one this consumer holds. If the producer's current seed is still
   * that one, nothing rotated; otherwise what follows (up to the next SEEDUPDATE still on the
   * hub) is under a seed that cannot be told, and is reported rather than matched under a
   * stale one (a silent miss).
   */
  private async revalidateSeedAfterGap(ctx: RunContext, page: Page): Promise<void> {
    const { es, row, log, signal } = ctx;
    if (ctx.identity) return;
    const cursor = this.cursorOf(row);
    // The signal right after the cursor is still there: nothing was deleted, no SEEDUPDATE either.
    if (page.signals.some((s) => s.signalId === cursor + 1)) return;
    // What was deleted lies between the cursor and the first signal still kept; every SEEDUPDATE
    // from there on will be read. So the seed to check is the one that signal would be matched
    // with: an epoch a producer's `signalId` opened above the cursor counts (nothing visible
    // yet: the newest epoch).
    const firstKept = page.signals.find((s) => s.signalId > cursor)?.signalId;
    const epochs = this.epochs.forEService(row.id);
    const inForce = epochForSignal(epochs, firstKept ?? Number.MAX_SAFE_INTEGER);
    if (inForce === undefined || inForce.status === 'unknown') return;
    if (inForce.status === 'assumed' && inForce.confirmedAt === null) {
      // A seed never confirmed (a SEEDUPDATE may have been hidden by the window when it was
      // fetched) and the evidence gone with the retention: what it matched and what follows is reported.
      let wrote = false;
      this.db.transaction(() => {
        if (inForce.firstSignalId !== null) {
          wrote = this.reports.recordClosed(es, inForce.firstSignalId, inForce.lastSignalId!, 'retention-gap', `signals of the epoch opened at ${inForce.startSignalId} were matched with a seed assumed, never confirmed by the hub, and the retention deleted what would tell`);
        }
        this.epochs.markUnknown(inForce.id, 'retention-gap', this.now(), true);
      }).immediate();
      log.warn({ cursor, epochStart: inForce.startSignalId }, 'an assumed seed was never confirmed before the retention gap: its signals and what follows up to the next SEEDUPDATE are reported');
      if (wrote) this.onEvents();
      return;
    }
    const current = await this.crypto.fetch(es, signal ? { signal } : {});
    if (current.fingerprint === inForce.seedFingerprint) return;
    // The last run's signals were to be re-read by this one's lookback (a lower id may become
    // visible a window after a higher one, SPEC §10), and the retention deleted them first: the
    // rotation may be a SEEDUPDATE hidden below the cursor then, and the signals after it were
    // matched with the previous seed.
    const lookback = this.lookbackStart(row);
    const unsettledFrom = lookback !== undefined && lookback < cursor ? lookback + 1 : undefined;
    const plans: EpochPlan[] = [];
    let namedBelowCursor: number | undefined;
    if (current.signalId !== undefined && current.signalId > inForce.startSignalId && current.signalId < (firstKept ?? cursor + 1)) {
      // The producer names the deleted SEEDUPDATE, and no signal still to come lies before it:
      // its seed is all that is needed (and, at or below the cursor, a re-match of what followed it).
      plans.push({ start: current.signalId, status: 'known', info: current });
      if (current.signalId <= cursor) namedBelowCursor = current.signalId;
    } else {
      plans.push({ start: Math.max(cursor, inForce.startSignalId), status: 'unknown', reason: 'retention-gap' });
      if (current.signalId !== undefined && current.signalId > cursor) plans.push({ start: current.signalId, status: 'known', info: current });
    }
    let wrote = false;
    this.db.transaction(() => {
      for (const plan of plans) {
        const same = epochs.find((e) => e.startSignalId === plan.start);
        if (same === undefined) this.createEpoch(ctx, plan);
        // The epoch in force starts exactly at the cursor: from here on its seed cannot be trusted.
        else if (plan.status === 'unknown' && same.id === inForce.id) this.epochs.markUnknown(same.id, plan.reason, this.now());
      }
      if (namedBelowCursor !== undefined) {
        if (this.recordLateSeedUpdate(ctx, namedBelowCursor, cursor, inForce)) wrote = true;
      } else if (unsettledFrom !== undefined) {
        const reported = this.reports.recordClosed(es, unsettledFrom, cursor, 'retention-gap', `signals ${unsettledFrom}..${cursor} were matched while a lower-id SEEDUPDATE could still be hidden by the hub's time window; the retention deleted them before they were read again, and the producer's seed has changed since`);
        if (reported) wrote = true;
      }
    }).immediate();
    log.warn({ cursor, seedFingerprint: current.fingerprint, producerSignalId: current.signalId, ...(unsettledFrom !== undefined && namedBelowCursor === undefined ? { unsettledFrom } : {}) }, 'the producer rotated its seed during the retention gap: what follows up to the next SEEDUPDATE is reported unless its seed is known');
    if (wrote) this.onEvents();
  }

  /** `?signalId=S` with history (404 is an answer), else the current seed. */
  private async askSeed(es: EServiceConfig, S: number, signal: AbortSignal | undefined): Promise<CryptoAnswer> {
    try {
      const info = await this.crypto.fetch(es, { ...(es.cryptoHistory ? { signalId: S } : {}), ...(signal ? { signal } : {}) });
      return { kind: 'seed', info };
    } catch (err) {
      if (es.cryptoHistory && isAppError(err) && err.code === 'CRYPTO_NOT_FOUND') return { kind: 'not-found' };
      throw err;
    }
  }

  /**
   * Asks the producer for the seed of SEEDUPDATE S until rotation.ts decides. SPEC §8 race:
   * right after S is visible the producer may still serve the old seed; answers that look stale
   * are asked again with backoff for at most `crypto.rotation_wait_seconds`, once per run.
   */
  private async resolveRotation(ctx: RunContext, S: number, earlier: Epoch[], later: Epoch[]): Promise<RotationDecision & { kind: 'open' }> {
    const { es, log, signal } = ctx;
    const deadline = this.now() + this.config.crypto.rotationWaitSeconds * 1000;
    let backoff = 250;
    let attempts = 0;
    let firstAnswer: string | undefined;
    for (;;) {
      signal?.throwIfAborted();
      attempts++;
      const answer = await this.askSeed(es, S, signal);
      const expired = ctx.raceWaitSpent || this.now() >= deadline;
      const facts = { S, answer, history: es.cryptoHistory, earlier, later, waitExpired: expired, ...(firstAnswer !== undefined ? { firstAnswer } : {}) };
      if (answer.kind === 'seed') firstAnswer ??= answer.info.fingerprint;
      const decision = decideRotation(facts);
      if (decision.kind === 'open') {
        if (expired && decideRotation({ ...facts, waitExpired: false }).kind === 'wait') {
          ctx.raceWaitSpent = true;
          const seen = answer.kind === 'seed' ? { producerSignalId: answer.info.signalId, seedFingerprint: answer.info.fingerprint } : { answer: 'not-found' };
          log.warn({ seedupdate: S, attempts, ...seen }, 'seed did not change after SEEDUPDATE within crypto.rotation_wait_seconds');
        }
        return decision;
      }
      if (attempts === 1) {
        log.info({ seedupdate: S, until: new Date(deadline).toISOString(), reason: decision.reason }, 'waiting for the producer to serve the new seed (SPEC §8 race)');
      }
      await this.sleep(Math.max(0, Math.min(backoff, deadline - this.now())), signal);
      backoff = Math.min(backoff * 2, 10_000);
    }
  }

  private async rotate(ctx: RunContext, seedUpdate: Signal): Promise<void> {
    const { es, row, log } = ctx;
    const S = seedUpdate.signalId;
    const existing = this.epochs.forEService(row.id);
    const earlier = existing.filter((e) => e.startSignalId < S);
    // An identity e-service has no seed: a SEEDUPDATE changes nothing (SPEC §8b).
    const alreadyOpen = ctx.identity || existing.some((e) => e.startSignalId === S);
    const later = existing.filter((e) => e.startSignalId > S);
    const decision = alreadyOpen ? undefined : this.withAssumptionChecked(await this.resolveRotation(ctx, S, earlier, later), earlier);
    // A SEEDUPDATE that became visible after later signals (SPEC §3 late lower ids): those
    // were matched with the previous seed. The new epoch still starts at S for what follows.
    const cursorBefore = this.cursorOf(row);
    let wrote = false;
    this.flushTenantCounts(false);
    this.db.transaction(() => {
      if (decision) {
        for (const { epochId, reason } of decision.invalidate) {
          const wrong = this.epochs.get(epochId)!;
          if (wrong.firstSignalId !== null) {
            wrote = this.reports.recordClosed(es, wrong.firstSignalId, wrong.lastSignalId!, reason, `signals of the epoch opened at ${wrong.startSignalId} were matched with seed ${wrong.seedFingerprint}, which the producer's answer for SEEDUPDATE ${S} shows was not theirs; their real seed cannot be obtained`) || wrote;
          }
          log.warn({ seedupdate: S, epochStart: wrong.startSignalId, seedFingerprint: wrong.seedFingerprint, reason }, 'an assumed seed was not the one in force: its signals are reported');
          this.epochs.markUnknown(epochId, reason, this.now());
        }
        const previousInvalidated = decision.invalidate.find((i) => i.epochId === earlier.at(-1)?.id);
        for (const plan of decision.epochs) {
          if (existing.some((e) => e.startSignalId === plan.start)) continue;
          this.createEpoch(ctx, plan, plan.status === 'assumed' ? previousInvalidated?.reason : undefined);
        }
        if (S < cursorBefore) wrote = this.recordLateSeedUpdate(ctx, S, cursorBefore, earlier.at(-1)) || wrote;
      }
      if (this.keepSignalLog) {
        this.signalLog.add({ eservice: row.id, signalId: S, epoch: null, unmatched: false, signalType: 'SEEDUPDATE', objectType: seedUpdate.objectType, objectId: '', receivedAt: this.now() });
      }
      this.eservices.advance(row.id, S, 1, 0);
      wrote = this.reports.closeGrowing(es, row.id, S) || wrote;
      this.retireUnneededEpochs(row);
    }).immediate();
    this.flushTenantCounts(true);
    if (decision) {
      for (const plan of decision.epochs) {
        log.info({ seedupdate: S, start: plan.start, epochStatus: plan.status, ...(plan.status === 'unknown' ? { note: plan.reason } : { seedFingerprint: plan.info.fingerprint }) }, 'seed epoch opened');
      }
    }
    this.metrics?.signalsSeen.inc({ eservice: es.id, signal_type: 'SEEDUPDATE' });
    if (wrote) this.onEvents();
  }

  /**
   * A SEEDUPDATE S that became visible after later signals (SPEC §10 late lower ids): the
   * signals after it were matched under the previous seed. When the signal log holds each of
   * them and S's seed is had, they are matched again under S's seed, exactly (a hash under the
   * wrong seed never matched, so nothing emitted is wrong); otherwise the range is reported.
   * Inside the rotation's transaction, after S's epoch exists. The re-match needs the epoch's
   * pseudonyms, which are computed outside any transaction (invariant 8): the epoch records what
   * it owes and settleRematches pays it once filled, after a crash too.
   */
  private recordLateSeedUpdate(ctx: RunContext, S: number, cursorBefore: number, previous: Epoch | undefined): boolean {
    const { es, row, log } = ctx;
    const epochs = this.epochs.forEService(row.id);
    const opened = epochs.find((e) => e.startSignalId === S);
    // S's seed rules up to the next epoch's start (a later SEEDUPDATE already read): only the
    // signals in between were matched under the previous seed.
    const upTo = Math.min(cursorBefore, epochs.find((e) => e.startSignalId > S)?.startSignalId ?? cursorBefore);
    const rows = this.keepSignalLog ? this.signalLog.range(row.id, S, upTo) : [];
    // SEEDUPDATEs and skipped signals matched nothing under any seed.
    const inert = (r: (typeof rows)[number]) => r.epoch === null && (r.signalType === 'SEEDUPDATE' || this.skippedSignals.has(row.id, r.signalId));
    if (this.keepSignalLog && rows.every(inert)) return false;
    const recoverable =
      opened !== undefined &&
      opened.status !== 'unknown' &&
      previous !== undefined &&
      this.keepSignalLog &&
      rows.every((r) => (r.epoch === previous.id && r.unmatched && r.objectId !== '') || inert(r));
    if (!recoverable) {
      log.warn({ seedupdate: S, cursor: cursorBefore, upTo }, 'SEEDUPDATE arrived behind the cursor (late lower id): the signals after it cannot be matched again');
      return this.reports.recordClosed(es, S + 1, upTo, 'late-seedupdate', `SEEDUPDATE ${S} became visible after signals up to ${upTo} were matched with the previous seed`);
    }
    this.epochs.oweRematch(opened.id, upTo);
    return false;
  }

  /**
   * Pays the re-matches late SEEDUPDATEs owe (recordLateSeedUpdate): fills each such epoch, then
   * in one transaction matches its logged signals again under its seed. Before any later signal
   * of the e-service is matched, so that events keep the order of the signals.
   */
  private async settleRematches(ctx: RunContext): Promise<void> {
    const { es, row, log } = ctx;
    for (;;) {
      const owing = this.epochs.forEService(row.id).find((e) => e.rematchTo !== null);
      if (owing === undefined) return;
      // Re-read after each fill: a bulk import may hand the epoch back to a fill meanwhile.
      for (let epoch = owing; needsFill(epoch); epoch = this.epochs.get(owing.id)!) await this.fill(ctx, epoch);
      let wrote = false;
      let matched = 0;
      let count = 0;
      let settled = true;
      const receivedAt = this.now();
      this.db.transaction(() => {
        const opened = this.epochs.get(owing.id)!;
        const upTo = opened.rematchTo;
        if (upTo === null) return;
        const S = opened.startSignalId;
        this.epochs.settleRematch(opened.id);
        if (opened.status === 'unknown' || opened.retiredAt !== null || opened.fillState !== 'ready') {
          // Its seed was found wrong (or dropped) before it could be used: report, as for an unrecoverable one.
          settled = false;
          wrote = this.reports.recordClosed(es, S + 1, upTo, 'late-seedupdate', `SEEDUPDATE ${S} became visible after signals up to ${upTo} were matched with the previous seed`);
          return;
        }
        const match: MatchContext = this.matchContext(opened);
        let first: number | undefined;
        let last = S;
        for (const r of this.signalLog.range(row.id, S, upTo)) {
          if (r.epoch === null) continue; // a skipped signal: nothing to match under any seed
          const digest = decodeObjectId(r.objectId, match.encoding, match.length);
          const subject = digest ? this.lookup(match, digest) : undefined;
          this.signalLog.reassign(row.id, r.signalId, opened.id, !subject && digest !== null);
          first ??= r.signalId;
          last = r.signalId;
          count++;
          if (!subject) continue;
          matched++;
          const event = this.signalEvent(es, { signalId: r.signalId, signalType: r.signalType, objectType: r.objectType, objectId: r.objectId }, subject, opened.id, receivedAt);
          // A tenant that added the key since the signal arrived matches it as a back-match would: say so.
          if (this.appendForTenants(event, subject.id, receivedAt, r.receivedAt)) wrote = true;
        }
        if (first !== undefined) this.epochs.noteSignals(opened.id, first, last, count);
        if (matched > 0) this.eservices.advance(row.id, upTo, 0, matched);
        // Kept alive for the re-match only: retire it now if nothing else needs it.
        this.retireUnneededEpochs(row);
      }).immediate();
      if (settled) log.warn({ seedupdate: owing.startSignalId, cursor: owing.rematchTo, signals: count, matches: matched }, 'SEEDUPDATE arrived behind the cursor (late lower id): the signals after it were matched again under its seed');
      else log.warn({ seedupdate: owing.startSignalId, cursor: owing.rematchTo }, 'SEEDUPDATE arrived behind the cursor (late lower id): its seed was dropped before the signals after it could be matched again');
      if (matched > 0) {
        this.metrics?.matches.inc({ eservice: es.id }, matched);
        this.metrics?.eventsWritten.inc({ eservice: es.id, kind: 'signal' }, matched);
      }
      if (wrote) this.onEvents();
    }
  }

  private matchContext(epoch: Epoch): MatchContext {
    // Built once per epoch and recipe, not per segment (a catch-up spent 4% of its time here).
    const recipeKey = `${epoch.id}\n${epoch.algorithm}\n${epoch.encoding}\n${epoch.template}\n${epoch.seed}`;
    let cached = this.hashers.get(epoch.id);
    if (cached?.recipeKey !== recipeKey) {
      cached = { recipeKey, length: digestLength(epoch.algorithm!), hasher: new PseudonymHasher({ template: epoch.template!, encoding: epoch.encoding! }, epoch.seed!, epoch.algorithm!) };
      this.hashers.set(epoch.id, cached);
    }
    return { epoch, encoding: epoch.encoding!, length: cached.length, hasher: cached.hasher };
  }

  /** The subject whose pseudonym is `digest`: candidates by prefix, confirmed by recomputing. */
  private lookup(match: MatchContext, digest: Buffer): PseudonymCandidate | undefined {
    for (const candidate of this.pseudonyms.candidates(match.epoch.id, digestPrefix(digest))) {
      if (match.hasher.digest(candidate.key).equals(digest)) return candidate;
    }
    return undefined;
  }

  /** lookup() for many digests at once: one statement per epoch; the results in the order asked. */
  private lookupMany(asked: readonly { match: MatchContext; digest: Buffer }[]): (PseudonymCandidate | undefined)[] {
    const byEpoch = new Map<number, number[]>();
    const prefixes = asked.map(({ match, digest }) => {
      const prefix = digestPrefix(digest);
      const list = byEpoch.get(match.epoch.id);
      if (list) list.push(prefix);
      else byEpoch.set(match.epoch.id, [prefix]);
      return prefix;
    });
    const candidates = new Map<number, Map<number, PseudonymCandidate[]>>();
    for (const [epochId, list] of byEpoch) candidates.set(epochId, this.pseudonyms.candidatesMany(epochId, list));
    return asked.map(({ match, digest }, i) => candidates.get(match.epoch.id)!.get(prefixes[i]!)?.find((c) => match.hasher.digest(c.key).equals(digest)));
  }

  /** Computes an epoch's pseudonyms (lazily, in chunks off the event loop; resumes an interrupted fill). */
  private async fill(ctx: RunContext, epoch: Epoch): Promise<void> {
    const { es, log, signal } = ctx;
    const onProgress = fillProgressReporter({ log, setGauge: (f) => this.metrics?.reseedProgress.set({ eservice: es.id }, f) });
    log.info({ epoch: epoch.id, seedupdate: epoch.startSignalId, seedFingerprint: epoch.seedFingerprint ?? undefined, resumedFill: epoch.fillState === 'filling' || undefined }, 'computing the pseudonyms of a seed epoch');
    const result = await ensureFilled(this.db, epoch.id, { eserviceId: es.id, onProgress, ...(signal ? { signal } : {}) });
    if (result.filled) {
      this.metrics?.reseedSeconds.observe({ eservice: es.id }, result.seconds);
      log.info({ epoch: epoch.id, pseudonyms: result.pseudonyms, seconds: Math.round(result.seconds * 1000) / 1000 }, 'seed epoch ready');
    }
  }

  /**
   * Appends the events of one match, one per tenant whose membership of the subject follows the
   * e-service (src/sync/tenant-events.ts); returns whether any was new. Counted per tenant once
   * the caller's transaction commits (emittedByTenant).
   */
  private appendForTenants(event: SignalEvent, subjectId: number, now: number, signalReceivedAt?: number): boolean {
    let wrote = false;
    for (const e of this.fanout.expand(event, subjectId, signalReceivedAt)) {
      if (!this.outbox.append(e, now)) continue;
      wrote = true;
      const tenant = e.tenant ?? '';
      this.emittedByTenant.set(tenant, (this.emittedByTenant.get(tenant) ?? 0) + 1);
    }
    return wrote;
  }

  /** Returns how many events were counted. */
  private flushTenantCounts(committed: boolean): number {
    let total = 0;
    if (committed) {
      for (const [tenant, n] of this.emittedByTenant) {
        this.metrics?.eventsEmitted.inc({ tenant }, n);
        total += n;
      }
    }
    this.emittedByTenant = new Map();
    return total;
  }

  private signalEvent(es: EServiceConfig, s: Pick<Signal, 'signalId' | 'signalType' | 'objectType' | 'objectId'>, subject: { key: string; ref: string | null }, epoch: number, receivedAt: number): SignalEvent {
    return {
      id: `${es.id}:${s.signalId}`,
      type: 'signal',
      eserviceId: es.id,
      eserviceName: es.name,
      signalId: s.signalId,
      signalType: s.signalType,
      objectType: s.objectType,
      objectId: s.objectId,
      subjectRef: subject.ref,
      ...(this.config.events.includeSubjectKey ? { subjectKey: subject.key } : {}),
      epoch,
      receivedAt: new Date(receivedAt).toISOString(),
    };
  }

  /**
   * An assumed seed is the producer's current one when fetched, believed to start at its
   * SEEDUPDATE. A new SEEDUPDATE met before the hub confirmed that belief (a page of signals
   * answered 200 after the fetch: nothing more existed, hidden or not, SPEC §3) may have been on
   * the hub already at that fetch, hidden by the window or further in the backlog; the seed then
   * served was that SEEDUPDATE's or a later one's (or, in the race, the one just before the
   * newest), not the assumed epoch's. Its signals are reported at once, rather than kept when no
   * later answer happens to repeat the assumed seed. A rotation during the very catch-up that
   * fetched the seed is the one case this reports although the assumption was right.
   */
  private withAssumptionChecked(decision: RotationDecision & { kind: 'open' }, earlier: Epoch[]): RotationDecision & { kind: 'open' } {
    const previous = earlier.at(-1);
    if (previous?.status !== 'assumed' || previous.confirmedAt !== null) return decision;
    if (decision.invalidate.some((i) => i.epochId === previous.id)) return decision;
    const reason = previous.id === earlier[0]!.id ? 'backlog-predates-seed' : 'seed-unchanged';
    return { ...decision, invalidate: [...decision.invalidate, { epochId: previous.id, reason }] };
  }

  /** Pseudonyms of an epoch are dropped once no re-read (lookback, rescan overlap) can reach a signal of it. */
  private retireUnneededEpochs(row: EServiceRow): void {
    const cursor = this.cursorOf(row);
    const horizon = Math.min(cursor - this.config.hub.rescanOverlap, this.lookbackStart(row) ?? cursor);
    const list = this.epochs.forEService(row.id);
    for (let i = 0; i + 1 < list.length; i++) {
      const e = list[i]!;
      // An epoch owing a late SEEDUPDATE's re-match keeps its seed until it has paid.
      if (e.retiredAt === null && e.rematchTo === null && list[i + 1]!.startSignalId <= horizon) this.epochs.retire(e.id, this.now());
    }
  }

  // ---- pages -------------------------------------------------------------------------------

  private async processPage(ctx: RunContext, page: Page, caughtUp: boolean): Promise<{ signals: number; matches: number; pullRecorded: boolean }> {
    const { row } = ctx;
    let segment: Signal[] = [];
    let signals = 0;
    let matches = 0;
    let pullRecorded = false;
    const flush = async (last: boolean) => {
      if (segment.length === 0) return;
      await this.ensureEpochsFilled(ctx, segment);
      const written = this.writeSegment(ctx, segment, last ? { caughtUp } : undefined);
      pullRecorded ||= last;
      matches += written.matches;
      signals += written.processed;
      segment = [];
    };
    for (const s of page.signals) {
      if (s.signalType !== 'SEEDUPDATE' || s.skip !== undefined) {
        segment.push(s);
        continue;
      }
      await flush(false); // commit what precedes the SEEDUPDATE before anything is fetched
      const current = this.eservices.get(row.eserviceId)!;
      if (s.signalId <= Math.max(current.cursor, current.highWater) && this.signalLog.has(row.id, s.signalId)) continue; // a re-read
      await this.rotate(ctx, s);
      await this.settleRematches(ctx);
      signals++;
    }
    await flush(true);
    return { signals, matches, pullRecorded };
  }

  /**
   * Before a segment is matched: every epoch a new signal of it belongs to has all its
   * pseudonyms (lazy reseed: a run of SEEDUPDATEs costs one fill). Re-reads already in the log
   * are passed over by writeSegment and need none.
   */
  private async ensureEpochsFilled(ctx: RunContext, segment: Signal[]): Promise<void> {
    // Until a check finds nothing to fill: while one epoch fills, a bulk import may hand
    // another back to a fill (src/sync/subject-index.ts deferToFill). The last check and the
    // segment's transaction then run with no turn of the event loop in between.
    for (;;) {
      const needed = this.epochsToFill(ctx, segment);
      if (needed.length === 0) return;
      for (const epoch of needed) await this.fill(ctx, epoch);
    }
  }

  private epochsToFill(ctx: RunContext, segment: Signal[]): Epoch[] {
    const { row } = ctx;
    const current = this.eservices.get(row.eserviceId)!;
    const highWater = Math.max(current.highWater, current.cursor);
    let list: Epoch[] | undefined;
    const needed: Epoch[] = [];
    for (const s of segment) {
      if (s.skip !== undefined) continue;
      list ??= this.epochs.forEService(row.id);
      const epoch = epochForSignal(list, s.signalId);
      if (epoch === undefined || !needsFill(epoch) || needed.includes(epoch)) continue;
      if (s.signalId <= highWater && this.signalLog.has(row.id, s.signalId)) continue;
      needed.push(epoch);
    }
    return needed;
  }

  /**
   * One transaction: events of matched signals, signal log, skipped signals, epoch accounting,
   * cursor, and (`pulled`, the page's last segment) the time of the successful pull.
   */
  private writeSegment(ctx: RunContext, segment: Signal[], pulled?: { caughtUp: boolean }): { matches: number; processed: number } {
    const { es, row } = ctx;
    const receivedAt = this.now();
    let wrote = false;
    let matches = 0;
    let fresh = 0;
    const skipped: { signalId: number; signalType: string; reason: SkipReason }[] = [];
    this.flushTenantCounts(false);
    this.db.transaction(() => {
      const current = this.eservices.get(row.eserviceId)!;
      const cursor = current.cursor;
      // Ids at or below the high-water mark may have been processed already (a re-read of the
      // lookback or the rescan overlap, a cursor moved back by an operator): the log says which.
      const highWater = Math.max(current.highWater, cursor);
      const epochList = this.epochs.forEService(row.id);
      const contexts = new Map<number, MatchContext | null>();
      const touched = new Map<number, { first: number; last: number; count: number }>();
      let processed = 0;
      let maxId = cursor;
      const logged: LoggedSignal[] = [];
      const toMatch: { s: Signal; match: MatchContext; digest: Buffer; logged: LoggedSignal }[] = [];
      const skip = (s: Signal, reason: SkipReason) => {
        if (this.skippedSignals.add({ eservice: row.id, signalId: s.signalId, signalType: s.signalType, objectType: s.objectType, reason, skippedAt: receivedAt })) skipped.push({ signalId: s.signalId, signalType: s.signalType, reason });
        // In the log too, so that a re-read is recognised; no objectId: nothing can match it.
        if (this.keepSignalLog) logged.push({ eservice: row.id, signalId: s.signalId, epoch: null, unmatched: false, signalType: s.signalType, objectType: s.objectType.slice(0, 64), objectId: '', receivedAt });
      };
      for (const s of segment) {
        if (s.signalId > maxId) maxId = s.signalId; // re-reads too: the cursor passes over them
        if (s.signalId <= highWater && this.signalLog.has(row.id, s.signalId)) continue;
        processed++;
        if (s.skip !== undefined) {
          skip(s, s.skip);
          continue;
        }
        const epoch = epochForSignal(epochList, s.signalId);
        let match = epoch ? contexts.get(epoch.id) : null;
        if (epoch && match === undefined) {
          if (epoch.status !== 'unknown' && epoch.retiredAt === null && epoch.fillState !== 'ready') {
            // ensureEpochsFilled runs first: matching against a half-filled epoch would lose events.
            throw new AppError('INTERNAL', `epoch ${epoch.id} is not filled (state ${epoch.fillState})`);
          }
          match = epoch.status === 'unknown' || epoch.retiredAt !== null ? null : this.matchContext(epoch);
          contexts.set(epoch.id, match);
        }
        let digest: Buffer | null = null;
        if (match) {
          digest = decodeObjectId(s.objectId, match.encoding, match.length);
          if (digest === null) {
            // Not a pseudonym under this epoch's recipe: no subject can ever match it, so it
            // costs neither matching nor room in the log beyond its id.
            skip(s, 'undecodable-object-id');
            continue;
          }
        }
        if (epoch) {
          const t = touched.get(epoch.id);
          if (t) {
            t.last = Math.max(t.last, s.signalId);
            t.count++;
          } else touched.set(epoch.id, { first: s.signalId, last: s.signalId, count: 1 });
        }
        const entry: LoggedSignal = { eservice: row.id, signalId: s.signalId, epoch: match ? match.epoch.id : null, unmatched: !!match, signalType: s.signalType, objectType: s.objectType, objectId: match ? s.objectId : '', receivedAt };
        if (match && digest) toMatch.push({ s, match, digest, logged: entry });
        if (this.keepSignalLog) logged.push(entry);
      }
      // The segment's objectIds are looked up together (one statement per epoch), then matched in signal order.
      const subjects = this.lookupMany(toMatch);
      for (let i = 0; i < toMatch.length; i++) {
        const subject = subjects[i];
        if (!subject) continue;
        const { s, match, logged: entry } = toMatch[i]!;
        entry.unmatched = false;
        matches++;
        const event = this.signalEvent(es, s, subject, match.epoch.id, receivedAt);
        if (this.appendForTenants(event, subject.id, receivedAt)) wrote = true;
      }
      this.signalLog.addMany(logged);
      for (const [epochId, t] of touched) {
        this.epochs.noteSignals(epochId, t.first, t.last, t.count);
        const epoch = this.epochs.get(epochId)!;
        if (epoch.status === 'unknown' || epoch.retiredAt !== null) this.reports.grow(es, epoch, t.first, t.last);
      }
      this.eservices.advance(row.id, maxId, processed, matches);
      if (pulled) this.eservices.markPulled(row.id, this.now(), pulled.caughtUp, ctx.startedAt);
      wrote = this.reports.closeGrowing(es, row.id, maxId) || wrote;
      fresh = processed;
    }).immediate();
    // One match may be several events (one per tenant) or none new (a re-read).
    const emitted = this.flushTenantCounts(true);
    if (matches > 0) this.metrics?.matches.inc({ eservice: es.id }, matches);
    if (emitted > 0) this.metrics?.eventsWritten.inc({ eservice: es.id, kind: 'signal' }, emitted);
    // Re-reads (lookback, rescan overlap, a cursor moved back) were skipped: the counter matches the database's.
    if (fresh > 0) this.metrics?.signalsSeen.inc({ eservice: es.id, signal_type: 'change' }, fresh);
    for (const k of skipped) {
      ctx.skipped++;
      this.metrics?.signalsSkipped.inc({ eservice: es.id, reason: k.reason });
      if (ctx.skippedWarned < SKIP_WARN_LINES) {
        ctx.skippedWarned++;
        ctx.log.warn({ signalId: k.signalId, signalType: k.signalType, reason: k.reason }, 'signal skipped: it cannot be matched (recorded, the stream goes on)');
      }
    }
    if (wrote) this.onEvents();
    return { matches, processed: fresh };
  }

  /** SPEC §3: the hub deletes signals 30 days after insertion, silently. */
  private retentionGapSince(row: EServiceRow): number | undefined {
    const last = this.eservices.get(row.eserviceId)?.lastPullAt ?? null;
    if (last === null) return undefined;
    return this.now() - last > this.config.hub.retentionDays * DAY_MS ? last : undefined;
  }

  private recordRetentionGap(ctx: RunContext, page: Page, since: number): void {
    const { es, row, log } = ctx;
    const cursor = this.cursorOf(row);
    const firstAfter = page.signals.find((s) => s.signalId > cursor)?.signalId;
    const to = Math.max(cursor + 1, (firstAfter ?? cursor + 2) - 1);
    let wrote = false;
    this.db.transaction(() => {
      wrote = this.reports.recordClosed(es, cursor + 1, to, 'retention-gap', `last successful pull ${new Date(since).toISOString()} is older than the hub's retention (${this.config.hub.retentionDays} days): signals after ${cursor} may have been deleted unseen`);
      // This pull succeeded: with the report it closes the gap, so a run failing later on this
      // page (a producer down at a SEEDUPDATE, a crash) does not report the same gap again.
      this.eservices.markPulled(row.id, this.now(), false, ctx.startedAt);
    }).immediate();
    log.warn({ cursor, lastPullAt: new Date(since).toISOString() }, 'retention gap: signals may have been lost');
    if (wrote) this.onEvents();
  }

  private pruneSignalLog(): void {
    if (!this.keepSignalLog) return;
    const before = this.now() - this.config.hub.retentionDays * DAY_MS;
    this.signalLog.prune(before);
    this.skippedSignals.prune(before);
  }
}
