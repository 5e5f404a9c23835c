/**
 * The reader thread of a subject import: parses the file (readSubjectFile) and checks every
 * record (checkRecord) off the main thread, which meanwhile stages the rows it gets back (the
 * protocol is in src/subjects/read-off-thread.ts). It never logs: records hold subject keys.
 *
 * Messages in:  {type: 'start', job} | {type: 'chunk', data} | {type: 'end'} | {type: 'error', message, code} | {type: 'ack'}
 * Messages out: {type: 'credit'} (a chunk was taken) | {type: 'batch', ...PackedBatch} |
 *               {type: 'done'} | {type: 'failed', code, message}
 */
import { parentPort } from 'node:worker_threads';
import { Readable } from 'node:stream';
import { readSubjectFile } from './parse.js';
import { checkRecord, eserviceResolver } from './check.js';
import { CheckedBatchWriter } from './checked-batch.js';
import { isAppError } from '../errors.js';
import type { ReaderMessage, ReadJob, ReaderReply } from './read-off-thread.js';

/** Items per batch sent back. */
const BATCH_ITEMS = 2048;
/**
 * Batches sent and not yet taken by the import: beyond this, reading waits. Enough to keep
 * reading while the import sorts and writes a run (20 000 rows, src/subjects/staged-runs.ts):
 * with 2, each thread waited on the other for seconds of a 1 M import. ~16 000 rows, ~1 MB.
 */
const BATCHES_IN_FLIGHT = 8;

const port = parentPort!;
const send = (reply: ReaderReply, transfer?: ArrayBuffer[]): void => port.postMessage(reply, transfer);

/** One file being read. A thread reads one file at a time, and may be given another after 'done'. */
class FileRead {
  // The input, as the main thread reads it: a chunk is taken only when the parser asks for one
  // (objectMode with a high-water mark of 1: no buffering here beyond a chunk), and each taken
  // chunk gives the main thread a credit to send another.
  private readonly queued: (Buffer | string)[] = [];
  private ended = false;
  private wanting = false;
  readonly input = new Readable({
    objectMode: true,
    highWaterMark: 1,
    read: () => {
      this.wanting = true;
      this.feed();
    },
  });
  private readonly writer = new CheckedBatchWriter();
  private inFlight = 0;
  private acked: (() => void) | undefined;

  constructor(private readonly job: ReadJob) {}

  take(message: ReaderMessage): void {
    switch (message.type) {
      case 'chunk':
        this.queued.push(typeof message.data === 'string' ? message.data : Buffer.from(message.data.buffer, message.data.byteOffset, message.data.byteLength));
        this.feed();
        break;
      case 'end':
        this.ended = true;
        this.feed();
        break;
      case 'error':
        // The parsers turn the input's error into the import's message (parse.ts inputError).
        this.input.destroy(Object.assign(new Error(message.message), message.code === undefined ? {} : { code: message.code }));
        break;
      case 'ack': {
        this.inFlight--;
        const wake = this.acked;
        this.acked = undefined;
        wake?.();
        break;
      }
    }
  }

  private feed(): void {
    while (this.wanting && this.queued.length > 0) {
      const chunk = this.queued.shift()!;
      send({ type: 'credit' });
      this.wanting = this.input.push(chunk);
    }
    if (!this.wanting) return;
    if (this.ended) {
      this.wanting = false;
      this.input.push(null);
    } else if (this.writer.count > 0 && this.inFlight < BATCHES_IN_FLIGHT) {
      // Starved: what is checked so far goes now rather than when a batch is full (a slow stdin).
      this.flush();
    }
  }

  private flush(): void {
    const batch = this.writer.take();
    this.inFlight++;
    send({ type: 'batch', ...batch }, [batch.ints.buffer as ArrayBuffer]);
  }

  async run(): Promise<void> {
    const { job, writer } = this;
    const rules = { validate: job.validate, fileTenant: job.fileTenant, replace: job.replace };
    const resolve = eserviceResolver(job.eservices);
    try {
      for await (const item of readSubjectFile(this.input, job.format, job.source)) {
        if (item.kind === 'problem') writer.add(item);
        else {
          const row = checkRecord(item, rules, resolve);
          writer.add('reason' in row ? { kind: 'rejected', row } : { kind: 'staged', row });
        }
        if (writer.count >= BATCH_ITEMS) {
          while (this.inFlight >= BATCHES_IN_FLIGHT) await new Promise<void>((wake) => (this.acked = wake));
          this.flush();
        }
      }
      if (writer.count > 0) this.flush();
      send({ type: 'done' });
    } catch (err) {
      // AppErrors carry the import's own messages (line numbers, never keys); anything else is a bug.
      if (isAppError(err)) send({ type: 'failed', code: err.code, message: err.message });
      else send({ type: 'failed', code: 'INTERNAL', message: `${job.source}: the reader thread failed: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}` });
    }
  }
}

let current: FileRead | undefined;
port.on('message', (message: ReaderMessage) => {
  if (message.type === 'start') {
    current = new FileRead(message.job);
    void current.run();
  } else if (current === undefined) throw new Error(`a '${message.type}' message before 'start'`);
  else current.take(message);
});
