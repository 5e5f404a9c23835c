import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { backoffDelay } from '../src/sinks/backoff.js';
import { DeliveryService } from '../src/sinks/delivery.js';
import { openDatabase } from '../src/store/db.js';
import { OutboxStore } from '../src/store/outbox.js';
import { captureLogger } from './delivery-fixtures.js';
import type { World } from './helpers/world.js';
import { eventually, startRun } from './run-helpers.js';
import { ES_A, createFaultScenario, localSubject, readCursors, readOutbox, syncInProcess, type FaultScenario, type FaultScenarioOptions, type TomlTable } from './helpers/faults.js';

/**
 * A sink down for hours. Hours cannot be waited for in a test; what makes hour N of an outage
 * look like retry cycle N is the capped backoff: once the delay between attempts reaches its cap
 * (60 s in the daemon), every further cycle is the same, so an outage is fully described by how
 * many cycles it lasts, not by how long. The in-process test runs hundreds of cycles with a cap of
 * 20 ms (what an outage of hours costs at the daemon's 60 s cap); the daemon test shows the whole
 * process (pulling, backpressure, recovery) with the real settings over a few cycles.
 */

interface Receiver {
  url: string;
  /** Each request: its status answered, its Idempotency-Key and the event ids of its body. */
  requests: { status: number; key: string; ids: string[] }[];
  listen(): Promise<void>;
  close(): Promise<void>;
}

