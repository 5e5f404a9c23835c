import pRetry from 'p-retry';
import type { Dispatcher } from 'undici';
import type { EServiceConfig } from '../config/types.js';
import { setTimeout as delay } from 'node:timers/promises';
import { AppError, isAppError, retryLogFields } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { TRACKING_EVIDENCE_HEADER } from '../pdnd/audit.js';
import { DPOP_HEADER, requestedDpopNonce } from '../pdnd/dpop.js';
import { DEFAULT_RETRY, NetworkFailure, httpRequest, type HttpAnswer, isTransient, parseJsonObject, parseProblem, pRetryOptions, transient, type RetryPolicy } from '../pdnd/http.js';
import { withVoucher, type Voucher, type VoucherProvider } from '../pdnd/vouchers.js';
import { resolveAlgorithm } from './algorithms.js';
import { seedFingerprint } from './pseudonym.js';
import { parseRetryAfter } from '../retry-after.js';

/** A producer's crypto info (SPEC §6). `seed` is a secret: log `fingerprint` instead. */
export interface CryptoInfo {
  seed: string;
  /** As the producer sent it: `${algorithm}` in recipes expands to this exact string. */
  cryptoHashFunction: string;
  /** First 8 hex of SHA-256(seed). */
  fingerprint: string;
  /** Id of the SEEDUPDATE that introduced this seed (0 = first seed), when the producer says. */
  signalId: number | undefined;
}

export interface CryptoInfoClientOptions {
  vouchers: VoucherProvider;
  /** Bounds one HTTP exchange (`crypto.request_timeout_ms`). */
  timeoutMs: number;
  retry?: RetryPolicy;
  logger?: Logger;
  dispatcher?: Dispatcher;
}

/** Crypto-info bodies are a few hundred bytes; anything far larger is not one. */
const MAX_BODY_BYTES = 64 * 1024;
/**
 * A 429 with Retry-After is the producer asking for a pause, not a failure: its waits do not use
 * up the retries, but one fetch accepts at most this much waiting (and this many 429s) in all.
 */
export const MAX_RATE_LIMIT_WAIT_MS = 60_000;
const MAX_RATE_LIMIT_ANSWERS = 20;

/** Per fetch: the 429 waits so far. */
interface RateLimitWaits {
  waitedMs: number;
  answers: number;
}

/**
 * GETs a producer's "pseudonymization" operation with an e-service voucher (plus the audit
 * header when the e-service requires it), optionally `?signalId=S` for a past seed.
 * 5xx, 429, timeouts and network errors are retried; a 429's Retry-After is waited out before
 * the next request (within MAX_RATE_LIMIT_WAIT_MS); a 401 refreshes the voucher once. `signal`
 * (shutdown) ends a request, a retry wait or a Retry-After wait at once with SHUTTING_DOWN.
 * Response bodies hold the seed, so no error ever quotes one.
 */
export class CryptoInfoClient {
  private readonly vouchers: VoucherProvider;
  private readonly timeoutMs: number;
  private readonly retry: RetryPolicy;
  private readonly logger: Logger;
  private readonly dispatcher: Dispatcher | undefined;
  /** Per producer origin, the last `DPoP-Nonce` it sent: later proofs carry it from the first try. */
  private readonly dpopNonces = new Map<string, string>();

  constructor(options: CryptoInfoClientOptions) {
    this.vouchers = options.vouchers;
    this.timeoutMs = options.timeoutMs;
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.logger = options.logger ?? silentLogger;
    this.dispatcher = options.dispatcher;
  }

  async fetch(eservice: EServiceConfig, opts: { signalId?: number; signal?: AbortSignal } = {}): Promise<CryptoInfo> {
    const { signal } = opts;
    // An identity e-service (SPEC §8b) has no seed to fetch: asking is a bug of the caller.
    if (eservice.cryptoInfoUrl === null) throw new AppError('INTERNAL', `e-service ${eservice.name} (${eservice.id}) uses the identity recipe: it has no crypto info`);
    const url = new URL(eservice.cryptoInfoUrl);
    if (opts.signalId !== undefined) {
      if (!Number.isSafeInteger(opts.signalId) || opts.signalId < 0) {
        throw new AppError('INTERNAL', `crypto info requested for an invalid signalId (${String(opts.signalId)})`);
      }
      url.searchParams.set('signalId', String(opts.signalId));
    }
    const where = `crypto info of e-service ${eservice.name} (${eservice.id}) at ${url.origin}${url.pathname}${opts.signalId !== undefined ? `?signalId=${opts.signalId}` : ''}`;
    signal?.throwIfAborted();
    const waits: RateLimitWaits = { waitedMs: 0, answers: 0 };
    let info: CryptoInfo;
    try {
      info = await withVoucher(
        () => this.vouchers.eservice(eservice),
        (rejected) => this.vouchers.invalidate(rejected),
        (voucher) =>
          pRetry(() => this.attemptPacing(url, voucher, where, eservice, waits, signal), {
            ...pRetryOptions(this.retry),
            ...(signal ? { signal } : {}),
            shouldRetry: (err) => isTransient(err) && !signal?.aborted,
            onFailedAttempt: (err) => {
              if (err.retriesLeft > 0 && isTransient(err) && isAppError(err)) {
                this.logger.warn({ eservice: eservice.id, ...retryLogFields(err, err.attemptNumber, err.retriesLeft) }, 'crypto info request failed, retrying');
              }
            },
          }),
        (err) => isAppError(err) && err.code === 'CRYPTO_UNAUTHORIZED' && err.status === 401,
      );
    } catch (err) {
      if (signal?.aborted) throw new AppError('SHUTTING_DOWN', `${where}: aborted`, { cause: err, details: { eserviceId: eservice.id } });
      throw err;
    }
    this.logger.info(
      { eservice: eservice.id, seedFingerprint: info.fingerprint, cryptoHashFunction: info.cryptoHashFunction, ...(info.signalId !== undefined ? { seedSignalId: info.signalId } : {}), ...(opts.signalId !== undefined ? { requestedSignalId: opts.signalId } : {}) },
      'crypto info fetched',
    );
    return info;
  }

