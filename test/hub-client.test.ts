import { randomUUID } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isAppError, type AppError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { Metrics } from '../src/metrics.js';
import type { VoucherProvider } from '../src/pdnd/vouchers.js';
import { HubClient, type HubClientOptions } from '../src/hub/client.js';
import { RateLimiter } from '../src/hub/rate-limiter.js';
import type { VoucherSource } from '../src/hub/types.js';
import { m2mVoucherSource } from '../src/hub/vouchers.js';
import type { Simulator } from '../src/simulator/index.js';
import { simulatorWithM2m } from './pdnd-fixtures.js';

/**
 * The hub client through real HTTP against the simulator, with real vouchers from its token
 * endpoint: every row of SPEC §3's status table, and every malformed answer.
 */

let sim: Simulator;
let provider: VoucherProvider;
let closeSimulator: () => Promise<void>;

beforeAll(async () => {
  ({ sim, provider, close: closeSimulator } = await simulatorWithM2m('m2m-hub-client'));
});

afterAll(() => closeSimulator());

afterEach(() => sim.faults.clear());

/** Every voucher handed to the client, to prove none of them leaks. */
const issuedVouchers = new Set<string>();

function recording(source: VoucherSource): VoucherSource & { invalidated: number } {
  const wrapped = {
    invalidated: 0,
    get: async () => {
      const token = await source.get();
      issuedVouchers.add(token);
      return token;
    },
    invalidate: (rejected: string) => {
      wrapped.invalidated++;
      source.invalidate(rejected);
    },
  };
  return wrapped;
}

interface Harness {
  client: HubClient;
  vouchers: ReturnType<typeof recording>;
  metrics: Metrics;
  logs: string[];
}

const harnesses: HubClient[] = [];
afterEach(async () => {
  while (harnesses.length > 0) await harnesses.pop()!.close();
});

function harness(overrides: Partial<HubClientOptions> = {}, source: VoucherSource = m2mVoucherSource(provider)): Harness {
  const logs: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      logs.push(chunk.toString('utf8'));
      done();
    },
  });
  const metrics = new Metrics();
  const vouchers = recording(source);
  const client = new HubClient({
    baseUrl: sim.pullBaseUrl,
    pageSize: 10,
    requestTimeoutMs: 5000,
    maxRetries: 3,
    maxRetryDelayMs: 40,
    minRetryDelayMs: 10,
    maxRateLimitWaitMs: 5000,
    vouchers,
    rateLimiter: new RateLimiter({ initialRatePerSecond: 500, metrics }),
    metrics,
    logger: createLogger({ level: 'debug', destination: stream }),
    ...overrides,
  });
  harnesses.push(client);
  return { client, vouchers, metrics, logs };
}

function newEService(options: { signals?: number; organizationIds?: string[]; forbiddenWithoutProblem?: boolean } = {}): string {
  const id = randomUUID();
  sim.addEService({ id, ...(options.organizationIds ? { organizationIds: options.organizationIds } : {}), ...(options.forbiddenWithoutProblem ? { forbiddenWithoutProblem: true } : {}) });
  for (let i = 0; i < (options.signals ?? 0); i++) sim.deposit(id, { signalType: 'UPDATE', objectId: `pseudo-${i + 1}`, objectType: 'domicile' });
  return id;
}

const pullRequests = (): number => sim.stats().requests.pull ?? 0;

async function failure(promise: Promise<unknown>): Promise<AppError> {
  try {
    await promise;
  } catch (err) {
    if (isAppError(err)) return err;
    throw err;
  }
  throw new Error('expected the call to fail');
}

async function counterValue(metrics: Metrics, labels: Record<string, string>): Promise<number> {
  const data = await metrics.pulls.get();
  return data.values.filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k as 'eservice' | 'status'] === val)).reduce((sum, v) => sum + v.value, 0);
}

