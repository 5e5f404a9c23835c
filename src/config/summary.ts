import { tenantLabel } from '../tenant.js';
import fs from 'node:fs';
import { displayWebhookUrl } from '../url-display.js';
import type { ClientConfig, Config, SinkConfig } from './types.js';
import { presetValues } from './presets.js';
import { isLoopbackHost } from './schema.js';
import { formatMode, publicKeyFingerprint, rsaPrivateKeyProblem, secretFileModeProblem } from './keys.js';

/**
 * The human summary `config check` prints: what the daemon will talk to and with which
 * identity. Keys appear only as public-key fingerprints; secret files only by path.
 */
export function summarizeConfig(config: Config): string {
  const lines: string[] = [];
  const row = (label: string, value: string) => lines.push(`${label.padEnd(22)}${value}`);
  row('config', config.file);
  row('preset', config.preset ?? '(none)');
  row('database', config.database);
  row('log', `${config.log.level} to ${config.log.destination}`);
  row('token endpoint', redactedUrl(config.pdnd.tokenUrl));
  row('assertion audience', config.pdnd.assertionAudience);
  row('signal hub', `${redactedUrl(config.hub.baseUrl)} (page ${config.hub.pageSize}, every ${config.hub.pollIntervalSeconds} s, start at ${config.hub.initialRateLimit} req/s)`);
  row('http', config.http.enabled ? `http://${hostForUrl(config.http.host)}:${config.http.port} (/metrics, /healthz)` : 'disabled');

  lines.push('', 'clients');
  const clients = new Map<string, { client: ClientConfig; uses: string[] }>();
  const noteClient = (client: ClientConfig, use: string) => {
    const id = `${client.clientId}\u0000${client.keyId}\u0000${client.privateKeyFile}`;
    const entry = clients.get(id) ?? { client, uses: [] };
    entry.uses.push(use);
    clients.set(id, entry);
  };
  noteClient(config.pdnd.m2m, 'm2m');
  for (const e of config.eservices) noteClient(e.client, e.name);
  for (const { client, uses } of clients.values()) {
    lines.push(`  ${uses.join(', ')}`);
    lines.push(`    client id ${client.clientId}, key id ${client.keyId}, key fingerprint ${keyFingerprint(client.privateKeyFile)}`);
    lines.push(`    key file ${client.privateKeyFile}`);
    if (client.nextKey) lines.push(`    next key id ${client.nextKey.keyId}, key fingerprint ${keyFingerprint(client.nextKey.privateKeyFile)}, key file ${client.nextKey.privateKeyFile} (tried when PDND refuses the first)`);
  }
  if (config.eservices.some((e) => e.voucherType === 'dpop')) lines.push(`  DPoP key: ${config.pdnd.dpopKeyFile ?? 'generated at start, kept in memory'}`);

  lines.push('', `e-services (${config.eservices.length})`);
  for (const e of config.eservices) {
    lines.push(`  ${e.name} ${e.id}`);
    lines.push(`    purpose ${e.purposeId}, client ${e.client.clientId}`);
    if (e.cryptoInfoUrl === null) lines.push('    crypto info none (identity recipe: objectIds are subject keys in clear)');
    else lines.push(`    crypto info ${redactedUrl(e.cryptoInfoUrl)}${e.cryptoHistory ? ' (with seed history)' : ''}`);
    lines.push(`    recipe ${e.recipe.encoding === 'identity' ? 'identity' : `${e.recipe.template} as ${e.recipe.encoding}`}, audit ${e.audit ? `on (aud ${e.audit.audience})` : 'off'}${e.voucherType === 'dpop' ? ', DPoP voucher' : ''}, every ${e.pollIntervalSeconds} s`);
  }

  lines.push('', `sinks (${config.sinks.length})`);
  for (const s of config.sinks) {
    const names = s.eservices.map((id) => config.eservices.find((e) => e.id === id)?.name ?? id);
    const tenants = (s.tenants ?? []).map(tenantLabel);
    const types = s.signalTypes ?? [];
    const routing = `${tenants.length > 0 ? `; tenants: ${tenants.join(', ')}` : ''}${types.length > 0 ? `; signal types: ${types.join(', ')}` : ''}`;
    lines.push(`  ${s.name}: ${s.type} ${sinkTarget(s)}; e-services: ${names.length > 0 ? names.join(', ') : 'all'}${routing}`);
  }

  const warnings = configWarnings(config);
  if (warnings.length > 0) lines.push('', 'warnings', ...warnings.map((w) => `  ${w}`));
  return `${lines.join('\n')}\n`;
}

