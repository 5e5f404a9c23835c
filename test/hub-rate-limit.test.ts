import { randomUUID } from 'node:crypto';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAppError } from '../src/errors.js';
import { Metrics } from '../src/metrics.js';
import type { VoucherProvider } from '../src/pdnd/vouchers.js';
import { HubClient } from '../src/hub/client.js';
import { RateLimiter, parseRateLimitHeaders } from '../src/hub/rate-limiter.js';
import { parseRetryAfter } from '../src/retry-after.js';
import type { Signal } from '../src/hub/types.js';
import { m2mVoucherSource } from '../src/hub/vouchers.js';
import type { Simulator } from '../src/simulator/index.js';
import { simulatorWithM2m } from './pdnd-fixtures.js';

let sim: Simulator;
let provider: VoucherProvider;
let closeSimulator: () => Promise<void>;

beforeAll(async () => {
  ({ sim, provider, close: closeSimulator } = await simulatorWithM2m('m2m-rate'));
});

afterAll(() => closeSimulator());

function client(rateLimiter: RateLimiter, metrics?: Metrics): HubClient {
  return new HubClient({
    baseUrl: sim.pullBaseUrl,
    pageSize: 4,
    requestTimeoutMs: 5000,
    maxRetries: 2,
    maxRetryDelayMs: 50,
    maxRateLimitWaitMs: 5000,
    vouchers: m2mVoucherSource(provider),
    rateLimiter,
    metrics,
  });
}

function eserviceWith(signals: number): string {
  const id = randomUUID();
  sim.addEService({ id });
  for (let i = 0; i < signals; i++) sim.deposit(id, { signalType: 'UPDATE', objectId: `p${i}`, objectType: 't' });
  return id;
}

async function drain(hub: HubClient, eserviceId: string): Promise<Signal[]> {
  const all: Signal[] = [];
  let cursor = 0;
  for (;;) {
    const page = await hub.pull(eserviceId, cursor);
    all.push(...page.signals);
    if (page.lastSignalId === null || page.status === 200) return all;
    cursor = page.lastSignalId;
  }
}

describe('pacing on X-Rate-Limit-* with one budget per organization', () => {
  it('control: an unpaced burst against a hub limited to 20 requests/s does get 429s', async () => {
    sim.setRateLimit({ limit: 20, intervalMs: 1000 });
    const es = eserviceWith(1);
    const voucher = (await provider.m2m()).token;
    const before = sim.stats().responses429;
    const statuses = await Promise.all(
      Array.from({ length: 30 }, async () => {
        const res = await request(`${sim.pullBaseUrl}/signals/${es}?signalId=0&size=1`, { headers: { authorization: `Bearer ${voucher}` } });
        await res.body.dump();
        return res.statusCode;
      }),
    );
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);
    expect(sim.stats().responses429 - before).toBeGreaterThan(0);
    // Let the window this burst used run out before the paced run starts.
    await new Promise((resolve) => setTimeout(resolve, 1100));
  });

  it('several e-services pulling concurrently, one client each, sharing one limiter: zero 429s', async () => {
    sim.setRateLimit({ limit: 20, intervalMs: 1000 });
    const eservices = [eserviceWith(48), eserviceWith(48), eserviceWith(44), eserviceWith(40)];
    const metrics = new Metrics();
    const limiter = new RateLimiter({ initialRatePerSecond: 10, metrics });
    const hubs = eservices.map(() => client(limiter, metrics));
    const requestsBefore = sim.stats().requests.pull ?? 0;
    const before = sim.stats().responses429;
    try {
      const results = await Promise.all(eservices.map((es, i) => drain(hubs[i]!, es)));
      expect(results.map((r) => r.length)).toEqual([48, 48, 44, 40]);
      for (const signals of results) expect(signals.map((s) => s.signalId)).toEqual(signals.map((_, i) => i + 1));
      // More than twice what one window allows, so the pacing was actually exercised...
      expect((sim.stats().requests.pull ?? 0) - requestsBefore).toBeGreaterThan(40);
      // ...and the hub never had to refuse one.
      expect(sim.stats().responses429 - before).toBe(0);
      expect((await metrics.rateLimited.get()).values[0]?.value ?? 0).toBe(0);
      const remaining = (await metrics.rateLimitRemaining.get()).values[0]?.value;
      expect(remaining).toBeGreaterThanOrEqual(0);
      expect(remaining).toBeLessThan(20);
      expect(limiter.snapshot()).toMatchObject({ limit: 20, inFlight: 0, waiting: 0 });
    } finally {
      await Promise.all(hubs.map((h) => h.close()));
      sim.setRateLimit({ limit: 1000, intervalMs: 1000 });
    }
  });

  it('a 429 pauses the whole budget: other clients of the limiter wait too', async () => {
    const es = eserviceWith(1);
    const limiter = new RateLimiter({ initialRatePerSecond: 100 });
    const hub = client(limiter);
    try {
      await hub.pull(es, 0);
      limiter.pause(500);
      const started = Date.now();
      await hub.pull(es, 0);
      expect(Date.now() - started).toBeGreaterThanOrEqual(490);
    } finally {
      await hub.close();
    }
  });

  it('aborting while waiting for the budget ends the call and leaves no waiter behind', async () => {
    const es = eserviceWith(1);
    const limiter = new RateLimiter({ initialRatePerSecond: 100 });
    const hub = client(limiter);
    try {
      limiter.pause(60_000);
      const controller = new AbortController();
      const pending = hub.pull(es, 0, 4, controller.signal);
      setTimeout(() => controller.abort(), 50);
      const err = await pending.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isAppError(err) && err.code).toBe('SHUTTING_DOWN');
      expect(limiter.snapshot()).toMatchObject({ waiting: 0, inFlight: 0 });
    } finally {
      await hub.close();
    }
  });
});

