import { createHash } from 'node:crypto';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AppError } from '../src/errors.js';
import { CryptoInfoClient } from '../src/crypto/crypto-info-client.js';
import { PseudonymHasher, seedFingerprint } from '../src/crypto/pseudonym.js';
import type { AuditConfig, EServiceConfig } from '../src/config/types.js';
import { VoucherProvider } from '../src/pdnd/vouchers.js';
import { startSimulator, type Simulator } from '../src/simulator/index.js';
import { tempDir } from './helpers/fs.js';
import { FAST_RETRY, captureLogger, client, eservice, pdndConfig, privateKeyFragments, registerEServiceClient, registerM2m } from './pdnd-fixtures.js';
import { failure } from './helpers/errors.js';

const SEED = 'Zq8v-SECRET-SEED-7f3a9c1e==';
const PURPOSE = 'purpose-crypto';

let sim: Simulator;
let dir: string;
let logs: ReturnType<typeof captureLogger>;
let vouchers: VoucherProvider;
let crypto: CryptoInfoClient;

function esConfig(id: string, audit?: AuditConfig): EServiceConfig {
  return eservice(sim, id, client(dir, 'es-client', 'kid-es'), PURPOSE, audit);
}

let baseline: Record<string, number> = {};

// One simulator for the file (its startup generates an RSA key); each test gets a fresh
// voucher cache, no faults, and request counts relative to its start.
beforeAll(async () => {
  sim = await startSimulator();
});
afterAll(async () => {
  await sim.close();
});
beforeEach(() => {
  sim.faults.clear();
  baseline = { ...sim.stats().requests };
  dir = tempDir('shs-crypto-');
  registerM2m(sim, client(dir, 'm2m-client'));
  registerEServiceClient(sim, client(dir, 'es-client', 'kid-es'), [PURPOSE]);
  logs = captureLogger();
  vouchers = new VoucherProvider({ pdnd: pdndConfig(sim, client(dir, 'm2m-client')), retry: FAST_RETRY, logger: logs.logger });
  crypto = new CryptoInfoClient({ vouchers, timeoutMs: 2000, retry: FAST_RETRY, logger: logs.logger });
});

const requests = (route: string): number => (sim.stats().requests[route] ?? 0) - (baseline[route] ?? 0);


/** Every error and log line so far must be free of the seed, vouchers and key material. */
function expectNoSecrets(errors: AppError[], extraSecrets: string[] = []): void {
  const everything = logs.text() + JSON.stringify(errors.map((e) => ({ m: e.message, s: e.stack, d: e.details })));
  for (const secret of [SEED, ...privateKeyFragments(), ...extraSecrets]) expect(everything).not.toContain(secret);
  expect(everything).not.toMatch(/eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+/);
}

