/**
 * The reader thread of a subject import: parses the file (readSubjectFile) and checks every
 * record (checkRecord) off the main thread, which meanwhile stages the rows it gets back (the
 * protocol is in src/subjects/read-off-thread.ts). It never logs: records hold subject keys.
 *
 * Messages in:  {type: 'chunk', data} | {type: 'end'} | {type: 'error', message, code} | {type: 'ack'}
 * Messages out: {type: 'credit'} (a chunk was taken) | {type: 'batch', ...PackedBatch} |
 *               {type: 'done'} | {type: 'failed', code, message}
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Readable } from 'node:stream';
import { readSubjectFile } from './parse.js';
import { checkRecord, eserviceResolver } from './check.js';
import { CheckedBatchWriter } from './checked-batch.js';
import { isAppError } from '../errors.js';
import type { ReaderMessage, ReadJob, ReaderReply } from './read-off-thread.js';

/** Items per batch sent back. */
const BATCH_ITEMS = 2048;
/** Batches sent and not yet taken by the import: beyond this, reading waits. */
const BATCHES_IN_FLIGHT = 2;

const port = parentPort!;
const job = workerData as ReadJob;
const send = (reply: ReaderReply, transfer?: ArrayBuffer[]): void => port.postMessage(reply, transfer);

// The input, as the main thread reads it: a chunk is taken only when the parser asks for one
// (objectMode with a high-water mark of 1: no buffering here beyond a chunk), and each taken
// chunk gives the main thread a credit to send another.
const queued: (Buffer | string)[] = [];
let ended = false;
let wanting = false;
const input = new Readable({
  objectMode: true,
  highWaterMark: 1,
  read() {
    wanting = true;
    feed();
  },
});
function feed(): void {
  while (wanting && queued.length > 0) {
    const chunk = queued.shift()!;
    send({ type: 'credit' });
    wanting = input.push(chunk);
  }
  if (!wanting) return;
  if (ended) {
    wanting = false;
    input.push(null);
  } else {
    // Starved: what is checked so far goes now rather than when a batch is full (a slow stdin).
    flushIfFree();
  }
}

const writer = new CheckedBatchWriter();
let inFlight = 0;
let acked: (() => void) | undefined;

function flushIfFree(): void {
  if (writer.count > 0 && inFlight < BATCHES_IN_FLIGHT) flush();
}
function flush(): void {
  const batch = writer.take();
  inFlight++;
  send({ type: 'batch', ...batch }, [batch.ints.buffer as ArrayBuffer]);
}

port.on('message', (message: ReaderMessage) => {
  switch (message.type) {
    case 'chunk':
      queued.push(typeof message.data === 'string' ? message.data : Buffer.from(message.data.buffer, message.data.byteOffset, message.data.byteLength));
      feed();
      break;
    case 'end':
      ended = true;
      feed();
      break;
    case 'error':
      // The parsers turn the input's error into the import's message (parse.ts inputError).
      input.destroy(Object.assign(new Error(message.message), message.code === undefined ? {} : { code: message.code }));
      break;
    case 'ack': {
      inFlight--;
      const wake = acked;
      acked = undefined;
      wake?.();
      break;
    }
  }
});

async function run(): Promise<void> {
  const rules = { validate: job.validate, fileTenant: job.fileTenant, replace: job.replace };
  const resolve = eserviceResolver(job.eservices);
  try {
    for await (const item of readSubjectFile(input, job.format, job.source)) {
      if (item.kind === 'problem') writer.add(item);
      else {
        const row = checkRecord(item, rules, resolve);
        writer.add('reason' in row ? { kind: 'rejected', row } : { kind: 'staged', row });
      }
      if (writer.count >= BATCH_ITEMS) {
        while (inFlight >= BATCHES_IN_FLIGHT) await new Promise<void>((resolve) => (acked = resolve));
        flush();
      }
    }
    if (writer.count > 0) flush();
    send({ type: 'done' });
  } catch (err) {
    // AppErrors carry the import's own messages (line numbers, never keys); anything else is a bug.
    if (isAppError(err)) send({ type: 'failed', code: err.code, message: err.message });
    else send({ type: 'failed', code: 'INTERNAL', message: `${job.source}: the reader thread failed: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}` });
  }
}

void run();
