import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { json, problem, type SimResponse } from './http.js';
import { checkDpopProof, dpopHeader, requestHtu } from './dpop.js';
import type { EServiceState, SeedEntry, SimState } from './state.js';
import type { VoucherClaims } from './vouchers.js';

/** GovWay-style problem codes of the producer's e-service. */
export const PRODUCER_CODES = {
  tokenRequired: 'TokenAuthenticationRequired',
  tokenInvalid: 'InvalidToken',
  denied: 'AuthorizationDenied',
  trackingRequired: 'TrackingEvidenceRequired',
  trackingInvalid: 'InvalidTrackingEvidence',
  notFound: 'NotFound',
  badRequest: 'BadRequest',
} as const;

const UNSIGNED_INT = /^(0|[1-9][0-9]*)$/;

/**
 * The producer's "pseudonymization" operation (SPEC §6) behind GovWay: e-service voucher for
 * this producer, optional audit evidence, `?signalId=S` looked up in the kept seed history.
 */
export async function handleCryptoInfo(state: SimState, headers: IncomingHttpHeaders, eserviceId: string, query: URLSearchParams, path = `/producers/${eserviceId}/pseudonymization`): Promise<SimResponse> {
  const es = state.eservices.get(eserviceId);
  if (!es) return problem(404, PRODUCER_CODES.notFound, `no e-service ${eserviceId}`);

  const auth = await authorizeProducer(state, es, headers, path);
  if (!auth.ok) return auth.response;
  const claims = auth.claims;
  if (claims.aud !== es.producerAudience) return problem(401, PRODUCER_CODES.tokenInvalid, 'Voucher audience is not this e-service');
  if (typeof claims.purposeId !== 'string') return problem(403, PRODUCER_CODES.denied, 'Voucher has no purposeId');
  const bound = state.clients.get(claims.client_id)?.purposes.get(claims.purposeId);
  if (bound !== undefined && bound !== es.id) return problem(403, PRODUCER_CODES.denied, 'Purpose is not for this e-service');
  if (es.organizationIds !== undefined && !es.organizationIds.has(claims.organizationId)) return problem(403, PRODUCER_CODES.denied, 'Organization has no agreement');

  if (es.requireAudit) {
    const evidence = headers['agid-jwt-trackingevidence'];
    // A signed audit JWS is a credential towards this producer while it lasts, like an assertion.
    if (typeof evidence === 'string' && evidence !== '') state.noteSecret('assertion', evidence);
    const refusal = await checkTrackingEvidence(state, es, claims, evidence);
    if (refusal) return refusal;
  }

  const requested = query.get('signalId');
  let entry: SeedEntry | undefined;
  if (requested !== null) {
    if (!UNSIGNED_INT.test(requested) || !Number.isSafeInteger(Number(requested))) return problem(400, PRODUCER_CODES.badRequest, 'signalId must be a non-negative integer');
    entry = es.seeds.find((s) => s.signalId === Number(requested));
    // During the race window the producer does not know the new seed yet.
    if (entry !== undefined && entry === es.seeds.at(-1) && takeStale(es)) entry = undefined;
  } else {
    entry = es.seeds.at(-1);
    if (entry !== undefined && takeStale(es)) entry = es.previous;
  }
  if (!entry) return problem(404, PRODUCER_CODES.notFound, requested !== null ? `no crypto info introduced by signalId ${requested}` : 'no crypto info');
  return json(200, es.includeSignalId ? { seed: entry.seed, cryptoHashFunction: es.cryptoHashFunction, signalId: entry.signalId } : { seed: entry.seed, cryptoHashFunction: es.cryptoHashFunction });
}

const AUTHORIZATION = /^(Bearer|DPoP) ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/;

type ProducerAuth = { ok: true; claims: VoucherClaims } | { ok: false; response: SimResponse };

/**
 * The voucher as a producer's gateway checks it: `Bearer <voucher>`, or `DPoP <voucher>` with a
 * valid proof bound to it (SPEC §4b). A DPoP-bound voucher is never accepted as a Bearer one, and
 * a producer that requires DPoP accepts nothing else.
 */
