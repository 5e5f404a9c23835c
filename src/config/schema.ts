import * as z from 'zod';
import { ENCODINGS } from '../crypto/pseudonym.js';
import type { PresetName } from './types.js';
import { PRESET_NAMES } from './presets.js';
import { resolveDataPath, resolveSecretPath, type PathContext } from './paths.js';
import { EXEC_ENV_NAME as ENV_NAME, FORBIDDEN_ENV_MESSAGE, allowedInChildEnv } from './exec-env.js';
import { OWN_TENANT_LABEL, parseTenantFilter } from '../tenant.js';
import { dpopKeyProblem, inlineSecretProblem, missingSecretNameProblem, readableFileProblem, rsaPrivateKeyProblem, secretFileModeProblem } from './keys.js';

/**
 * The TOML file as written (snake_case, unknown keys rejected everywhere). Built per load
 * because field checks depend on where the file is (relative paths, credentials) and on its
 * preset (plain http is fine against the simulator). With `ctx = null` it checks shapes only:
 * that is the schema `config schema` prints.
 */
export interface SchemaContext {
  paths: PathContext;
  preset: PresetName | undefined;
  /** [security] allow_readable_secrets, read from the raw document: key and secret files may have group/other bits. */
  allowReadableSecrets: boolean;
  /**
   * Whether key and secret files are opened and judged (readable, a usable key, owner-only).
   * False for commands that never call PDND or a webhook (status, events, subjects, cursor,
   * ...): they run on the host where the keys may be out of reach. A secret pasted in place of
   * its path is refused either way.
   */
  checkSecrets?: boolean;
}

export const RECIPE_PLACEHOLDERS = ['${subject}', '${seed}', '${algorithm}'] as const;

