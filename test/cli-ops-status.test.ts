import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../src/log.js';
import { openDatabase } from '../src/store/db.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import { createEngine, createRemotes } from '../src/sync/runtime.js';
import { collectStatus } from '../src/sync/status.js';
import { ROOT, runCli } from './helpers/cli.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';

const STALE = '33333333-3333-4333-8333-333333333333';
const REFUSED = '44444444-4444-4444-8444-444444444444';
const KEY = fiscalCode(21);

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

describe('status of troubled e-services', () => {
  it('shows an unknowable current epoch, a failing e-service with its last error, backpressure, and e-services no longer configured', async () => {
    world = await createWorld({
      eservices: [
        // The producer keeps serving the old seed after rotating (SPEC §8 race, never resolved).
        { id: STALE, name: 'anagrafe', includeSignalId: true, staleReads: 1000 },
        { id: REFUSED, name: 'tributi' },
      ],
      toml: '[crypto]\nrotation_wait_seconds = 0.3\n\n[outbox]\nmax_pending = 1\n\n[[sinks]]\nname = "slow"\ntype = "file"\npath = "out.ndjson"\n',
    });
    const sim = world.sim;
    const db = openDatabase(world.config.database);
    new SubjectWriter(db, { index: subjectIndexOptions(world.config) }).upsertBatch([{ key: KEY, ref: 'rossi', eservices: 'all' }]);
    const engine = createEngine(world.config, db, createRemotes(world.config, { logger: silentLogger }), { logger: silentLogger });
    await engine.syncEService(STALE);
    const seeds = [sim.currentSeed(STALE)!.seed];
    sim.depositForSubject(STALE, KEY, 'CREATE', 'residence');
    const s = sim.rotateSeed(STALE);
    seeds.push(sim.currentSeed(STALE)!.seed);
    const lost = sim.depositForSubject(STALE, KEY, 'UPDATE', 'residence');
    await engine.syncEService(STALE);
    db.close();
    sim.faults.inject('pull', { kind: 'status', status: 403, code: '0004', eserviceId: REFUSED });

    const sync = await runCli(['--config', world.configFile, 'sync', '--once', '--eservice', REFUSED, '--no-deliver']);
    expect(sync.code, sync.stderr).toBe(77);

    // Shown, but exit 1: one e-service failing, both blocked by the sink's backlog (README "Status and its exit code").
    const r = await runCli(['--config', world.configFile, 'status', '--json']);
    expect(r.code, r.stderr).toBe(1);
    const status = JSON.parse(r.stdout);
    expect(status.version).toBe(JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
    expect(status.health.ok).toBe(false);
    expect(status.health.problems.map((p: { subject: string; problem: string }) => `${p.problem} ${p.subject}`).sort()).toEqual([`blocked ${REFUSED}`, `blocked ${STALE}`, `failing ${REFUSED}`].sort());
    const [stale, refused] = status.eservices;
    expect(stale).toMatchObject({ id: STALE, state: 'idle', cursor: lost, matches: 1, openResyncReports: 1, pausedBySink: 'slow' });
    expect(stale.epoch).toMatchObject({ status: 'unknown', seedFingerprint: null, algorithm: null, startSignalId: s, note: 'seed-unchanged' });
    expect(refused).toMatchObject({ id: REFUSED, state: 'failing', cursor: 0, pausedBySink: 'slow', lastError: { code: 'HUB_FORBIDDEN', message: expect.any(String) } });
    expect(Date.parse(refused.lastError.at.at)).not.toBeNaN();
    // Event of the CREATE + resync-required of the unknowable epoch, both waiting for the sink.
    expect(status.sinks).toEqual([expect.objectContaining({ name: 'slow', pending: 2 })]);

    const table = await runCli(['--config', world.configFile, 'status']);
    expect(table.code).toBe(1);
    expect(table.stdout).toMatch(/^health: 3 problem\(s\)$/m);
    expect(table.stdout).toMatch(/^ {2}failing: tributi: failing: HUB_FORBIDDEN: /m);
    expect(table.stdout).toMatch(/^ {2}blocked: anagrafe: pulling paused by the backlog of sink slow$/m);
    const line = (prefix: string) => table.stdout.split('\n').find((l) => l.startsWith(prefix))!;
    expect(line(STALE)).toMatch(new RegExp(`anagrafe\\s+idle, paused by sink slow\\s+${lost}\\s.*#\\d+ unknown no seed from ${s} \\(\\d+s\\)\\s+1 open$`));
    expect(line(REFUSED)).toMatch(/tributi\s+failing \(403 no-agreement\), paused by sink slow\s+0\s+never\s+never/);
    expect(table.stdout).toMatch(/^last error of tributi: HUB_FORBIDDEN \S+: .+$/m);

    // Dropped from the configuration: still shown, flagged, with its open reports.
    const configFile = path.join(world.dir, 'fewer.toml');
    const text = fs.readFileSync(world.configFile, 'utf8');
    fs.writeFileSync(configFile, text.slice(0, text.indexOf('[[eservices]]')) + text.slice(text.indexOf('[[eservices]]', text.indexOf('[[eservices]]') + 1)));
    const fewer = await runCli(['--config', configFile, 'status', '--json']);
    expect(fewer.code, fewer.stderr).toBe(1);
    const after = JSON.parse(fewer.stdout);
    expect(after.eservices.map((e: { id: string; configured: boolean }) => [e.id, e.configured])).toEqual([
      [REFUSED, true],
      [STALE, false],
    ]);
    expect(after.totals.openResyncReports).toBe(1);
    const fewerTable = await runCli(['--config', configFile, 'status']);
    expect(fewerTable.stdout).toContain('anagrafe (not configured)');

    for (const out of [sync, r, table, fewer, fewerTable]) {
      for (const secret of [...seeds, KEY]) expect(out.stdout + out.stderr).not.toContain(secret);
    }
  });

  it('collectStatus reports ages against the given clock and never carries a seed', async () => {
    world = await createWorld({ eservices: [{ id: STALE, name: 'anagrafe' }] });
    const db = openDatabase(world.config.database);
    try {
      const engine = createEngine(world.config, db, createRemotes(world.config, { logger: silentLogger }), { logger: silentLogger });
      await engine.syncEService(STALE);
      const pulledAt = Date.parse(collectStatus(db, world.config).eservices[0]!.lastPull!.at);
      const later = collectStatus(db, world.config, pulledAt + 90_500);
      expect(later.generatedAt).toBe(new Date(pulledAt + 90_500).toISOString());
      expect(later.eservices[0]!.lastPull).toEqual({ at: new Date(pulledAt).toISOString(), ageSeconds: 91 });
      expect(later.eservices[0]!.epoch).toMatchObject({ status: 'assumed', startSignalId: 0 });
      expect(JSON.stringify(later)).not.toContain(world.sim.currentSeed(STALE)!.seed);
    } finally {
      db.close();
    }
  });

  it('exits 0 when every e-service pulled recently, 1 once one is stale (3 poll intervals, at least 15 minutes)', async () => {
    world = await createWorld({ eservices: [{ id: STALE, name: 'anagrafe' }] });
    const sync = await runCli(['--config', world.configFile, 'sync', '--once']);
    expect(sync.code, sync.stderr).toBe(0);
    const healthy = await runCli(['--config', world.configFile, 'status', '--json']);
    expect(healthy.code, healthy.stdout).toBe(0);
    expect(JSON.parse(healthy.stdout).health).toEqual({ ok: true, problems: [] });

    // 16 minutes since the last pull: above 3 × 60 s and above the 15-minute floor.
    const db = openDatabase(world.config.database);
    db.prepare('UPDATE eservices SET last_pull_at = last_pull_at - ?').run(16 * 60_000);
    db.close();
    const stale = await runCli(['--config', world.configFile, 'status']);
    expect(stale.code).toBe(1);
    expect(stale.stdout).toMatch(/^ {2}stale: anagrafe: last successful pull 16m ago \(limit 15m\)$/m);
  });
});
