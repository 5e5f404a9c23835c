import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ROOT } from './helpers/cli.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { httpGet, metricValue, startRun, storeSubjects } from './run-helpers.js';

const ES = '31111111-1111-4111-8111-111111111111';
let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

describe('metrics an operator expects', () => {
  it('build info, Node and process defaults, e-service names, caught-up, pull durations and the age of the oldest undelivered event per sink', async () => {
    world = await createWorld({
      eservices: [{ id: ES, name: 'residenze' }],
      // "down" posts to a port nothing listens on: its events stay pending and age.
      toml: `[hub]\npoll_interval_seconds = 1\n\n[http]\nenabled = true\nlisten = "127.0.0.1:0"\n\n[[sinks]]\nname = "file"\ntype = "file"\npath = "events.ndjson"\n\n[[sinks]]\nname = "down"\ntype = "webhook"\nurl = "http://127.0.0.1:9/hook"\nmax_retries = 0\n`,
    });
    storeSubjects(world, [{ key: fiscalCode(1), ref: 'pratica-1' }]);
    world.sim.depositForSubject(ES, fiscalCode(1), 'UPDATE', 'domicile');
    const daemon = startRun(world);
    const url = (await daemon.waitForLog((l) => l.msg === 'health and metrics endpoint listening', 'the HTTP endpoint')).url as string;
    await daemon.until(async () => {
      const text = (await httpGet(`${url}/metrics`)).body;
      return metricValue(text, 'signalhub_events_delivered_total', { sink: 'file' }) === 1 ? text : undefined;
    }, 'the event delivered to the file sink');
    // The gauges are refreshed periodically and on reload: a reload makes it now.
    await new Promise((r) => setTimeout(r, 1100));
    daemon.child.kill('SIGHUP');
    await daemon.waitForLog((l) => l.msg === 'configuration reloaded', 'the reload');
    const text = (await httpGet(`${url}/metrics`)).body;

    const version = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    expect(metricValue(text, 'signalhub_build_info', { version, node: process.version })).toBe(1);
    expect(metricValue(text, 'nodejs_eventloop_lag_seconds', {})).toEqual(expect.any(Number));
    expect(metricValue(text, 'process_cpu_user_seconds_total', {})).toBeGreaterThan(0);
    expect(metricValue(text, 'process_resident_memory_bytes', {})).toBeGreaterThan(0);
    expect(metricValue(text, 'signalhub_eservice_info', { eservice: ES, name: 'residenze' })).toBe(1);
    expect(metricValue(text, 'signalhub_eservice_caught_up', { eservice: ES })).toBe(1);
    expect(metricValue(text, 'signalhub_pull_duration_seconds_count', { eservice: ES, status: '200' })).toBeGreaterThanOrEqual(1);
    expect(metricValue(text, 'signalhub_sink_oldest_pending_event_age_seconds', { sink: 'file' })).toBe(0);
    expect(metricValue(text, 'signalhub_sink_pending_events', { sink: 'down' })).toBe(1);
    expect(metricValue(text, 'signalhub_sink_oldest_pending_event_age_seconds', { sink: 'down' })).toBeGreaterThanOrEqual(1);

    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
