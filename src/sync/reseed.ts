import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Db } from '../store/db.js';
import { BackgroundCheckpointer } from '../store/checkpointer.js';
import { EpochStore, type Epoch } from '../store/epochs.js';
import { FillSpoolReader, FillSpoolWriter, bucketBitsFor, bucketRange, removeSpool, spoolRoot, spooledEpochs } from '../store/fill-spool.js';
import { PseudonymStore } from '../store/pseudonyms.js';
import { SubjectStore } from '../store/subjects.js';
import { PseudonymHasher, type PseudonymEncoding } from '../crypto/pseudonym.js';
import { HashPool } from './hash-pool.js';

/**
 * The reseed of an epoch (ARCHITECTURE invariant 8: nothing stops the world).
 *
 * An epoch is created 'pending' at its SEEDUPDATE and filled only when a change signal of it
 * must be matched (lazy: a run of SEEDUPDATEs costs one fill). The fill has two steps, both in
 * short slices with the event loop free in between:
 *
 * 1. Spool: the subjects following the e-service are read in id order, hashed on worker threads
 *    (every core), and their (prefix, subject id) pairs written to a spool of prefix buckets
 *    (src/store/fill-spool.ts). The table is not touched.
 * 2. Merge: bucket after bucket, in prefix order, the pairs are sorted and written to the
 *    epoch's table, each bucket one short transaction that records how far the merge got
 *    (`fill_merged`). Written in key order, the B-tree only appends: 10 M subjects took 215 s
 *    written in subject order, pages all over a table far bigger than the page cache.
 *
 * A crash while spooling spools again; a crash while merging resumes at the next bucket when
 * the spool is intact (it is checked against its manifest), and spools again otherwise. Rows
 * already written stay: INSERT OR IGNORE keeps the table and its count exact. Subjects added or
 * removed meanwhile are kept in step by the upkeep (src/sync/subject-index.ts): a subject the
 * spool has already read is written or deleted directly, and a removed one is recorded as a
 * skip so that its spooled row is not written. The epoch stays invisible to matching until a
 * last small transaction marks it 'ready'.
 */

export interface FillProgress {
  epochId: number;
  phase: 'spooling' | 'writing';
  /** Rows spooled, or written, so far in this phase. */
  done: number;
  /**
   * At most this many subjects follow the e-service: the highest subject id when the fill
   * started (counting them would scan the whole table in one go).
   */
  total: number;
  /** Of the whole fill (spooling is counted as half of it). */
  fraction: number;
}

export interface FillOptions {
  eserviceId: string;
  signal?: AbortSignal;
  onProgress?: (progress: FillProgress) => void;
  /** A pool to share; by default one is started for this fill and closed after it. */
  pool?: HashPool;
  /** Subjects read and hashed at a time while spooling. */
  pageSize?: number;
  /** The spool's bucket bits; by default about 16 k subjects a bucket (src/store/fill-spool.ts). */
  bucketBits?: number;
}

export interface FillResult {
  /** False when the epoch needed no fill (ready, retired, unknown). */
  filled: boolean;
  pseudonyms: number;
  seconds: number;
}

const PAGE_SIZE = 20_000;
/** Most rows one merge transaction writes (a bucket holds about 16 k; more if the subjects grew). */
const MERGE_ROWS = 50_000;

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
 * interrupted fill. Yields to the event loop between slices; `signal` stops it between them
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
  let epoch = epochs.get(epochId);
  if (!fillable(epoch)) return { filled: false, pseudonyms: epochs.get(epochId)?.pseudonymCount ?? 0, seconds: 0 };

  db.transaction(() => {
    pseudonyms.create(epochId);
    epochs.startFill(epochId);
  }).immediate();
  epoch = epochs.get(epochId)!;
  const root = spoolRoot(db.name);
  const total = new SubjectStore(db).maxId();

  let spool = epoch.fillMerged !== null && epoch.fillBits !== null ? await FillSpoolReader.open(root, epochId, epoch.fillBits) : undefined;
  if (!spool) {
    const pool = options.pool ?? new HashPool();
    try {
      spool = await spoolSubjects(db, epoch, root, total, pool, options);
    } finally {
      if (!options.pool) await pool.close();
    }
  }
  // The merge writes the whole table: its WAL is copied back on another thread, not in the
  // commits on the event loop (src/store/checkpointer.ts).
  const checkpointer = BackgroundCheckpointer.start(db);
  try {
    await mergeSpool(db, epochId, spool, total, options);
  } finally {
    await checkpointer?.stop();
  }

  let count = 0;
  db.transaction(() => {
    // The epoch row's count: kept by every merge slice and by the upkeep of imports during the
    // fill (a COUNT(*) here would scan the whole table in one go).
    count = epochs.get(epochId)!.pseudonymCount;
    epochs.finishFill(epochId, count);
    pseudonyms.clearSkips(epochId);
  }).immediate();
  await removeSpool(root, epochId);
  options.onProgress?.({ epochId, phase: 'writing', done: count, total, fraction: 1 });
  return { filled: true, pseudonyms: count, seconds: (performance.now() - started) / 1000 };
}

