import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AppError, isAppError } from '../src/errors.js';
import { Metrics } from '../src/metrics.js';
import { TOKEN_REJECTED_HINT } from '../src/pdnd/token-client.js';
import { VoucherProvider, withVoucher, type Voucher } from '../src/pdnd/vouchers.js';
import { startSimulator, type Simulator } from '../src/simulator/index.js';
import { tempDir } from './helpers/fs.js';
import { FAST_RETRY, captureLogger, client, eservice, pdndConfig, privateKeyFragments, registerEServiceClient, registerM2m } from './pdnd-fixtures.js';

let sim: Simulator;
let dir: string;
const m2mClient = () => client(dir, 'api-interop-client', 'kid-m2m');

beforeEach(async () => {
  sim = await startSimulator();
  dir = tempDir('shs-vouchers-');
  registerM2m(sim, m2mClient());
});
afterEach(async () => {
  await sim.close();
});

function tokenRequests(): number {
  return sim.stats().requests.token ?? 0;
}

function provider(opts: { clock?: () => number; metrics?: Metrics; logger?: ReturnType<typeof captureLogger>['logger']; margin?: number } = {}): VoucherProvider {
  return new VoucherProvider({
    pdnd: pdndConfig(sim, m2mClient(), { voucherRefreshMarginSeconds: opts.margin ?? 30 }),
    retry: FAST_RETRY,
    ...(opts.clock ? { clock: opts.clock } : {}),
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
  });
}

async function refreshCount(metrics: Metrics, kind: string, outcome: string): Promise<number> {
  const metric = await metrics.voucherRefreshes.get();
  return metric.values.find((v) => v.labels.kind === kind && v.labels.outcome === outcome)?.value ?? 0;
}

describe('VoucherProvider against the simulated PDND', () => {
  it('obtains an M2M voucher the simulator accepts, then reuses it without a second request', async () => {
    const metrics = new Metrics();
    const vouchers = provider({ metrics });
    const first = await vouchers.m2m();
    expect(sim.stats().tokenRejections).toEqual([]);
    expect(sim.stats().tokensIssued).toBe(1);
    const claims = decodeJwt(first.token);
    expect(claims.aud).toBe(sim.m2mAudience);
    expect(claims.purposeId).toBeUndefined();
    expect(first.trackingEvidence).toBeUndefined();

    const second = await vouchers.m2m();
    expect(second.token).toBe(first.token);
    expect(tokenRequests()).toBe(1);
    expect(await refreshCount(metrics, 'm2m', 'ok')).toBe(1);
  });

  it('e-service vouchers carry the purposeId and are cached per (client, purpose)', async () => {
    const esClient = client(dir, 'es-client');
    registerEServiceClient(sim, esClient, ['purpose-a', 'purpose-b']);
    sim.addEService({ id: 'es-1' });
    sim.addEService({ id: 'es-2' });
    const vouchers = provider();
    const a1 = await vouchers.eservice(eservice(sim, 'es-1', esClient, 'purpose-a'));
    expect(sim.stats().tokenRejections).toEqual([]);
    expect(decodeJwt(a1.token).purposeId).toBe('purpose-a');
    // Same client and purpose on another e-service: same voucher.
    const a2 = await vouchers.eservice(eservice(sim, 'es-2', esClient, 'purpose-a'));
    expect(a2.token).toBe(a1.token);
    const b = await vouchers.eservice(eservice(sim, 'es-2', esClient, 'purpose-b'));
    expect(decodeJwt(b.token).purposeId).toBe('purpose-b');
    const m = await vouchers.m2m();
    expect(new Set([a1.token, b.token, m.token]).size).toBe(3);
    expect(tokenRequests()).toBe(3);
  });

  it('refreshes ahead of expiry: reused until expires_in minus the margin, then replaced', async () => {
    sim.setVoucherTtl(60);
    let now = Date.now();
    const vouchers = provider({ clock: () => now, margin: 10 });
    const first = await vouchers.m2m();
    expect(first.expiresAt).toBeGreaterThanOrEqual(now + 59_000);
    now += 49_000;
    expect((await vouchers.m2m()).token).toBe(first.token);
    expect(tokenRequests()).toBe(1);
    now += 2_000; // 51 s: inside the 10 s margin, still 9 s before expiry
    const second = await vouchers.m2m();
    expect(second.token).not.toBe(first.token);
    expect(tokenRequests()).toBe(2);
  });

  it('a voucher shorter-lived than twice the margin is still reused for half its life', async () => {
    sim.setVoucherTtl(4);
    let now = Date.now();
    const vouchers = provider({ clock: () => now, margin: 30 });
    const first = await vouchers.m2m();
    now += 1_500;
    expect((await vouchers.m2m()).token).toBe(first.token);
    now += 1_000; // 2.5 s of 4 s
    expect((await vouchers.m2m()).token).not.toBe(first.token);
    expect(tokenRequests()).toBe(2);
  });

  it('concurrent callers share one token request', async () => {
    sim.faults.inject('token', { kind: 'delay', ms: 200, times: 1 });
    const vouchers = provider();
    const all = await Promise.all(Array.from({ length: 25 }, () => vouchers.m2m()));
    expect(new Set(all.map((v) => v.token)).size).toBe(1);
    expect(tokenRequests()).toBe(1);
  });

  it('keeps serving the current voucher when a refresh ahead of expiry fails, until it nears expiry', async () => {
    sim.setVoucherTtl(60);
    let now = Date.now();
    const { logger, text } = captureLogger();
    const vouchers = provider({ clock: () => now, margin: 20, logger });
    const first = await vouchers.m2m();
    sim.faults.inject('token', { kind: 'status', status: 503 });
    now += 45_000; // refresh due at 40 s; fallback allowed until 50 s
    expect((await vouchers.m2m()).token).toBe(first.token);
    expect(text()).toContain('voucher refresh failed');
    now += 6_000;
    await expect(vouchers.m2m()).rejects.toMatchObject({ code: 'TOKEN_UNAVAILABLE', status: 503 });
    sim.faults.clear('token');
    expect((await vouchers.m2m()).token).not.toBe(first.token);
  });
});

