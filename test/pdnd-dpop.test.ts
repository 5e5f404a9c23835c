import { createHash, randomUUID } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { request } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CryptoInfoClient } from '../src/crypto/crypto-info-client.js';
import type { EServiceConfig } from '../src/config/types.js';
import { DpopKey } from '../src/pdnd/dpop.js';
import { VoucherProvider, type Voucher } from '../src/pdnd/vouchers.js';
import { startSimulator, type Simulator } from '../src/simulator/index.js';
import { tempDir } from './helpers/fs.js';
import { failure } from './helpers/errors.js';
import { FAST_RETRY, captureLogger, client, ecKeyFile, eservice, pdndConfig, registerEServiceClient, registerM2m } from './pdnd-fixtures.js';

const SEED = 'Dp0P-SECRET-SEED-44c1a0==';
const PURPOSE = 'purpose-dpop';

let sim: Simulator;
let dir: string;
let vouchers: VoucherProvider;
let crypto: CryptoInfoClient;
let logs: ReturnType<typeof captureLogger>;

beforeAll(async () => {
  sim = await startSimulator();
});
afterAll(async () => {
  await sim.close();
});
beforeEach(() => {
  sim.faults.clear();
  dir = tempDir('shs-dpop-');
  registerM2m(sim, client(dir, 'm2m-client'));
  registerEServiceClient(sim, client(dir, 'es-client', 'kid-es'), [PURPOSE]);
  logs = captureLogger();
  vouchers = new VoucherProvider({ pdnd: pdndConfig(sim, client(dir, 'm2m-client')), retry: FAST_RETRY, logger: logs.logger });
  crypto = new CryptoInfoClient({ vouchers, timeoutMs: 2000, retry: FAST_RETRY, logger: logs.logger });
});

function dpopEService(id: string, overrides: Partial<EServiceConfig> = {}): EServiceConfig {
  return { ...eservice(sim, id, client(dir, 'es-client', 'kid-es'), PURPOSE), voucherType: 'dpop', ...overrides };
}

const rejections = (): string[] => sim.stats().dpopRejections;

/** A proof built by hand, valid unless the test changes a claim, the header or the key. */
async function craftProof(
  key: { privateKey: CryptoKey; jwk: JWK },
  url: string,
  voucher: string | undefined,
  change: { claims?: Record<string, unknown>; header?: Record<string, unknown> } = {},
): Promise<string> {
  const claims: Record<string, unknown> = { htm: 'GET', htu: url, jti: randomUUID(), iat: Math.floor(Date.now() / 1000) };
  if (voucher !== undefined) claims.ath = createHash('sha256').update(voucher).digest('base64url');
  Object.assign(claims, change.claims);
  return new SignJWT(claims).setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: key.jwk, ...change.header }).sign(key.privateKey);
}

async function handKey(): Promise<{ privateKey: CryptoKey; jwk: JWK }> {
  const pair = await generateKeyPair('ES256');
  const { kty, crv, x, y } = await exportJWK(pair.publicKey);
  return { privateKey: pair.privateKey, jwk: { kty, crv, x, y } };
}

/** GET crypto info with a hand-made Authorization and DPoP header. */
async function getCryptoInfo(url: string, authorization: string, proof?: string): Promise<{ status: number; www: string | undefined }> {
  const res = await request(url, { method: 'GET', headers: { authorization, ...(proof !== undefined ? { dpop: proof } : {}) } });
  await res.body.text();
  const www = res.headers['www-authenticate'];
  return { status: res.statusCode, www: typeof www === 'string' ? www : undefined };
}

/** A token request with a hand-made DPoP proof; returns the status and the issued voucher, if any. */
async function tokenWithProof(proofFor: (tokenUrl: string) => Promise<string>): Promise<{ status: number; voucher?: string; tokenType?: string }> {
  const { buildClientAssertion } = await import('../src/pdnd/assertion.js');
  const c = client(dir, 'es-client', 'kid-es');
  const assertion = await buildClientAssertion({ client: c, audience: sim.assertionAudience, ttlSeconds: 60, purposeId: PURPOSE });
  const form = new URLSearchParams({ client_id: c.clientId, client_assertion: assertion, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', grant_type: 'client_credentials' });
  const res = await request(sim.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: await proofFor(sim.tokenUrl) }, body: form.toString() });
  const body = (await res.body.json()) as { access_token?: string; token_type?: string };
  return { status: res.statusCode, ...(body.access_token ? { voucher: body.access_token, tokenType: body.token_type } : {}) };
}

