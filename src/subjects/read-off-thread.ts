/**
 * Reads and checks a subject file on a worker thread (src/subjects/read-worker.ts) and yields
 * the results in file order, a batch at a time: parsing (csv-parse) and checking cost more main-
 * thread time than staging the rows, and run on the second core while the import stages.
 *
 * The main thread reads the input (stdin, a file, any Readable) and posts its chunks to the
 * thread, at most CHUNKS_IN_FLIGHT not yet taken by the parser (a credit comes back for each
 * taken); the thread sends at most 8 batches ahead of the import. Memory stays bounded
 * whatever the speed of either side.
 *
 * Failures keep the messages of the in-thread readers: the thread throws the same AppErrors
 * (header, empty file, line too long), an input error is handed to the thread's parser and
 * comes back as parse.ts words it, and a thread that dies is an INTERNAL error. Returning early
 * (a fatal syntax error, an error while staging) terminates the thread and destroys the input.
 *
 * A thread that read its file to the end is kept for the next import for a second, unref'd
 * (it never keeps the process alive): starting one costs ~90 ms (bootstrap and modules),
 * which doubled the time of the tests that run hundreds of small imports.
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { AppError, type ErrorCode } from '../errors.js';
import type { SubjectFormat } from './parse.js';
import type { ConfiguredEService } from './check.js';
import { unpackBatch, type CheckedItem, type PackedBatch } from './checked-batch.js';

/** What the reader thread is told about a file (its 'start' message). */
export interface ReadJob {
  format: SubjectFormat;
  source: string;
  eservices: ConfiguredEService[];
  validate: boolean;
  /** --tenant, normalized. */
  fileTenant: string | undefined;
  replace: boolean;
}

export type ReaderMessage = { type: 'start'; job: ReadJob } | { type: 'chunk'; data: Uint8Array | string } | { type: 'end' } | { type: 'error'; message: string; code: string | undefined } | { type: 'ack' };
export type ReaderReply = { type: 'credit' } | ({ type: 'batch' } & PackedBatch) | { type: 'done' } | { type: 'failed'; code: ErrorCode; message: string };

/** Input chunks (64 KiB from a file) posted and not yet taken by the parser. */
const CHUNKS_IN_FLIGHT = 4;

/**
 * The thread's module. A worker runs JavaScript files only: from dist/ it is the compiled
 * module beside this one; from the TypeScript sources (tests under vitest) it is the dist/
 * counterpart, which the test setup (test/helpers/global-setup.ts) builds before every run.
 */
function workerModule(): URL {
  return import.meta.url.endsWith('.ts') ? new URL('../../dist/subjects/read-worker.js', import.meta.url) : new URL('./read-worker.js', import.meta.url);
}

/** How long a thread that read its file to the end waits for the next import. */
const IDLE_MS = 1000;
let idleReader: { worker: Worker; timer: NodeJS.Timeout; onExit: () => void } | undefined;

function takeReader(moduleUrl: URL): Worker {
  if (idleReader !== undefined) {
    const { worker, timer, onExit } = idleReader;
    idleReader = undefined;
    clearTimeout(timer);
    worker.off('exit', onExit);
    worker.ref();
    return worker;
  }
  // A small young generation, as the hash pool's (src/sync/hash-pool.ts): the thread's garbage
  // is short-lived strings, and the default would keep tens of MB more resident.
  const worker = new Worker(moduleUrl, { resourceLimits: { maxYoungGenerationSizeMb: 8 } });
  // Between imports (parked, or being ended) an error must not become the process's uncaught
  // one: each import listens for its own, and a parked thread that dies is simply not reused.
  worker.on('error', () => {});
  return worker;
}

function parkReader(worker: Worker): void {
  if (idleReader !== undefined) {
    void worker.terminate();
    return;
  }
  const onExit = (): void => {
    if (idleReader?.worker === worker) idleReader = undefined;
  };
  const timer = setTimeout(() => {
    if (idleReader?.worker !== worker) return;
    idleReader = undefined;
    void worker.terminate();
  }, IDLE_MS);
  timer.unref();
  worker.unref();
  worker.on('exit', onExit);
  idleReader = { worker, timer, onExit };
}

export interface ReaderOptions {
  /** Called with the thread once started: tests end it midway to check how a crash is handled. */
  onWorker?: (worker: Worker) => void;
}

