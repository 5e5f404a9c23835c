import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../src/daemon/daemon.js';
import { isAppError } from '../src/errors.js';
import { classifyForbidden, FORBIDDEN_FIXES, forbiddenReasonOf, parseProblem, type ForbiddenReason } from '../src/hub/errors.js';
import { createLogger, silentLogger } from '../src/log.js';
import { Metrics } from '../src/metrics.js';
import { openDatabase } from '../src/store/db.js';
import { EServiceStore } from '../src/store/eservices.js';
import { createEngine, createRemotes } from '../src/sync/runtime.js';
import { collectStatus } from '../src/sync/status.js';
import { formatStatus } from '../src/cli/status.js';
import { loadConfig } from '../src/config/load.js';
import { ConfigError } from '../src/errors.js';
import { createWorld, purposeOf, type World } from './helpers/world.js';
import { httpGet, metricValue, type LogLine } from './run-helpers.js';
import fs from 'node:fs';
import path from 'node:path';

const ES_OK = '51111111-1111-4111-8111-111111111111';
const ES_REFUSED = '52222222-2222-4222-8222-222222222222';
const ES_UNKNOWN = '53333333-3333-4333-8333-333333333333';
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

let world: World | undefined;
let daemon: Daemon | undefined;
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  await world?.close();
  world = undefined;
});

/** Syncs one e-service once with the real engine against the simulator; returns the stored row. */
async function syncOnce(w: World, eserviceId: string): Promise<unknown> {
  const db = openDatabase(w.config.database);
  const remotes = createRemotes(w.config, { logger: silentLogger });
  try {
    const engine = createEngine(w.config, db, remotes, { logger: silentLogger });
    await engine.syncEService(eserviceId);
    return undefined;
  } catch (err) {
    return err;
  } finally {
    await remotes.hub.close();
    db.close();
  }
}

function statusAt(w: World, now: number) {
  const db = openDatabase(w.config.database);
  try {
    return collectStatus(db, w.config, now);
  } finally {
    db.close();
  }
}

function lastPullOf(w: World, eserviceId: string): number {
  const db = openDatabase(w.config.database);
  try {
    return new EServiceStore(db).get(eserviceId)!.lastPullAt!;
  } finally {
    db.close();
  }
}

describe('retention alerts in status (alerts.stale_after_hours, alerts.critical_after_days)', () => {
  it('stale exactly at 24 h, critical exactly at 25 days, the margin counts down to the 30-day retention', async () => {
    world = await createWorld({ eservices: [{ id: ES_OK, name: 'anagrafe' }] });
    expect(await syncOnce(world, ES_OK)).toBeUndefined();
    const pulled = lastPullOf(world, ES_OK);
    const at = (ms: number) => statusAt(world!, pulled + ms).eservices[0]!.retention!;

    expect(at(0)).toMatchObject({ level: 'ok', since: 'last-pull', sinceAt: new Date(pulled).toISOString(), ageSeconds: 0, marginSeconds: 30 * 86_400, message: null });
    expect(at(DAY - 1).level).toBe('ok');
    expect(at(DAY)).toMatchObject({ level: 'stale', ageSeconds: 86_400, marginSeconds: 29 * 86_400 });
    expect(at(DAY).message).toContain('alerts.stale_after_hours = 24');
    expect(at(25 * DAY - 1).level).toBe('stale');
    const critical = at(25 * DAY);
    expect(critical).toMatchObject({ level: 'critical', marginSeconds: 5 * 86_400 });
    expect(critical.message).toContain('starts deleting unpulled signals in 5d');
    const lost = at(31 * DAY);
    expect(lost).toMatchObject({ level: 'critical', marginSeconds: -86_400 });
    expect(lost.message).toContain('signals have been lost');

    const s = statusAt(world, pulled + 25 * DAY);
    expect(s.totals).toMatchObject({ staleEServices: 0, criticalEServices: 1 });
    const text = formatStatus(s);
    expect(text).toMatch(/anagrafe\s+idle, CRITICAL/);
    expect(text).toMatch(/^CRITICAL: anagrafe: last successful pull 25d ago/m);
    expect(formatStatus(statusAt(world, pulled + DAY))).toMatch(/^STALE: anagrafe: /m);
    expect(formatStatus(statusAt(world, pulled + DAY - 1))).not.toMatch(/STALE|CRITICAL/);
  });

  it('honours configured thresholds, and refuses critical_after_days at or beyond the retention', async () => {
    world = await createWorld({ eservices: [{ id: ES_OK, name: 'anagrafe' }], toml: '[alerts]\nstale_after_hours = 2\ncritical_after_days = 3\n' });
    expect(await syncOnce(world, ES_OK)).toBeUndefined();
    const pulled = lastPullOf(world, ES_OK);
    const level = (ms: number) => statusAt(world!, pulled + ms).eservices[0]!.retention!.level;
    expect([level(2 * HOUR - 1), level(2 * HOUR), level(3 * DAY - 1), level(3 * DAY)]).toEqual(['ok', 'stale', 'stale', 'critical']);

    const bad = path.join(world.dir, 'bad.toml');
    fs.writeFileSync(bad, fs.readFileSync(world.configFile, 'utf8').replace('critical_after_days = 3', 'critical_after_days = 30'));
    const err = await loadConfig(bad).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toContainEqual(expect.objectContaining({ path: 'alerts.critical_after_days', message: expect.stringContaining('below hub.retention_days (30)') }));
    fs.writeFileSync(bad, fs.readFileSync(world.configFile, 'utf8').replace('stale_after_hours = 2', 'stale_after_hours = 72'));
    const err2 = await loadConfig(bad).catch((e: unknown) => e);
    expect((err2 as ConfigError).problems).toContainEqual(expect.objectContaining({ path: 'alerts.stale_after_hours' }));
  });
});

