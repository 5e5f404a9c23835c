import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../src/store/db.js';
import { ImportScratch, SubjectStore, type StagedRow } from '../src/store/subjects.js';
import { tempDir } from './helpers/fs.js';
import { SubjectWriter, type SubjectUpsert } from '../src/subjects/apply.js';
import { countSubjectsByTenant } from '../src/sync/status.js';

const E1 = 'e-one';
const E2 = 'e-two';

function seeded(): { db: Db; store: SubjectStore } {
  const db = openDatabase(path.join(tempDir(), 'subjects.db'));
  const store = new SubjectStore(db);
  // ids 1..30: every third follows all, others alternate between E1 and both.
  db.transaction(() => {
    for (let i = 1; i <= 30; i++) {
      const eservices = i % 3 === 0 ? 'all' : i % 2 === 0 ? [E1] : [E2, E1];
      const { id } = store.insert({ key: `K${String(i).padStart(2, '0')}`, ref: `r${i}`, eservices }, 1000);
      store.insertMembership(id, { tenant: '', ref: `r${i}`, eservices }, 1000);
    }
  })();
  return { db, store };
}

describe('SubjectStore', () => {
  it('counts subjects per tenant in slices of ids exactly as one COUNT does, across slice edges and gaps', async () => {
    const db = openDatabase(path.join(tempDir(), 'state.db'));
    try {
      const writer = new SubjectWriter(db, { index: null });
      const batch: SubjectUpsert[] = [];
      for (let i = 0; i < 1_000; i++) {
        const key = `KEY${String(i).padStart(6, '0')}`;
        batch.push({ key, ref: null, eservices: 'all' });
        if (i % 3 === 0) batch.push({ key, tenant: 'comune-a', ref: null, eservices: 'all' });
        if (i % 7 === 0) batch.push({ key, tenant: 'comune-b', ref: null, eservices: 'all' });
      }
      writer.upsertBatch(batch);
      // Gaps in the ids, and a subject that belongs to a delegator only.
      writer.removeKeys(['KEY000100', 'KEY000101', 'KEY000500'], 'every');
      writer.upsertBatch([{ key: 'ONLYB', tenant: 'comune-b', ref: null, eservices: 'all' }]);
      const whole = new SubjectStore(db).countByTenant();
      expect(whole.map((c) => c.tenant)).toEqual(['', 'comune-a', 'comune-b']);
      for (const slice of [1, 7, 64, 999, 5_000]) expect(await countSubjectsByTenant(db, slice), `slice ${slice}`).toEqual(whole);
    } finally {
      db.close();
    }
  });


  it('inserts, finds by key and id, updates and deletes', () => {
    const { db, store } = seeded();
    expect(store.findByKey('K02')).toEqual({ id: 2, key: 'K02', ref: 'r2', eservices: [E1] });
    expect(store.findByKey('K01')).toEqual({ id: 1, key: 'K01', ref: 'r1', eservices: [E1, E2] });
    expect(store.findById(3)).toEqual({ id: 3, key: 'K03', ref: 'r3', eservices: 'all' });
    expect(store.findByKey('nope')).toBeUndefined();

    store.update(3, { ref: null, eservices: [E2] });
    expect(store.findById(3)).toEqual({ id: 3, key: 'K03', ref: null, eservices: [E2] });
    store.update(2, { ref: 'x', eservices: 'all' });
    expect(store.findById(2)).toEqual({ id: 2, key: 'K02', ref: 'x', eservices: 'all' });

    expect(store.deleteByIds([1, 2, 999])).toBe(2);
    expect(store.count()).toBe(28);
    // ON DELETE CASCADE removed their e-service rows.
    expect(db.prepare('SELECT COUNT(*) AS n FROM subject_eservices WHERE subject_id IN (1, 2)').get()).toEqual({ n: 0 });
    db.close();
  });

  it('counts and pages the subjects of an e-service by id, with all_eservices and listed ones merged', () => {
    const { db, store } = seeded();
    const followE1 = Array.from({ length: 30 }, (_, i) => i + 1);
    const followE2 = followE1.filter((i) => i % 3 === 0 || i % 2 === 1);
    expect(store.countForEService(E1)).toBe(30);
    expect(store.countForEService(E2)).toBe(followE2.length);
    expect(store.countForEService('other')).toBe(10);

    const pages = [...store.iterateForEService(E2, 4)];
    expect(pages.every((p) => p.length <= 4)).toBe(true);
    expect(pages.flat().map((s) => s.id)).toEqual(followE2);
    expect(pages.flat()[0]).toEqual({ id: 1, key: 'K01', ref: 'r1' });
    expect(store.pageForEService(E1, 28, 10).map((s) => s.id)).toEqual([29, 30]);
    expect(store.pageForEService('other', 0, 100).map((s) => s.id)).toEqual([3, 6, 9, 12, 15, 18, 21, 24, 27, 30]);
    db.close();
  });

  it('ImportScratch stages rows by position, reports rejections by line and lists stored subjects absent from the import', async () => {
    const { db, store } = seeded();
    const file = `${db.name}-import`;
    fs.writeFileSync(file, 'left by a crash');
    const scratch = new ImportScratch(db, file);
    // A private file next to the database, replacing a leftover.
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const row = (key: string, line: number, extra: Partial<StagedRow> = {}): StagedRow => ({ key, tenant: '', line, problem: null, problemFirst: false, ref: undefined, eservices: undefined, ...extra });
    // More rows than one multi-row statement holds, with every kind of value.
    const rows = Array.from({ length: 150 }, (_, i) => row(`N${String(i).padStart(3, '0')}`, i + 2, i % 3 === 0 ? { ref: null, eservices: 'all' } : i % 3 === 1 ? { ref: `r${i}`, eservices: [E1, E2] } : { problem: 'bad', problemFirst: true }));
    scratch.append(rows.slice(0, 70));
    scratch.append(rows.slice(70));
    expect(scratch.stagedCount).toBe(150);
    expect([...scratch.stagedFrom(0, 100), ...scratch.stagedFrom(100, 100)]).toEqual(rows);
    expect(scratch.stagedFrom(149, 10)).toEqual([rows[149]]);

    scratch.reject({ line: 9, reason: 'nine', ref: null });
    scratch.reject({ line: 3, reason: 'three', ref: 'r' });
    scratch.reject({ line: 9, reason: 'nine again', ref: null });
    const first = scratch.rejectionsAfter(null, 2);
    expect(first.map((r) => [r.line, r.reason, r.ref])).toEqual([[3, 'three', 'r'], [9, 'nine', null]]);
    expect(scratch.rejectionsAfter(first[1]!, 2).map((r) => r.reason)).toEqual(['nine again']);

    for (const key of ['K05', 'K07', 'NEW']) scratch.markSeen(key, '');
    scratch.markSeen('K05', '');
    // The same key for another tenant does not count as seen for ''.
    scratch.markSeen('K09', 'c_a001');
    const absent = [];
    expect(scratch.lastMember('')).toBe(30);
    expect(scratch.lastMember('nobody')).toBe(0);
    for (let after = 0; after < 30; after += 7) absent.push(...scratch.absentBetween(store, '', after, Math.min(30, after + 7)).map((s) => s.id));
    expect(absent).toEqual(Array.from({ length: 30 }, (_, i) => i + 1).filter((i) => i !== 5 && i !== 7));
    await scratch.dispose();
    expect((db.pragma('database_list') as { name: string }[]).map((d) => d.name)).toEqual(['main']);
    expect(fs.existsSync(file)).toBe(false);
    // A scratch file that cannot be created (here: its path is a folder) gives way to a private temporary one.
    fs.mkdirSync(file);
    const elsewhere = new ImportScratch(db, file);
    elsewhere.append([row('K01', 2)]);
    expect(elsewhere.stagedFrom(0, 10)).toEqual([row('K01', 2)]);
    await elsewhere.dispose();
    expect(fs.statSync(file).isDirectory()).toBe(true);
    fs.rmdirSync(file);
    // Inside a transaction (no ATTACH there) TEMP tables stand in, dropped at the end.
    db.exec('BEGIN');
    const inner = new ImportScratch(db);
    expect(inner.schema).toBe('temp');
    inner.append([row('K01', 2)]);
    expect(inner.stagedFrom(0, 10)).toEqual([row('K01', 2)]);
    await inner.dispose();
    db.exec('COMMIT');
    expect(db.prepare("SELECT name FROM temp.sqlite_master WHERE name LIKE 'subject_import%'").all()).toEqual([]);
    db.close();
  });
});
