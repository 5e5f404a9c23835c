import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/store/db.js';
import { EpochStore } from '../src/store/epochs.js';
import { OutboxStore } from '../src/store/outbox.js';
import { PseudonymStore, digestPrefix } from '../src/store/pseudonyms.js';
import { SubjectStore } from '../src/store/subjects.js';
import { importSubjects, subjectIndexOptions } from '../src/subjects/import.js';
import { createEngine, createRemotes } from '../src/sync/runtime.js';
import { PseudonymHasher } from '../src/crypto/pseudonym.js';
import { silentLogger } from '../src/log.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';

/**
 * A bulk import into an e-service whose seed epoch is live: the new subjects' pseudonyms are
 * left to one fill (src/sync/subject-index.ts deferToFill), which the engine completes before it
 * matches the next signal; a small import stays row by row. The real engine against the
 * simulator, on a real SQLite file.
 */
const ES = '15151515-1111-4111-8111-000000000001';
let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

const csvOf = (from: number, to: number) => Readable.from([`key,ref\n${Array.from({ length: to - from }, (_, i) => `${fiscalCode(from + i)},r${from + i}`).join('\n')}\n`]);

describe('a bulk import into a live seed epoch', () => {
  it('leaves the new pseudonyms to one fill, which the engine completes before matching: the events are those of a row-by-row upkeep', async () => {
    world = await createWorld({ eservices: [{ id: ES, name: 'residenze', includeSignalId: true }], toml: '[subjects]\nbackfill = true' });
    const w = world;
    const db = openDatabase(w.config.database);
    try {
      const engine = createEngine(w.config, db, createRemotes(w.config, { logger: silentLogger }), { logger: silentLogger });
      const importOptions = { format: 'csv' as const, source: 'subjects.csv', eservices: [{ id: ES, name: 'residenze' }], validate: true, index: subjectIndexOptions(w.config), batchSize: 1000 };
      // 2 000 subjects, an epoch made ready by a matched signal.
      await importSubjects(db, csvOf(0, 2000), importOptions);
      await engine.syncEService(ES);
      const first = w.sim.depositForSubject(ES, fiscalCode(7), 'UPDATE', 'x');
      await engine.syncEService(ES);
      const epochs = new EpochStore(db);
      const epoch = epochs.live()[0]!;
      expect(epoch.fillState).toBe('ready');
      // Kept for back-matching: a signal for a key nobody has yet.
      const early = w.sim.depositForSubject(ES, fiscalCode(20_500), 'CREATE', 'x');
      await engine.syncEService(ES);

      // A small import: row by row, the epoch stays live.
      const small = await importSubjects(db, csvOf(2000, 2500), importOptions);
      expect(small.refilledEpochs).toBe(0);
      expect(epochs.get(epoch.id)!.fillState).toBe('ready');
      expect(epochs.get(epoch.id)!.pseudonymCount).toBe(2500);

      // A bulk one (20 000 new, ten times the table): the first batch row by row, then a fill.
      const bulk = await importSubjects(db, csvOf(2500, 22_500), importOptions);
      expect(bulk.imported).toBe(20_000);
      expect(bulk.refilledEpochs).toBe(1);
      const handedOver = epochs.get(epoch.id)!;
      expect(handedOver.fillState).toBe('filling');
      expect(handedOver.pseudonymCount).toBeGreaterThanOrEqual(2500);
      expect(handedOver.pseudonymCount).toBeLessThan(22_500);
      // Back-matching did not wait for the fill.
      const outbox = new OutboxStore(db);
      const events = () => outbox.all().filter((r) => r.kind === 'signal').map((r) => JSON.parse(r.payload) as { signalId: number; subjectRef: string; backfilled?: boolean });
      expect(events().map((e) => [e.signalId, e.subjectRef, e.backfilled ?? false])).toEqual([
        [first, 'r7', false],
        [early, 'r20500', true],
      ]);

      // A signal for a subject of the bulk: the engine fills, then matches it.
      const late = w.sim.depositForSubject(ES, fiscalCode(22_000), 'UPDATE', 'x');
      await engine.syncEService(ES);
      expect(events().map((e) => [e.signalId, e.subjectRef])).toEqual([
        [first, 'r7'],
        [early, 'r20500'],
        [late, 'r22000'],
      ]);
      const done = epochs.get(epoch.id)!;
      expect(done.fillState).toBe('ready');
      expect(done.pseudonymCount).toBe(22_500);
      // Exactly one row per subject, each its real pseudonym's prefix.
      const hasher = new PseudonymHasher({ template: done.template!, encoding: 'base64' }, done.seed!, done.algorithm!);
      const subjects = new SubjectStore(db).page(0, 100_000);
      const want = subjects.map((s) => ({ prefix: digestPrefix(hasher.digest(s.key)), id: s.id })).sort((a, b) => a.prefix - b.prefix || a.id - b.id);
      expect(db.prepare(`SELECT prefix, subject_id AS id FROM pseudonyms_${epoch.id} ORDER BY prefix, subject_id`).all()).toEqual(want);
      expect(new PseudonymStore(db).count(epoch.id)).toBe(22_500);
    } finally {
      db.close();
    }
  }, 60_000);
});
