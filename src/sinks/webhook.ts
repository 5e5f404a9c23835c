import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import pRetry, { AbortError } from 'p-retry';
import { Agent, request } from 'undici';
import { AppError, isAppError, retryLogFields } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { WebhookSignatureScheme, WebhookSinkConfig } from '../config/types.js';
import type { OutboxRow } from '../store/outbox.js';
import { sleep } from './backoff.js';
import { parseRetryAfter } from '../retry-after.js';
import { exchangeDeadline } from '../deadline.js';
import { displayWebhookUrl } from '../url-display.js';
import { sinkFailed, sinkRejected, type Sink } from './sink.js';

export interface WebhookSinkOptions {
  config: WebhookSinkConfig;
  logger?: Logger;
  /** Backoff between attempts of one request (p-retry, randomized). */
  retryMinDelayMs?: number;
  retryMaxDelayMs?: number;
  /** Longest `Retry-After` waited inside one delivery; longer ones are left to the delivery loop. */
  maxRetryAfterMs?: number;
}

/**
 * POSTs events as JSON. One event per request is the event object itself; with batchSize > 1
 * the body is a JSON array (even of one event), so a receiver always sees one shape.
 *
 * Headers: `Idempotency-Key` is the event id for a single event and `<firstId>..<lastId>` for
 * an array (outbox order is fixed, so the same two ends always enclose the same events);
 * `X-Event-Ids` lists every id (left out beyond 4 KiB: about 90 events), `X-Event-Count` counts
 * them. With a secret file, `X-Signature: sha256=<hex HMAC-SHA256 of the body bytes>` (the
 * default) or the Standard Webhooks headers (signature = "standard-webhooks"), see
 * timestampedSignature.
 *
 * 2xx confirms. 408, 429, 5xx, timeouts and network errors are retried (backoff with jitter,
 * `Retry-After` honoured). Any other status is permanent (SINK_REJECTED): retrying the same
 * request cannot change the answer, so the sink stops instead of spinning.
 */
export class WebhookSink implements Sink {
  readonly type = 'webhook';
  readonly retriesItself = true;
  readonly name: string;
  readonly maxBatchSize: number;
  private readonly url: string;
  /** Scheme, host and a fingerprint of the path (which may hold a token), for messages: src/url-display.ts. */
  private readonly safeUrl: string;
  private readonly secret: KeyObject | undefined;
  private readonly scheme: WebhookSignatureScheme;
  private readonly agent: Agent;
  private readonly logger: Logger;

  constructor(private readonly options: WebhookSinkOptions) {
    const { config } = options;
    this.name = config.name;
    this.maxBatchSize = Math.max(1, config.batchSize);
    this.url = config.url;
    this.safeUrl = displayWebhookUrl(config.url);
    this.logger = (options.logger ?? silentLogger).child({ sink: config.name });
    this.scheme = config.signature ?? 'x-signature';
    if (this.scheme === 'standard-webhooks' && config.secretFile === undefined) {
      throw new AppError('CONFIG_INVALID', `sink "${config.name}": signature = "standard-webhooks" needs secret_file (a "whsec_…" secret)`);
    }
    this.secret = config.secretFile === undefined ? undefined : readSecret(config.name, config.secretFile, this.scheme);
    const ca = config.caFile === undefined ? undefined : readCa(config.name, config.caFile);
    // TLS verification is never switched off; a private CA is added to the public ones.
    this.agent = new Agent({
      keepAliveTimeout: 30_000,
      connect: ca === undefined ? undefined : { ca: [...tls.rootCertificates, ca] },
    });
  }

  /** The exact bytes POSTed for a batch: stored payloads, never re-serialized. */
  body(batch: readonly OutboxRow[]): string {
    if (this.options.config.batchSize <= 1 && batch.length === 1) return batch[0]!.payload;
    return `[${batch.map((r) => r.payload).join(',')}]`;
  }

