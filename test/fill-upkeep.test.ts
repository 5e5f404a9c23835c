import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { GOVWAY_RECIPE, PseudonymHasher } from '../src/crypto/pseudonym.js';
import { openDatabase } from '../src/store/db.js';
import { EpochStore } from '../src/store/epochs.js';
import { EServiceStore } from '../src/store/eservices.js';
import { spoolRoot, spooledEpochs } from '../src/store/fill-spool.js';
import { PseudonymStore, digestPrefix } from '../src/store/pseudonyms.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { HashPool } from '../src/sync/hash-pool.js';
import { deferToFill } from '../src/sync/subject-index.js';
import { ensureFilled } from '../src/sync/reseed.js';
import { propertyParameters, propertyTimeoutMs } from './helpers/property.js';
import { tempDir } from './helpers/fs.js';
import { fiscalCode } from './helpers/world.js';

/**
 * The spooled fill against a model: subjects are added, removed, and made to follow or leave
 * the e-service at every step of a fill (while it spools and while it merges, including the
 * step between the two), fills are interrupted and resumed, and spools lost; afterwards the
 * epoch's table must hold exactly one row per subject following the e-service, the prefix of
 * its real pseudonym, whatever happened. The model is a plain map of key -> e-services.
 * A ready epoch may first be handed back to a fill by a bulk import (deferToFill), with changes
 * before (row by row) and after (left to the fill) the hand-over.
 */
const ES = 'es-1';
const OTHER = 'es-2';
const SEED = 'seed-of-the-model';

type Follows = 'all' | 'mine' | 'other';
type Op = { kind: 'add'; n: number; follows: Follows } | { kind: 'remove'; pick: number } | { kind: 'refollow'; pick: number; follows: Follows } | { kind: 'removeNewest' };

const followsArb = fc.constantFrom<Follows>('all', 'mine', 'other');
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('add' as const), n: fc.integer({ min: 1, max: 40 }), follows: followsArb }),
  fc.record({ kind: fc.constant('remove' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('refollow' as const), pick: fc.nat(), follows: followsArb }),
  fc.constant({ kind: 'removeNewest' as const }),
);

const eservicesOf = (f: Follows): string[] | 'all' => (f === 'all' ? 'all' : f === 'mine' ? [ES] : [OTHER]);

let pool: HashPool | undefined;
afterAll(async () => {
  await pool?.close();
});

