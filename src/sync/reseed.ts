import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Db } from '../store/db.js';
import { EpochStore, type Epoch } from '../store/epochs.js';
import { PseudonymStore, digestPrefix } from '../store/pseudonyms.js';
import { SubjectStore, type SubjectRow } from '../store/subjects.js';
import { PseudonymHasher, type PseudonymEncoding } from '../crypto/pseudonym.js';
import { HashPool } from './hash-pool.js';

/**
 * The reseed of an epoch (ARCHITECTURE invariant 8: nothing stops the world).
 *
 * An epoch is created 'pending' at its SEEDUPDATE and filled only when a change signal of it
 * must be matched (lazy: a run of SEEDUPDATEs costs one fill). The fill walks the subjects
 * following the e-service in id order, in chunks: keys are hashed on worker threads while the
 * previous chunk is written, and each chunk is its own short transaction that also records how
 * far the fill got (`fill_after`), so a crash resumes where it stopped. The epoch stays
 * invisible to matching until a last small transaction marks it 'ready'.
 */

export interface FillProgress {
  epochId: number;
  /** Pseudonyms stored so far. */
  done: number;
  /** Subjects following the e-service when the fill started. */
  total: number;
}

export interface FillOptions {
  eserviceId: string;
  signal?: AbortSignal;
  onProgress?: (progress: FillProgress) => void;
  /** A pool to share; by default one is started for this fill and closed after it. */
  pool?: HashPool;
  /** Wall time a chunk's transaction aims at (ms): the chunk size adapts to it. */
  targetChunkMs?: number;
}

export interface FillResult {
  /** False when the epoch needed no fill (ready, retired, unknown). */
  filled: boolean;
  pseudonyms: number;
  seconds: number;
}

const MIN_CHUNK = 2_000;
const MAX_CHUNK = 20_000;
/** Below this many keys a chunk is hashed on the main thread (no round trip to a worker). */
const INLINE_KEYS = 256;

function fillable(epoch: Epoch | undefined): epoch is Epoch {
  return epoch !== undefined && epoch.retiredAt === null && epoch.status !== 'unknown' && epoch.seed !== null && epoch.fillState !== 'ready';
}

function hasherOf(epoch: Epoch): PseudonymHasher {
  return new PseudonymHasher({ template: epoch.template!, encoding: epoch.encoding as PseudonymEncoding }, epoch.seed!, epoch.algorithm!);
}

/** Whether an epoch must be filled before its signals can be matched. */
export function needsFill(epoch: Epoch): boolean {
  return fillable(epoch);
}

/**
 * Makes the epoch's pseudonyms complete and the epoch visible to matching; resumes an
 * interrupted fill. Yields to the event loop between chunks; `signal` stops it between chunks
 * (what was committed stays and is resumed later).
 */
export async function ensureFilled(db: Db, epochId: number, options: FillOptions): Promise<FillResult> {
  for (;;) {
    try {
      return await fillOnce(db, epochId, options);
    } catch (err) {
      if (!(err instanceof FillRaced)) throw err;
    }
  }
}

