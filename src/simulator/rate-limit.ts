export interface RateLimitSettings {
  /** Requests allowed per interval, per organization. */
  limit: number;
  intervalMs: number;
}

export interface RateDecision {
  allowed: boolean;
  headers: Record<string, string>;
  /** Seconds until the window resets, when refused. */
  retryAfterSeconds: number;
}

/**
 * Signal Hub's limiter: a fixed window per organization, shared by all its clients. Every
 * counted request, allowed or not, gets the `X-Rate-Limit-*` headers (Reset in epoch ms).
 */
export class RateLimiter {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(
    public settings: RateLimitSettings,
    private readonly now: () => number,
  ) {}

  take(organizationId: string): RateDecision {
    const now = this.now();
    const { limit, intervalMs } = this.settings;
    let window = this.windows.get(organizationId);
    if (!window || now >= window.start + intervalMs) {
      window = { start: now, count: 0 };
      this.windows.set(organizationId, window);
    }
    const reset = window.start + intervalMs;
    const allowed = window.count < limit;
    if (allowed) window.count++;
    const headers = {
      'x-rate-limit-limit': String(limit),
      'x-rate-limit-remaining': String(Math.max(0, limit - window.count)),
      'x-rate-limit-interval': String(intervalMs),
      'x-rate-limit-reset': String(reset),
    };
    return { allowed, headers, retryAfterSeconds: Math.max(0.001, (reset - now) / 1000) };
  }
}

/** `Retry-After` as Signal Hub sends it: seconds, fractional (e.g. `0.412`). */
export function formatRetryAfter(seconds: number): string {
  return seconds.toFixed(3);
}