describe('the spooled fill keeps step with subjects changing under it (model)', () => {
  it(
    'after any interleaving of changes, interruptions and lost spools, the table is exactly the subjects following the e-service',
    async () => {
      pool ??= new HashPool(2);
      const sharedPool = pool;
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            initial: fc.array(followsArb, { maxLength: 400 }),
            steps: fc.array(fc.array(opArb, { maxLength: 3 }), { minLength: 1, maxLength: 40 }),
            pageSize: fc.constantFrom(7, 64, 300),
            bucketBits: fc.integer({ min: 0, max: 4 }),
            interrupts: fc.array(fc.record({ atStep: fc.nat({ max: 40 }), loseSpool: fc.boolean() }), { maxLength: 3 }),
            bulk: fc.option(fc.record({ beforeHandOver: fc.array(opArb, { maxLength: 6 }), afterHandOver: fc.array(opArb, { maxLength: 6 }) }), { nil: undefined }),
          }),
          async ({ initial, steps, pageSize, bucketBits, interrupts, bulk }) => {
            const dir = tempDir('fill-model-');
            const db = openDatabase(path.join(dir, 'state.db'));
            try {
              const writer = new SubjectWriter(db, { index: { backfill: false, includeSubjectKey: false, eserviceNames: new Map() } });
              const model = new Map<string, Follows>();
              let next = 0;
              const add = (follows: Follows) => {
                const key = fiscalCode(100_000 + next++);
                writer.upsertBatch([{ key, ref: null, eservices: eservicesOf(follows) }]);
                model.set(key, follows);
              };
              for (const f of initial) add(f);
              const es = new EServiceStore(db).ensure(ES, 'mine');
              const epochs = new EpochStore(db);
              const epoch = epochs.create({ eservice: es.id, startSignalId: 1, status: 'known', seed: SEED, seedFingerprint: null, algorithm: 'SHA-256', template: GOVWAY_RECIPE.template, encoding: GOVWAY_RECIPE.encoding, producerSignalId: 1 });

              const apply = (op: Op) => {
                const keys = [...model.keys()];
                if (op.kind === 'add') for (let i = 0; i < op.n; i++) add(op.follows);
                else if (op.kind === 'remove' && keys.length > 0) {
                  const key = keys[op.pick % keys.length]!;
                  writer.removeKeys([key], 'every');
                  model.delete(key);
                } else if (op.kind === 'refollow' && keys.length > 0) {
                  const key = keys[op.pick % keys.length]!;
                  writer.upsertBatch([{ key, ref: null, eservices: eservicesOf(op.follows) }]);
                  model.set(key, op.follows);
                } else if (op.kind === 'removeNewest' && keys.length > 0) {
                  // The highest id goes and a new key comes: SQLite gives it the same id.
                  const newest = db.prepare('SELECT key FROM subjects ORDER BY id DESC LIMIT 1').pluck().get() as string;
                  writer.removeKeys([newest], 'every');
                  model.delete(newest);
                  add('mine');
                }
              };

              if (bulk) {
                // Ready first, kept in step row by row; then a bulk import hands it to a fill
                // and goes on adding and removing before anything completes that fill.
                await ensureFilled(db, epoch.id, { eserviceId: ES, pool: sharedPool, pageSize, bucketBits });
                for (const op of bulk.beforeHandOver) apply(op);
                expect(deferToFill(db, Number.MAX_SAFE_INTEGER)).toEqual([epoch.id]);
                expect(epochs.get(epoch.id)!.fillState).toBe('filling');
                for (const op of bulk.afterHandOver) apply(op);
              }

              let step = 0;
              const pending = [...interrupts].sort((a, b) => a.atStep - b.atStep);
              for (let attempt = 0; ; attempt++) {
                const controller = new AbortController();
                const interrupt = pending.shift();
                try {
                  await ensureFilled(db, epoch.id, {
                    eserviceId: ES,
                    pool: sharedPool,
                    pageSize,
                    bucketBits,
                    signal: controller.signal,
                    onProgress: () => {
                      for (const op of steps[step] ?? []) apply(op);
                      step++;
                      if (interrupt && step >= interrupt.atStep) controller.abort();
                    },
                  });
                  break;
                } catch (err) {
                  if (!controller.signal.aborted) throw err;
                  if (interrupt?.loseSpool) fs.rmSync(path.join(spoolRoot(db.name), `epoch-${epoch.id}`), { recursive: true, force: true });
                }
                expect(attempt).toBeLessThan(10);
              }

              const ids = new Map((db.prepare('SELECT key, id FROM subjects').all() as { key: string; id: number }[]).map((r) => [r.key, r.id]));
              const hasher = new PseudonymHasher(GOVWAY_RECIPE, SEED, 'SHA-256');
              const want = [...model]
                .filter(([, f]) => f !== 'other')
                .map(([key]) => ({ prefix: digestPrefix(hasher.digest(key)), id: ids.get(key)! }))
                .sort((a, b) => a.prefix - b.prefix || a.id - b.id);
              const rows = db.prepare(`SELECT prefix, subject_id AS id FROM pseudonyms_${epoch.id} ORDER BY prefix, subject_id`).all();
              expect(rows).toEqual(want);
              const done = epochs.get(epoch.id)!;
              expect(done.fillState).toBe('ready');
              expect(done.pseudonymCount).toBe(want.length);
              expect(new PseudonymStore(db).count(epoch.id)).toBe(want.length);
              expect(db.prepare('SELECT COUNT(*) FROM fill_skips').pluck().get()).toBe(0);
              expect(spooledEpochs(spoolRoot(db.name))).toEqual([]);
            } finally {
              db.close();
              fs.rmSync(dir, { recursive: true, force: true });
            }
          },
        ),
        propertyParameters({ runs: 60, soakRuns: 1500 }),
      );
    },
    propertyTimeoutMs(120_000),
  );
});
