import { createHash, createPublicKey, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { Writable } from 'node:stream';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { fetch } from 'undici';
import { SignJWT, decodeJwt } from 'jose';
import pino from 'pino';
import { startSimulator, type Simulator, type SimulatorOptions } from '../src/simulator/index.js';
import { testKey } from './helpers/keys.js';

// Tests drive the simulator through real HTTP on loopback, with assertions signed here by jose:
// the project's own PDND client is tested elsewhere against this simulator.

const ES = 'b1817321-0486-4c75-89e5-4ee297250418';
const ORG = 'org-consumer';
const M2M = { clientId: 'client-m2m', kid: 'kid-m2m' };
const ESC = { clientId: 'client-es', kid: 'kid-es', purposeId: 'purpose-1' };
const GOVWAY_SEED = 'Xzzh3pQqLp+VK7gG9NwR6w==';
const GOVWAY_SUBJECT = 'RSSMRA80A01H501Z';
const GOVWAY_PSEUDONYM = 'LAa/aPrxlEvOKacO1KFhEJDVj+UqHXg30Ksb7kE1+z8=';
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let otherKey: KeyObject;
beforeAll(() => {
  otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
});

const running: Simulator[] = [];
afterEach(async () => {
  while (running.length > 0) await running.pop()!.close();
});

/** A simulator with a movable clock, one m2m client, one e-service client and one e-service. */
async function setup(options: SimulatorOptions = {}) {
  const clock = { now: Date.parse('2025-03-01T10:00:00Z') };
  const sim = await startSimulator({ now: () => clock.now, ...options });
  running.push(sim);
  sim.registerClient({ clientId: M2M.clientId, kind: 'm2m', keyId: M2M.kid, publicKey: testKey().publicKey, organizationId: ORG });
  sim.registerClient({ clientId: ESC.clientId, kind: 'eservice', keyId: ESC.kid, publicKey: testKey().publicKey, organizationId: ORG, purposes: [{ id: ESC.purposeId, eserviceId: ES }] });
  sim.addEService({ id: ES, seed: GOVWAY_SEED, producerAudience: 'producer.example/es' });
  return { sim, clock };
}

interface AssertionOptions {
  clientId?: string;
  kid?: string;
  aud?: string;
  key?: KeyObject;
  alg?: string;
  typ?: string | null;
  iss?: string;
  sub?: string;
  iat?: number;
  exp?: number;
  jti?: string | null;
  purposeId?: string;
  digest?: unknown;
  extraClaims?: Record<string, unknown>;
  extraHeader?: Record<string, unknown>;
  omit?: ('iat' | 'exp')[];
}

async function assertion(sim: Simulator, nowMs: number, o: AssertionOptions = {}): Promise<string> {
  const clientId = o.clientId ?? M2M.clientId;
  const iat = o.iat ?? Math.floor(nowMs / 1000);
  const claims: Record<string, unknown> = { iss: o.iss ?? clientId, sub: o.sub ?? clientId, aud: o.aud ?? sim.assertionAudience, ...(o.extraClaims ?? {}) };
  if (o.jti !== null) claims.jti = o.jti ?? randomUUID();
  if (!o.omit?.includes('iat')) claims.iat = iat;
  if (!o.omit?.includes('exp')) claims.exp = o.exp ?? iat + 300;
  if (o.purposeId !== undefined) claims.purposeId = o.purposeId;
  if (o.digest !== undefined) claims.digest = o.digest;
  const header: Record<string, unknown> = { alg: o.alg ?? 'RS256', kid: o.kid ?? M2M.kid, ...(o.extraHeader ?? {}) };
  if (o.typ !== null) header.typ = o.typ ?? 'JWT';
  return new SignJWT(claims).setProtectedHeader(header as { alg: string }).sign(o.key ?? testKey().privateKey);
}

async function requestToken(sim: Simulator, clientId: string, clientAssertion: string, form: Record<string, string> = {}) {
  const res = await fetch(sim.tokenUrl, {
    method: 'POST',
    body: new URLSearchParams({ client_id: clientId, client_assertion: clientAssertion, client_assertion_type: JWT_BEARER, grant_type: 'client_credentials', ...form }),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
}

async function m2mVoucher(sim: Simulator, nowMs: number): Promise<string> {
  const r = await requestToken(sim, M2M.clientId, await assertion(sim, nowMs));
  expect(r.status).toBe(200);
  return r.body.access_token as string;
}

async function eserviceVoucher(sim: Simulator, nowMs: number, digest?: string): Promise<string> {
  const a = await assertion(sim, nowMs, { clientId: ESC.clientId, kid: ESC.kid, purposeId: ESC.purposeId, ...(digest ? { digest: { alg: 'SHA256', value: digest } } : {}) });
  const r = await requestToken(sim, ESC.clientId, a);
  expect(r.status).toBe(200);
  return r.body.access_token as string;
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers });
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, headers: res.headers, text, body: body as Record<string, any> };
}

function pull(sim: Simulator, voucher: string, query = '', eserviceId = ES) {
  return get(`${sim.pullBaseUrl}/signals/${eserviceId}${query}`, { authorization: `Bearer ${voucher}` });
}

function expectProblem(r: { status: number; headers: { get(name: string): string | null }; body: Record<string, any> }, status: number, code: string): void {
  expect(r.status).toBe(status);
  expect(r.headers.get('content-type')).toBe('application/problem+json');
  expect(r.body).toMatchObject({ type: expect.any(String), status, title: expect.any(String), detail: expect.any(String), errors: [{ code, detail: expect.any(String) }] });
  expect(r.body.correlationId).toMatch(UUID);
}

