import type { KeyObject } from 'node:crypto';
import type { PseudonymRecipe } from '../crypto/pseudonym.js';

export type ClientKind = 'm2m' | 'eservice';

/** A purpose, optionally bound to the e-service it was created for (as in PDND). */
export type PurposeSpec = string | { id: string; eserviceId: string };

export interface ClientRegistration {
  clientId: string;
  kind: ClientKind;
  keyId: string;
  /** The public half of the client's key, as a KeyObject or SPKI/PKCS#1 PEM. */
  publicKey: KeyObject | string;
  organizationId: string;
  /** E-service clients: the purposes the client may ask vouchers for. */
  purposes?: PurposeSpec[];
}

export interface EServiceRegistration {
  id: string;
  /**
   * `aud` of e-service vouchers for this producer. Default: the simulator's shared
   * `defaultProducerAudience`, so that purposes not bound to an e-service still work.
   */
  producerAudience?: string;
  /** Organizations with an active agreement (may pull). Default: all. */
  organizationIds?: string[];
  /**
   * Current seed; `null` = the producer publishes no crypto info (404). Default: random, or the
   * seeds it already has when the e-service is added again to change its settings.
   */
  seed?: string | null;
  /** Spelling sent in crypto info. Default `SHA-256`. */
  cryptoHashFunction?: string;
  /** Default GovWay's: `${subject}${seed}`, base64. */
  recipe?: PseudonymRecipe;
  /**
   * Seeds kept for `?signalId=S`. Default 1 (GovWay's default: only the current one, so
   * `?signalId=S` answers only when S introduced the current seed, else 404).
   */
  historyDepth?: number;
  /** Include `signalId` in crypto info responses (GovWay: off by default). */
  includeSignalId?: boolean;
  /** Require `Agid-JWT-TrackingEvidence` bound to the voucher's digest (SPEC §5). */
  requireAudit?: boolean;
  /** Accept only DPoP-bound vouchers with a valid proof (SPEC §4b), as IT-Wallet authentic sources do. */
  requireDpop?: boolean;
  /** DPoP proofs must carry the producer's nonce: the first request is answered use_dpop_nonce. */
  dpopNonce?: boolean;
  /** Refused organizations get a bare 403 with an HTML body, as a WAF answers. */
  forbiddenWithoutProblem?: boolean;
  /** After each rotation, the next N crypto-info requests still see the previous seed (SPEC §8 race). */
  staleReads?: number;
}

export interface DepositInput {
  signalType: string;
  objectId: string;
  objectType: string;
  /** Default: highest id so far + 1. A lower, unused id simulates a late lower id. */
  signalId?: number;
  /** Epoch ms from which the hub counts the signal as inserted (time window). Default: now. */
  visibleAt?: number;
}

export interface SimulatorStats {
  /** Requests received per route (including those answered by a fault). */
  requests: Record<string, number>;
  /** Responses per route and status, e.g. `{ pull: { "200": 3, "206": 9 } }`. */
  responses: Record<string, Record<string, number>>;
  /** 429s answered by the hub's rate limiter (not injected faults). */
  responses429: number;
  tokensIssued: number;
  /** Why assertions were refused, most recent last (bounded). */
  tokenRejections: string[];
  /** Why DPoP proofs were refused (token endpoint and producers), most recent last (bounded). */
  dpopRejections: string[];
  signalsServed: number;
  faultsFired: Record<string, number>;
}
