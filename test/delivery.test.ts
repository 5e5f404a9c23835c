import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { FileSinkConfig, SinkConfig, WebhookSinkConfig } from '../src/config/types.js';
import { Metrics } from '../src/metrics.js';
import { DeliveryService } from '../src/sinks/delivery.js';
import { ALL_ESERVICES, backpressuredEServices, backpressureFor, pruneDelivered, sinkStatus } from '../src/sinks/status.js';
import { OutboxStore } from '../src/store/outbox.js';
import { SinkPositionStore } from '../src/store/sink-positions.js';
import { listSinks, formatSinkTable } from '../src/cli/sinks.js';
import { tempDir } from './helpers/fs.js';
import { ES_A, ES_B, appendInterleaved, appendSignals, openTestDb, startReceiver, waitUntil, type Received, type Reply } from './delivery-fixtures.js';

const fast = { pollIntervalMs: 50, retryBaseMs: 10, retryMaxMs: 50, sinkOptions: { webhookRetryMinDelayMs: 5, webhookRetryMaxDelayMs: 20 } };
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function receiver(reply: (req: Received, index: number) => Reply) {
  const r = await startReceiver(reply);
  cleanups.push(r.close);
  return r;
}
const hook = (url: string, extra: Partial<WebhookSinkConfig> = {}): WebhookSinkConfig => ({
  type: 'webhook', name: 'hook', eservices: [], url, secretFile: undefined, caFile: undefined, batchSize: 1, timeoutMs: 10_000, maxRetries: 1, ...extra,
});
const fileSink = (p: string, extra: Partial<FileSinkConfig> = {}): FileSinkConfig => ({ type: 'file', name: 'file', eservices: [], path: p, ...extra });
const lineIds = (p: string): string[] => fs.readFileSync(p, 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { id: string }).id);
const bodyId = (q: Received): string => (JSON.parse(q.body) as { id: string }).id;

