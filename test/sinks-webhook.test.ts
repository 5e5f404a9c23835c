import { createHmac } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { WebhookSinkConfig } from '../src/config/types.js';
import { Metrics } from '../src/metrics.js';
import { DeliveryService } from '../src/sinks/delivery.js';
import { parseRetryAfter } from '../src/retry-after.js';
import { OutboxStore } from '../src/store/outbox.js';
import { SinkPositionStore } from '../src/store/sink-positions.js';
import { retrySink } from '../src/cli/sinks.js';
import { tempDir } from './helpers/fs.js';
import { ES_A, ES_B, SUBJECT_KEY, appendInterleaved, appendSignals, captureLogger, openTestDb, seededRandom, startReceiver, waitUntil, type Received, type Reply } from './delivery-fixtures.js';

const SECRET = 'webhook-s3cret-value';
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function writeSecret(dir: string): string {
  const file = path.join(dir, 'hook.secret');
  // The trailing newline an editor adds is not part of the secret.
  fs.writeFileSync(file, `${SECRET}\n`, { mode: 0o600 });
  return file;
}

function hook(url: string, extra: Partial<WebhookSinkConfig> = {}): WebhookSinkConfig {
  return { type: 'webhook', name: 'hook', eservices: [], url, secretFile: undefined, caFile: undefined, batchSize: 1, timeoutMs: 5_000, maxRetries: 2, ...extra };
}

const fast = { pollIntervalMs: 50, retryBaseMs: 10, retryMaxMs: 50, sinkOptions: { webhookRetryMinDelayMs: 5, webhookRetryMaxDelayMs: 20 } };

async function receiver(reply: (req: Received, index: number) => Reply) {
  const r = await startReceiver(reply);
  cleanups.push(r.close);
  return r;
}

function bodyIds(req: Received): string[] {
  const parsed = JSON.parse(req.body) as { id: string } | { id: string }[];
  return (Array.isArray(parsed) ? parsed : [parsed]).map((e) => e.id);
}

/** What every request must carry, whatever the answer was. */
function expectWellFormed(req: Received, secret: string | undefined): void {
  const ids = bodyIds(req);
  expect(req.headers['content-type']).toBe('application/json');
  expect(req.headers['idempotency-key']).toBe(ids.length === 1 ? ids[0] : `${ids[0]}..${ids[ids.length - 1]}`);
  expect(req.headers['x-event-ids']).toBe(ids.join(','));
  if (secret !== undefined) {
    expect(req.headers['x-signature']).toBe(`sha256=${createHmac('sha256', secret).update(Buffer.from(req.body, 'utf8')).digest('hex')}`);
  } else {
    expect(req.headers['x-signature']).toBeUndefined();
  }
}

