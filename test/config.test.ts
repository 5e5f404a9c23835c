import { createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { AppError, ConfigError, exitCodeFor, EXIT } from '../src/errors.js';
import { loadConfig } from '../src/config/load.js';
import { configWarnings, summarizeConfig } from '../src/config/summary.js';
import { configJsonSchema } from '../src/config/schema-json.js';
import { tempDir } from './helpers/fs.js';
import { testKey, writeKeyFile } from './helpers/keys.js';
import { ROOT } from './helpers/cli.js';
import { configDir, ES1, ES2, ES_CLIENT, M2M_CLIENT, parseIn, problemLines, problemsOf, productionToml, PURPOSE1, writeConfig } from './config-helpers.js';

describe('config: a valid file', () => {
  it('maps snake_case TOML to the typed Config with production preset URLs and defaults', () => {
    const dir = configDir(tempDir());
    const config = parseIn(dir, productionToml());
    expect(config.file).toBe(path.join(dir, 'config.toml'));
    expect(config.preset).toBe('production');
    expect(config.database).toBe(path.join(dir, 'state/shs.db'));
    expect(config.log).toEqual({ level: 'info', destination: 'stderr' });
    expect(config.pdnd).toEqual({
      tokenUrl: 'https://auth.interop.pagopa.it/token.oauth2',
      assertionAudience: 'auth.interop.pagopa.it/client-assertion',
      assertionTtlSeconds: 120,
      voucherRefreshMarginSeconds: 60,
      requestTimeoutMs: 10_000,
      m2m: { clientId: M2M_CLIENT, keyId: 'kid-m2m', privateKeyFile: path.join(dir, 'm2m.pem') },
    });
    expect(config.hub).toEqual({
      baseUrl: 'https://api.signalhub.interop.pagopa.it/1.0/pull',
      pageSize: 100,
      pollIntervalSeconds: 60,
      pollJitter: 0.1,
      requestTimeoutMs: 15_000,
      maxRetries: 5,
      maxRetryDelayMs: 30_000,
      maxRateLimitWaitMs: 60_000,
      initialRateLimit: 25,
      rescanOverlap: 0,
      timeWindowSeconds: 10,
      lookbackMaxSignals: 300,
      retentionDays: 30,
    });
    expect(config.crypto).toEqual({ requestTimeoutMs: 10_000, rotationWaitSeconds: 120 });
    expect(config.subjects).toEqual({ validate: true, backfill: true });
    expect(config.events).toEqual({ includeSubjectKey: false });
    expect(config.outbox).toEqual({ keepDays: 7, maxPending: 100_000, deliveryBatchSize: 100 });
    expect(config.http).toEqual({ enabled: false, host: '127.0.0.1', port: 9464 });
    expect(config.daemon).toEqual({ shutdownTimeoutSeconds: 20, concurrency: 4 });
    expect(config.sinks).toEqual([]);
    expect(config.eservices).toHaveLength(2);
    expect(config.eservices[0]).toEqual({
      id: ES1,
      name: 'residences',
      client: { clientId: ES_CLIENT, keyId: 'kid-es', privateKeyFile: path.join(dir, 'eservice.pem') },
      purposeId: PURPOSE1,
      cryptoInfoUrl: 'https://producer.example.it/pseudonymization',
      cryptoHistory: false,
      recipe: { template: '${subject}${seed}', encoding: 'base64' },
      pollIntervalSeconds: 60,
      audit: undefined,
      voucherType: 'bearer',
    });
  });

  it('uat preset fills the UAT endpoints and rate', () => {
    const dir = configDir(tempDir());
    const config = parseIn(dir, productionToml().replace('preset = "production"', 'preset = "uat"'));
    expect(config.pdnd.tokenUrl).toBe('https://auth.uat.interop.pagopa.it/token.oauth2');
    expect(config.pdnd.assertionAudience).toBe('auth.uat.interop.pagopa.it/client-assertion');
    expect(config.hub.baseUrl).toBe('https://api.uat.signalhub.interop.pagopa.it/1.0/pull');
    expect(config.hub.initialRateLimit).toBe(50);
    expect(configWarnings(config).join('\n')).toContain('UAT Signal Hub address is inferred');
  });

  it('simulator preset derives every URL from simulator_url, including crypto-info defaults', () => {
    const dir = configDir(tempDir());
    const text = productionToml()
      .replace('preset = "production"', 'preset = "simulator"\nsimulator_url = "http://127.0.0.1:9999/"')
      .replace('crypto_info_url = "https://producer.example.it/pseudonymization"\n', '');
    const config = parseIn(dir, text);
    expect(config.pdnd.tokenUrl).toBe('http://127.0.0.1:9999/token.oauth2');
    expect(config.pdnd.assertionAudience).toBe('auth.simulator.local/client-assertion');
    expect(config.hub.baseUrl).toBe('http://127.0.0.1:9999/1.0/pull');
    expect(config.hub.initialRateLimit).toBe(1000);
    expect(config.eservices[0]!.cryptoInfoUrl).toBe(`http://127.0.0.1:9999/producers/${ES1}/pseudonymization`);
    // An explicit URL wins over the preset's default.
    expect(config.eservices[1]!.cryptoInfoUrl).toBe('https://producer2.example.it/pseudonymization');
  });

  it('simulator preset without simulator_url uses http://127.0.0.1:8787, and allows plain http to any host', () => {
    const dir = configDir(tempDir());
    const text = productionToml()
      .replace('preset = "production"', 'preset = "simulator"')
      .replace('https://producer.example.it/', 'http://sim-producer.internal/');
    const config = parseIn(dir, text);
    expect(config.hub.baseUrl).toBe('http://127.0.0.1:8787/1.0/pull');
    expect(config.eservices[0]!.cryptoInfoUrl).toBe('http://sim-producer.internal/pseudonymization');
  });

  it('file values override preset values', () => {
    const dir = configDir(tempDir());
    // [pdnd] after its sub-table [pdnd.m2m] is valid TOML.
    const text = productionToml(`
[pdnd]
token_url = "https://gw.example.it/token"
assertion_audience = "custom-aud"
[hub]
base_url = "https://hub.example.it/pull/"
initial_rate_limit = 5
poll_interval_seconds = 30
[log]
level = "debug"
destination = "stdout"
`);
    const config = parseIn(dir, text);
    expect(config.pdnd.tokenUrl).toBe('https://gw.example.it/token');
    expect(config.pdnd.assertionAudience).toBe('custom-aud');
    expect(config.hub.baseUrl).toBe('https://hub.example.it/pull');
    expect(config.hub.initialRateLimit).toBe(5);
    expect(config.eservices.map((e) => e.pollIntervalSeconds)).toEqual([30, 30]);
    expect(config.log).toEqual({ level: 'debug', destination: 'stdout' });
  });

  it('without a preset the endpoints are taken from the file, and http is fine towards loopback', () => {
    const dir = configDir(tempDir());
    const text = productionToml(`
[pdnd]
token_url = "http://127.0.0.1:4000/token.oauth2"
assertion_audience = "aud"
[hub]
base_url = "http://[::1]:4000/1.0/pull"
`).replace('preset = "production"\n', '');
    const config = parseIn(dir, text);
    expect(config.preset).toBeUndefined();
    expect(config.pdnd.tokenUrl).toBe('http://127.0.0.1:4000/token.oauth2');
    expect(config.hub.baseUrl).toBe('http://[::1]:4000/1.0/pull');
    expect(config.hub.initialRateLimit).toBe(25);
  });

  it('an e-service can use its own client, audit settings, recipe and poll interval', () => {
    const dir = configDir(tempDir());
    writeKeyFile(dir, 'own.pem');
    const own = '77777777-7777-4777-8777-777777777777';
    const text = productionToml().replace(
      `name = "documents"`,
      `name = "documents"
client_id = "${own}"
key_id = "kid-own"
private_key_file = "own.pem"
poll_interval_seconds = 5
crypto_history = true
recipe = { template = "-\${subject}-\${algorithm}-\${seed}-", encoding = "HEX" }
audit = { audience = "https://producer2.example.it", claims = { userID = "u1", LoA = 3, internal = true } }`,
    );
    const es = parseIn(dir, text).eservices[1]!;
    expect(es.client).toEqual({ clientId: own, keyId: 'kid-own', privateKeyFile: path.join(dir, 'own.pem') });
    expect(es.pollIntervalSeconds).toBe(5);
    expect(es.cryptoHistory).toBe(true);
    expect(es.recipe).toEqual({ template: '-${subject}-${algorithm}-${seed}-', encoding: 'HEX' });
    expect(es.audit).toEqual({ audience: 'https://producer2.example.it', claims: { userID: 'u1', LoA: 3, internal: true }, ttlSeconds: 300 });
  });

  it('an identity e-service (SPEC §8b) needs no crypto_info_url and shows no seed settings in the summary', () => {
    const dir = configDir(tempDir());
    const text = productionToml().replace('crypto_info_url = "https://producer2.example.it/pseudonymization"\n', 'recipe = { encoding = "identity" }\n');
    const config = parseIn(dir, text);
    const es = config.eservices[1]!;
    expect(es.recipe.encoding).toBe('identity');
    expect(es.cryptoInfoUrl).toBeNull();
    expect(es.cryptoHistory).toBe(false);
    expect(config.eservices[0]!.cryptoInfoUrl).toBe('https://producer.example.it/pseudonymization');
    const summary = summarizeConfig(config);
    expect(summary).toContain('crypto info none (identity recipe');
    expect(summary).toContain('recipe identity, audit off');
  });

  it('with the simulator preset an identity e-service gets no default crypto_info_url', () => {
    const dir = configDir(tempDir());
    const text = productionToml()
      .replace('preset = "production"', 'preset = "simulator"')
      .replace('crypto_info_url = "https://producer.example.it/pseudonymization"\n', '')
      .replace('crypto_info_url = "https://producer2.example.it/pseudonymization"\n', 'recipe = { encoding = "identity" }\n');
    const config = parseIn(dir, text);
    expect(config.eservices[0]!.cryptoInfoUrl).toMatch(/\/pseudonymization$/);
    expect(config.eservices[1]!.cryptoInfoUrl).toBeNull();
  });

  it('sinks of every type, with e-service filters by id or name mapped to ids', () => {
    const dir = configDir(tempDir());
    fs.writeFileSync(path.join(dir, 'hmac'), 'topsecret-hmac-value\n', { mode: 0o600 });
    fs.mkdirSync(path.join(dir, 'bin'));
    const text = productionToml(`
[[sinks]]
name = "hook"
type = "webhook"
url = "https://crm.example.it/hook"
secret_file = "hmac"
batch_size = 50
eservices = ["residences", "${ES2.toUpperCase()}"]

[[sinks]]
name = "log"
type = "file"
path = "out/events.ndjson"

[[sinks]]
name = "tty"
type = "stdout"

[[sinks]]
name = "script"
type = "exec"
command = ["./bin/handle", "--flag"]
`);
    const config = parseIn(dir, text);
    expect(config.sinks).toEqual([
      { name: 'hook', type: 'webhook', url: 'https://crm.example.it/hook', secretFile: path.join(dir, 'hmac'), caFile: undefined, batchSize: 50, timeoutMs: 10_000, maxRetries: 8, signature: 'x-signature', onReject: 'stop', eservices: [ES1, ES2] },
      { name: 'log', type: 'file', path: path.join(dir, 'out/events.ndjson'), eservices: [] },
      { name: 'tty', type: 'stdout', format: 'ndjson', eservices: [] },
      { name: 'script', type: 'exec', command: [path.join(dir, 'bin/handle'), '--flag'], timeoutMs: 30_000, env: {}, passEnv: [], onReject: 'stop', eservices: [] },
    ]);
  });

  it('http.listen accepts IPv6 and port 0; a non-loopback address is allowed with a warning', () => {
    const dir = configDir(tempDir());
    const v6 = parseIn(dir, productionToml('[http]\nenabled = true\nlisten = "[::1]:0"\n'));
    expect(v6.http).toEqual({ enabled: true, host: '::1', port: 0 });
    expect(configWarnings(v6).join('\n')).not.toContain('http.listen');
    const open = parseIn(dir, productionToml('[http]\nenabled = true\nlisten = "0.0.0.0:9464"\n'));
    expect(open.http.host).toBe('0.0.0.0');
    expect(configWarnings(open).join('\n')).toContain('http.listen: metrics and health are served on non-loopback address 0.0.0.0');
  });

  it('a UTF-8 BOM at the start of the file is accepted', () => {
    const dir = configDir(tempDir());
    expect(parseIn(dir, `\uFEFF${productionToml()}`).preset).toBe('production');
  });
});

describe('config: paths', () => {
  it('a bare key name resolves in $CREDENTIALS_DIRECTORY; a relative path with "/" stays relative to the config folder', () => {
    const dir = tempDir();
    const credentials = tempDir();
    writeKeyFile(credentials, 'm2m.pem');
    writeKeyFile(credentials, 'eservice.pem');
    fs.mkdirSync(path.join(dir, 'keys'));
    writeKeyFile(path.join(dir, 'keys'), 'local.pem');
    const text = productionToml().replace('private_key_file = "eservice.pem"', 'private_key_file = "./keys/local.pem"');
    const config = parseIn(dir, text, { CREDENTIALS_DIRECTORY: credentials });
    expect(config.pdnd.m2m.privateKeyFile).toBe(path.join(credentials, 'm2m.pem'));
    expect(config.eservices[0]!.client.privateKeyFile).toBe(path.join(dir, 'keys/local.pem'));
  });

  it('without $CREDENTIALS_DIRECTORY a bare name is relative to the config folder; absolute paths stay', () => {
    const dir = configDir(tempDir());
    const elsewhere = tempDir();
    const abs = writeKeyFile(elsewhere, 'abs.pem');
    const config = parseIn(dir, productionToml().replace('private_key_file = "eservice.pem"', `private_key_file = "${abs}"`));
    expect(config.pdnd.m2m.privateKeyFile).toBe(path.join(dir, 'm2m.pem'));
    expect(config.eservices[0]!.client.privateKeyFile).toBe(abs);
  });

  it('the database defaults to $STATE_DIRECTORY/signalhub-sync.db, else /var/lib/signalhub-sync/', () => {
    const dir = configDir(tempDir());
    const text = productionToml().replace('database = "state/shs.db"\n', '');
    expect(parseIn(dir, text).database).toBe('/var/lib/signalhub-sync/signalhub-sync.db');
    expect(parseIn(dir, text, { STATE_DIRECTORY: '/srv/state:/srv/other' }).database).toBe('/srv/state/signalhub-sync.db');
    // Never in the credentials folder, even for a bare name.
    const credentials = configDir(tempDir());
    expect(parseIn(dir, productionToml().replace('state/shs.db', 'shs.db'), { CREDENTIALS_DIRECTORY: credentials }).database).toBe(path.join(dir, 'shs.db'));
  });

  it('PKCS#1 ("BEGIN RSA PRIVATE KEY") keys are accepted as well as PKCS#8', () => {
    const dir = configDir(tempDir());
    fs.writeFileSync(path.join(dir, 'm2m.pem'), testKey().privateKey.export({ type: 'pkcs1', format: 'pem' }), { mode: 0o600 });
    expect(parseIn(dir, productionToml()).pdnd.m2m.privateKeyFile).toBe(path.join(dir, 'm2m.pem'));
  });
});

describe('config: environment expansion', () => {
  it('expands ${VAR} in strings, keeps $${ literal, and never touches recipe templates', () => {
    const dir = configDir(tempDir());
    const text = productionToml()
      .replace('database = "state/shs.db"', 'database = "${DATA_DIR}/shs.db"')
      .replace('key_id = "kid-m2m"', () => 'key_id = "kid-$${literal}-${KID_SUFFIX}"')
      .replace('crypto_info_url = "https://producer2.example.it/pseudonymization"', 'crypto_info_url = "https://${PRODUCER_HOST}/pseudonymization"\nrecipe = { template = "${subject}${seed}" }');
    const config = parseIn(dir, text, { DATA_DIR: '/data', KID_SUFFIX: 'x1', PRODUCER_HOST: 'p.example.it' });
    expect(config.database).toBe('/data/shs.db');
    expect(config.pdnd.m2m.keyId).toBe('kid-${literal}-x1');
    expect(config.eservices[1]!.cryptoInfoUrl).toBe('https://p.example.it/pseudonymization');
    expect(config.eservices[1]!.recipe.template).toBe('${subject}${seed}');
  });

  it('an unset variable and a malformed reference are problems at their key paths', () => {
    const dir = configDir(tempDir());
    const text = productionToml()
      .replace('database = "state/shs.db"', 'database = "${NOT_SET_ANYWHERE}/shs.db"')
      .replace('name = "documents"', 'name = "${lowercase}"');
    expect(problemLines(problemsOf(dir, text))).toEqual([
      'database: environment variable NOT_SET_ANYWHERE is not set',
      'eservices[1].name: "${lowercase}" is not an environment variable reference (names match [A-Z_][A-Z0-9_]*; write $${ for a literal ${)',
    ]);
  });
});

describe('config: every kind of problem, with its key path', () => {
  it('unknown keys, at any depth, with a hint for near misses', () => {
    const dir = configDir(tempDir());
    const text = productionToml('[hub]\npoll_intervall_seconds = 5\n[[sinks]]\nname = "s"\ntype = "file"\npath = "x"\nformat = "pretty"\n').replace('preset =', 'colour = "blue"\npreset =');
    expect(problemLines(problemsOf(dir, text))).toEqual([
      'colour: unknown key',
      'hub.poll_intervall_seconds: unknown key (did you mean "poll_interval_seconds"?)',
      'sinks[0].format: unknown key',
    ]);
  });

  it('missing required keys', () => {
    const dir = configDir(tempDir());
    const text = productionToml().replace(`purpose_id = "${PURPOSE1}"\n`, '').replace('key_id = "kid-m2m"\n', '') + '[[sinks]]\ntype = "webhook"\nname = "w"\n';
    expect(problemLines(problemsOf(dir, text))).toEqual([
      'pdnd.m2m.key_id: required',
      'eservices[0].purpose_id: required',
      'sinks[0].url: required',
    ]);
  });

  it('a missing [pdnd] table is one problem, not a cascade', () => {
    const dir = configDir(tempDir());
    expect(problemLines(problemsOf(dir, 'preset = "production"\n'))).toEqual(['pdnd: required']);
  });

  it('wrong types, named in TOML terms', () => {
    const dir = configDir(tempDir());
    const text = productionToml('[hub]\npage_size = "100"\npoll_jitter = [0.1]\n[daemon]\nconcurrency = 2.5\n[subjects]\nvalidate = "yes"\n').replace('key_id = "kid-m2m"', 'key_id = 42');
    expect(problemLines(problemsOf(dir, text))).toEqual([
      'pdnd.m2m.key_id: expected a string, got an integer',
      'hub.page_size: expected a number, got a string',
      'hub.poll_jitter: expected a number, got an array',
      'daemon.concurrency: must be an integer',
      'subjects.validate: expected a boolean, got a string',
    ]);
  });

  it('seed settings on an identity e-service are reported, each at its key', () => {
    const dir = configDir(tempDir());
    const text = productionToml().replace(
      'crypto_info_url = "https://producer2.example.it/pseudonymization"\n',
      'crypto_info_url = "https://producer2.example.it/pseudonymization"\ncrypto_history = true\nrecipe = { encoding = "identity", template = "${subject}${seed}" }\n',
    );
    const unused = 'not used with recipe.encoding = "identity" (objectIds are subject keys in clear, no seed): remove it, or choose the producer\'s digest encoding';
    expect(problemLines(problemsOf(dir, text))).toEqual([
      `eservices[1].crypto_info_url: ${unused}`,
      `eservices[1].crypto_history: ${unused}`,
      `eservices[1].recipe.template: ${unused}`,
    ]);
  });

  it('out-of-range numbers and bad enum values', () => {
    const dir = configDir(tempDir());
    const text = productionToml('[hub]\npage_size = 0\npoll_jitter = 0.9\n[log]\nlevel = "verbose"\n[[sinks]]\nname = "x"\ntype = "carrier-pigeon"\n')
      .replace('preset = "production"', 'preset = "prod"')
      .replace('name = "documents"', 'name = "documents"\nrecipe = { encoding = "base32" }');
    expect(problemLines(problemsOf(dir, text))).toEqual([
      'preset: must be one of "production", "uat", "simulator"',
      'eservices[1].recipe.encoding: must be one of "base64", "base64url", "hex", "HEX", "identity"',
      'hub.page_size: must be >= 1',
      'hub.poll_jitter: must be <= 0.5',
      'log.level: must be one of "fatal", "error", "warn", "info", "debug", "trace", "silent"',
      'sinks[0].type: must be one of "webhook", "file", "stdout", "exec"',
    ]);
  });

  it('bad URLs, bad UUIDs and bad recipe templates', () => {
    const dir = configDir(tempDir());
    const text = productionToml('[hub]\nbase_url = "not a url"\n[http]\nlisten = "localhost"\n[[sinks]]\nname = "w"\ntype = "webhook"\nurl = "https://user:pw@crm.example.it/"\n')
      .replace('https://producer.example.it/', 'http://producer.example.it/')
      .replace(`id = "${ES2}"`, 'id = "not-a-uuid"')
      .replace('name = "documents"', 'name = "documents"\nrecipe = { template = "${seed}${subjectt}" }');
    expect(problemLines(problemsOf(dir, text))).toEqual([
      'eservices[0].crypto_info_url: must use https (plain http only towards loopback hosts or with preset = "simulator")',
      'eservices[1].id: must be a UUID (8-4-4-4-12 hex digits)',
      'eservices[1].recipe.template: must contain ${subject}',
      'eservices[1].recipe.template: unknown placeholder ${subjectt} (allowed: ${subject}, ${seed}, ${algorithm})',
      'hub.base_url: must be an absolute URL',
      'http.listen: must be host:port (e.g. 127.0.0.1:9464 or [::1]:9464)',
      'sinks[0].url: must not contain credentials (user:password@)',
    ]);
  });

  it('duplicate e-service ids and names, duplicate sink names, unknown e-services in sink filters', () => {
    const dir = configDir(tempDir());
    const text = productionToml(`
[[eservices]]
id = "${ES1.toUpperCase()}"
name = "documents"
purpose_id = "${PURPOSE1}"
crypto_info_url = "https://producer.example.it/x"

[[sinks]]
name = "a"
type = "stdout"
eservices = ["residences", "nonexistent"]

[[sinks]]
name = "a"
type = "stdout"
`);
    expect(problemLines(problemsOf(dir, text))).toEqual([
      'eservices[2].id: duplicate of eservices[0].id',
      'eservices[2].name: duplicate of eservices[1].name',
      'sinks[0].eservices[1]: no e-service with id or name "nonexistent"',
      'sinks[1].name: duplicate of sinks[0].name',
    ]);
  });

  it('an e-service without any client, and a partial client override', () => {
    const dir = configDir(tempDir());
    const noShared = productionToml().replace(/\[pdnd\.eservice_client\][^[]*/, '');
    expect(problemLines(problemsOf(dir, noShared))).toEqual([
      'eservices[0].client_id: required (or set [pdnd.eservice_client])',
      'eservices[1].client_id: required (or set [pdnd.eservice_client])',
    ]);
    const partial = productionToml().replace('name = "documents"', `name = "documents"\nclient_id = "${ES_CLIENT}"`);
    expect(problemLines(problemsOf(dir, partial))).toEqual([
      'eservices[1].key_id: required with client_id (an e-service client needs client_id, key_id and private_key_file)',
      'eservices[1].private_key_file: required with client_id (an e-service client needs client_id, key_id and private_key_file)',
    ]);
  });

  it('without a preset: token URL, audience, hub URL and crypto-info URLs are required', () => {
    const dir = configDir(tempDir());
    const text = productionToml().replace('preset = "production"\n', '').replace('crypto_info_url = "https://producer.example.it/pseudonymization"\n', '');
    expect(problemLines(problemsOf(dir, text))).toEqual([
      'pdnd.token_url: required (or set preset)',
      'pdnd.assertion_audience: required (or set preset)',
      'eservices[0].crypto_info_url: required (defaults only with preset = "simulator")',
      'hub.base_url: required (or set preset)',
    ]);
  });

  it('simulator_url without the simulator preset', () => {
    const dir = configDir(tempDir());
    expect(problemLines(problemsOf(dir, productionToml().replace('preset =', 'simulator_url = "http://127.0.0.1:1"\npreset =')))).toEqual([
      'simulator_url: only used with preset = "simulator"',
    ]);
  });

  it('key files: missing, a directory, not a key, an encrypted key, a non-RSA key, a secret file that is missing', () => {
    const dir = configDir(tempDir());
    const secretContent = 'NOT-A-KEY-but-very-secret-4f9a1c';
    fs.writeFileSync(path.join(dir, 'eservice.pem'), `-----BEGIN PRIVATE KEY-----\n${secretContent}\n-----END PRIVATE KEY-----\n`, { mode: 0o600 });
    fs.mkdirSync(path.join(dir, 'dir.pem'));
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    fs.writeFileSync(path.join(dir, 'ec.pem'), ec, { mode: 0o600 });
    const encrypted = testKey().privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pw' });
    fs.writeFileSync(path.join(dir, 'enc.pem'), encrypted, { mode: 0o600 });
    const own = (file: string) => `client_id = "${ES_CLIENT}"\nkey_id = "k"\nprivate_key_file = "${file}"`;
    const text = productionToml('[[sinks]]\nname = "w"\ntype = "webhook"\nurl = "https://crm.example.it/"\nsecret_file = "no-such-secret"\n')
      .replace('private_key_file = "m2m.pem"', 'private_key_file = "absent.pem"')
      .replace('name = "residences"', `name = "residences"\n${own('dir.pem')}`)
      .replace('name = "documents"', `name = "documents"\n${own('ec.pem')}`)
      + `\n[[eservices]]\nid = "88888888-8888-4888-8888-888888888888"\nname = "enc"\npurpose_id = "${PURPOSE1}"\ncrypto_info_url = "https://p.example.it/"\n${own('enc.pem')}\n`
      + `\n[[eservices]]\nid = "99999999-9999-4999-8999-999999999999"\nname = "shared"\npurpose_id = "${PURPOSE1}"\ncrypto_info_url = "https://p.example.it/"\n`;
    let error: unknown;
    try {
      parseIn(dir, text);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const lines = problemLines((error as ConfigError).problems);
    expect(lines).toEqual([
      `pdnd.m2m.private_key_file: file not found: ${path.join(dir, 'absent.pem')}`,
      'pdnd.eservice_client.private_key_file: not an unencrypted PEM private key (PKCS#8 "BEGIN PRIVATE KEY" or PKCS#1 "BEGIN RSA PRIVATE KEY")',
      `eservices[0].private_key_file: is a directory, not a file: ${path.join(dir, 'dir.pem')}`,
      'eservices[1].private_key_file: is a ec key: PDND client assertions are RS256 and need an RSA key',
      'eservices[2].private_key_file: not an unencrypted PEM private key (PKCS#8 "BEGIN PRIVATE KEY" or PKCS#1 "BEGIN RSA PRIVATE KEY")',
      `sinks[0].secret_file: file not found: ${path.join(dir, 'no-such-secret')}`,
    ]);
    expect((error as Error).message).not.toContain(secretContent);
    expect((error as Error).message).not.toContain('BEGIN PRIVATE KEY-----');
  });

  it.skipIf(process.getuid?.() === 0)('an unreadable key file is reported as such', () => {
    const dir = configDir(tempDir());
    fs.chmodSync(path.join(dir, 'm2m.pem'), 0o000);
    expect(problemLines(problemsOf(dir, productionToml()))).toEqual([
      `pdnd.m2m.private_key_file: file not readable (permission denied): ${path.join(dir, 'm2m.pem')}`,
    ]);
  });

  it('a TOML syntax error names file:line:column', () => {
    const dir = configDir(tempDir());
    const text = productionToml().replace('key_id = "kid-es"', 'key_id = = "kid-es"');
    expect(problemLines(problemsOf(dir, text))).toEqual([`: ${path.join(dir, 'config.toml')}:11:10: TOML syntax error: invalid value`]);
  });

  it('collects every problem of a file in one error, with exit code 78', () => {
    const dir = configDir(tempDir());
    const text = productionToml('[hub]\npage_size = 101\n[[sinks]]\nname = "x"\n')
      .replace('preset = "production"', 'preset = "production"\nbogus = 1')
      .replace(`purpose_id = "${PURPOSE1}"`, 'purpose_id = 7')
      .replace('database = "state/shs.db"', 'database = "${UNSET_FOR_TEST}"');
    let error: unknown;
    try {
      parseIn(dir, text);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect(problemLines((error as ConfigError).problems)).toEqual([
      'bogus: unknown key',
      'database: environment variable UNSET_FOR_TEST is not set',
      'eservices[0].purpose_id: expected a string, got an integer',
      'hub.page_size: must be <= 100',
      'sinks[0].type: required (one of "webhook", "file", "stdout", "exec")',
    ]);
    expect(exitCodeFor(error)).toBe(EXIT.CONFIG);
    expect((error as Error).message).toContain('5 problems');
  });

  it('a missing file is CONFIG_NOT_FOUND (exit 78)', async () => {
    const dir = tempDir();
    const error = await loadConfig(path.join(dir, 'nope.toml')).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).code).toBe('CONFIG_NOT_FOUND');
    expect((error as AppError).message).toContain(path.join(dir, 'nope.toml'));
    expect(exitCodeFor(error)).toBe(EXIT.CONFIG);
  });
});

describe('config: shipped files', () => {
  it('the example file parses (production preset) installed as /etc/signalhub-sync/config.toml is, keys in keys/ beside it', async () => {
    const etc = tempDir();
    fs.copyFileSync(path.join(ROOT, 'config/signalhub-sync.example.toml'), path.join(etc, 'config.toml'));
    const keys = path.join(etc, 'keys');
    fs.mkdirSync(keys, { mode: 0o700 });
    writeKeyFile(keys, 'm2m.pem');
    writeKeyFile(keys, 'eservice.pem');
    fs.writeFileSync(path.join(keys, 'webhook-secret'), 'hmac\n', { mode: 0o600 });
    const config = await loadConfig(path.join(etc, 'config.toml'), { env: {} });
    expect(config.pdnd.m2m.privateKeyFile).toBe(path.join(keys, 'm2m.pem'));
    expect(config.preset).toBe('production');
    expect(config.hub.baseUrl).toBe('https://api.signalhub.interop.pagopa.it/1.0/pull');
    expect(config.eservices.map((e) => e.name)).toEqual(['residences', 'id-documents', 'company-registry']);
    expect(config.eservices[2]!).toMatchObject({ cryptoInfoUrl: null, recipe: { encoding: 'identity' } });
    expect(config.eservices[0]!.audit?.claims).toEqual({ userID: 'signalhub-sync', userLocation: 'data-center-1', LoA: 'LoA3' });
    expect(config.sinks.map((s) => s.type)).toEqual(['webhook', 'file']);
  });

  it('the example file sets every option the schema knows (so it documents them all)', () => {
    const text = fs.readFileSync(path.join(ROOT, 'config/signalhub-sync.example.toml'), 'utf8');
    const schema = configJsonSchema() as { properties: Record<string, { properties?: Record<string, unknown> }> };
    const missing: string[] = [];
    for (const [key, value] of Object.entries(schema.properties)) {
      if (!new RegExp(`^#?\\s*(\\[+)?${key}\\b`, 'm').test(text)) missing.push(key);
      for (const sub of Object.keys(value.properties ?? {})) {
        if (!new RegExp(`^#?\\s*${sub}\\s*=`, 'm').test(text) && !new RegExp(`^\\[+${key}\\.${sub}\\]`, 'm').test(text)) missing.push(`${key}.${sub}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('the demo file parses with the demo environment (simulator preset, two e-services, pretty stdout)', async () => {
    const demoDir = tempDir();
    writeKeyFile(demoDir, 'm2m.pem');
    writeKeyFile(demoDir, 'eservice.pem');
    const config = await loadConfig(path.join(ROOT, 'config/demo.toml'), {
      env: { SIGNALHUB_SYNC_DEMO_DIR: demoDir, SIGNALHUB_SYNC_SIMULATOR_URL: 'http://127.0.0.1:45678' },
    });
    expect(config.preset).toBe('simulator');
    expect(config.database).toBe(path.join(demoDir, 'signalhub-sync.db'));
    expect(config.hub.baseUrl).toBe('http://127.0.0.1:45678/1.0/pull');
    expect(config.eservices).toHaveLength(2);
    expect(new Set(config.eservices.map((e) => e.id)).size).toBe(2);
    expect(config.eservices[0]!.cryptoInfoUrl).toBe(`http://127.0.0.1:45678/producers/${config.eservices[0]!.id}/pseudonymization`);
    expect(config.eservices.every((e) => e.pollIntervalSeconds <= 5)).toBe(true);
    expect(config.sinks).toEqual([{ name: 'terminal', type: 'stdout', format: 'pretty', eservices: [] }]);
  });

  it('the demo file without its environment names the missing variables', async () => {
    const error = await loadConfig(path.join(ROOT, 'config/demo.toml'), { env: {} }).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ConfigError);
    const lines = problemLines((error as ConfigError).problems);
    expect(lines).toContain('simulator_url: environment variable SIGNALHUB_SYNC_SIMULATOR_URL is not set');
    expect(lines).toContain('pdnd.m2m.private_key_file: environment variable SIGNALHUB_SYNC_DEMO_DIR is not set');
  });
});

describe('config: summary', () => {
  it('shows clients with public-key fingerprints, e-services and sinks, never key or secret content', () => {
    const dir = configDir(tempDir());
    const hmac = 'hmac-secret-value-9c2e7d';
    fs.writeFileSync(path.join(dir, 'hmac'), hmac, { mode: 0o600 });
    const text = productionToml('[[sinks]]\nname = "hook"\ntype = "webhook"\nurl = "https://crm.example.it/hook?token=qs-secret-1b2c"\nsecret_file = "hmac"\n');
    const config = parseIn(dir, text);
    const summary = summarizeConfig(config);
    const spki = createPublicKey(testKey().privateKey).export({ type: 'spki', format: 'der' });
    const fingerprint = createHash('sha256').update(spki).digest('hex').slice(0, 16);
    expect(summary).toContain(`client id ${M2M_CLIENT}, key id kid-m2m, key fingerprint ${fingerprint}`);
    expect(summary).toContain(`client id ${ES_CLIENT}, key id kid-es, key fingerprint ${fingerprint}`);
    expect(summary).toContain(`residences ${ES1}`);
    expect(summary).toContain('recipe ${subject}${seed} as base64, audit off');
    expect(summary).toMatch(/hook: webhook https:\/\/crm\.example\.it\/\[path [0-9a-f]{8}\] \(signed with/);
    expect(summary).not.toContain('/hook');
    expect(summary).not.toContain(hmac);
    expect(summary).not.toContain('qs-secret-1b2c');
    expect(summary).not.toContain('PRIVATE KEY');
    const body = testKey().privatePem.split('\n')[5]!;
    expect(summary).not.toContain(body);
  });

  it('warns about key files readable by others when [security] allow_readable_secrets lets them through', () => {
    const dir = configDir(tempDir());
    fs.chmodSync(path.join(dir, 'm2m.pem'), 0o644);
    expect(configWarnings(parseIn(dir, productionToml('[security]\nallow_readable_secrets = true\n'))).join('\n')).toContain(
      `${path.join(dir, 'm2m.pem')}: readable by group or others (mode 0644), accepted because [security] allow_readable_secrets = true`,
    );
  });
});

describe('config: loadConfig reads the file', () => {
  it('resolves relative paths against the folder of the file it reads', async () => {
    const dir = configDir(tempDir());
    const file = writeConfig(dir, productionToml());
    const config = await loadConfig(file, { env: {} });
    expect(config.file).toBe(file);
    expect(config.database).toBe(path.join(dir, 'state/shs.db'));
    expect(config.eservices.map((e) => e.id)).toEqual([ES1, ES2]);
  });
});
