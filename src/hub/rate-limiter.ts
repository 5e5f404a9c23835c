import type { Metrics } from '../metrics.js';

/**
 * One request budget for the whole organization (SPEC §3: the hub limits per organization, all
 * its clients share it). Create ONE per process and hand it to every HubClient, so that all
 * e-services pulling concurrently draw from the same budget.
 *
 * How it paces, so that a well-behaved run never sees a 429:
 * - before the hub has stated a limit: evenly spaced at `initialRatePerSecond`;
 * - once `X-Rate-Limit-Limit`/`-Interval` are known: evenly spaced at `utilization` of that rate
 *   (spread, not bursts: a burst at a window's start is what trips a sliding-window limiter).
 *   Spacing follows GCRA (a theoretical send time advancing by one spacing per request, with
 *   a small tolerance), so timer lateness is absorbed instead of slowly eroding the rate; any
 *   interval I then holds at most (I + tolerance) / spacing + 1 requests, within the limit;
 * - never more requests in flight than `X-Rate-Limit-Remaining` allows before `X-Rate-Limit-Reset`,
 *   and the remaining ones spread over the time left; at 0 remaining, wait for the reset;
 * - after a 429, the whole budget pauses for the Retry-After (`pause`).
 * Requests in flight are assumed not yet counted by the hub: conservative, never optimistic.
 */
export interface RateLimiterOptions {
  /** Requests per second before the hub states its limit (`hub.initial_rate_limit`). */
  initialRatePerSecond: number;
  /**
   * Fraction of the announced rate we pace at. Default 0.97: the hard guarantee is the
   * remaining/reset accounting, the spacing only smooths, so little headroom is needed.
   */
  utilization?: number;
  metrics?: Metrics | undefined;
  /** Epoch ms; the hub's reset times are epoch ms. */
  now?: () => number;
}

/** The rate-limit headers of one hub answer (SPEC §3), parsed. */
export interface RateLimitInfo {
  limit?: number;
  remaining?: number;
  intervalMs?: number;
  /** Absolute epoch ms. */
  resetAt?: number;
}

type HeaderBag = Record<string, string | string[] | undefined>;

const DEFAULT_INTERVAL_MS = 1000;
const MAX_STATED_INTERVAL_MS = 60_000;
/** Fire this long after the announced reset, not at it: timers and clocks are not exact. */
const RESET_MARGIN_MS = 15;

interface Waiter {
  resolve: () => void;
  reject: (reason: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

export class RateLimiter {
  private readonly initialSpacingMs: number;
  private readonly utilization: number;
  private readonly metrics: Metrics | undefined;
  private readonly now: () => number;

  private limit: number | undefined;
  private intervalMs = DEFAULT_INTERVAL_MS;
  private remaining: number | undefined;
  private resetAt: number | undefined;
  /** Whether `resetAt` came from the hub (comparable with the next answer's) or is our estimate. */
  private resetFromHub = false;
  private inFlight = 0;
  /** GCRA's theoretical send time of the next request. */
  private nextAt = Number.NEGATIVE_INFINITY;
  private pausedUntil = 0;

  private readonly waiters: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(options: RateLimiterOptions) {
    if (!(options.initialRatePerSecond > 0)) throw new RangeError('initialRatePerSecond must be positive');
    this.initialSpacingMs = 1000 / options.initialRatePerSecond;
    this.utilization = Math.min(1, Math.max(0.1, options.utilization ?? 0.97));
    this.metrics = options.metrics;
    this.now = options.now ?? preciseEpochMs;
  }

  /**
   * Resolves when one request may be sent (FIFO). Every successful acquire must be followed by
   * exactly one `settle()`, whether the request got an answer or failed.
   */
  acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, signal, onAbort: undefined };
      if (signal) {
        waiter.onAbort = () => {
          const index = this.waiters.indexOf(waiter);
          if (index >= 0) this.waiters.splice(index, 1);
          reject(signal.reason);
          this.schedule();
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.waiters.push(waiter);
      this.schedule();
    });
  }

  /** The request of an `acquire()` is over; `info` holds its answer's rate-limit headers, if any. */
  settle(info?: RateLimitInfo): void {
    this.inFlight = Math.max(0, this.inFlight - 1);
    // A stated limit of 0 (a proxy's placeholder) would make the spacing infinite and stall the budget for good.
    if (info?.limit !== undefined && info.limit > 0) this.limit = info.limit;
    if (info?.remaining !== undefined) this.observe(info);
    // No word from the hub (network error, or no headers): assume the request counted.
    else if (this.remaining !== undefined) this.remaining = Math.max(0, this.remaining - 1);
    this.schedule();
  }

  /** The hub answered 429: hold every request of the organization for `waitMs`. */
  pause(waitMs: number): void {
    this.metrics?.rateLimited.inc();
    this.pausedUntil = Math.max(this.pausedUntil, this.now() + Math.max(0, waitMs));
    this.schedule();
  }

  /** Current view of the budget, for logs and tests. */
  snapshot(): { limit: number | undefined; remaining: number | undefined; resetAt: number | undefined; inFlight: number; waiting: number } {
    return { limit: this.limit, remaining: this.remaining, resetAt: this.resetAt, inFlight: this.inFlight, waiting: this.waiters.length };
  }