/** A free loopback port, closed again: the receiver is "down" (connection refused) until listen(). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A webhook receiver on `port` that answers 503 to its first `unavailable` requests, then 200. */
function receiver(port: number, unavailable: number): Receiver {
  const requests: Receiver['requests'] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (d: string) => (body += d));
    req.on('end', () => {
      const parsed = JSON.parse(body) as { id: string } | { id: string }[];
      const status = requests.length < unavailable ? 503 : 200;
      requests.push({ status, key: String(req.headers['idempotency-key']), ids: (Array.isArray(parsed) ? parsed : [parsed]).map((e) => e.id) });
      res.writeHead(status, { 'content-type': 'application/json' }).end('{}');
    });
  });
  return {
    url: `http://127.0.0.1:${port}/events`,
    requests,
    listen: () => new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve)),
    close: async () => {
      if (!server.listening) return;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Event ids confirmed by the receiver (2xx), first delivery of each, in the order received. */
function deliveredOnce(r: Receiver): string[] {
  const seen = new Set<string>();
  for (const req of r.requests) if (req.status === 200) for (const id of req.ids) seen.add(id);
  return [...seen];
}

function outboxIds(world: World): string[] {
  const db = openDatabase(world.config.database, { readonly: true });
  try {
    return new OutboxStore(db).all().map((r) => r.eventId);
  } finally {
    db.close();
  }
}

const hookSink = (url: string): TomlTable => ({ name: 'hook', type: 'webhook', url, batch_size: 5, max_retries: 0, timeout_ms: 2000 });

let scenario: FaultScenario | undefined;
let hook: Receiver | undefined;
afterEach(async () => {
  await hook?.close();
  hook = undefined;
  await scenario?.close();
  scenario = undefined;
});

describe('faults: a sink down for hours', () => {
  it('a webhook receiver down (connection refused, then 200 answers of 503) for hundreds of retry cycles: the backoff stays capped, the sink is never stopped, and when it returns every event is delivered in outbox order, none missing', async () => {
    const port = await freePort();
    hook = receiver(port, 200);
    scenario = await createFaultScenario({ eservices: 1, sinks: [hookSink(hook.url)] });
    await syncInProcess(scenario.world);
    const ids = outboxIds(scenario.world);
    expect(ids.length).toBeGreaterThan(20);

    const logs = captureLogger();
    const failures = () =>
      logs
        .text()
        .split('\n')
        .filter((l) => l.includes('"delivery failed; the batch will be retried"'))
        .map((l) => JSON.parse(l) as { failures: number; err: { message: string; status?: number } });
    const db = openDatabase(scenario.world.config.database);
    // A cap of 20 ms stands in for the daemon's 60 s: uncapped doubling from 2 ms would wait
    // 2^29 x 2 ms (12 days) before cycle 30 alone, so reaching cycle 300 at all proves the cap.
    const service = new DeliveryService({ db, sinks: scenario.world.config.sinks, batchSize: 5, logger: logs.logger, retryBaseMs: 2, retryMaxMs: 20 });
    try {
      service.start();
      // Down: nothing listens on the port.
      await eventually(() => failures().length >= 100, '100 cycles of connection refused');
      expect(failures().every((f) => /ECONNREFUSED/.test(f.err.message))).toBe(true);
      expect(hook.requests).toEqual([]);
      expect(service.status()[0]).toMatchObject({ state: 'active', position: 0, pending: ids.length });

      // Back, but answering 503 to its first 200 requests.
      await hook.listen();
      await eventually(() => deliveredOnce(hook!).length === ids.length, 'every event delivered', 45_000);
      const cycles = failures();
      expect(cycles.length).toBeGreaterThanOrEqual(300);
      // One consecutive run of failures, counted up without a reset, all retried (none stopped the sink).
      expect(cycles.map((f) => f.failures)).toEqual(cycles.map((_, i) => i + 1));
      expect(hook.requests.slice(0, 200).every((r) => r.status === 503)).toBe(true);
      // The first request after the outage carries the first batch again: nothing was skipped.
      expect(hook.requests[200]!.ids).toEqual(ids.slice(0, 5));
      expect(deliveredOnce(hook)).toEqual(ids);
      for (const r of hook.requests) expect(r.key).toBe(`${r.ids[0]}..${r.ids.at(-1)}`);
      expect(service.status()[0]).toMatchObject({ state: 'active', pending: 0 });
      // The delay function the loop uses never exceeds its cap, however long the outage.
      for (let attempt = 1; attempt <= 100_000; attempt *= 3) expect(backoffDelay(attempt, 1000, 60_000)).toBeLessThanOrEqual(60_000);
    } finally {
      await service.stop(1000);
      db.close();
    }
  });

  it('run with its webhook receiver down keeps pulling until outbox.max_pending pauses pulling, then, when the receiver returns after a 503, delivers every event in outbox order, none missing, resumes pulling, and the outbox is the control world\'s', async () => {
    const port = await freePort();
    // One 503: the daemon's own backoff (1 s doubling to 60 s) is already several cycles deep by now.
    hook = receiver(port, 1);
    const options: FaultScenarioOptions = { eservices: 1, hub: { poll_interval_seconds: 1 }, outbox: { max_pending: 10, delivery_batch_size: 5 }, sinks: [hookSink(hook.url)], deferDeposits: true };
    // Signals deposited while pulling is paused: matches of a local subject.
    const later = (s: FaultScenario) => Array.from({ length: 4 }, () => s.world.sim.depositForSubject(ES_A, localSubject(0), 'UPDATE', 'residence'));

    const control = await createFaultScenario(options);
    let expected;
    try {
      control.deposit();
      later(control);
      await syncInProcess(control.world);
      expected = readOutbox(control.world);
    } finally {
      await control.close();
    }

    scenario = await createFaultScenario(options);
    const s = scenario;
    s.deposit();
    const daemon = startRun(s.world);
    const paused = await daemon.waitForLog((l) => l.msg === 'e-service paused', 'backpressure to pause pulling', 45_000);
    expect(paused.reason).toBe('sink hook has more than 10 undelivered events (outbox.max_pending)');
    // Pulling went on while the sink was down, until the pause: the whole backlog is in the outbox.
    expect(readCursors(s.world).get(ES_A)).toBe(s.world.sim.lastSignalId(ES_A));
    expect(daemon.logs().some((l) => l.msg === 'delivery failed; the batch will be retried' && /ECONNREFUSED/.test((l.err as { message: string }).message))).toBe(true);

    // While paused, new signals wait on the hub.
    const cursorPaused = readCursors(s.world).get(ES_A);
    const pulls = s.world.sim.stats().requests.pull ?? 0;
    const laterIds = later(s);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(s.world.sim.stats().requests.pull ?? 0).toBe(pulls);
    expect(readCursors(s.world).get(ES_A)).toBe(cursorPaused);

    await hook.listen();
    await daemon.waitForLog((l) => l.msg === 'e-service resumed', 'pulling to resume', 45_000);
    await daemon.until(() => deliveredOnce(hook!).includes(`${ES_A}:${laterIds.at(-1)}`), 'the signals deposited while paused to be delivered', 45_000);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);

    expect(hook.requests[0]!.status).toBe(503);
    expect(hook.requests[1]!.ids).toEqual(hook.requests[0]!.ids); // the refused batch again, nothing skipped
    expect(deliveredOnce(hook)).toEqual(outboxIds(s.world));
    expect(readOutbox(s.world)).toEqual(expected);
  }, 120_000);
});