describe('successful answers', () => {
  it('200: the last page, with ids above the cursor, ascending, and lastSignalId', async () => {
    const es = newEService({ signals: 3 });
    const { client, metrics, logs } = harness();
    const page = await client.pull(es, 0);
    expect(page.status).toBe(200);
    expect(page.signals.map((s) => s.signalId)).toEqual([1, 2, 3]);
    expect(page.signals[0]).toEqual({ signalId: 1, signalType: 'UPDATE', objectId: 'pseudo-1', objectType: 'domicile', eserviceId: es });
    expect(page.lastSignalId).toBe(3);
    expect(await counterValue(metrics, { eservice: es, status: '200' })).toBe(1);
    const debug = logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'hub page');
    expect(debug).toMatchObject({ eservice: es, cursor: 0, count: 3, status: 200, lastSignalId: 3 });
  });

  it('206 pages then 200, with an exclusive bound and gaps in the ids', async () => {
    const es = newEService();
    for (const id of [5, 9, 10, 42, 43]) sim.deposit(es, { signalType: 'CREATE', objectId: `p${id}`, objectType: 'IDcard', signalId: id });
    const { client } = harness();
    const seen: Array<[number, number[]]> = [];
    let cursor = 0;
    for (;;) {
      const page = await client.pull(es, cursor, 2);
      seen.push([page.status, page.signals.map((s) => s.signalId)]);
      if (page.lastSignalId === null || page.status === 200) break;
      cursor = page.lastSignalId;
    }
    expect(seen).toEqual([
      [206, [5, 9]],
      [206, [10, 42]],
      [200, [43]],
    ]);
  });

  it('206 followed by an empty 200 when the next signals are still inside the time window', async () => {
    const es = newEService();
    const past = Date.now() - 60_000;
    for (let i = 1; i <= 3; i++) sim.deposit(es, { signalType: 'UPDATE', objectId: `p${i}`, objectType: 't', visibleAt: past });
    sim.deposit(es, { signalType: 'UPDATE', objectId: 'young', objectType: 't' });
    sim.setTimeWindow(60_000);
    try {
      const { client } = harness();
      const first = await client.pull(es, 0, 3);
      expect(first).toMatchObject({ status: 206, lastSignalId: 3 });
      const second = await client.pull(es, 3, 3);
      expect(second).toMatchObject({ status: 200, signals: [], lastSignalId: null });
    } finally {
      sim.setTimeWindow(0);
    }
  });

  it('an empty page has lastSignalId null (never a cursor)', async () => {
    const es = newEService({ signals: 2 });
    const { client } = harness();
    expect(await client.pull(es, 2)).toMatchObject({ status: 200, signals: [], lastSignalId: null });
    expect(await client.pull(es, 1000)).toMatchObject({ status: 200, signals: [], lastSignalId: null });
  });

  it('size: 1 and 100 are sent, 0 and 101 are refused locally without a request', async () => {
    const es = newEService({ signals: 120 });
    const { client } = harness();
    expect((await client.pull(es, 0, 1)).signals).toHaveLength(1);
    expect((await client.pull(es, 0, 100)).signals).toHaveLength(100);
    const before = pullRequests();
    for (const size of [0, 101, 2.5]) {
      const err = await failure(client.pull(es, 0, size));
      expect(err.code).toBe('HUB_BAD_REQUEST');
      expect(err.message).toContain('outside 1..100');
    }
    expect(pullRequests()).toBe(before);
    expect((await failure(client.pull(es, -1))).code).toBe('HUB_BAD_REQUEST');
  });

  it('the default page size comes from the options', async () => {
    const es = newEService({ signals: 12 });
    const { client } = harness({ pageSize: 5 });
    expect(await client.pull(es, 0)).toMatchObject({ status: 206, lastSignalId: 5 });
  });

  it('status(): answers OK with a voucher; a refusal is typed', async () => {
    const { client } = harness();
    await expect(client.status()).resolves.toBeUndefined();
    sim.faults.inject('status', { kind: 'status', status: 403, code: '0004', times: 1 });
    expect((await failure(client.status())).code).toBe('HUB_FORBIDDEN');
  });
});

