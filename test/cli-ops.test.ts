import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedFingerprint } from '../src/crypto/pseudonym.js';
import { silentLogger } from '../src/log.js';
import { openDatabase } from '../src/store/db.js';
import { WriterLock } from '../src/store/lock.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import { createEngine, createRemotes } from '../src/sync/runtime.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';

const ES = '11111111-1111-4111-8111-111111111111';
const ES_IDLE = '22222222-2222-4222-8222-222222222222';
const MARIO = fiscalCode(7);
const LUIGI = fiscalCode(8);

/**
 * One real sync, shared by the tests below, which run in order: reads first, then the
 * commands that write (ack, cursor moves, a second sync).
 * Scenario (test/engine-basic.test.ts): the consumer is away across two rotations of a
 * producer without seed history, so the epoch between them is unknowable: one resync report.
 */
let root: string;
let world: World;
const seeds: string[] = [];
const ids = { before: 0, s1: 0, lost1: 0, lost2: 0, s2: 0, after: 0, unmatched: 0 };
const outputs: CliResult[] = [];

async function cli(...args: string[]): Promise<CliResult> {
  const result = await runCli(['--config', world.configFile, ...args]);
  outputs.push(result);
  return result;
}

/** Parses the JSON a successful command printed; a failure shows its stderr. */
async function cliJson(...args: string[]): Promise<any> {
  const r = await cli(...args);
  expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return JSON.parse(r.stdout);
}

async function cliNdjson(...args: string[]): Promise<Record<string, unknown>[]> {
  const r = await cli(...args);
  expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return ndjson(r.stdout);
}

const ndjson = (text: string): Record<string, unknown>[] =>
  text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>);

beforeAll(async () => {
  // Not tempDir(): that one is removed after each test, and this world serves the whole file.
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'shs-cli-ops-'));
  world = await createWorld({
    dir: root,
    eservices: [
      { id: ES, name: 'residenze' },
      { id: ES_IDLE, name: 'patenti' },
    ],
    toml: '[crypto]\nrotation_wait_seconds = 0.5\n\n[[sinks]]\nname = "archive"\ntype = "file"\npath = "events.ndjson"\n',
  });
  const db = openDatabase(world.config.database);
  try {
    new SubjectWriter(db, { index: subjectIndexOptions(world.config) }).upsertBatch([
      { key: MARIO, ref: 'mario', eservices: 'all' },
      { key: LUIGI, ref: 'luigi', eservices: 'all' },
    ]);
    const engine = createEngine(world.config, db, createRemotes(world.config, { logger: silentLogger }), { logger: silentLogger });
    const sim = world.sim;
    seeds.push(sim.currentSeed(ES)!.seed);
    await engine.syncEService(ES);
    ids.before = sim.depositForSubject(ES, MARIO, 'CREATE', 'domicile');
    ids.unmatched = sim.depositForSubject(ES, fiscalCode(99), 'UPDATE', 'domicile');
    ids.s1 = sim.rotateSeed(ES);
    seeds.push(sim.currentSeed(ES)!.seed);
    ids.lost1 = sim.depositForSubject(ES, MARIO, 'UPDATE', 'domicile');
    ids.lost2 = sim.depositForSubject(ES, LUIGI, 'UPDATE', 'domicile');
    ids.s2 = sim.rotateSeed(ES);
    seeds.push(sim.currentSeed(ES)!.seed);
    ids.after = sim.depositForSubject(ES, MARIO, 'DELETE', 'domicile');
    const outcome = await engine.syncEService(ES);
    expect(outcome.caughtUp).toBe(true);
  } finally {
    db.close();
  }
});

afterAll(async () => {
  await world?.close();
  // Whatever any command printed, no seed and no subject key reached it.
  for (const out of outputs) {
    for (const secret of [...seeds, MARIO, LUIGI]) {
      expect(out.stdout).not.toContain(secret);
      expect(out.stderr).not.toContain(secret);
    }
  }
  fs.rmSync(root, { recursive: true, force: true });
});