describe('DPoP vouchers (SPEC §4b): the daemon against a strict producer', () => {
  it('gets a DPoP-bound voucher (token_type DPoP, typ dpop+jwt, cnf.jkt = its key) and its proofs always pass', async () => {
    sim.addEService({ id: 'es-dpop', seed: SEED, requireDpop: true });
    const es = dpopEService('es-dpop');
    const before = rejections().length;
    for (let i = 0; i < 20; i++) {
      const info = await crypto.fetch(es);
      expect(info.seed).toBe(SEED);
    }
    expect(rejections().length).toBe(before);
    const voucher = await vouchers.eservice(es);
    expect(voucher.scheme).toBe('DPoP');
    expect(decodeProtectedHeader(voucher.token).typ).toBe('dpop+jwt');
    expect((decodeJwt(voucher.token).cnf as { jkt: string }).jkt).toBe((await vouchers.dpop()).thumbprint);
  });

  it('retries once with the producer\'s DPoP-Nonce and with the token endpoint\'s', async () => {
    const nonceSim = await startSimulator({ tokenDpopNonce: true });
    try {
      registerEServiceClient(nonceSim, client(dir, 'es-client', 'kid-es'), [PURPOSE]);
      nonceSim.addEService({ id: 'es-nonce', seed: SEED, requireDpop: true, dpopNonce: true });
      const provider = new VoucherProvider({ pdnd: pdndConfig(nonceSim, client(dir, 'es-client', 'kid-es')), retry: FAST_RETRY });
      const c = new CryptoInfoClient({ vouchers: provider, timeoutMs: 2000, retry: FAST_RETRY });
      const es = { ...eservice(nonceSim, 'es-nonce', client(dir, 'es-client', 'kid-es'), PURPOSE), voucherType: 'dpop' as const };
      expect((await c.fetch(es)).seed).toBe(SEED);
      expect(nonceSim.stats().dpopRejections).toEqual(['DPoP proof nonce missing or stale', 'DPoP proof nonce missing or stale']);
      expect(nonceSim.stats().responses.token).toEqual({ '200': 1, '400': 1 });
      expect(nonceSim.stats().responses.crypto).toEqual({ '200': 1, '401': 1 });
      // The producer's nonce is kept: the next fetches need no second request.
      for (let i = 0; i < 3; i++) await c.fetch(es);
      expect(nonceSim.stats().responses.crypto).toEqual({ '200': 4, '401': 1 });
    } finally {
      await nonceSim.close();
    }
  });

  it('combines with the audit pattern: DPoP voucher carrying the digest, audit JWS alongside', async () => {
    sim.addEService({ id: 'es-dpop-audit', seed: SEED, requireDpop: true, requireAudit: true });
    const es = dpopEService('es-dpop-audit', { audit: { audience: sim.producerAudience('es-dpop-audit'), claims: { userID: 'op-1', LoA: 'LoA3' }, ttlSeconds: 120 } });
    expect((await crypto.fetch(es)).seed).toBe(SEED);
    const voucher = await vouchers.eservice(es);
    expect(voucher.scheme).toBe('DPoP');
    expect(voucher.trackingEvidence).toBeDefined();
    expect(decodeJwt(voucher.token).digest).toBeDefined();
  });

  it('a key from dpop_key_file (EC P-256) signs the proofs; the voucher is bound to its thumbprint', async () => {
    sim.addEService({ id: 'es-dpop-file', seed: SEED, requireDpop: true });
    const file = ecKeyFile(dir);
    const provider = new VoucherProvider({ pdnd: pdndConfig(sim, client(dir, 'm2m-client'), { dpopKeyFile: file }), retry: FAST_RETRY });
    const c = new CryptoInfoClient({ vouchers: provider, timeoutMs: 2000, retry: FAST_RETRY });
    const es = dpopEService('es-dpop-file');
    expect((await c.fetch(es)).seed).toBe(SEED);
    const fromFile = await DpopKey.fromFile(file);
    expect((await provider.dpop()).thumbprint).toBe(fromFile.thumbprint);
    expect((decodeJwt((await provider.eservice(es)).token).cnf as { jkt: string }).jkt).toBe(fromFile.thumbprint);
  });

  it('the voucher cache keys on the voucher type: Bearer and DPoP vouchers for one purpose are distinct', async () => {
    sim.addEService({ id: 'es-both', seed: SEED });
    const bearer = await vouchers.eservice({ ...dpopEService('es-both'), voucherType: 'bearer' });
    const dpop = await vouchers.eservice(dpopEService('es-both'));
    expect(bearer.token).not.toBe(dpop.token);
    expect(bearer.scheme).toBeUndefined();
    expect(dpop.scheme).toBe('DPoP');
  });

  it('a token endpoint that answers token_type Bearer to a DPoP request is not trusted: TOKEN_UNAVAILABLE, not retried', async () => {
    sim.faults.inject('token', { kind: 'wrongShape', body: { access_token: 'aaaa.bbbb.cccc', token_type: 'Bearer', expires_in: 600 } });
    const before = sim.stats().requests.token ?? 0;
    const err = await failure(vouchers.eservice(dpopEService('es-any')));
    expect(err.code).toBe('TOKEN_UNAVAILABLE');
    expect(err.message).toContain('did not bind the voucher to the DPoP key');
    expect((sim.stats().requests.token ?? 0) - before).toBe(1);
  });

  it('a Bearer voucher to a producer that requires DPoP is refused with the voucher_type hint', async () => {
    sim.addEService({ id: 'es-needs-dpop', seed: SEED, requireDpop: true });
    const err = await failure(crypto.fetch({ ...dpopEService('es-needs-dpop'), voucherType: 'bearer' }));
    expect(err.code).toBe('CRYPTO_UNAUTHORIZED');
    expect(err.message).toContain('voucher_type');
    expect(err.message).toContain('invalid_token');
  });
});

