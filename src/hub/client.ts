import pRetry from 'p-retry';
import { Agent, request, type Dispatcher } from 'undici';
import { AppError, isAppError, retryLogFields } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { HubConfig } from '../config/types.js';
import { classifyStatus, correlationIdOf, httpError, isTimeout, isVoucherLacksClaim, networkFailureDescription, parseProblem, VOUCHER_LACKS_CLAIM_CODE, type HttpFailure } from './errors.js';
import { parseRateLimitHeaders, type RateLimiter, type RateLimitInfo } from './rate-limiter.js';
import { parseRetryAfter } from '../retry-after.js';
import { PRIVATE_CA_HINT, isCertificateFailure } from '../pdnd/http.js';
import { exchangeDeadline } from '../deadline.js';
import { MAX_PULL_BODY_BYTES, parsePullBody } from './validate.js';
import { MAX_PAGE_SIZE, MIN_PAGE_SIZE, type Page, type VoucherSource } from './types.js';

/**
 * The Signal Hub pull client (SPEC §3): one GET per call, every answer of the status table
 * handled, every page validated before it is returned. Retries live here, not in callers:
 * - 5xx, 408, network errors, timeouts: p-retry, exponential with jitter, then HUB_UNAVAILABLE;
 * - 429: the organization's budget pauses for Retry-After, then the same request again, as long
 *   as the waits of this call stay within `maxRateLimitWaitMs`; then HUB_RATE_LIMITED;
 * - 401: one new voucher and one more try, then HUB_UNAUTHORIZED;
 * - 500 code 9990 (the voucher lacks a claim, SPEC §10): one new voucher first (shared with the
 *   401 refresh: one per call), then transient like any 500;
 * - 400 (and other 4xx), 403, malformed pages: thrown at once, never retried here.
 */
export interface HubClientOptions {
  /** `{pullBase}`, e.g. https://api.signalhub.interop.pagopa.it/1.0/pull; a trailing slash is ignored. */
  baseUrl: string;
  /** Default `size` of a pull, 1..100. */
  pageSize: number;
  requestTimeoutMs: number;
  /** Retries of one call on transient failures (the first attempt is not a retry). */
  maxRetries: number;
  maxRetryDelayMs: number;
  /** First retry delay before jitter; default min(250, maxRetryDelayMs). */
  minRetryDelayMs?: number;
  /** Total Retry-After waiting one call accepts before it gives up with HUB_RATE_LIMITED. */
  maxRateLimitWaitMs: number;
  vouchers: VoucherSource;
  /** The organization's shared budget: one instance per process. */
  rateLimiter: RateLimiter;
  metrics?: Metrics | undefined;
  logger?: Logger | undefined;
  /** An undici dispatcher to use (not closed by `close()`); default: a keep-alive Agent owned by the client. */
  dispatcher?: Dispatcher | undefined;
}

/** The client's options from the `[hub]` config section plus its collaborators. */
export function hubClientOptions(
  hub: HubConfig,
  deps: Pick<HubClientOptions, 'vouchers' | 'rateLimiter' | 'metrics' | 'logger' | 'dispatcher'>,
): HubClientOptions {
  return {
    baseUrl: hub.baseUrl,
    pageSize: hub.pageSize,
    requestTimeoutMs: hub.requestTimeoutMs,
    maxRetries: hub.maxRetries,
    maxRetryDelayMs: hub.maxRetryDelayMs,
    maxRateLimitWaitMs: hub.maxRateLimitWaitMs,
    ...deps,
  };
}

/** Used when a 429 carries neither Retry-After nor a usable reset time. */
export const DEFAULT_RATE_LIMIT_BACKOFF_MS = 1000;
/** Bounds the 429 loop of one call even when the hub sends `Retry-After: 0`. */
const MAX_RATE_LIMIT_RETRIES = 20;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  rateLimit: RateLimitInfo | undefined;
  /** The voucher the request carried (to invalidate it on a 401; never logged). */
  voucher: string;
}

interface CallTarget {
  path: string;
  /** For messages: `pull of e-service X from cursor 12`. */
  operation: string;
  /** Metric label. */
  eservice: string;
  eserviceId?: string;
}

/** Per-call state that outlives p-retry's attempts: a call refreshes its voucher once (401 or 500 9990), and its 429 waits add up. */
interface CallState {
  voucherRefreshed: boolean;
  rateLimitWaitedMs: number;
  rateLimitAnswers: number;
  /** When the call's first 429 arrived: waits in the budget (Remaining 0 until a reset) count too, not only Retry-After. */
  rateLimitedSince?: number;
}

