import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import { silentLogger, type Logger } from '../log.js';
import { SimState, type SimSettings } from './state.js';
import { VoucherAuthority } from './vouchers.js';
import { createSimServer, listen } from './server.js';
import { depositForSubject, generateSignals } from './deposits.js';
import type { RateLimitSettings } from './rate-limit.js';
import type { Fault, SimRoute } from './faults.js';
import type { ClientRegistration, DepositInput, EServiceRegistration, SimulatorStats } from './model.js';

export type { ClientRegistration, ClientKind, DepositInput, EServiceRegistration, PurposeSpec, SimulatorStats } from './model.js';
export type { Fault, SimRoute } from './faults.js';
export { ROUTES as SIM_ROUTES } from './faults.js';
export type { RateLimitSettings } from './rate-limit.js';
export type { HubSignal } from './signal-store.js';
export { HUB_CODES } from './hub.js';
export { PRODUCER_CODES } from './producer.js';
export { CLIENT_ASSERTION_TYPE } from './token-endpoint.js';

export const DEFAULT_ASSERTION_AUDIENCE = 'auth.simulator.local/client-assertion';
export const DEFAULT_M2M_AUDIENCE = 'interop.pagopa.it/m2m';
export const DEFAULT_PRODUCER_AUDIENCE = 'producer.simulator.local';

export interface SimulatorOptions {
  /** Default 0: any free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Signals younger than this are hidden from pulls. Default 0 (production: 10 000). */
  timeWindowMs?: number;
  /** Per organization. Default 1000 per 1000 ms (production: 25/s). */
  rateLimit?: RateLimitSettings;
  /** `expires_in` of vouchers. Default 600. */
  voucherTtlSeconds?: number;
  assertionAudience?: string;
  m2mAudience?: string;
  /** `aud` of e-service vouchers for e-services without their own producerAudience. */
  defaultProducerAudience?: string;
  /** Longest accepted client-assertion lifetime (exp - iat). Default 600. */
  maxAssertionTtlSeconds?: number;
  /** Refuse assertion header fields and claims beyond SPEC §4's. Default true. */
  strictAssertions?: boolean;
  /** The token endpoint demands a nonce in DPoP proofs (answers use_dpop_nonce first). Default false. */
  tokenDpopNonce?: boolean;
  /** Clock in epoch ms, for tests that move time (expiry, windows, rate limit). Default Date.now. */
  now?: () => number;
  logger?: Logger;
}

/** A running simulator: PDND token endpoint, Signal Hub pull/push API and producers, on one base URL. */
export interface Simulator {
  /** Base URL, e.g. `http://127.0.0.1:41234` (no trailing slash). */
  readonly url: string;
  readonly tokenUrl: string;
  /** `{url}/1.0/pull` */
  readonly pullBaseUrl: string;
  readonly port: number;
  readonly assertionAudience: string;
  readonly m2mAudience: string;
  /** `{url}/producers/{eserviceId}/pseudonymization` */
  cryptoInfoUrl(eserviceId: string): string;
  /** The `aud` that e-service vouchers for this e-service carry (also the audit JWS `aud`). */
  producerAudience(eserviceId: string): string;
  registerClient(client: ClientRegistration): void;
  /** Removes a key from a client, as an operator deleting it in the PDND back office (key rotation). */
  revokeClientKey(clientId: string, keyId: string): void;
  /** Adds an e-service, or changes the settings of an existing one (its signals and current seed id stay). */
  addEService(eservice: EServiceRegistration): void;
  /** Returns the signalId. */
  deposit(eserviceId: string, signal: DepositInput): number;
  /** Deposits a signal whose objectId is the subject's pseudonym under the current seed; returns its id. */
  depositForSubject(eserviceId: string, subjectKey: string, signalType: string, objectType?: string): number;
  /** Deposits `count` synthetic signals quickly (benchmarks). */
  generateSignals(eserviceId: string, count: number): { first: number | null; last: number | null };
  /** GovWay's lazy rotation: SEEDUPDATE S, new seed introduced at S. Returns S. */
  rotateSeed(eserviceId: string, newSeed?: string): number;
  /** The producer's pseudonym of a subject under `seed` (default: the current seed). */
  pseudonymFor(eserviceId: string, subjectKey: string, seed?: string): string;
  /** The producer's current seed (test data; never log it). */
  currentSeed(eserviceId: string): { seed: string; signalId: number } | undefined;
  /** Every voucher the token endpoint issued, oldest first (test data for log scanners; never log them). */
  issuedVouchers(): string[];
  /** Every DPoP proof the token endpoint and the producers received, accepted or not, oldest first. */
  receivedDpopProofs(): string[];
  /** Every client assertion the token endpoint received and every audit JWS (Agid-JWT-TrackingEvidence) a producer received, accepted or not, oldest first. */
  receivedAssertions(): string[];
  /** Every seed the e-service ever had (given, generated or rotated in), oldest first. */
  seedHistory(eserviceId: string): string[];
  /** Highest signalId deposited for the e-service (0 if none). */
  lastSignalId(eserviceId: string): number;
  /** Retention: deletes signals with id <= upTo. Returns how many. */
  purge(eserviceId: string, upTo: number): number;
  setTimeWindow(ms: number): void;
  setRateLimit(rateLimit: RateLimitSettings): void;
  setVoucherTtl(seconds: number): void;
  readonly faults: {
    inject(route: SimRoute, fault: Fault): void;
    clear(route?: SimRoute): void;
  };
  stats(): SimulatorStats;
  close(): Promise<void>;
}

