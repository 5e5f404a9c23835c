import fs from 'node:fs';
import path from 'node:path';
import { AppError } from '../src/errors.js';
import { afterEach, describe, expect, it } from 'vitest';
import { GOVWAY_RECIPE, PseudonymHasher, type PseudonymRecipe } from '../src/crypto/pseudonym.js';
import { openDatabase, type Db } from '../src/store/db.js';
import { PseudonymStore, digestPrefix } from '../src/store/pseudonyms.js';
import { SubjectStore } from '../src/store/subjects.js';
import { HashPool } from '../src/sync/hash-pool.js';
import { EpochStore } from '../src/store/epochs.js';
import { EServiceStore } from '../src/store/eservices.js';
import { ensureFilled, reclaimPseudonymSpace } from '../src/sync/reseed.js';
import { tempDir } from './helpers/fs.js';
import { seededRandom } from './helpers/random.js';
import { bucketOf, bucketRange, sortRecords } from '../src/store/fill-spool.js';
import { fiscalCode } from './helpers/world.js';

let db: Db | undefined;
let pool: HashPool | undefined;
afterEach(async () => {
  db?.close();
  db = undefined;
  await pool?.close();
  pool = undefined;
});

describe('the pseudonym index', () => {
  const recipes: [string, PseudonymRecipe, string][] = [
    ['GovWay base64 SHA-256', GOVWAY_RECIPE, 'SHA-256'],
    ['a template with ${algorithm} and two subject slots, SHAKE256', { template: '${subject}|${algorithm}|${seed}|${subject}', encoding: 'hex' }, 'SHAKE256'],
    ['identity (the digest of the normalized key)', { template: '${subject}', encoding: 'identity' }, 'SHA-256'],
  ];
  for (const [name, recipe, algorithm] of recipes) {
    it(`worker threads compute the same prefixes as the main thread: ${name}`, async () => {
      const hasher = new PseudonymHasher(recipe, 'seed-£-$&', algorithm);
      // Keys as stored are normalized; a stray one must still give what digest() gives.
      const keys = [...Array.from({ length: 1_500 }, (_, i) => fiscalCode(i)), ' rssmra80a01h501u '];
      pool = new HashPool(2);
      const fromWorkers = await pool.prefixes(hasher.workerRecipe(), keys);
      expect(Array.from(fromWorkers)).toEqual(keys.map((k) => digestPrefix(hasher.digest(k))));
    });
  }

  it('a fill over keys holding the page packing separators (validation off) still gives every subject its right prefix', async () => {
    db = openDatabase(path.join(tempDir(), 'state.db'));
    const d = db;
    const subjects = new SubjectStore(d);
    const odd = ['A\x1eB', '\x1f\x1f', 'X\x1fY\x1eZ', 'ÀÉ😀', 'a,b;c', '\x1e'];
    const keys = [...Array.from({ length: 700 }, (_, i) => fiscalCode(i)), ...odd];
    d.transaction(() => {
      for (const key of keys) subjects.insert({ key, ref: null, eservices: 'all' });
    })();
    const es = new EServiceStore(d).ensure('es-1', 'one');
    const epoch = new EpochStore(d).create({ eservice: es.id, startSignalId: 1, status: 'known', seed: 'seed', seedFingerprint: null, algorithm: 'SHA-256', template: '${subject}${seed}', encoding: 'base64', producerSignalId: 1 });
    // Small pages: the odd keys fall in several of them, next to plain ones.
    await ensureFilled(d, epoch.id, { eserviceId: 'es-1', pageSize: 50 });
    const hasher = new PseudonymHasher(GOVWAY_RECIPE, 'seed', 'SHA-256');
    const idOf = new Map((d.prepare('SELECT key, id FROM subjects').all() as { key: string; id: number }[]).map((r) => [r.key, r.id]));
    const want = keys.map((k) => ({ prefix: digestPrefix(hasher.digest(k)), id: idOf.get(k)! })).sort((a, b) => a.prefix - b.prefix || a.id - b.id);
    expect(d.prepare(`SELECT prefix, subject_id AS id FROM pseudonyms_${epoch.id} ORDER BY prefix, subject_id`).all()).toEqual(want);
  });

  it('looks a page of prefixes up in one statement; a prefix shared by two subjects gives both, and only the recomputed digest tells them apart', () => {
    db = openDatabase(path.join(tempDir(), 'state.db'));
    const subjects = new SubjectStore(db);
    const a = subjects.insert({ key: fiscalCode(1), ref: 'a', eservices: 'all' });
    const b = subjects.insert({ key: fiscalCode(2), ref: 'b', eservices: 'all' });
    const hasher = new PseudonymHasher(GOVWAY_RECIPE, 'seed', 'SHA-256');
    const store = new PseudonymStore(db);
    store.create(7);
    const prefixA = digestPrefix(hasher.digest(fiscalCode(1)));
    // A collision on the stored prefix, planted (the two rows in key order: a's id is lower).
    store.insertSorted(7, [prefixA, prefixA], [a.id, b.id]);
    const found = store.candidatesMany(7, [prefixA, 12345, prefixA]);
    expect([...found.keys()]).toEqual([prefixA]);
    const candidates = found.get(prefixA)!;
    expect(candidates.map((c) => c.ref).sort()).toEqual(['a', 'b']);
    const digest = hasher.digest(fiscalCode(1));
    expect(candidates.filter((c) => hasher.digest(c.key).equals(digest)).map((c) => c.ref)).toEqual(['a']);
    expect(store.candidatesMany(7, []).size).toBe(0);
  });

  it('rotations reuse the space of retired epochs: after three the file is no larger than after one', async () => {
    db = openDatabase(path.join(tempDir(), 'state.db'));
    const d = db;
    const subjects = new SubjectStore(d);
    d.transaction(() => {
      for (let i = 0; i < 20_000; i++) subjects.insert({ key: fiscalCode(i), ref: null, eservices: 'all' });
    })();
    const es = new EServiceStore(d).ensure('es-1', 'one');
    const epochs = new EpochStore(d);
    let start = 0;
    const rotate = async (previous?: number) => {
      const seed = `seed-${start}`;
      const epoch = epochs.create({ eservice: es.id, startSignalId: start, status: 'known', seed, seedFingerprint: null, algorithm: 'SHA-256', template: '${subject}${seed}', encoding: 'base64', producerSignalId: start });
      start += 100;
      await ensureFilled(d, epoch.id, { eserviceId: 'es-1' });
      if (previous !== undefined) epochs.retire(previous);
      await reclaimPseudonymSpace(d, { sliceRows: 3_000 });
      return epoch.id;
    };
    const pages = () => d.pragma('page_count', { simple: true }) as number;
    let current = await rotate();
    current = await rotate(current);
    const afterOne = pages();
    for (let i = 0; i < 3; i++) current = await rotate(current);
    expect(pages()).toBeLessThanOrEqual(afterOne);
    expect(new PseudonymStore(d).tables()).toEqual([current]);
    expect(new PseudonymStore(d).count(current)).toBe(20_000);
  });
});