describe('delivery service', () => {
  it('sinks keep independent positions: a failing sink holds back only itself', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    const ids = appendInterleaved(db, 5);
    const down = await receiver(() => ({ status: 503 }));
    const out = path.join(dir, 'events.ndjson');
    const metrics = new Metrics();
    const service = new DeliveryService({ db, batchSize: 3, metrics, sinks: [hook(down.url), fileSink(out)], ...fast });
    service.start();
    await waitUntil(() => service.pending('file') === 0 && down.requests.length >= 4, 'the file sink to finish while the webhook keeps failing');
    await service.stop(1000);
    expect(lineIds(out)).toEqual(ids);
    const [web, file] = service.status();
    expect(web).toMatchObject({ name: 'hook', state: 'active', position: 0, pending: 10, delivered: 0 });
    expect(web!.lastError).toContain('HTTP 503');
    expect(file).toMatchObject({ name: 'file', state: 'active', position: 10, pending: 0, delivered: 10, lastError: null });
    expect(down.requests.every((q) => bodyId(q) === ids[0])).toBe(true);
    const pending = await metrics.sinkPending.get();
    expect(Object.fromEntries(pending.values.map((v) => [v.labels.sink, v.value]))).toEqual({ hook: 10, file: 0 });
    db.close();
  });

  it('a sink with an e-service filter gets only those events and is caught up past the others', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendInterleaved(db, 3);
    appendSignals(db, ES_B, [100, 101]);
    const out = path.join(dir, 'a.ndjson');
    const service = new DeliveryService({ db, batchSize: 2, sinks: [fileSink(out, { eservices: [ES_A] })], ...fast });
    expect((await service.drain()).complete).toBe(true);
    await service.stop(0);
    expect(lineIds(out)).toEqual([10, 20, 30].map((n) => `${ES_A}:${n}`));
    // Its position reaches the end of the outbox, so pruning is not held back by B's events.
    expect(service.status()[0]).toMatchObject({ position: 8, pending: 0, delivered: 3 });
    db.close();
  });

  it('resumes after a restart from the stored position, without re-delivering', async () => {
    const dir = tempDir();
    const out = path.join(dir, 'events.ndjson');
    let db = openTestDb(dir);
    const first = appendSignals(db, ES_A, [1, 2, 3]);
    let service = new DeliveryService({ db, batchSize: 10, sinks: [fileSink(out)], ...fast });
    service.start();
    await waitUntil(() => service.pending('file') === 0, 'the first run');
    await service.stop(1000);
    db.close();

    db = openTestDb(dir);
    const second = appendSignals(db, ES_A, [4, 5]);
    service = new DeliveryService({ db, batchSize: 10, sinks: [fileSink(out)], ...fast });
    const result = await service.drain();
    await service.stop(0);
    expect(result.sinks[0]).toMatchObject({ delivered: 2, pending: 0 });
    expect(lineIds(out)).toEqual([...first, ...second]);
    db.close();
  });

  it('stop() abandons an unanswered batch without advancing; the next run delivers it again', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    const ids = appendSignals(db, ES_A, [1, 2]);
    let hang = true;
    const r = await receiver(() => (hang ? 'hang' : { status: 200 }));
    const service = new DeliveryService({ db, batchSize: 10, sinks: [hook(r.url)], ...fast });
    service.start();
    await waitUntil(() => r.requests.length === 1, 'the first request');
    await service.stop(200);
    expect(new SinkPositionStore(db).get('hook').position).toBe(0);

    hang = false;
    const next = new DeliveryService({ db, batchSize: 10, sinks: [hook(r.url)], ...fast });
    expect((await next.drain()).complete).toBe(true);
    await next.stop(0);
    expect(r.requests.map(bodyId)).toEqual([ids[0], ids[0], ids[1]]);
    db.close();
  });

  it('stop() lets a batch that finishes within the grace time count as delivered', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1]);
    const r = await receiver(() => ({ status: 200, delayMs: 300 }));
    const service = new DeliveryService({ db, batchSize: 10, sinks: [hook(r.url)], ...fast });
    service.start();
    await waitUntil(() => r.requests.length === 1, 'the request');
    await service.stop(10_000);
    expect(new SinkPositionStore(db).get('hook').position).toBe(1);
    db.close();
  });

  it('drain() reports a sink that keeps failing instead of waiting for it', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1, 2]);
    const r = await receiver(() => ({ status: 500 }));
    const out = path.join(dir, 'events.ndjson');
    const service = new DeliveryService({ db, batchSize: 10, sinks: [hook(r.url, { maxRetries: 1 }), fileSink(out)], drainAttempts: 3, ...fast });
    const result = await service.drain();
    await service.stop(0);
    expect(result.complete).toBe(false);
    expect(result.sinks).toEqual([
      { name: 'hook', delivered: 0, pending: 2, state: 'active', error: expect.stringContaining('HTTP 500') },
      { name: 'file', delivered: 2, pending: 0, state: 'active', error: null },
    ]);
    // One delivery attempt of max_retries + 1 requests: the webhook's own retry budget.
    expect(r.requests).toHaveLength(2);
    db.close();
  });

  it('two sinks may not share a name (the name keys the position)', () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    expect(() => new DeliveryService({ db, batchSize: 10, sinks: [fileSink('/tmp/a'), fileSink('/tmp/b')] })).toThrow(/"file" is used twice/);
    db.close();
  });

  it('SIGKILL between sending and storing the position re-delivers (duplicates) but never loses', async () => {
    const dir = tempDir();
    const dbFile = path.join(dir, 'state.db');
    const db = openTestDb(dir);
    const ids = appendSignals(db, ES_A, [1, 2, 3, 4, 5, 6]);
    db.close();
    const script = path.join(import.meta.dirname, 'delivery-crash-child.mjs');
    let child: ChildProcess | undefined;
    const children: ChildProcess[] = [];
    cleanups.push(() => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL')));
    // Request 3 is killed before the answer; request 5 right after a 200 went out.
    const r = await receiver((req, i) => {
      if (i === 2) {
        child?.kill('SIGKILL');
        return 'hang';
      }
      return { status: 200 };
    });
    const spawnChild = (mode: string): ChildProcess => {
      const c = spawn(process.execPath, [script, mode, dbFile, r.url], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(c);
      return c;
    };
    child = spawnChild('run');
    const exit = await new Promise<NodeJS.Signals | null>((resolve) => child!.on('exit', (_code, signal) => resolve(signal)));
    expect(exit).toBe('SIGKILL');
    expect(r.requests.map(bodyId)).toEqual(ids.slice(0, 3));

    const after = openTestDb(dir);
    expect(new SinkPositionStore(after).get('hook').position).toBe(2);
    after.close();

    const drainer = spawnChild('drain');
    let out = '';
    drainer.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    const code = await new Promise<number | null>((resolve) => drainer.on('exit', (c) => resolve(c)));
    expect(code).toBe(0);
    expect(JSON.parse(out)).toMatchObject({ complete: true, sinks: [{ name: 'hook', delivered: 4, pending: 0 }] });
    const received = r.requests.map(bodyId);
    expect(received).toEqual([...ids.slice(0, 3), ...ids.slice(2)]);
    expect(new Set(received)).toEqual(new Set(ids));
  });

  it('SIGKILL right after the receiver answered 200: whatever the child stored, nothing is lost', async () => {
    const dir = tempDir();
    const dbFile = path.join(dir, 'state.db');
    const db = openTestDb(dir);
    const ids = appendSignals(db, ES_A, [1, 2, 3, 4]);
    db.close();
    const script = path.join(import.meta.dirname, 'delivery-crash-child.mjs');
    let child: ChildProcess | undefined;
    const children: ChildProcess[] = [];
    cleanups.push(() => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL')));
    let killed = false;
    const r = await receiver((req, i) => {
      if (i === 1 && !killed) {
        killed = true;
        setImmediate(() => child?.kill('SIGKILL'));
      }
      return { status: 200 };
    });
    const spawnChild = (mode: string): ChildProcess => {
      const c = spawn(process.execPath, [script, mode, dbFile, r.url], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(c);
      return c;
    };
    child = spawnChild('run');
    await new Promise((resolve) => child!.on('exit', resolve));
    const drainer = spawnChild('drain');
    expect(await new Promise((resolve) => drainer.on('exit', resolve))).toBe(0);
    const received = r.requests.map(bodyId);
    expect(new Set(received)).toEqual(new Set(ids));
    // Order holds across the crash: after any duplicate run, delivery continues where it stopped.
    const firstSeen = received.filter((id, i) => received.indexOf(id) === i);
    expect(firstSeen).toEqual(ids);
  });
});

describe('retention', () => {
  const DAY = 86_400_000;
  const now = Date.parse('2024-06-01T00:00:00Z');

  it('prunes old events every sink confirmed; keeps undelivered and recent ones', () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1, 2, 3], now - 10 * DAY); // seq 1..3: old
    appendSignals(db, ES_A, [4], now - 1 * DAY); //         seq 4: recent
    const sinks: SinkConfig[] = [fileSink('/x', { name: 'fast' }), fileSink('/y', { name: 'slow' })];
    const positions = new SinkPositionStore(db);
    positions.advance('fast', 4, 4);
    positions.advance('slow', 2, 2);
    expect(pruneDelivered(db, sinks, 7, now)).toBe(2);
    expect(new OutboxStore(db).all().map((r) => r.seq)).toEqual([3, 4]);
    positions.advance('slow', 4, 2);
    expect(pruneDelivered(db, sinks, 7, now)).toBe(1);
    expect(new OutboxStore(db).all().map((r) => r.seq)).toEqual([4]);
    db.close();
  });

  it('a sink that never ran holds everything; with no sinks, events are kept keep_days then pruned', () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1, 2], now - 10 * DAY);
    appendSignals(db, ES_A, [3], now);
    expect(pruneDelivered(db, [fileSink('/x', { name: 'new' })], 7, now)).toBe(0);
    expect(pruneDelivered(db, [], 7, now)).toBe(2);
    expect(new OutboxStore(db).all().map((r) => r.signalId)).toEqual([3]);
    db.close();
  });
});

