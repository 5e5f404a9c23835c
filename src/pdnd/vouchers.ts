import type { Dispatcher } from 'undici';
import type { ClientConfig, EServiceConfig, PdndConfig } from '../config/types.js';
import { errorLogFields, isAppError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { buildClientAssertion } from './assertion.js';
import { auditConfigKey, buildTrackingEvidence } from './audit.js';
import { fingerprint, type RetryPolicy } from './http.js';
import { DpopKey } from './dpop.js';
import { forgetPrivateKeys } from './keys.js';
import { requestToken } from './token-client.js';

/** A PDND voucher ready to use as `Authorization: <scheme> <token>`. */
export interface Voucher {
  token: string;
  /** `DPoP`: the voucher is bound to the provider's DPoP key and each call needs a fresh proof (SPEC §4b). Absent = Bearer. */
  scheme?: 'Bearer' | 'DPoP';
  /** Epoch ms (provider clock) after which it must not be used. */
  expiresAt: number;
  /** The Agid-JWT-TrackingEvidence JWS bound into this voucher (audit pattern only). */
  trackingEvidence?: string;
}

export type VoucherKind = 'm2m' | 'eservice';

export interface VoucherProviderOptions {
  pdnd: PdndConfig;
  metrics?: Metrics;
  logger?: Logger;
  /** Epoch ms; tests move it to exercise expiry without waiting. */
  clock?: () => number;
  /** Token-endpoint retry policy (429, 5xx, network errors). */
  retry?: RetryPolicy;
  dispatcher?: Dispatcher;
}

interface Entry {
  voucher: Voucher;
  /** From here on, callers trigger a refresh. */
  refreshAt: number;
  /** Until here the old voucher is still served if a refresh fails. */
  fallbackUntil: number;
}

interface VoucherRequest {
  kind: VoucherKind;
  client: ClientConfig;
  purposeId: string | undefined;
  eservice: EServiceConfig | undefined;
}

/**
 * Obtains and caches PDND vouchers (SPEC §4): M2M for the hub, e-service vouchers (with
 * purposeId, and the audit JWS when configured) for producers. Cached per (client, purpose,
 * audit settings) until `expires_in` minus the refresh margin; at most one token request per
 * key is in flight, however many callers wait on it.
 */
export class VoucherProvider {
  private pdnd: PdndConfig;
  private readonly metrics: Metrics | undefined;
  private readonly logger: Logger;
  private readonly clock: () => number;
  private readonly retry: RetryPolicy | undefined;
  private readonly dispatcher: Dispatcher | undefined;
  private readonly cache = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<Voucher>>();
  /** clientId -> the kid PDND last accepted, so that a refused first key is not tried on every refresh. */
  private readonly acceptedKey = new Map<string, string>();
  private dpopKey: Promise<DpopKey> | undefined;

  constructor(options: VoucherProviderOptions) {
    this.pdnd = options.pdnd;
    this.metrics = options.metrics;
    this.logger = options.logger ?? silentLogger;
    this.clock = options.clock ?? Date.now;
    this.retry = options.retry;
    this.dispatcher = options.dispatcher;
  }

  /** Voucher of the "API Interop" client, for the Signal Hub pull API. */
  m2m(): Promise<Voucher> {
    return this.get({ kind: 'm2m', client: this.pdnd.m2m, purposeId: undefined, eservice: undefined });
  }

  /** Voucher for a producer's e-service (crypto info), with its purposeId and audit JWS. */
  eservice(eservice: EServiceConfig): Promise<Voucher> {
    return this.get({ kind: 'eservice', client: eservice.client, purposeId: eservice.purposeId, eservice });
  }

  /**
   * Drops the cached voucher a resource just refused (401). Compares by token, so that many
   * callers refused with the same old voucher cause one refresh, not one each.
   */
  invalidate(rejected: Voucher): void {
    for (const [key, entry] of this.cache) {
      if (entry.voucher.token === rejected.token) this.cache.delete(key);
    }
  }

  /** Forgets every cached voucher (e.g. credentials rotated). */
  clear(): void {
    this.cache.clear();
  }

  /**
   * SIGHUP: takes the reloaded M2M client (an operator promoted `next_key_id` to `key_id`),
   * re-reads key files on next use and forgets every voucher and every key preference.
   */
  reloadCredentials(pdnd: PdndConfig): void {
    this.pdnd = { ...this.pdnd, m2m: pdnd.m2m };
    forgetPrivateKeys();
    this.acceptedKey.clear();
    this.cache.clear();
  }

  /**
   * The DPoP key pair of this process (SPEC §4b): `pdnd.dpop_key_file`, or generated on first
   * use and kept in memory. Vouchers and the proofs sent with them share it.
   */
  dpop(): Promise<DpopKey> {
    if (!this.dpopKey) {
      const file = this.pdnd.dpopKeyFile;
      this.dpopKey = file !== undefined ? DpopKey.fromFile(file) : DpopKey.generate();
      // A failed read is tried again next time (the operator may fix the file and SIGHUP).
      this.dpopKey.catch(() => (this.dpopKey = undefined));
    }
    return this.dpopKey;
  }

  private get(req: VoucherRequest): Promise<Voucher> {
    const key = cacheKey(req);
    const entry = this.cache.get(key);
    if (entry && this.clock() < entry.refreshAt) return Promise.resolve(entry.voucher);
    const running = this.inflight.get(key);
    if (running) return running;
    const refresh = this.refresh(key, req, entry).finally(() => this.inflight.delete(key));
    this.inflight.set(key, refresh);
    return refresh;
  }

  private async refresh(key: string, req: VoucherRequest, previous: Entry | undefined): Promise<Voucher> {
    const fields = { kind: req.kind, clientId: req.client.clientId, ...(req.purposeId ? { purposeId: req.purposeId } : {}) };
    const start = this.clock();
    try {
      const voucher = await this.obtain(req, start);
      const lifetime = voucher.expiresAt - start;
      // A voucher shorter-lived than twice the margin would otherwise never be reused.
      const margin = Math.min(this.pdnd.voucherRefreshMarginSeconds * 1000, lifetime / 2);
      this.cache.set(key, { voucher, refreshAt: voucher.expiresAt - margin, fallbackUntil: voucher.expiresAt - margin / 2 });
      this.metrics?.voucherRefreshes.inc({ kind: req.kind, outcome: 'ok' });
      this.logger.debug({ ...fields, voucherFingerprint: fingerprint(voucher.token), validForSeconds: Math.round(lifetime / 1000), audit: voucher.trackingEvidence !== undefined }, 'voucher obtained');
      return voucher;
    } catch (err) {
      const outcome = isAppError(err) && err.code === 'TOKEN_REJECTED' ? 'rejected' : 'error';
      this.metrics?.voucherRefreshes.inc({ kind: req.kind, outcome });
      const current = this.cache.get(key);
      if (current && current === previous && this.clock() < current.fallbackUntil) {
        // Refreshing ahead of expiry leaves time to ride out a token-endpoint hiccup.
        this.logger.warn({ ...fields, ...errorLogFields(err) }, 'voucher refresh failed; using the current voucher until it nears expiry');
        return current.voucher;
      }
      this.logger.error({ ...fields, ...errorLogFields(err) }, 'cannot obtain voucher');
      throw err;
    }
  }

  /**
   * Tries the client's keys in turn: the one PDND last accepted first, then the other. Only a
   * refusal (TOKEN_REJECTED) moves on to the next key; an unavailable endpoint does not.
   */
  private async obtain(req: VoucherRequest, start: number): Promise<Voucher> {
    const keys = clientKeys(req.client, this.acceptedKey.get(req.client.clientId));
    for (let i = 0; ; i++) {
      const client = keys[i]!;
      try {
        const voucher = await this.obtainWith({ ...req, client }, start);
        if (this.acceptedKey.get(client.clientId) !== client.keyId) {
          if (client.keyId !== req.client.keyId) {
            this.logger.warn({ clientId: client.clientId, refusedKeyId: req.client.keyId, keyId: client.keyId }, 'PDND refused the first key of the client and accepted next_key_id: make it key_id (and drop the old key) in the config, then send SIGHUP');
          }
          this.acceptedKey.set(client.clientId, client.keyId);
        }
        return voucher;
      } catch (err) {
        if (i + 1 >= keys.length || !isAppError(err) || err.code !== 'TOKEN_REJECTED') throw err;
        this.logger.warn({ clientId: client.clientId, keyId: client.keyId, nextKeyId: keys[i + 1]!.keyId, status: err.status, correlationId: err.correlationId }, 'PDND refused the client assertion; trying the other key of the client');
      }
    }
  }

  private async obtainWith(req: VoucherRequest, start: number): Promise<Voucher> {
    const audit = req.eservice?.audit;
    const dpop = req.eservice?.voucherType === 'dpop' ? await this.dpop() : undefined;
    const evidence = audit && req.purposeId !== undefined ? await buildTrackingEvidence({ client: req.client, purposeId: req.purposeId, audit }) : undefined;
    const token = await requestToken({
      tokenUrl: this.pdnd.tokenUrl,
      timeoutMs: this.pdnd.requestTimeoutMs,
      clientId: req.client.clientId,
      assertion: () =>
        buildClientAssertion({
          client: req.client,
          audience: this.pdnd.assertionAudience,
          ttlSeconds: this.pdnd.assertionTtlSeconds,
          ...(req.purposeId !== undefined ? { purposeId: req.purposeId } : {}),
          ...(evidence ? { digest: evidence.digest } : {}),
        }),
      ...(dpop ? { dpopProof: (nonce: string | undefined) => dpop.proof({ htm: 'POST', url: this.pdnd.tokenUrl, ...(nonce !== undefined ? { nonce } : {}) }) } : {}),
      logger: this.logger,
      ...(this.retry ? { retry: this.retry } : {}),
      ...(this.dispatcher ? { dispatcher: this.dispatcher } : {}),
    });
    let expiresAt = start + token.expiresIn * 1000;
    // Voucher and JWS belong together (SPEC §5): the pair lives as long as the shorter one.
    if (audit && evidence) expiresAt = Math.min(expiresAt, start + audit.ttlSeconds * 1000);
    return {
      token: token.accessToken,
      expiresAt,
      ...(token.tokenType === 'DPoP' ? { scheme: 'DPoP' as const } : {}),
      ...(evidence ? { trackingEvidence: evidence.jws } : {}),
    };
  }
}

/** The client's key, then its `next_key_id` key; the one PDND last accepted goes first. */
function clientKeys(client: ClientConfig, accepted: string | undefined): ClientConfig[] {
  const first: ClientConfig = { clientId: client.clientId, keyId: client.keyId, privateKeyFile: client.privateKeyFile };
  if (!client.nextKey) return [first];
  const second: ClientConfig = { clientId: client.clientId, keyId: client.nextKey.keyId, privateKeyFile: client.nextKey.privateKeyFile };
  return accepted === second.keyId ? [second, first] : [first, second];
}

function cacheKey(req: VoucherRequest): string {
  const audit = req.eservice?.audit;
  // A Bearer and a DPoP voucher for the same purpose are not interchangeable.
  return JSON.stringify([req.client.clientId, req.purposeId ?? null, audit ? auditConfigKey(audit) : null, req.eservice?.voucherType ?? 'bearer']);
}

/**
 * "On a 401 from the resource: refresh once and retry once" (SPEC §4), for any client of a
 * voucher-protected API. A second refusal propagates: the caller turns it into an alarm.
 *
 *   withVoucher(() => vouchers.m2m(), (v) => vouchers.invalidate(v), (v) => pull(v), isHub401)
 */
export async function withVoucher<T>(
  get: () => Promise<Voucher>,
  invalidate: (rejected: Voucher) => void,
  call: (voucher: Voucher) => Promise<T>,
  isUnauthorized: (err: unknown) => boolean,
): Promise<T> {
  const voucher = await get();
  try {
    return await call(voucher);
  } catch (err) {
    if (!isUnauthorized(err)) throw err;
    invalidate(voucher);
    return call(await get());
  }
}
