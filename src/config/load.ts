import fs from 'node:fs/promises';
import path from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { AppError, ConfigError, type ConfigProblem } from '../errors.js';
import { parseTenantFilter } from '../tenant.js';
import type { ClientConfig, Config, EServiceConfig, SinkConfig } from './types.js';
import { expandEnvironment } from './env.js';
import { buildFileSchema, parseListen, type FileConfig } from './schema.js';
import { problemsFromIssues } from './issues.js';
import { knownKeysAt } from './schema-json.js';
import { crossCheck, presetOf, refersToEService } from './crosscheck.js';
import { uniqueProblems } from './problems.js';
import { DEFAULT_INITIAL_RATE_LIMIT, DEFAULT_SIMULATOR_URL, presetValues, stripTrailingSlashes, type PresetValues } from './presets.js';
import { defaultDatabasePath, type PathContext } from './paths.js';

export interface LoadConfigOptions {
  /** Environment for `${VAR}`, $CREDENTIALS_DIRECTORY and $STATE_DIRECTORY. Default process.env. */
  env?: NodeJS.ProcessEnv;
  /**
   * False: key and secret files are not opened (commands that call neither PDND nor a webhook),
   * so they work where the keys cannot be read. Default true.
   */
  checkSecrets?: boolean;
}

/**
 * Reads, validates and resolves the config file. Throws CONFIG_NOT_FOUND when the file
 * cannot be read and ConfigError with every problem (key path + message) when it is invalid.
 */
