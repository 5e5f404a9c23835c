import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AppError } from '../errors.js';
import { PREFIX_BYTES } from './pseudonyms.js';

/**
 * The spool of a seed epoch's fill: the (prefix, subject id) pairs of every subject, hashed in
 * subject order and written to one file per prefix bucket, so that the pseudonym table can then
 * be written in prefix order, bucket after bucket. A B-tree written in key order only ever
 * appends (pages filled once, written once); written in subject order, each chunk lands on pages
 * all over a table many times larger than the page cache (215 s at 10 M subjects, 16 s now).
 *
 * The files are scratch: they live beside the database (the service's own state directory,
 * mode 0700/0600: pseudonym prefixes derive from a secret seed), are fsynced and described by a
 * manifest before the merge starts, and are checked against it before a resumed merge trusts
 * them. Anything missing or inconsistent only means the fill spools again (src/sync/reseed.ts).
 */

/** Bytes per record: prefix and subject id, each a float64 (both exact below 2^53). */
const RECORD_BYTES = 16;
const RECORD_FLOATS = 2;
const PREFIX_BITS = PREFIX_BYTES * 8;
/** Rows a bucket aims at: small enough to sort and write in one short transaction. */
const ROWS_PER_BUCKET = 16_384;
const MAX_BUCKET_BITS = 11;
/** Memory the writer buffers before appending to the files. */
const BUFFER_BYTES = 16 * 1024 * 1024;
const MANIFEST = 'manifest.json';

/** A spool that cannot be written is the database's disk failing: the same codes and exit. */
function spoolError(dir: string, err: unknown): AppError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new AppError('DB_FULL', `no space left for the reseed spool in ${dir} (about 16 bytes a subject): free some and the fill starts again`, { cause: err });
  return new AppError('DB_ERROR', `cannot write the reseed spool in ${dir}: ${code ?? (err as Error).message}`, { cause: err });
}

/** Bucket bits for a fill of about `rows` rows (0: one bucket). */
export function bucketBitsFor(rows: number): number {
  let bits = 0;
  while (bits < MAX_BUCKET_BITS && rows / 2 ** bits > ROWS_PER_BUCKET) bits++;
  return bits;
}

const PREFIX_OFFSET = 2 ** (PREFIX_BITS - 1);
/** 2^(bits - PREFIX_BITS) per bit count: a multiplication by a power of two is exact, and a tenth of the cost of the division. */
const BUCKET_SCALES = Array.from({ length: PREFIX_BITS + 1 }, (_, bits) => 2 ** (bits - PREFIX_BITS));

/** The bucket of a (signed) prefix: buckets are in prefix order. */
export function bucketOf(prefix: number, bits: number): number {
  return Math.floor((prefix + PREFIX_OFFSET) * BUCKET_SCALES[bits]!);
}

/** The lowest and highest prefix of a bucket. */
export function bucketRange(bucket: number, bits: number): { low: number; high: number } {
  const width = 2 ** (PREFIX_BITS - bits);
  const low = bucket * width - 2 ** (PREFIX_BITS - 1);
  return { low, high: low + width - 1 };
}

/** Where the spools of a database live: beside it, or in the temporary folder for an in-memory one. */
export function spoolRoot(dbFile: string): string {
  return dbFile === '' || dbFile === ':memory:' ? path.join(os.tmpdir(), `signalhub-sync-fill-${process.pid}`) : `${path.resolve(dbFile)}.fill`;
}

function spoolDir(root: string, epochId: number): string {
  return path.join(root, `epoch-${epochId}`);
}

const bucketFile = (dir: string, bucket: number) => path.join(dir, `bucket-${bucket}.bin`);

interface Manifest {
  epochId: number;
  bits: number;
  counts: number[];
}

/**
 * Writes a spool: `add` buffers records per bucket and appends them to the bucket files when
 * the buffer is full (asynchronously, off the event loop); `finish` syncs them and writes the
 * manifest, after which the spool can be read back.
 */
export class FillSpoolWriter {
  private readonly buckets: number;
  private readonly buffers: Float64Array[];
  private readonly fill: Uint32Array;
  private readonly counts: number[];
  private readonly perBucket: number;
  /** Appends in flight, awaited together (an error is the spool's: settle). */
  private pending: Promise<void>[] = [];

