import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { WebhookSinkConfig } from '../src/config/types.js';
import { Metrics } from '../src/metrics.js';
import { DeliveryService } from '../src/sinks/delivery.js';
import { DeadLetterStore } from '../src/store/dead-letters.js';
import { OutboxStore } from '../src/store/outbox.js';
import { SinkPositionStore } from '../src/store/sink-positions.js';
import { ES_A, SUBJECT_KEY, appendSignals, captureLogger, openTestDb, startReceiver, type Received, type Reply } from './delivery-fixtures.js';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { storeSubjects } from './run-helpers.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function receiver(reply: (req: Received, index: number) => Reply) {
  const r = await startReceiver(reply);
  cleanups.push(r.close);
  return r;
}

const ids = (req: Received): string[] => {
  const parsed = JSON.parse(req.body) as { id: string } | { id: string }[];
  return (Array.isArray(parsed) ? parsed : [parsed]).map((e) => e.id);
};

function hook(url: string, extra: Partial<WebhookSinkConfig> = {}): WebhookSinkConfig {
  return { type: 'webhook', name: 'hook', eservices: [], url, secretFile: undefined, caFile: undefined, batchSize: 1, timeoutMs: 5_000, maxRetries: 1, onReject: 'dead-letter', ...extra };
}

const fast = { pollIntervalMs: 50, retryBaseMs: 10, retryMaxMs: 50, sinkOptions: { webhookRetryMinDelayMs: 5, webhookRetryMaxDelayMs: 20 } };

describe('on_reject = "dead-letter"', () => {
  it('a 4xx moves that one event to the dead letters (status, clipped answer), counts and logs it, and the next event is delivered', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    const [refused, next, last] = appendSignals(db, ES_A, [1, 2, 3]);
    // A long validation answer with a control character: kept clipped to 1 KiB, as text.
    const answer = `{"error":"objectType not accepted","detail":"${'x'.repeat(3000)}"}`;
    const r = await startReceiverWithBody((req) => (ids(req).includes(refused!) ? { status: 422, body: answer } : { status: 200, body: '{}' }));
    cleanups.push(r.close);
    const metrics = new Metrics();
    const logs = captureLogger();
    const service = new DeliveryService({ db, batchSize: 10, sinks: [hook(r.url)], metrics, logger: logs.logger, ...fast });
    const result = await service.drain();
    await service.stop(0);

    expect(result).toEqual({ complete: true, sinks: [{ name: 'hook', delivered: 2, deadLettered: 1, pending: 0, state: 'active', error: null }] });
    expect(r.requests.map((q) => ids(q)[0])).toEqual([refused, next, last]);
    const letters = new DeadLetterStore(db).list();
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ sink: 'hook', eventId: refused, seq: 1, status: 422, state: 'dead', attempts: 1 });
    expect(letters[0]!.payload).toBe(new OutboxStore(db).all()[0]!.payload);
    expect(letters[0]!.response).toBe(answer.slice(0, 1024));
    expect(letters[0]!.error).toContain('answered HTTP 422');
    expect(new SinkPositionStore(db).get('hook')).toMatchObject({ position: 3, state: 'active', delivered: 2 });
    expect((await metrics.deadLetters.get()).values).toEqual([expect.objectContaining({ labels: { sink: 'hook' }, value: 1 })]);
    const line = logs.text().split('\n').find((l) => l.includes('set aside as a dead letter'))!;
    expect(JSON.parse(line)).toMatchObject({ level: 'warn', sink: 'hook', eventId: refused, err: { code: 'SINK_REJECTED', status: 422 } });
    // The receiver's answer is in the table, not in the logs; nor is the subject key of the payload.
    expect(logs.text()).not.toContain('objectType not accepted');
    expect(logs.text()).not.toContain(SUBJECT_KEY);
    db.close();
  });

  it('a refused batch is split: only the event the receiver objects to is set aside', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    const events = appendSignals(db, ES_A, [1, 2, 3, 4, 5]);
    const bad = events[2]!;
    const r = await receiver((req) => ({ status: ids(req).includes(bad) ? 400 : 200 }));
    const service = new DeliveryService({ db, batchSize: 10, sinks: [hook(r.url, { batchSize: 10 })], ...fast });
    const result = await service.drain();
    await service.stop(0);
    expect(result.sinks[0]).toMatchObject({ delivered: 4, deadLettered: 1, pending: 0, state: 'active' });
    const accepted = r.requests.filter((q) => q.status === 200).flatMap(ids);
    expect(accepted.sort()).toEqual(events.filter((id) => id !== bad).sort());
    expect(new DeadLetterStore(db).list().map((l) => l.eventId)).toEqual([bad]);
    db.close();
  });

  it('with on_reject = "stop" (the default) the same 4xx stops the sink and nothing is set aside', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1, 2]);
    const r = await receiver(() => ({ status: 400 }));
    const service = new DeliveryService({ db, batchSize: 10, sinks: [hook(r.url, { onReject: undefined })], ...fast });
    const result = await service.drain();
    await service.stop(0);
    expect(result.sinks[0]).toMatchObject({ delivered: 0, pending: 2, state: 'stopped' });
    expect(new DeadLetterStore(db).list()).toEqual([]);
    db.close();
  });
});