  private observe(info: RateLimitInfo): void {
    const now = this.now();
    if (info.intervalMs !== undefined && info.intervalMs > 0) this.intervalMs = info.intervalMs;
    const remaining = info.remaining!;
    this.metrics?.rateLimitRemaining.set(remaining);
    // A reset further away than one interval can only be clock skew: do not block on it.
    const reset = info.resetAt === undefined ? undefined : Math.min(info.resetAt, now + this.intervalMs);
    if (reset !== undefined && this.resetFromHub && this.resetAt !== undefined) {
      if (reset < this.resetAt - 1) return; // an answer from an earlier window, arriving late
      if (reset <= this.resetAt + 1) {
        // Same window: remaining only goes down within it; answers may arrive out of order.
        this.remaining = Math.min(this.remaining ?? remaining, remaining);
        return;
      }
    }
    this.remaining = remaining;
    this.resetAt = reset ?? now + this.intervalMs;
    this.resetFromHub = reset !== undefined;
  }

  /** Starts the next window once the announced reset has passed. */
  private rollWindow(now: number): void {
    if (this.resetAt === undefined || now < this.resetAt + RESET_MARGIN_MS) return;
    const windows = Math.ceil((now - this.resetAt + 1) / this.intervalMs);
    this.resetAt += windows * this.intervalMs;
    this.resetFromHub = false;
    this.remaining = this.limit;
  }

  /** Milliseconds until the next request may go; Infinity = until an answer arrives. */
  private delayAt(now: number): number {
    if (now < this.pausedUntil) return this.pausedUntil - now;
    this.rollWindow(now);
    if (this.remaining !== undefined && this.remaining - this.inFlight <= 0) {
      if (this.resetAt !== undefined) return this.resetAt + RESET_MARGIN_MS - now;
      return this.inFlight > 0 ? Number.POSITIVE_INFINITY : this.intervalMs;
    }
    return this.nextAt - this.toleranceMs() - now;
  }

  /**
   * How early a request may go before its theoretical time: enough to absorb timer lateness
   * (setTimeout has 1 ms resolution and fires late under load), small against the interval.
   */
  private toleranceMs(): number {
    return Math.min(5, Math.max(1, this.intervalMs * 0.005));
  }

  /** The gap between two requests: the announced rate, or slower to spread what remains until the reset. */
  private spacingAt(now: number): number {
    let spacing = this.limit === undefined ? this.initialSpacingMs : this.intervalMs / (this.limit * this.utilization);
    if (this.remaining !== undefined && this.resetAt !== undefined) {
      const available = Math.max(1, this.remaining - this.inFlight);
      spacing = Math.max(spacing, (this.resetAt - now) / available);
    }
    return spacing;
  }

  private schedule(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    while (this.waiters.length > 0) {
      const now = this.now();
      const delay = this.delayAt(now);
      if (delay > 0) {
        if (Number.isFinite(delay)) {
          this.timer = setTimeout(() => {
            this.timer = undefined;
            this.schedule();
          }, Math.ceil(delay));
        }
        return;
      }
      const waiter = this.waiters.shift()!;
      if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
      this.nextAt = Math.max(this.nextAt, now) + this.spacingAt(now);
      this.inFlight += 1;
      waiter.resolve();
    }
  }
}

let monotonicToEpoch = Date.now() - performance.now();

/**
 * Epoch ms with sub-millisecond resolution (Date.now()'s whole milliseconds cost a timer tick
 * per request at high rates), kept within 2 ms of the wall clock, which the hub's reset times
 * are expressed in, however long the process runs.
 */
function preciseEpochMs(): number {
  const monotonic = performance.now();
  const wall = Date.now();
  if (Math.abs(monotonic + monotonicToEpoch - wall) > 2) monotonicToEpoch = wall - monotonic;
  return monotonic + monotonicToEpoch;
}

/** Reads `X-Rate-Limit-*` (and the OpenAPI's `X-RateLimit-Reset` spelling) from an answer. */
export function parseRateLimitHeaders(headers: HeaderBag): RateLimitInfo | undefined {
  const limit = nonNegative(header(headers, 'x-rate-limit-limit') ?? header(headers, 'x-ratelimit-limit'));
  const remaining = nonNegative(header(headers, 'x-rate-limit-remaining') ?? header(headers, 'x-ratelimit-remaining'));
  const intervalMs = nonNegative(header(headers, 'x-rate-limit-interval') ?? header(headers, 'x-ratelimit-interval'));
  const resetRaw = nonNegative(header(headers, 'x-rate-limit-reset') ?? header(headers, 'x-ratelimit-reset'));
  if (limit === undefined && remaining === undefined && intervalMs === undefined && resetRaw === undefined) return undefined;
  const info: RateLimitInfo = {};
  if (limit !== undefined) info.limit = Math.floor(limit);
  if (remaining !== undefined) info.remaining = Math.floor(remaining);
  // A window longer than a minute is not a rate limit the hub states (1 s in production): a
  // garbage interval would stretch the reset cap in observe() and stall every pull for days.
  if (intervalMs !== undefined && intervalMs > 0 && intervalMs <= MAX_STATED_INTERVAL_MS) info.intervalMs = intervalMs;
  // SPEC: absolute epoch ms. Epoch seconds (a common variant) would otherwise read as 1970.
  if (resetRaw !== undefined) info.resetAt = resetRaw < 1e11 && resetRaw > 1e9 ? resetRaw * 1000 : resetRaw;
  return info;
}


function header(headers: HeaderBag, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function nonNegative(text: string | undefined): number | undefined {
  if (text === undefined || text.trim() === '') return undefined;
  const value = Number(text);
  return Number.isFinite(value) && value >= 0 ? value : undefined;
}