async function fillOnce(db: Db, epochId: number, options: FillOptions): Promise<FillResult> {
  const started = performance.now();
  const epochs = new EpochStore(db);
  const pseudonyms = new PseudonymStore(db);
  const subjects = new SubjectStore(db);
  let epoch = epochs.get(epochId);
  if (!fillable(epoch)) return { filled: false, pseudonyms: epochs.get(epochId)?.pseudonymCount ?? 0, seconds: 0 };

  db.transaction(() => {
    pseudonyms.create(epochId);
    epochs.startFill(epochId);
  }).immediate();
  epoch = epochs.get(epochId)!;
  const hasher = hasherOf(epoch);
  const recipe = hasher.workerRecipe();
  const total = subjects.countForEService(options.eserviceId);
  const targetMs = options.targetChunkMs ?? 80;
  let chunk = 10_000;
  const pool = options.pool ?? new HashPool();
  const report = (done: number) => options.onProgress?.({ epochId, done, total: Math.max(total, done) });

  const hashPage = async (page: SubjectRow[]): Promise<Float64Array> => {
    if (page.length <= INLINE_KEYS) {
      const out = new Float64Array(page.length);
      for (let i = 0; i < page.length; i++) out[i] = digestPrefix(hasher.digest(page[i]!.key));
      return out;
    }
    return pool.prefixes(recipe, page.map((s) => s.key));
  };

  try {
    let after = epoch.fillAfter;
    let done = epoch.pseudonymCount;
    report(done);
    let page = subjects.pageForEService(options.eserviceId, after, chunk);
    let hashing = hashPage(page);
    for (;;) {
      options.signal?.throwIfAborted();
      const prefixes = await hashing;
      if (page.length === 0) break;
      const upTo = page[page.length - 1]!.id;
      // Start hashing the next chunk now: the workers hash it while this one is written.
      const nextPage = subjects.pageForEService(options.eserviceId, upTo, chunk);
      hashing = hashPage(nextPage);
      hashing.catch(() => {}); // awaited on the next turn; never an unhandled rejection
      const t0 = performance.now();
      let added = 0;
      db.transaction(() => {
        const current = epochs.get(epochId);
        if (!current || current.fillState !== 'filling' || current.fillAfter !== after) throw new FillRaced(epochId);
        // The subjects as they are now (an import may have changed them since the page was read):
        // rows whose key is unchanged reuse the worker's hash, others are hashed here.
        const hashedKey = new Map<number, number>();
        for (let i = 0; i < page.length; i++) hashedKey.set(page[i]!.id, i);
        const now = subjects.rangeForEService(options.eserviceId, after, upTo);
        const px = new Float64Array(now.length);
        const ids = new Float64Array(now.length);
        for (let i = 0; i < now.length; i++) {
          const s = now[i]!;
          const at = hashedKey.get(s.id);
          px[i] = at !== undefined && page[at]!.key === s.key ? prefixes[at]! : digestPrefix(hasher.digest(s.key));
          ids[i] = s.id;
        }
        added = pseudonyms.insertMany(epochId, px, ids);
        epochs.advanceFill(epochId, upTo, added);
      }).immediate();
      after = upTo;
      done += added;
      report(done);
      const ms = performance.now() - t0;
      chunk = Math.max(MIN_CHUNK, Math.min(MAX_CHUNK, Math.round(chunk * Math.min(2, Math.max(0.5, targetMs / Math.max(ms, 1))))));
      page = nextPage;
      await yieldToLoop();
    }
    let count = 0;
    db.transaction(() => {
      // The epoch row's count: kept by every chunk and by the upkeep of imports during the fill
      // (a COUNT(*) here would scan the whole table in one go).
      count = epochs.get(epochId)!.pseudonymCount;
      epochs.finishFill(epochId, count);
    }).immediate();
    report(count);
    return { filled: true, pseudonyms: count, seconds: (performance.now() - started) / 1000 };
  } finally {
    if (!options.pool) await pool.close();
  }
}

/** Another writer moved the fill under us (only possible without the writer lock): start over from its state. */
class FillRaced extends Error {
  constructor(epochId: number) {
    super(`fill of epoch ${epochId} changed concurrently`);
  }
}

/**
 * Returns the space of retired epochs: their pseudonym tables are emptied in slices (yielding
 * between them) and dropped. Also finds tables left by a crash between retire and drop.
 */
export async function reclaimPseudonymSpace(db: Db, options: { signal?: AbortSignal; sliceRows?: number } = {}): Promise<number> {
  const pseudonyms = new PseudonymStore(db);
  const epochs = new EpochStore(db);
  const slice = options.sliceRows ?? 20_000;
  let dropped = 0;
  for (const epochId of epochs.reclaimable(pseudonyms.tables())) {
    for (;;) {
      options.signal?.throwIfAborted();
      const gone = db.transaction(() => pseudonyms.dropSlice(epochId, slice)).immediate();
      if (gone) break;
      await yieldToLoop();
    }
    dropped++;
  }
  return dropped;
}

/**
 * Progress of long work for people and monitoring: a log line every `everyMs` (rows, rate,
 * ETA) and the `signalhub_reseed_progress` gauge on every chunk.
 */
export function fillProgressReporter(opts: {
  log: { info: (fields: object, msg: string) => void };
  setGauge?: (fraction: number) => void;
  everyMs?: number;
  now?: () => number;
}): (p: FillProgress) => void {
  const now = opts.now ?? Date.now;
  const every = opts.everyMs ?? 5_000;
  const started = now();
  let first: number | undefined;
  let lastLog = started;
  return (p) => {
    first ??= p.done;
    const fraction = p.total > 0 ? Math.min(1, p.done / p.total) : 1;
    opts.setGauge?.(fraction);
    const t = now();
    if (t - lastLog < every) return;
    lastLog = t;
    const rate = ((p.done - first) * 1000) / Math.max(1, t - started);
    const etaSeconds = rate > 0 ? Math.round((p.total - p.done) / rate) : null;
    opts.log.info({ epoch: p.epochId, done: p.done, total: p.total, rowsPerSecond: Math.round(rate), etaSeconds }, 'reseed in progress');
  };
}