describe('CryptoInfoClient against the simulated producer', () => {
  it('fetches seed and cryptoHashFunction with an e-service voucher, logging only the fingerprint', async () => {
    sim.addEService({ id: 'es-basic', seed: SEED });
    const info = await crypto.fetch(esConfig('es-basic'));
    expect(info).toEqual({ seed: SEED, cryptoHashFunction: 'SHA-256', fingerprint: seedFingerprint(SEED), signalId: undefined });
    expect(info.fingerprint).toBe(createHash('sha256').update(SEED).digest('hex').slice(0, 8));
    expect(logs.text()).toContain(info.fingerprint);
    expect(requests('token')).toBe(1);
    expectNoSecrets([]);
  });

  const SPELLINGS = ['sha256', 'SHA-256', 'SHA256', 'Sha-256', 'SHA-384', 'sha384', 'SHA-512', 'SHA-512/256', 'SHA512_256', 'sha512-256', 'SHA3-256', 'SHA3_256', 'sha3-384', 'SHA3_512', 'SHAKE128', 'shake256', 'Shake128'];
  it.each(SPELLINGS)('accepts the spelling %s as received, and it hashes as the producer does', async (spelling) => {
    sim.addEService({ id: 'es-alg', seed: SEED, cryptoHashFunction: spelling, recipe: { template: '${subject}${algorithm}${seed}', encoding: 'hex' } });
    const info = await crypto.fetch(esConfig('es-alg'));
    expect(info.cryptoHashFunction).toBe(spelling);
    const hasher = new PseudonymHasher({ template: '${subject}${algorithm}${seed}', encoding: 'hex' }, info.seed, info.cryptoHashFunction);
    expect(hasher.pseudonym('RSSMRA80A01H501Z')).toBe(sim.pseudonymFor('es-alg', 'RSSMRA80A01H501Z'));
  });

  it('refuses a seed longer than 1 KiB with CRYPTO_BAD_RESPONSE naming its length, never the seed, and does not retry it; 1 KiB exactly is accepted', async () => {
    const longSeed = `LONG-${'s'.repeat(1020)}`; // 1025 bytes
    sim.addEService({ id: 'es-long', seed: SEED });
    sim.faults.inject('crypto', { kind: 'wrongShape', body: { seed: longSeed, cryptoHashFunction: 'SHAKE256' }, times: 1 });
    const err = await failure(crypto.fetch(esConfig('es-long')));
    expect(err.code).toBe('CRYPTO_BAD_RESPONSE');
    expect(err.message).toContain('1025 bytes');
    expect(err.message).toContain('es-long');
    expect(requests('crypto')).toBe(1);
    expectNoSecrets([err], [longSeed.slice(0, 40)]);

    const justFits = `FITS-${'s'.repeat(1019)}`; // 1024 bytes
    sim.faults.inject('crypto', { kind: 'wrongShape', body: { seed: justFits, cryptoHashFunction: 'SHA-256' }, times: 1 });
    expect((await crypto.fetch(esConfig('es-long'))).seed).toBe(justFits);
  });

  it('rejects an unknown algorithm with UNSUPPORTED_ALGORITHM, without the seed', async () => {
    sim.addEService({ id: 'es-md5', seed: SEED });
    sim.faults.inject('crypto', { kind: 'wrongShape', body: { seed: SEED, cryptoHashFunction: 'MD5' } });
    const err = await failure(crypto.fetch(esConfig('es-md5')));
    expect(err.code).toBe('UNSUPPORTED_ALGORITHM');
    expect(err.message).toContain('MD5');
    expect(err.message).toContain('es-md5');
    expect(requests('crypto')).toBe(1);
    expectNoSecrets([err]);
  });

  it('returns signalId when the producer includes it, and asks ?signalId=S for a past seed', async () => {
    sim.addEService({ id: 'es-hist', seed: SEED, includeSignalId: true, historyDepth: 3 });
    sim.deposit('es-hist', { signalType: 'UPDATE', objectId: 'x', objectType: 'doc' });
    const s1 = sim.rotateSeed('es-hist', 'second-seed');
    const s2 = sim.rotateSeed('es-hist', 'third-seed');
    const es = esConfig('es-hist');
    expect(await crypto.fetch(es)).toMatchObject({ seed: 'third-seed', signalId: s2 });
    expect(await crypto.fetch(es, { signalId: s1 })).toMatchObject({ seed: 'second-seed', signalId: s1 });
    expect(await crypto.fetch(es, { signalId: 0 })).toMatchObject({ seed: SEED, signalId: 0 });
  });

  it('answers CRYPTO_NOT_FOUND for an unknown or purged history id, and when no crypto info exists', async () => {
    sim.addEService({ id: 'es-nohist', seed: SEED, includeSignalId: true });
    const s1 = sim.rotateSeed('es-nohist', 'second-seed');
    sim.rotateSeed('es-nohist', 'third-seed');
    const purged = await failure(crypto.fetch(esConfig('es-nohist'), { signalId: s1 }));
    expect(purged).toMatchObject({ code: 'CRYPTO_NOT_FOUND', status: 404, retryable: false });
    expect(purged.correlationId).toMatch(/^[0-9a-f-]{36}$/);
    expect(purged.message).toContain(`signalId=${s1}`);

    sim.addEService({ id: 'es-none', seed: null });
    const none = await failure(crypto.fetch(esConfig('es-none')));
    expect(none).toMatchObject({ code: 'CRYPTO_NOT_FOUND', status: 404 });
    expect(requests('crypto')).toBe(2);
  });

  it('refuses an invalid signalId argument before any request', async () => {
    sim.addEService({ id: 'es-arg', seed: SEED });
    await expect(crypto.fetch(esConfig('es-arg'), { signalId: -1 })).rejects.toMatchObject({ code: 'INTERNAL' });
    await expect(crypto.fetch(esConfig('es-arg'), { signalId: 1.5 })).rejects.toMatchObject({ code: 'INTERNAL' });
    expect(requests('crypto')).toBe(0);
  });

  const MALFORMED: [string, unknown, string][] = [
    ['missing seed', { cryptoHashFunction: 'SHA-256' }, '"seed" is missing'],
    ['empty seed', { seed: '', cryptoHashFunction: 'SHA-256' }, '"seed" is empty'],
    ['numeric seed', { seed: 12345, cryptoHashFunction: 'SHA-256' }, '"seed" is a number'],
    ['missing cryptoHashFunction', { seed: SEED }, '"cryptoHashFunction" is missing'],
    ['array cryptoHashFunction', { seed: SEED, cryptoHashFunction: ['SHA-256'] }, '"cryptoHashFunction" is a array'],
    ['string signalId', { seed: SEED, cryptoHashFunction: 'SHA-256', signalId: '12' }, '"signalId" is a string'],
    ['negative signalId', { seed: SEED, cryptoHashFunction: 'SHA-256', signalId: -3 }, 'not a non-negative integer'],
    ['fractional signalId', { seed: SEED, cryptoHashFunction: 'SHA-256', signalId: 2.5 }, 'not a non-negative integer'],
    ['signalId above 2^53-1', { seed: SEED, cryptoHashFunction: 'SHA-256', signalId: 2 ** 53 }, 'not a non-negative integer'],
    ['a JSON array', [SEED], 'not a JSON object'],
    ['a JSON string', SEED, 'not a JSON object'],
  ];
  it.each(MALFORMED)('rejects a body with %s as CRYPTO_BAD_RESPONSE, never echoing it', async (_name, body, what) => {
    sim.addEService({ id: 'es-bad', seed: SEED });
    sim.faults.inject('crypto', { kind: 'wrongShape', body });
    const err = await failure(crypto.fetch(esConfig('es-bad')));
    expect(err.code).toBe('CRYPTO_BAD_RESPONSE');
    expect(err.message).toContain(what);
    expect(requests('crypto')).toBe(1);
    expectNoSecrets([err]);
  });

  it('rejects a body that is not JSON as CRYPTO_BAD_RESPONSE', async () => {
    sim.addEService({ id: 'es-html', seed: SEED });
    sim.faults.inject('crypto', { kind: 'malformed' });
    const err = await failure(crypto.fetch(esConfig('es-html')));
    expect(err).toMatchObject({ code: 'CRYPTO_BAD_RESPONSE', status: 200 });
    expect(err.message).toContain('not JSON');
    expect(err.message).not.toContain('temporarily');
  });

  it('accepts signalId: null as absent and ignores unknown extra fields', async () => {
    sim.addEService({ id: 'es-extra', seed: SEED });
    sim.faults.inject('crypto', { kind: 'wrongShape', body: { seed: SEED, cryptoHashFunction: 'SHA3-256', signalId: null, expiresAt: '2030-01-01' }, times: 1 });
    expect(await crypto.fetch(esConfig('es-extra'))).toEqual({ seed: SEED, cryptoHashFunction: 'SHA3-256', fingerprint: seedFingerprint(SEED), signalId: undefined });
  });
});

