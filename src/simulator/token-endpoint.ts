import { decodeProtectedHeader, jwtVerify, errors as joseErrors } from 'jose';
import type { IncomingHttpHeaders } from 'node:http';
import { checkDpopProof, dpopHeader, requestHtu } from './dpop.js';
import { json, problem, type SimResponse } from './http.js';
import type { SimState } from './state.js';
import type { VoucherClaimHubRequires } from './vouchers.js';

export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const ALLOWED_HEADER = new Set(['alg', 'kid', 'typ']);
const ALLOWED_CLAIMS = new Set(['iss', 'sub', 'aud', 'jti', 'iat', 'exp', 'purposeId', 'digest']);
/** Clock skew tolerated on iat, as authorization servers usually allow. */
const SKEW_SECONDS = 30;

class Rejected extends Error {}

/** A DPoP proof the token endpoint refused; `nonce` when the refusal is use_dpop_nonce. */
class DpopRefused extends Error {
  constructor(
    message: string,
    readonly nonce: string | undefined,
  ) {
    super(message);
  }
}

/**
 * The PDND authorization server's token endpoint (SPEC §4). Every refusal is the same generic
 * 400 problem `015-0008`, as the real one answers; the precise reason is kept in the stats
 * (`tokenRejections`) so tests and operators of the simulator can see it.
 */
export async function handleToken(state: SimState, rawBody: string, headers: IncomingHttpHeaders = {}, lacking?: VoucherClaimHubRequires): Promise<SimResponse> {
  try {
    // SPEC §4b: a DPoP header asks for a voucher bound to the proof's key (cnf.jkt).
    const proof = dpopHeader(headers);
    let jkt: string | undefined;
    if (proof !== undefined || headers.dpop !== undefined) {
      const nonce = state.settings.tokenDpopNonce;
      const check = await checkDpopProof(state, proof, { htm: 'POST', htu: requestHtu(headers, '/token.oauth2'), ...(nonce !== undefined ? { nonce } : {}) });
      if (!check.ok) throw new DpopRefused(check.reason, check.useNonce ? nonce : undefined);
      jkt = check.jkt;
    }
    const voucher = await issueFor(state, new URLSearchParams(rawBody), jkt, lacking);
    state.noteSecret('voucher', voucher);
    state.counters.tokensIssued++;
    return json(200, { access_token: voucher, token_type: jkt !== undefined ? 'DPoP' : 'Bearer', expires_in: state.settings.voucherTtlSeconds });
  } catch (err) {
    if (err instanceof DpopRefused) {
      state.rejectDpop(err.message);
      state.logger.debug({ reason: err.message }, 'simulator: DPoP proof refused by the token endpoint');
      // RFC 9449 §8: the nonce demand is the one DPoP refusal a client can act on.
      if (err.nonce !== undefined) return json(400, { error: 'use_dpop_nonce', error_description: 'Authorization server requires nonce in DPoP proof' }, { 'dpop-nonce': err.nonce });
      return json(400, { error: 'invalid_dpop_proof', error_description: 'DPoP proof not valid' });
    }
    if (!(err instanceof Rejected)) throw err;
    state.rejectToken(err.message);
    state.logger.debug({ reason: err.message }, 'simulator: client assertion refused');
    return problem(400, '015-0008', 'Unable to generate a token for the given request');
  }
}