describe('token endpoint failures', () => {
  it('400 is TOKEN_REJECTED with the correlationId and the debugging hint, and is not retried', async () => {
    const metrics = new Metrics();
    const vouchers = new VoucherProvider({ pdnd: pdndConfig(sim, client(dir, 'not-registered')), retry: FAST_RETRY, metrics });
    const err = await vouchers.m2m().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AppError);
    const e = err as AppError;
    expect(e.code).toBe('TOKEN_REJECTED');
    expect(e.status).toBe(400);
    expect(e.correlationId).toMatch(/^[0-9a-f-]{36}$/);
    expect(e.problemCodes).toEqual(['015-0008']);
    expect(e.message).toContain(e.correlationId!);
    expect(e.message).toContain(TOKEN_REJECTED_HINT);
    expect(e.retryable).toBe(false);
    expect(tokenRequests()).toBe(1);
    expect(await refreshCount(metrics, 'm2m', 'rejected')).toBe(1);
  });

  it('a wrong kid or audience is refused the same way', async () => {
    const wrongKid = new VoucherProvider({ pdnd: pdndConfig(sim, { ...m2mClient(), keyId: 'unknown-kid' }), retry: FAST_RETRY });
    await expect(wrongKid.m2m()).rejects.toMatchObject({ code: 'TOKEN_REJECTED' });
    const wrongAud = new VoucherProvider({ pdnd: pdndConfig(sim, m2mClient(), { assertionAudience: 'auth.uat.interop.pagopa.it/client-assertion' }), retry: FAST_RETRY });
    await expect(wrongAud.m2m()).rejects.toMatchObject({ code: 'TOKEN_REJECTED' });
    expect(sim.stats().tokenRejections).toEqual([expect.stringContaining('kid'), expect.stringContaining('aud')]);
  });

  it('429 and 500 are retried', async () => {
    sim.faults.inject('token', { kind: 'status', status: 429, problem: false, times: 1 });
    sim.faults.inject('token', { kind: 'status', status: 500, times: 1 });
    const metrics = new Metrics();
    const vouchers = new VoucherProvider({ pdnd: pdndConfig(sim, m2mClient()), retry: FAST_RETRY, metrics });
    const v = await vouchers.m2m();
    expect(v.token.length).toBeGreaterThan(0);
    expect(tokenRequests()).toBe(3);
    expect(sim.stats().tokenRejections).toEqual([]);
    expect(await refreshCount(metrics, 'm2m', 'ok')).toBe(1);
  });

  it('dropped connections are retried', async () => {
    sim.faults.inject('token', { kind: 'drop', times: 2 });
    const vouchers = provider();
    await expect(vouchers.m2m()).resolves.toMatchObject({ token: expect.any(String) });
    expect(tokenRequests()).toBe(3);
  });

  it('persistent 503 gives TOKEN_UNAVAILABLE after the bounded retries', async () => {
    sim.faults.inject('token', { kind: 'status', status: 503 });
    const metrics = new Metrics();
    const vouchers = new VoucherProvider({ pdnd: pdndConfig(sim, m2mClient()), retry: FAST_RETRY, metrics });
    await expect(vouchers.m2m()).rejects.toMatchObject({ code: 'TOKEN_UNAVAILABLE', status: 503, retryable: true });
    expect(tokenRequests()).toBe(FAST_RETRY.retries + 1);
    expect(await refreshCount(metrics, 'm2m', 'error')).toBe(1);
  });
});