async function authorizeProducer(state: SimState, es: EServiceState, headers: IncomingHttpHeaders, path: string): Promise<ProducerAuth> {
  const header = headers.authorization;
  const refuse = (code: string, detail: string, extra: Record<string, string> = {}): ProducerAuth => ({ ok: false, response: problem(401, code, detail, extra) });
  const dpopChallenge = (error: string) => ({ 'www-authenticate': `DPoP algs="RS256 ES256", error="${error}"` });
  if (header === undefined || header === '') return refuse(PRODUCER_CODES.tokenRequired, 'A valid e-service voucher is required', es.requireDpop ? dpopChallenge('invalid_token') : {});
  const match = AUTHORIZATION.exec(header);
  if (!match) return refuse(PRODUCER_CODES.tokenInvalid, 'Authorization must be "Bearer <voucher>" or "DPoP <voucher>"');
  const [, scheme, token] = match as unknown as [string, 'Bearer' | 'DPoP', string];
  const check = await state.authority.check(token);
  if (!check.ok) return refuse(PRODUCER_CODES.tokenInvalid, 'A valid e-service voucher is required');
  const claims = check.claims;
  if (scheme === 'Bearer') {
    if (claims.cnf !== undefined) return refuse(PRODUCER_CODES.tokenInvalid, 'A DPoP-bound voucher cannot be used as a Bearer token', dpopChallenge('invalid_token'));
    if (es.requireDpop) return refuse(PRODUCER_CODES.tokenInvalid, 'This e-service requires a DPoP voucher', dpopChallenge('invalid_token'));
    return { ok: true, claims };
  }
  if (typeof claims.cnf?.jkt !== 'string') return refuse(PRODUCER_CODES.tokenInvalid, 'Voucher is not DPoP-bound (no cnf.jkt)', dpopChallenge('invalid_token'));
  const proof = await checkDpopProof(state, dpopHeader(headers), {
    htm: 'GET',
    htu: requestHtu(headers, path),
    accessToken: token,
    jkt: claims.cnf.jkt,
    ...(es.dpopNonce !== undefined ? { nonce: es.dpopNonce } : {}),
  });
  if (!proof.ok) {
    state.rejectDpop(proof.reason);
    if (proof.useNonce && es.dpopNonce !== undefined) return refuse(PRODUCER_CODES.tokenInvalid, 'DPoP nonce required', { ...dpopChallenge('use_dpop_nonce'), 'dpop-nonce': es.dpopNonce });
    return refuse(PRODUCER_CODES.tokenInvalid, proof.reason, dpopChallenge('invalid_dpop_proof'));
  }
  return { ok: true, claims };
}

/** Consumes one stale read of the SPEC §8 race, if any are left. */
function takeStale(es: EServiceState): boolean {
  if (es.staleRemaining <= 0 || es.previous === undefined) return false;
  es.staleRemaining--;
  return true;
}

/**
 * SPEC §5: the JWS must be signed by a registered key of the voucher's client, carry the
 * required claims for this producer and purpose, and hash to the voucher's digest.
 */
async function checkTrackingEvidence(state: SimState, es: EServiceState, voucher: VoucherClaims, header: string | string[] | undefined): Promise<SimResponse | null> {
  if (typeof header !== 'string' || header === '') return problem(401, PRODUCER_CODES.trackingRequired, 'Agid-JWT-TrackingEvidence header required');
  const client = state.clients.get(voucher.client_id);
  let kid: unknown;
  try {
    kid = decodeProtectedHeader(header).kid;
  } catch {
    return problem(403, PRODUCER_CODES.trackingInvalid, 'Agid-JWT-TrackingEvidence is not a JWS');
  }
  const key = typeof kid === 'string' ? client?.keys.get(kid) : undefined;
  if (!key) return problem(403, PRODUCER_CODES.trackingInvalid, 'Agid-JWT-TrackingEvidence kid is not a key of the voucher client');
  try {
    const { payload } = await jwtVerify(header, key, {
      algorithms: ['RS256'],
      issuer: voucher.client_id,
      audience: es.producerAudience,
      requiredClaims: ['purposeId', 'jti', 'iat', 'nbf', 'exp'],
      currentDate: new Date(state.now()),
    });
    if (payload.purposeId !== voucher.purposeId) return problem(403, PRODUCER_CODES.trackingInvalid, 'Agid-JWT-TrackingEvidence purposeId differs from the voucher');
  } catch (err) {
    return problem(403, PRODUCER_CODES.trackingInvalid, `Agid-JWT-TrackingEvidence not valid (${(err as { code?: string }).code ?? 'invalid'})`);
  }
  const digest = createHash('sha256').update(header, 'utf8').digest('hex');
  if (voucher.digest?.alg !== 'SHA256' || voucher.digest.value !== digest) {
    return problem(403, PRODUCER_CODES.trackingInvalid, 'Agid-JWT-TrackingEvidence does not match the voucher digest');
  }
  return null;
}