describe('CryptoInfoClient failures and retries', () => {
  it('401 refreshes the voucher once and retries once', async () => {
    sim.addEService({ id: 'es-401', seed: SEED });
    sim.faults.inject('crypto', { kind: 'status', status: 401, times: 1 });
    expect((await crypto.fetch(esConfig('es-401'))).seed).toBe(SEED);
    expect(requests('crypto')).toBe(2);
    expect(requests('token')).toBe(2);
  });

  it('a second 401 is CRYPTO_UNAUTHORIZED after exactly one refresh', async () => {
    sim.addEService({ id: 'es-401x', seed: SEED });
    sim.faults.inject('crypto', { kind: 'status', status: 401 });
    const err = await failure(crypto.fetch(esConfig('es-401x')));
    expect(err).toMatchObject({ code: 'CRYPTO_UNAUTHORIZED', status: 401 });
    expect(err.correlationId).toBeDefined();
    expect(requests('crypto')).toBe(2);
    expect(requests('token')).toBe(2);
  });

  it('403 (no agreement) is CRYPTO_UNAUTHORIZED at once', async () => {
    sim.addEService({ id: 'es-403', seed: SEED, organizationIds: ['someone-else'] });
    const err = await failure(crypto.fetch(esConfig('es-403')));
    expect(err).toMatchObject({ code: 'CRYPTO_UNAUTHORIZED', status: 403 });
    expect(requests('crypto')).toBe(1);
  });

  it('5xx, dropped connections, truncated bodies and timeouts are retried', async () => {
    sim.addEService({ id: 'es-flaky', seed: SEED });
    sim.faults.inject('crypto', { kind: 'status', status: 503, times: 1 });
    sim.faults.inject('crypto', { kind: 'drop', times: 1 });
    sim.faults.inject('crypto', { kind: 'truncate', times: 1 });
    expect((await crypto.fetch(esConfig('es-flaky'))).seed).toBe(SEED);
    expect(requests('crypto')).toBe(4);

    const slow = new CryptoInfoClient({ vouchers, timeoutMs: 200, retry: FAST_RETRY, logger: logs.logger });
    sim.faults.inject('crypto', { kind: 'delay', ms: 1000, times: 1 });
    expect((await slow.fetch(esConfig('es-flaky'))).seed).toBe(SEED);
    expect(logs.text()).toContain('crypto info request failed, retrying');
    expectNoSecrets([]);
  });

  it('persistent 500 is CRYPTO_UNAVAILABLE after the bounded retries', async () => {
    sim.addEService({ id: 'es-down', seed: SEED });
    sim.faults.inject('crypto', { kind: 'status', status: 500 });
    const err = await failure(crypto.fetch(esConfig('es-down')));
    expect(err).toMatchObject({ code: 'CRYPTO_UNAVAILABLE', status: 500, retryable: true });
    expect(requests('crypto')).toBe(FAST_RETRY.retries + 1);
  });
});