async function issueFor(state: SimState, form: URLSearchParams, jkt: string | undefined, lacking: VoucherClaimHubRequires | undefined): Promise<string> {
  const { settings } = state;
  if (form.get('grant_type') !== 'client_credentials') throw new Rejected('grant_type must be client_credentials');
  if (form.get('client_assertion_type') !== CLIENT_ASSERTION_TYPE) throw new Rejected('client_assertion_type must be jwt-bearer');
  const clientId = form.get('client_id');
  const assertion = form.get('client_assertion');
  if (!clientId) throw new Rejected('client_id missing');
  if (!assertion) throw new Rejected('client_assertion missing');
  const client = state.clients.get(clientId);
  if (!client) throw new Rejected('unknown client_id');

  let header: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(assertion) as Record<string, unknown>;
  } catch {
    throw new Rejected('client_assertion is not a JWS');
  }
  if (header.alg !== 'RS256') throw new Rejected('alg must be RS256');
  if (header.typ !== 'JWT') throw new Rejected('typ must be JWT');
  if (typeof header.kid !== 'string') throw new Rejected('kid missing');
  const key = client.keys.get(header.kid);
  if (!key) throw new Rejected('kid is not a key of this client');
  if (settings.strictAssertions) {
    const extra = Object.keys(header).filter((k) => !ALLOWED_HEADER.has(k));
    if (extra.length > 0) throw new Rejected(`unexpected header fields: ${extra.join(',')}`);
  }

  const nowMs = state.now();
  let claims: Record<string, unknown>;
  try {
    ({ payload: claims } = await jwtVerify(assertion, key, {
      algorithms: ['RS256'],
      typ: 'JWT',
      issuer: clientId,
      subject: clientId,
      audience: settings.assertionAudience,
      requiredClaims: ['jti', 'iat', 'exp'],
      currentDate: new Date(nowMs),
    }));
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw new Rejected('assertion expired');
    if (err instanceof joseErrors.JWTClaimValidationFailed) throw new Rejected(`claim ${err.claim} invalid: ${err.reason}`);
    if (err instanceof joseErrors.JWSSignatureVerificationFailed) throw new Rejected('signature does not verify with the key of kid');
    throw new Rejected(`assertion invalid (${(err as { code?: string }).code ?? 'unknown'})`);
  }
  if (Array.isArray(claims.aud)) throw new Rejected('aud must be a single string');
  if (settings.strictAssertions) {
    const extra = Object.keys(claims).filter((k) => !ALLOWED_CLAIMS.has(k));
    if (extra.length > 0) throw new Rejected(`unexpected claims: ${extra.join(',')}`);
  }
  const iat = claims.iat as number;
  const exp = claims.exp as number;
  if (iat * 1000 > nowMs + SKEW_SECONDS * 1000) throw new Rejected('iat is in the future');
  if (exp - iat > settings.maxAssertionTtlSeconds) throw new Rejected(`assertion lifetime exceeds ${settings.maxAssertionTtlSeconds}s`);
  const jti = claims.jti;
  if (typeof jti !== 'string' || jti.length === 0) throw new Rejected('jti must be a non-empty string');
  forgetExpiredJtis(state, nowMs);
  if (state.usedJtis.has(`${clientId}\u0000${jti}`)) throw new Rejected('jti already used');

  let digest: { alg: string; value: string } | undefined;
  if (claims.digest !== undefined) {
    const d = claims.digest as { alg?: unknown; value?: unknown } | null;
    if (!d || typeof d !== 'object' || d.alg !== 'SHA256' || typeof d.value !== 'string' || !/^[0-9a-f]{64}$/.test(d.value) || Object.keys(d).length !== 2) {
      throw new Rejected('digest must be {alg:"SHA256", value:<64 lowercase hex>}');
    }
    digest = { alg: d.alg, value: d.value };
  }

  let purposeId: string | undefined;
  let aud = settings.m2mAudience;
  if (client.kind === 'eservice') {
    if (typeof claims.purposeId !== 'string' || claims.purposeId.length === 0) throw new Rejected('purposeId required for an e-service client');
    if (!client.purposes.has(claims.purposeId)) throw new Rejected('purposeId is not a purpose of this client');
    purposeId = claims.purposeId;
    const boundTo = client.purposes.get(purposeId);
    aud = (boundTo !== undefined ? state.eservices.get(boundTo)?.producerAudience : undefined) ?? settings.defaultProducerAudience;
  }
  // Only an accepted assertion burns its jti: a replay of a voucher-yielding assertion is the attack.
  state.usedJtis.set(`${clientId}\u0000${jti}`, exp * 1000);

  return state.authority.issue(
    {
      sub: clientId,
      client_id: clientId,
      aud,
      organizationId: client.organizationId,
      ...(purposeId !== undefined ? { purposeId } : {}),
      ...(digest !== undefined ? { digest } : {}),
      ...(jkt !== undefined ? { cnf: { jkt } } : {}),
    },
    state.settings.voucherTtlSeconds,
    lacking,
  );
}

function forgetExpiredJtis(state: SimState, nowMs: number): void {
  if (state.usedJtis.size < 10_000) return;
  for (const [jti, expMs] of state.usedJtis) if (expMs < nowMs) state.usedJtis.delete(jti);
}