  private constructor(
    private readonly dir: string,
    private readonly epochId: number,
    readonly bits: number,
    expectedRows: number,
  ) {
    this.buckets = 2 ** bits;
    const fair = Math.ceil(expectedRows / this.buckets) + 64;
    this.perBucket = Math.max(64, Math.min(fair, Math.floor(BUFFER_BYTES / RECORD_BYTES / this.buckets)));
    this.buffers = Array.from({ length: this.buckets }, () => new Float64Array(this.perBucket * RECORD_FLOATS));
    this.fill = new Uint32Array(this.buckets);
    this.counts = new Array<number>(this.buckets).fill(0);
  }

  /** Starts an empty spool for the epoch (any earlier one is discarded). */
  static async create(root: string, epochId: number, bits: number, expectedRows: number): Promise<FillSpoolWriter> {
    const dir = spoolDir(root, epochId);
    try {
      await fsp.rm(dir, { recursive: true, force: true });
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
      await fsp.chmod(root, 0o700);
    } catch (err) {
      throw spoolError(dir, err);
    }
    return new FillSpoolWriter(dir, epochId, bits, expectedRows);
  }

  /**
   * Adds records. Full buckets are appended to their files in the background; an append's
   * error surfaces at the next call, or at finish.
   */
  async add(prefixes: ArrayLike<number>, subjectIds: ArrayLike<number>): Promise<void> {
    // The previous call's appends are awaited now, not there: the caller reads and hashes the
    // next page while they are on the thread pool (10 M subjects fill ~10 000 bucket buffers).
    await this.settle();
    for (let i = 0; i < prefixes.length; i++) {
      const b = this.bits === 0 ? 0 : bucketOf(prefixes[i]!, this.bits);
      const at = this.fill[b]! * RECORD_FLOATS;
      const buf = this.buffers[b]!;
      buf[at] = prefixes[i]!;
      buf[at + 1] = subjectIds[i]!;
      // A full bucket's records leave for its file now (a copy), and it is refilled at once.
      if (++this.fill[b]! === this.perBucket) this.pending.push(this.writeBucket(b));
    }
  }

  /**
   * Starts appending the bucket's buffered records to its file. Records within a bucket are
   * unordered (the merge sorts each), so two appends in flight to one file are fine.
   */
  private writeBucket(b: number): Promise<void> {
    const n = this.fill[b]!;
    // A copy: the buffer is refilled while the write is in flight.
    const bytes = Buffer.from(this.buffers[b]!.buffer.slice(0, n * RECORD_BYTES));
    this.fill[b] = 0;
    this.counts[b]! += n;
    const write = fsp.appendFile(bucketFile(this.dir, b), bytes, { mode: 0o600 });
    write.catch(() => {}); // awaited by settle(); never an unhandled rejection meanwhile
    return write;
  }

  private async settle(): Promise<void> {
    const writes = this.pending;
    this.pending = [];
    await Promise.all(writes).catch((err: unknown) => {
      throw spoolError(this.dir, err);
    });
  }

  /**
   * Waits for the appends still in flight, whatever their outcome: a spool given up (an abort,
   * an error) must not have a late append land in the next spool of the same epoch.
   */
  async abandon(): Promise<void> {
    const writes = this.pending;
    this.pending = [];
    await Promise.allSettled(writes);
  }

  private async flushBuckets(buckets: number[]): Promise<void> {
    for (const b of buckets) if (this.fill[b]! > 0) this.pending.push(this.writeBucket(b));
    await this.settle();
  }

  private async flushAll(): Promise<void> {
    const all: number[] = [];
    for (let b = 0; b < this.buckets; b++) if (this.fill[b]! > 0) all.push(b);
    // A few at a time: libuv's thread pool has four threads, more only queue.
    for (let i = 0; i < all.length; i += 64) await this.flushBuckets(all.slice(i, i + 64));
  }

  /** Writes out the rest, syncs every file and the manifest. Returns the records per bucket. */
  async finish(): Promise<number[]> {
    try {
      return await this.sealed();
    } catch (err) {
      throw err instanceof AppError ? err : spoolError(this.dir, err);
    }
  }

  private async sealed(): Promise<number[]> {
    await this.flushAll();
    for (let b = 0; b < this.buckets; b += 16) {
      await Promise.all(
        Array.from({ length: Math.min(16, this.buckets - b) }, async (_, i) => {
          if (this.counts[b + i] === 0) return;
          const handle = await fsp.open(bucketFile(this.dir, b + i), 'r');
          try {
            await handle.sync();
          } finally {
            await handle.close();
          }
        }),
      );
    }
    const manifest: Manifest = { epochId: this.epochId, bits: this.bits, counts: this.counts };
    const file = path.join(this.dir, MANIFEST);
    await fsp.writeFile(`${file}.tmp`, JSON.stringify(manifest), { mode: 0o600 });
    const handle = await fsp.open(`${file}.tmp`, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(`${file}.tmp`, file);
    return [...this.counts];
  }
}

/** A finished spool, read back bucket by bucket. */
export class FillSpoolReader {
  private constructor(
    private readonly dir: string,
    readonly bits: number,
    readonly counts: readonly number[],
  ) {}