describe('audit pattern end to end (SPEC §5)', () => {
  const auditFor = (id: string, ttlSeconds = 120): AuditConfig => ({ audience: sim.producerAudience(id), claims: { userID: 'operator-7', userLocation: 'anagrafe', LoA: 'substantial' }, ttlSeconds });

  it('sends the TrackingEvidence bound to the voucher digest; the producer accepts it', async () => {
    sim.addEService({ id: 'es-audit', seed: SEED, requireAudit: true });
    const es = esConfig('es-audit');
    es.audit = auditFor('es-audit');
    const info = await crypto.fetch(es);
    expect(info.seed).toBe(SEED);

    const voucher = await vouchers.eservice(es);
    expect(voucher.trackingEvidence).toBeDefined();
    const digest = decodeJwt(voucher.token).digest as { alg: string; value: string };
    expect(digest).toEqual({ alg: 'SHA256', value: createHash('sha256').update(voucher.trackingEvidence!).digest('hex') });
    expect(requests('token')).toBe(1);
    expectNoSecrets([], [voucher.token, voucher.trackingEvidence!]);
  });

  it('without the audit header the producer refuses: CRYPTO_UNAUTHORIZED', async () => {
    sim.addEService({ id: 'es-audit2', seed: SEED, requireAudit: true });
    const err = await failure(crypto.fetch(esConfig('es-audit2')));
    expect(err).toMatchObject({ code: 'CRYPTO_UNAUTHORIZED', status: 401, problemCodes: ['TrackingEvidenceRequired'] });
  });

  it('voucher and JWS are cached together and expire with the shorter-lived of the two', async () => {
    sim.addEService({ id: 'es-audit3', seed: SEED, requireAudit: true });
    let now = Date.now();
    const clocked = new VoucherProvider({ pdnd: pdndConfig(sim, client(dir, 'm2m-client'), { voucherRefreshMarginSeconds: 10 }), retry: FAST_RETRY, clock: () => now });
    const es = esConfig('es-audit3');
    es.audit = auditFor('es-audit3', 40); // voucher lives 600 s, JWS 40 s
    const first = await clocked.eservice(es);
    expect(first.expiresAt - now).toBeLessThanOrEqual(40_000);
    now += 29_000;
    const same = await clocked.eservice(es);
    expect(same).toEqual(first);
    now += 2_000; // 31 s: within 10 s of the JWS expiry
    const next = await clocked.eservice(es);
    expect(next.token).not.toBe(first.token);
    expect(next.trackingEvidence).not.toBe(first.trackingEvidence);
    expect(requests('token')).toBe(2);
    // A different audit setting never shares a voucher (its digest binds one JWS).
    const other = { ...es, audit: { ...es.audit, claims: { userID: 'operator-8' } } };
    expect((await clocked.eservice(other)).token).not.toBe(next.token);
  });
});