describe('status', () => {
  it('--json: per e-service cursor, pulls, counters, epoch by fingerprint, open reports; sinks and totals', async () => {
    const r = await cli('status', '--json');
    expect(r.code).toBe(0);
    const status = JSON.parse(r.stdout);
    expect(status.eservices).toHaveLength(2);
    const [synced, idle] = status.eservices;
    expect(synced).toMatchObject({
      id: ES,
      name: 'residenze',
      configured: true,
      state: 'idle',
      pausedBySink: null,
      cursor: ids.after,
      matches: 2,
      lastError: null,
      openResyncReports: 1,
    });
    // Every signal once: 2 change signals + 2 SEEDUPDATEs + 3 more change signals.
    expect(synced.signalsSeen).toBe(7);
    expect(Date.parse(synced.lastPull.at)).not.toBeNaN();
    expect(synced.lastPull.ageSeconds).toBeGreaterThanOrEqual(0);
    expect(synced.caughtUp.at).toBe(synced.lastPull.at);
    // The producer keeps no history and sends no signalId: the seed after S2 is assumed.
    expect(synced.epoch).toMatchObject({ status: 'assumed', startSignalId: ids.s2, seedFingerprint: seedFingerprint(seeds[2]!), algorithm: expect.any(String) });
    expect(Date.parse(synced.epoch.opened.at)).not.toBeNaN();
    expect(Object.keys(synced.epoch)).not.toContain('seed');
    expect(idle).toEqual({
      id: ES_IDLE,
      name: 'patenti',
      configured: true,
      state: 'new',
      pausedBySink: null,
      cursor: 0,
      lastPull: null,
      caughtUp: null,
      signalsSeen: 0,
      matches: 0,
      lastError: null,
      epoch: null,
      openResyncReports: 0,
      skippedSignals: {},
      // Never seen by a sync run or the daemon: no "first configured" time to count an age from.
      retention: null,
      forbidden: null,
    });
    // Just pulled: fresh, with the whole 30-day retention ahead.
    expect(synced.retention).toMatchObject({ level: 'ok', since: 'last-pull', message: null });
    expect(synced.retention.marginSeconds).toBeGreaterThan(30 * 86_400 - 600);
    expect(synced.forbidden).toBeNull();
    // Events: CREATE before, resync-required, DELETE after; nothing delivered yet.
    expect(status.sinks).toEqual([expect.objectContaining({ name: 'archive', type: 'file', position: 0, pending: 3, state: 'active' })]);
    expect(status.totals).toEqual({ eservices: 2, signalsSeen: 7, matches: 2, openResyncReports: 1, skippedSignals: 0, staleEServices: 0, criticalEServices: 0, outboxEvents: 3, lastSeq: 3, maxPending: 3 });
  });

  it('prints compact tables by default', async () => {
    const r = await cli('status');
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    const synced = lines.find((l) => l.startsWith(ES))!;
    expect(synced).toMatch(/residenze\s+idle\s+/);
    expect(synced).toContain(`  ${ids.after}  `);
    expect(synced).toMatch(new RegExp(`#\\d+ assumed ${seedFingerprint(seeds[2]!)} SHA-256 from ${ids.s2} \\(\\d+s\\)`));
    expect(synced).toMatch(/\d+s ago\s+\d+s ago/);
    expect(synced).toMatch(/1 open$/);
    expect(lines.find((l) => l.startsWith(ES_IDLE))).toMatch(/patenti\s+new\s+0\s+never\s+never/);
    expect(lines.find((l) => l.startsWith('archive'))).toMatch(/archive\s+file\s+active\s+0\s+3\s+-/);
    expect(r.stdout).toContain('totals: 2 e-service(s), 7 signals, 2 matches, 3 event(s) in the outbox (last seq 3), 1 open resync report(s)');
  });
});