/** Things that are allowed but deserve a second look; the daemon logs them at warn level. */
export function configWarnings(config: Config): string[] {
  const warnings: string[] = [];
  if (config.http.enabled && !isLoopbackHost(config.http.host)) {
    warnings.push(`http.listen: metrics and health are served on non-loopback address ${config.http.host}; restrict access with a firewall`);
  }
  if (config.preset === 'uat' && config.hub.baseUrl === presetValues('uat').hubBaseUrl) {
    warnings.push('hub.base_url: the UAT Signal Hub address is inferred, not documented; confirm it with PDND');
  }
  if (config.eservices.length === 0) warnings.push('eservices: none configured, nothing will be synced');
  if (config.sinks.length === 0) warnings.push('sinks: none configured, events stay in the outbox');
  if (config.events.includeSubjectKey) warnings.push('events.include_subject_key: events carry subject keys (personal data) to every sink');
  // Without the override such files refuse the config at load: only the override lets them here.
  if (config.security.allowReadableSecrets) warnings.push(...readableSecretWarnings(config));
  return warnings;
}

function readableSecretWarnings(config: Config): string[] {
  const secretFiles = new Set([
    config.pdnd.m2m.privateKeyFile,
    ...(config.pdnd.m2m.nextKey ? [config.pdnd.m2m.nextKey.privateKeyFile] : []),
    ...(config.pdnd.dpopKeyFile !== undefined ? [config.pdnd.dpopKeyFile] : []),
    ...config.eservices.flatMap((e) => [e.client.privateKeyFile, ...(e.client.nextKey ? [e.client.nextKey.privateKeyFile] : [])]),
    ...config.sinks.flatMap((s) => (s.type === 'webhook' && s.secretFile !== undefined ? [s.secretFile] : [])),
  ]);
  const warnings: string[] = [];
  for (const file of secretFiles) {
    if (secretFileModeProblem(file, process.env.CREDENTIALS_DIRECTORY) === null) continue;
    const mode = fileMode(file);
    warnings.push(
      `${file}: readable by group or others (mode ${mode === undefined ? '?' : formatMode(mode)}), accepted because [security] allow_readable_secrets = true; use chmod 600 unless a group must read it`,
    );
  }
  return warnings;
}

function keyFingerprint(file: string): string {
  const key = rsaPrivateKeyProblem(file);
  return typeof key === 'string' ? `(unavailable: ${key})` : publicKeyFingerprint(key);
}

function sinkTarget(sink: SinkConfig): string {
  switch (sink.type) {
    case 'webhook': {
      const signed = sink.signature === 'standard-webhooks' ? `signed (Standard Webhooks) with ${sink.secretFile}` : `signed with ${sink.secretFile}`;
      const extras = [sink.secretFile ? signed : 'unsigned', sink.caFile ? `CA ${sink.caFile}` : '', sink.batchSize > 1 ? `batches of ${sink.batchSize}` : '', sink.onReject === 'dead-letter' ? 'refusals to dead letters' : '']
        .filter(Boolean)
        .join(', ');
      return `${displayWebhookUrl(sink.url)} (${extras})`;
    }
    case 'file':
      return sink.path;
    case 'stdout':
      return `(${sink.format})`;
    case 'exec':
      // Arguments may carry tokens: show the program only.
      return `${sink.command[0]}${sink.command.length > 1 ? ` (+${sink.command.length - 1} args)` : ''}`;
  }
}

/** Origin and path only: a query string may carry a token. */
function redactedUrl(url: string): string {
  const parsed = new URL(url);
  return `${parsed.origin}${parsed.pathname}${parsed.search ? '?…' : ''}`;
}

function hostForUrl(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

function fileMode(file: string): number | undefined {
  try {
    return fs.statSync(file).mode;
  } catch {
    return undefined;
  }
}
