import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { HealthServer, type Readiness } from '../src/daemon/http.js';
import { Scheduler, staleEServices, type EServiceSyncer } from '../src/daemon/scheduler.js';
import { isAppError } from '../src/errors.js';
import { Metrics } from '../src/metrics.js';

const servers: HealthServer[] = [];
const schedulers: Scheduler[] = [];
afterEach(async () => {
  await Promise.all(schedulers.splice(0).map((s) => s.stop()));
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function serve(readiness: () => Readiness | Promise<Readiness>, metrics?: Metrics): Promise<string> {
  const server = new HealthServer({ host: '127.0.0.1', port: 0, readiness, ...(metrics ? { metrics } : {}) });
  servers.push(server);
  return (await server.start()).url;
}

const ready = (): Readiness => ({ ready: true, reasons: [] });

describe('health and metrics endpoint', () => {
  it('answers /healthz with 200 ok', async () => {
    const url = await serve(ready);
    const res = await fetch(`${url}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('ok\n');
  });

  it('answers /readyz with 503 and the reasons while not ready, 200 once ready', async () => {
    let state: Readiness = { ready: false, reasons: ['e-service Anagrafe (e1) has not synced yet', 'sink webhook stopped'] };
    const url = await serve(() => state);
    const notReady = await fetch(`${url}/readyz`);
    expect(notReady.status).toBe(503);
    expect(notReady.headers.get('content-type')).toBe('application/json');
    expect(await notReady.json()).toEqual(state);
    state = { ready: true, reasons: [] };
    const isReady = await fetch(`${url}/readyz`);
    expect(isReady.status).toBe(200);
    expect(await isReady.json()).toEqual({ ready: true, reasons: [] });
  });

  it('answers /readyz with 503 when the readiness check itself fails', async () => {
    const url = await serve(async () => {
      throw new Error('database is closed');
    });
    const res = await fetch(`${url}/readyz`);
    expect(res.status).toBe(503);
    expect(((await res.json()) as Readiness).reasons).toEqual(['readiness check failed: database is closed']);
  });

  it('serves /metrics in Prometheus text format from the registry', async () => {
    const metrics = new Metrics();
    metrics.pulls.inc({ eservice: 'e1', status: '206' }, 3);
    metrics.cursor.set({ eservice: 'e1' }, 1234);
    const url = await serve(ready, metrics);
    const res = await fetch(`${url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(metrics.registry.contentType);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const body = await res.text();
    expect(body).toContain('# TYPE signalhub_pulls_total counter');
    expect(body).toContain('signalhub_pulls_total{eservice="e1",status="206"} 3');
    expect(body).toContain('signalhub_cursor_signal_id{eservice="e1"} 1234');
  });

  it('answers HEAD without a body, other methods with 405, unknown paths with 404', async () => {
    const url = await serve(ready, new Metrics());
    const head = await fetch(`${url}/healthz`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    const post = await fetch(`${url}/metrics`, { method: 'POST', body: 'x' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    expect((await fetch(`${url}/`)).status).toBe(404);
    expect((await fetch(`${url}/healthz/extra`)).status).toBe(404);
    expect((await fetch(`${url}/healthz?verbose=1`)).status).toBe(200);
  });

  it('answers /metrics with 404 when no registry was given', async () => {
    const url = await serve(ready);
    expect((await fetch(`${url}/metrics`)).status).toBe(404);
  });

  it('names the config keys when the port is taken', async () => {
    const url = await serve(ready);
    const port = Number(new URL(url).port);
    const second = new HealthServer({ host: '127.0.0.1', port, readiness: ready });
    const err = await second.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isAppError(err) && err.code).toBe('CONFIG_INVALID');
    expect((err as Error).message).toContain('http.listen');
    expect((err as Error).message).toContain('EADDRINUSE');
  });

  it('closes even while a client holds a keep-alive connection', async () => {
    const server = new HealthServer({ host: '127.0.0.1', port: 0, readiness: ready });
    const { url } = await server.start();
    const agent = new http.Agent({ keepAlive: true });
    await new Promise<void>((resolve, reject) => {
      http.get(`${url}/healthz`, { agent }, (res) => {
        res.resume();
        res.on('end', resolve);
      }).on('error', reject);
    });
    await server.close();
    agent.destroy();
    const refused = await fetch(`${url}/healthz`).then(
      () => false,
      () => true,
    );
    expect(refused).toBe(true);
  });

  it('reports readiness from the scheduler: not ready before the first sync, ready after', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const syncer: EServiceSyncer = {
      async syncEService() {
        await gate;
        return { caughtUp: true, pages: 1, signals: 0, matches: 0 };
      },
    };
    const scheduler = new Scheduler({ eservices: [{ id: 'e1', name: 'Anagrafe', pollIntervalSeconds: 60 }], syncer, concurrency: 1, jitter: 0.1, tickMs: 20 });
    schedulers.push(scheduler);
    const readiness = (): Readiness => {
      const reasons = staleEServices(scheduler.snapshot(), { jitter: 0.1 });
      return { ready: reasons.length === 0, reasons };
    };
    const url = await serve(readiness);
    scheduler.start();
    const before = await fetch(`${url}/readyz`);
    expect(before.status).toBe(503);
    expect(((await before.json()) as Readiness).reasons).toEqual(['e-service Anagrafe (e1) has not synced yet']);
    release();
    let after: Response;
    do {
      await new Promise((resolve) => setTimeout(resolve, 20));
      after = await fetch(`${url}/readyz`);
    } while (after.status !== 200);
    expect(await after.json()).toEqual({ ready: true, reasons: [] });
  });
});