describe('events list', () => {
  it('--json: NDJSON of the stored events with their seq, subject refs and never subject keys', async () => {
    const r = await cli('events', 'list', '--json');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const events = ndjson(r.stdout);
    expect(events.map((e) => [e.seq, e.type, e.id])).toEqual([
      [1, 'signal', `${ES}:${ids.before}`],
      [2, 'resync-required', `${ES}:resync:1`],
      [3, 'signal', `${ES}:${ids.after}`],
    ]);
    expect(events[0]).toMatchObject({ eserviceId: ES, eserviceName: 'residenze', signalId: ids.before, signalType: 'CREATE', objectType: 'domicile', subjectRef: 'mario' });
    expect(events[0]).not.toHaveProperty('subjectKey');
    expect(events[1]).toMatchObject({ reportId: 1, fromSignalId: ids.lost1, toSignalId: ids.lost2, reason: 'seed-unchanged' });
    expect(events[2]).toMatchObject({ signalId: ids.after, signalType: 'DELETE', subjectRef: 'mario' });
  });

  it('a table by default, with the resync range', async () => {
    const r = await cli('events', 'list');
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/^SEQ\s+ID\s+TYPE\s+E-SERVICE\s+SIGNAL\s+SIGNAL TYPE/);
    expect(lines[1]).toMatch(new RegExp(`^1\\s+${ES}:${ids.before}\\s+signal\\s+residenze\\s+${ids.before}\\s+CREATE\\s+domicile\\s+mario\\s`));
    expect(lines[2]).toMatch(new RegExp(`^2\\s+${ES}:resync:1\\s+resync-required\\s+residenze\\s+${ids.lost1}\\.\\.${ids.lost2}\\s+seed-unchanged`));
    expect(lines[3]).toMatch(/^3\s.*DELETE\s+domicile\s+mario\s/);
  });

  it('--since, --limit (with a hint to continue) and --eservice filter', async () => {
    const since = await cli('events', 'list', '--since', '1', '--json');
    expect(ndjson(since.stdout).map((e) => e.seq)).toEqual([2, 3]);

    const limited = await cli('events', 'list', '--limit', '1', '--json');
    expect(ndjson(limited.stdout).map((e) => e.seq)).toEqual([1]);
    expect(limited.stderr).toContain('continue with --since 1');
    const next = await cli('events', 'list', '--since', '1', '--limit', '2', '--json');
    expect(ndjson(next.stdout).map((e) => e.seq)).toEqual([2, 3]);
    expect(next.stderr).toBe('');

    const byName = await cli('events', 'list', '--eservice', 'residenze', '--json');
    expect(ndjson(byName.stdout)).toHaveLength(3);
    const other = await cli('events', 'list', '--eservice', ES_IDLE);
    expect(other.code).toBe(0);
    expect(other.stdout).toBe('no events after seq 0\n');
  });

  it('rejects bad options and unknown e-services with exit 64', async () => {
    const unknown = await cli('events', 'list', '--eservice', 'nope');
    expect(unknown.code).toBe(64);
    expect(unknown.stderr).toContain('--eservice nope: no such e-service');
    expect((await cli('events', 'list', '--since', 'abc')).code).toBe(64);
    expect((await cli('events', 'list', '--limit', '0')).code).toBe(64);
  });
});

describe('resync list', () => {
  it('--json lists the open report', async () => {
    const r = await cli('resync', 'list', '--json');
    expect(r.code).toBe(0);
    const reports = JSON.parse(r.stdout);
    expect(reports).toEqual([
      {
        id: 1,
        eserviceId: ES,
        eserviceName: 'residenze',
        fromSignalId: ids.lost1,
        toSignalId: ids.lost2,
        reason: 'seed-unchanged',
        detail: expect.stringContaining(`SEEDUPDATE ${ids.s2}`),
        createdAt: expect.any(String),
        closedAt: expect.any(String),
        ackedAt: null,
      },
    ]);
  });

  it('prints a table by default', async () => {
    const r = await cli('resync', 'list');
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[1]).toMatch(new RegExp(`^1\\s+residenze\\s+${ids.lost1}\\.\\.${ids.lost2}\\s+seed-unchanged\\s+\\S+\\s+open\\s`));
  });
});

describe('cursor show', () => {
  it('lists every configured e-service, or one by id or name', async () => {
    const all = await cli('cursor', 'show', '--json');
    expect(all.code).toBe(0);
    expect(JSON.parse(all.stdout)).toEqual([
      { eserviceId: ES, name: 'residenze', cursor: ids.after, state: 'idle', lastPullAt: expect.any(String) },
      { eserviceId: ES_IDLE, name: 'patenti', cursor: 0, state: 'new', lastPullAt: null },
    ]);
    const one = await cli('cursor', 'show', '--eservice', 'residenze', '--json');
    expect(JSON.parse(one.stdout)).toMatchObject({ eserviceId: ES, cursor: ids.after });
    // As subject files name e-services: any case, for names and ids alike.
    for (const ref of ['Residenze', ES.toUpperCase()]) {
      const same = await cli('cursor', 'show', '--eservice', ref, '--json');
      expect(JSON.parse(same.stdout)).toMatchObject({ eserviceId: ES, cursor: ids.after });
    }
    const table = await cli('cursor', 'show');
    expect(table.stdout).toMatch(new RegExp(`${ES}\\s+residenze\\s+${ids.after}\\s+idle\\s`));
    const unknown = await cli('cursor', 'show', '--eservice', '33333333-3333-4333-8333-333333333333');
    expect(unknown.code).toBe(64);
    expect(unknown.stderr).toContain('no such e-service in the configuration');
  });
});

