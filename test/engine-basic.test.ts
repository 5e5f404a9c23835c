import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/store/db.js';
import { OutboxStore } from '../src/store/outbox.js';
import { ResyncStore } from '../src/store/resync.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import { createEngine, createRemotes } from '../src/sync/runtime.js';
import { silentLogger } from '../src/log.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';

const ES = '11111111-1111-4111-8111-111111111111';
let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

function setup(w: World) {
  const db = openDatabase(w.config.database);
  const writer = new SubjectWriter(db, { index: subjectIndexOptions(w.config) });
  const engine = createEngine(w.config, db, createRemotes(w.config, { logger: silentLogger }), { logger: silentLogger });
  return { db, writer, engine, outbox: new OutboxStore(db), resync: new ResyncStore(db) };
}

describe('sync engine against the simulator', () => {
  it('matches exactly the signals of local subjects across rotations with seed history', async () => {
    world = await createWorld({ eservices: [{ id: ES, name: 'residenze', includeSignalId: true, historyDepth: 10, cryptoHistory: true }], toml: '[crypto]\nrotation_wait_seconds = 1' });
    const { db, writer, engine, outbox, resync } = setup(world);
    const subjects = Array.from({ length: 40 }, (_, i) => fiscalCode(i + 1));
    writer.upsertBatch(subjects.slice(0, 20).map((key, i) => ({ key, ref: `ref-${i}`, eservices: 'all' })));
    await engine.syncEService(ES); // epoch 0 before anything is deposited
    const expected: string[] = [];
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 300; i++) {
        const n = (i * 7 + round * 13) % 40;
        const id = world.sim.depositForSubject(ES, subjects[n]!, 'UPDATE', 'domicile');
        if (n < 20) expected.push(`${ES}:${id}`);
      }
      if (round < 3) world.sim.rotateSeed(ES);
    }
    const outcome = await engine.syncEService(ES);
    expect(outcome.caughtUp).toBe(true);
    const events = outbox.all().map((r) => r.eventId);
    expect(events.sort()).toEqual(expected.sort());
    expect(resync.list()).toEqual([]);
    db.close();
  });

  it('reports the epoch it could not know when away across two rotations without history', async () => {
    world = await createWorld({ eservices: [{ id: ES, name: 'residenze' }], toml: '[crypto]\nrotation_wait_seconds = 0.5' });
    const { db, writer, engine, outbox, resync } = setup(world);
    const key = fiscalCode(7);
    writer.upsertBatch([{ key, ref: 'mario', eservices: 'all' }]);
    await engine.syncEService(ES);
    const before = world.sim.depositForSubject(ES, key, 'CREATE', 'domicile');
    const s1 = world.sim.rotateSeed(ES);
    const lost1 = world.sim.depositForSubject(ES, key, 'UPDATE', 'domicile');
    const lost2 = world.sim.depositForSubject(ES, key, 'UPDATE', 'domicile');
    const s2 = world.sim.rotateSeed(ES);
    const after = world.sim.depositForSubject(ES, key, 'DELETE', 'domicile');
    await engine.syncEService(ES);
    expect(outbox.all().filter((r) => r.kind === 'signal').map((r) => r.signalId)).toEqual([before, after]);
    const reports = resync.list();
    expect(reports.map((r) => [r.fromSignalId, r.toSignalId, r.reason])).toEqual([[lost1, lost2, 'seed-unchanged']]);
    expect(s1).toBeLessThan(lost1);
    expect(s2).toBeGreaterThan(lost2);
    expect(outbox.all().filter((r) => r.kind === 'resync-required')).toHaveLength(1);
    db.close();
  });
});

describe('engine logs', () => {
  it('never contain a seed, a subject key, a voucher or a private key, even at trace level', async () => {
    const { PassThrough } = await import('node:stream');
    const { createLogger } = await import('../src/log.js');
    const fs = await import('node:fs');
    world = await createWorld({ eservices: [{ id: ES, name: 'residenze', staleReads: 1000 }], toml: '[crypto]\nrotation_wait_seconds = 0.3' });
    const sink = new PassThrough();
    let logged = '';
    sink.on('data', (d: Buffer) => (logged += d.toString()));
    const logger = createLogger({ level: 'trace', destination: sink });
    const db = openDatabase(world.config.database);
    const writer = new SubjectWriter(db, { index: subjectIndexOptions(world.config) });
    const engine = createEngine(world.config, db, createRemotes(world.config, { logger }), { logger });
    const key = fiscalCode(9);
    writer.upsertBatch([{ key, ref: 'ref-9', eservices: 'all' }]);
    await engine.syncEService(ES);
    const firstSeed = world.sim.currentSeed(ES)!.seed;
    world.sim.depositForSubject(ES, key, 'UPDATE');
    world.sim.rotateSeed(ES); // stale reads: the rotation ends in a warning and a resync report
    world.sim.depositForSubject(ES, key, 'UPDATE');
    await engine.syncEService(ES);
    world.sim.faults.inject('pull', { kind: 'status', status: 503, times: 1 });
    await engine.syncEService(ES);
    expect(logged).toContain('resync required');
    const pem = fs.readFileSync(world.config.pdnd.m2m.privateKeyFile, 'utf8');
    const secrets = [firstSeed, world.sim.currentSeed(ES)!.seed, key, pem.split('\n')[1]!];
    for (const secret of secrets) expect(logged).not.toContain(secret);
    expect(logged).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/); // no JWT (voucher, assertion)
    db.close();
  });
});
