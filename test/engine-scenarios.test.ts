import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/store/db.js';
import { OutboxStore } from '../src/store/outbox.js';
import { EServiceStore } from '../src/store/eservices.js';
import { AppError } from '../src/errors.js';
import { ResyncStore } from '../src/store/resync.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { importSubjects, subjectIndexOptions } from '../src/subjects/import.js';
import { Readable } from 'node:stream';
import { createEngine, createRemotes } from '../src/sync/runtime.js';
import { SyncEngine } from '../src/sync/engine.js';
import { createLogger, silentLogger } from '../src/log.js';
import { EpochStore } from '../src/store/epochs.js';
import { PassThrough } from 'node:stream';
import { Metrics } from '../src/metrics.js';
import type { SignalEvent } from '../src/events.js';
import { seededRandom } from './helpers/random.js';
import { createWorld, fiscalCode, type World, type WorldEService } from './helpers/world.js';

const ES = '22222222-2222-4222-8222-222222222222';
const ES2 = '33333333-3333-4333-8333-333333333333';
let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});


async function setup(eservices: WorldEService[], toml = '') {
  world = await createWorld({ eservices, toml: `[crypto]\nrotation_wait_seconds = 0.3\n${toml}` });
  const w = world;
  const db = openDatabase(w.config.database);
  let now = Date.now();
  const writer = new SubjectWriter(db, { index: subjectIndexOptions(w.config) });
  const metrics = new Metrics();
  const engine = createEngine(w.config, db, createRemotes(w.config, { logger: silentLogger }), { logger: silentLogger, metrics });
  const clockEngine = (clock: () => number) => {
    const remotes = createRemotes(w.config, { logger: silentLogger });
    // The rotation wait's deadline is on this clock: a wait moves it as it would the real one.
    const sleep = async (ms: number) => {
      now += ms;
      await new Promise((resolve) => setImmediate(resolve));
    };
    return new SyncEngine({ db, config: w.config, hub: remotes.hub, crypto: remotes.crypto, now: clock, sleep });
  };
  const outbox = new OutboxStore(db);
  const resync = new ResyncStore(db);
  const signalEvents = () => outbox.all().filter((r) => r.kind === 'signal').map((r) => JSON.parse(r.payload) as SignalEvent);
  const reports = () => resync.list().map((r) => ({ from: r.fromSignalId, to: r.toSignalId, reason: r.reason }));
  return { w, db, writer, engine, metrics, outbox, resync, signalEvents, reports, clockEngine, tick: (ms: number) => (now += ms), clock: () => now };
}

/**
 * Deposits `count` change signals with random id gaps; a fraction concerns local subjects.
 * Returns the ids that concern each subject index (so the test can derive the expected events).
 */
function depositRandom(w: World, eserviceId: string, rnd: () => number, count: number, subjectKeys: string[], strangerKeys: string[]): Map<number, string> {
  const concerned = new Map<number, string>();
  for (let i = 0; i < count; i++) {
    const gap = 1 + Math.floor(rnd() * 5);
    const signalId = w.sim.lastSignalId(eserviceId) + gap;
    const local = rnd() < 0.3;
    const key = local ? subjectKeys[Math.floor(rnd() * subjectKeys.length)]! : strangerKeys[Math.floor(rnd() * strangerKeys.length)]!;
    const type = (['CREATE', 'UPDATE', 'DELETE'] as const)[Math.floor(rnd() * 3)]!;
    w.sim.deposit(eserviceId, { signalType: type, objectId: w.sim.pseudonymFor(eserviceId, key), objectType: 'residence', signalId });
    if (local) concerned.set(signalId, key);
  }
  return concerned;
}

const keys = (from: number, n: number) => Array.from({ length: n }, (_, i) => fiscalCode(from + i));

