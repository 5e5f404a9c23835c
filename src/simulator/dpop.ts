import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { calculateJwkThumbprint, decodeProtectedHeader, importJWK, jwtVerify, type JWK } from 'jose';
import type { SimState } from './state.js';

/** Signature algorithms a strict resource server accepts in a proof: asymmetric only. */
const PROOF_ALGORITHMS = ['RS256', 'ES256'];
/** Members only a private JWK has: a proof carrying one is refused (the key leaked). */
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];
/** How old (or how far in the future) a proof's iat may be. */
export const DPOP_MAX_AGE_SECONDS = 60;

export interface ProofExpectation {
  htm: 'GET' | 'POST';
  /** The target URI the request was sent to, without query and fragment. */
  htu: string;
  /** Resource requests: the voucher the proof must be bound to by `ath`. */
  accessToken?: string;
  /** Resource requests: the voucher's `cnf.jkt`: the proof must be signed by that key. */
  jkt?: string;
  /** The nonce the server requires, when it requires one. */
  nonce?: string;
}

export type ProofCheck = { ok: true; jkt: string } | { ok: false; reason: string; useNonce?: boolean };

/** The one `DPoP` header of a request, or why there is none usable. */
export function dpopHeader(headers: IncomingHttpHeaders): string | undefined {
  const value = headers.dpop;
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** The URI a request was sent to, as the client must have written it in `htu`. */
export function requestHtu(headers: IncomingHttpHeaders, path: string): string {
  return `http://${headers.host ?? 'localhost'}${path}`;
}

/**
 * RFC 9449 §4.3, as a strict producer or authorization server checks a proof: typ dpop+jwt, an
 * asymmetric alg, a public `jwk` in the header whose key verifies the signature, htm and htu of
 * this request, a fresh iat, `ath` of the presented voucher, the voucher's `cnf.jkt` thumbprint,
 * the nonce when one is required, and a jti never seen before (checked last, so that a refused
 * proof does not burn its jti).
 */
export async function checkDpopProof(state: SimState, proof: string | undefined, expect: ProofExpectation): Promise<ProofCheck> {
  if (proof === undefined) return { ok: false, reason: 'DPoP proof missing' };
  let header: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(proof) as Record<string, unknown>;
  } catch {
    return { ok: false, reason: 'DPoP proof is not a JWS' };
  }
  if (header.typ !== 'dpop+jwt') return { ok: false, reason: 'DPoP proof typ must be dpop+jwt' };
  if (typeof header.alg !== 'string' || !PROOF_ALGORITHMS.includes(header.alg)) return { ok: false, reason: 'DPoP proof alg must be RS256 or ES256' };
  const jwk = header.jwk as JWK | undefined;
  if (!jwk || typeof jwk !== 'object') return { ok: false, reason: 'DPoP proof header has no jwk' };
  if (PRIVATE_JWK_MEMBERS.some((m) => m in jwk)) return { ok: false, reason: 'DPoP proof jwk holds private key members' };
  let claims: Record<string, unknown>;
  try {
    const key = await importJWK(jwk, header.alg);
    ({ payload: claims } = await jwtVerify(proof, key, { typ: 'dpop+jwt', algorithms: PROOF_ALGORITHMS, currentDate: new Date(state.now()), clockTolerance: DPOP_MAX_AGE_SECONDS }));
  } catch (err) {
    return { ok: false, reason: `DPoP proof signature does not verify with its jwk (${(err as { code?: string }).code ?? 'invalid'})` };
  }
  if (typeof claims.jti !== 'string' || claims.jti.length === 0) return { ok: false, reason: 'DPoP proof jti missing' };
  if (claims.htm !== expect.htm) return { ok: false, reason: `DPoP proof htm must be ${expect.htm}` };
  if (claims.htu !== expect.htu) return { ok: false, reason: 'DPoP proof htu is not the URI of this request' };
  const iat = claims.iat;
  const nowSeconds = state.now() / 1000;
  if (typeof iat !== 'number' || Math.abs(nowSeconds - iat) > DPOP_MAX_AGE_SECONDS) return { ok: false, reason: 'DPoP proof iat is not fresh' };
  if (expect.accessToken !== undefined) {
    const ath = createHash('sha256').update(expect.accessToken, 'ascii').digest('base64url');
    if (claims.ath !== ath) return { ok: false, reason: 'DPoP proof ath does not match the voucher' };
  } else if (claims.ath !== undefined) {
    return { ok: false, reason: 'DPoP proof ath on a token request' };
  }
  const jkt = await calculateJwkThumbprint(jwk, 'sha256');
  if (expect.jkt !== undefined && jkt !== expect.jkt) return { ok: false, reason: 'DPoP proof key is not the key the voucher is bound to (cnf.jkt)' };
  if (expect.nonce !== undefined && claims.nonce !== expect.nonce) return { ok: false, reason: 'DPoP proof nonce missing or stale', useNonce: true };
  const nowMs = state.now();
  if (state.dpopJtis.size >= 10_000) for (const [jti, until] of state.dpopJtis) if (until < nowMs) state.dpopJtis.delete(jti);
  if (state.dpopJtis.has(claims.jti)) return { ok: false, reason: 'DPoP proof jti already used (replay)' };
  state.dpopJtis.set(claims.jti, nowMs + 2 * DPOP_MAX_AGE_SECONDS * 1000);
  return { ok: true, jkt };
}
