import pRetry from 'p-retry';
import type { Dispatcher } from 'undici';
import type { EServiceConfig } from '../config/types.js';
import { AppError, isAppError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { TRACKING_EVIDENCE_HEADER } from '../pdnd/audit.js';
import { DEFAULT_RETRY, NetworkFailure, httpRequest, isTransient, parseJsonObject, parseProblem, pRetryOptions, transient, type RetryPolicy } from '../pdnd/http.js';
import { withVoucher, type Voucher, type VoucherProvider } from '../pdnd/vouchers.js';
import { resolveAlgorithm } from './algorithms.js';
import { seedFingerprint } from './pseudonym.js';

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
 * GETs a producer's "pseudonymization" operation with an e-service voucher (plus the audit
 * header when the e-service requires it), optionally `?signalId=S` for a past seed.
 * 5xx, 429, timeouts and network errors are retried; a 401 refreshes the voucher once.
 * Response bodies hold the seed, so no error ever quotes one.
 */
export class CryptoInfoClient {
  private readonly vouchers: VoucherProvider;
  private readonly timeoutMs: number;
  private readonly retry: RetryPolicy;
  private readonly logger: Logger;
  private readonly dispatcher: Dispatcher | undefined;

  constructor(options: CryptoInfoClientOptions) {
    this.vouchers = options.vouchers;
    this.timeoutMs = options.timeoutMs;
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.logger = options.logger ?? silentLogger;
    this.dispatcher = options.dispatcher;
  }

  async fetch(eservice: EServiceConfig, opts: { signalId?: number } = {}): Promise<CryptoInfo> {
    const url = new URL(eservice.cryptoInfoUrl);
    if (opts.signalId !== undefined) {
      if (!Number.isSafeInteger(opts.signalId) || opts.signalId < 0) {
        throw new AppError('INTERNAL', `crypto info requested for an invalid signalId (${String(opts.signalId)})`);
      }
      url.searchParams.set('signalId', String(opts.signalId));
    }
    const where = `crypto info of e-service ${eservice.name} (${eservice.id}) at ${url.origin}${url.pathname}${opts.signalId !== undefined ? `?signalId=${opts.signalId}` : ''}`;
    const info = await withVoucher(
      () => this.vouchers.eservice(eservice),
      (rejected) => this.vouchers.invalidate(rejected),
      (voucher) =>
        pRetry(() => this.attempt(url, voucher, where), {
          ...pRetryOptions(this.retry),
          shouldRetry: (err) => isTransient(err),
          onFailedAttempt: (err) => {
            if (err.retriesLeft > 0 && isTransient(err) && isAppError(err)) {
              this.logger.warn({ eservice: eservice.id, status: err.status, correlationId: err.correlationId, attempt: err.attemptNumber }, 'crypto info request failed, retrying');
            }
          },
        }),
      (err) => isAppError(err) && err.code === 'CRYPTO_UNAUTHORIZED' && err.status === 401,
    );
    this.logger.info(
      { eservice: eservice.id, seedFingerprint: info.fingerprint, cryptoHashFunction: info.cryptoHashFunction, ...(info.signalId !== undefined ? { seedSignalId: info.signalId } : {}), ...(opts.signalId !== undefined ? { requestedSignalId: opts.signalId } : {}) },
      'crypto info fetched',
    );
    return info;
  }

  private async attempt(url: URL, voucher: Voucher, where: string): Promise<CryptoInfo> {
    const headers: Record<string, string> = { authorization: `Bearer ${voucher.token}`, accept: 'application/json' };
    if (voucher.trackingEvidence !== undefined) headers[TRACKING_EVIDENCE_HEADER] = voucher.trackingEvidence;
    let answer;
    try {
      answer = await httpRequest(url.toString(), { method: 'GET', headers, timeoutMs: this.timeoutMs, maxBodyBytes: MAX_BODY_BYTES, dispatcher: this.dispatcher });
    } catch (err) {
      if (err instanceof NetworkFailure) throw transient(new AppError('CRYPTO_UNAVAILABLE', `${where}: ${err.message}`, { retryable: true }));
      throw err;
    }
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
      throw new AppError('CRYPTO_UNAUTHORIZED', `${where}: the producer refused the e-service voucher (${ref}); check the purpose, its agreement and the audit settings`, { ...common, retryable: false });
    }
    if (status === 429 || status >= 500) {
      throw transient(new AppError('CRYPTO_UNAVAILABLE', `${where}: ${ref}`, { ...common, retryable: true }));
    }
    throw new AppError('CRYPTO_UNAVAILABLE', `${where}: unexpected ${ref}`, { ...common, retryable: false });
  }
}

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

function jsonType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}