describe('simulated PDND token endpoint', () => {
  it('issues an M2M voucher with the M2M audience and the organization, and the configured expires_in', async () => {
    const { sim, clock } = await setup({ voucherTtlSeconds: 120 });
    const r = await requestToken(sim, M2M.clientId, await assertion(sim, clock.now));
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ token_type: 'Bearer', expires_in: 120 });
    const claims = decodeJwt(r.body.access_token as string);
    expect(claims).toMatchObject({ aud: 'interop.pagopa.it/m2m', organizationId: ORG, client_id: M2M.clientId, sub: M2M.clientId });
    expect(claims.exp! - claims.iat!).toBe(120);
    expect(claims.purposeId).toBeUndefined();
    expect(sim.stats().tokensIssued).toBe(1);
  });

  it('issues an e-service voucher with the producer audience, the purposeId and the digest', async () => {
    const { sim, clock } = await setup();
    const digest = createHash('sha256').update('some jws').digest('hex');
    const voucher = await eserviceVoucher(sim, clock.now, digest);
    expect(decodeJwt(voucher)).toMatchObject({ aud: 'producer.example/es', purposeId: ESC.purposeId, digest: { alg: 'SHA256', value: digest }, organizationId: ORG });
  });

  it('accepts a purposeId from an M2M client (ignored, as PDND does)', async () => {
    const { sim, clock } = await setup();
    const r = await requestToken(sim, M2M.clientId, await assertion(sim, clock.now, { purposeId: 'whatever' }));
    expect(r.status).toBe(200);
    expect(decodeJwt(r.body.access_token as string).aud).toBe('interop.pagopa.it/m2m');
  });

  const refusals: [string, (sim: Simulator, now: number) => Promise<{ clientId?: string; assertion: string; form?: Record<string, string> }>, RegExp][] = [
    ['alg RS384', async (sim, now) => ({ assertion: await assertion(sim, now, { alg: 'RS384' }) }), /alg/],
    ['alg PS256', async (sim, now) => ({ assertion: await assertion(sim, now, { alg: 'PS256' }) }), /alg/],
    ['no typ', async (sim, now) => ({ assertion: await assertion(sim, now, { typ: null }) }), /typ/],
    ['typ at+jwt', async (sim, now) => ({ assertion: await assertion(sim, now, { typ: 'at+jwt' }) }), /typ/],
    ['unknown kid', async (sim, now) => ({ assertion: await assertion(sim, now, { kid: 'nope' }) }), /kid/],
    ['kid of another client', async (sim, now) => ({ assertion: await assertion(sim, now, { kid: ESC.kid }) }), /kid/],
    ['signed by another key', async (sim, now) => ({ assertion: await assertion(sim, now, { key: otherKey }) }), /signature/],
    ['iss differs from client_id', async (sim, now) => ({ assertion: await assertion(sim, now, { iss: 'someone' }) }), /iss/],
    ['sub differs from client_id', async (sim, now) => ({ assertion: await assertion(sim, now, { sub: 'someone' }) }), /sub/],
    ['wrong aud (production audience)', async (sim, now) => ({ assertion: await assertion(sim, now, { aud: 'auth.interop.pagopa.it/client-assertion' }) }), /aud/],
    ['expired', async (sim, now) => ({ assertion: await assertion(sim, now, { iat: now / 1000 - 600, exp: now / 1000 - 300 }) }), /expired/],
    ['exp too far ahead', async (sim, now) => ({ assertion: await assertion(sim, now, { exp: now / 1000 + 3600 }) }), /lifetime/],
    ['iat in the future', async (sim, now) => ({ assertion: await assertion(sim, now, { iat: now / 1000 + 120 }) }), /future/],
    ['no jti', async (sim, now) => ({ assertion: await assertion(sim, now, { jti: null }) }), /jti/],
    ['no iat', async (sim, now) => ({ assertion: await assertion(sim, now, { omit: ['iat'] }) }), /iat/],
    ['no exp', async (sim, now) => ({ assertion: await assertion(sim, now, { omit: ['exp'] }) }), /exp/],
    ['nbf claim', async (sim, now) => ({ assertion: await assertion(sim, now, { extraClaims: { nbf: now / 1000 } }) }), /unexpected claims: nbf/],
    ['extra header field', async (sim, now) => ({ assertion: await assertion(sim, now, { extraHeader: { x5t: 'abc' } }) }), /unexpected header/],
    ['aud as an array', async (sim, now) => ({ assertion: await assertion(sim, now, { extraClaims: { aud: [sim.assertionAudience] } }) }), /aud/],
    ['e-service client without purposeId', async (sim, now) => ({ clientId: ESC.clientId, assertion: await assertion(sim, now, { clientId: ESC.clientId, kid: ESC.kid }) }), /purposeId required/],
    ['purposeId of someone else', async (sim, now) => ({ clientId: ESC.clientId, assertion: await assertion(sim, now, { clientId: ESC.clientId, kid: ESC.kid, purposeId: 'purpose-x' }) }), /not a purpose/],
    ['digest with uppercase hex', async (sim, now) => ({ assertion: await assertion(sim, now, { digest: { alg: 'SHA256', value: 'A'.repeat(64) } }) }), /digest/],
    ['digest with alg SHA-256', async (sim, now) => ({ assertion: await assertion(sim, now, { digest: { alg: 'SHA-256', value: 'a'.repeat(64) } }) }), /digest/],
    ['digest too short', async (sim, now) => ({ assertion: await assertion(sim, now, { digest: { alg: 'SHA256', value: 'a'.repeat(63) } }) }), /digest/],
    ['unknown client_id', async (sim, now) => ({ clientId: 'nobody', assertion: await assertion(sim, now, { clientId: 'nobody' }) }), /unknown client/],
    ['grant_type password', async (sim, now) => ({ assertion: await assertion(sim, now), form: { grant_type: 'password' } }), /grant_type/],
    ['wrong client_assertion_type', async (sim, now) => ({ assertion: await assertion(sim, now), form: { client_assertion_type: 'jwt' } }), /client_assertion_type/],
    ['not a JWS', async () => ({ assertion: 'not-a-jwt' }), /not a JWS/],
  ];

  it.each(refusals)('refuses an assertion with %s: 400 problem 015-0008 with a correlationId', async (_name, make, reason) => {
    const { sim, clock } = await setup();
    const { clientId, assertion: a, form } = await make(sim, clock.now);
    const r = await requestToken(sim, clientId ?? M2M.clientId, a, form);
    expectProblem({ ...r, headers: r.headers }, 400, '015-0008');
    expect(sim.stats().tokenRejections.at(-1)).toMatch(reason);
    expect(sim.stats().tokensIssued).toBe(0);
  });

  it('refuses a replayed jti, but accepts the same jti from another client', async () => {
    const { sim, clock } = await setup();
    const jti = randomUUID();
    expect((await requestToken(sim, M2M.clientId, await assertion(sim, clock.now, { jti }))).status).toBe(200);
    const again = await requestToken(sim, M2M.clientId, await assertion(sim, clock.now, { jti }));
    expect(again.status).toBe(400);
    expect(sim.stats().tokenRejections.at(-1)).toMatch(/jti already used/);
    const other = await requestToken(sim, ESC.clientId, await assertion(sim, clock.now, { clientId: ESC.clientId, kid: ESC.kid, purposeId: ESC.purposeId, jti }));
    expect(other.status).toBe(200);
  });

  it('accepts any of several registered keys of a client', async () => {
    const { sim, clock } = await setup();
    sim.registerClient({ clientId: M2M.clientId, kind: 'm2m', keyId: 'kid-2', publicKey: otherKey, organizationId: ORG });
    expect((await requestToken(sim, M2M.clientId, await assertion(sim, clock.now, { kid: 'kid-2', key: otherKey }))).status).toBe(200);
    expect((await requestToken(sim, M2M.clientId, await assertion(sim, clock.now))).status).toBe(200);
  });

  it('injects 429 without Retry-After and 500', async () => {
    const { sim, clock } = await setup();
    sim.faults.inject('token', { kind: 'status', status: 429, times: 1 });
    sim.faults.inject('token', { kind: 'status', status: 500, times: 1 });
    const first = await requestToken(sim, M2M.clientId, await assertion(sim, clock.now));
    expect(first.status).toBe(429);
    expect(first.headers.get('retry-after')).toBeNull();
    expect((await requestToken(sim, M2M.clientId, await assertion(sim, clock.now))).status).toBe(500);
    expect((await requestToken(sim, M2M.clientId, await assertion(sim, clock.now))).status).toBe(200);
    expect(sim.stats().responses.token).toEqual({ '429': 1, '500': 1, '200': 1 });
  });
});