describe('webhook sink', () => {
  it('delivers every event at least once, in order per e-service, signed, through random failures (seeded)', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    const expected = appendInterleaved(db, 25);
    const storedPayloads = new Map(new OutboxStore(db).all().map((r) => [r.eventId, r.payload]));
    const random = seededRandom(20240501);
    const flaky = (): Reply => {
      const x = random();
      if (x < 0.08) return { status: 500 };
      if (x < 0.14) return { status: 503, headers: { 'retry-after': '0' } };
      if (x < 0.2) return { status: 429, headers: { 'retry-after': '0.01' } };
      if (x < 0.24) return { status: 408 };
      if (x < 0.3) return 'drop';
      return { status: x < 0.65 ? 200 : 204 };
    };
    const single = await receiver(flaky);
    const batched = await receiver(flaky);
    const secretFile = writeSecret(dir);
    const metrics = new Metrics();
    const logs = captureLogger();
    const service = new DeliveryService({
      db,
      batchSize: 100,
      metrics,
      logger: logs.logger,
      sinks: [hook(single.url, { name: 'single', secretFile }), hook(batched.url, { name: 'batched', secretFile, batchSize: 4 })],
      ...fast,
    });
    service.start();
    await waitUntil(() => service.pending('single') === 0 && service.pending('batched') === 0, 'both sinks to catch up');
    await service.stop(1000);

    for (const r of [single, batched]) {
      for (const req of r.requests) expectWellFormed(req, SECRET);
      // Each request starts at the first event not yet acknowledged: a failed batch is offered
      // again from the same event, an acknowledged one is followed by the next events; so
      // nothing is skipped and each e-service's events go out in signalId order.
      let next = 0;
      for (const q of r.requests) {
        const ids = bodyIds(q);
        expect(ids).toEqual(expected.slice(next, next + ids.length));
        if (q.status >= 200 && q.status < 300) next += ids.length;
      }
      expect(next).toBe(expected.length);
      for (const es of [ES_A, ES_B]) {
        const order = expected.filter((id) => id.startsWith(es)).map((id) => Number(id.split(':')[1]));
        expect(order).toEqual([...order].sort((a, b) => a - b));
      }
      expect(r.requests.some((q) => q.status === 0 || q.status >= 400)).toBe(true);
    }
    // Bodies are the stored payloads, byte for byte.
    for (const req of single.requests) expect(req.body).toBe(storedPayloads.get(bodyIds(req)[0]!));
    expect(batched.requests.every((q) => Array.isArray(JSON.parse(q.body)))).toBe(true);

    const status = service.status();
    expect(status.map((s) => [s.name, s.state, s.pending, s.delivered])).toEqual([
      ['single', 'active', 0, 50],
      ['batched', 'active', 0, 50],
    ]);
    const delivered = await metrics.eventsDelivered.get();
    expect(delivered.values.map((v) => v.value)).toEqual([50, 50]);
    expect((await metrics.sinkFailures.get()).values.length).toBeGreaterThan(0);
    // Neither the signing secret nor the subject keys in the payloads reach the logs.
    expect(logs.text()).toContain('webhook attempt failed');
    expect(logs.text()).not.toContain(SECRET);
    expect(logs.text()).not.toContain(SUBJECT_KEY);
    db.close();
  });

  it('a slow receiver times out and the same request is retried', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1]);
    const r = await receiver((_req, i) => (i === 0 ? { status: 200, delayMs: 3_000 } : { status: 200 }));
    const service = new DeliveryService({ db, batchSize: 10, sinks: [hook(r.url, { timeoutMs: 300 })], ...fast });
    const result = await service.drain();
    await service.stop(0);
    expect(result.complete).toBe(true);
    expect(r.requests.length).toBeGreaterThanOrEqual(2);
    expect(r.requests[0]!.status).toBe(0); // the client gave up before the answer
    expect(r.requests[1]!.body).toBe(r.requests[0]!.body);
    expect(r.requests[1]!.headers['idempotency-key']).toBe(`${ES_A}:1`);
    expect(new SinkPositionStore(db).get('hook').position).toBe(1);
    db.close();
  });

  it('honours Retry-After of a 429 (seconds)', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1]);
    const r = await receiver((_req, i) => (i === 0 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 }));
    const service = new DeliveryService({ db, batchSize: 10, sinks: [hook(r.url)], ...fast });
    expect((await service.drain()).complete).toBe(true);
    await service.stop(0);
    expect(r.requests).toHaveLength(2);
    // A lower bound only: the client waited at least what the server asked.
    expect(r.requests[1]!.at - r.requests[0]!.at).toBeGreaterThanOrEqual(950);
    db.close();
  });

  it('parses Retry-After as (fractional) seconds or an HTTP date', () => {
    const now = Date.parse('2024-05-01T10:00:00Z');
    expect(parseRetryAfter('2', now)).toBe(2000);
    expect(parseRetryAfter('0.412', now)).toBe(412);
    expect(parseRetryAfter('Wed, 01 May 2024 10:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Wed, 01 May 2024 09:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });

  it('a 410 stops the sink: no delivery past it, position kept, state persisted; retry resumes', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1, 2, 3, 4, 5]);
    let gone = true;
    const r = await receiver((req) => (gone && bodyIds(req)[0] === `${ES_A}:3` ? { status: 410 } : { status: 200 }));
    const metrics = new Metrics();
    const logs = captureLogger();
    // A token in the query must not reach error messages or logs.
    const config = hook(`${r.url}?token=t0k3n-in-query`, { secretFile: writeSecret(dir) });
    const service = new DeliveryService({ db, batchSize: 10, sinks: [config], metrics, logger: logs.logger, ...fast });
    service.start();
    await waitUntil(() => service.status()[0]!.state === 'stopped', 'the sink to stop');
    // Give a spinning loop the chance to misbehave; a stopped one sends nothing more.
    await new Promise((res) => setTimeout(res, 300));
    expect(r.requests.flatMap(bodyIds)).toEqual([`${ES_A}:1`, `${ES_A}:2`, `${ES_A}:3`]);
    const status = service.status()[0]!;
    expect(status).toMatchObject({ state: 'stopped', position: 2, pending: 3 });
    expect(status.lastError).toContain('HTTP 410');
    expect((await metrics.sinkStopped.get()).values[0]!.value).toBe(1);
    expect(logs.text()).toContain('sink STOPPED');
    expect(logs.text()).not.toContain(SECRET);
    expect(logs.text()).not.toContain('t0k3n-in-query');
    expect(status.lastError).not.toContain('t0k3n-in-query');
    await service.stop(1000);

    // The stopped state survives a restart: a new service sends nothing.
    const again = new DeliveryService({ db, batchSize: 10, sinks: [config], ...fast });
    const drained = await again.drain();
    expect(drained.sinks[0]).toMatchObject({ state: 'stopped', delivered: 0, pending: 3 });
    expect(drained.complete).toBe(false);
    await again.stop(0);
    expect(r.requests).toHaveLength(3);

    // The receiver is fixed; a running daemon is told to retry (SIGHUP → retry()).
    gone = false;
    const daemon = new DeliveryService({ db, batchSize: 10, sinks: [config], metrics, ...fast });
    daemon.start();
    expect(daemon.retry('hook')).toEqual(['hook']);
    await waitUntil(() => daemon.pending('hook') === 0, 'delivery after retry');
    await daemon.stop(1000);
    expect(r.requests.flatMap(bodyIds)).toEqual([1, 2, 3, 3, 4, 5].map((n) => `${ES_A}:${n}`));
    expect(daemon.status()[0]).toMatchObject({ state: 'active', position: 5, lastError: null });
    expect((await metrics.sinkStopped.get()).values[0]!.value).toBe(0);
    db.close();
  });

  it('"sinks retry" resumes a stopped sink when no daemon runs, and is refused while one holds the database', async () => {
    const dir = tempDir();
    const dbFile = path.join(dir, 'state.db');
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1, 2]);
    let status = 401;
    const r = await receiver(() => ({ status }));
    const config = hook(r.url);
    const first = new DeliveryService({ db, batchSize: 10, sinks: [config], ...fast });
    expect((await first.drain()).sinks[0]!.state).toBe('stopped');
    await first.stop(0);

    const { WriterLock } = await import('../src/store/lock.js');
    const lock = WriterLock.acquire(dbFile, 'run');
    try {
      expect(() => retrySink({ database: dbFile, sinks: [config] }, 'hook')).toThrow(/SIGHUP/);
    } finally {
      lock.release();
    }
    expect(() => retrySink({ database: dbFile, sinks: [config] }, 'nope')).toThrow(/no sink named "nope"/);
    expect(retrySink({ database: dbFile, sinks: [config] }, 'hook')).toEqual({ resumed: true, position: 0, pending: 2 });
    expect(retrySink({ database: dbFile, sinks: [config] }, 'hook').resumed).toBe(false);

    status = 200;
    const second = new DeliveryService({ db, batchSize: 10, sinks: [config], ...fast });
    expect((await second.drain()).complete).toBe(true);
    await second.stop(0);
    expect(r.requests.flatMap(bodyIds)).toEqual([`${ES_A}:1`, `${ES_A}:1`, `${ES_A}:2`]);
    db.close();
  });

  it('batches are JSON arrays keyed first..last; a batch of one keeps the array shape', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    const ids = appendSignals(db, ES_A, [3, 5, 8, 13, 21, 34, 55]);
    const r = await receiver(() => ({ status: 200 }));
    const service = new DeliveryService({ db, batchSize: 100, sinks: [hook(r.url, { batchSize: 3 })], ...fast });
    expect((await service.drain()).complete).toBe(true);
    await service.stop(0);
    expect(r.requests.map(bodyIds)).toEqual([ids.slice(0, 3), ids.slice(3, 6), ids.slice(6)]);
    expect(r.requests.map((q) => q.headers['idempotency-key'])).toEqual([`${ids[0]}..${ids[2]}`, `${ids[3]}..${ids[5]}`, ids[6]]);
    expect(r.requests.map((q) => q.headers['x-event-count'])).toEqual(['3', '3', '1']);
    for (const q of r.requests) {
      expect(Array.isArray(JSON.parse(q.body))).toBe(true);
      expectWellFormed(q, undefined);
    }
    db.close();
  });

  it('verifies TLS always; a CA file makes a private CA trusted', async () => {
    const dir = tempDir();
    const key = path.join(dir, 'server.key');
    const cert = path.join(dir, 'server.crt');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const bodies: string[] = [];
    const server = https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, (req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        bodies.push(body);
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }));
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/events`;
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1]);

    const untrusted = new DeliveryService({ db, batchSize: 10, sinks: [hook(url, { maxRetries: 0 })], ...fast, drainAttempts: 1 });
    const refused = await untrusted.drain();
    await untrusted.stop(0);
    expect(refused.sinks[0]).toMatchObject({ state: 'active', delivered: 0, pending: 1 });
    expect(refused.sinks[0]!.error).toMatch(/cert|CERT/);
    expect(bodies).toHaveLength(0);

    const trusted = new DeliveryService({ db, batchSize: 10, sinks: [hook(url, { caFile: cert })], ...fast });
    expect((await trusted.drain()).complete).toBe(true);
    await trusted.stop(0);
    expect(bodies).toHaveLength(1);
    db.close();
  });

  it('a missing secret file fails at construction, naming the sink and the file', () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    const missing = path.join(dir, 'nope.secret');
    expect(() => new DeliveryService({ db, batchSize: 10, sinks: [hook('http://127.0.0.1:9/x', { secretFile: missing })] })).toThrow(`sink "hook": secret_file ${missing} cannot be read: ENOENT`);
    db.close();
  });
});