describe('a hub 403, classified with the back-office step that fixes it', () => {
  const cases: { name: string; reason: ForbiddenReason; setup: (w: World) => void; eserviceId?: string }[] = [
    { name: 'no active agreement (the simulated hub refuses the organization)', reason: 'no-agreement', setup: () => undefined },
    { name: 'bare code 0004 without a readable detail', reason: 'no-agreement', setup: (w) => w.sim.faults.inject('pull', { kind: 'status', status: 403, code: '0004', detail: 'Forbidden', eserviceId: ES_REFUSED }) },
    { name: 'Signal Hub disabled on the e-service', reason: 'signalhub-disabled', setup: (w) => w.sim.faults.inject('pull', { kind: 'status', status: 403, code: '0004', detail: `Signal Hub is not enabled for e-service ${ES_REFUSED}`, eserviceId: ES_REFUSED }) },
    { name: 'a delegation problem', reason: 'delegation', setup: (w) => w.sim.faults.inject('pull', { kind: 'status', status: 403, code: '0004', detail: 'No active delegation for the requester on this e-service', eserviceId: ES_REFUSED }) },
    { name: 'a firewall (403 without a problem body)', reason: 'firewall', setup: (w) => w.sim.faults.inject('pull', { kind: 'status', status: 403, problem: false, eserviceId: ES_REFUSED }) },
    { name: 'an e-service the hub does not know', reason: 'eservice-unknown', setup: () => undefined, eserviceId: ES_UNKNOWN },
  ];

  for (const c of cases) {
    it(`${c.name}: ${c.reason}`, async () => {
      const target = c.eserviceId ?? ES_REFUSED;
      world = await createWorld({
        eservices: [{ id: ES_REFUSED, name: 'tributi', organizationIds: c.name.startsWith('no active') ? [] : undefined }],
        toml: `[[eservices]]\nid = "${ES_UNKNOWN}"\nname = "sconosciuto"\npurpose_id = "${purposeOf(ES_UNKNOWN)}"\n`,
      });
      c.setup(world);
      const err = await syncOnce(world, target);
      expect(isAppError(err) && err.code).toBe('HUB_FORBIDDEN');
      expect((err as { details?: Record<string, unknown> }).details).toMatchObject({ forbiddenReason: c.reason, eserviceId: target });
      expect((err as Error).message).toContain(FORBIDDEN_FIXES[c.reason]);

      const status = statusAt(world, Date.now());
      const es = status.eservices.find((e) => e.id === target)!;
      expect(es.state).toBe('failing');
      expect(es.forbidden).toEqual({ reason: c.reason, fix: FORBIDDEN_FIXES[c.reason] });
      const text = formatStatus(status);
      expect(text).toContain(`failing (403 ${c.reason})`);
      expect(text).toContain(`refused by the hub (403, ${c.reason}): ${es.name}: ${FORBIDDEN_FIXES[c.reason]}`);
    });
  }

  it('classifies problem bodies it cannot read as unclassified, and reads old untagged messages the same way', () => {
    expect(classifyForbidden(parseProblem('{"title":"Forbidden","detail":"nope","errors":[{"code":"9999","detail":"nope"}]}'))).toBe('unclassified');
    expect(classifyForbidden(parseProblem('<html>Request Rejected</html>'))).toBe('firewall');
    expect(classifyForbidden(parseProblem(''))).toBe('firewall');
    expect(classifyForbidden(parseProblem('{"detail":"Purpose is not active","errors":[]}'))).toBe('no-agreement');
    expect(forbiddenReasonOf('Signal Hub pull: HTTP 403 (written by an older version)')).toBe('unclassified');
    expect(forbiddenReasonOf('...; [403 bogus] something')).toBe('unclassified');
  });

  it('the fixes name the PDND back-office step', () => {
    expect(FORBIDDEN_FIXES['no-agreement']).toContain('activate the agreement and the purpose for this e-service in the PDND back office');
    expect(FORBIDDEN_FIXES['signalhub-disabled']).toBe('ask the producer to enable Signal Hub on the e-service');
    expect(FORBIDDEN_FIXES.delegation).toContain('check the delegation in the PDND back office');
    expect(FORBIDDEN_FIXES.firewall).toContain('a firewall refused the request');
    expect(FORBIDDEN_FIXES.firewall).toContain('check egress rules / proxy');
  });
});

