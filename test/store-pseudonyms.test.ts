import path from 'node:path';
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

  it('looks a page of prefixes up in one statement; a prefix shared by two subjects gives both, and only the recomputed digest tells them apart', () => {
    db = openDatabase(path.join(tempDir(), 'state.db'));
    const subjects = new SubjectStore(db);
    const a = subjects.insert({ key: fiscalCode(1), ref: 'a', eservices: 'all' });
    const b = subjects.insert({ key: fiscalCode(2), ref: 'b', eservices: 'all' });
    const hasher = new PseudonymHasher(GOVWAY_RECIPE, 'seed', 'SHA-256');
    const store = new PseudonymStore(db);
    store.create(7);
    const prefixA = digestPrefix(hasher.digest(fiscalCode(1)));
    store.insert(7, prefixA, a.id);
    store.insert(7, prefixA, b.id); // a collision on the stored prefix, planted
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