/** Step 1: every subject following the e-service, hashed into a new spool. */
async function spoolSubjects(db: Db, epoch: Epoch, root: string, total: number, pool: HashPool, options: FillOptions): Promise<FillSpoolReader> {
  const epochId = epoch.id;
  const epochs = new EpochStore(db);
  const subjects = new SubjectStore(db);
  const recipe = hasherOf(epoch).workerRecipe();
  const pageSize = options.pageSize ?? PAGE_SIZE;
  const bits = options.bucketBits ?? bucketBitsFor(total);
  db.transaction(() => {
    epochs.restartSpool(epochId);
    new PseudonymStore(db).clearSkips(epochId);
  }).immediate();
  const writer = await FillSpoolWriter.create(root, epochId, bits, total);

  interface InFlight {
    after: number;
    upTo: number;
    hashing: Promise<{ prefixes: Float64Array; ids: Float64Array } | undefined>;
  }
  let after = 0;
  // Reading a page and recording it as read is one step: from then on the upkeep treats its
  // subjects as spooled (a removal becomes a skip), whether or not their hashes are written yet.
  const readPage = (): InFlight | undefined =>
    db
      .transaction(() => {
        const current = epochs.get(epochId);
        if (!current || current.fillState !== 'filling' || current.fillMerged !== null || current.fillAfter !== after) throw new FillRaced(epochId);
        const page = subjects.packedKeysForEService(options.eserviceId, after, pageSize);
        if (page.count === 0) return undefined;
        const read: InFlight = { after, upTo: page.maxId, hashing: pool.packedPrefixes(recipe, page) };
        read.hashing.catch(() => {}); // awaited in turn; never an unhandled rejection
        after = page.maxId;
        epochs.spooledUpTo(epochId, after);
        return read;
      })
      .immediate();
  // A key holding the packing's separator: that page's range read again as rows.
  const unpacked = async (page: InFlight) => {
    const { ids, keys } = subjects.keysForEService(options.eserviceId, page.after, page.upTo);
    return { prefixes: await pool.prefixes(recipe, keys), ids };
  };

  let spooled = 0;
  let spooledUpTo = 0;
  // Pages go in id order: how far the ids got is how far the spooling got.
  const report = () => options.onProgress?.({ epochId, phase: 'spooling', done: spooled, total, fraction: total > 0 ? Math.min(1, spooledUpTo / total) / 2 : 0 });
  report();
  // One page per thread in flight, and one more read ahead: the threads never wait for the
  // main thread, which only reads pages (one string each) and writes the spool.
  const depth = pool.threads + 1;
  const inFlight: InFlight[] = [];
  let exhausted = false;
  try {
    await spoolPages();
  } catch (err) {
    await writer.abandon();
    throw err;
  }
  const reader = await FillSpoolReader.open(root, epochId, bits);
  if (!reader) throw new Error(`the fill spool of epoch ${epochId} is incomplete right after it was written`);
  return reader;

  async function spoolPages(): Promise<void> {
    for (;;) {
      options.signal?.throwIfAborted();
      while (!exhausted && inFlight.length < depth) {
        const read = readPage();
        if (read) inFlight.push(read);
        else exhausted = true;
      }
      const page = inFlight.shift();
      if (!page) {
        // Synced and described before the merge may trust it; then, in one step, either nothing
        // was added meanwhile and the merge starts, or spooling goes on with what was.
        await writer.finish();
        const more = db
          .transaction(() => {
            const read = readPage();
            if (!read) epochs.startMerge(epochId, bits);
            return read;
          })
          .immediate();
        if (!more) break;
        inFlight.push(more);
        exhausted = false;
        continue;
      }
      const hashed = (await page.hashing) ?? (await unpacked(page));
      await writer.add(hashed.prefixes, hashed.ids);
      spooled += hashed.ids.length;
      spooledUpTo = page.upTo;
      report();
    }
  }
}

