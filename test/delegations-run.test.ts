import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/store/db.js';
import { OutboxStore } from '../src/store/outbox.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import { createEngine, createRemotes } from '../src/sync/runtime.js';
import { silentLogger } from '../src/log.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { fileEventIds, httpGet, metricValue, startRun, storeSubjects } from './run-helpers.js';
import { runCli } from './helpers/cli.js';
import type { SignalEvent } from '../src/events.js';
import { pseudonymRows } from './helpers/pseudonyms.js';

/**
 * Delegations in the running daemon (metrics per tenant, a sink per delegator) and in
 * back-matching (a key a tenant adds later, or an e-service a tenant follows that the key's
 * other tenants do not).
 */

const ES1 = '14141414-1111-4111-8111-000000000001';
const ES2 = '14141414-1111-4111-8111-000000000002';
let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

describe('delegations in the daemon', () => {
  it('metrics count subjects and emitted events per tenant; a sink filtered on one tenant receives only its events', async () => {
    world = await createWorld({
      eservices: [{ id: ES1, name: 'residenze' }],
      toml: `[hub]\npoll_interval_seconds = 1\n\n[http]\nenabled = true\nlisten = "127.0.0.1:0"\n\n[[sinks]]\nname = "all"\ntype = "file"\npath = "all.ndjson"\n\n[[sinks]]\nname = "comune-b"\ntype = "file"\npath = "b.ndjson"\ntenants = ["c_b002"]\n`,
    });
    storeSubjects(world, [
      { key: fiscalCode(1), ref: 'own-1' },
      { key: fiscalCode(2), ref: 'own-2' },
      { key: fiscalCode(2), ref: 'b-2', tenant: 'c_b002' },
      { key: fiscalCode(3), ref: 'b-3', tenant: 'c_b002' },
    ]);
    const s1 = world.sim.depositForSubject(ES1, fiscalCode(1), 'UPDATE', 'x');
    const s2 = world.sim.depositForSubject(ES1, fiscalCode(2), 'UPDATE', 'x');
    const s3 = world.sim.depositForSubject(ES1, fiscalCode(3), 'DELETE', 'x');
    const daemon = startRun(world);
    const url = (await daemon.waitForLog((l) => l.msg === 'health and metrics endpoint listening', 'the HTTP endpoint')).url as string;
    const text = await daemon.until(async () => {
      const t = (await httpGet(`${url}/metrics`)).body;
      return metricValue(t, 'signalhub_events_delivered_total', { sink: 'all' }) === 4 && metricValue(t, 'signalhub_events_delivered_total', { sink: 'comune-b' }) === 2 ? t : undefined;
    }, 'the events delivered');
    expect(metricValue(text, 'signalhub_events_emitted_total', { tenant: '' })).toBe(2);
    expect(metricValue(text, 'signalhub_events_emitted_total', { tenant: 'c_b002' })).toBe(2);
    expect(metricValue(text, 'signalhub_subjects', { tenant: '' })).toBe(2);
    expect(metricValue(text, 'signalhub_subjects', { tenant: 'c_b002' })).toBe(2);
    // The filtered sink moved past the events that are not for it: nothing pending.
    expect(metricValue(text, 'signalhub_sink_pending_events', { sink: 'comune-b' })).toBe(0);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);

    const read = (f: string) => fs.readFileSync(path.join(world!.dir, f), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as SignalEvent);
    expect(read('b.ndjson').map((e) => [e.id, e.subjectRef, e.tenant])).toEqual([
      [`${ES1}:${s2}:tenant:c_b002`, 'b-2', 'c_b002'],
      [`${ES1}:${s3}:tenant:c_b002`, 'b-3', 'c_b002'],
    ]);
    expect(read('all.ndjson').map((e) => e.id)).toEqual([`${ES1}:${s1}`, `${ES1}:${s2}`, `${ES1}:${s2}:tenant:c_b002`, `${ES1}:${s3}:tenant:c_b002`]);
  });
});

