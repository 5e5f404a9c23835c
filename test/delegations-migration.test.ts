import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../src/store/db.js';
import { MIGRATIONS } from '../src/store/migrations.js';
import { OutboxStore } from '../src/store/outbox.js';
import { SubjectStore } from '../src/store/subjects.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import { createEngine, createRemotes } from '../src/sync/runtime.js';
import { silentLogger } from '../src/log.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';

/**
 * Migration 4 (subject tenants) on a database written before it: every stored subject becomes
 * the consumer's own, with its ref and e-service list, and the events it produces afterwards
 * are exactly those (ids and payloads) a database that never knew tenants would produce.
 */

const ES = '14141414-0000-4000-8000-0000000000aa';
const OTHER = '14141414-0000-4000-8000-0000000000bb';
let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

const K = (n: number) => fiscalCode(n);

/** A version-3 database as the code of that version left it: subjects, an event, a sink position. */
function versionThreeDatabase(file: string): void {
  const db = openDatabase(file, { migrations: MIGRATIONS.filter((m) => m.version <= 3) });
  expect(db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get()).toEqual({ v: 3 });
  const insert = db.prepare('INSERT INTO subjects (key, ref, all_eservices, added_at) VALUES (?, ?, ?, ?)');
  db.transaction(() => {
    insert.run(K(1), 'r1', 1, 1000);
    const two = Number(insert.run(K(2), null, 0, 1000).lastInsertRowid);
    db.prepare('INSERT INTO subject_eservices (subject_id, eservice_id) VALUES (?, ?)').run(two, ES);
    const three = Number(insert.run(K(3), 'r3', 0, 1000).lastInsertRowid);
    db.prepare('INSERT INTO subject_eservices (subject_id, eservice_id) VALUES (?, ?)').run(three, OTHER);
    const old = { id: `${ES}:7`, type: 'signal', eserviceId: ES, eserviceName: 'residenze', signalId: 7, signalType: 'UPDATE', objectType: 'x', objectId: 'abc', subjectRef: 'r1', epoch: 1, receivedAt: '2026-01-01T00:00:00.000Z' };
    db.prepare('INSERT INTO outbox (event_id, eservice_id, signal_id, kind, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)').run(old.id, ES, 7, 'signal', JSON.stringify(old), 1000);
    db.prepare('INSERT INTO outbox (event_id, eservice_id, signal_id, kind, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)').run(`${ES}:resync:1`, ES, null, 'resync-required', '{"type":"resync-required"}', 1000);
  })();
  db.close();
}

function engineOn(w: World, db: Db) {
  return createEngine(w.config, db, createRemotes(w.config, { logger: silentLogger }), { logger: silentLogger });
}

/** Events as delivered, without the time they were received (the two databases pull at different moments). */
function events(db: Db): Record<string, unknown>[] {
  return new OutboxStore(db)
    .all()
    .filter((r) => r.kind === 'signal' && r.signalId !== 7)
    .map((r) => {
      const { receivedAt: _r, epoch: _e, ...rest } = JSON.parse(r.payload) as Record<string, unknown>;
      return rest;
    });
}

describe('migration 5: subjects stored before tenants', () => {
  it('keeps every subject as the consumer\'s own and produces identical event ids and payloads', async () => {
    world = await createWorld({ eservices: [{ id: ES, name: 'residenze', includeSignalId: true }] });
    const w = world;
    versionThreeDatabase(w.config.database);

    const migrated = openDatabase(w.config.database);
    const store = new SubjectStore(migrated);
    expect(store.countByTenant()).toEqual([{ tenant: '', subjects: 3 }]);
    expect(store.memberships(store.findByKey(K(1))!.id)).toEqual([{ subjectId: 1, tenant: '', ref: 'r1', eservices: 'all', addedAt: 1000 }]);
    expect(store.memberships(store.findByKey(K(2))!.id)).toEqual([{ subjectId: 2, tenant: '', ref: null, eservices: [ES], addedAt: 1000 }]);
    expect(store.memberships(store.findByKey(K(3))!.id)).toEqual([{ subjectId: 3, tenant: '', ref: 'r3', eservices: [OTHER], addedAt: 1000 }]);
    // The event written before the migration is the own subjects' for a sink routed by tenant;
    // the resync report goes to every tenant.
    const outbox = new OutboxStore(migrated);
    expect(outbox.readAfter(0, 10, { tenants: [''] }).map((r) => r.eventId)).toEqual([`${ES}:7`, `${ES}:resync:1`]);
    expect(outbox.readAfter(0, 10, { tenants: ['c_a001'] }).map((r) => r.eventId)).toEqual([`${ES}:resync:1`]);
    expect(outbox.readAfter(0, 10, { signalTypes: ['UPDATE'] }).map((r) => r.eventId)).toEqual([`${ES}:7`, `${ES}:resync:1`]);
    expect(outbox.readAfter(0, 10, { signalTypes: ['DELETE'] }).map((r) => r.eventId)).toEqual([`${ES}:resync:1`]);

    // The same subjects in a database created by this version, through the import path.
    const fresh = openDatabase(path.join(w.dir, 'fresh.db'));
    new SubjectWriter(fresh, { index: subjectIndexOptions(w.config) }).upsertBatch([
      { key: K(1), ref: 'r1', eservices: 'all' },
      { key: K(2), ref: null, eservices: [ES] },
      { key: K(3), ref: 'r3', eservices: [OTHER] },
    ]);

    const a = engineOn(w, migrated);
    const b = engineOn(w, fresh);
    await a.syncEService(ES);
    await b.syncEService(ES);
    const deposited = [1, 2, 3, 4, 1, 2].map((n) => ({ n, id: w.sim.depositForSubject(ES, K(n), n === 2 ? 'DELETE' : 'UPDATE', 'record') }));
    w.sim.rotateSeed(ES);
    deposited.push({ n: 1, id: w.sim.depositForSubject(ES, K(1), 'CREATE', 'record') });
    await a.syncEService(ES);
    await b.syncEService(ES);

    const want = deposited.filter((d) => d.n === 1 || d.n === 2).map((d) => `${ES}:${d.id}`);
    expect(events(migrated).map((e) => e.id)).toEqual(want);
    expect(events(migrated)).toEqual(events(fresh));
    for (const e of events(migrated)) expect(e).not.toHaveProperty('tenant');

    // A delegator added afterwards for key 1 gets its own ids; the own ids do not change.
    new SubjectWriter(migrated, { index: subjectIndexOptions(w.config) }).upsertBatch([{ key: K(1), tenant: 'c_a001', ref: 'a1', eservices: 'all' }]);
    const next = w.sim.depositForSubject(ES, K(1), 'UPDATE', 'record');
    await a.syncEService(ES);
    const last = events(migrated).filter((e) => e.signalId === next);
    expect(last).toEqual([
      expect.objectContaining({ id: `${ES}:${next}`, subjectRef: 'r1' }),
      expect.objectContaining({ id: `${ES}:${next}:tenant:c_a001`, subjectRef: 'a1', tenant: 'c_a001' }),
    ]);
    expect(last[0]).not.toHaveProperty('tenant');
    migrated.close();
    fresh.close();
  });
});