describe('engine scenarios (exact outbox and resync reports)', () => {
  for (const history of [true, false]) {
    it(`thousands of signals with random gaps and several SEEDUPDATEs, ${history ? 'with' : 'without'} seed history, syncing between rotations`, async () => {
      const t = await setup([{ id: ES, name: 'residenze', includeSignalId: history, historyDepth: history ? 5 : 1, cryptoHistory: history }]);
      const rnd = seededRandom(history ? 1 : 2);
      const locals = keys(100, 30);
      const strangers = keys(500, 200);
      t.writer.upsertBatch(locals.map((key, i) => ({ key, ref: `r${i}`, eservices: 'all' })));
      const expected = new Map<number, string>();
      await t.engine.syncEService(ES);
      for (let round = 0; round < 4; round++) {
        for (const [id, key] of depositRandom(t.w, ES, rnd, 800, locals, strangers)) expected.set(id, key);
        if (round < 3) t.w.sim.rotateSeed(ES);
        if (!history) await t.engine.syncEService(ES); // without history the consumer must see each rotation while it is current
      }
      await t.engine.syncEService(ES);
      const events = t.signalEvents();
      expect(events.map((e) => e.signalId).sort((a, b) => a - b)).toEqual([...expected.keys()].sort((a, b) => a - b));
      const refOf = new Map(locals.map((k, i) => [k, `r${i}`]));
      for (const e of events) expect(e.subjectRef).toBe(refOf.get(expected.get(e.signalId)!));
      expect(t.reports()).toEqual([]);
      t.db.close();
    });
  }

  it('waits out the rotation race (the producer serves the old seed for a while)', async () => {
    const t = await setup([{ id: ES, name: 'residenze', staleReads: 2 }], '');
    const key = fiscalCode(42);
    t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
    await t.engine.syncEService(ES);
    const a = t.w.sim.depositForSubject(ES, key, 'UPDATE');
    t.w.sim.rotateSeed(ES);
    const b = t.w.sim.depositForSubject(ES, key, 'UPDATE');
    await t.engine.syncEService(ES);
    expect(t.signalEvents().map((e) => e.signalId)).toEqual([a, b]);
    expect(t.reports()).toEqual([]);
    t.db.close();
  });

  it('reports a producer whose seed never changes after a SEEDUPDATE (race bound exceeded)', async () => {
    const t = await setup([{ id: ES, name: 'residenze', staleReads: 1000, includeSignalId: true }], '');
    const key = fiscalCode(43);
    t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
    await t.engine.syncEService(ES);
    const a = t.w.sim.depositForSubject(ES, key, 'UPDATE');
    t.w.sim.rotateSeed(ES);
    const b = t.w.sim.depositForSubject(ES, key, 'UPDATE');
    const c = t.w.sim.depositForSubject(ES, key, 'UPDATE');
    await t.engine.syncEService(ES);
    expect(t.signalEvents().map((e) => e.signalId)).toEqual([a]);
    expect(t.reports()).toEqual([{ from: b, to: c, reason: 'seed-unchanged' }]);
    t.db.close();
  });

  it('history lookup that 404s makes an unknown epoch, reported when it closes', async () => {
    const t = await setup([{ id: ES, name: 'residenze', historyDepth: 1, cryptoHistory: true }], '');
    const key = fiscalCode(44);
    t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
    await t.engine.syncEService(ES);
    const a = t.w.sim.depositForSubject(ES, key, 'CREATE');
    t.w.sim.rotateSeed(ES);
    const lost = t.w.sim.depositForSubject(ES, key, 'UPDATE');
    const s2 = t.w.sim.rotateSeed(ES); // history depth 1: the seed of the first rotation is gone
    const d = t.w.sim.depositForSubject(ES, key, 'DELETE');
    await t.engine.syncEService(ES);
    expect(t.signalEvents().map((e) => e.signalId)).toEqual([a, d]);
    expect(t.reports()).toEqual([{ from: lost, to: lost, reason: 'seed-history-missing' }]);
    expect(s2).toBeGreaterThan(lost);
    t.db.close();
  });

  for (const includeSignalId of [false, true]) {
    it(`fresh start with a backlog spanning a rotation (producer ${includeSignalId ? 'sends' : 'does not send'} signalId)`, async () => {
      const t = await setup([{ id: ES, name: 'residenze', includeSignalId }], '');
      const key = fiscalCode(45);
      t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
      const old1 = t.w.sim.depositForSubject(ES, key, 'CREATE');
      t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: t.w.sim.pseudonymFor(ES, fiscalCode(46)), objectType: 'r' });
      const old2 = t.w.sim.depositForSubject(ES, key, 'UPDATE');
      t.w.sim.rotateSeed(ES);
      const now1 = t.w.sim.depositForSubject(ES, key, 'UPDATE');
      await t.engine.syncEService(ES);
      expect(t.signalEvents().map((e) => e.signalId)).toEqual([now1]);
      expect(t.reports()).toEqual([{ from: old1, to: old2, reason: 'backlog-predates-seed' }]);
      expect(t.outbox.all().filter((r) => r.kind === 'resync-required')).toHaveLength(1);
      t.db.close();
    });
  }

  it('a retention gap is reported before resuming', async () => {
    const t = await setup([{ id: ES, name: 'residenze' }], '');
    const key = fiscalCode(47);
    t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
    const engine = t.clockEngine(t.clock);
    await engine.syncEService(ES);
    const a = t.w.sim.depositForSubject(ES, key, 'CREATE');
    await engine.syncEService(ES);
    t.tick(31 * 86_400_000);
    t.w.sim.depositForSubject(ES, key, 'UPDATE');
    const purged = t.w.sim.lastSignalId(ES);
    t.w.sim.purge(ES, purged); // deleted by the hub's retention while we were away
    const c = t.w.sim.depositForSubject(ES, key, 'DELETE');
    await engine.syncEService(ES);
    expect(t.signalEvents().map((e) => e.signalId)).toEqual([a, c]);
    expect(t.reports()).toEqual([{ from: a + 1, to: c - 1, reason: 'retention-gap' }]);
    // a pull within the retention period reports nothing more
    t.tick(86_400_000);
    await engine.syncEService(ES);
    expect(t.reports()).toHaveLength(1);
    t.db.close();
  });

  it('a SEEDUPDATE deleted by the retention while away: what follows is reported, never matched under the stale seed (the model test\'s F1)', async () => {
    const t = await setup([{ id: ES, name: 'residenze' }], '');
    const key = fiscalCode(53);
    t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
    const engine = t.clockEngine(t.clock);
    await engine.syncEService(ES);
    const a = t.w.sim.depositForSubject(ES, key, 'CREATE');
    await engine.syncEService(ES);
    t.tick(31 * 86_400_000);
    const s = t.w.sim.rotateSeed(ES);
    t.w.sim.purge(ES, s); // the SEEDUPDATE is gone with the retention
    const b = t.w.sim.depositForSubject(ES, key, 'UPDATE'); // under the new seed
    const s2 = t.w.sim.rotateSeed(ES);
    const c = t.w.sim.depositForSubject(ES, key, 'DELETE');
    await engine.syncEService(ES);
    expect(t.signalEvents().map((e) => e.signalId)).toEqual([a, c]);
    const reports = t.reports();
    expect(reports.map((r) => r.reason)).toEqual(['retention-gap', 'retention-gap']);
    expect(reports.some((r) => r.from <= b && b <= r.to && r.to < s2)).toBe(true);
    t.db.close();
  });

  it('a retention gap is reported once even when the runs that find it fail afterwards', async () => {
    const t = await setup([{ id: ES, name: 'residenze', includeSignalId: true }], '');
    const key = fiscalCode(50);
    t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
    const engine = t.clockEngine(t.clock);
    await engine.syncEService(ES);
    const a = t.w.sim.depositForSubject(ES, key, 'CREATE');
    await engine.syncEService(ES);
    t.tick(31 * 86_400_000);
    t.w.sim.purge(ES, t.w.sim.depositForSubject(ES, key, 'UPDATE')); // deleted by the hub's retention
    const s = t.w.sim.rotateSeed(ES); // the first signal after the gap needs the producer
    const b = t.w.sim.depositForSubject(ES, key, 'UPDATE');
    t.w.sim.faults.inject('crypto', { kind: 'status', status: 403, times: 2 });
    await expect(engine.syncEService(ES)).rejects.toMatchObject({ code: 'CRYPTO_UNAUTHORIZED' });
    await expect(engine.syncEService(ES)).rejects.toMatchObject({ code: 'CRYPTO_UNAUTHORIZED' });
    await engine.syncEService(ES);
    expect(t.signalEvents().map((e) => e.signalId)).toEqual([a, b]);
    expect(t.reports()).toEqual([{ from: a + 1, to: s - 1, reason: 'retention-gap' }]);
    expect(t.outbox.all().filter((r) => r.kind === 'resync-required')).toHaveLength(1);
    t.db.close();
  });

  // SPEC §10: a lower id can become visible behind the cursor for about one time window. The
  // default configuration re-reads that far back; turning the lookback off loses it unless a
  // rescan overlap covers it.
  const lateCases: [string, string, boolean][] = [
    ['the production window (time_window_seconds = 10, the default without the simulator preset)', '[hub]\ntime_window_seconds = 10', true],
    ['the lookback off and rescan overlap 0', '[hub]\ntime_window_seconds = 0', false],
    ['the lookback off and rescan overlap 10', '[hub]\ntime_window_seconds = 0\nrescan_overlap = 10', true],
  ];
  for (const [name, toml, caught] of lateCases) {
    it(`late lower ids with ${name}`, async () => {
      const t = await setup([{ id: ES, name: 'residenze' }], toml);
      const key = fiscalCode(48);
      t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
      await t.engine.syncEService(ES);
      const p = (k: string) => t.w.sim.pseudonymFor(ES, k);
      t.w.sim.deposit(ES, { signalType: 'CREATE', objectId: p(key), objectType: 'r', signalId: 10 });
      t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: p(fiscalCode(49)), objectType: 'r', signalId: 20 });
      t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: p(key), objectType: 'r', signalId: 30 });
      await t.engine.syncEService(ES);
      t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: p(key), objectType: 'r', signalId: 25 }); // became visible late
      t.w.sim.deposit(ES, { signalType: 'DELETE', objectId: p(key), objectType: 'r', signalId: 40 });
      await t.engine.syncEService(ES);
      await t.engine.syncEService(ES); // a re-read of an already processed window adds nothing
      const ids = t.signalEvents().map((e) => e.signalId).sort((a, b) => a - b);
      expect(ids).toEqual(caught ? [10, 25, 30, 40] : [10, 30, 40]);
      // Re-read signals are counted neither in the database nor in the metric: the two agree.
      const counted = (await t.metrics.signalsSeen.get()).values.reduce((n, v) => n + v.value, 0);
      expect(counted).toBe(new EServiceStore(t.db).get(ES)!.signalsSeen);
      expect(counted).toBe(caught ? 5 : 4);
      t.db.close();
    });
  }

  it('a SEEDUPDATE that becomes visible late: the signals after it are matched again under its seed, nothing is reported', async () => {
    const t = await setup([{ id: ES, name: 'residenze' }], '[hub]\ntime_window_seconds = 10');
    const key = fiscalCode(51);
    t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
    const engine = t.clockEngine(t.clock);
    await engine.syncEService(ES);
    const p = (k: string) => t.w.sim.pseudonymFor(ES, k);
    t.w.sim.deposit(ES, { signalType: 'CREATE', objectId: p(key), objectType: 'r', signalId: 10 });
    // A run that begins a window after the seed was fetched confirms it (no SEEDUPDATE can still
    // hide below what it read); an unconfirmed one would be reported at the late SEEDUPDATE.
    t.tick(11_000);
    await engine.syncEService(ES);
    // The producer rotated at 15 and pseudonymized 20 and 25 with the new seed; 15 is visible only later.
    t.w.sim.addEService({ id: ES, seed: 'rotated-seed-after-15' });
    t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: p(key), objectType: 'r', signalId: 20 });
    t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: p(fiscalCode(52)), objectType: 'r', signalId: 25 });
    await engine.syncEService(ES);
    expect(t.signalEvents().map((e) => e.signalId)).toEqual([10]); // 20 missed under the old seed, for now
    t.w.sim.deposit(ES, { signalType: 'SEEDUPDATE', objectId: '-', objectType: '-', signalId: 15 });
    t.w.sim.deposit(ES, { signalType: 'DELETE', objectId: p(key), objectType: 'r', signalId: 30 });
    await engine.syncEService(ES);
    const events = t.signalEvents();
    expect(events.map((e) => e.signalId)).toEqual([10, 20, 30]);
    expect(events[1]!.epoch).toBe(events[2]!.epoch);
    expect(t.reports()).toEqual([]);
    t.db.close();
  });

  it('a SEEDUPDATE that becomes visible late, the run stopped while its epoch is filled: the next run fills it and matches the signals after it again, nothing is reported', async () => {
    const t = await setup([{ id: ES, name: 'residenze' }], '[hub]\ntime_window_seconds = 10');
    const key = fiscalCode(51);
    t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
    const engine = t.clockEngine(t.clock);
    await engine.syncEService(ES);
    const p = (k: string) => t.w.sim.pseudonymFor(ES, k);
    t.w.sim.deposit(ES, { signalType: 'CREATE', objectId: p(key), objectType: 'r', signalId: 10 });
    t.tick(11_000); // a run a window after the seed's fetch confirms it (see the test above)
    await engine.syncEService(ES);
    t.w.sim.addEService({ id: ES, seed: 'rotated-seed-after-15' });
    t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: p(key), objectType: 'r', signalId: 20 });
    t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: p(fiscalCode(52)), objectType: 'r', signalId: 25 });
    await engine.syncEService(ES);
    t.w.sim.deposit(ES, { signalType: 'SEEDUPDATE', objectId: '-', objectType: '-', signalId: 15 });
    t.w.sim.deposit(ES, { signalType: 'DELETE', objectId: p(key), objectType: 'r', signalId: 30 });
    // Stopped (as by a shutdown or a crash) once the rotation committed, when the fill starts.
    const stop = new AbortController();
    const lines = new PassThrough();
    lines.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('computing the pseudonyms of a seed epoch')) stop.abort(new Error('stopped mid-fill'));
    });
    const remotes = createRemotes(t.w.config, { logger: silentLogger });
    const stopping = new SyncEngine({ db: t.db, config: t.w.config, hub: remotes.hub, crypto: remotes.crypto, logger: createLogger({ destination: lines }), now: t.clock });
    await expect(stopping.syncEService(ES, { signal: stop.signal })).rejects.toThrow();
    const opened = new EpochStore(t.db).forEService(new EServiceStore(t.db).get(ES)!.id).find((e) => e.startSignalId === 15)!;
    expect({ rematchTo: opened.rematchTo, ready: opened.fillState === 'ready' }).toEqual({ rematchTo: 25, ready: false });
    expect(t.signalEvents().map((e) => e.signalId)).toEqual([10]);
    await engine.syncEService(ES);
    const events = t.signalEvents();
    expect(events.map((e) => e.signalId)).toEqual([10, 20, 30]);
    expect(events[1]!.epoch).toBe(events[2]!.epoch);
    expect(new EpochStore(t.db).get(opened.id)!.rematchTo).toBeNull();
    expect(t.reports()).toEqual([]);
    t.db.close();
  });

  it('a SEEDUPDATE that becomes visible late after a signal matched under the old seed: the range is reported', async () => {
    const t = await setup([{ id: ES, name: 'residenze' }], `[hub]\nrescan_overlap = 20`);
    const key = fiscalCode(50);
    t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
    await t.engine.syncEService(ES);
    const p = (k: string) => t.w.sim.pseudonymFor(ES, k);
    t.w.sim.deposit(ES, { signalType: 'CREATE', objectId: p(key), objectType: 'r', signalId: 10 });
    t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: p(key), objectType: 'r', signalId: 20 });
    await t.engine.syncEService(ES);
    // The producer rotated at 15, but that SEEDUPDATE only becomes visible now.
    t.w.sim.addEService({ id: ES, seed: 'rotated-seed-after-15' });
    t.w.sim.deposit(ES, { signalType: 'SEEDUPDATE', objectId: '-', objectType: '-', signalId: 15 });
    t.w.sim.deposit(ES, { signalType: 'DELETE', objectId: p(key), objectType: 'r', signalId: 30 }); // under the new seed
    await t.engine.syncEService(ES);
    expect(t.signalEvents().map((e) => e.signalId)).toEqual([10, 20, 30]);
    expect(t.reports()).toEqual([{ from: 16, to: 20, reason: 'late-seedupdate' }]);
    t.db.close();
  });

  it('subjects added and removed mid-stream: back-matching and no events after removal', async () => {
    const t = await setup([{ id: ES, name: 'residenze' }, { id: ES2, name: 'documenti' }], '');
    const [anna, bruno, carla] = keys(60, 3) as [string, string, string];
    t.writer.upsertBatch([{ key: anna, ref: 'anna', eservices: [ES] }, { key: bruno, ref: 'bruno', eservices: 'all' }]);
    await t.engine.syncEService(ES);
    await t.engine.syncEService(ES2);
    const a1 = t.w.sim.depositForSubject(ES, anna, 'CREATE');
    const c1 = t.w.sim.depositForSubject(ES, carla, 'CREATE'); // carla is not a subject yet
    const b1 = t.w.sim.depositForSubject(ES2, bruno, 'UPDATE');
    const a2 = t.w.sim.depositForSubject(ES2, anna, 'UPDATE'); // anna does not follow ES2
    await t.engine.syncEService(ES);
    await t.engine.syncEService(ES2);
    t.writer.upsertBatch([{ key: carla, ref: 'carla', eservices: 'all' }]); // back-matches c1
    t.writer.removeKeys([bruno]);
    const b2 = t.w.sim.depositForSubject(ES2, bruno, 'DELETE');
    const c2 = t.w.sim.depositForSubject(ES, carla, 'UPDATE');
    await t.engine.syncEService(ES);
    await t.engine.syncEService(ES2);
    const got = t.signalEvents().map((e) => `${e.eserviceId === ES ? 'ES' : 'ES2'}:${e.signalId}:${e.subjectRef}${e.backfilled ? ':backfilled' : ''}`);
    expect(got.sort()).toEqual([`ES:${a1}:anna`, `ES:${c1}:carla:backfilled`, `ES2:${b1}:bruno`, `ES:${c2}:carla`].sort());
    // anna's ES2 signal (she does not follow ES2) and bruno's after his removal: no events
    expect(got.filter((g) => g.startsWith(`ES2:${a2}:`) || g.startsWith(`ES2:${b2}:`))).toEqual([]);
    t.db.close();
  });

  it('back-matching still finds kept signals after an import on the same connection was rolled back', async () => {
    const t = await setup([{ id: ES, name: 'residenze' }], '');
    const carla = fiscalCode(61);
    await t.engine.syncEService(ES);
    const c1 = t.w.sim.depositForSubject(ES, carla, 'CREATE'); // carla is not a subject yet
    await t.engine.syncEService(ES);
    const importCarla = (extraRows: string) =>
      importSubjects(t.db, Readable.from([`key,ref\n${carla},carla\n${extraRows}`]), {
        format: 'csv',
        source: 'test',
        eservices: [{ id: ES, name: 'residenze' }],
        validate: true,
        index: subjectIndexOptions(t.w.config),
        strict: true,
        batchSize: 1,
      });
    // carla's batch is indexed and back-matched, then a bad row rolls the whole file back
    expect(await importCarla('not-a-fiscal-code,x\n')).toMatchObject({ committed: false, rejectedCount: 1 });
    expect(t.signalEvents()).toEqual([]);
    expect(await importCarla('')).toMatchObject({ committed: true, imported: 1 });
    expect(t.signalEvents().map((e) => `${e.signalId}:${e.subjectRef}:${e.backfilled === true}`)).toEqual([`${c1}:carla:true`]);
    // the lookup built for carla is rebuilt once the engine has processed more signals
    const dora = fiscalCode(62);
    const d1 = t.w.sim.depositForSubject(ES, dora, 'CREATE');
    await t.engine.syncEService(ES);
    t.writer.upsertBatch([{ key: dora, ref: 'dora', eservices: 'all' }]);
    expect(t.signalEvents().map((e) => `${e.signalId}:${e.subjectRef}:${e.backfilled === true}`)).toEqual([`${c1}:carla:true`, `${d1}:dora:true`]);
    t.db.close();
  });

  for (const reason of ['scheduler', 'default'] as const) {
    it(`a run aborted by shutdown (${reason} abort reason) leaves the e-service idle, not failing`, async () => {
      const t = await setup([{ id: ES, name: 'residenze' }], '');
      await t.engine.syncEService(ES);
      t.w.sim.generateSignals(ES, 5);
      const ac = new AbortController();
      const abort = () => (reason === 'scheduler' ? ac.abort(new AppError('SHUTTING_DOWN', 'signalhub-sync is shutting down')) : ac.abort());
      t.w.sim.faults.inject('pull', { kind: 'delay', ms: 60_000, times: 1 });
      const run = t.engine.syncEService(ES, { signal: ac.signal });
      setTimeout(abort, 100); // before or during the (delayed) pull: either way mid-run
      await expect(run).rejects.toThrow();
      const row = new EServiceStore(t.db).get(ES)!;
      expect({ state: row.state, lastError: row.lastError, lastErrorCode: row.lastErrorCode }).toEqual({ state: 'idle', lastError: null, lastErrorCode: null });
      t.db.close();
    });
  }
});
