import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import type { ClientConfig } from '../config/types.js';
import { loadPrivateKey } from './keys.js';

export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

export interface ClientAssertionOptions {
  client: ClientConfig;
  /** `pdnd.assertionAudience`, e.g. auth.interop.pagopa.it/client-assertion */
  audience: string;
  ttlSeconds: number;
  /** Only for e-service vouchers. */
  purposeId?: string;
  /** Lowercase hex SHA-256 of the Agid-JWT-TrackingEvidence JWS: only for the audit pattern. */
  digest?: string;
  /** Epoch seconds to use as `iat`; default now. */
  issuedAt?: number;
}

/**
 * The client assertion of SPEC §4. PDND rejects anything it does not expect, so the header is
 * exactly {alg, kid, typ} and the claims exactly iss, sub, aud, jti, iat, exp (+ purposeId,
 * + digest): no nbf, no array audience.
 */
export async function buildClientAssertion(options: ClientAssertionOptions): Promise<string> {
  const { client } = options;
  const iat = options.issuedAt ?? Math.floor(Date.now() / 1000);
  const extra: Record<string, unknown> = {};
  if (options.purposeId !== undefined) extra.purposeId = options.purposeId;
  if (options.digest !== undefined) extra.digest = { alg: 'SHA256', value: options.digest };
  return new SignJWT(extra)
    .setProtectedHeader({ alg: 'RS256', kid: client.keyId, typ: 'JWT' })
    .setIssuer(client.clientId)
    .setSubject(client.clientId)
    .setAudience(options.audience)
    .setJti(randomUUID())
    .setIssuedAt(iat)
    .setExpirationTime(iat + options.ttlSeconds)
    .sign(loadPrivateKey(client.privateKeyFile));
}
