import { randomUUID } from 'node:crypto';
import { compactVerify, generateKeyPair, SignJWT, decodeProtectedHeader, type CryptoKey } from 'jose';

/** Claims of a voucher the simulated PDND issues. */
export interface VoucherClaims {
  iss: string;
  sub: string;
  aud: string;
  client_id: string;
  jti: string;
  iat: number;
  nbf: number;
  exp: number;
  organizationId: string;
  purposeId?: string;
  digest?: { alg: string; value: string };
  /** DPoP-bound vouchers: the RFC 7638 thumbprint of the consumer's DPoP key. */
  cnf?: { jkt: string };
}

/** Claims Signal Hub requires beyond a valid signature and audience; without one it answers 500 `9990` (SPEC §10). */
export const CLAIMS_HUB_REQUIRES = ['nbf', 'organizationId'] as const;
export type VoucherClaimHubRequires = (typeof CLAIMS_HUB_REQUIRES)[number];

export type VoucherCheck =
  | { ok: true; claims: VoucherClaims }
  | { ok: false; reason: 'malformed' | 'signature' | 'unknown-key' | 'expired' };

const ISSUER = 'simulator.interop.pagopa.it';

/**
 * RSA key generation takes up to a second on a busy machine, so one key pair serves every
 * simulator of the process; each instance signs under its own kid and accepts only that kid,
 * so vouchers of one instance are still foreign to another.
 */
let sharedKeyPair: Promise<{ privateKey: CryptoKey; publicKey: CryptoKey }> | undefined;

/**
 * The simulated PDND's own signing key: issues vouchers and verifies the ones resources
 * receive. Signature checks are cached per token (a pull run reuses one voucher for
 * thousands of requests); expiry is re-checked on every use.
 */
export class VoucherAuthority {
  private readonly verified = new Map<string, VoucherClaims>();

  private readonly kid = `simulator-${randomUUID()}`;

  /** jti of every voucher issued since the last `expireAllIssued`, and of those it expired. */
  private issuedJtis = new Set<string>();
  private readonly expiredJtis = new Set<string>();

  private constructor(
    private readonly privateKey: CryptoKey,
    private readonly publicKey: CryptoKey,
    private readonly now: () => number,
  ) {}

  static async create(now: () => number): Promise<VoucherAuthority> {
    sharedKeyPair ??= generateKeyPair('RS256', { modulusLength: 2048 });
    const { privateKey, publicKey } = await sharedKeyPair;
    return new VoucherAuthority(privateKey, publicKey, now);
  }

  /**
   * A DPoP-bound voucher (claims with `cnf`) has header typ dpop+jwt, as PDND's (SPEC §4b).
   * `lacking`: a claim left out, as a misconfigured authorization server could (the fault `voucherLacksClaim`).
   */
  async issue(claims: Omit<VoucherClaims, 'iss' | 'jti' | 'iat' | 'nbf' | 'exp'>, ttlSeconds: number, lacking?: VoucherClaimHubRequires): Promise<string> {
    const iat = Math.floor(this.now() / 1000);
    const full: VoucherClaims = { ...claims, iss: ISSUER, jti: randomUUID(), iat, nbf: iat, exp: iat + ttlSeconds };
    if (this.issuedJtis.size >= 10_000) this.issuedJtis.clear();
    this.issuedJtis.add(full.jti);
    const payload: Partial<VoucherClaims> = { ...full };
    if (lacking !== undefined) delete payload[lacking];
    return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid: this.kid, typ: claims.cnf ? 'dpop+jwt' : 'at+jwt' }).sign(this.privateKey);
  }

  async check(token: string): Promise<VoucherCheck> {
    let claims = this.verified.get(token);
    if (!claims) {
      try {
        const header = decodeProtectedHeader(token);
        if (header.alg !== 'RS256') return { ok: false, reason: 'signature' };
        // Another authority's voucher (another environment, another simulator instance).
        if (header.kid !== this.kid) return { ok: false, reason: 'unknown-key' };
      } catch {
        return { ok: false, reason: 'malformed' };
      }
      try {
        const { payload } = await compactVerify(token, this.publicKey, { algorithms: ['RS256'] });
        claims = JSON.parse(new TextDecoder().decode(payload)) as VoucherClaims;
      } catch (err) {
        return { ok: false, reason: (err as { code?: string }).code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' ? 'signature' : 'malformed' };
      }
      if (this.verified.size >= 10_000) this.verified.clear();
      this.verified.set(token, claims);
    }
    if (typeof claims.exp !== 'number' || claims.exp * 1000 <= this.now() || this.expiredJtis.has(claims.jti)) return { ok: false, reason: 'expired' };
    return { ok: true, claims };
  }

  /** Every voucher issued so far is expired from now on; vouchers issued later are not affected. */
  expireAllIssued(): void {
    for (const jti of this.issuedJtis) this.expiredJtis.add(jti);
    this.issuedJtis = new Set();
  }
}
