import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { fileEventIds, httpGet, metricValue, startRun, storeSubjects, type DaemonChild } from './run-helpers.js';

const ES_OK = '31111111-1111-4111-8111-111111111111';
const ES_BAD = '32222222-2222-4222-8222-222222222222';

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

const TOML = `[hub]
poll_interval_seconds = 1

[http]
enabled = true
listen = "127.0.0.1:0"

[[sinks]]
name = "file"
type = "file"
path = "events.ndjson"
`;

/** The endpoint's URL, from the daemon's own log line (port 0 = a free port chosen by the kernel). */
async function endpointOf(daemon: DaemonChild): Promise<string> {
  const line = await daemon.waitForLog((l) => l.msg === 'health and metrics endpoint listening', 'the HTTP endpoint');
  return line.url as string;
}

describe('signalhub-sync run: health, readiness and metrics', () => {
  it('serves /healthz, /readyz and /metrics with the sync state after a sync', async () => {
    world = await createWorld({ eservices: [{ id: ES_OK, name: 'residenze' }], toml: TOML });
    const mine = [fiscalCode(1), fiscalCode(2), fiscalCode(3)];
    storeSubjects(world, mine.map((key, i) => ({ key, ref: `pratica-${i}` })));
    for (const key of mine) world.sim.depositForSubject(ES_OK, key, 'UPDATE', 'domicile');
    for (let i = 0; i < 4; i++) world.sim.depositForSubject(ES_OK, fiscalCode(900 + i), 'UPDATE', 'domicile');
    const last = world.sim.lastSignalId(ES_OK);

    const daemon = startRun(world, { logLevel: 'debug' });
    const url = await endpointOf(daemon);
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(await httpGet(`${url}/healthz`)).toEqual({ status: 200, body: 'ok\n' });

    const ready = await daemon.until(async () => {
      const r = await httpGet(`${url}/readyz`);
      return r.status === 200 ? r : undefined;
    }, '/readyz to answer 200');
    expect(JSON.parse(ready.body)).toEqual({ ready: true, reasons: [] });

    const metrics = await daemon.until(async () => {
      const text = (await httpGet(`${url}/metrics`)).body;
      return metricValue(text, 'signalhub_sink_pending_events', { sink: 'file' }) === 0 && metricValue(text, 'signalhub_events_delivered_total', { sink: 'file' }) === 3 ? text : undefined;
    }, 'metrics after delivery');
    const es = { eservice: ES_OK };
    expect(metricValue(metrics, 'signalhub_cursor_signal_id', es)).toBe(last);
    expect(metricValue(metrics, 'signalhub_signals_seen_total', { ...es, signal_type: 'change' })).toBe(7);
    expect(metricValue(metrics, 'signalhub_matches_total', es)).toBe(3);
    expect(metricValue(metrics, 'signalhub_pulls_total', { ...es, status: '200' })).toBeGreaterThanOrEqual(1);
    expect(metricValue(metrics, 'signalhub_eservice_healthy', es)).toBe(1);
    expect(metricValue(metrics, 'signalhub_resync_reports_open', es)).toBe(0);
    expect(metricValue(metrics, 'signalhub_sink_stopped', { sink: 'file' })).toBe(0);
    expect(metricValue(metrics, 'signalhub_seconds_since_last_successful_pull', es)).toBeLessThan(60);
    expect(metricValue(metrics, 'signalhub_voucher_refreshes_total', { kind: 'm2m', outcome: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(metrics).toMatch(/^signalhub_reseed_duration_seconds_count\{eservice="31111111-1111-4111-8111-111111111111"\} 1$/m);
    expect(metrics).toMatch(/^signalhub_rate_limit_remaining \d+$/m);
    for (const key of mine) expect(metrics).not.toContain(key);
    for (const key of mine) expect(daemon.stderr()).not.toContain(key);
    expect(daemon.stderr()).not.toContain(world.sim.currentSeed(ES_OK)!.seed);
    expect(fileEventIds(path.join(world.dir, 'events.ndjson'))).toHaveLength(3);

    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('keeps syncing a healthy e-service while another fails with 403, and shows the failing one everywhere', async () => {
    world = await createWorld({
      eservices: [
        { id: ES_OK, name: 'residenze' },
        { id: ES_BAD, name: 'documenti' },
      ],
      toml: TOML,
    });
    const key = fiscalCode(11);
    storeSubjects(world, [{ key, ref: 'pratica-11' }]);
    // No agreement for documenti on Signal Hub: every pull of it is refused.
    world.sim.faults.inject('pull', { kind: 'status', status: 403, code: '0004', eserviceId: ES_BAD });
    world.sim.depositForSubject(ES_BAD, key, 'UPDATE', 'document');
    const events = path.join(world.dir, 'events.ndjson');

    const daemon = startRun(world);
    const url = await endpointOf(daemon);
    const failed = await daemon.waitForLog((l) => l.msg === 'e-service sync failed' && l.eservice === ES_BAD, 'the failure log line');
    expect(failed.level).toBe('warn');
    expect((failed.err as { code: string; status: number }).code).toBe('HUB_FORBIDDEN');
    expect((failed.err as { code: string; status: number }).status).toBe(403);

    // The healthy one keeps going: signals deposited after the failure still arrive.
    for (let i = 0; i < 3; i++) {
      const id = world.sim.depositForSubject(ES_OK, key, 'UPDATE', 'domicile');
      await daemon.until(() => fileEventIds(events).includes(`${ES_OK}:${id}`), `event ${id} of the healthy e-service`);
    }
    expect(fileEventIds(events).some((id) => id.startsWith(ES_BAD))).toBe(false);

    const readyz = await httpGet(`${url}/readyz`);
    expect(readyz.status).toBe(503);
    const reasons = (JSON.parse(readyz.body) as { reasons: string[] }).reasons;
    // Not synced on time, and (warnings before data is lost) why the hub refuses it, with the fix.
    expect(reasons).toHaveLength(2);
    expect(reasons[0]).toContain(ES_BAD);
    expect(reasons[0]).toContain('HUB_FORBIDDEN');
    expect(reasons[1]).toBe(`e-service documenti (${ES_BAD}) refused by the hub (403, no-agreement): activate the agreement and the purpose for this e-service in the PDND back office (both must be ACTIVE)`);

    const metrics = (await httpGet(`${url}/metrics`)).body;
    expect(metricValue(metrics, 'signalhub_eservice_healthy', { eservice: ES_BAD })).toBe(0);
    expect(metricValue(metrics, 'signalhub_eservice_healthy', { eservice: ES_OK })).toBe(1);
    expect(metricValue(metrics, 'signalhub_pulls_total', { eservice: ES_BAD, status: '403' })).toBeGreaterThanOrEqual(1);

    // `status` reads the database next to the running daemon.
    const status = await runCli(['--config', world.configFile, 'status', '--json']);
    // Exit 1: shown, but an e-service is failing (README "Status and its exit code").
    expect(status.code, status.stderr).toBe(1);
    const byId = new Map((JSON.parse(status.stdout) as { eservices: { id: string; state: string; lastError: { code: string; message: string } | null; matches: number }[] }).eservices.map((e) => [e.id, e]));
    expect(byId.get(ES_BAD)!.state).toBe('failing');
    expect(byId.get(ES_BAD)!.lastError!.code).toBe('HUB_FORBIDDEN');
    expect(byId.get(ES_BAD)!.lastError!.message).toContain('403');
    expect(byId.get(ES_OK)!.lastError).toBeNull();
    expect(byId.get(ES_OK)!.matches).toBe(3);
    expect(daemon.stderr()).not.toContain(key);

    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});

describe('signalhub-sync run: startup failures', () => {
  it('refuses a second daemon on the same database (75) and an HTTP port in use (78)', async () => {
    world = await createWorld({ eservices: [{ id: ES_OK, name: 'residenze' }], toml: TOML });
    const daemon = startRun(world);
    const url = new URL(await endpointOf(daemon));

    const second = await runCli(['--config', world.configFile, 'run']);
    expect(second.code).toBe(75);
    expect(second.stderr).toContain('DB_LOCKED');

    // Same port, another database: the listener is what fails now.
    const busyPort = fs.readFileSync(world.configFile, 'utf8').replace('database = "state.db"', 'database = "other.db"').replace('127.0.0.1:0', `127.0.0.1:${url.port}`);
    const other = path.join(world.dir, 'other.toml');
    fs.writeFileSync(other, busyPort);
    const third = await runCli(['--config', other, 'run']);
    expect(third.code).toBe(78);
    expect(third.stderr).toMatch(/cannot listen on 127\.0\.0\.1:\d+ .*EADDRINUSE/);

    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
