import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/store/db.js';
import { OutboxStore } from '../src/store/outbox.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import { createEngine, createRemotes } from '../src/sync/runtime.js';
import { silentLogger } from '../src/log.js';
import { DEFAULT_PRODUCER_AUDIENCE } from '../src/simulator/index.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';

/**
 * SPEC §4b end to end through the sync engine: a producer that requires DPoP (alone, and with
 * the audit pattern) yields exactly the outbox a Bearer producer does for the same signals.
 */
const BEARER = '51111111-1111-4111-8111-111111111111';
const DPOP = '52222222-2222-4222-8222-222222222222';
const DPOP_AUDIT = '53333333-3333-4333-8333-333333333333';
const SEED = 'c2hhcmVkLXNlZWQtZm9yLWRwb3A=';
const AUDIT_TOML = `audit = { audience = "${DEFAULT_PRODUCER_AUDIENCE}", claims = { userID = "op-1", LoA = "LoA3" } }\n`;

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

describe('a DPoP e-service syncs exactly like a Bearer one', () => {
  it('same signals, same rotations: the same events (DPoP, and DPoP with audit), and every proof accepted', async () => {
    const common = { seed: SEED, includeSignalId: true, historyDepth: 10, cryptoHistory: true };
    world = await createWorld({
      eservices: [
        { id: BEARER, name: 'bearer', ...common },
        { id: DPOP, name: 'dpop', ...common, requireDpop: true, dpopNonce: true, toml: 'voucher_type = "dpop"\n' },
        { id: DPOP_AUDIT, name: 'dpop-audit', ...common, requireDpop: true, requireAudit: true, toml: `voucher_type = "dpop"\n${AUDIT_TOML}` },
      ],
      toml: '[crypto]\nrotation_wait_seconds = 1',
    });
    const w = world;
    const db = openDatabase(w.config.database);
    const writer = new SubjectWriter(db, { index: subjectIndexOptions(w.config) });
    const engine = createEngine(w.config, db, createRemotes(w.config, { logger: silentLogger }), { logger: silentLogger });
    const subjects = Array.from({ length: 30 }, (_, i) => fiscalCode(i + 500));
    writer.upsertBatch(subjects.slice(0, 15).map((key, i) => ({ key, ref: `ref-${i}`, eservices: 'all' })));
    const ids = [BEARER, DPOP, DPOP_AUDIT];
    for (const id of ids) await engine.syncEService(id);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 60; i++) {
        const n = (i * 7 + round * 11) % 30;
        for (const id of ids) w.sim.depositForSubject(id, subjects[n]!, i % 3 === 0 ? 'DELETE' : 'UPDATE', 'domicile');
      }
      if (round < 2) for (const id of ids) w.sim.rotateSeed(id, `${SEED}-${round}`);
    }
    for (const id of ids) expect((await engine.syncEService(id)).caughtUp).toBe(true);

    const outbox = new OutboxStore(db).all();
    const eventsOf = (id: string) =>
      outbox
        .filter((r) => r.eserviceId === id)
        .map((r) => {
          // Per e-service by nature: its id and name, when it was received, and the epoch number (a counter shared by all e-services).
          const { eserviceName: _n, receivedAt: _r, epoch: _e, ...event } = JSON.parse(r.payload.split(id).join('<eservice>')) as Record<string, unknown>;
          return { signalId: r.signalId, kind: r.kind, event };
        });
    const bearer = eventsOf(BEARER);
    expect(bearer.filter((e) => e.kind === 'signal').length).toBeGreaterThan(60);
    expect(eventsOf(DPOP)).toEqual(bearer);
    expect(eventsOf(DPOP_AUDIT)).toEqual(bearer);
    // The nonce demand is the only DPoP refusal: each one was answered by a retry with the nonce.
    expect(new Set(w.sim.stats().dpopRejections)).toEqual(new Set(['DPoP proof nonce missing or stale']));
    db.close();
  });

  it('the control: a DPoP-only producer configured as bearer yields no events and a clear refusal', async () => {
    world = await createWorld({ eservices: [{ id: DPOP, name: 'dpop', seed: SEED, requireDpop: true }] });
    const w = world;
    const db = openDatabase(w.config.database);
    const writer = new SubjectWriter(db, { index: subjectIndexOptions(w.config) });
    const engine = createEngine(w.config, db, createRemotes(w.config, { logger: silentLogger }), { logger: silentLogger });
    writer.upsertBatch([{ key: fiscalCode(1), ref: 'r', eservices: 'all' }]);
    w.sim.depositForSubject(DPOP, fiscalCode(1), 'UPDATE');
    const outcome = await engine.syncEService(DPOP).catch((err: unknown) => err);
    const text = outcome instanceof Error ? outcome.message : JSON.stringify(outcome);
    expect(text).toContain('voucher_type');
    expect(new OutboxStore(db).all().filter((r) => r.kind === 'signal')).toEqual([]);
    db.close();
  });
});