  async deliver(batch: readonly OutboxRow[], signal: AbortSignal): Promise<void> {
    if (batch.length === 0) return;
    const body = this.body(batch);
    const headers = this.headers(batch, body);
    const { config } = this.options;
    try {
      await pRetry(
        async () => {
          try {
            // Standard Webhooks signs a timestamp: each attempt is signed afresh, so a retry
            // minutes later still falls inside the receiver's tolerance window.
            await this.post(body, { ...headers, ...this.timestampedSignature(headers['idempotency-key']!, body) }, signal);
          } catch (err) {
            // p-retry rethrows AbortError's original error without further attempts.
            if (isAppError(err) && !err.retryable) throw new AbortError(err);
            throw err;
          }
        },
        {
          retries: config.maxRetries,
          factor: 2,
          minTimeout: this.options.retryMinDelayMs ?? 500,
          maxTimeout: this.options.retryMaxDelayMs ?? 30_000,
          randomize: true,
          signal,
          onFailedAttempt: async (err) => {
            this.logger.warn({ ...retryLogFields(err, err.attemptNumber, err.retriesLeft), err: { code: (err as Partial<AppError>).code, status: (err as Partial<AppError>).status, message: err.message } }, 'webhook attempt failed');
            const retryAfterMs = retryAfterOf(err);
            if (retryAfterMs !== undefined && err.retriesLeft > 0) {
              await sleep(Math.min(retryAfterMs, this.options.maxRetryAfterMs ?? 300_000), signal);
            }
          },
        },
      );
    } catch (err) {
      if (signal.aborted) throw sinkFailed(this.name, `delivery to ${this.safeUrl} abandoned on shutdown`);
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  private headers(batch: readonly OutboxRow[], body: string): Record<string, string> {
    const first = batch[0]!.eventId;
    const last = batch[batch.length - 1]!.eventId;
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'idempotency-key': batch.length === 1 ? first : `${first}..${last}`,
      'x-event-count': String(batch.length),
      'user-agent': 'signalhub-sync',
    };
    const ids = batch.map((r) => r.eventId).join(',');
    // Servers refuse oversized headers (Node: 16 KiB in all, as a 431 that would stop the sink):
    // a long list is left out; the ids are in the body anyway.
    if (ids.length <= MAX_EVENT_IDS_HEADER) headers['x-event-ids'] = ids;
    if (this.secret !== undefined && this.scheme === 'x-signature') headers['x-signature'] = `sha256=${createHmac('sha256', this.secret).update(body, 'utf8').digest('hex')}`;
    return headers;
  }

  /**
   * Standard Webhooks (https://www.standardwebhooks.com/): `webhook-id` (the Idempotency-Key:
   * the same on every redelivery), `webhook-timestamp` (seconds), `webhook-signature:
   * v1,<base64 HMAC-SHA256 of "id.timestamp.body">`. The receiver refuses stale timestamps,
   * which is what makes a captured request useless later.
   */
  private timestampedSignature(id: string, body: string, now = Date.now()): Record<string, string> {
    if (this.secret === undefined || this.scheme !== 'standard-webhooks') return {};
    const timestamp = String(Math.floor(now / 1000));
    const signature = createHmac('sha256', this.secret).update(`${id}.${timestamp}.${body}`, 'utf8').digest('base64');
    return { 'webhook-id': id, 'webhook-timestamp': timestamp, 'webhook-signature': `v1,${signature}` };
  }

  private async post(body: string, headers: Record<string, string>, stop: AbortSignal): Promise<void> {
    const { timeoutMs } = this.options.config;
    let status: number;
    let retryAfter: string | string[] | undefined;
    let response: string | undefined;
    const deadline = exchangeDeadline(timeoutMs, stop);
    try {
      const res = await request(this.url, {
        method: 'POST',
        headers,
        body,
        dispatcher: this.agent,
        signal: deadline.signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      status = res.statusCode;
      retryAfter = res.headers['retry-after'];
      // A refusal's answer usually says why (a validation message): kept, clipped, for the
      // dead letter. Other answers are read to the end so the keep-alive connection is reused.
      if (isPermanentStatus(status)) response = await clippedText(res.body, MAX_RESPONSE_BYTES);
      else await res.body.dump();
    } catch (err) {
      if (stop.aborted) throw sinkFailed(this.name, `delivery to ${this.safeUrl} abandoned on shutdown`, { cause: err });
      const timedOut = deadline.expired || /TIMEOUT/.test(String((err as { code?: unknown }).code));
      const reason = timedOut ? `no answer within ${timeoutMs} ms` : `${(err as { code?: string }).code ?? (err as Error).name}: ${(err as Error).message}`;
      throw sinkFailed(this.name, `POST ${this.safeUrl} failed: ${reason}`, { cause: err });
    } finally {
      deadline.dispose();
    }
    if (status >= 200 && status < 300) return;
    if (status === 408 || status === 429 || status >= 500) {
      const retryAfterMs = parseRetryAfter(retryAfter);
      throw sinkFailed(this.name, `POST ${this.safeUrl} answered HTTP ${status}`, {
        status,
        details: retryAfterMs === undefined ? undefined : { retryAfterMs },
      });
    }
    const next = this.options.config.onReject === 'dead-letter' ? 'they are set aside as dead letters ("signalhub-sync sinks dead-letters list")' : `fix it, then run "signalhub-sync sinks retry ${this.name}"`;
    throw sinkRejected(this.name, `POST ${this.safeUrl} answered HTTP ${status}: the receiver refuses these events; ${next}`, { status, response });
  }
}

const MAX_EVENT_IDS_HEADER = 4096;
/** What is kept of a refusal's answer. */
const MAX_RESPONSE_BYTES = 1024;
/** Beyond this much an answer is not read on: the connection is closed instead. */
const MAX_RESPONSE_READ_BYTES = 64 * 1024;

function isPermanentStatus(status: number): boolean {
  return status >= 400 && status < 500 && status !== 408 && status !== 429;
}

/** The first `max` bytes of a body as text (a split character at the end is dropped). */
async function clippedText(body: AsyncIterable<Buffer> & { destroy(): void }, max: number): Promise<string> {
  const kept: Buffer[] = [];
  let keptBytes = 0;
  let read = 0;
  for await (const chunk of body) {
    read += chunk.length;
    if (keptBytes < max) {
      const part = chunk.subarray(0, max - keptBytes);
      kept.push(part);
      keptBytes += part.length;
    }
    if (read > MAX_RESPONSE_READ_BYTES) {
      body.destroy();
      break;
    }
  }
  return Buffer.concat(kept).toString('utf8').replace(/\uFFFD$/, '');
}

/** `Retry-After` carried by a failed attempt, in ms. */
export function retryAfterOf(err: unknown): number | undefined {
  const value = isAppError(err) ? err.details?.retryAfterMs : undefined;
  return typeof value === 'number' ? value : undefined;
}

/**
 * The signing key from secret_file. Exactly one final line ending (LF or CRLF) is removed, since
 * `echo` and editors add one; nothing else is trimmed (README, "Verifying webhook signatures").
 * x-signature: the key is the remaining text's UTF-8 bytes. standard-webhooks: the text must be
 * `whsec_` + base64, and the key is the decoded bytes, as every Standard Webhooks library does.
 */
function readSecret(sink: string, file: string, scheme: WebhookSignatureScheme): KeyObject {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new AppError('CONFIG_INVALID', `sink "${sink}": secret_file ${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  // Editors and `echo` add a final newline that is not part of the secret.
  const secret = text.replace(/\r?\n$/, '');
  if (secret === '') throw new AppError('CONFIG_INVALID', `sink "${sink}": secret_file ${file} is empty`);
  if (scheme === 'x-signature') return createSecretKey(Buffer.from(secret, 'utf8'));
  const encoded = secret.startsWith('whsec_') ? secret.slice('whsec_'.length) : undefined;
  const key = encoded === undefined || !/^[A-Za-z0-9+/]+={0,2}$/.test(encoded) ? undefined : Buffer.from(encoded, 'base64');
  // The spec's secrets are 24 to 64 random bytes; a shorter key is a mistake, not a secret.
  if (key === undefined || key.length < 24) {
    throw new AppError('CONFIG_INVALID', `sink "${sink}": secret_file ${file} is not a Standard Webhooks secret: expected "whsec_" followed by the base64 of 24 to 64 random bytes (e.g. "whsec_$(openssl rand -base64 32)")`);
  }
  return createSecretKey(key);
}

function readCa(sink: string, file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new AppError('CONFIG_INVALID', `sink "${sink}": ca_file ${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}