describe('while another process holds the database', () => {
  it('refuses the commands that write (75) and serves those that read', async () => {
    const lock = WriterLock.acquire(world.config.database, 'test');
    try {
      for (const args of [
        ['cursor', 'set', '1', '--eservice', ES],
        ['cursor', 'reset', '--eservice', ES],
        ['resync', 'ack', '1'],
      ]) {
        const r = await cli(...args);
        expect(r.code, args.join(' ')).toBe(75);
        expect(r.stderr).toContain('in use by another signalhub-sync process');
        expect(r.stderr).toContain('"test"');
      }
      for (const args of [['status'], ['cursor', 'show'], ['events', 'list'], ['resync', 'list']]) {
        const r = await cli(...args);
        expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      }
    } finally {
      lock.release();
    }
    // Nothing was changed by the refused commands.
    const cursor = await cliJson('cursor', 'show', '--eservice', ES, '--json');
    expect(cursor.cursor).toBe(ids.after);
    expect(await cliJson('resync', 'list', '--json')).toHaveLength(1);
  });
});

describe('resync ack', () => {
  it('acknowledges once, says so the second time, and rejects unknown ids', async () => {
    const unknown = await cli('resync', 'ack', '99');
    expect(unknown.code).toBe(64);
    expect(unknown.stderr).toContain('no resync report with id 99');
    expect((await cli('resync', 'ack', 'x')).code).toBe(64);

    const first = await cli('resync', 'ack', '1');
    expect(first.code).toBe(0);
    expect(first.stdout).toBe(`resync report 1 (residenze, signals ${ids.lost1}..${ids.lost2}, seed-unchanged) acknowledged\n`);
    const again = await cli('resync', 'ack', '1', '--json');
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ outcome: 'already-acknowledged', report: { id: 1, ackedAt: expect.any(String) } });

    expect((await cli('resync', 'list')).stdout).toBe('no open resync reports\n');
    const all = await cliJson('resync', 'list', '--all', '--json');
    expect(all).toEqual([expect.objectContaining({ id: 1, ackedAt: expect.any(String) })]);
    const status = await cliJson('status', '--json');
    expect(status.eservices[0].openResyncReports).toBe(0);
    expect(status.totals.openResyncReports).toBe(0);
  });
});

