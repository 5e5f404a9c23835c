import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { AppError } from '../src/errors.js';
import { buildClientAssertion } from '../src/pdnd/assertion.js';
import { auditConfigKey, buildTrackingEvidence, trackingEvidenceDigest } from '../src/pdnd/audit.js';
import { loadPrivateKey } from '../src/pdnd/keys.js';
import { tempDir } from './helpers/fs.js';
import { testKey } from './helpers/keys.js';
import { client, ecKeyFile, pkcs1KeyFile, privateKeyFragments } from './pdnd-fixtures.js';

const AUD = 'auth.interop.pagopa.it/client-assertion';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('client assertion (SPEC §4)', () => {
  it('M2M: header exactly {alg, kid, typ}, claims exactly iss, sub, aud, jti, iat, exp', async () => {
    const c = client(tempDir(), 'client-m2m', 'kid-1');
    const jwt = await buildClientAssertion({ client: c, audience: AUD, ttlSeconds: 120 });
    const header = decodeProtectedHeader(jwt);
    expect(header).toEqual({ alg: 'RS256', kid: 'kid-1', typ: 'JWT' });
    const { payload } = await jwtVerify(jwt, testKey().publicKey, { algorithms: ['RS256'] });
    expect(Object.keys(payload).sort()).toEqual(['aud', 'exp', 'iat', 'iss', 'jti', 'sub']);
    expect(payload.iss).toBe('client-m2m');
    expect(payload.sub).toBe('client-m2m');
    expect(payload.aud).toBe(AUD);
    expect(payload.jti).toMatch(UUID);
    expect(payload.exp! - payload.iat!).toBe(120);
    expect(Math.abs(payload.iat! - Date.now() / 1000)).toBeLessThan(60);
  });

  it('e-service: adds purposeId; audit: adds digest {alg:"SHA256", value}; nothing else', async () => {
    const c = client(tempDir(), 'client-es');
    const withPurpose = decodeJwt(await buildClientAssertion({ client: c, audience: AUD, ttlSeconds: 60, purposeId: 'purpose-1' }));
    expect(Object.keys(withPurpose).sort()).toEqual(['aud', 'exp', 'iat', 'iss', 'jti', 'purposeId', 'sub']);
    expect(withPurpose.purposeId).toBe('purpose-1');

    const digest = 'a'.repeat(64);
    const withDigest = decodeJwt(await buildClientAssertion({ client: c, audience: AUD, ttlSeconds: 60, purposeId: 'purpose-1', digest }));
    expect(Object.keys(withDigest).sort()).toEqual(['aud', 'digest', 'exp', 'iat', 'iss', 'jti', 'purposeId', 'sub']);
    expect(withDigest.digest).toEqual({ alg: 'SHA256', value: digest });
  });

  it('uses a fresh jti every time', async () => {
    const c = client(tempDir(), 'client-jti');
    const a = decodeJwt(await buildClientAssertion({ client: c, audience: AUD, ttlSeconds: 60 }));
    const b = decodeJwt(await buildClientAssertion({ client: c, audience: AUD, ttlSeconds: 60 }));
    expect(a.jti).not.toBe(b.jti);
  });

  it('accepts a PKCS#1 key file', async () => {
    const dir = tempDir();
    const jwt = await buildClientAssertion({ client: { clientId: 'c1', keyId: 'k1', privateKeyFile: pkcs1KeyFile(dir) }, audience: AUD, ttlSeconds: 60 });
    await expect(jwtVerify(jwt, testKey().publicKey)).resolves.toBeTruthy();
  });

  it('refuses missing, garbled and non-RSA key files naming the file, never the key', async () => {
    const dir = tempDir();
    const missing = path.join(dir, 'missing.pem');
    expect(() => loadPrivateKey(missing)).toThrowError(expect.objectContaining({ code: 'INPUT_NOT_FOUND' }) as Error);

    const garbled = path.join(dir, 'garbled.pem');
    const pem = testKey().privatePem;
    fs.writeFileSync(garbled, pem.slice(0, 200) + pem.slice(400));
    let err: unknown;
    try {
      loadPrivateKey(garbled);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).code).toBe('INPUT_INVALID');
    expect((err as AppError).message).toContain(garbled);
    for (const fragment of [...privateKeyFragments(), pem.slice(40, 90)]) expect(JSON.stringify({ m: (err as Error).message, s: (err as Error).stack })).not.toContain(fragment);

    expect(() => loadPrivateKey(ecKeyFile(dir))).toThrowError(/RSA/);
  });
});