  /** One p-retry attempt: loops only over 429 answers that say how long to wait. */
  private async attemptPacing(url: URL, voucher: Voucher, where: string, eservice: EServiceConfig, waits: RateLimitWaits, signal: AbortSignal | undefined): Promise<CryptoInfo> {
    for (;;) {
      try {
        return await this.attempt(url, voucher, where, signal);
      } catch (err) {
        if (!isAppError(err) || err.status !== 429 || typeof err.details?.retryAfterMs !== 'number') throw err;
        const waitMs = err.details.retryAfterMs;
        waits.answers++;
        if (waits.waitedMs + waitMs > MAX_RATE_LIMIT_WAIT_MS || waits.answers > MAX_RATE_LIMIT_ANSWERS) {
          throw new AppError('CRYPTO_UNAVAILABLE', `${err.message}; gave up after ${waits.answers} rate-limited answer(s): waiting ${waitMs} ms more would exceed ${MAX_RATE_LIMIT_WAIT_MS} ms (${waits.waitedMs} ms already waited)`, {
            cause: err,
            status: 429,
            correlationId: err.correlationId,
            problemCodes: err.problemCodes,
            retryable: true,
          });
        }
        waits.waitedMs += waitMs;
        this.logger.warn({ eservice: eservice.id, status: 429, correlationId: err.correlationId, waitMs }, 'crypto info rate limited, waiting as Retry-After says');
        await delay(waitMs, undefined, signal ? { signal } : {});
      }
    }
  }

  private async attempt(url: URL, voucher: Voucher, where: string, signal: AbortSignal | undefined): Promise<CryptoInfo> {
    let answer = await this.send(url, voucher, where, signal, this.dpopNonces.get(url.origin));
    if (voucher.scheme === 'DPoP') {
      // RFC 9449 §9: a producer may demand a nonce; the request is repeated once with a new proof carrying it.
      const nonce = requestedDpopNonce(answer.status, answer.headers, answer.text);
      if (nonce !== undefined) {
        this.dpopNonces.set(url.origin, nonce);
        answer = await this.send(url, voucher, where, signal, nonce);
      }
    }
    return this.read(answer, where);
  }

  /** One GET with the voucher: `Bearer`, or `DPoP` plus a fresh proof (htm, htu, iat, jti, ath; SPEC §4b). */
  private async send(url: URL, voucher: Voucher, where: string, signal: AbortSignal | undefined, nonce: string | undefined): Promise<HttpAnswer> {
    const headers: Record<string, string> = { authorization: `${voucher.scheme ?? 'Bearer'} ${voucher.token}`, accept: 'application/json' };
    if (voucher.scheme === 'DPoP') {
      const key = await this.vouchers.dpop();
      // A nonce is only ever sent to the producer that issued it.
      headers[DPOP_HEADER] = await key.proof({ htm: 'GET', url: url.toString(), accessToken: voucher.token, ...(nonce !== undefined ? { nonce } : {}) });
    }
    if (voucher.trackingEvidence !== undefined) headers[TRACKING_EVIDENCE_HEADER] = voucher.trackingEvidence;
    try {
      return await httpRequest(url.toString(), { method: 'GET', headers, timeoutMs: this.timeoutMs, maxBodyBytes: MAX_BODY_BYTES, dispatcher: this.dispatcher, ...(signal ? { signal } : {}) });
    } catch (err) {
      if (err instanceof NetworkFailure) {
        const unavailable = new AppError('CRYPTO_UNAVAILABLE', `${where}: ${err.message}`, { retryable: true, cause: err });
        // A refused certificate is refused again at once: only the operator can fix it.
        throw err.certificate ? unavailable : transient(unavailable);
      }
      throw err;
    }
  }

