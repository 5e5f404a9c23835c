import { setTimeout as delay } from 'node:timers/promises';
import type { Config, EServiceConfig } from '../config/types.js';
import type { CryptoInfo } from '../crypto/crypto-info-client.js';
import { decodeObjectId, digestLength, type PseudonymEncoding } from '../crypto/pseudonym.js';
import { AppError, errorLogFields, isAppError } from '../errors.js';
import type { ChangeSignalType, ResyncEvent, ResyncReason, SignalEvent } from '../events.js';
import type { Page, Signal } from '../hub/types.js';
import { silentLogger, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Db } from '../store/db.js';
import { EpochStore, epochForSignal, type Epoch, type EpochStatus } from '../store/epochs.js';
import { EServiceStore, type EServiceRow } from '../store/eservices.js';
import { OutboxStore } from '../store/outbox.js';
import { ResyncStore, type ResyncReport } from '../store/resync.js';
import { SignalLogStore, type LoggedSignal } from '../store/signal-log.js';
import { storeError } from '../store/sqlite-errors.js';
import { fillEpochPseudonyms } from './reseed.js';

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
}

export interface SyncOutcome {
  eserviceId: string;
  /** The hub answered 200: nothing more to pull now. */
  caughtUp: boolean;
  pages: number;
  signals: number;
  matches: number;
  cursor: number;
}

/** How the seed of the epoch opened by a SEEDUPDATE was resolved. */
interface RotationOutcome {
  status: EpochStatus;
  info: CryptoInfo | undefined;
  note: ResyncReason | undefined;
  /** The answer belongs to a later SEEDUPDATE (its signalId > S): open that epoch too. */
  later: CryptoInfo | undefined;
  /** The epoch before S was processed under a seed now known not to be its own. */
  invalidatePrevious: ResyncReason | undefined;
}

interface MatchContext {
  epoch: Epoch;
  encoding: PseudonymEncoding;
  length: number;
}

const DAY_MS = 86_400_000;