/** Step 2: the spool's buckets written to the table in prefix order, from where the merge got. */
async function mergeSpool(db: Db, epochId: number, spool: FillSpoolReader, total: number, options: FillOptions): Promise<void> {
  const epochs = new EpochStore(db);
  const pseudonyms = new PseudonymStore(db);
  const buckets = 2 ** spool.bits;
  let written = 0;
  const firstBucket = epochs.get(epochId)!.fillMerged ?? 0;
  options.onProgress?.({ epochId, phase: 'writing', done: 0, total, fraction: 0.5 + firstBucket / buckets / 2 });
  // The next bucket is read from its file while this one is written.
  const readAhead = (bucket: number) => {
    if (bucket >= buckets) return undefined;
    const read = spool.read(bucket);
    read.catch(() => {}); // awaited in turn; never an unhandled rejection
    return read;
  };
  let next = readAhead(firstBucket);
  for (let bucket = firstBucket; bucket < buckets; bucket++) {
    options.signal?.throwIfAborted();
    const { prefixes, subjectIds } = await next!;
    next = readAhead(bucket + 1);
    const { low, high } = bucketRange(bucket, spool.bits);
    const n = prefixes.length;
    for (let from = 0; ; from += MERGE_ROWS) {
      const to = Math.min(n, from + MERGE_ROWS);
      db.transaction(() => {
        const current = epochs.get(epochId);
        if (!current || current.fillState !== 'filling' || current.fillMerged !== bucket) throw new FillRaced(epochId);
        const skips = pseudonyms.skipsBetween(epochId, low, high);
        const px = prefixes.subarray(from, to);
        const ids = subjectIds.subarray(from, to);
        const added = pseudonyms.insertSorted(epochId, px, ids, skips.size > 0 ? (i) => skips.has(`${px[i]}:${ids[i]}`) : undefined);
        epochs.advanceMerge(epochId, to === n ? bucket + 1 : bucket, added);
      }).immediate();
      written += to - from;
      if (to === n) break;
      await yieldToLoop();
    }
    options.onProgress?.({ epochId, phase: 'writing', done: written, total, fraction: 0.5 + (bucket + 1) / buckets / 2 });
    await yieldToLoop();
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
  // Spools of epochs no longer filling: retired mid-fill, or left by a crash after the last step.
  const root = spoolRoot(db.name);
  for (const epochId of spooledEpochs(root)) {
    const epoch = epochs.get(epochId);
    if (!epoch || epoch.retiredAt !== null || epoch.fillState !== 'filling') await removeSpool(root, epochId);
  }
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
 * Progress of long work for people and monitoring: a log line every `everyMs` (phase, rows,
 * rate, ETA) and the `signalhub_reseed_progress` gauge on every slice.
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
  const phaseStarted = new Map<string, { at: number; done: number }>();
  return (p) => {
    first ??= p.fraction;
    opts.setGauge?.(p.fraction);
    const t = now();
    if (!phaseStarted.has(p.phase)) {
      phaseStarted.set(p.phase, { at: t, done: p.done });
      if (p.phase === 'writing') opts.log.info({ epoch: p.epochId }, 'writing the spooled pseudonyms in prefix order');
    }
    if (t - lastLog < every) return;
    lastLog = t;
    const phase = phaseStarted.get(p.phase)!;
    const rate = ((p.done - phase.done) * 1000) / Math.max(1, t - phase.at);
    const fractionRate = (p.fraction - first) / Math.max(1, t - started);
    const etaSeconds = fractionRate > 0 ? Math.round((1 - p.fraction) / fractionRate / 1000) : null;
    opts.log.info({ epoch: p.epochId, phase: p.phase, rows: p.done, percent: Math.floor(p.fraction * 100), rowsPerSecond: Math.round(rate), etaSeconds }, 'reseed in progress');
  };
}