describe('Agid-JWT-TrackingEvidence (SPEC §5)', () => {
  const audit = { audience: 'https://producer.example/api', claims: { userID: 'op-42', userLocation: 'ufficio-anagrafe', LoA: 'substantial' }, ttlSeconds: 90 };

  it('signs {alg, kid, typ} with iss, aud, purposeId, jti, iat, nbf, exp and the audit fields', async () => {
    const c = client(tempDir(), 'client-audit', 'kid-audit');
    const ev = await buildTrackingEvidence({ client: c, purposeId: 'purpose-9', audit });
    expect(decodeProtectedHeader(ev.jws)).toEqual({ alg: 'RS256', kid: 'kid-audit', typ: 'JWT' });
    const { payload } = await jwtVerify(ev.jws, testKey().publicKey, { algorithms: ['RS256'], audience: audit.audience, issuer: 'client-audit' });
    expect(Object.keys(payload).sort()).toEqual(['LoA', 'aud', 'exp', 'iat', 'iss', 'jti', 'nbf', 'purposeId', 'userID', 'userLocation']);
    expect(payload).toMatchObject({ purposeId: 'purpose-9', userID: 'op-42', userLocation: 'ufficio-anagrafe', LoA: 'substantial' });
    expect(payload.nbf).toBe(payload.iat);
    expect(payload.exp! - payload.iat!).toBe(90);
    expect(ev.expiresAt).toBe(payload.exp);
  });

  it('digest is the lowercase hex SHA-256 of the compact JWS', async () => {
    const ev = await buildTrackingEvidence({ client: client(tempDir(), 'client-dg'), purposeId: 'p', audit });
    const expected = createHash('sha256').update(ev.jws).digest('hex');
    expect(ev.digest).toBe(expected);
    expect(trackingEvidenceDigest(ev.jws)).toBe(expected);
    expect(ev.digest).toMatch(/^[0-9a-f]{64}$/);
  });

  it('configured audit fields cannot override the registered claims', async () => {
    const sneaky = { ...audit, claims: { iss: 'someone-else', aud: 'x', purposeId: 'other', exp: 1, userID: 'u' } };
    const ev = await buildTrackingEvidence({ client: client(tempDir(), 'client-sn'), purposeId: 'real-purpose', audit: sneaky });
    const payload = decodeJwt(ev.jws);
    expect(payload.iss).toBe('client-sn');
    expect(payload.aud).toBe(audit.audience);
    expect(payload.purposeId).toBe('real-purpose');
    expect(payload.exp).toBeGreaterThan(Date.now() / 1000);
  });

  it('audit settings key: stable under claim order, different for different settings', () => {
    const a = auditConfigKey({ audience: 'x', claims: { a: 1, b: 'two' }, ttlSeconds: 60 });
    expect(auditConfigKey({ audience: 'x', claims: { b: 'two', a: 1 }, ttlSeconds: 60 })).toBe(a);
    expect(auditConfigKey({ audience: 'x', claims: { a: 1, b: 'three' }, ttlSeconds: 60 })).not.toBe(a);
    expect(auditConfigKey({ audience: 'y', claims: { a: 1, b: 'two' }, ttlSeconds: 60 })).not.toBe(a);
  });
});