describe('simulated Signal Hub pull API', () => {
  it('pages with an exclusive bound, ascending, 206 while more exist, then 200; lastSignalId null on an empty page', async () => {
    const { sim, clock } = await setup();
    for (const id of [3, 7, 8, 20, 21]) sim.deposit(ES, { signalType: 'UPDATE', objectId: `o${id}`, objectType: 'doc', signalId: id });
    const v = await m2mVoucher(sim, clock.now);

    const p1 = await pull(sim, v, '?signalId=3&size=2');
    expect(p1.status).toBe(206);
    expect(p1.headers.get('content-type')).toBe('application/json');
    expect(p1.body).toEqual({
      signals: [
        { signalId: 7, signalType: 'UPDATE', objectId: 'o7', objectType: 'doc', eserviceId: ES },
        { signalId: 8, signalType: 'UPDATE', objectId: 'o8', objectType: 'doc', eserviceId: ES },
      ],
      lastSignalId: 8,
    });
    const p2 = await pull(sim, v, '?signalId=8&size=2');
    expect(p2.status).toBe(200);
    expect(p2.body.signals.map((s: { signalId: number }) => s.signalId)).toEqual([20, 21]);
    expect(p2.body.lastSignalId).toBe(21);
    const p3 = await pull(sim, v, '?signalId=21&size=2');
    expect(p3.status).toBe(200);
    expect(p3.body).toEqual({ signals: [], lastSignalId: null });
  });

  it('defaults to signalId 0 and size 10', async () => {
    const { sim, clock } = await setup();
    sim.generateSignals(ES, 12);
    const r = await pull(sim, await m2mVoucher(sim, clock.now));
    expect(r.status).toBe(206);
    expect(r.body.signals).toHaveLength(10);
    expect(r.body.signals[0].signalId).toBe(1);
  });

  it.each([['size=0'], ['size=101'], ['size=1.5'], ['size=abc'], ['size='], ['signalId=-1'], ['signalId=1e3'], ['signalId=x'], ['signalId=9007199254740992']])(
    '400 problem 0001 for %s (not clamped)',
    async (query) => {
      const { sim, clock } = await setup();
      expectProblem(await pull(sim, await m2mVoucher(sim, clock.now), `?${query}`), 400, '0001');
    },
  );

  it('accepts size 1 and 100', async () => {
    const { sim, clock } = await setup();
    sim.generateSignals(ES, 150);
    const v = await m2mVoucher(sim, clock.now);
    expect((await pull(sim, v, '?size=1')).body.signals).toHaveLength(1);
    expect((await pull(sim, v, '?size=100')).body.signals).toHaveLength(100);
  });

  it('401 10000 without Authorization; 9994 for a header not exactly "Bearer <jwt>" or a foreign token', async () => {
    const { sim, clock } = await setup();
    const v = await m2mVoucher(sim, clock.now);
    const url = `${sim.pullBaseUrl}/signals/${ES}`;
    expectProblem(await get(url), 401, '10000');
    expectProblem(await get(url, { authorization: `bearer ${v}` }), 401, '9994');
    expectProblem(await get(url, { authorization: `Bearer  ${v}` }), 401, '9994');
    expectProblem(await get(url, { authorization: v }), 401, '9994');
    expectProblem(await get(url, { authorization: 'Bearer abc.def.ghi' }), 401, '9994');
    const forged = await new SignJWT({ aud: sim.m2mAudience, organizationId: ORG }).setProtectedHeader({ alg: 'RS256' }).setExpirationTime('5m').sign(otherKey);
    expectProblem(await get(url, { authorization: `Bearer ${forged}` }), 401, '9994');
  });

  it('500 9990 (no rate-limit headers) for a voucher lacking nbf or organizationId, as the real hub (SPEC §10); the next voucher is good', async () => {
    const { sim, clock } = await setup();
    for (const claim of ['nbf', 'organizationId'] as const) {
      sim.faults.inject('token', { kind: 'voucherLacksClaim', claim, times: 1 });
      const lacking = await m2mVoucher(sim, clock.now);
      expect(decodeJwt(lacking)[claim]).toBeUndefined();
      const r = await pull(sim, lacking);
      expectProblem(r, 500, '9990');
      expect(r.headers.get('x-rate-limit-limit')).toBeNull();
      expect((await pull(sim, await m2mVoucher(sim, clock.now))).status).toBe(200);
    }
  });

  it('401 9994 for a voucher issued by another simulator instance', async () => {
    const { sim } = await setup();
    const { sim: other, clock } = await setup();
    expectProblem(await pull(sim, await m2mVoucher(other, clock.now)), 401, '9994');
  });

  it('401 9001 for an expired voucher; 9994 for an e-service voucher (wrong audience)', async () => {
    const { sim, clock } = await setup({ voucherTtlSeconds: 60 });
    const v = await m2mVoucher(sim, clock.now);
    expect((await pull(sim, v)).status).toBe(200);
    clock.now += 61_000;
    expectProblem(await pull(sim, v), 401, '9001');
    expectProblem(await pull(sim, await eserviceVoucher(sim, clock.now)), 401, '9994');
  });

  it('403 0004 when the organization has no agreement, or the e-service is unknown; a bare 403 from a WAF', async () => {
    const { sim, clock } = await setup();
    sim.addEService({ id: 'es-closed', organizationIds: ['someone-else'] });
    sim.addEService({ id: 'es-waf', organizationIds: [], forbiddenWithoutProblem: true });
    const v = await m2mVoucher(sim, clock.now);
    expectProblem(await pull(sim, v, '', 'es-closed'), 403, '0004');
    expectProblem(await pull(sim, v, '', 'es-unknown'), 403, '0004');
    const waf = await pull(sim, v, '', 'es-waf');
    expect(waf.status).toBe(403);
    expect(waf.headers.get('content-type')).toBe('text/html');
    expect(() => JSON.parse(waf.text)).toThrow();
  });

  it.each([500, 502, 503, 504])('serves an injected %i problem, then recovers', async (status) => {
    const { sim, clock } = await setup();
    const v = await m2mVoucher(sim, clock.now);
    sim.faults.inject('pull', { kind: 'status', status, times: 1 });
    expect((await pull(sim, v)).status).toBe(status);
    expect((await pull(sim, v)).status).toBe(200);
  });

  it('hides signals younger than the time window, but its 206 ignores the window: 206 then an empty 200', async () => {
    const { sim, clock } = await setup({ timeWindowMs: 10_000 });
    const t0 = clock.now;
    for (let i = 1; i <= 5; i++) sim.deposit(ES, { signalType: 'CREATE', objectId: `o${i}`, objectType: 'doc', visibleAt: t0 - 20_000 });
    for (let i = 6; i <= 8; i++) sim.deposit(ES, { signalType: 'CREATE', objectId: `o${i}`, objectType: 'doc', visibleAt: t0 - 2_000 });
    const v = await m2mVoucher(sim, clock.now);
    const first = await pull(sim, v, '?signalId=0&size=10');
    expect(first.status).toBe(206);
    expect(first.body.lastSignalId).toBe(5);
    expect(first.body.signals).toHaveLength(5);
    const second = await pull(sim, v, '?signalId=5&size=10');
    expect(second.status).toBe(200);
    expect(second.body).toEqual({ signals: [], lastSignalId: null });
    clock.now += 8_000;
    const third = await pull(sim, v, '?signalId=5&size=10');
    expect(third.status).toBe(200);
    expect(third.body.signals.map((s: { signalId: number }) => s.signalId)).toEqual([6, 7, 8]);
  });

  it('serves a late lower id once it is deposited behind a higher one', async () => {
    const { sim, clock } = await setup();
    sim.deposit(ES, { signalType: 'UPDATE', objectId: 'a', objectType: 'doc', signalId: 10 });
    const v = await m2mVoucher(sim, clock.now);
    expect((await pull(sim, v)).body.lastSignalId).toBe(10);
    sim.deposit(ES, { signalType: 'UPDATE', objectId: 'b', objectType: 'doc', signalId: 9 });
    expect((await pull(sim, v, '?signalId=8')).body.signals.map((s: { signalId: number }) => s.signalId)).toEqual([9, 10]);
    expect(() => sim.deposit(ES, { signalType: 'UPDATE', objectId: 'c', objectType: 'doc', signalId: 9 })).toThrow(/already exists/);
  });

  it('/status needs a voucher, answers "OK" and counts against the rate limit', async () => {
    const { sim, clock } = await setup({ rateLimit: { limit: 2, intervalMs: 1000 } });
    expectProblem(await get(`${sim.pullBaseUrl}/status`), 401, '10000');
    const v = await m2mVoucher(sim, clock.now);
    const ok = await get(`${sim.pullBaseUrl}/status`, { authorization: `Bearer ${v}` });
    expect(ok.status).toBe(200);
    expect(ok.body).toBe('OK');
    expect(ok.headers.get('x-rate-limit-remaining')).toBe('1');
    expect((await pull(sim, v)).status).toBe(200);
    expectProblem(await get(`${sim.pullBaseUrl}/status`, { authorization: `Bearer ${v}` }), 429, '10004');
  });

  it('rate-limits per organization with X-Rate-Limit-* headers and a fractional Retry-After, counting 429s', async () => {
    const { sim, clock } = await setup({ rateLimit: { limit: 3, intervalMs: 1000 } });
    const t0 = clock.now;
    sim.registerClient({ clientId: 'client-m2m-2', kind: 'm2m', keyId: 'kid-m2m-2', publicKey: otherKey, organizationId: ORG });
    sim.registerClient({ clientId: 'client-other-org', kind: 'm2m', keyId: 'kid-o', publicKey: otherKey, organizationId: 'org-other' });
    const v1 = await m2mVoucher(sim, clock.now);
    const v2 = (await requestToken(sim, 'client-m2m-2', await assertion(sim, clock.now, { clientId: 'client-m2m-2', kid: 'kid-m2m-2', key: otherKey }))).body.access_token as string;
    const vo = (await requestToken(sim, 'client-other-org', await assertion(sim, clock.now, { clientId: 'client-other-org', kid: 'kid-o', key: otherKey }))).body.access_token as string;

    const a = await pull(sim, v1);
    expect(a.headers.get('x-rate-limit-limit')).toBe('3');
    expect(a.headers.get('x-rate-limit-remaining')).toBe('2');
    expect(a.headers.get('x-rate-limit-interval')).toBe('1000');
    expect(a.headers.get('x-rate-limit-reset')).toBe(String(t0 + 1000));
    clock.now = t0 + 588;
    expect((await pull(sim, v2)).headers.get('x-rate-limit-remaining')).toBe('1');
    expect((await pull(sim, v1)).headers.get('x-rate-limit-remaining')).toBe('0');
    const limited = await pull(sim, v2);
    expectProblem(limited, 429, '10004');
    expect(limited.headers.get('retry-after')).toBe('0.412');
    expect(limited.headers.get('x-rate-limit-remaining')).toBe('0');
    expect(sim.stats().responses429).toBe(1);
    // Another organization has its own budget.
    expect((await pull(sim, vo)).status).toBe(200);
    clock.now = t0 + 1000;
    const next = await pull(sim, v1);
    expect(next.status).toBe(200);
    expect(next.headers.get('x-rate-limit-reset')).toBe(String(t0 + 2000));
    expect(sim.stats().responses429).toBe(1);
  });

  it('pages through a large backlog with binary search (100 000 signals, last page)', async () => {
    const { sim, clock } = await setup();
    expect(sim.generateSignals(ES, 100_000)).toEqual({ first: 1, last: 100_000 });
    const v = await m2mVoucher(sim, clock.now);
    const r = await pull(sim, v, '?signalId=99950&size=100');
    expect(r.status).toBe(200);
    expect(r.body.signals).toHaveLength(50);
    expect(r.body.lastSignalId).toBe(100_000);
    expect(sim.stats().signalsServed).toBe(50);
  });
});

