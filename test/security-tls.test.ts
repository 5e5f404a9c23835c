import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/errors.js';
import { parseConfigText } from '../src/config/load.js';
import { CryptoInfoClient } from '../src/crypto/crypto-info-client.js';
import { HubClient } from '../src/hub/client.js';
import { RateLimiter } from '../src/hub/rate-limiter.js';
import { m2mVoucherSource } from '../src/hub/vouchers.js';
import { requestToken } from '../src/pdnd/token-client.js';
import { VoucherProvider } from '../src/pdnd/vouchers.js';
import { WebhookSink } from '../src/sinks/webhook.js';
import type { Simulator } from '../src/simulator/index.js';
import type { OutboxRow } from '../src/store/outbox.js';
import { ROOT, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { configDir, productionToml } from './config-helpers.js';
import { FAST_RETRY, client, eservice, pdndConfig, registerEServiceClient, simulatorWithM2m } from './pdnd-fixtures.js';
import { fileEventIds } from './run-helpers.js';
import { failure } from './helpers/errors.js';

/**
 * TLS is always verified: every outgoing client (token, hub, crypto info, webhook) refuses a
 * certificate it cannot chain to a trusted CA, and one issued for another host name; a private
 * CA is trusted only when configured (webhook ca_file; NODE_EXTRA_CA_CERTS for the others).
 * Real HTTPS servers on loopback with the test-only certificates of test/fixtures/tls/.
 */

const TLS = path.join(ROOT, 'test/fixtures/tls');
const CA_FILE = path.join(TLS, 'ca.pem');
const tlsFixture = (name: 'localhost' | 'other-host') => ({ cert: fs.readFileSync(path.join(TLS, `${name}.pem`)), key: fs.readFileSync(path.join(TLS, `${name}.key`)) });
// The certificate of a private CA unknown to Node's bundle: this is what OpenSSL reports for it.
const UNTRUSTED = 'UNABLE_TO_VERIFY_LEAF_SIGNATURE';
const WRONG_HOST = 'ERR_TLS_CERT_ALTNAME_INVALID';
const ES = '81111111-1111-4111-8111-111111111111';
const PURPOSE = '91111111-1111-4111-8111-111111111111';

interface TlsServer {
  /** https://localhost:PORT (the name the localhost certificate is for). */
  url: string;
  /** Paths of the requests that got through the TLS handshake. */
  paths: string[];
  /** TCP connections accepted so far (one per attempt, handshake refused or not). */
  connections(): number;
  close(): Promise<void>;
}

/**
 * An HTTPS server on loopback. With `forwardTo`, a TLS-terminating proxy in front of a plain
 * http server (the simulator), so that the real clients talk TLS to a real Signal Hub and PDND.
 */
async function startTlsServer(certificate: 'localhost' | 'other-host', forwardTo?: string): Promise<TlsServer> {
  const paths: string[] = [];
  const server = https.createServer(tlsFixture(certificate), (req, res) => {
    paths.push(req.url ?? '');
    if (!forwardTo) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    const upstream = http.request(`${forwardTo}${req.url ?? '/'}`, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.writeHead(502).end());
    req.pipe(upstream);
  });
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://localhost:${port}`,
    paths,
    connections: () => connections,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}


const row = (seq: number): OutboxRow => ({ seq, eventId: `${ES}:${seq}`, eserviceId: ES, signalId: seq, kind: 'signal', payload: `{"id":"${ES}:${seq}"}`, createdAt: 0 });

let sim: Simulator;
let provider: VoucherProvider;
let closeSimulator: () => Promise<void>;
let trustedName: TlsServer;
let otherName: TlsServer;

beforeAll(async () => {
  // These tests are about the default trust: an inherited override would make them meaningless.
  expect(process.env.NODE_TLS_REJECT_UNAUTHORIZED).toBeUndefined();
  expect(process.env.NODE_EXTRA_CA_CERTS ?? '').not.toContain('fixtures/tls');
  ({ sim, provider, close: closeSimulator } = await simulatorWithM2m('m2m-tls'));
  trustedName = await startTlsServer('localhost');
  otherName = await startTlsServer('other-host');
});

afterAll(async () => {
  await trustedName.close();
  await otherName.close();
  await closeSimulator();
});

describe('TLS: every client refuses a certificate it cannot verify, naming the host and the reason', () => {
  it('the PDND token client refuses a certificate of an untrusted (private) CA: TOKEN_UNAVAILABLE with the endpoint and the OpenSSL code', async () => {
    const tokenUrl = `${trustedName.url}/token.oauth2`;
    const err = await failure(requestToken({ tokenUrl, timeoutMs: 5_000, clientId: 'c', assertion: async () => 'assertion', retry: { ...FAST_RETRY, retries: 0 } }));
    expect(err.code).toBe('TOKEN_UNAVAILABLE');
    expect(err.message).toContain(tokenUrl);
    expect(err.message).toContain(UNTRUSTED);
    expect(trustedName.paths).not.toContain('/token.oauth2');
  });

  it('the Signal Hub client refuses it: HUB_UNAVAILABLE with the host and the OpenSSL code, and no request gets through', async () => {
    const hub = new HubClient({
      baseUrl: `${trustedName.url}/1.0/pull`,
      pageSize: 10,
      requestTimeoutMs: 5_000,
      maxRetries: 0,
      maxRetryDelayMs: 20,
      maxRateLimitWaitMs: 1_000,
      vouchers: m2mVoucherSource(provider),
      rateLimiter: new RateLimiter({ initialRatePerSecond: 100 }),
    });
    try {
      const err = await failure(hub.pull(ES, 0));
      expect(err.code).toBe('HUB_UNAVAILABLE');
      expect(err.message).toContain(new URL(trustedName.url).host);
      expect(err.message).toContain(UNTRUSTED);
    } finally {
      await hub.close();
    }
    expect(trustedName.paths.filter((p) => p.startsWith('/1.0/pull'))).toEqual([]);
  });

  it('the crypto-info client refuses it: CRYPTO_UNAVAILABLE with the producer URL and the OpenSSL code', async () => {
    const dir = tempDir();
    const esClient = client(dir, 'es-tls', 'kid-es-tls');
    registerEServiceClient(sim, esClient, [PURPOSE]);
    sim.addEService({ id: ES });
    const vouchers = new VoucherProvider({ pdnd: pdndConfig(sim, client(dir, 'm2m-tls-2')), retry: FAST_RETRY });
    const crypto = new CryptoInfoClient({ vouchers, timeoutMs: 5_000, retry: { ...FAST_RETRY, retries: 0 } });
    const cryptoInfoUrl = `${trustedName.url}/producers/${ES}/pseudonymization`;
    const err = await failure(crypto.fetch({ ...eservice(sim, ES, esClient, PURPOSE), cryptoInfoUrl }));
    expect(err.code).toBe('CRYPTO_UNAVAILABLE');
    expect(err.message).toContain(new URL(trustedName.url).host);
    expect(err.message).toContain(UNTRUSTED);
    expect(trustedName.paths.filter((p) => p.includes('pseudonymization'))).toEqual([]);
  });

  it('a refused certificate is not retried: the token, hub and crypto-info clients, with retries configured, try once and say how to trust a private CA', async () => {
    const tokenUrl = `${trustedName.url}/token.oauth2`;
    let before = trustedName.connections();
    const token = await failure(requestToken({ tokenUrl, timeoutMs: 5_000, clientId: 'c', assertion: async () => 'assertion', retry: { ...FAST_RETRY, retries: 3 } }));
    expect(token.message).toContain('NODE_EXTRA_CA_CERTS');
    expect(trustedName.connections() - before).toBe(1);

    const hub = new HubClient({
      baseUrl: `${trustedName.url}/1.0/pull`,
      pageSize: 10,
      requestTimeoutMs: 5_000,
      maxRetries: 3,
      maxRetryDelayMs: 20,
      maxRateLimitWaitMs: 1_000,
      vouchers: m2mVoucherSource(provider),
      rateLimiter: new RateLimiter({ initialRatePerSecond: 100 }),
    });
    before = trustedName.connections();
    try {
      const pulled = await failure(hub.pull(ES, 0));
      expect(pulled.code).toBe('HUB_UNAVAILABLE');
      expect(pulled.message).toContain('NODE_EXTRA_CA_CERTS');
    } finally {
      await hub.close();
    }
    expect(trustedName.connections() - before).toBe(1);

    const dir = tempDir();
    const esClient = client(dir, 'es-tls-once', 'kid-es-tls-once');
    registerEServiceClient(sim, esClient, [PURPOSE]);
    sim.addEService({ id: ES });
    const vouchers = new VoucherProvider({ pdnd: pdndConfig(sim, client(dir, 'm2m-tls-once')), retry: FAST_RETRY });
    const crypto = new CryptoInfoClient({ vouchers, timeoutMs: 5_000, retry: { ...FAST_RETRY, retries: 3 } });
    before = trustedName.connections();
    const fetched = await failure(crypto.fetch({ ...eservice(sim, ES, esClient, PURPOSE), cryptoInfoUrl: `${trustedName.url}/producers/${ES}/pseudonymization` }));
    expect(fetched.code).toBe('CRYPTO_UNAVAILABLE');
    expect(fetched.message).toContain('NODE_EXTRA_CA_CERTS');
    expect(trustedName.connections() - before).toBe(1);
  });

  it('the webhook sink refuses it without ca_file (SINK_FAILED with the host and the OpenSSL code) and delivers with ca_file naming the private CA', async () => {
    const config = { type: 'webhook' as const, name: 'crm', eservices: [], url: `${trustedName.url}/hook`, secretFile: undefined, caFile: undefined, batchSize: 1, timeoutMs: 5_000, maxRetries: 0 };
    const untrusting = new WebhookSink({ config, retryMinDelayMs: 5, retryMaxDelayMs: 10 });
    try {
      const err = await failure(untrusting.deliver([row(1)], new AbortController().signal));
      expect(err.code).toBe('SINK_FAILED');
      // The URL by scheme and host; its path only as a fingerprint (a path may hold a token).
      expect(err.message).toMatch(new RegExp(`${trustedName.url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/\\[path [0-9a-f]{8}\\]`));
      expect(err.message).toContain(UNTRUSTED);
    } finally {
      await untrusting.close();
    }
    expect(trustedName.paths).not.toContain('/hook');

    const trusting = new WebhookSink({ config: { ...config, caFile: CA_FILE } });
    try {
      await trusting.deliver([row(2)], new AbortController().signal);
    } finally {
      await trusting.close();
    }
    expect(trustedName.paths.filter((p) => p === '/hook')).toHaveLength(1);
  });

  it('the webhook sink refuses a certificate of the trusted CA issued for another host name', async () => {
    const config = { type: 'webhook' as const, name: 'crm', eservices: [], url: `${otherName.url}/hook`, secretFile: undefined, caFile: CA_FILE, batchSize: 1, timeoutMs: 5_000, maxRetries: 0 };
    const sink = new WebhookSink({ config, retryMinDelayMs: 5, retryMaxDelayMs: 10 });
    try {
      const err = await failure(sink.deliver([row(3)], new AbortController().signal));
      expect(err.code).toBe('SINK_FAILED');
      expect(err.message).toContain(WRONG_HOST);
    } finally {
      await sink.close();
    }
    expect(otherName.paths).toEqual([]);
  });
});

describe('TLS: a private CA for PDND, Signal Hub and producers is trusted through NODE_EXTRA_CA_CERTS only', () => {
  let world: World | undefined;
  let proxy: TlsServer | undefined;
  afterEach(async () => {
    await proxy?.close();
    await world?.close();
    proxy = undefined;
    world = undefined;
  });

  /** A world whose simulator is reached only through an HTTPS proxy with `certificate`, and a file sink. */
  async function worldBehindTls(certificate: 'localhost' | 'other-host'): Promise<{ world: World; proxy: TlsServer }> {
    const w = await createWorld({ eservices: [{ id: ES, name: 'residenze' }], toml: '[[sinks]]\nname = "archive"\ntype = "file"\npath = "events.ndjson"\n' });
    const p = await startTlsServer(certificate, w.sim.url);
    fs.writeFileSync(w.configFile, fs.readFileSync(w.configFile, 'utf8').replace(`simulator_url = "${w.sim.url}"`, `simulator_url = "${p.url}"`));
    const subject = fiscalCode(81);
    fs.writeFileSync(path.join(w.dir, 'subjects.csv'), `key,ref\n${subject},pratica-81\n`, { mode: 0o600 });
    const imported = await runCli(['--config', w.configFile, 'subjects', 'import', path.join(w.dir, 'subjects.csv')]);
    expect(imported.code, imported.stderr).toBe(0);
    w.sim.depositForSubject(ES, subject, 'UPDATE', 'domicile');
    return { world: w, proxy: p };
  }

  it('sync --once without NODE_EXTRA_CA_CERTS stops at the token endpoint (exit 69) naming it and the OpenSSL code; nothing is synced', async () => {
    ({ world, proxy } = await worldBehindTls('localhost'));
    const result = await runCli(['--config', world.configFile, 'sync', '--once'], { env: { NODE_EXTRA_CA_CERTS: '' } });
    expect(result.code, result.stderr).toBe(69);
    expect(result.stderr).toContain(`${proxy.url}/token.oauth2`);
    expect(result.stderr).toContain(UNTRUSTED);
    expect(proxy.paths).toEqual([]);
    expect(fs.existsSync(path.join(world.dir, 'events.ndjson'))).toBe(false);
  });

  it('sync --once with NODE_EXTRA_CA_CERTS naming the private CA talks TLS to the token endpoint, the hub and the producer, and delivers the event', async () => {
    ({ world, proxy } = await worldBehindTls('localhost'));
    const result = await runCli(['--config', world.configFile, 'sync', '--once'], { env: { NODE_EXTRA_CA_CERTS: CA_FILE } });
    expect(result.code, result.stderr).toBe(0);
    expect(proxy.paths.some((p) => p === '/token.oauth2')).toBe(true);
    expect(proxy.paths.some((p) => p.startsWith(`/1.0/pull/signals/${ES}`))).toBe(true);
    expect(proxy.paths.some((p) => p.startsWith(`/producers/${ES}/pseudonymization`))).toBe(true);
    expect(fileEventIds(path.join(world.dir, 'events.ndjson'))).toHaveLength(1);
  });

  it('sync --once with the private CA trusted still refuses a certificate issued for another host name (exit 69)', async () => {
    ({ world, proxy } = await worldBehindTls('other-host'));
    const result = await runCli(['--config', world.configFile, 'sync', '--once'], { env: { NODE_EXTRA_CA_CERTS: CA_FILE } });
    expect(result.code, result.stderr).toBe(69);
    expect(result.stderr).toContain(`${proxy.url}/token.oauth2`);
    expect(result.stderr).toContain(WRONG_HOST);
    expect(proxy.paths).toEqual([]);
  });
});

describe('TLS: verification cannot be switched off', () => {
  it('NODE_TLS_REJECT_UNAUTHORIZED=0 in the environment refuses the configuration (exit 78), naming the variable and the way to trust a private CA', async () => {
    const dir = configDir(tempDir());
    let error: unknown;
    try {
      parseConfigText(productionToml(), { file: path.join(dir, 'config.toml'), env: { NODE_TLS_REJECT_UNAUTHORIZED: '0' } });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([{ path: '', message: expect.stringContaining('NODE_TLS_REJECT_UNAUTHORIZED=0') }]);
    expect((error as ConfigError).message).toContain('NODE_EXTRA_CA_CERTS');

    const file = path.join(dir, 'config.toml');
    fs.writeFileSync(file, productionToml());
    const result = await runCli(['--config', file, 'sync', '--once'], { env: { NODE_TLS_REJECT_UNAUTHORIZED: '0' } });
    expect(result.code).toBe(78);
    expect(result.stderr).toContain('NODE_TLS_REJECT_UNAUTHORIZED=0');
    expect(fs.existsSync(path.join(dir, 'state'))).toBe(false);
  });

  it('no source file switches certificate or host name verification off', () => {
    const offenders: string[] = [];
    const walk = (dir: string): void => {
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const file = path.join(dir, entry.name);
        if (entry.isDirectory()) walk(file);
        else if (/rejectUnauthorized\s*:\s*false|checkServerIdentity|process\.env\.NODE_TLS_REJECT_UNAUTHORIZED\s*=[^=]/.test(fs.readFileSync(file, 'utf8'))) offenders.push(path.relative(ROOT, file));
      }
    };
    walk(path.join(ROOT, 'src'));
    expect(offenders).toEqual([]);
  });
});