  private read(answer: HttpAnswer, where: string): CryptoInfo {
    const { status } = answer;
    if (status >= 200 && status < 300) {
      if (answer.truncated) throw new AppError('CRYPTO_BAD_RESPONSE', `${where}: answered ${status} with a body larger than ${MAX_BODY_BYTES} bytes`, { status, retryable: true });
      return parseCryptoInfo(answer.text, where, status);
    }
    const problem = parseProblem(answer.text);
    const common = { status, correlationId: problem.correlationId, problemCodes: problem.codes };
    const ref = `HTTP ${status}${problem.correlationId ? `, correlationId ${problem.correlationId}` : ''}`;
    if (status === 404) {
      throw new AppError('CRYPTO_NOT_FOUND', `${where}: no crypto info (${ref}); for ?signalId this means the seed is unknown or purged`, { ...common, retryable: false });
    }
    if (status === 401 || status === 403) {
      throw new AppError('CRYPTO_UNAUTHORIZED', `${where}: the producer refused the e-service voucher (${ref}); check the purpose, its agreement, the audit settings and voucher_type (bearer or dpop)${dpopRefusal(answer.headers)}`, { ...common, retryable: false });
    }
    if (status === 429 || status >= 500) {
      const retryAfterMs = status === 429 ? parseRetryAfter(answer.headers['retry-after']) : undefined;
      throw transient(new AppError('CRYPTO_UNAVAILABLE', `${where}: ${ref}`, { ...common, retryable: true, ...(retryAfterMs !== undefined ? { details: { retryAfterMs } } : {}) }));
    }
    throw new AppError('CRYPTO_UNAVAILABLE', `${where}: unexpected ${ref}`, { ...common, retryable: false });
  }
}

/** Longest seed accepted (bytes of UTF-8). GovWay's seeds are tens of bytes. */
export const MAX_SEED_BYTES = 1024;

/**
 * `{seed, cryptoHashFunction, signalId?}` checked field by field. Unknown extra fields are
 * ignored (producers add their own); `signalId: null` counts as absent.
 */
export function parseCryptoInfo(text: string, where: string, status = 200): CryptoInfo {
  const bad = (what: string): AppError => new AppError('CRYPTO_BAD_RESPONSE', `${where}: answered ${status} with an invalid body: ${what}`, { status, retryable: true });
  const { seed, cryptoHashFunction, signalId } = parseJsonObject(text, bad);
  if (seed === undefined) throw bad('"seed" is missing');
  if (typeof seed !== 'string') throw bad(`"seed" is a ${jsonType(seed)}, expected a string`);
  if (seed.length === 0) throw bad('"seed" is empty');
  const seedBytes = Buffer.byteLength(seed, 'utf8');
  if (seedBytes > MAX_SEED_BYTES) {
    // Every subject's pseudonym hashes the seed: a 60 KB seed makes a reseed ~100x slower (ARCHITECTURE
    // invariant 8). The same answer will come back on a retry, so this is not retried.
    throw new AppError('CRYPTO_BAD_RESPONSE', `${where}: answered ${status} with a seed of ${seedBytes} bytes, longer than the ${MAX_SEED_BYTES} bytes accepted`, { status, retryable: false });
  }
  if (cryptoHashFunction === undefined) throw bad('"cryptoHashFunction" is missing');
  if (typeof cryptoHashFunction !== 'string') throw bad(`"cryptoHashFunction" is a ${jsonType(cryptoHashFunction)}, expected a string`);
  try {
    resolveAlgorithm(cryptoHashFunction);
  } catch (err) {
    if (isAppError(err)) throw new AppError('UNSUPPORTED_ALGORITHM', `${where}: ${err.message}`, { status, retryable: false });
    throw err;
  }
  let id: number | undefined;
  if (signalId !== undefined && signalId !== null) {
    if (typeof signalId !== 'number') throw bad(`"signalId" is a ${jsonType(signalId)}, expected an integer`);
    if (!Number.isSafeInteger(signalId) || signalId < 0) throw bad(`"signalId" ${signalId} is not a non-negative integer below 2^53`);
    id = signalId;
  }
  return { seed, cryptoHashFunction, fingerprint: seedFingerprint(seed), signalId: id };
}

/** The DPoP error a producer named in `WWW-Authenticate` (RFC 9449 §7.1), e.g. "; producer says invalid_dpop_proof". */
function dpopRefusal(headers: HttpAnswer['headers']): string {
  const www = headers['www-authenticate'];
  const challenge = Array.isArray(www) ? www.join(',') : (www ?? '');
  const error = /^\s*DPoP\b.*?error="?([a-z_]{1,40})"?/i.exec(challenge)?.[1];
  return error ? `; producer says ${error}` : '';
}

function jsonType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}