describe('simulated push API', () => {
  it('deposits a signal with a voucher; refuses ids not above the last, bad shapes and missing vouchers', async () => {
    const { sim, clock } = await setup();
    const v = await m2mVoucher(sim, clock.now);
    const push = (body: unknown, auth = `Bearer ${v}`) =>
      fetch(`${sim.url}/1.0/push/signals`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const signal = { signalId: 1, objectType: 'domicile', objectId: 'abc', eserviceId: ES, signalType: 'UPDATE' };
    const ok = await push(signal);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ signalId: 1 });
    expect((await pull(sim, v)).body.signals).toEqual([{ signalId: 1, signalType: 'UPDATE', objectId: 'abc', objectType: 'domicile', eserviceId: ES }]);
    expect((await push(signal)).status).toBe(400);
    expect((await push({ ...signal, signalId: 2, signalType: 'RENAME' })).status).toBe(400);
    expect((await push({ ...signal, signalId: 2, eserviceId: 'unknown' })).status).toBe(403);
    expect((await push({ ...signal, signalId: 2 }, 'Bearer nope')).status).toBe(401);
    expect(sim.lastSignalId(ES)).toBe(1);
  });
});

describe('simulated producer crypto info', () => {
  function crypto(sim: Simulator, voucher: string | undefined, query = '', extra: Record<string, string> = {}, eserviceId = ES) {
    return get(`${sim.cryptoInfoUrl(eserviceId)}${query}`, { ...(voucher ? { authorization: `Bearer ${voucher}` } : {}), ...extra });
  }

  it('answers {seed, cryptoHashFunction} to an e-service voucher, and the producer pseudonymizes like GovWay', async () => {
    const { sim, clock } = await setup();
    const r = await crypto(sim, await eserviceVoucher(sim, clock.now));
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ seed: GOVWAY_SEED, cryptoHashFunction: 'SHA-256' });
    expect(sim.pseudonymFor(ES, GOVWAY_SUBJECT)).toBe(GOVWAY_PSEUDONYM);
    expect(sim.pseudonymFor(ES, ` ${GOVWAY_SUBJECT.toLowerCase()} `)).toBe(GOVWAY_PSEUDONYM);
    const id = sim.depositForSubject(ES, GOVWAY_SUBJECT, 'UPDATE', 'domicile');
    const page = await pull(sim, await m2mVoucher(sim, clock.now));
    expect(page.body.signals).toEqual([{ signalId: id, signalType: 'UPDATE', objectId: GOVWAY_PSEUDONYM, objectType: 'domicile', eserviceId: ES }]);
  });

  it('uses the configured spelling and recipe', async () => {
    const { sim, clock } = await setup();
    sim.addEService({ id: ES, seed: 'f3a7f54e-8e57-4a06-8bca-ac1857b6b045', cryptoHashFunction: 'sha256', recipe: { template: '${subject}${seed}', encoding: 'hex' }, producerAudience: 'producer.example/es' });
    const r = await crypto(sim, await eserviceVoucher(sim, clock.now));
    expect(r.body).toEqual({ seed: 'f3a7f54e-8e57-4a06-8bca-ac1857b6b045', cryptoHashFunction: 'sha256' });
    const expected = createHash('sha256').update('FLZCRN65R02E202Nf3a7f54e-8e57-4a06-8bca-ac1857b6b045').digest('hex');
    expect(sim.pseudonymFor(ES, 'FLZCRN65R02E202N')).toBe(expected);
  });

  it('401 without a voucher or with an M2M voucher; 403 for a purpose of another e-service; 404 without crypto info', async () => {
    const { sim, clock } = await setup();
    expect((await crypto(sim, undefined)).status).toBe(401);
    expect((await crypto(sim, await m2mVoucher(sim, clock.now))).status).toBe(401);
    sim.addEService({ id: 'es-2', producerAudience: 'producer.example/es' });
    const other = await crypto(sim, await eserviceVoucher(sim, clock.now), '', {}, 'es-2');
    expect(other.status).toBe(403);
    sim.addEService({ id: ES, seed: null, producerAudience: 'producer.example/es' });
    const none = await crypto(sim, await eserviceVoucher(sim, clock.now));
    expect(none.status).toBe(404);
    expect(none.headers.get('content-type')).toBe('application/problem+json');
  });

  it('rotates lazily: SEEDUPDATE S with "-", the next signal S+1 under the new seed, signalId S in crypto info', async () => {
    const { sim, clock } = await setup();
    sim.addEService({ id: ES, seed: GOVWAY_SEED, producerAudience: 'producer.example/es', includeSignalId: true });
    const before = sim.depositForSubject(ES, GOVWAY_SUBJECT, 'UPDATE');
    const ev = await eserviceVoucher(sim, clock.now);
    expect((await crypto(sim, ev)).body).toEqual({ seed: GOVWAY_SEED, cryptoHashFunction: 'SHA-256', signalId: 0 });
    const s = sim.rotateSeed(ES, 'new-seed-value');
    expect(s).toBe(before + 1);
    const after = sim.depositForSubject(ES, GOVWAY_SUBJECT, 'UPDATE');
    expect(after).toBe(s + 1);
    const page = await pull(sim, await m2mVoucher(sim, clock.now));
    expect(page.body.signals).toEqual([
      { signalId: before, signalType: 'UPDATE', objectId: GOVWAY_PSEUDONYM, objectType: 'subject', eserviceId: ES },
      { signalId: s, signalType: 'SEEDUPDATE', objectId: '-', objectType: '-', eserviceId: ES },
      { signalId: after, signalType: 'UPDATE', objectId: sim.pseudonymFor(ES, GOVWAY_SUBJECT, 'new-seed-value'), objectType: 'subject', eserviceId: ES },
    ]);
    expect(page.body.signals[2].objectId).not.toBe(GOVWAY_PSEUDONYM);
    expect((await crypto(sim, ev)).body).toEqual({ seed: 'new-seed-value', cryptoHashFunction: 'SHA-256', signalId: s });
  });

  it('adding an e-service again changes its settings and keeps its signals and seeds unless a seed is given', async () => {
    const { sim, clock } = await setup();
    const s = sim.rotateSeed(ES, 'rotated');
    sim.addEService({ id: ES, producerAudience: 'producer.example/es', includeSignalId: true });
    const ev = await eserviceVoucher(sim, clock.now);
    expect((await crypto(sim, ev)).body).toEqual({ seed: 'rotated', cryptoHashFunction: 'SHA-256', signalId: s });
    expect(sim.lastSignalId(ES)).toBe(s);
    sim.addEService({ id: ES, producerAudience: 'producer.example/es', includeSignalId: true, seed: 'replaced' });
    expect((await crypto(sim, ev)).body).toEqual({ seed: 'replaced', cryptoHashFunction: 'SHA-256', signalId: s });
    expect(() => sim.registerClient({ clientId: ESC.clientId, kind: 'm2m', keyId: 'k', publicKey: testKey().publicKey, organizationId: ORG })).toThrow(/already registered/);
  });

  it('history depth 1 answers ?signalId only for the current seed; deeper history keeps older seeds until purged', async () => {
    const { sim, clock } = await setup();
    const ev = await eserviceVoucher(sim, clock.now);
    const s1 = sim.rotateSeed(ES, 'seed-1');
    expect((await crypto(sim, ev, '?signalId=0')).status).toBe(404);
    expect((await crypto(sim, ev, `?signalId=${s1}`)).body.seed).toBe('seed-1');
    expect((await crypto(sim, ev, '?signalId=999')).status).toBe(404);
    expect((await crypto(sim, ev, '?signalId=abc')).status).toBe(400);

    sim.addEService({ id: 'es-h', historyDepth: 2, seed: 'seed-0', producerAudience: 'producer.example/es' });
    sim.registerClient({ clientId: ESC.clientId, kind: 'eservice', keyId: ESC.kid, publicKey: testKey().publicKey, organizationId: ORG, purposes: [{ id: 'purpose-h', eserviceId: 'es-h' }] });
    const r = await requestToken(sim, ESC.clientId, await assertion(sim, clock.now, { clientId: ESC.clientId, kid: ESC.kid, purposeId: 'purpose-h' }));
    const evh = r.body.access_token as string;
    const h1 = sim.rotateSeed('es-h', 'seed-h1');
    expect((await crypto(sim, evh, '?signalId=0', {}, 'es-h')).body.seed).toBe('seed-0');
    expect((await crypto(sim, evh, `?signalId=${h1}`, {}, 'es-h')).body.seed).toBe('seed-h1');
    const h2 = sim.rotateSeed('es-h', 'seed-h2');
    expect((await crypto(sim, evh, '?signalId=0', {}, 'es-h')).status).toBe(404);
    expect((await crypto(sim, evh, `?signalId=${h1}`, {}, 'es-h')).body.seed).toBe('seed-h1');
    expect((await crypto(sim, evh, `?signalId=${h2}`, {}, 'es-h')).body.seed).toBe('seed-h2');
  });

  it('stale reads: after a rotation the next N requests still see the previous seed (and ?signalId=S is not yet known)', async () => {
    const { sim, clock } = await setup();
    sim.addEService({ id: ES, seed: 'old-seed', producerAudience: 'producer.example/es', staleReads: 2, includeSignalId: true });
    const ev = await eserviceVoucher(sim, clock.now);
    const s = sim.rotateSeed(ES, 'new-seed');
    expect((await crypto(sim, ev)).body).toMatchObject({ seed: 'old-seed', signalId: 0 });
    expect((await crypto(sim, ev, `?signalId=${s}`)).status).toBe(404);
    expect((await crypto(sim, ev)).body).toMatchObject({ seed: 'new-seed', signalId: s });
    expect((await crypto(sim, ev, `?signalId=${s}`)).body).toMatchObject({ seed: 'new-seed' });
  });

  describe('audit pattern', () => {
    async function trackingEvidence(sim: Simulator, nowMs: number, o: { key?: KeyObject; kid?: string; aud?: string; purposeId?: string; omitNbf?: boolean } = {}) {
      const iat = Math.floor(nowMs / 1000);
      const claims: Record<string, unknown> = { iss: ESC.clientId, aud: o.aud ?? 'producer.example/es', purposeId: o.purposeId ?? ESC.purposeId, jti: randomUUID(), iat, exp: iat + 300, userID: 'operator-1', userLocation: 'office', LoA: 'substantial' };
      if (!o.omitNbf) claims.nbf = iat;
      return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: o.kid ?? ESC.kid, typ: 'JWT' }).sign(o.key ?? testKey().privateKey);
    }
    const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

    it('requires Agid-JWT-TrackingEvidence whose SHA-256 equals the voucher digest', async () => {
      const { sim, clock } = await setup();
      sim.addEService({ id: ES, seed: GOVWAY_SEED, producerAudience: 'producer.example/es', requireAudit: true });
      const jws = await trackingEvidence(sim, clock.now);
      const voucher = await eserviceVoucher(sim, clock.now, sha256(jws));
      const ok = await crypto(sim, voucher, '', { 'Agid-JWT-TrackingEvidence': jws });
      expect(ok.status).toBe(200);
      expect(ok.body.seed).toBe(GOVWAY_SEED);

      expect((await crypto(sim, voucher)).status).toBe(401);
      expect((await crypto(sim, await eserviceVoucher(sim, clock.now), '', { 'Agid-JWT-TrackingEvidence': jws })).status).toBe(403);
      const another = await trackingEvidence(sim, clock.now);
      expect((await crypto(sim, voucher, '', { 'Agid-JWT-TrackingEvidence': another })).status).toBe(403);
    });

    it.each([
      ['signed by an unregistered key', { key: undefined as KeyObject | undefined, kid: 'unknown' }],
      ['for another audience', { aud: 'producer.example/other' }],
      ['for another purpose', { purposeId: 'purpose-x' }],
      ['without nbf', { omitNbf: true }],
    ])('refuses evidence %s with 403 even when the digest matches', async (_name, o) => {
      const { sim, clock } = await setup();
      sim.addEService({ id: ES, seed: GOVWAY_SEED, producerAudience: 'producer.example/es', requireAudit: true });
      const jws = await trackingEvidence(sim, clock.now, 'key' in o ? { ...o, key: otherKey } : o);
      const voucher = await eserviceVoucher(sim, clock.now, sha256(jws));
      const r = await crypto(sim, voucher, '', { 'Agid-JWT-TrackingEvidence': jws });
      expect(r.status).toBe(403);
      expect(r.headers.get('content-type')).toBe('application/problem+json');
    });
  });
});