  /**
   * Opens the epoch's spool if it is complete: its manifest names the epoch and `bits`, and
   * every bucket file holds exactly the records the manifest counts. Undefined otherwise.
   */
  static async open(root: string, epochId: number, bits: number): Promise<FillSpoolReader | undefined> {
    const dir = spoolDir(root, epochId);
    let manifest: Manifest;
    try {
      manifest = JSON.parse(await fsp.readFile(path.join(dir, MANIFEST), 'utf8')) as Manifest;
    } catch {
      return undefined;
    }
    if (manifest.epochId !== epochId || manifest.bits !== bits || !Array.isArray(manifest.counts) || manifest.counts.length !== 2 ** bits) return undefined;
    for (let b = 0; b < manifest.counts.length; b++) {
      const want = manifest.counts[b]! * RECORD_BYTES;
      const size = await fsp.stat(bucketFile(dir, b)).then(
        (s) => s.size,
        () => 0,
      );
      if (size !== want) return undefined;
    }
    return new FillSpoolReader(dir, bits, manifest.counts);
  }

  /** A bucket's records sorted by (prefix, subject id). */
  async read(bucket: number): Promise<{ prefixes: Float64Array; subjectIds: Float64Array }> {
    const n = this.counts[bucket]!;
    if (n === 0) return { prefixes: new Float64Array(0), subjectIds: new Float64Array(0) };
    const bytes = await fsp.readFile(bucketFile(this.dir, bucket));
    // Copied into a Float64Array of its own: a Buffer's offset need not be 8-aligned.
    const records = new Float64Array(n * RECORD_FLOATS);
    new Uint8Array(records.buffer).set(bytes.subarray(0, n * RECORD_BYTES));
    return sortRecords(records, n, this.bits, bucket);
  }
}

/**
 * Sorts a bucket's interleaved (prefix, id) records by (prefix, id). The prefixes of a bucket
 * share their top `bits`: the rest, cut to fit beside the record's index in a float64's 53
 * bits, makes one key a record, sorted by one native numeric sort (3× a comparator's speed).
 * The few records the cut left out of order (their prefixes equal in the kept bits) are then
 * put right by an insertion pass, which costs only what is out of order.
 */
export function sortRecords(records: Float64Array, n: number, bits: number, bucket: number): { prefixes: Float64Array; subjectIds: Float64Array } {
  const prefixes = new Float64Array(n);
  const subjectIds = new Float64Array(n);
  const indexBits = Math.max(1, Math.ceil(Math.log2(n + 1)));
  const cut = 2 ** Math.max(0, PREFIX_BITS - bits + indexBits - 53);
  const scale = 2 ** indexBits;
  const low = bucketRange(bucket, bits).low;
  const keys = new Float64Array(n);
  for (let i = 0; i < n; i++) keys[i] = Math.floor((records[i * 2]! - low) / cut) * scale + i;
  keys.sort();
  for (let k = 0; k < n; k++) {
    const i = keys[k]! % scale;
    prefixes[k] = records[i * 2]!;
    subjectIds[k] = records[i * 2 + 1]!;
  }
  for (let k = 1; k < n; k++) {
    const p = prefixes[k]!;
    const id = subjectIds[k]!;
    let j = k;
    while (j > 0 && (prefixes[j - 1]! > p || (prefixes[j - 1] === p && subjectIds[j - 1]! > id))) {
      prefixes[j] = prefixes[j - 1]!;
      subjectIds[j] = subjectIds[j - 1]!;
      j--;
    }
    prefixes[j] = p;
    subjectIds[j] = id;
  }
  return { prefixes, subjectIds };
}

/** Removes an epoch's spool (done, or retired). */
export async function removeSpool(root: string, epochId: number): Promise<void> {
  await fsp.rm(spoolDir(root, epochId), { recursive: true, force: true });
  // The folder goes with its last spool (another fill's keeps it: ENOTEMPTY).
  await fsp.rmdir(root).catch(() => {});
}

/** Epoch ids that have a spool folder under `root`. */
export function spooledEpochs(root: string): number[] {
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return [];
  }
  return names
    .map((n) => /^epoch-(\d+)$/.exec(n)?.[1])
    .filter((n): n is string => n !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}
