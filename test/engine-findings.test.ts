import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/log.js';
import { Metrics } from '../src/metrics.js';
import { openDatabase } from '../src/store/db.js';
import { EServiceStore } from '../src/store/eservices.js';
import { OutboxStore } from '../src/store/outbox.js';
import { ResyncStore } from '../src/store/resync.js';
import { SkippedSignalStore } from '../src/store/skipped-signals.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import { SyncEngine } from '../src/sync/engine.js';
import { createRemotes } from '../src/sync/runtime.js';
import { runCli } from './helpers/cli.js';
import { createWorld, fiscalCode, type World, type WorldEService } from './helpers/world.js';

/**
 * The four holes issue 12 found, each as the scenario that showed it, against the simulator
 * over HTTP with the real clients: every one of these failed on the engine before the fix.
 */
const ES = '44444444-4444-4444-8444-444444444444';
let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

async function setup(eservice: WorldEService, toml = '') {
  world = await createWorld({ eservices: [eservice], toml });
  const w = world;
  const db = openDatabase(w.config.database);
  const lines: Record<string, any>[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line.trim()) lines.push(JSON.parse(line));
      done();
    },
  });
  const logger = createLogger({ level: 'debug', destination: sink });
  // The rotation race is waited out on a fake clock: slept time is counted, never spent.
  let slept = 0;
  const start = Date.now();
  const metrics = new Metrics();
  const remotes = createRemotes(w.config, { logger });
  const engine = new SyncEngine({
    db,
    config: w.config,
    hub: remotes.hub,
    crypto: remotes.crypto,
    logger,
    metrics,
    now: () => start + slept + (Date.now() - start),
    sleep: async (ms) => {
      slept += ms;
    },
  });
  const writer = new SubjectWriter(db, { index: subjectIndexOptions(w.config) });
  const outbox = new OutboxStore(db);
  const reports = () => new ResyncStore(db).list().map((r) => ({ from: r.fromSignalId, to: r.toSignalId, reason: r.reason }));
  const events = () => outbox.all().filter((r) => r.kind === 'signal').map((r) => r.signalId!).sort((a, b) => a - b);
  return { w, db, engine, writer, outbox, reports, events, lines, metrics, slept: () => slept };
}

const subjects = Array.from({ length: 12 }, (_, i) => fiscalCode(300 + i));

/** Deposits `perEpoch` signals for local subjects (and strangers) then rotates, `rotations` times. */
function backlog(w: World, rotations: number, perEpoch: number): { local: number[]; seedUpdates: number[] } {
  const local: number[] = [];
  const seedUpdates: number[] = [];
  for (let r = 0; r <= rotations; r++) {
    for (let i = 0; i < perEpoch; i++) {
      const n = (i * 5 + r) % subjects.length;
      const id = w.sim.depositForSubject(ES, subjects[n]!, 'UPDATE', 'residence');
      if (n < 8) local.push(id);
    }
    if (r < rotations) seedUpdates.push(w.sim.rotateSeed(ES));
  }
  return { local, seedUpdates };
}

