import { spawn, type ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { isAppError, type AppError } from '../src/errors.js';
import { silentLogger } from '../src/log.js';
import { openDatabase, type Db } from '../src/store/db.js';
import { EServiceStore } from '../src/store/eservices.js';
import { EpochStore } from '../src/store/epochs.js';
import { OutboxStore } from '../src/store/outbox.js';
import { catchUpAll } from '../src/sync/catchup.js';
import { closeRemotes, createEngine, createRemotes, type Remotes } from '../src/sync/runtime.js';
import type { SyncEngine } from '../src/sync/engine.js';
import { ROOT } from './helpers/cli.js';
import { startRun } from './run-helpers.js';
import { ES_A, createFaultScenario, expectCaughtUpExactly, expectCursorNeverPassesUnprocessed, expectErrorLogged, expectRecovery, runSync, useControlOutbox, type FaultScenario, type FaultScenarioOptions } from './helpers/faults.js';
import { pseudonymCount } from './helpers/pseudonyms.js';
import { PseudonymStore } from '../src/store/pseudonyms.js';

/**
 * Local faults of the store: the database held by another writer (the single-writer lock, or a
 * raw SQLite write lock of a foreign process) and the disk full (SQLITE_FULL) during a page and
 * during a reseed. After each, a run once the fault is gone leaves exactly the outbox of a
 * control world that never saw it.
 */

const children: ChildProcess[] = [];
let scenario: FaultScenario | undefined;
afterEach(async () => {
  while (children.length > 0) children.pop()!.kill('SIGKILL');
  await scenario?.close();
  scenario = undefined;
});

/**
 * Another process holding a raw SQLite write transaction on `file` (BEGIN IMMEDIATE: readers go
 * on, every other writer waits its busy timeout and then fails) until `release()`.
 */
async function holdWriteLock(file: string): Promise<{ release(): Promise<void> }> {
  const script = `
    const Database = require('better-sqlite3');
    const db = new Database(process.argv[1]);
    db.exec('BEGIN IMMEDIATE');
    db.prepare("UPDATE eservices SET name = name").run();
    process.stdout.write('LOCKED\\n');
    process.stdin.once('data', () => { db.exec('ROLLBACK'); db.close(); process.exit(0); });`;
  const child = spawn(process.execPath, ['-e', script, file], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await Promise.race([
    new Promise<void>((resolve) => child.stdout!.setEncoding('utf8').on('data', (d: string) => d.includes('LOCKED') && resolve())),
    exited.then((code) => Promise.reject(new Error(`lock holder exited early (${code})`))),
  ]);
  return {
    release: async () => {
      child.stdin!.write('go\n');
      expect(await exited).toBe(0);
    },
  };
}

const COUNTS = (db: Db) => ({
  outbox: new OutboxStore(db).maxSeq(),
  eservices: db.prepare('SELECT eservice_id, cursor, high_water, signals_seen, matches FROM eservices ORDER BY id').all(),
  epochs: db.prepare('SELECT id, start_signal_id, pseudonym_count FROM epochs ORDER BY id').all(),
  signalLog: (db.prepare('SELECT COUNT(*) AS n FROM signal_log').get() as { n: number }).n,
});

function storeState(file: string): ReturnType<typeof COUNTS> {
  const db = openDatabase(file, { readonly: true });
  try {
    return COUNTS(db);
  } finally {
    db.close();
  }
}

describe('faults: the database locked by another process', () => {
  // crypto.request_timeout_ms above the 6 s a held-back crypto answer takes: the lock is taken meanwhile.
  const options: FaultScenarioOptions = { eservices: 2, hub: { poll_interval_seconds: 3600 }, crypto: { request_timeout_ms: 10_000 }, deferDeposits: true };
  const control = useControlOutbox(options);

  it('sync --once while run holds the single-writer lock is refused with exit 75 naming the holder pid, changes nothing, and after run stops a sync gives the exact outbox', async () => {
    scenario = await createFaultScenario(options);
    const daemon = startRun(scenario.world, { logLevel: 'debug' });
    // The daemon's first runs find the hub empty; with an hour's poll interval it then only waits.
    await daemon.until(() => daemon.logs().filter((l) => l.msg === 'sync run finished').length === 2, 'the daemon to finish its first runs');
    scenario.deposit();
    const before = storeState(scenario.world.config.database);
    const pulls = scenario.world.sim.stats().requests.pull ?? 0;

    const refused = await runSync(scenario.world);
    expect(refused.code, refused.stderr).toBe(75);
    expect(refused.stderr).toContain('DB_LOCKED');
    expect(refused.stderr).toContain(`pid ${daemon.child.pid}, "run"`);
    expect(refused.stderr).toContain(scenario.world.config.database);
    expect(storeState(scenario.world.config.database)).toEqual(before);
    expect(scenario.world.sim.stats().requests.pull ?? 0).toBe(pulls); // the refused process pulled nothing

    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
    await expectRecovery(scenario, control);
  });

  it('a foreign process holding a raw SQLite write lock longer than the busy timeout, taken while sync --once waits for the producer at a SEEDUPDATE, stops the sync with DB_LOCKED (exit 75) naming the database; nothing is lost and a rerun after release gives the exact outbox', async () => {
    scenario = await createFaultScenario(options);
    scenario.deposit();
    const file = scenario.world.config.database;
    // The rotation's crypto request of the first e-service is held back long enough for the lock to be taken.
    scenario.world.sim.faults.inject('crypto', { kind: 'delay', ms: 6_000, times: 1, eserviceId: ES_A });
    const before = scenario.world.sim.stats().requests.crypto ?? 0;
    const sync = runSync(scenario.world, ['--eservice', ES_A]);
    for (let i = 0; (scenario.world.sim.stats().requests.crypto ?? 0) === before; i++) {
      if (i > 600) throw new Error('the sync never reached the SEEDUPDATE');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const lock = await holdWriteLock(file);
    const run = await sync;
    expect(run.code, run.stderr).toBe(75);
    expect(run.stdout).toContain('FAILED DB_LOCKED');
    const logged = expectErrorLogged(run.stderr, { code: 'DB_LOCKED' });
    expect(logged.err.message).toContain(`database ${file} is busy`);
    // Every page before the SEEDUPDATE committed; the SEEDUPDATE's transaction did not.
    expect(expectCursorNeverPassesUnprocessed(scenario, control).get(ES_A)).toBe(scenario.seedUpdates.get(ES_A)! - 1);

    await lock.release();
    await expectRecovery(scenario, control);
  }, 90_000);
});

describe('faults: the disk full (SQLITE_FULL) during a page and during a reseed', () => {
  // Enough subjects that a reseed needs far more new database pages than a page of signals.
  // 160 signals: the SEEDUPDATE is signal 81, the first of the fifth page of 20.
  const options: FaultScenarioOptions = { eservices: 1, subjects: 2_000, signals: 160 };
  const control = useControlOutbox(options);

  /**
   * The engine in this process on the scenario's database file: PRAGMA max_page_count is per
   * connection, so the limit is set on the engine's own handle (a real SQLITE_FULL from SQLite,
   * without filling the disk).
   */
  async function withEngine(s: FaultScenario, body: (engine: SyncEngine, db: Db) => Promise<void>): Promise<void> {
    const db = openDatabase(s.world.config.database);
    const remotes: Remotes = createRemotes(s.world.config, { logger: silentLogger });
    try {
      await body(createEngine(s.world.config, db, remotes, { logger: silentLogger }), db);
    } finally {
      await closeRemotes(remotes);
      db.close();
    }
  }

  const pageCount = (db: Db): number => db.pragma('page_count', { simple: true }) as number;
  const limitPages = (db: Db, pages: number): number => db.pragma(`max_page_count = ${pages}`, { simple: true }) as number;
  const UNLIMITED = 1_073_741_823;

  function expectDiskFull(err: unknown, file: string): AppError {
    expect(isAppError(err), String(err)).toBe(true);
    const e = err as AppError;
    expect(e.code).toBe('DB_FULL');
    expect(e.message).toContain(`database ${file}: the database or the disk is full`);
    return e;
  }

  it('SQLITE_FULL during a page: DB_FULL naming the database file, the page rolled back whole (cursor and outbox unchanged), and after the limit is raised the run gives the exact outbox', async () => {
    scenario = await createFaultScenario(options);
    const s = scenario;
    const file = s.world.config.database;
    const S = s.seedUpdates.get(ES_A)!;
    await withEngine(s, async (engine, db) => {
      const stores = { eservices: new EServiceStore(db), outbox: new OutboxStore(db) };
      // The first page that needs a new database page fails: the file may not grow at all.
      let failure: unknown;
      let cursorBefore = 0;
      let eventsBefore = 0;
      let logBefore = 0;
      for (let i = 0; i < 10 && failure === undefined; i++) {
        limitPages(db, pageCount(db));
        cursorBefore = stores.eservices.get(ES_A)!.cursor;
        eventsBefore = stores.outbox.maxSeq();
        logBefore = (db.prepare('SELECT COUNT(*) AS n FROM signal_log').get() as { n: number }).n;
        try {
          const outcome = await engine.syncEService(ES_A, { maxPages: 1 });
          expect(outcome.caughtUp).toBe(false);
        } catch (err) {
          failure = err;
        }
      }
      expectDiskFull(failure, file);
      expect(cursorBefore + 20, 'the failing page is before the SEEDUPDATE').toBeLessThan(S);
      expect(stores.eservices.get(ES_A)!.cursor).toBe(cursorBefore);
      expect(stores.outbox.maxSeq()).toBe(eventsBefore);
      expect((db.prepare('SELECT COUNT(*) AS n FROM signal_log').get() as { n: number }).n).toBe(logBefore);
      expect(expectCursorNeverPassesUnprocessed(s, control).get(ES_A)).toBe(cursorBefore);

      limitPages(db, UNLIMITED);
      const results = await catchUpAll(engine, [ES_A], { concurrency: 1 });
      expect(results[0]!.error).toBeUndefined();
    });
    expectCaughtUpExactly(s, control);
  });

  it('SQLITE_FULL during the reseed of a SEEDUPDATE: DB_FULL naming the database file, the new epoch never live half-filled, no signal after the SEEDUPDATE processed, and after the limit is raised the run resumes the fill and gives the exact outbox', async () => {
    scenario = await createFaultScenario(options);
    const s = scenario;
    const file = s.world.config.database;
    const S = s.seedUpdates.get(ES_A)!;
    expect(S).toBe(81);
    await withEngine(s, async (engine, db) => {
      const epochsOf = () => new EpochStore(db).forEService(new EServiceStore(db).get(ES_A)!.id);
      const pseudonymsOf = (epoch: number) => pseudonymCount(db, epoch).n;
      const first = await engine.syncEService(ES_A, { maxPages: 4 });
      expect(first.cursor).toBe(S - 1);
      const [epoch1] = epochsOf();
      expect(epochsOf()).toHaveLength(1);

      // Room for a few small rows, not for 2,000 pseudonyms: the (lazy) fill of the new epoch
      // runs out of space when the first change signal after S must be matched.
      limitPages(db, pageCount(db) + 3);
      const eventsBefore = new OutboxStore(db).maxSeq();
      const failure = await engine.syncEService(ES_A).then(
        () => undefined,
        (err: unknown) => err,
      );
      expectDiskFull(failure, file);
      // The SEEDUPDATE itself may have committed (the epoch is opened, unfilled), nothing after it.
      expect([S - 1, S]).toContain(new EServiceStore(db).get(ES_A)!.cursor);
      expect(new OutboxStore(db).maxSeq()).toBe(eventsBefore);
      const opened = epochsOf().filter((e) => e.id !== epoch1!.id);
      for (const e of opened) {
        expect(e.startSignalId).toBe(S);
        expect(e.fillState, 'a half-filled epoch is never live').not.toBe('ready');
        expect(pseudonymsOf(e.id)).toBe(e.pseudonymCount);
      }
      expect(pseudonymsOf(epoch1!.id)).toBe(2_000);
      expect(expectCursorNeverPassesUnprocessed(s, control).get(ES_A)).toBeLessThanOrEqual(S);

      limitPages(db, UNLIMITED);
      const results = await catchUpAll(engine, [ES_A], { concurrency: 1 });
      expect(results[0]!.error).toBeUndefined();
      const epoch2 = epochsOf().find((e) => e.startSignalId === S)!;
      expect(epoch2.fillState).toBe('ready');
      expect(epoch2.pseudonymCount).toBe(2_000);
      expect(pseudonymsOf(epoch2.id)).toBe(2_000);
      // The old epoch's table is dropped once the cursor is past S (its space returns to the file).
      expect(new PseudonymStore(db).tables()).not.toContain(epoch1!.id);
    });
    expectCaughtUpExactly(s, control);
  });
});