export async function loadConfig(file: string, options: LoadConfigOptions = {}): Promise<Config> {
  const absolute = path.resolve(file);
  let text: string;
  try {
    text = await fs.readFile(absolute, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'not found' : code === 'EACCES' ? 'not readable (permission denied)' : code === 'EISDIR' ? 'is a directory' : `cannot be read (${code ?? 'error'})`;
    throw new AppError('CONFIG_NOT_FOUND', `config file ${absolute} ${reason} (set --config or $SIGNALHUB_SYNC_CONFIG)`, { details: { file: absolute } });
  }
  return parseConfigText(text, { file: absolute, env: options.env, checkSecrets: options.checkSecrets });
}

/** Validates config text as if read from `file` (relative paths resolve against its folder). Used by SIGHUP reload too. */
export function parseConfigText(text: string, options: { file: string; env?: NodeJS.ProcessEnv; checkSecrets?: boolean }): Config {
  const file = path.resolve(options.file);
  const env = options.env ?? process.env;
  const fail = (problems: ConfigProblem[]): never => {
    throw new ConfigError(file, uniqueProblems(problems));
  };

  let parsed: Record<string, unknown>;
  try {
    parsed = parseToml(text.replace(/^\uFEFF/, ''));
  } catch (err) {
    if (err instanceof TomlError) {
      // smol-toml's message ends with a code block of the file: keep only the reason.
      const reason = err.message.replace(/^Invalid TOML document:\s*/, '').split('\n')[0]!.trim();
      return fail([{ path: '', message: `${file}:${err.line}:${err.column}: TOML syntax error: ${reason}` }]);
    }
    throw err;
  }

  const expanded = expandEnvironment(parsed, env);
  const document = expanded.value as Record<string, unknown>;
  const paths: PathContext = { configDir: path.dirname(file), env };
  const preset = presetOf(document);
  const result = buildFileSchema({ paths, preset, allowReadableSecrets: allowsReadableSecrets(document), checkSecrets: options.checkSecrets ?? true }).safeParse(document);
  const problems = [
    ...expanded.problems,
    ...(result.success ? [] : problemsFromIssues(result.error.issues, document, knownKeysAt)),
    ...crossCheck(document),
    ...tlsEnvironmentProblems(env),
  ];
  if (problems.length > 0 || !result.success) return fail(inDocumentOrder(problems, document));
  return toConfig(result.data, { file, env });
}

/**
 * Node reads NODE_TLS_REJECT_UNAUTHORIZED=0 as "accept any certificate" for every connection
 * (vouchers, signals, seeds, events): a debugging leftover that must not run in production,
 * so it refuses the configuration rather than only the warning Node prints.
 */
function tlsEnvironmentProblems(env: NodeJS.ProcessEnv): ConfigProblem[] {
  if (env.NODE_TLS_REJECT_UNAUTHORIZED !== '0') return [];
  return [
    {
      path: '',
      message:
        'the environment sets NODE_TLS_REJECT_UNAUTHORIZED=0, which switches off TLS certificate verification: unset it; ' +
        'to trust a private CA set NODE_EXTRA_CA_CERTS=/path/to/ca.pem (or ca_file on a webhook sink)',
    },
  ];
}

/**
 * The [security] override, read before the schema because the key checks inside it depend on
 * it. Only a literal `true` counts: a mistyped value is the schema's problem and refuses.
 */
function allowsReadableSecrets(document: Record<string, unknown>): boolean {
  const security = document.security;
  return typeof security === 'object' && security !== null && (security as Record<string, unknown>).allow_readable_secrets === true;
}

/**
 * Problems grouped as the reader sees the file: by top-level key in file order, then by
 * array entry (all of `eservices[1]` together); otherwise in the order found.
 */
function inDocumentOrder(problems: ConfigProblem[], document: Record<string, unknown>): ConfigProblem[] {
  const topKeys = Object.keys(document);
  const rank = (p: ConfigProblem): [number, number] => {
    const match = /^([^.[]+)(?:\[(\d+)\])?/.exec(p.path);
    const top = match ? topKeys.indexOf(match[1]!) : -1;
    return [top === -1 ? (p.path === '' ? -1 : topKeys.length) : top, match?.[2] === undefined ? -1 : Number(match[2])];
  };
  return problems
    .map((problem, order) => ({ problem, order, rank: rank(problem) }))
    .sort((a, b) => a.rank[0] - b.rank[0] || a.rank[1] - b.rank[1] || a.order - b.order)
    .map((entry) => entry.problem);
}

/** Maps the validated file (snake_case) to the typed Config, filling preset defaults. */
function toConfig(data: FileConfig, { file, env }: { file: string; env: NodeJS.ProcessEnv }): Config {
  const preset = data.preset;
  const known: Partial<PresetValues> = preset ? presetValues(preset, data.simulator_url ?? DEFAULT_SIMULATOR_URL) : {};
  // crossCheck guarantees these are present when there is no preset.
  const required = <T>(value: T | undefined, key: string): T => {
    if (value === undefined) throw new AppError('INTERNAL', `config: ${key} unresolved after validation`);
    return value;
  };
  const hubBaseUrl = required(data.hub.base_url ?? known.hubBaseUrl, 'hub.base_url');

  const client = (c: { client_id: string; key_id: string; private_key_file: string; next_key_id?: string | undefined; next_private_key_file?: string | undefined }): ClientConfig => ({
    clientId: c.client_id,
    keyId: c.key_id,
    privateKeyFile: c.private_key_file,
    ...(c.next_key_id !== undefined && c.next_private_key_file !== undefined ? { nextKey: { keyId: c.next_key_id, privateKeyFile: c.next_private_key_file } } : {}),
  });
  const shared = data.pdnd.eservice_client ? client(data.pdnd.eservice_client) : undefined;

  const eservices: EServiceConfig[] = data.eservices.map((e, i) => ({
    id: e.id,
    name: e.name,
    client:
      e.client_id !== undefined && e.key_id !== undefined && e.private_key_file !== undefined
        ? client({ ...e, client_id: e.client_id, key_id: e.key_id, private_key_file: e.private_key_file })
        : required(shared, `eservices[${i}].client_id`),
    purposeId: e.purpose_id,
    cryptoInfoUrl: e.recipe.encoding === 'identity' ? null : required(e.crypto_info_url ?? known.cryptoInfoUrl?.(e.id), `eservices[${i}].crypto_info_url`),
    cryptoHistory: e.crypto_history,
    recipe: { template: e.recipe.template, encoding: e.recipe.encoding },
    pollIntervalSeconds: e.poll_interval_seconds ?? data.hub.poll_interval_seconds,
    audit: e.audit ? { audience: e.audit.audience, claims: e.audit.claims, ttlSeconds: e.audit.ttl_seconds } : undefined,
    voucherType: e.voucher_type,
  }));

  // Validated by the schema: the normalized id, '' for the own subjects.
  const tenantOf = (value: string): string => {
    const parsed = parseTenantFilter(value);
    return 'tenant' in parsed ? parsed.tenant : value;
  };
  const idOf = (ref: string): string => data.eservices.find((e) => refersToEService(ref, e))?.id ?? ref;
  const sinks: SinkConfig[] = data.sinks.map((s): SinkConfig => {
    const tenants = [...new Set(s.tenants.map(tenantOf))];
    const signalTypes = [...new Set(s.signal_types.map((t) => t.trim()))];
    // Left out when empty ("all"), as a programmatic configuration would.
    const base = {
      name: s.name,
      eservices: [...new Set(s.eservices.map(idOf))],
      ...(tenants.length > 0 ? { tenants } : {}),
      ...(signalTypes.length > 0 ? { signalTypes } : {}),
    };
    switch (s.type) {
      case 'webhook':
        return { ...base, type: 'webhook', url: s.url, secretFile: s.secret_file, caFile: s.ca_file, batchSize: s.batch_size, timeoutMs: s.timeout_ms, maxRetries: s.max_retries, signature: s.signature, onReject: s.on_reject };
      case 'file':
        return { ...base, type: 'file', path: s.path };
      case 'stdout':
        return { ...base, type: 'stdout', format: s.format };
      case 'exec':
        return { ...base, type: 'exec', command: s.command, timeoutMs: s.timeout_ms, env: s.env, passEnv: s.pass_env, onReject: s.on_reject };
    }
  });

  const listen = required(parseListen(data.http.listen) ?? undefined, 'http.listen');
  return {
    file,
    preset,
    database: data.database ?? defaultDatabasePath(env),
    log: { level: data.log.level, destination: data.log.destination },
    pdnd: {
      tokenUrl: required(data.pdnd.token_url ?? known.tokenUrl, 'pdnd.token_url'),
      assertionAudience: required(data.pdnd.assertion_audience ?? known.assertionAudience, 'pdnd.assertion_audience'),
      assertionTtlSeconds: data.pdnd.assertion_ttl_seconds,
      voucherRefreshMarginSeconds: data.pdnd.voucher_refresh_margin_seconds,
      requestTimeoutMs: data.pdnd.request_timeout_ms,
      m2m: client(data.pdnd.m2m),
      dpopKeyFile: data.pdnd.dpop_key_file,
    },
    hub: {
      baseUrl: stripTrailingSlashes(hubBaseUrl),
      pageSize: data.hub.page_size,
      pollIntervalSeconds: data.hub.poll_interval_seconds,
      pollJitter: data.hub.poll_jitter,
      requestTimeoutMs: data.hub.request_timeout_ms,
      maxRetries: data.hub.max_retries,
      maxRetryDelayMs: data.hub.max_retry_delay_ms,
      maxRateLimitWaitMs: data.hub.max_rate_limit_wait_ms,
      initialRateLimit: data.hub.initial_rate_limit ?? known.initialRateLimit ?? DEFAULT_INITIAL_RATE_LIMIT,
      rescanOverlap: data.hub.rescan_overlap,
      timeWindowSeconds: data.hub.time_window_seconds ?? known.timeWindowSeconds ?? 10,
      lookbackMaxSignals: data.hub.lookback_max_signals,
      retentionDays: data.hub.retention_days,
    },
    crypto: { requestTimeoutMs: data.crypto.request_timeout_ms, rotationWaitSeconds: data.crypto.rotation_wait_seconds },
    subjects: { validate: data.subjects.validate, backfill: data.subjects.backfill },
    events: { includeSubjectKey: data.events.include_subject_key },
    outbox: { keepDays: data.outbox.keep_days, maxPending: data.outbox.max_pending, deliveryBatchSize: data.outbox.delivery_batch_size },
    alerts: { staleAfterHours: data.alerts.stale_after_hours, criticalAfterDays: data.alerts.critical_after_days },
    http: { enabled: data.http.enabled, host: listen.host, port: listen.port },
    daemon: { shutdownTimeoutSeconds: data.daemon.shutdown_timeout_seconds, concurrency: data.daemon.concurrency },
    security: { allowReadableSecrets: data.security.allow_readable_secrets },
    eservices,
    sinks,
  };
}

