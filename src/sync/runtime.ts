import type { Config } from '../config/types.js';
import { CryptoInfoClient } from '../crypto/crypto-info-client.js';
import { HubClient, hubClientOptions } from '../hub/client.js';
import { RateLimiter } from '../hub/rate-limiter.js';
import { m2mVoucherSource } from '../hub/vouchers.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { VoucherProvider } from '../pdnd/vouchers.js';
import type { Db } from '../store/db.js';
import { SyncEngine } from './engine.js';

/** The remote clients of one process, built from the config. One rate budget for all e-services. */
export interface Remotes {
  vouchers: VoucherProvider;
  rateLimiter: RateLimiter;
  hub: HubClient;
  crypto: CryptoInfoClient;
}

export function createRemotes(config: Config, deps: { logger: Logger; metrics?: Metrics }): Remotes {
  const vouchers = new VoucherProvider({ pdnd: config.pdnd, logger: deps.logger, ...(deps.metrics ? { metrics: deps.metrics } : {}) });
  const rateLimiter = new RateLimiter({ initialRatePerSecond: config.hub.initialRateLimit, metrics: deps.metrics });
  const hub = new HubClient(hubClientOptions(config.hub, { vouchers: m2mVoucherSource(vouchers), rateLimiter, logger: deps.logger, ...(deps.metrics ? { metrics: deps.metrics } : {}) }));
  const crypto = new CryptoInfoClient({ vouchers, timeoutMs: config.crypto.requestTimeoutMs, logger: deps.logger });
  return { vouchers, rateLimiter, hub, crypto };
}

/** Closes the keep-alive connections of the remotes (the hub client owns a pool). */
export async function closeRemotes(remotes: Remotes): Promise<void> {
  await remotes.hub.close();
}

export function createEngine(config: Config, db: Db, remotes: Remotes, deps: { logger: Logger; metrics?: Metrics; onEvents?: () => void }): SyncEngine {
  return new SyncEngine({
    db,
    config,
    hub: remotes.hub,
    crypto: remotes.crypto,
    logger: deps.logger,
    ...(deps.metrics ? { metrics: deps.metrics } : {}),
    ...(deps.onEvents ? { onEvents: deps.onEvents } : {}),
  });
}