export class HubClient {
  private readonly baseUrl: string;
  private readonly options: HubClientOptions;
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly logger: Logger;
  private readonly minRetryDelayMs: number;

  constructor(options: HubClientOptions) {
    checkPageSize(options.pageSize, 'hub.page_size');
    this.options = options;
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.logger = options.logger ?? silentLogger;
    this.minRetryDelayMs = Math.min(options.minRetryDelayMs ?? 250, options.maxRetryDelayMs);
    if (options.dispatcher) {
      this.dispatcher = options.dispatcher;
      this.ownsDispatcher = false;
    } else {
      // One keep-alive pool for the process's lifetime: per-request setup is what makes catch-up slow.
      this.dispatcher = new Agent({
        keepAliveTimeout: 30_000,
        keepAliveMaxTimeout: 600_000,
        headersTimeout: options.requestTimeoutMs,
        bodyTimeout: options.requestTimeoutMs,
        connect: { timeout: options.requestTimeoutMs },
      });
      this.ownsDispatcher = true;
    }
  }

  /**
   * One page of `eserviceId`'s signals with id > `cursor`. The page is valid as a whole or the
   * call throws: the caller's cursor never moves over a partial or malformed answer.
   * An empty page means "nothing more visible now", whatever its status (see validate.ts).
   */
  async pull(eserviceId: string, cursor: number, size: number = this.options.pageSize, signal?: AbortSignal): Promise<Page> {
    if (!Number.isSafeInteger(cursor) || cursor < 0) {
      throw new AppError('HUB_BAD_REQUEST', `Signal Hub pull of e-service ${eserviceId}: cursor ${cursor} is not a non-negative integer; not sent`);
    }
    checkPageSize(size, 'size');
    const target: CallTarget = {
      path: `/signals/${encodeURIComponent(eserviceId)}?signalId=${cursor}&size=${size}`,
      operation: `pull of e-service ${eserviceId} from cursor ${cursor}`,
      eservice: eserviceId,
      eserviceId,
    };
    const page = await this.call(target, signal, (answer, status) =>
      parsePullBody(answer.text, { eserviceId, cursor, size, status, correlationId: correlationIdOf(undefined, answer.headers) }),
    );
    this.logger.debug(
      { eservice: eserviceId, cursor, size, status: page.status, count: page.signals.length, lastSignalId: page.lastSignalId, correlationId: page.correlationId },
      'hub page',
    );
    return page;
  }

  /** `GET {pullBase}/status`: resolves when the hub answers OK (it needs a voucher and counts against the limit). */
  async status(signal?: AbortSignal): Promise<void> {
    const target: CallTarget = { path: '/status', operation: 'status check', eservice: '-' };
    await this.call(target, signal, (answer, status) => {
      const body = answer.text.trim();
      if (body !== 'OK' && body !== '"OK"') {
        throw new AppError('HUB_BAD_RESPONSE', `Signal Hub status check (status ${status}): expected "OK", got ${answer.text.length} characters of something else`, {
          status,
          correlationId: correlationIdOf(undefined, answer.headers),
          retryable: true,
        });
      }
    });
  }