export function buildFileSchema(ctx: SchemaContext | null) {
  const nonEmpty = () => z.string().min(1);
  const uuid = () => z.guid('must be a UUID (8-4-4-4-12 hex digits)');
  const positiveInt = () => z.number().int().positive();
  const nonNegativeInt = () => z.number().int().nonnegative();

  /** A URL of a remote endpoint: https, except plain http towards loopback or the simulator. */
  const url = () =>
    z.string().superRefine((value, issues) => {
      const problem = urlProblem(value, ctx?.preset === 'simulator');
      if (problem) issues.addIssue({ code: 'custom', message: problem, input: value });
    });

  /**
   * A secret file's path, resolved and checked: never the secret pasted in its place (a problem
   * that does not quote the value), then `contentProblem` (readable, parses), then, for files
   * only their owner may read, the mode (unless [security] allows group/other access).
   */
  const secretPath = (description: string, contentProblem: (file: string) => string | null, { ownerOnly }: { ownerOnly: boolean }) =>
    nonEmpty().describe(description).transform((value, issues) => {
      if (!ctx) return value;
      const file = resolveSecretPath(value, ctx.paths);
      const pasted = inlineSecretProblem(value) ?? (ctx.checkSecrets === false ? null : missingSecretNameProblem(value, file));
      if (pasted) {
        // The value is not echoed anywhere, not even as the issue's input.
        issues.issues.push({ code: 'custom', message: pasted, input: '' });
        return file;
      }
      if (ctx.checkSecrets === false) return file;
      const problem = contentProblem(file);
      if (problem) issues.issues.push({ code: 'custom', message: problem, input: value });
      const exposed = ownerOnly && !ctx.allowReadableSecrets ? secretFileModeProblem(file, ctx.paths.env.CREDENTIALS_DIRECTORY) : null;
      if (exposed) issues.issues.push({ code: 'custom', message: exposed, input: value });
      return file;
    });

  const keyFile = () =>
    secretPath(
      'Path of the PEM RSA private key (PKCS#8 or PKCS#1). Relative: to this file\'s folder; a bare name: in $CREDENTIALS_DIRECTORY when set.',
      (file) => {
        const key = rsaPrivateKeyProblem(file);
        return typeof key === 'string' ? key : null;
      },
      { ownerOnly: true },
    );

  /** `secret`: only its owner may read it (an HMAC secret); a CA bundle is public. */
  const secretFile = (what: string, { secret }: { secret: boolean }) =>
    secretPath(`Path of the ${what}. Relative: to this file's folder; a bare name: in $CREDENTIALS_DIRECTORY when set.`, readableFileProblem, { ownerOnly: secret });

  const dataPath = (description: string) =>
    nonEmpty()
      .describe(description)
      .transform((value) => (ctx ? resolveDataPath(value, ctx.paths) : value));

  const nextKeyFields = {
    next_key_id: nonEmpty().optional().describe('Key rotation: kid of a second key registered on the same client, tried when PDND refuses the first. Set with next_private_key_file.'),
    next_private_key_file: keyFile().optional(),
  };
  /** next_key_id and next_private_key_file come together. */
  const bothOrNeither = (value: { next_key_id?: string | undefined; next_private_key_file?: string | undefined }, issues: z.core.$RefinementCtx) => {
    if ((value.next_key_id === undefined) !== (value.next_private_key_file === undefined)) {
      const missing = value.next_key_id === undefined ? 'next_key_id' : 'next_private_key_file';
      issues.addIssue({ code: 'custom', path: [missing], message: 'next_key_id and next_private_key_file are set together (the second key of the client)', input: value });
    }
  };

  const client = () =>
    z
      .strictObject({
        client_id: uuid().describe('Client id from the PDND back office.'),
        key_id: nonEmpty().describe('Key id (kid) of the client key from the PDND back office.'),
        private_key_file: keyFile(),
        ...nextKeyFields,
      })
      .superRefine(bothOrNeither);

  const dpopKeyFile = () =>
    secretPath(
      'PEM private key (RSA or EC P-256) of DPoP proofs. Default: a key pair generated at start and kept in memory.',
      (file) => {
        const key = dpopKeyProblem(file);
        return typeof key === 'string' ? key : null;
      },
      { ownerOnly: true },
    );

  const recipe = z
    .strictObject({
      template: z
        .string()
        .default('${subject}${seed}')
        .describe('How the producer builds the hashed text: ${subject}, ${seed}, ${algorithm} placeholders (never environment-expanded). GovWay default: ${subject}${seed}. Not set with encoding = "identity".')
        .superRefine((template, issues) => {
          if (!template.includes('${subject}')) issues.addIssue({ code: 'custom', message: 'must contain ${subject}', input: template });
          const unknown = [...template.matchAll(/\$\{[^}]*\}/g)].map((m) => m[0]).filter((p) => !(RECIPE_PLACEHOLDERS as readonly string[]).includes(p));
          if (unknown.length > 0) {
            issues.addIssue({ code: 'custom', message: `unknown placeholder ${unknown[0]!.slice(0, 40)} (allowed: ${RECIPE_PLACEHOLDERS.join(', ')})`, input: template });
          }
        }),
      encoding: z
        .enum(ENCODINGS)
        .default('base64')
        .describe('Encoding of the digest: base64 (GovWay default, padded), base64url, hex, HEX; or identity: the objectId is the subject key in clear (non-personal data, legal persons), matched after trimming and upper-casing, with no seed, so no crypto_info_url, crypto_history or template.'),
    })
    .prefault({});

  const audit = z.strictObject({
    audience: nonEmpty().describe('`aud` of the Agid-JWT-TrackingEvidence JWS: the producer\'s audience.'),
    claims: z
      .record(z.string(), z.union([z.string(), z.number(), z.boolean()]))
      .default({})
      .describe('Producer audit fields, e.g. userID, userLocation, LoA.'),
    ttl_seconds: positiveInt().default(300),
  });

  const eservice = z
    .strictObject({
    id: uuid().describe('E-service id on Signal Hub.'),
    name: nonEmpty().describe('Human name, unique; usable instead of the id in commands and filters.'),
    purpose_id: uuid().describe('Purpose id of the consumer\'s purpose on this e-service.'),
    client_id: uuid().optional().describe('E-service client; default [pdnd.eservice_client]. Set with key_id and private_key_file.'),
    key_id: nonEmpty().optional(),
    private_key_file: keyFile().optional(),
    crypto_info_url: url().optional().describe('The producer\'s crypto-info ("pseudonymization") endpoint. Required unless preset = "simulator" or recipe.encoding = "identity" (then not allowed).'),
    crypto_history: z.boolean().default(false).describe('The producer answers ?signalId=S with the seed introduced at S (GovWay history).'),
    poll_interval_seconds: z.number().positive().optional().describe('Default: hub.poll_interval_seconds.'),
    recipe,
    audit: audit.optional().describe('Set when the producer requires the audit pattern (Agid-JWT-TrackingEvidence).'),
    voucher_type: z.enum(['bearer', 'dpop']).default('bearer').describe('The e-service voucher the producer requires: bearer (default) or dpop (key-bound, RFC 9449; e.g. IT-Wallet authentic sources).'),
    ...nextKeyFields,
  })
    .superRefine(bothOrNeither);

  const onReject = z
    .enum(['stop', 'dead-letter'])
    .default('stop')
    .describe('When the receiver refuses an event for good (HTTP 4xx, exit 64/65/77/78): "stop" the sink until "sinks retry", or move the event to the dead letters and go on.');
  const sinkFilter = z.array(nonEmpty()).default([]).describe('Only events of these e-services (ids or names); empty = all.');
  // Delegations (SPEC §8c): route a delegator's events to its own receiver.
  const tenantFilter = z
    .array(
      z.string().superRefine((value, issues) => {
        const parsed = parseTenantFilter(value);
        // Not echoed: a swapped value may be a fiscal code.
        if ('problem' in parsed) issues.addIssue({ code: 'custom', message: parsed.problem, input: '' });
      }),
    )
    .default([])
    .describe(`Only signal events of these tenants (delegators' ids; "${OWN_TENANT_LABEL}" for the consumer's own subjects); empty = all. resync-required events go to every sink whose eservices take them.`);
  const signalTypeFilter = z
    .array(nonEmpty())
    .default([])
    .describe('Only signal events of these signal types (CREATE, UPDATE, DELETE, or a type a later hub adds; as the hub writes them); empty = all. resync-required events go regardless.');
  const sink = z.discriminatedUnion('type', [
    z.strictObject({
      type: z.literal('webhook'),
      name: nonEmpty(),
      eservices: sinkFilter,
      tenants: tenantFilter,
      signal_types: signalTypeFilter,
      url: url(),
      secret_file: secretFile('HMAC-SHA256 signing secret', { secret: true }).optional(),
      ca_file: secretFile('PEM CA bundle trusted for this webhook', { secret: false }).optional(),
      batch_size: z.number().int().min(1).max(1000).default(1).describe('1 = one JSON event per request; more = JSON arrays.'),
      timeout_ms: positiveInt().default(10_000),
      max_retries: nonNegativeInt().default(8),
      signature: z
        .enum(['x-signature', 'standard-webhooks'])
        .default('x-signature')
        .describe('How requests are signed with secret_file: "x-signature" (HMAC of the body) or "standard-webhooks" (webhook-id, webhook-timestamp, webhook-signature; secret "whsec_…").'),
      on_reject: onReject,
    }),
    z.strictObject({
      type: z.literal('file'),
      name: nonEmpty(),
      eservices: sinkFilter,
      tenants: tenantFilter,
      signal_types: signalTypeFilter,
      path: dataPath('NDJSON file events are appended to. Relative: to this file\'s folder.'),
    }),
    z.strictObject({
      type: z.literal('stdout'),
      name: nonEmpty(),
      eservices: sinkFilter,
      tenants: tenantFilter,
      signal_types: signalTypeFilter,
      format: z.enum(['ndjson', 'pretty']).default('ndjson'),
    }),
    z.strictObject({
      type: z.literal('exec'),
      name: nonEmpty(),
      eservices: sinkFilter,
      tenants: tenantFilter,
      signal_types: signalTypeFilter,
      command: z
        .array(nonEmpty())
        .min(1)
        .describe('argv, run without a shell; events on stdin as NDJSON. A relative program path with "/" is against this file\'s folder.')
        .transform((argv) => (ctx && argv[0]!.includes('/') ? [resolveDataPath(argv[0]!, ctx.paths), ...argv.slice(1)] : argv)),
      timeout_ms: positiveInt().default(30_000),
      env: z
        .record(z.string().regex(ENV_NAME, 'an environment variable name (letters, digits, _)').refine(allowedInChildEnv, FORBIDDEN_ENV_MESSAGE), z.string())
        .default({})
        .describe('Environment of the command, besides PATH: nothing else of the daemon\'s environment is passed on.'),
      pass_env: z
        .array(z.string().regex(ENV_NAME, 'an environment variable name (letters, digits, _)').refine(allowedInChildEnv, FORBIDDEN_ENV_MESSAGE))
        .default([])
        .describe('Names of the daemon\'s own environment variables passed on to the command (e.g. ["HOME", "LANG"]).'),
      on_reject: onReject,
    }),
  ]);

  return z.strictObject({
    preset: z.enum(PRESET_NAMES).optional().describe('Fills in the well-known URLs and audiences of an environment.'),
    simulator_url: url().optional().describe('Base URL of the built-in simulator (preset = "simulator" only). Default http://127.0.0.1:8787.'),
    database: dataPath('SQLite database file. Relative: to this file\'s folder.')
      .optional()
      .describe('SQLite database file. Relative: to this file\'s folder. Default $STATE_DIRECTORY/signalhub-sync.db or /var/lib/signalhub-sync/signalhub-sync.db.'),
    log: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        destination: z.enum(['stdout', 'stderr']).default('stderr').describe('stderr by default: stdout carries data (NDJSON, --json).'),
      })
      .prefault({}),
    pdnd: z.strictObject({
      token_url: url().optional().describe('PDND token endpoint. Required without a preset.'),
      assertion_audience: nonEmpty().optional().describe('`aud` of client assertions. Required without a preset.'),
      assertion_ttl_seconds: z.number().int().min(1).max(3600).default(120),
      voucher_refresh_margin_seconds: nonNegativeInt().default(60),
      request_timeout_ms: positiveInt().default(10_000),
      m2m: client().describe('The "API Interop" (M2M) client whose vouchers call the Signal Hub pull API.'),
      eservice_client: client().optional().describe('Default e-service client for e-services that do not set their own.'),
      dpop_key_file: dpopKeyFile().optional(),
    }),
    hub: z
      .strictObject({
        base_url: url().optional().describe('Signal Hub pull API base. Required without a preset.'),
        page_size: z.number().int().min(1).max(100).default(100),
        poll_interval_seconds: z.number().positive().default(60),
        poll_jitter: z.number().min(0).max(0.5).default(0.1),
        request_timeout_ms: positiveInt().default(15_000),
        max_retries: nonNegativeInt().default(5),
        max_retry_delay_ms: positiveInt().default(30_000),
        max_rate_limit_wait_ms: positiveInt().default(60_000),
        initial_rate_limit: z.number().positive().optional().describe('Requests/s before the hub states its limit. Default 25 (production, no preset), 50 (uat), 1000 (simulator).'),
        rescan_overlap: nonNegativeInt().default(0).describe('Extra signals re-read behind the cursor on every run, beyond the time-window lookback.'),
        time_window_seconds: z.number().nonnegative().optional().describe('The hub hides signals younger than this; a lower id can appear behind the cursor for about this long (SPEC §10). Default 10 (production, uat, no preset), 0 (simulator, whose hub shows signals at once). 0 turns the late-lower-id lookback off.'),
        lookback_max_signals: positiveInt().default(300).describe('At most this many signals re-read behind the cursor by the lookback: what a producer can push in one window (25 requests/s × 10 s) and a margin.'),
        retention_days: positiveInt().default(30),
      })
      .prefault({}),
    crypto: z
      .strictObject({
        request_timeout_ms: positiveInt().default(10_000),
        rotation_wait_seconds: z.number().nonnegative().default(120),
      })
      .prefault({}),
    subjects: z.strictObject({ validate: z.boolean().default(true), backfill: z.boolean().default(true) }).prefault({}),
    events: z.strictObject({ include_subject_key: z.boolean().default(false) }).prefault({}),
    outbox: z
      .strictObject({
        keep_days: nonNegativeInt().default(7),
        max_pending: positiveInt().default(100_000),
        delivery_batch_size: positiveInt().default(100),
      })
      .prefault({}),
    alerts: z
      .strictObject({
        stale_after_hours: z
          .number()
          .positive()
          .default(24)
          .describe('An e-service whose last successful pull is older than this is reported stale (status, /readyz, a warning in the log). PDND recommends pulling at least once a day.'),
        critical_after_days: z
          .number()
          .positive()
          .default(25)
          .describe('Older than this, critical (an error in the log): the hub deletes signals after hub.retention_days, so this must be below it. Default 25: five days before the 30-day retention loses anything.'),
      })
      .prefault({}),
    http: z
      .strictObject({
        enabled: z.boolean().default(false),
        listen: z
          .string()
          .default('127.0.0.1:9464')
          .describe('host:port of /metrics and /healthz ([::1]:9464 for IPv6).')
          .superRefine((value, issues) => {
            if (!parseListen(value)) issues.addIssue({ code: 'custom', message: 'must be host:port (e.g. 127.0.0.1:9464 or [::1]:9464)', input: value });
          }),
      })
      .prefault({}),
    security: z
      .strictObject({
        allow_readable_secrets: z
          .boolean()
          .default(false)
          .describe('Accept private key and HMAC secret files readable by group or others (e.g. shared through a group); default: refuse to start.'),
      })
      .prefault({}),
    daemon: z
      .strictObject({
        shutdown_timeout_seconds: z.number().positive().default(20),
        concurrency: z.number().int().min(1).max(64).default(4),
      })
      .prefault({}),
    eservices: z.array(eservice).default([]),
    sinks: z.array(sink).default([]),
  });
}

export type FileConfig = z.output<ReturnType<typeof buildFileSchema>>;

/** Why `value` is not an acceptable endpoint URL, or null. Never echoes the URL (it may carry a token). */
export function urlProblem(value: string, allowPlainHttp: boolean): string | null {
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    return 'must be an absolute URL';
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') return 'must be an http(s) URL';
  if (parsed.username || parsed.password) return 'must not contain credentials (user:password@)';
  if (parsed.protocol === 'http:' && !allowPlainHttp && !isLoopbackHost(parsed.hostname)) {
    return 'must use https (plain http only towards loopback hosts or with preset = "simulator")';
  }
  return null;
}

export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return host === 'localhost' || host.endsWith('.localhost') || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

export function parseListen(value: string): { host: string; port: number } | null {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(value);
  if (!match) return null;
  const port = Number(match[3]);
  if (port > 65535) return null;
  return { host: match[1] ?? match[2]!, port };
}
