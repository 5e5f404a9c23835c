import type { PseudonymRecipe } from '../crypto/pseudonym.js';

/**
 * The validated, typed configuration: what the rest of the program trusts. Produced only by
 * `loadConfig` (load.ts) from the TOML file (snake_case keys there, camelCase here). All paths
 * are absolute; secrets are file paths, never values.
 */
export type PresetName = 'production' | 'uat' | 'simulator';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  /** Absolute path of the file this was loaded from. */
  file: string;
  preset: PresetName | undefined;
  /** Absolute path of the SQLite database. */
  database: string;
  log: { level: LogLevel; destination: 'stdout' | 'stderr' };
  pdnd: PdndConfig;
  hub: HubConfig;
  crypto: CryptoConfig;
  subjects: { validate: boolean; backfill: boolean };
  events: { includeSubjectKey: boolean };
  outbox: { keepDays: number; maxPending: number; deliveryBatchSize: number };
  /** Warnings before data is lost: age of the last successful pull per e-service (SPEC §3 retention). */
  alerts: { staleAfterHours: number; criticalAfterDays: number };
  http: { enabled: boolean; host: string; port: number };
  daemon: { shutdownTimeoutSeconds: number; concurrency: number };
  /** allowReadableSecrets: key and secret files readable by group or others are accepted (with a warning) instead of refused. */
  security: { allowReadableSecrets: boolean };
  eservices: EServiceConfig[];
  sinks: SinkConfig[];
}

export interface ClientConfig {
  clientId: string;
  keyId: string;
  /** Absolute path of the PEM private key (PKCS#8 or PKCS#1 RSA). */
  privateKeyFile: string;
  /** A second key registered on the same client (rotation): tried when PDND refuses the first. */
  nextKey?: { keyId: string; privateKeyFile: string };
}

export interface PdndConfig {
  /** e.g. https://auth.interop.pagopa.it/token.oauth2 */
  tokenUrl: string;
  /** `aud` of client assertions, e.g. auth.interop.pagopa.it/client-assertion */
  assertionAudience: string;
  assertionTtlSeconds: number;
  /** A cached voucher is replaced this many seconds before it expires. */
  voucherRefreshMarginSeconds: number;
  requestTimeoutMs: number;
  /** The "API Interop" client whose M2M vouchers call the Signal Hub pull API. */
  m2m: ClientConfig;
  /** PEM private key (RSA or EC P-256) of DPoP proofs; undefined = a key pair generated at start, kept in memory. */
  dpopKeyFile?: string | undefined;
}

export interface HubConfig {
  /** e.g. https://api.signalhub.interop.pagopa.it/1.0/pull (no trailing slash) */
  baseUrl: string;
  /** 1..100 */
  pageSize: number;
  pollIntervalSeconds: number;
  /** Fraction of the interval added or removed at random, 0..0.5. */
  pollJitter: number;
  requestTimeoutMs: number;
  /** Retries of one request on 5xx, timeouts and network errors. */
  maxRetries: number;
  maxRetryDelayMs: number;
  /** Longest wait accepted from a 429 Retry-After before giving up this attempt. */
  maxRateLimitWaitMs: number;
  /** Requests per second the client allows itself before the hub tells it its limit. */
  initialRateLimit: number;
  /** Re-read this many ids behind the cursor on each poll (late lower ids, SPEC §3); 0 = off. */
  rescanOverlap: number;
  /** SPEC §10: lower ids can become visible behind the cursor for about this long; 0 = no lookback. */
  timeWindowSeconds: number;
  lookbackMaxSignals: number;
  /** Signals older than this are deleted by the hub (SPEC §3). */
  retentionDays: number;
}

export interface CryptoConfig {
  requestTimeoutMs: number;
  /** After a SEEDUPDATE, how long to keep re-fetching an unchanged seed (SPEC §8 race). */
  rotationWaitSeconds: number;
}

export interface EServiceConfig {
  /** The e-service id (uuid) on Signal Hub. */
  id: string;
  name: string;
  /** Client used for e-service vouchers on this producer (defaults to pdnd.eservice_client). */
  client: ClientConfig;
  purposeId: string;
  /** The producer's crypto-info ("pseudonymization") endpoint; null with the identity recipe, which needs no seed. */
  cryptoInfoUrl: string | null;
  /** The producer answers `?signalId=S` with the seed introduced at S (GovWay history). */
  cryptoHistory: boolean;
  recipe: PseudonymRecipe;
  pollIntervalSeconds: number;
  audit: AuditConfig | undefined;
  /** `dpop`: the producer requires DPoP-bound vouchers (SPEC §4b). */
  voucherType: 'bearer' | 'dpop';
}

export interface AuditConfig {
  /** `aud` of the Agid-JWT-TrackingEvidence JWS: the producer's audience. */
  audience: string;
  /** Producer audit fields, e.g. userID, userLocation, LoA. */
  claims: Record<string, string | number | boolean>;
  ttlSeconds: number;
}

interface SinkBase {
  name: string;
  /** Only events of these e-service ids; empty = all. */
  eservices: string[];
  /** Only signal events of these tenants ('' = the consumer's own subjects); empty or missing = all. */
  tenants?: string[];
  /** Only signal events of these signal types; empty or missing = all. */
  signalTypes?: string[];
}
export interface WebhookSinkConfig extends SinkBase {
  type: 'webhook';
  url: string;
  /** Absolute path of the HMAC secret file. */
  secretFile: string | undefined;
  caFile: string | undefined;
  /** 1 = one event per request (JSON object); >1 = JSON array of up to batchSize events. */
  batchSize: number;
  timeoutMs: number;
  maxRetries: number;
  /** x-signature: `X-Signature: sha256=<hex HMAC of the body>`; standard-webhooks: webhook-id/-timestamp/-signature. */
  /** Default x-signature (programmatic configs may leave these out; the file loader fills them). */
  signature?: WebhookSignatureScheme;
  onReject?: OnReject;
}
export type WebhookSignatureScheme = 'x-signature' | 'standard-webhooks';
/** What a permanent refusal (4xx, exit 64/65/77/78) does: stop the sink, or dead-letter the event and go on. */
export type OnReject = 'stop' | 'dead-letter';
export interface FileSinkConfig extends SinkBase {
  type: 'file';
  path: string;
}
export interface StdoutSinkConfig extends SinkBase {
  type: 'stdout';
  /** ndjson, or a one-line human summary per event (the demo). */
  format: 'ndjson' | 'pretty';
}
export interface ExecSinkConfig extends SinkBase {
  type: 'exec';
  /** argv: no shell. */
  command: string[];
  timeoutMs: number;
  /** Variables set for the command; with PATH and passEnv, its whole environment. */
  env?: Record<string, string>;
  /** Names of the daemon's variables passed on. */
  passEnv?: string[];
  /** Default stop. */
  onReject?: OnReject;
}
export type SinkConfig = WebhookSinkConfig | FileSinkConfig | StdoutSinkConfig | ExecSinkConfig;