describe('fault injection', () => {
  it('drops the connection, truncates the body, serves non-JSON and wrong-shape bodies, each for N requests', async () => {
    const { sim, clock } = await setup();
    sim.generateSignals(ES, 30);
    const v = await m2mVoucher(sim, clock.now);
    sim.faults.inject('pull', { kind: 'drop', times: 1 });
    sim.faults.inject('pull', { kind: 'truncate', times: 1 });
    sim.faults.inject('pull', { kind: 'malformed', times: 1 });
    sim.faults.inject('pull', { kind: 'wrongShape', times: 1 });
    sim.faults.inject('pull', { kind: 'wrongShape', body: { signals: [{ signalId: 'x' }], lastSignalId: 'x' }, times: 1 });
    sim.faults.inject('pull', { kind: 'delay', ms: 50, times: 1 });
    await expect(pull(sim, v)).rejects.toThrow();
    await expect(pull(sim, v)).rejects.toThrow();
    const malformed = await pull(sim, v);
    expect(malformed.status).toBe(200);
    expect(() => JSON.parse(malformed.text)).toThrow();
    expect((await pull(sim, v)).body).toEqual({ unexpected: true });
    expect((await pull(sim, v)).body).toEqual({ signals: [{ signalId: 'x' }], lastSignalId: 'x' });
    const delayed = await pull(sim, v);
    expect(delayed.status).toBe(206);
    expect(delayed.body.lastSignalId).toBe(10);
    expect((await pull(sim, v)).status).toBe(206);
    expect(sim.stats().faultsFired.pull).toBe(6);
  });

  it('a fault with `after` lets that many requests through first, so it strikes mid-run', async () => {
    const { sim, clock } = await setup();
    sim.generateSignals(ES, 30);
    const v = await m2mVoucher(sim, clock.now);
    sim.faults.inject('pull', { kind: 'status', status: 503, after: 2, times: 1 });
    expect((await pull(sim, v)).status).toBe(206);
    expect((await pull(sim, v)).status).toBe(206);
    expect((await pull(sim, v)).status).toBe(503);
    expect((await pull(sim, v)).status).toBe(206);
    expect(sim.stats().faultsFired.pull).toBe(1);
  });

  it('expireVouchers expires every voucher issued so far (401 9001 on that very request) while vouchers issued afterwards work', async () => {
    const { sim, clock } = await setup();
    sim.generateSignals(ES, 30);
    const early = await m2mVoucher(sim, clock.now);
    const alsoEarly = await m2mVoucher(sim, clock.now);
    sim.faults.inject('pull', { kind: 'expireVouchers', after: 1, times: 1 });
    expect((await pull(sim, early)).status).toBe(206);
    expectProblem(await pull(sim, early), 401, '9001');
    expectProblem(await pull(sim, alsoEarly), 401, '9001');
    const fresh = await m2mVoucher(sim, clock.now);
    expect((await pull(sim, fresh)).status).toBe(206);
    expect(sim.stats().faultsFired.pull).toBe(1);
  });

  it('malformed takes a 2xx status (a 206 whose body is not JSON)', async () => {
    const { sim, clock } = await setup();
    sim.generateSignals(ES, 30);
    const v = await m2mVoucher(sim, clock.now);
    sim.faults.inject('pull', { kind: 'malformed', status: 206, times: 1 });
    const r = await pull(sim, v);
    expect(r.status).toBe(206);
    expect(() => JSON.parse(r.text)).toThrow();
  });

  it('drip serves the real answer with its full Content-Length, a few bytes at a time', async () => {
    const { sim, clock } = await setup();
    sim.generateSignals(ES, 3);
    const v = await m2mVoucher(sim, clock.now);
    const expected = await pull(sim, v);
    sim.faults.inject('pull', { kind: 'drip', intervalMs: 5, chunkBytes: 64, times: 1 });
    const res = await fetch(`${sim.pullBaseUrl}/signals/${ES}`, { headers: { authorization: `Bearer ${v}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe(String(Buffer.byteLength(expected.text)));
    const chunks: number[] = [];
    for await (const chunk of res.body!) chunks.push((chunk as Uint8Array).length);
    expect(chunks.length).toBeGreaterThan(1);
    expect(Math.max(...chunks)).toBeLessThanOrEqual(64);
    expect(chunks.reduce((a, b) => a + b, 0)).toBe(Buffer.byteLength(expected.text));
  });

  it('a fault without times lasts until cleared; eserviceId narrows it; a status fault may have no problem body', async () => {
    const { sim, clock } = await setup();
    sim.addEService({ id: 'es-2' });
    const v = await m2mVoucher(sim, clock.now);
    sim.faults.inject('pull', { kind: 'status', status: 403, problem: false, eserviceId: ES });
    for (let i = 0; i < 3; i++) {
      const r = await pull(sim, v);
      expect(r.status).toBe(403);
      expect(r.headers.get('content-type')).toBe('text/plain');
    }
    expect((await pull(sim, v, '', 'es-2')).status).toBe(200);
    sim.faults.clear('pull');
    expect((await pull(sim, v)).status).toBe(200);
  });

  it('is steerable over HTTP: /_sim/faults, /_sim/clients, /_sim/eservices, /_sim/deposit, /_sim/rotate, /_sim/stats', async () => {
    const { sim, clock } = await setup();
    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${sim.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as Record<string, any> };
    };
    const pem = createPublicKey(otherKey).export({ type: 'spki', format: 'pem' }) as string;
    expect((await post('/_sim/clients', { clientId: 'remote', kind: 'm2m', keyId: 'rk', publicKey: pem, organizationId: ORG })).status).toBe(200);
    expect((await post('/_sim/eservices', { id: 'es-remote', seed: GOVWAY_SEED, includeSignalId: true })).status).toBe(200);
    expect((await post('/_sim/eservices', { id: 'es-bad', historyDepth: 0 })).status).toBe(400);
    const deposited = await post('/_sim/deposit', {
      eserviceId: 'es-remote',
      signals: [{ signalType: 'CREATE', objectId: 'x', objectType: 'doc' }],
      subjects: [{ subjectKey: GOVWAY_SUBJECT, signalType: 'UPDATE' }],
      generate: 3,
    });
    expect(deposited.body).toEqual({ count: 5, firstSignalId: 1, lastSignalId: 5 });
    expect((await post('/_sim/rotate', { eserviceId: 'es-remote', seed: 'next' })).body).toEqual({ signalId: 6 });
    expect((await post('/_sim/faults', { route: 'pull', fault: { kind: 'status', status: 503, times: 1 } })).status).toBe(200);
    expect((await post('/_sim/faults', { route: 'nowhere', fault: { kind: 'drop' } })).status).toBe(400);

    const r = await requestToken(sim, 'remote', await assertion(sim, clock.now, { clientId: 'remote', kid: 'rk', key: otherKey }));
    const v = r.body.access_token as string;
    expect((await pull(sim, v, '', 'es-remote')).status).toBe(503);
    const page = await pull(sim, v, '', 'es-remote');
    expect(page.body.signals[1].objectId).toBe(GOVWAY_PSEUDONYM);
    expect(page.body.signals[5]).toEqual({ signalId: 6, signalType: 'SEEDUPDATE', objectId: '-', objectType: '-', eserviceId: 'es-remote' });

    sim.faults.inject('pull', { kind: 'status', status: 500 });
    await fetch(`${sim.url}/_sim/faults`, { method: 'DELETE' });
    expect((await pull(sim, v, '', 'es-remote')).status).toBe(200);
    const stats = (await get(`${sim.url}/_sim/stats`)).body;
    expect(stats.responses.pull).toEqual({ '200': 2, '503': 1 });
    expect(stats.tokensIssued).toBe(1);
  });
});

describe('lifecycle and retention', () => {
  it('close() ends connections held by a delay fault instead of waiting for them', async () => {
    const sim = await startSimulator();
    sim.registerClient({ clientId: M2M.clientId, kind: 'm2m', keyId: M2M.kid, publicKey: testKey().publicKey, organizationId: ORG });
    sim.addEService({ id: ES });
    const v = await m2mVoucher(sim, Date.now());
    sim.faults.inject('pull', { kind: 'delay', ms: 600_000 });
    const pending = pull(sim, v);
    // The request must have reached the server before closing; stats count it on arrival.
    while ((sim.stats().requests.pull ?? 0) === 0) await new Promise((r) => setImmediate(r));
    await sim.close();
    await expect(pending).rejects.toThrow();
  });

  it('purges old signals (retention) while new deposits keep counting from the highest id', async () => {
    const { sim, clock } = await setup();
    sim.generateSignals(ES, 10);
    const purged = await fetch(`${sim.url}/_sim/purge`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ eserviceId: ES, upToSignalId: 10 }) });
    expect(await purged.json()).toEqual({ purged: 10 });
    const v = await m2mVoucher(sim, clock.now);
    expect((await pull(sim, v)).body).toEqual({ signals: [], lastSignalId: null });
    expect(sim.deposit(ES, { signalType: 'UPDATE', objectId: 'x', objectType: 'doc' })).toBe(11);
    expect((await pull(sim, v)).body.lastSignalId).toBe(11);
  });

  it('changes the time window and rate limit at runtime over /_sim/settings', async () => {
    const { sim, clock } = await setup();
    sim.deposit(ES, { signalType: 'UPDATE', objectId: 'x', objectType: 'doc' });
    const settings = await fetch(`${sim.url}/_sim/settings`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ timeWindowMs: 10_000, rateLimit: { limit: 7, intervalMs: 500 } }) });
    expect(settings.status).toBe(200);
    const r = await pull(sim, await m2mVoucher(sim, clock.now));
    expect(r.body).toEqual({ signals: [], lastSignalId: null });
    expect(r.headers.get('x-rate-limit-limit')).toBe('7');
    expect(r.headers.get('x-rate-limit-interval')).toBe('500');
  });
});

describe('secrets', () => {
  it('never logs seeds, vouchers, assertions or subject keys, even at trace level', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString('utf8'));
        done();
      },
    });
    const { sim, clock } = await setup({ logger: pino({ level: 'trace' }, sink) });
    const a = await assertion(sim, clock.now);
    const token = await requestToken(sim, M2M.clientId, a);
    await requestToken(sim, M2M.clientId, a); // replay: refused and logged
    const v = token.body.access_token as string;
    sim.depositForSubject(ES, GOVWAY_SUBJECT, 'UPDATE');
    await pull(sim, v);
    const ev = await eserviceVoucher(sim, clock.now);
    const info = await get(sim.cryptoInfoUrl(ES), { authorization: `Bearer ${ev}` });
    expect(info.body.seed).toBe(GOVWAY_SEED);
    sim.faults.inject('crypto', { kind: 'truncate', times: 1 });
    await expect(get(sim.cryptoInfoUrl(ES), { authorization: `Bearer ${ev}` })).rejects.toThrow();
    const log = lines.join('');
    expect(lines.length).toBeGreaterThan(3);
    for (const secret of [GOVWAY_SEED, v, ev, a, GOVWAY_SUBJECT, testKey().privatePem]) expect(log).not.toContain(secret);
  });
});