export async function* readCheckedOffThread(input: Readable, job: ReadJob, options: ReaderOptions = {}): AsyncGenerator<CheckedItem[]> {
  const moduleUrl = workerModule();
  // Never fall back to reading on the main thread: a missing module is a broken installation.
  if (!fs.existsSync(fileURLToPath(moduleUrl))) throw new AppError('INTERNAL', `the subject file reader is missing: ${fileURLToPath(moduleUrl)} (a broken installation, or dist/ not built)`);
  const worker = takeReader(moduleUrl);
  options.onWorker?.(worker);

  const batches: PackedBatch[] = [];
  let done = false;
  let failure: AppError | undefined;
  let inputError: unknown;
  let stopped = false;
  let credits = CHUNKS_IN_FLIGHT;
  // One waiter per side: the pump waits for credits, the consumer for batches or the end.
  let wakePump: (() => void) | undefined;
  let wakeConsumer: (() => void) | undefined;
  const wake = (): void => {
    const pump = wakePump;
    const consumer = wakeConsumer;
    wakePump = wakeConsumer = undefined;
    pump?.();
    consumer?.();
  };
  const fail = (err: AppError): void => {
    if (!done) failure ??= err;
    wake();
  };
  const post = (message: ReaderMessage, transfer?: ArrayBuffer[]): void => worker.postMessage(message, transfer);

  const onMessage = (reply: ReaderReply): void => {
    if (reply.type === 'credit') credits++;
    else if (reply.type === 'batch') batches.push(reply);
    else if (reply.type === 'done') done = true;
    else fail(new AppError(reply.code, reply.message, inputError === undefined ? {} : { cause: inputError }));
    wake();
  };
  const onError = (err: Error): void => fail(new AppError('INTERNAL', `${job.source}: the reader thread failed: ${err.message}`, { cause: err }));
  const onExit = (code: number): void => fail(new AppError('INTERNAL', `${job.source}: the reader thread stopped (exit code ${code}) before the end of the file`));
  worker.on('message', onMessage);
  worker.on('error', onError);
  worker.on('exit', onExit);
  post({ type: 'start', job });

  const pump = async (): Promise<void> => {
    try {
      for await (const chunk of input as AsyncIterable<unknown>) {
        while (credits === 0 && !stopped) await new Promise<void>((resolve) => (wakePump = resolve));
        if (stopped) return;
        credits--;
        if (typeof chunk === 'string') post({ type: 'chunk', data: chunk });
        else if (chunk instanceof Uint8Array) {
          // A copy of just this chunk's bytes, moved to the thread: a Buffer may be a view of
          // a larger pooled ArrayBuffer, which must neither be moved nor copied whole.
          const data = new Uint8Array(chunk);
          post({ type: 'chunk', data }, [data.buffer]);
        } else throw new TypeError(`expected bytes or text from the input, got ${typeof chunk}`);
      }
      if (!stopped) post({ type: 'end' });
    } catch (err) {
      if (stopped) return;
      inputError = err;
      const code = (err as NodeJS.ErrnoException).code;
      post({ type: 'error', message: err instanceof Error ? err.message : String(err), code: typeof code === 'string' ? code : undefined });
    }
  };
  const pumping = pump();
  // Whether the thread read the file to the end and the import took every batch.
  let complete = false;

  try {
    for (;;) {
      const batch = batches.shift();
      if (batch !== undefined) {
        post({ type: 'ack' });
        let items: CheckedItem[];
        try {
          items = unpackBatch(batch);
        } catch (err) {
          throw new AppError('INTERNAL', `${job.source}: the reader thread sent a batch that does not add up: ${(err as Error).message}`, { cause: err });
        }
        yield items;
        continue;
      }
      if (failure !== undefined) throw failure;
      if (done) {
        complete = true;
        return;
      }
      await new Promise<void>((resolve) => (wakeConsumer = resolve));
    }
  } finally {
    stopped = true;
    wake();
    // An early return leaves the input unread: destroying it ends the pump's read and closes
    // the file (stdin: lets the process exit). After a complete read it is destroyed already.
    if (!input.destroyed) input.destroy();
    await pumping;
    worker.off('message', onMessage);
    worker.off('error', onError);
    worker.off('exit', onExit);
    if (complete) parkReader(worker);
    else await worker.terminate();
  }
}
