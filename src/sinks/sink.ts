import { AppError, isAppError } from '../errors.js';
import type { OutboxRow } from '../store/outbox.js';

/**
 * A destination for outbox events. `deliver` resolves only when the destination has durably
 * accepted the whole batch (HTTP 2xx, fsync, exit 0); the caller advances the sink's position
 * after that and never before. A rejection is a SINK_FAILED (retryable: the same batch is
 * offered again after a backoff) or a SINK_REJECTED (permanent: the sink stops until an
 * operator runs `sinks retry`, or with on_reject = "dead-letter" the event is set aside).
 */
export interface Sink {
  readonly name: string;
  readonly type: string;
  /** Largest batch the sink takes in one `deliver` (the delivery loop reads no more). */
  readonly maxBatchSize: number;
  /** The sink retries inside `deliver` already (webhook: max_retries), so `drain` tries a batch once. */
  readonly retriesItself?: boolean;
  /** `signal` aborts an in-flight delivery on shutdown; the batch then counts as not delivered. */
  deliver(batch: readonly OutboxRow[], signal: AbortSignal): Promise<void>;
  /** SIGHUP: reopen files (logrotate). */
  reopen?(): void;
  close(): Promise<void>;
}

export function sinkFailed(sink: string, message: string, options: { cause?: unknown; status?: number; details?: Record<string, unknown> } = {}): AppError {
  return new AppError('SINK_FAILED', `sink "${sink}": ${message}`, { ...options, retryable: true });
}

/**
 * A permanent refusal. `response` (the receiver's answer, clipped) is kept for the dead-letter
 * table only: it is not a log field, since a receiver may echo anything in it.
 */
export class SinkRejectedError extends AppError {
  readonly response: string | undefined;
  constructor(message: string, options: { cause?: unknown; status?: number; details?: Record<string, unknown>; response?: string }) {
    const { response, ...rest } = options;
    super('SINK_REJECTED', message, { ...rest, retryable: false });
    this.response = response;
  }
}

export function sinkRejected(sink: string, message: string, options: { cause?: unknown; status?: number; details?: Record<string, unknown>; response?: string } = {}): SinkRejectedError {
  return new SinkRejectedError(`sink "${sink}": ${message}`, options);
}

/** Permanent failures stop a sink; anything else (including unexpected errors) is retried. */
export function isPermanentSinkError(err: unknown): boolean {
  return isAppError(err) && err.code === 'SINK_REJECTED';
}

/** NDJSON of a batch: each payload exactly as stored, one per line. */
export function ndjson(batch: readonly OutboxRow[]): string {
  let out = '';
  for (const row of batch) out += `${row.payload}\n`;
  return out;
}