describe('the fill spool', () => {
  it('lives beside the database, private (0700/0600), and a spool that cannot be written fails the fill with DB_ERROR naming where; the next fill succeeds', async () => {
    const dir = tempDir();
    db = openDatabase(path.join(dir, 'state.db'));
    const d = db;
    const subjects = new SubjectStore(d);
    d.transaction(() => {
      for (let i = 0; i < 3_000; i++) subjects.insert({ key: fiscalCode(i), ref: null, eservices: 'all' });
    })();
    const es = new EServiceStore(d).ensure('es-1', 'one');
    const epoch = new EpochStore(d).create({ eservice: es.id, startSignalId: 1, status: 'known', seed: 'seed', seedFingerprint: null, algorithm: 'SHA-256', template: '${subject}${seed}', encoding: 'base64', producerSignalId: 1 });
    const root = path.join(dir, 'state.db.fill');
    // In the way: a plain file where the spool folder goes.
    fs.writeFileSync(root, 'not a folder');
    const failed = await ensureFilled(d, epoch.id, { eserviceId: 'es-1' }).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(AppError);
    expect((failed as AppError).code).toBe('DB_ERROR');
    expect((failed as AppError).message).toContain(root);
    expect(new EpochStore(d).get(epoch.id)!.fillState).toBe('filling');
    fs.rmSync(root);

    // Stopped as soon as the merge starts: the spool is there, and private.
    const controller = new AbortController();
    const stopped = await ensureFilled(d, epoch.id, {
      eserviceId: 'es-1',
      bucketBits: 3,
      signal: controller.signal,
      onProgress: (p) => {
        if (p.phase === 'writing') controller.abort();
      },
    }).catch((e: unknown) => e);
    expect((stopped as Error).name).toBe('AbortError');
    const spool = path.join(root, `epoch-${epoch.id}`);
    expect(fs.statSync(root).mode & 0o777).toBe(0o700);
    expect(fs.statSync(spool).mode & 0o777).toBe(0o700);
    const files = fs.readdirSync(spool);
    expect(files).toContain('manifest.json');
    for (const f of files) expect(fs.statSync(path.join(spool, f)).mode & 0o777, f).toBe(0o600);

    const done = await ensureFilled(d, epoch.id, { eserviceId: 'es-1' });
    expect(done.pseudonyms).toBe(3_000);
    expect(fs.existsSync(root)).toBe(false);
  });


  it('sorts a bucket by (prefix, subject id) whatever its size and bucket bits, duplicates and near-equal prefixes included', () => {
    const rnd = seededRandom(7);
    for (const bits of [0, 1, 6, 11]) {
      for (const n of [0, 1, 2, 17, 5_000, 70_000]) {
        const bucket = Math.floor(rnd() * 2 ** bits);
        const { low, high } = bucketRange(bucket, bits);
        const records = new Float64Array(n * 2);
        for (let i = 0; i < n; i++) {
          // Some prefixes repeat, some differ only in their lowest bits (what the sort key cuts).
          const r = rnd();
          const prefix = r < 0.1 && i > 0 ? records[(i - 1) * 2]! : r < 0.2 && i > 0 ? Math.min(high, records[(i - 1) * 2]! + 1) : low + Math.floor(rnd() * (high - low + 1));
          records[i * 2] = prefix;
          records[i * 2 + 1] = Math.floor(rnd() * 1e9);
          expect(bucketOf(prefix, bits)).toBe(bucket);
        }
        const want = Array.from({ length: n }, (_, i) => [records[i * 2]!, records[i * 2 + 1]!] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        const { prefixes, subjectIds } = sortRecords(records, n, bits, bucket);
        expect(Array.from(prefixes, (p, k) => [p, subjectIds[k]!]), `bits ${bits}, n ${n}`).toEqual(want);
      }
    }
  });

  it('puts the extreme prefixes in the first and last bucket, and buckets in prefix order', () => {
    const min = -(2 ** 47);
    const max = 2 ** 47 - 1;
    for (const bits of [0, 3, 11]) {
      expect(bucketOf(min, bits)).toBe(0);
      expect(bucketOf(max, bits)).toBe(2 ** bits - 1);
      expect(bucketRange(0, bits).low).toBe(min);
      expect(bucketRange(2 ** bits - 1, bits).high).toBe(max);
      for (let b = 1; b < Math.min(2 ** bits, 64); b++) expect(bucketRange(b, bits).low).toBe(bucketRange(b - 1, bits).high + 1);
    }
  });
});