  /** Closes the connection pool if the client created it. */
  async close(): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcher.close();
  }

  private async call<T>(target: CallTarget, signal: AbortSignal | undefined, interpret: (answer: Answer, status: 200 | 206) => T): Promise<T> {
    const state: CallState = { voucherRefreshed: false, rateLimitWaitedMs: 0, rateLimitAnswers: 0 };
    try {
      return await pRetry(() => this.attempt(target, state, signal, interpret), {
        retries: this.options.maxRetries,
        factor: 2,
        minTimeout: this.minRetryDelayMs,
        maxTimeout: this.options.maxRetryDelayMs,
        randomize: true,
        signal,
        // A refused TLS certificate is refused again at once: only the operator can fix it.
        shouldRetry: (err) => isAppError(err) && err.code === 'HUB_UNAVAILABLE' && !isCertificateFailure(err.cause) && !signal?.aborted,
        onFailedAttempt: (err) => {
          if (!isAppError(err) || err.code !== 'HUB_UNAVAILABLE' || err.retriesLeft <= 0) return;
          this.logger.warn(
            { eservice: target.eservice, ...retryLogFields(err, err.attemptNumber, err.retriesLeft), reason: err.message },
            'hub request failed, retrying',
          );
        },
      });
    } catch (err) {
      if (signal?.aborted) {
        throw new AppError('SHUTTING_DOWN', `Signal Hub ${target.operation}: aborted`, { cause: err, details: target.eserviceId ? { eserviceId: target.eserviceId } : undefined });
      }
      if (isAppError(err) && err.code === 'HUB_UNAVAILABLE') {
        const attempts = this.options.maxRetries + 1;
        throw new AppError('HUB_UNAVAILABLE', `${err.message}; gave up after ${attempts} attempt${attempts === 1 ? '' : 's'}`, {
          cause: err,
          status: err.status,
          correlationId: err.correlationId,
          problemCodes: err.problemCodes,
          retryable: true,
          details: err.details,
        });
      }
      throw err;
    }
  }

  /** One p-retry attempt: loops only over 429 waits and the single 401 voucher refresh. */
  private async attempt<T>(target: CallTarget, state: CallState, signal: AbortSignal | undefined, interpret: (answer: Answer, status: 200 | 206) => T): Promise<T> {
    for (;;) {
      const answer = await this.send(target, signal);
      this.options.metrics?.pulls.inc({ eservice: target.eservice, status: String(answer.status) });
      const problem = answer.status >= 400 ? parseProblem(answer.text) : undefined;
      const failure: HttpFailure = {
        operation: target.operation,
        status: answer.status,
        problem,
        correlationId: correlationIdOf(problem, answer.headers),
        eserviceId: target.eserviceId,
      };
      switch (classifyStatus(answer.status)) {
        case 'success':
          return interpret(answer, answer.status as 200 | 206);
        case 'unauthorized':
          if (state.voucherRefreshed) throw httpError('HUB_UNAUTHORIZED', failure);
          state.voucherRefreshed = true;
          this.options.vouchers.invalidate(answer.voucher);
          this.logger.warn({ eservice: target.eservice, status: 401, correlationId: failure.correlationId, problemCodes: problem?.codes }, 'hub rejected the voucher, retrying once with a new one');
          continue;
        case 'rate-limited': {
          const waitMs = this.rateLimitWait(answer);
          // Capped: a Retry-After of days (a date far ahead) must not stall every e-service's pulls for days.
          this.options.rateLimiter.pause(Math.min(waitMs, this.options.maxRateLimitWaitMs));
          state.rateLimitAnswers += 1;
          state.rateLimitedSince ??= Date.now();
          state.rateLimitWaitedMs = Math.max(state.rateLimitWaitedMs, Date.now() - state.rateLimitedSince);
          // Two different limits, named apart: the operator can raise the wait budget, not the cap.
          if (state.rateLimitAnswers > MAX_RATE_LIMIT_RETRIES) {
            throw httpError('HUB_RATE_LIMITED', failure, {
              retryable: true,
              note: `gave up after ${state.rateLimitAnswers} rate-limited answers: one request is retried at most ${MAX_RATE_LIMIT_RETRIES} times after a 429, however short the Retry-After (${state.rateLimitWaitedMs} ms waited, within hub.max_rate_limit_wait_ms ${this.options.maxRateLimitWaitMs})`,
            });
          }
          if (state.rateLimitWaitedMs + waitMs > this.options.maxRateLimitWaitMs) {
            throw httpError('HUB_RATE_LIMITED', failure, {
              retryable: true,
              note: `gave up after ${state.rateLimitAnswers} rate-limited answer(s): waiting ${waitMs} ms more would exceed hub.max_rate_limit_wait_ms (${this.options.maxRateLimitWaitMs}, ${state.rateLimitWaitedMs} ms already waited)`,
            });
          }
          state.rateLimitWaitedMs += waitMs;
          this.logger.warn({ eservice: target.eservice, status: 429, correlationId: failure.correlationId, waitMs }, 'hub rate limit hit, waiting');
          continue; // the next send() waits in the rate limiter until the pause ends
        }
        case 'forbidden':
          throw httpError('HUB_FORBIDDEN', failure);
        case 'bad-request':
          throw httpError('HUB_BAD_REQUEST', failure);
        case 'transient':
          if (isVoucherLacksClaim(answer.status, problem)) {
            if (!state.voucherRefreshed) {
              state.voucherRefreshed = true;
              this.options.vouchers.invalidate(answer.voucher);
              this.logger.warn(
                { eservice: target.eservice, status: 500, correlationId: failure.correlationId, problemCodes: problem?.codes },
                'hub found a claim missing in the voucher (code 9990), retrying once with a new one',
              );
              continue;
            }
            throw httpError('HUB_UNAVAILABLE', failure, {
              retryable: true,
              note: `transient; code ${VOUCHER_LACKS_CLAIM_CODE} means the hub found a claim it requires (nbf, organizationId, a string aud) missing in the voucher, also in a new one: check the token endpoint (pdnd.token_url) and the M2M client`,
            });
          }
          throw httpError('HUB_UNAVAILABLE', failure, { retryable: true, note: 'transient' });
        case 'unexpected':
          throw httpError('HUB_BAD_RESPONSE', failure, { retryable: true, note: 'not a status the pull API answers with' });
      }
    }
  }

  private rateLimitWait(answer: Answer): number {
    const now = Date.now();
    const retryAfter = parseRetryAfter(answer.headers['retry-after'], now);
    if (retryAfter !== undefined) return retryAfter;
    const resetAt = answer.rateLimit?.resetAt;
    if (resetAt !== undefined && resetAt > now) return Math.min(resetAt - now, DEFAULT_RATE_LIMIT_BACKOFF_MS * 10);
    return DEFAULT_RATE_LIMIT_BACKOFF_MS;
  }

  /** One HTTP exchange, paced by the shared budget. Network failures become HUB_UNAVAILABLE. */
  private async send(target: CallTarget, signal: AbortSignal | undefined): Promise<Answer> {
    // The voucher first: a token fetch must not hold a slot of the hub's budget.
    const voucher = await this.options.vouchers.get();
    await this.options.rateLimiter.acquire(signal);
    let rateLimit: RateLimitInfo | undefined;
    // headersTimeout/bodyTimeout bound silences only: a hub dripping a byte now and then would hold
    // the call (and its e-service) forever. The deadline bounds the whole exchange.
    const deadline = exchangeDeadline(this.options.requestTimeoutMs, signal);
    const timer = this.options.metrics?.pullDuration.startTimer({ eservice: target.eservice });
    try {
      const response = await request(`${this.baseUrl}${target.path}`, {
        method: 'GET',
        headers: { authorization: `Bearer ${voucher}`, accept: 'application/json' },
        dispatcher: this.dispatcher,
        signal: deadline.signal,
        headersTimeout: this.options.requestTimeoutMs,
        bodyTimeout: this.options.requestTimeoutMs,
      });
      rateLimit = parseRateLimitHeaders(response.headers);
      const text = await readCapped(response.body, MAX_PULL_BODY_BYTES, target, response.statusCode);
      timer?.({ status: String(response.statusCode) });
      return { status: response.statusCode, headers: response.headers, text, rateLimit, voucher };
    } catch (err) {
      if (signal?.aborted || isAppError(err)) throw err;
      this.options.metrics?.pulls.inc({ eservice: target.eservice, status: 'error' });
      timer?.({ status: 'error' });
      // The host, because a TLS refusal (untrusted CA, wrong name) is about that server's certificate.
      const failure = deadline.expired
        ? `no complete answer within ${this.options.requestTimeoutMs} ms (hub.request_timeout_ms)`
        : isTimeout(err)
          ? `no answer within ${this.options.requestTimeoutMs} ms`
          : isCertificateFailure(err)
            ? PRIVATE_CA_HINT
            : 'network error';
      const what = `${failure} from ${new URL(this.baseUrl).host}`;
      throw new AppError('HUB_UNAVAILABLE', `Signal Hub ${target.operation}: ${what} (${networkFailureDescription(err)})`, {
        cause: err,
        retryable: true,
        details: target.eserviceId ? { eserviceId: target.eserviceId } : undefined,
      });
    } finally {
      deadline.dispose();
      this.options.rateLimiter.settle(rateLimit);
    }
  }
}

async function readCapped(body: Dispatcher.ResponseData['body'], maxBytes: number, target: CallTarget, status: number): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    const buffer = chunk as Buffer;
    total += buffer.length;
    if (total > maxBytes) {
      body.destroy();
      throw new AppError('HUB_BAD_RESPONSE', `Signal Hub ${target.operation} (status ${status}): body larger than ${maxBytes} bytes`, {
        status,
        retryable: true,
        details: target.eserviceId ? { eserviceId: target.eserviceId } : undefined,
      });
    }
    chunks.push(buffer);
  }
  return chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks, total).toString('utf8');
}

function checkPageSize(size: number, where: string): void {
  if (!Number.isInteger(size) || size < MIN_PAGE_SIZE || size > MAX_PAGE_SIZE) {
    throw new AppError('HUB_BAD_REQUEST', `${where} ${size} is outside ${MIN_PAGE_SIZE}..${MAX_PAGE_SIZE} (the hub answers 400, it does not clamp); not sent`);
  }
}
