/**
 * Issue 12, through the real simulator over HTTP with the real hub and crypto-info clients: a
 * fresh start over a backlog spanning three rotations, with a producer in every mode. The
 * expectation is derived from the producer's behaviour alone (which seeds it keeps, whether it
 * says `signalId`), never from the engine: every event whose seed history makes knowable is in
 * the outbox, every other local signal is inside a closed resync report, and no report covers
 * a signal whose seed could be had.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/store/db.js';
import { OutboxStore } from '../src/store/outbox.js';
import { ResyncStore } from '../src/store/resync.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import { SyncEngine } from '../src/sync/engine.js';
import { createRemotes } from '../src/sync/runtime.js';
import { silentLogger } from '../src/log.js';
import { modelPseudonym } from './helpers/engine-model.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';

const ES = '55555555-5555-4555-8555-555555555555';
const ROTATIONS = 3;
let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

interface Mode {
  name: string;
  cryptoHistory: boolean;
  historyDepth: number;
  includeSignalId: boolean;
  staleReads?: number;
}

const MODES: Mode[] = [
  { name: 'history (depth 10) with signalId in the answer', cryptoHistory: true, historyDepth: 10, includeSignalId: true },
  { name: 'history (depth 10) without signalId', cryptoHistory: true, historyDepth: 10, includeSignalId: false },
  { name: 'history (depth 2: the two newest seeds) with signalId', cryptoHistory: true, historyDepth: 2, includeSignalId: true },
  { name: 'history (depth 2) without signalId', cryptoHistory: true, historyDepth: 2, includeSignalId: false },
  { name: 'no history, with signalId', cryptoHistory: false, historyDepth: 1, includeSignalId: true },
  { name: 'no history, without signalId', cryptoHistory: false, historyDepth: 1, includeSignalId: false },
  { name: 'no history, without signalId, a race of 2 stale reads after the last rotation', cryptoHistory: false, historyDepth: 1, includeSignalId: false, staleReads: 2 },
];

describe('fresh start over a backlog of three rotations, producer in every mode (simulator over HTTP)', () => {
  for (const mode of MODES) {
    it(`${mode.name}: every event history makes knowable, reports only for the rest`, async () => {
      world = await createWorld({
        eservices: [{ id: ES, name: 'residenze', cryptoHistory: mode.cryptoHistory, historyDepth: mode.historyDepth, includeSignalId: mode.includeSignalId, staleReads: mode.staleReads ?? 0 }],
        toml: '[crypto]\nrotation_wait_seconds = 120',
      });
      const w = world;
      const db = openDatabase(w.config.database);
      // The race is waited out on a fake clock: slept time is counted, never spent.
      let slept = 0;
      const engine = new SyncEngine({
        db,
        config: w.config,
        ...pick(createRemotes(w.config, { logger: silentLogger })),
        logger: silentLogger,
        now: () => Date.now() + slept,
        sleep: async (ms) => {
          slept += ms;
        },
      });
      const writer = new SubjectWriter(db, { index: subjectIndexOptions(w.config) });
      const subjects = Array.from({ length: 10 }, (_, i) => fiscalCode(700 + i));
      const local = subjects.slice(0, 6);
      writer.upsertBatch(local.map((key, i) => ({ key, ref: `ref-${i}`, eservices: 'all' })));

      // The backlog: epoch 0 (the first seed, numbered 0), then three SEEDUPDATEs, each followed by its epoch.
      const epochs: { start: number; seed: string; signals: { id: number; who: number }[] }[] = [{ start: 0, seed: w.sim.currentSeed(ES)!.seed, signals: [] }];
      for (let e = 0; e <= ROTATIONS; e++) {
        if (e > 0) {
          const start = w.sim.rotateSeed(ES);
          epochs.push({ start, seed: w.sim.currentSeed(ES)!.seed, signals: [] });
        }
        for (let i = 0; i < 15; i++) {
          const who = (i * 3 + e) % subjects.length;
          const id = w.sim.depositForSubject(ES, subjects[who]!, 'UPDATE', 'residence');
          epochs[e]!.signals.push({ id, who });
        }
      }
      // The simulator pseudonymizes as GovWay does; the oracle's own hash agrees.
      expect(w.sim.pseudonymFor(ES, subjects[0]!)).toBe(modelPseudonym(subjects[0]!, epochs[ROTATIONS]!.seed));

      const outcome = await engine.syncEService(ES);
      expect(outcome.caughtUp).toBe(true);

      // What a perfect consumer can know, from the producer's behaviour alone: with history, the
      // seeds the producer still keeps (the newest `historyDepth` of the four); without, only
      // the current one.
      const keptFrom = mode.cryptoHistory ? epochs.length - mode.historyDepth : epochs.length - 1;
      const knowable = (e: number) => e >= keptFrom;
      const outbox = new OutboxStore(db).all();
      const events = outbox.filter((r) => r.kind === 'signal').map((r) => JSON.parse(r.payload) as { signalId: number; subjectRef: string });
      const reports = outbox.filter((r) => r.kind === 'resync-required').map((r) => JSON.parse(r.payload) as { fromSignalId: number; toSignalId: number; reason: string });
      const covered = (id: number) => reports.some((r) => r.fromSignalId <= id && id <= r.toSignalId);

      const expectedEvents = epochs.flatMap((ep, e) => (knowable(e) ? ep.signals.filter((s) => s.who < local.length).map((s) => `${s.id}:ref-${s.who}`) : []));
      expect(events.map((ev) => `${ev.signalId}:${ev.subjectRef}`)).toEqual(expectedEvents);
      for (const [e, ep] of epochs.entries()) {
        for (const s of ep.signals) {
          if (knowable(e)) expect(covered(s.id), `signal ${s.id} of knowable epoch ${ep.start} reported`).toBe(false);
          else expect(covered(s.id), `signal ${s.id} of epoch ${ep.start} (seed not to be had) neither matched nor reported`).toBe(true);
        }
      }
      expect(new ResyncStore(db).growing(ES)).toEqual([]);
      // A fresh start waits at most once for the race across its whole backlog.
      expect(slept).toBeLessThanOrEqual(120_000 + 10_000);
      if (mode.cryptoHistory && mode.historyDepth > ROTATIONS) expect(slept).toBe(0);
      db.close();
    });
  }
});

function pick(remotes: ReturnType<typeof createRemotes>) {
  return { hub: remotes.hub, crypto: remotes.crypto };
}