/** A resource that refuses the vouchers in `refused` with 401 and counts requests. */
async function resource(refused: Set<string>): Promise<{ url: string; hits: () => number; server: Server }> {
  let hits = 0;
  const server = createServer((req, res) => {
    hits++;
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '';
    res.writeHead(refused.has(token) ? 401 : 200).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, hits: () => hits, server };
}

class Unauthorized extends Error {}
async function callResource(url: string, v: Voucher): Promise<string> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${v.token}` } });
  if (res.status === 401) throw new Unauthorized('401');
  return v.token;
}

describe('withVoucher: on a 401 refresh once and retry once', () => {
  it('retries once with a fresh voucher and succeeds', async () => {
    const vouchers = provider();
    const stale = await vouchers.m2m();
    const r = await resource(new Set([stale.token]));
    try {
      const used = await withVoucher(() => vouchers.m2m(), (v) => vouchers.invalidate(v), (v) => callResource(r.url, v), (e) => e instanceof Unauthorized);
      expect(used).not.toBe(stale.token);
      expect(r.hits()).toBe(2);
      expect(tokenRequests()).toBe(2);
    } finally {
      r.server.close();
    }
  });

  it('a second 401 propagates after exactly one refresh', async () => {
    const vouchers = provider();
    const refused = new Set<string>();
    const r = await resource(refused);
    try {
      const err = await withVoucher(
        () => vouchers.m2m(),
        (v) => vouchers.invalidate(v),
        async (v) => {
          refused.add(v.token);
          return callResource(r.url, v);
        },
        (e) => e instanceof Unauthorized,
      ).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Unauthorized);
      expect(r.hits()).toBe(2);
      expect(tokenRequests()).toBe(2);
    } finally {
      r.server.close();
    }
  });

  it('many callers refused with the same voucher cause one refresh', async () => {
    const vouchers = provider();
    const stale = await vouchers.m2m();
    const r = await resource(new Set([stale.token]));
    try {
      const used = await Promise.all(
        Array.from({ length: 10 }, () => withVoucher(() => vouchers.m2m(), (v) => vouchers.invalidate(v), (v) => callResource(r.url, v), (e) => e instanceof Unauthorized)),
      );
      expect(new Set(used).size).toBe(1);
      expect(tokenRequests()).toBe(2);
    } finally {
      r.server.close();
    }
  });

  it('other errors are not retried', async () => {
    const vouchers = provider();
    let calls = 0;
    const boom = new Error('boom');
    await expect(
      withVoucher(
        () => vouchers.m2m(),
        (v) => vouchers.invalidate(v),
        async () => {
          calls++;
          throw boom;
        },
        (e) => e instanceof Unauthorized,
      ),
    ).rejects.toBe(boom);
    expect(calls).toBe(1);
    expect(tokenRequests()).toBe(1);
  });
});

describe('secrets stay out of logs and errors', () => {
  it('no voucher, assertion or private key in captured logs or error messages', async () => {
    const { logger, text } = captureLogger();
    const vouchers = provider({ logger });
    const v = await vouchers.m2m();
    sim.faults.inject('token', { kind: 'status', status: 500, times: 2 });
    vouchers.invalidate(v);
    const v2 = await vouchers.m2m();
    const rejected = new VoucherProvider({ pdnd: pdndConfig(sim, client(dir, 'stranger')), retry: FAST_RETRY, logger });
    const err = await rejected.m2m().catch((e: unknown) => e);
    expect(isAppError(err)).toBe(true);

    const everything = text() + JSON.stringify({ message: (err as Error).message, stack: (err as Error).stack, details: (err as AppError).details });
    expect(text()).toContain('token request failed, retrying');
    for (const secret of [v.token, v2.token, ...v.token.split('.'), ...privateKeyFragments()]) {
      expect(everything).not.toContain(secret);
    }
    // Assertions are JWTs signed with our key: no JWS-looking string at all may be logged.
    expect(everything).not.toMatch(/eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+/);
  });
});