describe('delegations through the daemon\'s import queue', () => {
  it('subjects import --queue --tenant [--replace] reaches the daemon with its tenant', async () => {
    world = await createWorld({
      eservices: [{ id: ES1, name: 'residenze' }],
      toml: `[hub]\npoll_interval_seconds = 1\n\n[[sinks]]\nname = "archive"\ntype = "file"\npath = "events.ndjson"\n`,
    });
    const w = world;
    const [anna, bruno, carla] = [fiscalCode(601), fiscalCode(602), fiscalCode(603)];
    storeSubjects(w, [{ key: anna, ref: 'anna' }, { key: carla, ref: 'carla', tenant: 'c_a001' }]);
    const daemon = startRun(w);
    await daemon.waitForLog((l) => l.msg === 'signalhub-sync running', 'the daemon to start');
    const csv = path.join(w.dir, 'a.csv');
    fs.writeFileSync(csv, `key,ref\n${anna},a-anna\n${bruno},a-bruno\n`);
    const queued = await runCli(['--config', w.configFile, 'subjects', 'import', '--queue', '--tenant', 'c_a001', '--replace', '--json', csv], { timeoutMs: 60_000 });
    expect(queued.code, queued.stderr).toBe(0);
    expect(JSON.parse(queued.stdout)).toMatchObject({ imported: 2, removed: 1, committed: true }); // carla left A
    const ids = [anna, bruno, carla].map((k) => w.sim.depositForSubject(ES1, k, 'UPDATE', 'x'));
    const got = await daemon.until(() => {
      const all = fileEventIds(path.join(w.dir, 'events.ndjson'));
      return all.length >= 3 ? all : undefined;
    }, 'the events delivered');
    expect(got).toEqual([`${ES1}:${ids[0]}`, `${ES1}:${ids[0]}:tenant:c_a001`, `${ES1}:${ids[1]}:tenant:c_a001`]);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});

describe('delegations and back-matching', () => {
  it('a key a tenant adds later, or an e-service only one tenant follows, is back-matched for that tenant only', async () => {
    world = await createWorld({
      eservices: [
        { id: ES1, name: 'residenze', includeSignalId: true },
        { id: ES2, name: 'documenti', includeSignalId: true },
      ],
      toml: '[subjects]\nbackfill = true',
    });
    const w = world;
    const db = openDatabase(w.config.database);
    const writer = new SubjectWriter(db, { index: subjectIndexOptions(w.config) });
    const engine = createEngine(w.config, db, createRemotes(w.config, { logger: silentLogger }), { logger: silentLogger });
    // Key 1 is the consumer's own for residenze only.
    writer.upsertBatch([{ key: fiscalCode(1), ref: 'own-1', eservices: [ES1] }]);
    await engine.syncEService(ES1);
    await engine.syncEService(ES2);
    const r1 = w.sim.depositForSubject(ES1, fiscalCode(1), 'UPDATE', 'x');
    const d1 = w.sim.depositForSubject(ES2, fiscalCode(1), 'UPDATE', 'x'); // nobody follows key 1 on documenti yet
    const d2 = w.sim.depositForSubject(ES2, fiscalCode(2), 'CREATE', 'x'); // key 2 is nobody's yet
    await engine.syncEService(ES1);
    await engine.syncEService(ES2);
    const outbox = new OutboxStore(db);
    const ids = () => outbox.all().map((r) => r.eventId);
    expect(ids()).toEqual([`${ES1}:${r1}`]);

    // Tenant A takes key 1 for documenti and key 2 for everything: the kept signals are
    // back-matched for A only; the own subject, which does not follow documenti, gets nothing.
    const outcomes = writer.upsertBatch([
      { key: fiscalCode(1), tenant: 'c_a001', ref: 'a-1', eservices: [ES2] },
      { key: fiscalCode(2), tenant: 'c_a001', ref: 'a-2', eservices: 'all' },
    ]);
    expect(outcomes).toEqual(['new', 'new']);
    const after = outbox.all().map((r) => JSON.parse(r.payload) as SignalEvent);
    expect(after.map((e) => [e.id, e.subjectRef, e.tenant, e.backfilled])).toEqual([
      [`${ES1}:${r1}`, 'own-1', undefined, undefined],
      [`${ES2}:${d1}:tenant:c_a001`, 'a-1', 'c_a001', true],
      [`${ES2}:${d2}:tenant:c_a001`, 'a-2', 'c_a001', true],
    ]);

    // New signals: each tenant hears about the e-services it follows for the key.
    const r2 = w.sim.depositForSubject(ES1, fiscalCode(1), 'DELETE', 'x');
    const d3 = w.sim.depositForSubject(ES2, fiscalCode(1), 'DELETE', 'x');
    await engine.syncEService(ES1);
    await engine.syncEService(ES2);
    expect(ids().slice(3)).toEqual([`${ES1}:${r2}`, `${ES2}:${d3}:tenant:c_a001`]);

    // The key is one subject row, indexed for the union of its tenants' e-services.
    const indexedFor = () => {
      const live = db.prepare('SELECT e.id AS epoch, s.eservice_id AS es FROM epochs e JOIN eservices s ON s.id = e.eservice WHERE e.retired_at IS NULL').all() as { epoch: number; es: string }[];
      const epochsOfKey1 = new Set(pseudonymRows(db).filter((r) => r.subjectId === 1).map((r) => r.epoch));
      return [...new Set(live.filter((e) => epochsOfKey1.has(e.epoch)).map((e) => e.es))].sort();
    };
    expect(db.prepare('SELECT COUNT(*) FROM subjects').pluck().get()).toBe(2);
    expect(indexedFor()).toEqual([ES1, ES2].sort());

    // Narrowing A back to residenze leaves key 1 indexed for residenze only, still A's and own.
    writer.upsertBatch([{ key: fiscalCode(1), tenant: 'c_a001', ref: 'a-1', eservices: [ES1] }]);
    expect(indexedFor()).toEqual([ES1]);
    const r3 = w.sim.depositForSubject(ES1, fiscalCode(1), 'UPDATE', 'x');
    const d4 = w.sim.depositForSubject(ES2, fiscalCode(1), 'UPDATE', 'x');
    await engine.syncEService(ES1);
    await engine.syncEService(ES2);
    expect(ids().slice(5)).toEqual([`${ES1}:${r3}`, `${ES1}:${r3}:tenant:c_a001`]);
    expect(d4).toBeGreaterThan(d3);

    // The own membership goes: A keeps the key (and its pseudonyms); then A's goes: the key is gone.
    expect(writer.removeKeys([fiscalCode(1)])).toEqual([true]);
    expect(indexedFor()).toEqual([ES1]);
    expect(writer.removeKeys([fiscalCode(1)], 'c_a001')).toEqual([true]);
    expect(indexedFor()).toEqual([]);
    expect(db.prepare('SELECT COUNT(*) FROM subjects').pluck().get()).toBe(1);
    db.close();
  });
});
