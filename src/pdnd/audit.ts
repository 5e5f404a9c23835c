import { createHash, randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import type { AuditConfig, ClientConfig } from '../config/types.js';
import { loadPrivateKey } from './keys.js';

export const TRACKING_EVIDENCE_HEADER = 'Agid-JWT-TrackingEvidence';

export interface TrackingEvidence {
  /** The compact JWS sent in the Agid-JWT-TrackingEvidence header. */
  jws: string;
  /** Lowercase hex SHA-256 of `jws`: bound into the client assertion's `digest`. */
  digest: string;
  /** Epoch seconds of the JWS `exp`. */
  expiresAt: number;
}

export interface TrackingEvidenceOptions {
  client: ClientConfig;
  purposeId: string;
  audit: AuditConfig;
  /** Epoch seconds for iat/nbf; default now. */
  issuedAt?: number;
}

/**
 * The audit JWS of SPEC §5 (AgID AUDIT_REST_01/02): producer audit fields plus iss, aud,
 * purposeId, jti, iat, nbf, exp. The registered claims are set last so that a configured
 * audit field can never override them.
 */
export async function buildTrackingEvidence(options: TrackingEvidenceOptions): Promise<TrackingEvidence> {
  const { client, audit } = options;
  const iat = options.issuedAt ?? Math.floor(Date.now() / 1000);
  const exp = iat + audit.ttlSeconds;
  const jws = await new SignJWT({ ...audit.claims, purposeId: options.purposeId })
    .setProtectedHeader({ alg: 'RS256', kid: client.keyId, typ: 'JWT' })
    .setIssuer(client.clientId)
    .setAudience(audit.audience)
    .setJti(randomUUID())
    .setIssuedAt(iat)
    .setNotBefore(iat)
    .setExpirationTime(exp)
    .sign(loadPrivateKey(client.privateKeyFile));
  return { jws, digest: trackingEvidenceDigest(jws), expiresAt: exp };
}

export function trackingEvidenceDigest(jws: string): string {
  return createHash('sha256').update(jws, 'ascii').digest('hex');
}

/**
 * Distinguishes audit settings in the voucher cache key: two e-services that share client and
 * purpose but send different audit fields must not share a voucher (its digest binds one JWS).
 */
export function auditConfigKey(audit: AuditConfig): string {
  const claims = Object.keys(audit.claims)
    .sort()
    .map((k) => [k, audit.claims[k]]);
  return createHash('sha256').update(JSON.stringify([audit.audience, audit.ttlSeconds, claims]), 'utf8').digest('hex').slice(0, 16);
}