/**
 * The sync engine: per e-service, pulls pages from the stored cursor and turns each page into
 * one SQLite transaction that writes the outbox events of its matched signals and advances the
 * cursor (invariant 1). SEEDUPDATEs open new seed epochs; every signal is matched only against
 * the epoch in force for its id, and signals no seed can be had for are reported (invariant 3).
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
  private readonly eservices: EServiceStore;
  private readonly epochs: EpochStore;
  private readonly outbox: OutboxStore;
  private readonly resync: ResyncStore;
  private readonly signalLog: SignalLogStore;
  private readonly matchStmt;
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
    this.eservices = new EServiceStore(this.db);
    this.epochs = new EpochStore(this.db);
    this.outbox = new OutboxStore(this.db);
    this.resync = new ResyncStore(this.db);
    this.signalLog = new SignalLogStore(this.db);
    this.matchStmt = this.db.prepare(
      'SELECT s.id, s.key, s.ref FROM pseudonyms p JOIN subjects s ON s.id = p.subject_id WHERE p.epoch = ? AND p.digest = ?',
    );
    this.keepSignalLog = this.config.subjects.backfill || this.config.hub.rescanOverlap > 0;
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
    const log = this.logger.child({ eservice: es.id, eserviceName: es.name });
    const outcome: SyncOutcome = { eserviceId, caughtUp: false, pages: 0, signals: 0, matches: 0, cursor: row.cursor };
    this.eservices.markState(row.id, 'syncing');
    try {
      const retentionGapSince = this.retentionGapSince(row);
      await this.ensureInitialEpoch(es, row, log, opts.signal);
      const overlap = this.config.hub.rescanOverlap;
      let from = overlap > 0 ? Math.max(0, this.cursorOf(row) - overlap) : this.cursorOf(row);
      let next: Promise<Page> | undefined;
      for (;;) {
        opts.signal?.throwIfAborted();
        const page = await (next ?? this.hub.pull(es.id, from, this.config.hub.pageSize, opts.signal));
        next = undefined;
        const cursorBefore = this.cursorOf(row);
        const more = page.status === 206 && page.lastSignalId !== null && (opts.maxPages === undefined || outcome.pages + 1 < opts.maxPages);
        if (more) {
          // Pipelining: the next page's bound is known now; fetch it while this one is written.
          next = this.hub.pull(es.id, Math.max(cursorBefore, page.lastSignalId!), this.config.hub.pageSize, opts.signal);
          next.catch(() => {}); // observed when awaited; never an unhandled rejection
        }
        if (retentionGapSince !== undefined && outcome.pages === 0) this.recordRetentionGap(es, row, page, retentionGapSince, log);
        const { signals, matches } = await this.processPage(es, row, page, log, opts.signal);
        outcome.pages++;
        outcome.signals += signals;
        outcome.matches += matches;
        // An empty page is the end of what is visible now, even on a 206 (time window).
        const caughtUp = page.status === 200 || page.signals.length === 0;
        this.eservices.markPulled(row.id, this.now(), caughtUp);
        this.metrics?.lastSuccessfulPull.set({ eservice: es.id }, this.now() / 1000);
        if (caughtUp) {
          this.closeGrowingReports(es, row, undefined);
          outcome.caughtUp = true;
          break;
        }
        if (!more) break;
        from = Math.max(this.cursorOf(row), page.lastSignalId!);
      }
      this.retireUnneededEpochs(row);
      this.pruneSignalLog();
      outcome.cursor = this.cursorOf(row);
      log.debug({ pages: outcome.pages, signals: outcome.signals, matches: outcome.matches, cursor: outcome.cursor, caughtUp: outcome.caughtUp }, 'sync run finished');
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
        log.warn(errorLogFields(storeError(recordErr, this.db.name)), 'cannot record the e-service state');
      }
      if (!opts.signal?.aborted) log.warn(errorLogFields(failure), 'sync run failed');
      throw failure;
    } finally {
      this.metrics?.cursor.set({ eservice: es.id }, this.cursorOf(row));
      this.metrics?.resyncOpen.set({ eservice: es.id }, this.resync.list({ eserviceId: es.id }).length);
    }
  }

  private cursorOf(row: EServiceRow): number {
    return this.eservices.get(row.eserviceId)!.cursor;
  }

  // ---- epochs ------------------------------------------------------------------------------

  private epochFor(eservice: number, signalId: number, list = this.epochs.forEService(eservice)): Epoch | undefined {
    return epochForSignal(list, signalId);
  }

  /**
   * Before the first pull: the seed in force now. A producer that sends `signalId` tells where
   * that seed starts; signals between the cursor and that start belong to older seeds, which a
   * fresh consumer cannot know (an unknown epoch, reported as its signals arrive). Without
   * `signalId` the seed is assumed to cover the backlog until a SEEDUPDATE proves otherwise.
   */
  private async ensureInitialEpoch(es: EServiceConfig, row: EServiceRow, log: Logger, signal?: AbortSignal): Promise<void> {
    if (this.epochs.forEService(row.id).length > 0) return;
    signal?.throwIfAborted();
    const info = await this.crypto.fetch(es, signal ? { signal } : {});
    const cursor = this.cursorOf(row);
    const started = this.now();
    this.db.transaction(() => {
      if (info.signalId !== undefined && info.signalId > cursor) {
        this.epochs.create({ eservice: row.id, startSignalId: cursor, status: 'unknown', seed: null, seedFingerprint: null, algorithm: null, template: null, encoding: null, producerSignalId: null, note: 'backlog-predates-seed' }, this.now());
        this.createSeededEpoch(es, row, info.signalId, 'known', info, undefined);
      } else {
        this.createSeededEpoch(es, row, info.signalId ?? cursor, info.signalId !== undefined ? 'known' : 'assumed', info, undefined);
      }
    }).immediate();
    this.metrics?.reseedSeconds.observe({ eservice: es.id }, (this.now() - started) / 1000);
    log.info({ seedFingerprint: info.fingerprint, algorithm: info.cryptoHashFunction, producerSignalId: info.signalId }, 'initial seed epoch ready');
  }

  private createSeededEpoch(es: EServiceConfig, row: EServiceRow, start: number, status: EpochStatus, info: CryptoInfo, note: ResyncReason | undefined): Epoch {
    const epoch = this.epochs.create(
      {
        eservice: row.id,
        startSignalId: start,
        status,
        seed: info.seed,
        seedFingerprint: info.fingerprint,
        algorithm: info.cryptoHashFunction,
        template: es.recipe.template,
        encoding: es.recipe.encoding,
        producerSignalId: info.signalId ?? null,
        ...(note ? { note } : {}),
      },
      this.now(),
    );
    fillEpochPseudonyms(this.db, { epochId: epoch.id, eserviceId: es.id, seed: info.seed, algorithm: info.cryptoHashFunction, template: es.recipe.template, encoding: es.recipe.encoding });
    return epoch;
  }

  /**
   * SPEC §8 race: right after S is visible the producer may still serve the old seed. Re-fetch
   * with backoff for at most `crypto.rotationWaitSeconds`, then conclude from what was seen.
   */
  private async resolveRotation(es: EServiceConfig, S: number, previous: Epoch | undefined, log: Logger, signal?: AbortSignal): Promise<RotationOutcome> {
    const deadline = this.now() + this.config.crypto.rotationWaitSeconds * 1000;
    let backoff = 250;
    let attempts = 0;
    for (;;) {
      signal?.throwIfAborted();
      attempts++;
      let info: CryptoInfo | undefined;
      try {
        info = await this.crypto.fetch(es, { ...(es.cryptoHistory ? { signalId: S } : {}), ...(signal ? { signal } : {}) });
      } catch (err) {
        if (!(isAppError(err) && err.code === 'CRYPTO_NOT_FOUND' && es.cryptoHistory)) throw err;
      }
      const stale =
        info === undefined ||
        (info.signalId !== undefined ? info.signalId < S : previous?.seedFingerprint != null && info.fingerprint === previous.seedFingerprint);
      if (!stale && info !== undefined) {
        if (info.signalId === undefined) return { status: es.cryptoHistory ? 'known' : 'assumed', info, note: undefined, later: undefined, invalidatePrevious: undefined };
        if (info.signalId === S) return { status: 'known', info, note: undefined, later: undefined, invalidatePrevious: undefined };
        return { status: 'unknown', info: undefined, note: 'seed-from-later-epoch', later: info, invalidatePrevious: undefined };
      }
      const left = deadline - this.now();
      if (left <= 0) {
        log.warn({ seedupdate: S, attempts, producerSignalId: info?.signalId, seedFingerprint: info?.fingerprint }, 'seed did not change after SEEDUPDATE within crypto.rotation_wait_seconds');
        if (info === undefined) return { status: 'unknown', info: undefined, note: 'seed-history-missing', later: undefined, invalidatePrevious: undefined };
        if (info.signalId !== undefined || es.cryptoHistory || previous?.status !== 'assumed') {
          return { status: 'unknown', info: undefined, note: 'seed-unchanged', later: undefined, invalidatePrevious: undefined };
        }
        // The assumed seed of the previous epoch is the one in force after S: the signals
        // processed before S were pseudonymized with an older seed nobody can tell us.
        const first = this.epochs.forEService(previous.eservice)[0];
        return { status: 'assumed', info, note: undefined, later: undefined, invalidatePrevious: first?.id === previous.id ? 'backlog-predates-seed' : 'seed-unchanged' };
      }
      await delay(Math.min(backoff, left), undefined, signal ? { signal } : {});
      backoff = Math.min(backoff * 2, 10_000);
    }
  }

  private async rotate(es: EServiceConfig, row: EServiceRow, seedUpdate: Signal, log: Logger, signal?: AbortSignal): Promise<void> {
    const S = seedUpdate.signalId;
    const existing = this.epochs.forEService(row.id);
    const alreadyOpen = existing.some((e) => e.startSignalId === S);
    const previous = this.epochFor(row.id, S);
    const outcome = alreadyOpen ? undefined : await this.resolveRotation(es, S, previous, log, signal);
    const started = this.now();
    // A SEEDUPDATE that became visible after later signals (SPEC §3 late lower ids): those
    // were matched with the previous seed. The new epoch still starts at S for what follows.
    const cursorBefore = this.cursorOf(row);
    let wrote = false;
    this.db.transaction(() => {
      if (outcome && S < cursorBefore) {
        log.warn({ seedupdate: S, cursor: cursorBefore }, 'SEEDUPDATE arrived behind the cursor (late lower id)');
        wrote = this.recordClosedReport(es, S + 1, cursorBefore, 'late-seedupdate', `SEEDUPDATE ${S} became visible after signals up to ${cursorBefore} were matched with the previous seed`) || wrote;
      }
      if (outcome) {
        if (outcome.invalidatePrevious && previous && previous.firstSignalId !== null) {
          wrote = this.recordClosedReport(es, previous.firstSignalId, previous.lastSignalId!, outcome.invalidatePrevious, `signals before SEEDUPDATE ${S} were matched with a seed that was not theirs (seed ${previous.seedFingerprint}); their real seed cannot be obtained`) || wrote;
        }
        if (outcome.info) {
          this.createSeededEpoch(es, row, S, outcome.status, outcome.info, outcome.invalidatePrevious);
        } else {
          this.epochs.create({ eservice: row.id, startSignalId: S, status: 'unknown', seed: null, seedFingerprint: null, algorithm: null, template: null, encoding: null, producerSignalId: null, note: outcome.note! }, this.now());
        }
        if (outcome.later && !existing.some((e) => e.startSignalId === outcome.later!.signalId)) {
          this.createSeededEpoch(es, row, outcome.later.signalId!, 'known', outcome.later, undefined);
        }
      }
      if (this.keepSignalLog) {
        this.signalLog.add({ eservice: row.id, signalId: S, epoch: null, unmatched: false, signalType: 'SEEDUPDATE', objectType: seedUpdate.objectType, objectId: seedUpdate.objectId, receivedAt: this.now() });
      }
      this.eservices.advance(row.id, S, 1, 0);
      wrote = this.closeGrowingReports(es, row, S) || wrote;
      this.retireUnneededEpochs(row);
    }).immediate();
    if (outcome) {
      this.metrics?.reseedSeconds.observe({ eservice: es.id }, (this.now() - started) / 1000);
      log.info({ seedupdate: S, epochStatus: outcome.status, note: outcome.note, seedFingerprint: outcome.info?.fingerprint ?? outcome.later?.fingerprint }, 'seed epoch opened');
    }
    this.metrics?.signalsSeen.inc({ eservice: es.id, signal_type: 'SEEDUPDATE' });
    if (wrote) this.onEvents();
  }

  /** Pseudonyms of an epoch are dropped once no rescan can reach a signal of it. */
  private retireUnneededEpochs(row: EServiceRow): void {
    const cursor = this.cursorOf(row);
    const horizon = cursor - this.config.hub.rescanOverlap;
    const list = this.epochs.forEService(row.id);
    for (let i = 0; i + 1 < list.length; i++) {
      const e = list[i]!;
      if (e.retiredAt === null && list[i + 1]!.startSignalId <= horizon) this.epochs.retire(e.id, this.now());
    }
  }

  // ---- pages -------------------------------------------------------------------------------

  private async processPage(es: EServiceConfig, row: EServiceRow, page: Page, log: Logger, signal?: AbortSignal): Promise<{ signals: number; matches: number }> {
    let segment: Signal[] = [];
    let signals = 0;
    let matches = 0;
    const flush = () => {
      if (segment.length === 0) return;
      matches += this.writeSegment(es, row, segment);
      signals += segment.length;
      segment = [];
    };
    for (const s of page.signals) {
      if (s.signalType !== 'SEEDUPDATE') {
        segment.push(s);
        continue;
      }
      flush(); // commit what precedes the SEEDUPDATE before anything is fetched
      if (s.signalId <= this.cursorOf(row) && this.signalLog.has(row.id, s.signalId)) continue; // a re-read
      await this.rotate(es, row, s, log, signal);
      signals++;
    }
    flush();
    return { signals, matches };
  }

  /** One transaction: events of matched signals, signal log, epoch accounting, cursor. */
  private writeSegment(es: EServiceConfig, row: EServiceRow, segment: Signal[]): number {
    const receivedAt = this.now();
    const receivedIso = new Date(receivedAt).toISOString();
    let wrote = false;
    let matches = 0;
    let fresh = 0;
    this.db.transaction(() => {
      const current = this.eservices.get(row.eserviceId)!;
      const cursor = current.cursor;
      // Ids at or below the high-water mark may have been processed already (a rescan of late
      // lower ids, or a cursor moved back by an operator): the signal log says which.
      const highWater = Math.max(current.highWater, cursor);
      const epochList = this.epochs.forEService(row.id);
      const contexts = new Map<number, MatchContext | null>();
      const touched = new Map<number, { first: number; last: number; count: number }>();
      let processed = 0;
      let maxId = cursor;
      const logged: LoggedSignal[] = [];
      for (const s of segment) {
        if (s.signalId > maxId) maxId = s.signalId; // re-reads too: the cursor passes over them
        if (s.signalId <= highWater && this.signalLog.has(row.id, s.signalId)) continue;
        processed++;
        const epoch = this.epochFor(row.id, s.signalId, epochList);
        let ctx = epoch ? contexts.get(epoch.id) : null;
        if (epoch && ctx === undefined) {
          ctx = epoch.status === 'unknown' || epoch.retiredAt !== null ? null : { epoch, encoding: epoch.encoding!, length: digestLength(epoch.algorithm!) };
          contexts.set(epoch.id, ctx);
        }
        if (epoch) {
          const t = touched.get(epoch.id);
          if (t) {
            t.last = Math.max(t.last, s.signalId);
            t.count++;
          } else touched.set(epoch.id, { first: s.signalId, last: s.signalId, count: 1 });
        }
        let matched = false;
        if (ctx) {
          const digest = decodeObjectId(s.objectId, ctx.encoding, ctx.length);
          const subject = digest && (this.matchStmt.get(ctx.epoch.id, digest) as { id: number; key: string; ref: string | null } | undefined);
          if (subject) {
            matched = true;
            matches++;
            const event: SignalEvent = {
              id: `${es.id}:${s.signalId}`,
              type: 'signal',
              eserviceId: es.id,
              eserviceName: es.name,
              signalId: s.signalId,
              signalType: s.signalType as ChangeSignalType,
              objectType: s.objectType,
              objectId: s.objectId,
              subjectRef: subject.ref,
              ...(this.config.events.includeSubjectKey ? { subjectKey: subject.key } : {}),
              epoch: ctx.epoch.id,
              receivedAt: receivedIso,
            };
            if (this.outbox.append(event, receivedAt)) wrote = true;
          }
        }
        if (this.keepSignalLog) {
          logged.push({ eservice: row.id, signalId: s.signalId, epoch: ctx ? ctx.epoch.id : null, unmatched: ctx !== null && ctx !== undefined && !matched, signalType: s.signalType, objectType: s.objectType, objectId: s.objectId, receivedAt });
        }
      }
      this.signalLog.addMany(logged);
      for (const [epochId, t] of touched) {
        this.epochs.noteSignals(epochId, t.first, t.last, t.count);
        const epoch = this.epochs.get(epochId)!;
        if (epoch.status === 'unknown' || epoch.retiredAt !== null) this.growReport(es, epoch, t.first, t.last);
      }
      this.eservices.advance(row.id, maxId, processed, matches);
      wrote = this.closeGrowingReports(es, row, maxId) || wrote;
      fresh = processed;
    }).immediate();
    if (matches > 0) {
      this.metrics?.matches.inc({ eservice: es.id }, matches);
      this.metrics?.eventsWritten.inc({ eservice: es.id, kind: 'signal' }, matches);
    }
    // Re-reads (rescan overlap, a cursor moved back) were skipped: the counter matches the database's.
    if (fresh > 0) this.metrics?.signalsSeen.inc({ eservice: es.id, signal_type: 'change' }, fresh);
    if (wrote) this.onEvents();
    return matches;
  }

  // ---- resync reports ----------------------------------------------------------------------

  private growReport(es: EServiceConfig, epoch: Epoch, first: number, last: number): void {
    const open = this.resync.openForEpoch(epoch.id);
    if (open) {
      this.resync.extend(open.id, last);
      return;
    }
    const reason: ResyncReason = epoch.status === 'unknown' ? ((epoch.note as ResyncReason | null) ?? 'seed-unchanged') : 'seed-unchanged';
    const detail = epoch.status === 'unknown'
      ? `no seed can be obtained for the epoch opened at signal ${epoch.startSignalId} (${reason}): its signals cannot be matched`
      : `late signals arrived for the epoch opened at signal ${epoch.startSignalId} after its pseudonyms were dropped`;
    this.resync.create({ eserviceId: es.id, from: first, to: last, reason, detail, epoch: epoch.id, closed: false }, this.now());
  }

  /**
   * Growing reports close (and their resync-required event is written) when processing has
   * moved past their epoch (`upTo`), or at the end of a run that caught up (`upTo` undefined).
   */
  private closeGrowingReports(es: EServiceConfig, row: EServiceRow, upTo: number | undefined): boolean {
    const growing = this.resync.growing(es.id);
    if (growing.length === 0) return false;
    const epochs = this.epochs.forEService(row.id);
    let wrote = false;
    const close = () => {
      for (const report of growing) {
        if (upTo !== undefined) {
          const idx = epochs.findIndex((e) => e.id === report.epoch);
          const next = epochs[idx + 1];
          if (idx < 0 || next === undefined || next.startSignalId > upTo) continue;
        }
        wrote = this.emitResync(es, this.resync.close(report.id, this.now())) || wrote;
      }
    };
    if (this.db.inTransaction) close();
    else this.db.transaction(close).immediate();
    if (wrote && !this.db.inTransaction) this.onEvents();
    return wrote;
  }

  private recordClosedReport(es: EServiceConfig, from: number, to: number, reason: ResyncReason, detail: string): boolean {
    return this.emitResync(es, this.resync.create({ eserviceId: es.id, from, to, reason, detail, closed: true }, this.now()));
  }

  private emitResync(es: EServiceConfig, report: ResyncReport): boolean {
    const event: ResyncEvent = {
      id: `${es.id}:resync:${report.id}`,
      type: 'resync-required',
      eserviceId: es.id,
      eserviceName: es.name,
      reportId: report.id,
      fromSignalId: report.fromSignalId,
      toSignalId: report.toSignalId,
      reason: report.reason,
      detail: report.detail ?? '',
      createdAt: new Date(report.createdAt).toISOString(),
    };
    this.logger.warn({ eservice: es.id, reportId: report.id, from: report.fromSignalId, to: report.toSignalId, reason: report.reason }, 'resync required');
    this.metrics?.eventsWritten.inc({ eservice: es.id, kind: 'resync-required' });
    return this.outbox.append(event, this.now());
  }

  /** SPEC §3: the hub deletes signals 30 days after insertion, silently. */
  private retentionGapSince(row: EServiceRow): number | undefined {
    const last = this.eservices.get(row.eserviceId)?.lastPullAt ?? null;
    if (last === null) return undefined;
    return this.now() - last > this.config.hub.retentionDays * DAY_MS ? last : undefined;
  }

  private recordRetentionGap(es: EServiceConfig, row: EServiceRow, page: Page, since: number, log: Logger): void {
    const cursor = this.cursorOf(row);
    const firstAfter = page.signals.find((s) => s.signalId > cursor)?.signalId;
    const to = Math.max(cursor + 1, (firstAfter ?? cursor + 2) - 1);
    let wrote = false;
    this.db.transaction(() => {
      wrote = this.recordClosedReport(es, cursor + 1, to, 'retention-gap', `last successful pull ${new Date(since).toISOString()} is older than the hub's retention (${this.config.hub.retentionDays} days): signals after ${cursor} may have been deleted unseen`);
      // This pull succeeded: with the report it closes the gap, so a run failing later on this
      // page (a producer down at a SEEDUPDATE, a crash) does not report the same gap again.
      this.eservices.markPulled(row.id, this.now(), false);
    }).immediate();
    log.warn({ cursor, lastPullAt: new Date(since).toISOString() }, 'retention gap: signals may have been lost');
    if (wrote) this.onEvents();
  }

  private pruneSignalLog(): void {
    if (!this.keepSignalLog) return;
    this.signalLog.prune(this.now() - this.config.hub.retentionDays * DAY_MS);
  }
}