describe('the daemon with a driven clock: log once per change, /readyz, the margin gauge', () => {
  function captureLogger(): { logger: ReturnType<typeof createLogger>; lines: () => LogLine[] } {
    let text = '';
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        text += chunk.toString('utf8');
        cb();
      },
    });
    return { logger: createLogger({ level: 'info', destination: sink }), lines: () => text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine) };
  }

  it('stale and critical appear exactly at the thresholds, once each, and again at the next start', async () => {
    world = await createWorld({
      eservices: [{ id: ES_OK, name: 'anagrafe' }, { id: ES_REFUSED, name: 'tributi' }],
      toml: '[http]\nenabled = true\nlisten = "127.0.0.1:0"\n',
    });
    world.sim.faults.inject('pull', { kind: 'status', status: 403, problem: false, eserviceId: ES_REFUSED });
    let clock: number | undefined;
    const now = () => clock ?? Date.now();
    const { logger, lines } = captureLogger();
    const metrics = new Metrics();
    daemon = await startDaemon({ config: world.config, configFile: world.configFile, logger, metrics, now, refreshIntervalMs: 3_600_000 });
    const url = daemon.httpUrl!;
    const deadline = Date.now() + 30_000;
    while (!daemon.eservices().every((e) => e.lastSuccessAt || e.lastError)) {
      if (Date.now() > deadline) throw new Error('no first sync');
      await new Promise((r) => setTimeout(r, 50));
    }
    // The daemon keeps the database open; a second read-only connection sees the same rows.
    const pulled = lastPullOf(world, ES_OK);
    const refusedSince = (() => {
      const db = openDatabase(world.config.database);
      try {
        return new EServiceStore(db).get(ES_REFUSED)!.createdAt;
      } finally {
        db.close();
      }
    })();
    const readyz = async () => JSON.parse((await httpGet(`${url}/readyz`)).body) as { ready: boolean; reasons: string[] };
    const about = (reasons: string[], name: string) => reasons.filter((r) => r.startsWith(`e-service ${name} (`));
    const logsAbout = (name: string, level: string) => lines().filter((l) => l.eserviceName === name && l.level === level && /stale|CRITICAL/.test(l.msg));

    // The 403 is a reason with its fix at once; anagrafe is fine.
    clock = pulled + DAY - 1;
    let r = await readyz();
    expect(about(r.reasons, 'tributi')).toContainEqual(`e-service tributi (${ES_REFUSED}) refused by the hub (403, firewall): ${FORBIDDEN_FIXES.firewall}`);
    expect(about(r.reasons, 'anagrafe')).toEqual([]);
    expect(logsAbout('anagrafe', 'warn')).toEqual([]);
    let m = (await httpGet(`${url}/metrics`)).body;
    expect(metricValue(m, 'signalhub_retention_margin_seconds', { eservice: ES_OK })).toBe(29 * 86_400);

    clock = pulled + DAY;
    r = await readyz();
    expect(r.ready).toBe(false);
    expect(about(r.reasons, 'anagrafe')).toEqual([expect.stringMatching(/^e-service anagrafe \(.+\) stale: last successful pull 24h ago: older than alerts.stale_after_hours = 24/)]);
    await readyz();
    expect(logsAbout('anagrafe', 'warn')).toHaveLength(1);
    expect(logsAbout('anagrafe', 'warn')[0]).toMatchObject({ level: 'warn', retentionLevel: 'stale', eservice: ES_OK, ageSeconds: 86_400, marginSeconds: 29 * 86_400 });

    clock = pulled + 25 * DAY - 1;
    await readyz();
    expect(logsAbout('anagrafe', 'error')).toEqual([]);
    clock = pulled + 25 * DAY;
    r = await readyz();
    await readyz();
    expect(about(r.reasons, 'anagrafe')).toEqual([expect.stringContaining('CRITICAL: last successful pull 25d ago')]);
    expect(logsAbout('anagrafe', 'error')).toHaveLength(1);
    expect(logsAbout('anagrafe', 'warn')).toHaveLength(1);
    m = (await httpGet(`${url}/metrics`)).body;
    expect(metricValue(m, 'signalhub_retention_margin_seconds', { eservice: ES_OK })).toBe(5 * 86_400);
    // Never pulled: counts from when the daemon first recorded the e-service.
    expect(metricValue(m, 'signalhub_retention_margin_seconds', { eservice: ES_REFUSED })).toBe(Math.floor((30 * DAY - (pulled + 25 * DAY - refusedSince)) / 1000));
    expect(logsAbout('tributi', 'error')[0]?.msg).toMatch(/never pulled successfully/);

    // A restart with the clock still there: one error line at start, before any /readyz.
    await daemon.stop();
    const second = captureLogger();
    daemon = await startDaemon({ config: world.config, configFile: world.configFile, logger: second.logger, metrics: new Metrics(), now, refreshIntervalMs: 3_600_000 });
    const atStart = second.lines().filter((l) => l.eserviceName === 'anagrafe' && /CRITICAL/.test(l.msg));
    expect(atStart).toHaveLength(1);
    expect(atStart[0]!.level).toBe('error');
  });
});