describe('issue 12 findings, each a regression test', () => {
  it('1. a fresh start with crypto_history and no signalId in the answer recovers every epoch of a backlog spanning three rotations', async () => {
    const t = await setup({ id: ES, name: 'residenze', historyDepth: 10, includeSignalId: false, cryptoHistory: true });
    t.writer.upsertBatch(subjects.slice(0, 8).map((key, i) => ({ key, ref: `r${i}`, eservices: 'all' })));
    const { local } = backlog(t.w, 3, 30);
    const outcome = await t.engine.syncEService(ES);
    expect(outcome.caughtUp).toBe(true);
    expect(t.events()).toEqual(local);
    expect(t.reports()).toEqual([]);
    expect(t.slept()).toBe(0);
    t.db.close();
  });

  it('1b. the seed a history answer gives for S equals the one assumed for the backlog: the backlog is reported at once, the rest matched, no wait', async () => {
    const t = await setup({ id: ES, name: 'residenze', historyDepth: 10, includeSignalId: false, cryptoHistory: true }, '[crypto]\nrotation_wait_seconds = 120');
    t.writer.upsertBatch(subjects.slice(0, 8).map((key, i) => ({ key, ref: `r${i}`, eservices: 'all' })));
    const first = backlog(t.w, 0, 20).local;
    const S = t.w.sim.rotateSeed(ES);
    const after = backlog(t.w, 0, 20).local;
    // An operator starts the e-service past its first signal: the seed before S cannot be had.
    new EServiceStore(t.db).ensure(ES, 'residenze', Date.now());
    new EServiceStore(t.db).setCursor(ES, 1);
    await t.engine.syncEService(ES);
    expect(t.events()).toEqual(after);
    const beforeS = first.filter((id) => id > 1);
    expect(t.reports()).toEqual([{ from: 2, to: S - 1, reason: 'backlog-predates-seed' }]);
    expect(beforeS.every((id) => id >= 2 && id < S)).toBe(true);
    expect(t.slept()).toBe(0);
    t.db.close();
  });

  it('2. a page holding an empty objectId, an empty objectType and a type FROBNICATE is processed; the skipped signals are in status --json and the metric', async () => {
    const t = await setup({ id: ES, name: 'residenze' });
    const key = subjects[0]!;
    t.writer.upsertBatch([{ key, ref: 'mario', eservices: 'all' }]);
    const p = t.w.sim.pseudonymFor(ES, key);
    t.w.sim.deposit(ES, { signalType: 'CREATE', objectId: p, objectType: 'residence', signalId: 1 });
    t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: '', objectType: 'residence', signalId: 2 });
    t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: p, objectType: '', signalId: 3 });
    t.w.sim.deposit(ES, { signalType: 'FROBNICATE', objectId: p, objectType: 'residence', signalId: 4 });
    t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: 'not-a-pseudonym', objectType: 'residence', signalId: 5 });
    t.w.sim.deposit(ES, { signalType: 'DELETE', objectId: p, objectType: 'residence', signalId: 6 });
    const outcome = await t.engine.syncEService(ES);
    expect(outcome.cursor).toBe(6);
    const delivered = t.outbox.all().map((r) => JSON.parse(r.payload));
    expect(delivered.map((e) => [e.signalId, e.signalType])).toEqual([[1, 'CREATE'], [4, 'FROBNICATE'], [6, 'DELETE']]);
    expect(new SkippedSignalStore(t.db).counts()).toEqual([
      { eserviceId: ES, reason: 'bad-object-type', count: 1, lastSignalId: 3 },
      { eserviceId: ES, reason: 'empty-object-id', count: 1, lastSignalId: 2 },
      { eserviceId: ES, reason: 'undecodable-object-id', count: 1, lastSignalId: 5 },
    ]);
    const skippedMetric = (await t.metrics.signalsSkipped.get()).values.map((v) => [v.labels.reason, v.value]);
    expect(skippedMetric.sort()).toEqual([['bad-object-type', 1], ['empty-object-id', 1], ['undecodable-object-id', 1]]);
    // One warn line per skipped signal, naming its id and never its objectId.
    const warned = t.lines.filter((l) => l.msg?.startsWith('signal skipped'));
    expect(warned.map((l) => l.signalId)).toEqual([2, 3, 5]);
    expect(JSON.stringify(warned)).not.toContain('not-a-pseudonym');
    t.db.close();
    const status = await runCli(['status', '--json', '--config', t.w.configFile]);
    expect(status.code).toBe(0);
    const json = JSON.parse(status.stdout);
    const es = json.eservices.find((e: { id: string }) => e.id === ES);
    expect(es.skippedSignals).toEqual({ 'bad-object-type': 1, 'empty-object-id': 1, 'undecodable-object-id': 1 });
  });

  it('3. a lower id pushed inside the time window after a higher one was seen is matched with the production default (time_window_seconds = 10)', async () => {
    const t = await setup({ id: ES, name: 'residenze' }, '[hub]\ntime_window_seconds = 10');
    const key = subjects[1]!;
    t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
    const p = t.w.sim.pseudonymFor(ES, key);
    t.w.sim.deposit(ES, { signalType: 'CREATE', objectId: p, objectType: 'r', signalId: 50 });
    await t.engine.syncEService(ES);
    expect(t.events()).toEqual([50]);
    // The real server accepts 40 while 50 is younger than its window; 40 becomes visible later.
    t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: p, objectType: 'r', signalId: 40 });
    await t.engine.syncEService(ES);
    expect(t.events()).toEqual([40, 50]);
    t.db.close();
  });

  it('4. a fresh start over a backlog spanning three rotations (no history) waits for the rotation race at most once, and says what for', async () => {
    const t = await setup({ id: ES, name: 'residenze' }, '[crypto]\nrotation_wait_seconds = 120');
    t.writer.upsertBatch(subjects.slice(0, 8).map((key, i) => ({ key, ref: `r${i}`, eservices: 'all' })));
    const { local, seedUpdates } = backlog(t.w, 3, 20);
    await t.engine.syncEService(ES);
    expect(t.slept()).toBeLessThanOrEqual(120_000);
    const waits = t.lines.filter((l) => l.msg?.startsWith('waiting for the producer'));
    expect(waits).toHaveLength(1);
    expect(waits[0]).toMatchObject({ level: 'info', seedupdate: seedUpdates[0], reason: 'seed-unchanged' });
    expect(Date.parse(waits[0]!.until)).toBeGreaterThan(0);
    // Without history only the current seed can be had: the last epoch is matched, the others reported.
    const last = seedUpdates.at(-1)!;
    expect(t.events()).toEqual(local.filter((id) => id > last));
    const reported = t.reports();
    expect(reported.map((r) => r.reason)).toEqual(['backlog-predates-seed', 'seed-unchanged', 'seed-unchanged']);
    for (const id of local.filter((i) => i < last)) expect(reported.some((r) => r.from <= id && id <= r.to)).toBe(true);
    t.db.close();
  });

  it('a first run asks the hub before the producer: a hub 403 is what it reports, not the producer 404 behind it', async () => {
    const t = await setup({ id: ES, name: 'residenze' });
    t.w.sim.faults.inject('pull', { kind: 'status', status: 403, times: 1 });
    t.w.sim.faults.inject('crypto', { kind: 'status', status: 404, times: 1 });
    await expect(t.engine.syncEService(ES)).rejects.toMatchObject({ code: 'HUB_FORBIDDEN' });
    t.db.close();
  });

  it('an identity e-service (SPEC §8b) matches objectIds in clear against normalized keys, never asks for crypto info, and follows SEEDUPDATEs harmlessly', async () => {
    const t = await setup({ id: ES, name: 'imprese', toml: '[eservices.recipe]\nencoding = "identity"' });
    const [a, b] = [subjects[0]!, subjects[1]!];
    t.writer.upsertBatch([{ key: a, ref: 'a', eservices: 'all' }]);
    // Any crypto-info request would fail the run.
    t.w.sim.faults.inject('crypto', { kind: 'status', status: 500, times: 1000 });
    t.w.sim.deposit(ES, { signalType: 'CREATE', objectId: a, objectType: 'impresa', signalId: 1 });
    t.w.sim.deposit(ES, { signalType: 'CREATE', objectId: b, objectType: 'impresa', signalId: 2 });
    t.w.sim.rotateSeed(ES);
    t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: `  ${a.toLowerCase()} `, objectType: 'impresa', signalId: 10 });
    await t.engine.syncEService(ES);
    expect(t.outbox.all().map((r) => JSON.parse(r.payload)).map((e) => [e.signalId, e.subjectRef])).toEqual([[1, 'a'], [10, 'a']]);
    expect(t.reports()).toEqual([]);
    // A subject added later is back-matched from the signal log like any other.
    t.writer.upsertBatch([{ key: b, ref: 'b', eservices: 'all' }]);
    expect(t.events()).toEqual([1, 2, 10]);
    t.db.close();
  });

  it('the lookback re-reads at most lookback_max_signals behind the cursor and never uses up a run\'s page budget', async () => {
    const t = await setup({ id: ES, name: 'residenze' }, '[hub]\npage_size = 5\nlookback_max_signals = 12\ntime_window_seconds = 10');
    const key = subjects[2]!;
    t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
    for (let i = 0; i < 40; i++) t.w.sim.depositForSubject(ES, key, 'UPDATE', 'r');
    await t.engine.syncEService(ES); // 40 signals seen just now: all inside the lookback's time
    const pullsBefore = t.w.sim.stats().requests.pull ?? 0;
    const more = Array.from({ length: 10 }, () => t.w.sim.depositForSubject(ES, key, 'UPDATE', 'r'));
    const outcome = await t.engine.syncEService(ES, { maxPages: 1 });
    // Re-read pages (12 signals back, pages of 5) are free; the run stops after its first page
    // that moves the cursor, having processed new signals.
    const fresh = more.filter((id) => id <= outcome.cursor).length;
    expect(fresh).toBeGreaterThan(0);
    expect(outcome.signals).toBe(fresh);
    expect((t.w.sim.stats().requests.pull ?? 0) - pullsBefore).toBeLessThanOrEqual(5);
    await t.engine.syncEService(ES);
    expect(new EServiceStore(t.db).get(ES)!.cursor).toBe(more.at(-1));
    t.db.close();
  });

  it('a lower id that becomes visible after a higher one is still matched when the next run comes long after the window (a daemon polling every minute)', async () => {
    const t = await setup({ id: ES, name: 'residenze' }, '[hub]\ntime_window_seconds = 10');
    const key = subjects[3]!;
    t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
    let now = Date.now();
    const remotes = createRemotes(t.w.config, { logger: createLogger({ level: 'silent' }) });
    const engine = new SyncEngine({ db: t.db, config: t.w.config, hub: remotes.hub, crypto: remotes.crypto, now: () => now });
    const p = t.w.sim.pseudonymFor(ES, key);
    t.w.sim.deposit(ES, { signalType: 'CREATE', objectId: p, objectType: 'r', signalId: 50 });
    await engine.syncEService(ES);
    t.w.sim.deposit(ES, { signalType: 'UPDATE', objectId: p, objectType: 'r', signalId: 40 });
    now += 60_000; // the next poll, six windows later
    await engine.syncEService(ES);
    expect(t.events()).toEqual([40, 50]);
    now += 60_000; // and the one after re-reads nothing new
    await engine.syncEService(ES);
    expect(t.events()).toEqual([40, 50]);
    t.db.close();
  });

  it('an operator cursor moved forward is not undone by the lookback (the model test\'s F2)', async () => {
    const t = await setup({ id: ES, name: 'residenze' }, '[hub]\ntime_window_seconds = 10');
    const key = subjects[4]!;
    t.writer.upsertBatch([{ key, ref: 'x', eservices: 'all' }]);
    const skipped = Array.from({ length: 30 }, () => t.w.sim.depositForSubject(ES, key, 'UPDATE', 'r'));
    await t.engine.syncEService(ES);
    expect(t.events()).toEqual(skipped);
    const ahead = Array.from({ length: 30 }, () => t.w.sim.depositForSubject(ES, key, 'UPDATE', 'r'));
    // The operator skips the first 20 of these on purpose.
    new EServiceStore(t.db).setCursor(ES, ahead[19]!);
    await t.engine.syncEService(ES);
    await t.engine.syncEService(ES); // and a second run, whose lookback reaches back to the skip
    expect(t.events()).toEqual([...skipped, ...ahead.slice(20)]);
    t.db.close();
  });
});
