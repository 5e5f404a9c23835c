import type { Writable } from 'node:stream';
import type { StdoutSinkConfig } from '../config/types.js';
import type { OutboxEvent } from '../events.js';
import type { OutboxRow } from '../store/outbox.js';
import { escapeForTerminal } from '../terminal.js';
import { ndjson, sinkFailed, type Sink } from './sink.js';

export interface StdoutSinkOptions {
  config: StdoutSinkConfig;
  /** Default process.stdout; tests pass their own stream. */
  stream?: Writable;
  maxBatchSize?: number;
}

/**
 * Writes NDJSON (for piping) or one short human line per event (`pretty`, the demo) to stdout.
 * A batch is confirmed once the stream took it (its write callback), which waits for a slow
 * reader. A reader that goes away (EPIPE) fails this sink only: the stream's 'error' event is
 * always listened to, since unheard it would end the whole process.
 */
export class StdoutSink implements Sink {
  readonly type = 'stdout';
  readonly name: string;
  readonly maxBatchSize: number;
  private readonly stream: Writable;
  private readonly format: StdoutSinkConfig['format'];
  private streamError: NodeJS.ErrnoException | undefined;
  private readonly onStreamError = (err: NodeJS.ErrnoException): void => {
    this.streamError ??= err;
  };

  constructor(options: StdoutSinkOptions) {
    this.name = options.config.name;
    this.format = options.config.format;
    this.stream = options.stream ?? process.stdout;
    this.maxBatchSize = options.maxBatchSize ?? 500;
    this.stream.on('error', this.onStreamError);
  }

  async deliver(batch: readonly OutboxRow[], signal: AbortSignal): Promise<void> {
    if (batch.length === 0) return;
    const text = this.format === 'pretty' ? batch.map((r) => `${prettyLine(r)}\n`).join('') : ndjson(batch);
    await writeAccepted(this.stream, text, signal).catch((err: unknown) => {
      const reason = this.streamError ?? (err as NodeJS.ErrnoException);
      throw sinkFailed(this.name, `cannot write to stdout: ${reason.code ?? reason.message}`, { cause: err });
    });
  }

  async close(): Promise<void> {
    // stdout belongs to the process: never closed here.
    this.stream.off('error', this.onStreamError);
  }
}

/** Resolves once the stream has taken `text` (for a slow reader, once it read on); rejects on a write error or abort. */
function writeAccepted(stream: Writable, text: string, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (stream.destroyed || stream.writableEnded) return reject(new Error('stream closed'));
    const onAbort = (): void => reject(new Error('abandoned on shutdown'));
    signal.addEventListener('abort', onAbort, { once: true });
    stream.write(text, (err) => {
      signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve();
    });
  });
}

/**
 * `2024-05-01T10:00:00.000Z  Anagrafe  UPDATE domicile  ref=PR-1  #42` and, for a resync,
 * `... Anagrafe  RESYNC REQUIRED signals 10..20 (seed-history-missing)`. Never the subject key.
 * Control characters in any field (objectType is the producer's choice) are escaped: see
 * src/terminal.ts.
 */
export function prettyLine(row: OutboxRow): string {
  return escapeForTerminal(rawPrettyLine(row));
}

function rawPrettyLine(row: OutboxRow): string {
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