describe('cursor set / reset', () => {
  it('moves the cursor either way, printing old -> new; unknown e-service and bad ids are 64', async () => {
    const unknown = await cli('cursor', 'set', '3', '--eservice', 'nope');
    expect(unknown.code).toBe(64);
    expect((await cli('cursor', 'set', '-1', '--eservice', ES)).code).toBe(64);
    expect((await cli('cursor', 'set', '1.5', '--eservice', ES)).code).toBe(64);
    expect((await cli('cursor', 'set', '3')).code).toBe(64); // --eservice is required

    const back = await cli('--log-level', 'info', 'cursor', 'set', String(ids.s1), '--eservice', 'residenze');
    expect(back.code).toBe(0);
    expect(back.stdout).toBe(`residenze (${ES}): cursor ${ids.after} -> ${ids.s1}: the next sync reads signals ${ids.s1 + 1}..${ids.after} again (no duplicate events)\n`);
    const logLine = JSON.parse(back.stderr.split('\n').find((l) => l.includes('cursor moved'))!);
    expect(logLine).toMatchObject({ eservice: ES, from: ids.after, to: ids.s1 });

    const forward = await cli('cursor', 'set', String(ids.after + 10), '--eservice', ES, '--json');
    expect(JSON.parse(forward.stdout)).toEqual({ eserviceId: ES, name: 'residenze', from: ids.s1, to: ids.after + 10 });
    expect(forward.stderr).toContain(`no events will be produced for signals ${ids.s1 + 1}..${ids.after + 10}`);

    const reset = await cli('cursor', 'reset', '--eservice', ES);
    expect(reset.code).toBe(0);
    expect(reset.stdout).toContain(`cursor ${ids.after + 10} -> 0`);
    expect((await cliJson('cursor', 'show', '--eservice', ES, '--json')).cursor).toBe(0);

    // A never synced e-service gets its row: the next sync starts from there.
    const fresh = await cli('cursor', 'set', '5', '--eservice', 'patenti');
    expect(fresh.stdout).toContain('cursor 0 -> 5');
    expect(await cliJson('cursor', 'show', '--eservice', ES_IDLE, '--json')).toMatchObject({ cursor: 5 });
    expect((await cli('cursor', 'reset', '--eservice', ES_IDLE)).code).toBe(0);
  });

  it('after a reset, a real sync re-reads without duplicating events or reports and delivers to the sink', async () => {
    const before = await cliNdjson('events', 'list', '--json');
    const reportsBefore = await cliJson('resync', 'list', '--all', '--json');
    const sync = await cli('sync', '--once', '--eservice', ES);
    expect(sync.code, sync.stderr).toBe(0);
    const afterSync = await cliNdjson('events', 'list', '--json', '--limit', '1000');
    // Signals already processed (the signal log remembers them within the retention period)
    // are skipped when re-read: no new events, no new resync reports.
    expect(afterSync).toEqual(before);
    expect(await cliJson('resync', 'list', '--all', '--json')).toEqual(reportsBefore);

    const status = await cliJson('status', '--json');
    expect(status.eservices[0].cursor).toBe(ids.after);
    expect(status.sinks[0]).toMatchObject({ name: 'archive', pending: 0, position: status.totals.lastSeq });
    const delivered = ndjson(fs.readFileSync(path.join(root, 'events.ndjson'), 'utf8'));
    expect(delivered.map((e) => e.id)).toEqual(afterSync.map((e) => e.id));
  });
});

describe('sync --eservice', () => {
  it('takes a configured name as well as an id; naming one e-service twice syncs it once', async () => {
    const byName = await cliJson('sync', '--once', '--no-deliver', '--eservice', 'patenti', '--json');
    expect(byName.eservices.map((e: { eserviceId: string }) => e.eserviceId)).toEqual([ES_IDLE]);
    expect(byName.eservices[0]).toMatchObject({ ok: true, caughtUp: true });
    const twice = await cliJson('sync', '--once', '--no-deliver', '--eservice', 'residenze', '--eservice', ES, '--json');
    expect(twice.eservices).toEqual([expect.objectContaining({ eserviceId: ES, ok: true, cursor: ids.after })]);
  });

  it('an unknown e-service is a usage error (64) listing the configured ones, before anything is synced', async () => {
    const requestsBefore = world.sim.stats().requests.pull ?? 0;
    const unknown = await cli('sync', '--once', '--eservice', 'residenza');
    expect(unknown.code).toBe(64);
    expect(unknown.stdout).toBe('');
    expect(unknown.stderr).toContain('--eservice residenza: no such e-service');
    expect(unknown.stderr).toContain(`${ES} (residenze)`);
    expect(unknown.stderr).toContain(`${ES_IDLE} (patenti)`);
    // The good one before the bad one is not synced either.
    expect((await cli('sync', '--once', '--eservice', 'patenti', '--eservice', 'nope')).code).toBe(64);
    expect(world.sim.stats().requests.pull ?? 0).toBe(requestsBefore);
  });
});

describe('without a database', () => {
  it('read commands exit 66 with a clear message; resync ack does not create one', async () => {
    const configFile = path.join(root, 'missing.toml');
    fs.writeFileSync(configFile, fs.readFileSync(world.configFile, 'utf8').replace('database = "state.db"', 'database = "missing.db"'));
    for (const args of [['status'], ['status', '--json'], ['cursor', 'show'], ['events', 'list'], ['resync', 'list'], ['resync', 'ack', '1']]) {
      const r = await runCli(['--config', configFile, ...args]);
      outputs.push(r);
      expect(r.code, args.join(' ')).toBe(66);
      expect(r.stderr).toContain(`database ${path.join(root, 'missing.db')} does not exist yet`);
      expect(r.stdout).toBe('');
    }
    expect(fs.existsSync(path.join(root, 'missing.db'))).toBe(false);
  });
});