/** startReceiver answers "{}"; this one answers a given body. */
async function startReceiverWithBody(reply: (req: Received) => { status: number; body: string }) {
  const http = await import('node:http');
  const requests: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const received: Received = { headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), status: 0, at: Date.now() };
      requests.push(received);
      const answer = reply(received);
      received.status = answer.status;
      res.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}/events`,
    requests,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('sync --once and sinks dead-letters list|retry|drop', () => {
  const ES = '51111111-1111-4111-8111-111111111111';
  let world: World;
  let refuse = true;
  let receiverUrl: string;
  const keys = [fiscalCode(61), fiscalCode(62)];
  const signalIds: number[] = [];

  beforeAll(async () => {
    const r = await startReceiver((req) => ({ status: refuse && ids(req).includes(`${ES}:${signalIds[0]}`) ? 400 : 200 }));
    receiverUrl = r.url;
    world = await createWorld({
      dir: fs.mkdtempSync(path.join(os.tmpdir(), 'shs-dead-letters-')),
      eservices: [{ id: ES, name: 'residenze' }],
      toml: `[crypto]\nrotation_wait_seconds = 0.5\n\n[[sinks]]\nname = "hook"\ntype = "webhook"\nurl = "${receiverUrl}"\nmax_retries = 0\non_reject = "dead-letter"\n`,
    });
    cleanups.length = 0;
    afterAllClose.push(r.close);
    storeSubjects(world, keys.map((key, i) => ({ key, ref: `pratica-${i}` })));
    signalIds.push(world.sim.depositForSubject(ES, keys[0]!, 'UPDATE', 'domicile'));
    signalIds.push(world.sim.depositForSubject(ES, keys[1]!, 'UPDATE', 'domicile'));
  });
  const afterAllClose: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of afterAllClose) await c();
    await world?.close();
    if (world) fs.rmSync(world.dir, { recursive: true, force: true });
  });
  const cli = (...args: string[]) => runCli(['--config', world.configFile, ...args]);

  it('sync --once sets the refused event aside, delivers the next, exits 0 and names the new dead letter', async () => {
    const r = await cli('sync', '--once');
    expect(r.stderr).toContain('set aside as a dead letter');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('sink hook: delivered 1, 1 set aside as dead letters, pending 0');
    expect(r.stdout).toContain('new dead letters: 1: see "signalhub-sync sinks dead-letters list"');

    const list = await cli('sinks', 'dead-letters', 'list', '--json');
    expect(list.code).toBe(0);
    const letters = list.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(letters).toEqual([expect.objectContaining({ id: 1, sink: 'hook', state: 'dead', status: 400, eventId: `${ES}:${signalIds[0]}`, event: expect.objectContaining({ type: 'signal', subjectRef: 'pratica-0' }) })]);
    const table = await cli('sinks', 'dead-letters', 'list');
    expect(table.stdout).toMatch(/^ID\s+SINK\s+STATE\s+EVENT\s+STATUS/);
    expect(table.stdout).toMatch(new RegExp(`\\n1\\s+hook\\s+dead\\s+${ES}:${signalIds[0]}\\s+400\\s+1\\s`));
  });

  it('retry queues it again: refused again it stays (2 attempts); once the receiver takes it, it is gone', async () => {
    expect((await cli('sinks', 'dead-letters', 'retry', 'hook')).code).toBe(64);
    const queued = await cli('sinks', 'dead-letters', 'retry', 'hook', '--all');
    expect(queued.stdout).toContain('1 dead letter(s) of sink "hook" queued for redelivery');
    const again = await cli('sync', '--once', '--json');
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout).newDeadLetters).toBe(1);
    const letters = (await cli('sinks', 'dead-letters', 'list', '--json')).stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(letters).toEqual([expect.objectContaining({ id: 1, state: 'dead', attempts: 2 })]);

    refuse = false;
    await cli('sinks', 'dead-letters', 'retry', 'hook', '1');
    const delivered = await cli('sync', '--once', '--json');
    expect(delivered.code).toBe(0);
    expect(JSON.parse(delivered.stdout)).toMatchObject({ delivery: [{ name: 'hook', delivered: 1, pending: 0 }], newDeadLetters: 0 });
    expect((await cli('sinks', 'dead-letters', 'list')).stdout).toBe('no dead letters\n');
  });

  it('drop deletes dead letters; unknown sinks and ids are usage errors', async () => {
    refuse = true;
    signalIds[0] = world.sim.depositForSubject(ES, keys[0]!, 'DELETE', 'domicile');
    expect((await cli('sync', '--once')).code).toBe(0);
    expect((await cli('sinks', 'dead-letters', 'drop', 'nope', '--all')).code).toBe(64);
    expect((await cli('sinks', 'dead-letters', 'drop', 'hook', 'x1')).code).toBe(64);
    const dropped = await cli('sinks', 'dead-letters', 'drop', 'hook', '--all');
    expect(dropped.stdout).toBe('1 dead letter(s) of sink "hook" dropped\n');
    expect((await cli('sinks', 'dead-letters', 'list')).stdout).toBe('no dead letters\n');
  });
});

describe('sync --once with a sink stopped by a refusal', () => {
  const ES = '52222222-2222-4222-8222-222222222222';
  it('exits 69, says STOPPED, and names the resync report the run opened', async () => {
    const r = await startReceiver(() => ({ status: 400 }));
    cleanups.push(r.close);
    const world = await createWorld({
      eservices: [{ id: ES, name: 'residenze' }],
      toml: `[crypto]\nrotation_wait_seconds = 0.5\n\n[[sinks]]\nname = "hook"\ntype = "webhook"\nurl = "${r.url}"\nmax_retries = 0\n`,
    });
    cleanups.push(() => world.close());
    const key = fiscalCode(71);
    storeSubjects(world, [{ key, ref: 'pratica-71' }]);
    // No delivery yet: the first run only learns the seed.
    expect((await runCli(['--config', world.configFile, 'sync', '--once', '--no-deliver'])).code).toBe(0);
    // Away across two rotations of a producer without seed history: one resync report.
    world.sim.depositForSubject(ES, key, 'CREATE', 'domicile');
    world.sim.rotateSeed(ES);
    world.sim.depositForSubject(ES, key, 'UPDATE', 'domicile');
    world.sim.rotateSeed(ES);
    world.sim.depositForSubject(ES, key, 'DELETE', 'domicile');
    const run = await runCli(['--config', world.configFile, 'sync', '--once']);
    expect(run.code).toBe(69);
    expect(run.stdout).toMatch(/sink hook: STOPPED, delivered 0, pending \d+/);
    expect(run.stdout).toMatch(/new resync reports: #1 \(5222.*, seed-unchanged\): see "signalhub-sync resync list"/);
  });
});
