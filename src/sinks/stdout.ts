import type { Writable } from 'node:stream';
import type { StdoutSinkConfig } from '../config/types.js';
import type { OutboxEvent } from '../events.js';
import type { OutboxRow } from '../store/outbox.js';
import { ndjson, sinkFailed, type Sink } from './sink.js';

export interface StdoutSinkOptions {
  config: StdoutSinkConfig;
  /** Default process.stdout; tests pass their own stream. */
  stream?: Writable;
  maxBatchSize?: number;
}

/**
 * Writes NDJSON (for piping) or one short human line per event (`pretty`, the demo) to stdout.
 * A batch is confirmed once the stream took it, waiting for 'drain' when the reader is slow.
 */
export class StdoutSink implements Sink {
  readonly type = 'stdout';
  readonly name: string;
  readonly maxBatchSize: number;
  private readonly stream: Writable;
  private readonly format: StdoutSinkConfig['format'];

  constructor(options: StdoutSinkOptions) {
    this.name = options.config.name;
    this.format = options.config.format;
    this.stream = options.stream ?? process.stdout;
    this.maxBatchSize = options.maxBatchSize ?? 500;
  }

  async deliver(batch: readonly OutboxRow[], signal: AbortSignal): Promise<void> {
    if (batch.length === 0) return;
    const text = this.format === 'pretty' ? batch.map((r) => `${prettyLine(r)}\n`).join('') : ndjson(batch);
    await writeWithBackpressure(this.stream, text, signal).catch((err: unknown) => {
      throw sinkFailed(this.name, `cannot write to stdout: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    });
  }

  async close(): Promise<void> {
    // stdout belongs to the process: never closed here.
  }
}

function writeWithBackpressure(stream: Writable, text: string, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (stream.destroyed || stream.writableEnded) return reject(new Error('stream closed'));
    const cleanup = (): void => {
      stream.off('drain', onDrain);
      stream.off('error', onError);
      signal.removeEventListener('abort', onAbort);
    };
    const onDrain = (): void => {
      cleanup();
      resolve();
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onAbort = (): void => {
      cleanup();
      reject(new Error('abandoned on shutdown'));
    };
    stream.on('error', onError);
    signal.addEventListener('abort', onAbort, { once: true });
    const flowing = stream.write(text, (err) => {
      if (err) onError(err);
    });
    if (flowing) {
      cleanup();
      resolve();
    } else {
      stream.once('drain', onDrain);
    }
  });
}

/**
 * `2024-05-01T10:00:00.000Z  Anagrafe  UPDATE domicile  ref=PR-1  #42` and, for a resync,
 * `... Anagrafe  RESYNC REQUIRED signals 10..20 (seed-history-missing)`. Never the subject key.
 */
export function prettyLine(row: OutboxRow): string {
  let event: OutboxEvent;
  try {
    event = JSON.parse(row.payload) as OutboxEvent;
  } catch {
    return `${new Date(row.createdAt).toISOString()}  ${row.eserviceId}  (unreadable event ${row.eventId})`;
  }
  if (event.type === 'resync-required') {
    return `${event.createdAt}  ${event.eserviceName}  RESYNC REQUIRED signals ${event.fromSignalId}..${event.toSignalId} (${event.reason})`;
  }
  const backfilled = event.backfilled ? '  (backfilled)' : '';
  return `${event.receivedAt}  ${event.eserviceName}  ${event.signalType} ${event.objectType}  ref=${event.subjectRef ?? '-'}  #${event.signalId}${backfilled}`;
}
