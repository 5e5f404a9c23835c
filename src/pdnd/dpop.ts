import { createHash, createPublicKey, randomUUID, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { dpopKeyProblem, type DpopAlgorithm } from '../config/keys.js';
import { AppError } from '../errors.js';

export type { DpopAlgorithm };

/** The `Authorization` scheme and token-response `token_type` of a DPoP-bound voucher (RFC 9449). */
export const DPOP_SCHEME = 'DPoP';
export const DPOP_HEADER = 'DPoP';
export const DPOP_NONCE_HEADER = 'DPoP-Nonce';


export interface DpopProofOptions {
  /** HTTP method of the request the proof accompanies. */
  htm: 'GET' | 'POST';
  /** The request URL; query and fragment are dropped (RFC 9449 §4.2). */
  url: string;
  /** The voucher sent with the request: bound into `ath`. Absent on the token request. */
  accessToken?: string;
  /** The server's last `DPoP-Nonce`, when it asked for one. */
  nonce?: string;
}

/**
 * The consumer's DPoP key pair (SPEC §4b): generated at start and kept in memory (ES256, quick
 * to generate and short proofs), or read from `pdnd.dpop_key_file` (RSA → RS256, EC P-256 →
 * ES256) when an operator wants it fixed. Only its public JWK and thumbprint leave this object.
 */
export class DpopKey {
  private constructor(
    private readonly privateKey: KeyObject | CryptoKey,
    readonly alg: DpopAlgorithm,
    /** The public key as sent in every proof's `jwk` header. */
    readonly publicJwk: JWK,
    /** RFC 7638 SHA-256 thumbprint of `publicJwk`: the `cnf.jkt` a bound voucher carries. */
    readonly thumbprint: string,
  ) {}

  static async generate(): Promise<DpopKey> {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: false });
    return DpopKey.from(privateKey, await exportJWK(publicKey), 'ES256');
  }

  /** Reads an unencrypted PEM private key; errors name the file only, never its content. */
  static async fromFile(file: string): Promise<DpopKey> {
    const problem = dpopKeyProblem(file);
    if (typeof problem === 'string') throw new AppError('INPUT_INVALID', `DPoP key file ${file}: ${problem}`);
    const { key, alg } = problem;
    const jwk = await exportJWK(createPublicKey(key));
    return DpopKey.from(key, jwk, alg);
  }

  private static async from(privateKey: KeyObject | CryptoKey, jwk: JWK, alg: DpopAlgorithm): Promise<DpopKey> {
    // Only the public members: a proof header never carries anything else.
    const publicJwk: JWK = jwk.kty === 'EC' ? { kty: 'EC', crv: jwk.crv!, x: jwk.x!, y: jwk.y! } : { kty: 'RSA', e: jwk.e!, n: jwk.n! };
    return new DpopKey(privateKey, alg, publicJwk, await calculateJwkThumbprint(publicJwk, 'sha256'));
  }

  /** A fresh proof: new `jti`, current `iat`, `htm`/`htu` of this request, `ath` when a voucher is sent. */
  proof(options: DpopProofOptions): Promise<string> {
    const claims: Record<string, unknown> = { htm: options.htm, htu: dpopHtu(options.url) };
    if (options.accessToken !== undefined) claims.ath = accessTokenHash(options.accessToken);
    if (options.nonce !== undefined) claims.nonce = options.nonce;
    return new SignJWT(claims)
      .setProtectedHeader({ typ: 'dpop+jwt', alg: this.alg, jwk: this.publicJwk })
      .setJti(randomUUID())
      .setIssuedAt()
      .sign(this.privateKey);
  }
}

/** The `htu` of a request: scheme, host, port and path, without query or fragment. */
export function dpopHtu(url: string): string {
  const parsed = new URL(url);
  return `${parsed.origin}${parsed.pathname}`;
}

/** `ath`: base64url of SHA-256 of the voucher's ASCII bytes (RFC 9449 §4.2). */
export function accessTokenHash(accessToken: string): string {
  return createHash('sha256').update(accessToken, 'ascii').digest('base64url');
}

/**
 * Whether a 400/401 answer asks for a DPoP nonce (RFC 9449 §8–9): the token endpoint says
 * `{"error":"use_dpop_nonce"}`, a resource says so in `WWW-Authenticate`; both send `DPoP-Nonce`.
 * Returns the nonce to put in the next proof, or undefined.
 */
export function requestedDpopNonce(status: number, headers: Record<string, string | string[] | undefined>, body: string): string | undefined {
  if (status !== 400 && status !== 401) return undefined;
  const raw = headers['dpop-nonce'];
  const nonce = Array.isArray(raw) ? raw[0] : raw;
  if (typeof nonce !== 'string' || !/^[\x21-\x7e]{1,256}$/.test(nonce)) return undefined;
  const www = headers['www-authenticate'];
  const challenge = Array.isArray(www) ? www.join(',') : (www ?? '');
  if (/error="?use_dpop_nonce"?/.test(challenge)) return nonce;
  try {
    const parsed = JSON.parse(body) as { error?: unknown };
    if (parsed && parsed.error === 'use_dpop_nonce') return nonce;
  } catch {
    // not JSON: no nonce request in the body
  }
  return undefined;
}