describe('the simulated producer and token endpoint are strict about DPoP proofs', () => {
  let voucher: Voucher;
  let url: string;
  let key: { privateKey: CryptoKey; jwk: JWK };

  beforeEach(async () => {
    sim.addEService({ id: 'es-strict', seed: SEED, requireDpop: true });
    url = sim.cryptoInfoUrl('es-strict');
    // A real DPoP voucher bound to a key this test holds: a proof of the daemon's own DpopKey for the token request.
    key = await handKey();
    const issued = await tokenWithProof((tokenUrl) => craftProof(key, tokenUrl, undefined, { claims: { htm: 'POST' } }));
    expect(issued.status).toBe(200);
    expect(issued.tokenType).toBe('DPoP');
    voucher = { token: issued.voucher!, expiresAt: Date.now() + 60_000, scheme: 'DPoP' };
  });

  const expectRefused = async (proof: string | undefined, reason: string, authorization = `DPoP ${voucher.token}`) => {
    const before = rejections().length;
    const answer = await getCryptoInfo(url, authorization, proof);
    expect(answer.status).toBe(401);
    expect(rejections().slice(before)).toEqual([reason]);
  };

  it('accepts a correct proof (the control)', async () => {
    expect((await getCryptoInfo(url, `DPoP ${voucher.token}`, await craftProof(key, url, voucher.token))).status).toBe(200);
  });

  it('refuses a wrong ath', async () => {
    await expectRefused(await craftProof(key, url, voucher.token, { claims: { ath: createHash('sha256').update('another voucher').digest('base64url') } }), 'DPoP proof ath does not match the voucher');
  });

  it('refuses a wrong htu (another path, or with the query string)', async () => {
    await expectRefused(await craftProof(key, url.replace('es-strict', 'es-other'), voucher.token), 'DPoP proof htu is not the URI of this request');
    await expectRefused(await craftProof(key, `${url}?signalId=3`, voucher.token), 'DPoP proof htu is not the URI of this request');
  });

  it('refuses a wrong htm', async () => {
    await expectRefused(await craftProof(key, url, voucher.token, { claims: { htm: 'POST' } }), 'DPoP proof htm must be GET');
  });

  it('refuses a replayed jti', async () => {
    const proof = await craftProof(key, url, voucher.token);
    expect((await getCryptoInfo(url, `DPoP ${voucher.token}`, proof)).status).toBe(200);
    await expectRefused(proof, 'DPoP proof jti already used (replay)');
  });

  it('refuses a proof signed by another key than the voucher\'s cnf.jkt', async () => {
    await expectRefused(await craftProof(await handKey(), url, voucher.token), 'DPoP proof key is not the key the voucher is bound to (cnf.jkt)');
  });

  it('refuses a proof whose header jwk is not the signing key', async () => {
    const other = await handKey();
    await expectRefused(await craftProof({ privateKey: other.privateKey, jwk: key.jwk }, url, voucher.token), expect.stringContaining('signature does not verify') as unknown as string);
  });

  it('refuses a wrong typ and a stale or future iat', async () => {
    await expectRefused(await craftProof(key, url, voucher.token, { header: { typ: 'JWT' } }), 'DPoP proof typ must be dpop+jwt');
    await expectRefused(await craftProof(key, url, voucher.token, { claims: { iat: Math.floor(Date.now() / 1000) - 600 } }), 'DPoP proof iat is not fresh');
    await expectRefused(await craftProof(key, url, voucher.token, { claims: { iat: Math.floor(Date.now() / 1000) + 600 } }), 'DPoP proof iat is not fresh');
  });

  it('refuses a missing proof, and the bound voucher used as a Bearer token', async () => {
    await expectRefused(undefined, 'DPoP proof missing');
    const answer = await getCryptoInfo(url, `Bearer ${voucher.token}`);
    expect(answer.status).toBe(401);
    expect(answer.www).toContain('invalid_token');
  });

  it('the token endpoint refuses a replayed proof, a wrong htu and an ath on a token request', async () => {
    const proof = await craftProof(key, sim.tokenUrl, undefined, { claims: { htm: 'POST' } });
    expect((await tokenWithProof(async () => proof)).status).toBe(200);
    const before = rejections().length;
    expect((await tokenWithProof(async () => proof)).status).toBe(400);
    expect((await tokenWithProof((u) => craftProof(key, `${u}x`, undefined, { claims: { htm: 'POST' } }))).status).toBe(400);
    expect((await tokenWithProof((u) => craftProof(key, u, 'a voucher', { claims: { htm: 'POST' } }))).status).toBe(400);
    expect(rejections().slice(before)).toEqual(['DPoP proof jti already used (replay)', 'DPoP proof htu is not the URI of this request', 'DPoP proof ath on a token request']);
  });
});