describe('backpressure', () => {
  it('names the e-services fed by a sink over max_pending, and which sink', () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1, 2, 3]);
    appendSignals(db, ES_B, [1]);
    const onlyA = fileSink('/a', { name: 'only-a', eservices: [ES_A] });
    const onlyB = fileSink('/b', { name: 'only-b', eservices: [ES_B] });
    const all = fileSink('/all', { name: 'all' });
    let paused = backpressuredEServices(db, [onlyA, onlyB], 2);
    expect([...paused]).toEqual([[ES_A, 'only-a']]);
    expect(backpressureFor(paused, ES_B)).toBeUndefined();

    paused = backpressuredEServices(db, [onlyB, all], 3);
    expect([...paused]).toEqual([[ALL_ESERVICES, 'all']]);
    expect(backpressureFor(paused, ES_B)).toBe('all');

    // Delivered events no longer count; 0 disables backpressure.
    new SinkPositionStore(db).advance('all', 3, 3);
    expect(backpressuredEServices(db, [onlyB, all], 3).size).toBe(0);
    expect(backpressuredEServices(db, [onlyA], 0).size).toBe(0);
    db.close();
  });

  it('"sinks list" shows position, pending, state and backpressure, read-only', () => {
    const dir = tempDir();
    const dbFile = path.join(dir, 'state.db');
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1, 2, 3]);
    const positions = new SinkPositionStore(db);
    positions.advance('hook', 1, 1);
    positions.stop('hook', 'sink "hook": POST http://127.0.0.1/x answered HTTP 410', Date.parse('2024-06-01T00:00:00Z'));
    const sinks: SinkConfig[] = [hook('http://127.0.0.1/x'), fileSink('/f')];
    const entries = listSinks({ database: dbFile, sinks, outbox: { keepDays: 7, maxPending: 2, deliveryBatchSize: 100 } });
    expect(entries).toEqual([
      { name: 'hook', type: 'webhook', eservices: [], tenants: [], signalTypes: [], position: 1, pending: 2, state: 'stopped', delivered: 1, lastError: 'sink "hook": POST http://127.0.0.1/x answered HTTP 410', lastErrorAt: '2024-06-01T00:00:00.000Z', backpressure: false },
      { name: 'file', type: 'file', eservices: [], tenants: [], signalTypes: [], position: 0, pending: 3, state: 'active', delivered: 0, lastError: null, lastErrorAt: null, backpressure: true },
    ]);
    const table = formatSinkTable(entries);
    expect(table).toMatch(/^NAME\s+TYPE\s+STATE/);
    expect(table).toContain('STOPPED');
    expect(table).toContain('active (backpressure)');
    expect(sinkStatus(db, sinks).map((s) => s.pending)).toEqual([2, 3]);
    db.close();
  });
});