describe('RateLimiter on odd headers', () => {
  it('a stated limit of 0 without Remaining (a proxy placeholder) does not stall the budget', async () => {
    const limiter = new RateLimiter({ initialRatePerSecond: 1000 });
    await limiter.acquire();
    limiter.settle({ limit: 0 });
    // The timeout turns a stalled budget into a failure instead of a hung test.
    for (let i = 0; i < 3; i++) {
      await expect(limiter.acquire(AbortSignal.timeout(5000))).resolves.toBeUndefined();
      limiter.settle(parseRateLimitHeaders({ 'x-rate-limit-limit': '0.5' }));
    }
    expect(limiter.snapshot()).toMatchObject({ limit: undefined, inFlight: 0, waiting: 0 });
  });
});

describe('header parsing', () => {
  it('Retry-After: fractional seconds, integers, HTTP dates; absent or garbage is undefined', () => {
    expect(parseRetryAfter('0.412')).toBe(412);
    expect(parseRetryAfter(' 2 ')).toBe(2000);
    expect(parseRetryAfter('0')).toBe(0);
    expect(parseRetryAfter(['1.5', '9'])).toBe(1500);
    const now = Date.parse('2025-01-01T00:00:00Z');
    expect(parseRetryAfter('Wed, 01 Jan 2025 00:00:03 GMT', now)).toBe(3000);
    expect(parseRetryAfter(undefined)).toBeUndefined();
    expect(parseRetryAfter('')).toBeUndefined();
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter('-1')).toBeUndefined();
  });

  it('X-Rate-Limit-*: both reset spellings; epoch seconds converted; no headers = undefined', () => {
    expect(
      parseRateLimitHeaders({ 'x-rate-limit-limit': '25', 'x-rate-limit-remaining': '7', 'x-rate-limit-interval': '1000', 'x-rate-limit-reset': '1735689600500' }),
    ).toEqual({ limit: 25, remaining: 7, intervalMs: 1000, resetAt: 1735689600500 });
    expect(parseRateLimitHeaders({ 'x-rate-limit-remaining': '0', 'x-ratelimit-reset': '1735689601000' })).toEqual({ remaining: 0, resetAt: 1735689601000 });
    expect(parseRateLimitHeaders({ 'x-rate-limit-reset': '1735689601' })).toEqual({ resetAt: 1735689601000 });
    expect(parseRateLimitHeaders({ 'x-rate-limit-remaining': 'lots' })).toBeUndefined();
    expect(parseRateLimitHeaders({ 'content-type': 'application/json' })).toBeUndefined();
  });
});