export async function startSimulator(options: SimulatorOptions = {}): Promise<Simulator> {
  const now = options.now ?? Date.now;
  const settings: SimSettings = {
    timeWindowMs: options.timeWindowMs ?? 0,
    voucherTtlSeconds: options.voucherTtlSeconds ?? 600,
    assertionAudience: options.assertionAudience ?? DEFAULT_ASSERTION_AUDIENCE,
    m2mAudience: options.m2mAudience ?? DEFAULT_M2M_AUDIENCE,
    defaultProducerAudience: options.defaultProducerAudience ?? DEFAULT_PRODUCER_AUDIENCE,
    maxAssertionTtlSeconds: options.maxAssertionTtlSeconds ?? 600,
    strictAssertions: options.strictAssertions ?? true,
    tokenDpopNonce: options.tokenDpopNonce ? randomBytes(12).toString('base64url') : undefined,
  };
  const authority = await VoucherAuthority.create(now);
  const state = new SimState(settings, options.rateLimit ?? { limit: 1000, intervalMs: 1000 }, authority, now, options.logger ?? silentLogger);
  const server = createSimServer(state);
  const address = await listen(server, options.port ?? 0, options.host ?? '127.0.0.1');
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  return {
    url,
    tokenUrl: `${url}/token.oauth2`,
    pullBaseUrl: `${url}/1.0/pull`,
    port: address.port,
    assertionAudience: settings.assertionAudience,
    m2mAudience: settings.m2mAudience,
    cryptoInfoUrl: (eserviceId) => `${url}/producers/${encodeURIComponent(eserviceId)}/pseudonymization`,
    producerAudience: (eserviceId) => state.eservice(eserviceId).producerAudience,
    registerClient: (client) => state.registerClient(client),
    revokeClientKey: (clientId, keyId) => state.revokeClientKey(clientId, keyId),
    addEService: (eservice) => state.addEService(eservice),
    deposit: (eserviceId, signal) => state.deposit(eserviceId, signal),
    depositForSubject: (eserviceId, subjectKey, signalType, objectType) => depositForSubject(state, eserviceId, subjectKey, signalType, objectType),
    generateSignals: (eserviceId, count) => generateSignals(state, eserviceId, count),
    rotateSeed: (eserviceId, newSeed) => state.rotateSeed(eserviceId, newSeed),
    pseudonymFor: (eserviceId, subjectKey, seed) => state.pseudonymFor(eserviceId, subjectKey, seed),
    currentSeed: (eserviceId) => {
      const entry = state.currentSeed(state.eservice(eserviceId));
      return entry ? { ...entry } : undefined;
    },
    issuedVouchers: () => [...state.secretsSeen.vouchers],
    receivedAssertions: () => [...state.secretsSeen.assertions],
    receivedDpopProofs: () => [...state.secretsSeen.proofs],
    seedHistory: (eserviceId) => [...(state.secretsSeen.seeds.get(eserviceId) ?? [])],
    lastSignalId: (eserviceId) => state.eservice(eserviceId).signals.lastId,
    purge: (eserviceId, upTo) => state.eservice(eserviceId).signals.purgeUpTo(upTo),
    setTimeWindow: (ms) => {
      settings.timeWindowMs = ms;
    },
    setRateLimit: (rateLimit) => {
      state.limiter.settings = rateLimit;
    },
    setVoucherTtl: (seconds) => {
      settings.voucherTtlSeconds = seconds;
    },
    faults: {
      inject: (route, fault) => state.faults.inject(route, fault),
      clear: (route) => state.faults.clear(route),
    },
    stats: () => state.stats(),
    close: () => closeServer(server),
  };
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.close((err) => (err ? reject(err) : resolve()));
    server.closeAllConnections();
  });
}
