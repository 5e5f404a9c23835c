import { createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import type { Logger } from '../log.js';
import { AppError } from '../errors.js';
import { GOVWAY_RECIPE, PseudonymHasher, normalizeSubjectKey, type PseudonymRecipe } from '../crypto/pseudonym.js';
import { resolveAlgorithm } from '../crypto/algorithms.js';
import { SignalStore } from './signal-store.js';
import { RateLimiter, type RateLimitSettings } from './rate-limit.js';
import { FaultBoard } from './faults.js';
import type { VoucherAuthority } from './vouchers.js';
import type { ClientKind, ClientRegistration, DepositInput, EServiceRegistration, SimulatorStats } from './model.js';

export interface SimSettings {
  timeWindowMs: number;
  voucherTtlSeconds: number;
  assertionAudience: string;
  m2mAudience: string;
  defaultProducerAudience: string;
  /** Longest accepted client assertion lifetime (exp - iat). */
  maxAssertionTtlSeconds: number;
  /** Refuse assertion header fields and claims beyond those SPEC §4 lists. */
  strictAssertions: boolean;
  /** The token endpoint demands this nonce in DPoP proofs (RFC 9449 §8); undefined = none. */
  tokenDpopNonce: string | undefined;
}

export interface ClientState {
  clientId: string;
  kind: ClientKind;
  organizationId: string;
  keys: Map<string, KeyObject>;
  /** purposeId -> bound e-service id (undefined when not bound). */
  purposes: Map<string, string | undefined>;
}

export interface SeedEntry {
  seed: string;
  /** Id of the SEEDUPDATE that introduced it; 0 for the first seed. */
  signalId: number;
}

export interface EServiceState {
  id: string;
  producerAudience: string;
  organizationIds: Set<string> | undefined;
  cryptoHashFunction: string;
  recipe: PseudonymRecipe;
  historyDepth: number;
  includeSignalId: boolean;
  requireAudit: boolean;
  /** Only DPoP-bound vouchers with a valid proof are accepted (SPEC §4b). */
  requireDpop: boolean;
  /** The nonce DPoP proofs must carry (use_dpop_nonce); undefined = none required. */
  dpopNonce: string | undefined;
  forbiddenWithoutProblem: boolean;
  staleReads: number;
  /** Newest last; at most historyDepth entries. Empty = no crypto info. */
  seeds: SeedEntry[];
  /** Seed served while `staleRemaining` > 0 after a rotation. */
  previous: SeedEntry | undefined;
  staleRemaining: number;
  signals: SignalStore;
}

/** Everything the simulated parties know, shared by the HTTP handlers and the programmatic API. */
export class SimState {
  readonly clients = new Map<string, ClientState>();
  readonly eservices = new Map<string, EServiceState>();
  readonly faults = new FaultBoard();
  readonly limiter: RateLimiter;
  readonly usedJtis = new Map<string, number>();
  /** jti of every accepted DPoP proof -> epoch ms until which it is remembered (replay check). */
  readonly dpopJtis = new Map<string, number>();
  readonly counters = {
    requests: new Map<string, number>(),
    responses: new Map<string, Map<number, number>>(),
    responses429: 0,
    tokensIssued: 0,
    tokenRejections: [] as string[],
    /** Why DPoP proofs were refused (token endpoint and producers), most recent last. */
    dpopRejections: [] as string[],
    signalsServed: 0,
  };
  /**
   * Every secret the simulated parties handed out, received or served, so that tests can scan
   * logs for them (never logged; bounded like tokenRejections, generously).
   */
  readonly secretsSeen = { vouchers: [] as string[], assertions: [] as string[], proofs: [] as string[], seeds: new Map<string, string[]>() };

  constructor(
    readonly settings: SimSettings,
    rateLimit: RateLimitSettings,
    readonly authority: VoucherAuthority,
    readonly now: () => number,
    readonly logger: Logger,
  ) {
    this.limiter = new RateLimiter(rateLimit, now);
  }

  registerClient(reg: ClientRegistration): void {
    if (!reg.clientId || !reg.keyId || !reg.organizationId) throw invalid('registerClient needs clientId, keyId and organizationId');
    if (reg.kind !== 'm2m' && reg.kind !== 'eservice') throw invalid(`client ${reg.clientId}: kind must be "m2m" or "eservice"`);
    const key = typeof reg.publicKey === 'string' ? createPublicKey(reg.publicKey) : reg.publicKey.type === 'private' ? createPublicKey(reg.publicKey) : reg.publicKey;
    if (key.asymmetricKeyType !== 'rsa') throw invalid(`client ${reg.clientId}: key ${reg.keyId} must be an RSA key`);
    // Registering the same client again adds a key and purposes, as the PDND back office does.
    const existing = this.clients.get(reg.clientId);
    if (existing && (existing.kind !== reg.kind || existing.organizationId !== reg.organizationId)) {
      throw invalid(`client ${reg.clientId} is already registered with another kind or organization`);
    }
    const client: ClientState = existing ?? { clientId: reg.clientId, kind: reg.kind, organizationId: reg.organizationId, keys: new Map(), purposes: new Map() };
    client.keys.set(reg.keyId, key);
    for (const p of reg.purposes ?? []) {
      if (typeof p === 'string') client.purposes.set(p, undefined);
      else client.purposes.set(p.id, p.eserviceId);
    }
    this.clients.set(reg.clientId, client);
  }

  revokeClientKey(clientId: string, keyId: string): void {
    const client = this.clients.get(clientId);
    if (!client?.keys.delete(keyId)) throw invalid(`client ${clientId} has no key ${keyId}`);
  }

  addEService(reg: EServiceRegistration): void {
    if (!reg.id) throw invalid('addEService needs an id');
    const cryptoHashFunction = reg.cryptoHashFunction ?? 'SHA-256';
    resolveAlgorithm(cryptoHashFunction);
    const historyDepth = reg.historyDepth ?? 1;
    if (!Number.isInteger(historyDepth) || historyDepth < 1) throw invalid(`e-service ${reg.id}: historyDepth must be an integer >= 1`);
    const previous = this.eservices.get(reg.id);
    // Re-adding without a seed keeps the producer's seeds; with one, it replaces them at the current epoch.
    const seeds: SeedEntry[] =
      reg.seed === undefined ? (previous?.seeds ?? [{ seed: randomSeed(), signalId: 0 }]) : reg.seed === null ? [] : [{ seed: reg.seed, signalId: previous?.seeds.at(-1)?.signalId ?? 0 }];
    while (seeds.length > historyDepth) seeds.shift();
    for (const entry of seeds) this.noteSecret('seed', entry.seed, reg.id);
    this.eservices.set(reg.id, {
      id: reg.id,
      producerAudience: reg.producerAudience ?? this.settings.defaultProducerAudience,
      organizationIds: reg.organizationIds ? new Set(reg.organizationIds) : undefined,
      cryptoHashFunction,
      recipe: reg.recipe ?? GOVWAY_RECIPE,
      historyDepth,
      includeSignalId: reg.includeSignalId ?? false,
      requireAudit: reg.requireAudit ?? false,
      requireDpop: reg.requireDpop ?? false,
      dpopNonce: reg.dpopNonce ? randomBytes(12).toString('base64url') : undefined,
      forbiddenWithoutProblem: reg.forbiddenWithoutProblem ?? false,
      staleReads: reg.staleReads ?? 0,
      seeds,
      previous: reg.seed === undefined ? previous?.previous : undefined,
      staleRemaining: reg.seed === undefined ? (previous?.staleRemaining ?? 0) : 0,
      // Re-adding an e-service changes its settings and keeps its signals.
      signals: previous?.signals ?? new SignalStore(reg.id),
    });
  }

  eservice(id: string): EServiceState {
    const es = this.eservices.get(id);
    if (!es) throw invalid(`unknown e-service ${id}`);
    return es;
  }

  deposit(eserviceId: string, input: DepositInput): number {
    const es = this.eservice(eserviceId);
    const signalId = input.signalId ?? es.signals.lastId + 1;
    if (!Number.isSafeInteger(signalId) || signalId < 1) throw invalid(`signalId must be a positive safe integer (e-service ${eserviceId})`);
    if (typeof input.signalType !== 'string' || typeof input.objectId !== 'string' || typeof input.objectType !== 'string') {
      throw invalid(`a signal needs string signalType, objectId and objectType (e-service ${eserviceId})`);
    }
    try {
      es.signals.insert({ signalId, signalType: input.signalType, objectId: input.objectId, objectType: input.objectType }, input.visibleAt ?? this.now());
    } catch (err) {
      throw invalid((err as Error).message);
    }
    return signalId;
  }

  currentSeed(es: EServiceState): SeedEntry | undefined {
    return es.seeds.at(-1);
  }

  hasher(es: EServiceState, seed?: string): PseudonymHasher {
    const entry = seed ?? this.currentSeed(es)?.seed;
    if (entry === undefined) throw invalid(`e-service ${es.id} has no seed`);
    return new PseudonymHasher(es.recipe, entry, es.cryptoHashFunction);
  }

  pseudonymFor(eserviceId: string, subjectKey: string, seed?: string): string {
    return this.hasher(this.eservice(eserviceId), seed).pseudonym(normalizeSubjectKey(subjectKey));
  }

  /**
   * GovWay's lazy rotation: deposits SEEDUPDATE `S` ("-" / "-") and makes the new seed current,
   * introduced at S, so the next deposited signal (S+1) is pseudonymized with it.
   */
  rotateSeed(eserviceId: string, newSeed?: string): number {
    const es = this.eservice(eserviceId);
    const signalId = this.deposit(eserviceId, { signalType: 'SEEDUPDATE', objectId: '-', objectType: '-' });
    es.previous = this.currentSeed(es);
    es.staleRemaining = es.previous ? es.staleReads : 0;
    es.seeds.push({ seed: newSeed ?? randomSeed(), signalId });
    this.noteSecret('seed', es.seeds.at(-1)!.seed, eserviceId);
    while (es.seeds.length > es.historyDepth) es.seeds.shift();
    return signalId;
  }

  countRequest(route: string): void {
    this.counters.requests.set(route, (this.counters.requests.get(route) ?? 0) + 1);
  }

  countResponse(route: string, status: number): void {
    let byStatus = this.counters.responses.get(route);
    if (!byStatus) this.counters.responses.set(route, (byStatus = new Map()));
    byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
  }

  noteSecret(kind: 'voucher' | 'assertion' | 'proof' | 'seed', value: string, eserviceId = ''): void {
    let list: string[];
    if (kind === 'seed') {
      list = this.secretsSeen.seeds.get(eserviceId) ?? [];
      this.secretsSeen.seeds.set(eserviceId, list);
      if (list.includes(value)) return;
    } else {
      list = kind === 'voucher' ? this.secretsSeen.vouchers : kind === 'proof' ? this.secretsSeen.proofs : this.secretsSeen.assertions;
    }
    list.push(value);
    if (list.length > 10_000) list.splice(0, list.length - 10_000);
  }

  rejectDpop(reason: string): void {
    const list = this.counters.dpopRejections;
    list.push(reason);
    if (list.length > 200) list.splice(0, list.length - 200);
  }

  rejectToken(reason: string): void {
    const list = this.counters.tokenRejections;
    list.push(reason);
    if (list.length > 200) list.splice(0, list.length - 200);
  }

  stats(): SimulatorStats {
    const responses: Record<string, Record<string, number>> = {};
    for (const [route, byStatus] of this.counters.responses) responses[route] = Object.fromEntries([...byStatus].map(([s, n]) => [String(s), n]));
    return {
      requests: Object.fromEntries(this.counters.requests),
      responses,
      responses429: this.counters.responses429,
      tokensIssued: this.counters.tokensIssued,
      tokenRejections: [...this.counters.tokenRejections],
      dpopRejections: [...this.counters.dpopRejections],
      signalsServed: this.counters.signalsServed,
      faultsFired: this.faults.firedCounts(),
    };
  }
}

/** GovWay-like seed: 16 random bytes, base64. */
export function randomSeed(): string {
  return randomBytes(16).toString('base64');
}

function invalid(message: string): AppError {
  return new AppError('INPUT_INVALID', `simulator: ${message}`);
}