describe('errors of the status table', () => {
  it('400 (0001) is HUB_BAD_REQUEST, not retried', async () => {
    const es = newEService({ signals: 1 });
    const { client } = harness();
    sim.faults.inject('pull', { kind: 'status', status: 400, code: '0001', eserviceId: es });
    const before = pullRequests();
    const err = await failure(client.pull(es, 0));
    expect(err).toMatchObject({ code: 'HUB_BAD_REQUEST', status: 400, problemCodes: ['0001'], retryable: false });
    expect(err.correlationId).toMatch(/^[0-9a-f-]{36}$/);
    expect(err.message).toContain(err.correlationId);
    expect(pullRequests() - before).toBe(1);
  });

  it('401 from the real hub: one new voucher, one retry, success', async () => {
    const es = newEService({ signals: 2 });
    const real = m2mVoucherSource(provider);
    let first = true;
    // A well-formed JWT the hub does not accept (wrong signature): a genuine 401 9994.
    const bogus = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl';
    const source: VoucherSource = {
      get: async () => (first ? bogus : real.get()),
      invalidate: (rejected) => {
        expect(rejected).toBe(bogus);
        first = false;
        real.invalidate(rejected);
      },
    };
    const { client, vouchers, logs } = harness({}, source);
    const before = pullRequests();
    const page = await client.pull(es, 0);
    expect(page.lastSignalId).toBe(2);
    expect(vouchers.invalidated).toBe(1);
    expect(pullRequests() - before).toBe(2);
    expect(logs.join('')).not.toContain(bogus);
  });

  it('401 after a refresh too: HUB_UNAUTHORIZED, exactly one refresh and two requests', async () => {
    const es = newEService({ signals: 1 });
    const { client, vouchers } = harness();
    sim.faults.inject('pull', { kind: 'status', status: 401, code: '9001', eserviceId: es });
    const tokensBefore = sim.stats().tokensIssued;
    const before = pullRequests();
    const err = await failure(client.pull(es, 0));
    expect(err).toMatchObject({ code: 'HUB_UNAUTHORIZED', status: 401, problemCodes: ['9001'], retryable: false });
    expect(vouchers.invalidated).toBe(1);
    expect(pullRequests() - before).toBe(2);
    // The refresh really fetched a new voucher from the token endpoint.
    expect(sim.stats().tokensIssued - tokensBefore).toBe(1);
  });

  /** The shared provider's voucher is dropped, so the next get() asks the token endpoint (and meets any token fault). */
  async function forgetCachedVoucher(): Promise<void> {
    const real = m2mVoucherSource(provider);
    real.invalidate(await real.get());
  }

  it.each(['nbf', 'organizationId'] as const)('500 9990 (a voucher without %s, SPEC §10): one new voucher, success, without transient retries', async (claim) => {
    const es = newEService({ signals: 2 });
    await forgetCachedVoucher();
    sim.faults.inject('token', { kind: 'voucherLacksClaim', claim, times: 1 });
    // No transient retries: only the fresh voucher can turn the 500 into a page.
    const { client, vouchers, logs } = harness({ maxRetries: 0 });
    const tokensBefore = sim.stats().tokensIssued;
    const before = pullRequests();
    const page = await client.pull(es, 0);
    expect(page.lastSignalId).toBe(2);
    expect(vouchers.invalidated).toBe(1);
    expect(pullRequests() - before).toBe(2);
    expect(sim.stats().tokensIssued - tokensBefore).toBe(2);
    const warning = logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'hub found a claim missing in the voucher (code 9990), retrying once with a new one');
    expect(warning).toMatchObject({ level: 'warn', eservice: es, status: 500, problemCodes: ['9990'] });
  });

  it('500 9990 again with the new voucher: transient from then on, exactly one refresh, then HUB_UNAVAILABLE naming the claim', async () => {
    const es = newEService({ signals: 1 });
    await forgetCachedVoucher();
    sim.faults.inject('token', { kind: 'voucherLacksClaim' });
    try {
      const { client, vouchers } = harness({ maxRetries: 2 });
      const tokensBefore = sim.stats().tokensIssued;
      const before = pullRequests();
      const err = await failure(client.pull(es, 0));
      expect(err).toMatchObject({ code: 'HUB_UNAVAILABLE', status: 500, problemCodes: ['9990'], retryable: true });
      expect(err.message).toContain('claim');
      expect(err.message).toContain('gave up after 3 attempts');
      expect(vouchers.invalidated).toBe(1);
      // First try, the refresh, then two transient retries with the same (second) voucher.
      expect(pullRequests() - before).toBe(4);
      expect(sim.stats().tokensIssued - tokensBefore).toBe(2);
    } finally {
      sim.faults.clear();
      await forgetCachedVoucher();
    }
  });

  it('a plain 500 (no 9990) does not cost a voucher', async () => {
    const es = newEService({ signals: 1 });
    const { client, vouchers } = harness({ maxRetries: 1 });
    sim.faults.inject('pull', { kind: 'status', status: 500, times: 1, eserviceId: es });
    expect((await client.pull(es, 0)).lastSignalId).toBe(1);
    expect(vouchers.invalidated).toBe(0);
  });

  it('403 (0004, no agreement) is HUB_FORBIDDEN, not retried', async () => {
    const es = newEService({ signals: 1, organizationIds: ['another-org'] });
    const { client } = harness();
    const before = pullRequests();
    const err = await failure(client.pull(es, 0));
    expect(err).toMatchObject({ code: 'HUB_FORBIDDEN', status: 403, problemCodes: ['0004'], retryable: false });
    expect(err.correlationId).toBeDefined();
    expect(pullRequests() - before).toBe(1);
  });

  it('403 without a problem body (a firewall) is HUB_FORBIDDEN, not retried', async () => {
    const es = newEService({ signals: 1, organizationIds: ['another-org'], forbiddenWithoutProblem: true });
    const { client } = harness();
    const before = pullRequests();
    const err = await failure(client.pull(es, 0));
    expect(err).toMatchObject({ code: 'HUB_FORBIDDEN', status: 403, retryable: false });
    expect(err.problemCodes).toBeUndefined();
    expect(err.message).toContain('without a problem body');
    expect(pullRequests() - before).toBe(1);
  });

  it('429 with a fractional Retry-After: waited, then success', async () => {
    const es = newEService({ signals: 2 });
    const { client, metrics } = harness();
    sim.faults.inject('pull', { kind: 'status', status: 429, code: '10004', headers: { 'retry-after': '0.412' }, times: 1, eserviceId: es });
    const started = Date.now();
    const page = await client.pull(es, 0);
    expect(page.lastSignalId).toBe(2);
    // A lower bound only: the client did wait the 412 ms it was told to.
    expect(Date.now() - started).toBeGreaterThanOrEqual(400);
    expect((await metrics.rateLimited.get()).values[0]?.value).toBe(1);
    expect(await counterValue(metrics, { eservice: es, status: '429' })).toBe(1);
  });

  it('429 from the hub\'s own limiter (fired before the client knew the limit) is waited out', async () => {
    sim.setRateLimit({ limit: 3, intervalMs: 1000 });
    try {
      const es = newEService({ signals: 20 });
      // Six processes of one organization, each with its own budget: together they overrun the hub's.
      const clients = [0, 2, 4, 6, 8, 10].map(() => harness().client);
      const before = sim.stats().responses429;
      const pages = await Promise.all(clients.map((client, i) => client.pull(es, i * 2, 2)));
      expect(pages.map((p) => p.lastSignalId)).toEqual([2, 4, 6, 8, 10, 12]);
      expect(sim.stats().responses429 - before).toBeGreaterThan(0);
    } finally {
      sim.setRateLimit({ limit: 1000, intervalMs: 1000 });
    }
  });

  it('429 asking for more than hub.max_rate_limit_wait_ms: HUB_RATE_LIMITED, retryable', async () => {
    const es = newEService({ signals: 1 });
    const { client } = harness({ maxRateLimitWaitMs: 200 });
    sim.faults.inject('pull', { kind: 'status', status: 429, code: '10004', headers: { 'retry-after': '0.300' }, times: 1, eserviceId: es });
    const err = await failure(client.pull(es, 0));
    expect(err).toMatchObject({ code: 'HUB_RATE_LIMITED', status: 429, problemCodes: ['10004'], retryable: true });
    expect(err.message).toContain('max_rate_limit_wait_ms');
  });

  it('429 with Retry-After 0, again and again: HUB_RATE_LIMITED naming the 20-answer cap, not the wait budget', async () => {
    const es = newEService({ signals: 1 });
    const { client } = harness({ maxRateLimitWaitMs: 60_000 });
    sim.faults.inject('pull', { kind: 'status', status: 429, code: '10004', headers: { 'retry-after': '0' }, times: 30, eserviceId: es });
    const before = pullRequests();
    const err = await failure(client.pull(es, 0));
    expect(err).toMatchObject({ code: 'HUB_RATE_LIMITED', status: 429, retryable: true });
    expect(pullRequests() - before).toBe(21);
    expect(err.message).toContain('gave up after 21 rate-limited answers');
    expect(err.message).toContain('at most 20 times');
    expect(err.message).not.toContain('would exceed');
  });

  it.each([500, 502, 503, 504])('%i is retried, then success', async (status) => {
    const es = newEService({ signals: 2 });
    const { client, logs } = harness();
    sim.faults.inject('pull', { kind: 'status', status, times: 2, eserviceId: es });
    const before = pullRequests();
    expect((await client.pull(es, 0)).lastSignalId).toBe(2);
    expect(pullRequests() - before).toBe(3);
    const warnings = logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'hub request failed, retrying');
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatchObject({ level: 'warn', eservice: es, status });
    expect(warnings[0]!.correlationId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('a dropped connection is retried, then success', async () => {
    const es = newEService({ signals: 2 });
    const { client, metrics } = harness();
    sim.faults.inject('pull', { kind: 'drop', times: 1, eserviceId: es });
    expect((await client.pull(es, 0)).lastSignalId).toBe(2);
    expect(await counterValue(metrics, { eservice: es, status: 'error' })).toBe(1);
  });

  it('a timeout is retried, then success', async () => {
    const es = newEService({ signals: 2 });
    const { client } = harness({ requestTimeoutMs: 300 });
    sim.faults.inject('pull', { kind: 'delay', ms: 3000, times: 1, eserviceId: es });
    const before = pullRequests();
    expect((await client.pull(es, 0)).lastSignalId).toBe(2);
    expect(pullRequests() - before).toBe(2);
  });

  it('a body cut by the connection is retried like a network error, never returned in part', async () => {
    const es = newEService({ signals: 4 });
    const { client } = harness();
    sim.faults.inject('pull', { kind: 'truncate', times: 1, eserviceId: es });
    expect((await client.pull(es, 0)).signals.map((s) => s.signalId)).toEqual([1, 2, 3, 4]);
  });

  it('retries exhausted: HUB_UNAVAILABLE, retryable, after maxRetries+1 attempts', async () => {
    const es = newEService({ signals: 1 });
    const { client } = harness({ maxRetries: 2 });
    sim.faults.inject('pull', { kind: 'status', status: 503, eserviceId: es });
    const before = pullRequests();
    const err = await failure(client.pull(es, 0));
    expect(err).toMatchObject({ code: 'HUB_UNAVAILABLE', status: 503, retryable: true });
    expect(err.message).toContain('gave up after 3 attempts');
    expect(pullRequests() - before).toBe(3);
  });

  it('network errors exhausted: HUB_UNAVAILABLE naming the failure', async () => {
    const es = newEService({ signals: 1 });
    const { client } = harness({ maxRetries: 1 });
    sim.faults.inject('pull', { kind: 'drop', eserviceId: es });
    const err = await failure(client.pull(es, 0));
    expect(err).toMatchObject({ code: 'HUB_UNAVAILABLE', retryable: true });
    expect(err.message).toMatch(/network error .*gave up after 2 attempts/);
  });

  it('an AbortSignal ends a call at once with SHUTTING_DOWN', async () => {
    const es = newEService({ signals: 1 });
    const { client } = harness();
    sim.faults.inject('pull', { kind: 'delay', ms: 30_000, times: 1, eserviceId: es });
    const controller = new AbortController();
    const pending = client.pull(es, 0, 10, controller.signal);
    setTimeout(() => controller.abort(), 100);
    expect((await failure(pending)).code).toBe('SHUTTING_DOWN');
    // Aborting during the retry backoff works too.
    sim.faults.inject('pull', { kind: 'status', status: 503, eserviceId: es });
    const slow = harness({ maxRetries: 5, maxRetryDelayMs: 60_000, minRetryDelayMs: 20_000 });
    const controller2 = new AbortController();
    const pending2 = slow.client.pull(es, 0, 10, controller2.signal);
    setTimeout(() => controller2.abort(), 200);
    expect((await failure(pending2)).code).toBe('SHUTTING_DOWN');
  });
});

describe('malformed answers from the simulator: HUB_BAD_RESPONSE, not retried', () => {
  it('a 200 whose body is not JSON', async () => {
    const es = newEService({ signals: 1 });
    const { client } = harness();
    sim.faults.inject('pull', { kind: 'malformed', times: 1, eserviceId: es });
    const before = pullRequests();
    const err = await failure(client.pull(es, 0));
    expect(err).toMatchObject({ code: 'HUB_BAD_RESPONSE', status: 200 });
    expect(err.message).toContain('body: not valid JSON');
    expect(pullRequests() - before).toBe(1);
  });

  const sig = (es: string, signalId: unknown, over: Record<string, unknown> = {}) => ({ signalId, signalType: 'UPDATE', objectId: 'p', objectType: 't', eserviceId: es, ...over });
  const shapes: Array<[string, (es: string) => unknown, RegExp]> = [
    ['wrong shape', () => ({ unexpected: true }), /signals: missing/],
    ['non-integer id', (es) => ({ signals: [sig(es, 1.5)], lastSignalId: 1.5 }), /signals\[0\]\.signalId: 1\.5 is not an integer/],
    ['id not above the cursor', (es) => ({ signals: [sig(es, 6), sig(es, 5)], lastSignalId: 5 }), /signals\[1\]\.signalId: 5 is not above the cursor 5/],
    ['not ascending', (es) => ({ signals: [sig(es, 8), sig(es, 7)], lastSignalId: 7 }), /signals\[1\]\.signalId: 7 is not above the previous id 8/],
    ['id above 2^53-1', (es) => ({ signals: [sig(es, 2 ** 53 + 2)], lastSignalId: 2 ** 53 + 2 }), /is above 2\^53-1/],
    ['ids not ascending', (es) => ({ signals: [sig(es, 7), sig(es, 6)], lastSignalId: 6 }), /signals\[1\]\.signalId: 6 is not above the previous id 7/],
    ['lastSignalId mismatch', (es) => ({ signals: [sig(es, 6), sig(es, 7)], lastSignalId: 9 }), /lastSignalId: 9 differs from the last signal's id 7/],
  ];
  it.each(shapes)('%s', async (_name, body, expected) => {
    const es = newEService({ signals: 1 });
    const { client } = harness();
    sim.faults.inject('pull', { kind: 'wrongShape', body: body(es), times: 1, eserviceId: es });
    const err = await failure(client.pull(es, 5));
    expect(err.code).toBe('HUB_BAD_RESPONSE');
    expect(err.message).toMatch(expected);
    expect(err.message).toContain(`e-service ${es} from cursor 5`);
  });
});

describe('answers the simulator cannot produce (a local server)', () => {
  let server: Server;
  let base: string;
  let respond: (res: ServerResponse) => void = (res) => res.end();
  const staticVoucher: VoucherSource = { get: async () => 'eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.c2ln', invalidate: () => undefined };

  beforeAll(async () => {
    server = createServer((req, res) => {
      req.resume();
      respond(res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/1.0/pull`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const raw = (status: number, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) => (res: ServerResponse) => {
    res.writeHead(status, { ...headers, 'content-length': String(Buffer.byteLength(body)) });
    res.end(body);
  };

  it('an id literal above 2^53-1 that JSON.parse would round', async () => {
    const es = 'es-raw';
    respond = raw(200, `{"signals":[{"signalId":9007199254740993,"signalType":"UPDATE","objectId":"p","objectType":"t","eserviceId":"es-raw"}],"lastSignalId":9007199254740993}`);
    const { client } = harness({ baseUrl: base }, staticVoucher);
    const err = await failure(client.pull(es, 0));
    expect(err.code).toBe('HUB_BAD_RESPONSE');
    expect(err.message).toMatch(/above 2\^53-1/);
  });

  it('a complete answer whose JSON is truncated', async () => {
    respond = raw(200, '{"signals":[{"signalId":1,"signalType":"UPD');
    const { client } = harness({ baseUrl: base }, staticVoucher);
    const err = await failure(client.pull('es-raw', 0));
    expect(err.code).toBe('HUB_BAD_RESPONSE');
    expect(err.message).toContain('body: not valid JSON');
  });

  it('an empty 206 is accepted (the server\'s 206 check ignores the time window)', async () => {
    respond = raw(206, '{"signals":[],"lastSignalId":null}');
    const { client } = harness({ baseUrl: base }, staticVoucher);
    expect(await client.pull('es-raw', 7)).toEqual({ status: 206, signals: [], lastSignalId: null });
  });

  it('a status the API never answers (204, 302) is HUB_BAD_RESPONSE', async () => {
    const { client } = harness({ baseUrl: base }, staticVoucher);
    respond = (res) => {
      res.writeHead(204);
      res.end();
    };
    expect((await failure(client.pull('es-raw', 0))).code).toBe('HUB_BAD_RESPONSE');
    respond = raw(302, '', { location: 'http://elsewhere.invalid/' });
    expect((await failure(client.pull('es-raw', 0))).code).toBe('HUB_BAD_RESPONSE');
  });

  it('a problem detail echoing the Authorization header does not leak the voucher', async () => {
    const token = await m2mVoucherSource(provider).get();
    respond = raw(400, JSON.stringify({ status: 400, title: 'Bad Request', detail: `bad header Bearer ${token}`, correlationId: 'c-1', errors: [{ code: '0001', detail: token }] }), {
      'content-type': 'application/problem+json',
    });
    const source: VoucherSource = { get: async () => token, invalidate: () => undefined };
    const { client, logs } = harness({ baseUrl: base }, source);
    const err = await failure(client.pull('es-raw', 0));
    expect(err).toMatchObject({ code: 'HUB_BAD_REQUEST', correlationId: 'c-1', problemCodes: ['0001'] });
    expect(err.message).toContain('[jwt]');
    expect(JSON.stringify({ message: err.message, err })).not.toContain(token);
    expect(logs.join('')).not.toContain(token);
  });
});

describe('secrets', () => {
  it('no voucher in any log line or error message across retries, refreshes and failures', async () => {
    const es = newEService({ signals: 3 });
    const { client, logs } = harness({ maxRetries: 1 });
    sim.faults.inject('pull', { kind: 'status', status: 401, code: '9001', times: 1, eserviceId: es });
    sim.faults.inject('pull', { kind: 'status', status: 503, times: 1, eserviceId: es });
    sim.faults.inject('pull', { kind: 'status', status: 429, headers: { 'retry-after': '0.05' }, times: 1, eserviceId: es });
    await client.pull(es, 0);
    sim.faults.inject('pull', { kind: 'status', status: 401, code: '9994', eserviceId: es });
    const unauthorized = await failure(client.pull(es, 0));
    sim.faults.clear();
    sim.faults.inject('pull', { kind: 'drop', eserviceId: es });
    const unavailable = await failure(client.pull(es, 0));
    expect(issuedVouchers.size).toBeGreaterThan(1);
    const everything = [logs.join(''), unauthorized.message, unavailable.message, JSON.stringify(unauthorized), JSON.stringify(unavailable)].join('\n');
    expect(logs.length).toBeGreaterThan(3);
    for (const voucher of issuedVouchers) expect(everything).not.toContain(voucher);
  });
});
