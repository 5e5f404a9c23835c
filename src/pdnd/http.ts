import { createHash } from 'node:crypto';
import { request, type Dispatcher } from 'undici';
import { exchangeDeadline } from '../deadline.js';

/** Bounded retries with exponential backoff and full jitter (p-retry's `randomize`). */
export interface RetryPolicy {
  /** Retries after the first attempt. */
  retries: number;
  minTimeoutMs: number;
  maxTimeoutMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { retries: 3, minTimeoutMs: 250, maxTimeoutMs: 4000 };

export function pRetryOptions(policy: RetryPolicy): { retries: number; minTimeout: number; maxTimeout: number; factor: number; randomize: boolean } {
  return { retries: policy.retries, minTimeout: policy.minTimeoutMs, maxTimeout: policy.maxTimeoutMs, factor: 2, randomize: true };
}

const retryNow = new WeakSet<object>();

/** Marks an error as worth retrying at once (inside the p-retry loop of one request). */
export function transient<E extends Error>(err: E): E {
  retryNow.add(err);
  return err;
}

export function isTransient(err: unknown): boolean {
  return typeof err === 'object' && err !== null && retryNow.has(err);
}

export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Body as text, cut at maxBodyBytes. */
  text: string;
  truncated: boolean;
}

/** A request that got no HTTP answer: connection refused/reset, DNS, timeout, aborted body. */
export class NetworkFailure extends Error {
  /** The server's TLS certificate was refused: retrying the same request cannot help. */
  readonly certificate: boolean;
  constructor(
    readonly what: string,
    readonly timedOut: boolean,
    options?: { cause?: unknown },
  ) {
    super(what, options);
    this.name = 'NetworkFailure';
    this.certificate = isCertificateFailure(options?.cause);
  }
}

/** The codes OpenSSL and Node give a certificate they cannot verify (untrusted CA, expired, another host name). */
const CERTIFICATE_CODE = /CERT|^UNABLE_TO_|^INVALID_CA$|^HOSTNAME_MISMATCH$|^PATH_LENGTH_EXCEEDED$|^INVALID_PURPOSE$/;

/** Whether `err` (or what caused it) is a TLS certificate verification failure. */
export function isCertificateFailure(err: unknown): boolean {
  let current: unknown = err;
  for (let depth = 0; depth < 4 && typeof current === 'object' && current !== null; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && CERTIFICATE_CODE.test(code)) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/** What an operator does about a refused certificate of PDND, the hub or a producer. */
export const PRIVATE_CA_HINT = 'certificate not trusted; a private CA goes in NODE_EXTRA_CA_CERTS';

export interface HttpRequestOptions {
  method: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  /** Bounds the whole exchange, headers and body. */
  timeoutMs: number;
  maxBodyBytes?: number;
  dispatcher?: Dispatcher;
  /** Ends the exchange early (shutdown); the failure then says "aborted", not "timed out". */
  signal?: AbortSignal;
}

/**
 * One HTTP exchange with undici, returning status and body text or throwing NetworkFailure.
 * The URL is not put in NetworkFailure messages by this function: callers say what they called.
 */
export async function httpRequest(url: string, options: HttpRequestOptions): Promise<HttpAnswer> {
  const deadline = exchangeDeadline(options.timeoutMs, options.signal);
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
  try {
    const res = await request(url, {
      method: options.method,
      headers: options.headers,
      body: options.body,
      signal: deadline.signal,
      ...(options.dispatcher ? { dispatcher: options.dispatcher } : {}),
    });
    const chunks: Buffer[] = [];
    let size = 0;
    let truncated = false;
    for await (const chunk of res.body) {
      const buf = chunk as Buffer;
      if (size + buf.length > maxBodyBytes) {
        chunks.push(buf.subarray(0, maxBodyBytes - size));
        truncated = true;
        res.body.destroy();
        break;
      }
      chunks.push(buf);
      size += buf.length;
    }
    return { status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8'), truncated };
  } catch (err) {
    if (options.signal?.aborted) throw new NetworkFailure('aborted', false, { cause: err });
    if (deadline.expired) throw new NetworkFailure(`timed out after ${options.timeoutMs} ms`, true, { cause: err });
    const code = (err as { code?: string }).code;
    const hint = isCertificateFailure(err) ? ` (${PRIVATE_CA_HINT})` : '';
    throw new NetworkFailure(`network error ${code ?? (err as Error).name ?? 'unknown'}${hint}`, false, { cause: err });
  } finally {
    deadline.dispose();
  }
}

/**
 * A response body that must be a JSON object. `bad` names what is wrong; the parser's own
 * message is dropped because it quotes the body (which may hold a seed or a token).
 */
export function parseJsonObject(text: string, bad: (what: string) => Error): Record<string, unknown> {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw bad('not JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw bad('not a JSON object');
  return body as Record<string, unknown>;
}

export interface Problem {
  correlationId: string | undefined;
  codes: string[] | undefined;
}

/**
 * The non-secret identifiers of an application/problem+json body (PDND, Signal Hub, GovWay).
 * Anything else in the body is ignored: it is never echoed into errors.
 */
export function parseProblem(text: string): Problem {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { correlationId: undefined, codes: undefined };
  }
  if (typeof body !== 'object' || body === null) return { correlationId: undefined, codes: undefined };
  const record = body as Record<string, unknown>;
  const rawId = record.correlationId ?? record.correlation_id ?? record.govway_id;
  const correlationId = typeof rawId === 'string' && /^[\w.:-]{1,128}$/.test(rawId) ? rawId : undefined;
  let codes: string[] | undefined;
  if (Array.isArray(record.errors)) {
    codes = record.errors
      .map((e) => (typeof e === 'object' && e !== null ? (e as Record<string, unknown>).code : undefined))
      .filter((c): c is string => typeof c === 'string' && /^[\w.-]{1,32}$/.test(c));
    if (codes.length === 0) codes = undefined;
  }
  return { correlationId, codes };
}

/** Identifies a secret (voucher, JWS) in logs without revealing it: first 8 hex of SHA-256. */
export function fingerprint(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex').slice(0, 8);
}
