import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../src/store/db.js';
import { SubjectStore } from '../src/store/subjects.js';
import { importSubjects, type ImportOptions, type RejectedRow } from '../src/subjects/import.js';
import { PseudonymHasher } from '../src/crypto/pseudonym.js';
import { tempDir } from './helpers/fs.js';
import { fiscalCode, legalPersonCode, omocode, withWrongCheck } from './fixtures/subjects-codes.js';
import { pseudonymRows } from './helpers/pseudonyms.js';
import { PseudonymStore, digestPrefix } from '../src/store/pseudonyms.js';

/** Stored subjects are compared by key: an import inserts each batch in key order, not file order. */
function expectByKey<T extends { key: string }>(actual: T[], expected: T[]): void {
  expect(actual).toEqual([...expected].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)));
}


const RES = '00000000-0000-4000-8000-0000000000e1';
const DOC = '00000000-0000-4000-8000-0000000000e2';

function freshDb(): Db {
  return openDatabase(path.join(tempDir(), 'subjects.db'));
}

function options(overrides: Partial<ImportOptions> = {}): ImportOptions {
  return {
    format: 'csv',
    source: 'subjects.csv',
    eservices: [
      { id: RES, name: 'residences' },
      { id: DOC, name: 'ID-Documents' },
    ],
    validate: true,
    index: { backfill: false, includeSubjectKey: false, eserviceNames: new Map([[RES, 'residences'], [DOC, 'ID-Documents']]) },
    ...overrides,
  };
}

const run = (db: Db, text: string, overrides: Partial<ImportOptions> = {}) => importSubjects(db, Readable.from([Buffer.from(text)]), options(overrides));
const csv = (...rows: string[]) => rows.join('\n') + '\n';
const A = fiscalCode(1);
const B = fiscalCode(2);
const C = fiscalCode(3);
const D = fiscalCode(4);

function stored(db: Db) {
  const store = new SubjectStore(db);
  // By key: an import inserts each batch in key order (ids follow it), not in file order.
  return store
    .page(0, 1000)
    .map(({ key, ref, eservices }) => ({ key, ref, eservices }))
    .sort((a, b) => (a.key < b.key ? -1 : 1));
}

describe('importSubjects', () => {
  it('imports CSV rows, resolving e-services by id or name in any case', async () => {
    const db = freshDb();
    const report = await run(db, csv('key,ref,eservices', `${A},r-a,`, `${B.toLowerCase()},r-b,residences`, ` ${C} ,,id-documents;${RES.toUpperCase()}`, `${legalPersonCode(12345)},co,`));
    expect(report).toMatchObject({ read: 4, imported: 4, updated: 0, unchanged: 0, removed: 0, rejectedCount: 0, complete: true, committed: true });
    expectByKey(stored(db), [
      { key: A, ref: 'r-a', eservices: 'all' },
      { key: B, ref: 'r-b', eservices: [RES] },
      { key: C, ref: null, eservices: [RES, DOC].sort() },
      { key: legalPersonCode(12345), ref: 'co', eservices: 'all' },
    ]);
  });

  it('imports NDJSON', async () => {
    const db = freshDb();
    const text = [JSON.stringify({ key: A, ref: 'r-a', eservices: ['residences'] }), JSON.stringify({ key: B })].join('\r\n');
    const report = await run(db, text, { format: 'ndjson', source: 'subjects.ndjson' });
    expect(report).toMatchObject({ read: 2, imported: 2, rejectedCount: 0 });
    expectByKey(stored(db), [
      { key: A, ref: 'r-a', eservices: [RES] },
      { key: B, ref: null, eservices: 'all' },
    ]);
  });

  it('updates the ref and e-services of existing keys; absent columns keep what is stored', async () => {
    const db = freshDb();
    await run(db, csv('key,ref,eservices', `${A},old,residences`, `${B},b,`, `${C},c,`));
    const report = await run(db, csv('key,ref,eservices', `${A},new,residences`, `${B},b,id-documents`, `${C},c,`, `${D},d,`));
    expect(report).toMatchObject({ read: 4, imported: 1, updated: 2, unchanged: 1 });
    const again = await run(db, csv('key', A, B));
    expect(again).toMatchObject({ imported: 0, updated: 0, unchanged: 2 });
    expectByKey(stored(db), [
      { key: A, ref: 'new', eservices: [RES] },
      { key: B, ref: 'b', eservices: [DOC] },
      { key: C, ref: 'c', eservices: 'all' },
      { key: D, ref: 'd', eservices: 'all' },
    ]);
  });

  it('reports bad rows with line numbers and reasons, imports the good ones, and never puts a key in a reason', async () => {
    const db = freshDb();
    const wrong = withWrongCheck(A);
    const rows = csv(
      'key,ref,eservices',
      `${A},ok-1,`, // 2
      `${wrong},bad-check,`, // 3
      `${B},"multi`, // 4
      `line ref",`, // 5
      `${B},dup,`, // 6
      `RSSMRA80A01H50,short,`, // 7
      `${C},unknown-es,nope`, // 8
      `${C},wrong-es-key,${D}`, // 9: a key in the eservices column is not echoed
      `,no-key,`, // 10
      `${D},,`, // 11
      `${omocode(fiscalCode(9), 3)},omocode,`, // 12
    );
    const seen: RejectedRow[] = [];
    const report = await run(db, rows, { onReject: (r) => seen.push(r) });
    expect(report.rejected).toEqual([
      { line: 3, reason: 'wrong check character', ref: 'bad-check' },
      { line: 6, reason: 'duplicate key (first at line 4)', ref: 'dup' },
      { line: 7, reason: 'wrong length (14 characters; expected 16, or 11 digits)', ref: 'short' },
      { line: 8, reason: 'unknown e-service "nope" (not an id or name in the configuration)', ref: 'unknown-es' },
      { line: 9, reason: 'duplicate key (first at line 8)', ref: 'wrong-es-key' },
      { line: 10, reason: 'missing key', ref: 'no-key' },
    ]);
    expect(seen).toEqual(report.rejected);
    expect(report).toMatchObject({ read: 10, imported: 4, rejectedCount: 6, committed: true, complete: true });
    expect(stored(db).map((s) => s.ref)).toEqual(['ok-1', 'multi\nline ref', null, 'omocode']);
    const text = JSON.stringify(report);
    for (const key of [A, B, C, D, wrong]) expect(text).not.toContain(key);
  });

  it('does not echo a key given as ref or as an e-service', async () => {
    const db = freshDb();
    const wrong = withWrongCheck(A);
    const report = await run(db, csv('key,ref,eservices', `${wrong},${wrong},`, `${wrong.slice(0, 15)},${B},`, `${C},c,${D}`));
    expect(report.rejected).toEqual([
      { line: 2, reason: 'wrong check character' },
      { line: 3, reason: 'wrong length (15 characters; expected 16, or 11 digits)' },
      { line: 4, reason: 'unknown e-service (value not shown: it looks like a subject key) (not an id or name in the configuration)', ref: 'c' },
    ]);
  });

  it('accepts any key with validate = false', async () => {
    const db = freshDb();
    const report = await run(db, csv('key', 'employee-0001', withWrongCheck(A), ' x '), { validate: false });
    expect(report).toMatchObject({ imported: 3, rejectedCount: 0 });
    expect(stored(db).map((s) => s.key)).toEqual(['EMPLOYEE-0001', withWrongCheck(A), 'X'].sort());
  });

  it('--strict imports nothing when a row is bad, and still reports every bad row', async () => {
    const db = freshDb();
    await run(db, csv('key,ref', `${A},kept`));
    const report = await run(db, csv('key,ref', `${A},changed`, `${B},b`, `bad-1,x`, `${C},c`, `bad-2,y`), { strict: true, batchSize: 1 });
    expect(report).toMatchObject({ read: 5, imported: 0, updated: 0, rejectedCount: 2, committed: false });
    expect(report.rejected.map((r) => r.line)).toEqual([4, 6]);
    expectByKey(stored(db), [{ key: A, ref: 'kept', eservices: 'all' }]);

    const good = await run(db, csv('key,ref', `${A},changed`, `${B},b`), { strict: true });
    expect(good).toMatchObject({ imported: 1, updated: 1, committed: true });
  });

  it('--replace makes the stored set the file\'s, keeping subjects whose rows are bad', async () => {
    const db = freshDb();
    await run(db, csv('key,ref', `${A},a`, `${B},b`, `${C},c`, `${D},d`));
    const report = await run(db, csv('key,ref,eservices', `${B},b2,`, `${C},c,nope`, `${fiscalCode(5)},e,`), { replace: true, batchSize: 2 });
    expect(report).toMatchObject({ imported: 1, updated: 1, removed: 2, rejectedCount: 1, committed: true });
    expectByKey(stored(db), [
      { key: B, ref: 'b2', eservices: 'all' },
      { key: C, ref: 'c', eservices: 'all' },
      { key: fiscalCode(5), ref: 'e', eservices: 'all' },
    ]);
  });

  it('--replace changes nothing when the file cannot be read to its end', async () => {
    const db = freshDb();
    await run(db, csv('key,ref', `${A},a`, `${B},b`));
    const report = await run(db, csv('key,ref', `${A},a2`, `${C},"broken"quote`, `${B},b`), { replace: true });
    expect(report).toMatchObject({ complete: false, committed: false, removed: 0, imported: 0 });
    expect(report.rejected).toEqual([{ line: 3, reason: 'malformed CSV: characters after a closing quote; the rest of the file was not read' }]);
    expectByKey(stored(db), [
      { key: A, ref: 'a', eservices: 'all' },
      { key: B, ref: 'b', eservices: 'all' },
    ]);
  });

  it('without --replace, keeps the good rows before a fatal syntax error', async () => {
    const db = freshDb();
    const report = await run(db, csv('key,ref', `${A},a`, `${B},"broken"quote`, `${C},c`));
    expect(report).toMatchObject({ complete: false, committed: true, imported: 1, rejectedCount: 1 });
    expect(stored(db).map((s) => s.key)).toEqual([A]);
  });

  it('--dry-run counts and writes nothing', async () => {
    const db = freshDb();
    await run(db, csv('key', A));
    const report = await run(db, csv('key', A, B, 'bad'), { dryRun: true, replace: true });
    expect(report).toMatchObject({ dryRun: true, committed: false, imported: 1, unchanged: 1, rejectedCount: 1 });
    expect(stored(db).map((s) => s.key)).toEqual([A]);
  });

  it('keeps the pseudonyms of a live epoch in step with the subject set', async () => {
    const db = freshDb();
    const now = Date.now();
    const res = Number(db.prepare("INSERT INTO eservices (eservice_id, name, created_at) VALUES (?, 'residences', ?)").run(RES, now).lastInsertRowid);
    const doc = Number(db.prepare("INSERT INTO eservices (eservice_id, name, created_at) VALUES (?, 'ID-Documents', ?)").run(DOC, now).lastInsertRowid);
    const epochSql = "INSERT INTO epochs (eservice, start_signal_id, status, seed, seed_fingerprint, algorithm, template, encoding, created_at, fill_state) VALUES (?, 0, 'known', ?, 'x', 'SHA-256', '${subject}${seed}', 'base64', ?, 'ready')";
    const resEpoch = Number(db.prepare(epochSql).run(res, 'seed-res', now).lastInsertRowid);
    const docEpoch = Number(db.prepare(epochSql).run(doc, 'seed-doc', now).lastInsertRowid);
    for (const epoch of [resEpoch, docEpoch]) new PseudonymStore(db).create(epoch);
    const hash = { [resEpoch]: new PseudonymHasher({ template: '${subject}${seed}', encoding: 'base64' }, 'seed-res', 'SHA-256'), [docEpoch]: new PseudonymHasher({ template: '${subject}${seed}', encoding: 'base64' }, 'seed-doc', 'SHA-256') };
    const ids = () => new Map(new SubjectStore(db).page(0, 100).map((s) => [s.key, s.id]));
    const pseudonyms = () =>
      pseudonymRows(db).map((p) => ({ epoch: p.epoch, subjectId: p.subjectId, prefix: p.prefix }));
    const expected = (rows: [string, number][]) => {
      const byKey = ids();
      return rows
        .map(([key, epoch]) => ({ epoch, subjectId: byKey.get(key)!, prefix: digestPrefix(hash[epoch]!.digest(key)) }))
        .sort((x, y) => x.epoch - y.epoch || x.subjectId - y.subjectId);
    };

    await run(db, csv('key,eservices', `${A},`, `${B},residences`));
    expect(pseudonyms()).toEqual(expected([[A, resEpoch], [A, docEpoch], [B, resEpoch]]));

    // B moves to the other e-service; C arrives; A is dropped by --replace.
    await run(db, csv('key,eservices', `${B},id-documents`, `${C},residences`), { replace: true });
    expect(pseudonyms()).toEqual(expected([[B, docEpoch], [C, resEpoch]]));

    // A ref-only change leaves pseudonyms alone; a dry run computes none.
    await run(db, csv('key,ref', `${B},new-ref`));
    await run(db, csv('key', D), { dryRun: true });
    expect(pseudonyms()).toEqual(expected([[B, docEpoch], [C, resEpoch]]));
  });
});

describe('importSubjects with tenants (delegations)', () => {
  const memberships = (db: Db, key: string) => {
    const store = new SubjectStore(db);
    return store.memberships(store.findByKey(key)!.id).map(({ tenant, ref, eservices }) => ({ tenant, ref, eservices }));
  };

  it('one file may list a key for the consumer and several tenants; the subject row follows the union', async () => {
    const db = freshDb();
    const report = await run(db, csv('key,ref,eservices,tenant', `${A},own-a,residences,`, `${A},x-a,id-documents,C_X01`, `${A},y-a,residences,c_y02`, `${B},y-b,,c_y02`, `${A},again,,c_x01`));
    expect(report).toMatchObject({ read: 5, imported: 4, rejectedCount: 1, committed: true });
    expect(report.rejected).toEqual([{ line: 6, reason: 'duplicate key for tenant "c_x01" (first at line 3)', ref: 'again' }]);
    expect(memberships(db, A)).toEqual([
      { tenant: '', ref: 'own-a', eservices: [RES] },
      { tenant: 'c_x01', ref: 'x-a', eservices: [DOC] },
      { tenant: 'c_y02', ref: 'y-a', eservices: [RES] },
    ]);
    // The subject row: one per key, the union of e-services, the own ref (none for B).
    expect(stored(db)).toEqual([
      { key: A, ref: 'own-a', eservices: [RES, DOC].sort() },
      { key: B, ref: null, eservices: 'all' },
    ]);

    // A tenant's update changes only its membership; the union shrinks when it narrows.
    const again = await run(db, csv('key,ref,eservices', `${A},x-a2,residences`), { tenant: 'c_x01' });
    expect(again).toMatchObject({ imported: 0, updated: 1 });
    expect(memberships(db, A)[1]).toEqual({ tenant: 'c_x01', ref: 'x-a2', eservices: [RES] });
    expect(stored(db)[0]).toEqual({ key: A, ref: 'own-a', eservices: [RES] });
  });

  it('--replace with --tenant removes only that tenant\'s absent keys; without it only the own ones', async () => {
    const db = freshDb();
    await run(db, csv('key,tenant', `${A},`, `${B},`, `${A},t1`, `${C},t1`, `${C},t2`, `${D},t2`));
    const r1 = await run(db, csv('key', `${A}`), { tenant: 't1', replace: true });
    expect(r1).toMatchObject({ removed: 1, unchanged: 1, committed: true });
    expect(memberships(db, C)).toEqual([{ tenant: 't2', ref: null, eservices: 'all' }]);
    const r2 = await run(db, csv('key', `${C}`), { replace: true });
    expect(r2).toMatchObject({ removed: 2, imported: 1 }); // A and B leave the own set
    expect(stored(db).map((s) => s.key)).toEqual([A, C, D]); // B had no other tenant: gone
    expect(memberships(db, A)).toEqual([{ tenant: 't1', ref: null, eservices: 'all' }]);
    expect(memberships(db, D)).toEqual([{ tenant: 't2', ref: null, eservices: 'all' }]);
  });

  it('rejects bad tenants by line and a bad --tenant before reading', async () => {
    const db = freshDb();
    const report = await run(db, csv('key,tenant', `${A},ok_1`, `${B},no way`, `${C},${D}`));
    expect(report.rejected.map((r) => [r.line, r.reason])).toEqual([
      [3, 'tenant must be letters, digits, "_", "." or "-", starting with a letter or digit (a PDND tenant id or an IPA code)'],
      [4, "tenant is a personal fiscal code (a swapped column?): a tenant is the delegator's id"],
    ]);
    await expect(run(db, csv('key', A), { tenant: '../etc' })).rejects.toMatchObject({ code: 'USAGE' });
  });

  describe('rows sorted in runs and merged (a few rows per run here, 20 000 by default)', () => {
    const E = fiscalCode(5);
    const F = fiscalCode(6);

    it('finds keys repeated in other runs, with the first line, and reports every rejection in line order', async () => {
      const db = freshDb();
      const rows = csv(
        'key,ref,eservices,tenant',
        `${F},f,,`, // 2
        `${withWrongCheck(B)},bad-b,,`, // 3
        `${A},a,,`, // 4
        `${E},e,,t1`, // 5
        `${C},c,nope,`, // 6: unknown e-service, first of its key
        `${D},d,,`, // 7
        `${A},a-again,,`, // 8: duplicate of line 4, another run
        `${withWrongCheck(B)},bad-b-again,,`, // 9: the first row of the key was bad: still a duplicate
        `${C},c-again,,`, // 10: duplicate of a bad row
        `${E},e-own,,`, // 11: the same key for another tenant is not a duplicate
        `${A},a-bad-tenant,,no way`, // 12: a bad tenant is reported before "duplicate"
        `${F},f-again,nope,`, // 13: duplicate before unknown e-service
        `,no-key,,`, // 14
      );
      const seen: RejectedRow[] = [];
      const report = await run(db, rows, { runRows: 3, batchSize: 2, onReject: (r) => seen.push(r) });
      expect(report.rejected).toEqual([
        { line: 3, reason: 'wrong check character', ref: 'bad-b' },
        { line: 6, reason: 'unknown e-service "nope" (not an id or name in the configuration)', ref: 'c' },
        { line: 8, reason: 'duplicate key (first at line 4)', ref: 'a-again' },
        { line: 9, reason: 'duplicate key (first at line 3)', ref: 'bad-b-again' },
        { line: 10, reason: 'duplicate key (first at line 6)', ref: 'c-again' },
        { line: 12, reason: 'tenant must be letters, digits, "_", "." or "-", starting with a letter or digit (a PDND tenant id or an IPA code)', ref: 'a-bad-tenant' },
        { line: 13, reason: 'duplicate key (first at line 2)', ref: 'f-again' },
        { line: 14, reason: 'missing key', ref: 'no-key' },
      ]);
      expect(seen).toEqual(report.rejected);
      expect(report).toMatchObject({ read: 13, imported: 5, rejectedCount: 8, committed: true, complete: true });
      expectByKey(stored(db), [
        { key: A, ref: 'a', eservices: 'all' },
        { key: D, ref: 'd', eservices: 'all' },
        { key: E, ref: 'e-own', eservices: 'all' },
        { key: F, ref: 'f', eservices: 'all' },
      ]);
      expect(memberships(db, E).map((m) => m.tenant)).toEqual(['', 't1']);
      // Ids follow key order: the store is written in key order.
      const ids = stored(db).map((s) => new SubjectStore(db).findByKey(s.key)!.id);
      expect(ids).toEqual([...ids].sort((x, y) => x - y));
      // The scratch file next to the database is gone.
      expect(fs.existsSync(`${db.name}-import`)).toBe(false);

      const kept = await run(freshDb(), rows, { runRows: 3, maxRejectedKept: 3 });
      expect(kept.rejected.map((r) => r.line)).toEqual([3, 6, 8]);
      expect(kept.rejectedCount).toBe(8);
    });

    it('--strict rolls back when the only problem is a key repeated in another run', async () => {
      const db = freshDb();
      await run(db, csv('key,ref', `${A},kept`));
      const report = await run(db, csv('key,ref', `${B},b`, `${C},c`, `${D},d`, `${E},e`, `${B},b-again`), { strict: true, runRows: 2, batchSize: 1 });
      expect(report).toMatchObject({ read: 5, imported: 0, rejectedCount: 1, committed: false });
      expect(report.rejected).toEqual([{ line: 6, reason: 'duplicate key (first at line 2)', ref: 'b-again' }]);
      expectByKey(stored(db), [{ key: A, ref: 'kept', eservices: 'all' }]);
      expect(fs.existsSync(`${db.name}-import`)).toBe(false);
    });

    it('--replace keeps stored keys listed only by repeated or bad rows, and removes the others', async () => {
      const db = freshDb();
      await run(db, csv('key,ref', `${A},a`, `${B},b`, `${C},c`, `${D},d`, `${E},e`));
      const report = await run(db, csv('key,ref,eservices', `${F},f,`, `${B},b,`, `${F},f-again,`, `${C},c,nope`, `${F},f-third,`), { replace: true, runRows: 2, batchSize: 2 });
      expect(report).toMatchObject({ imported: 1, unchanged: 1, removed: 3, rejectedCount: 3, committed: true });
      expect(report.rejected.map((r) => r.line)).toEqual([4, 5, 6]);
      expectByKey(stored(db), [
        { key: B, ref: 'b', eservices: 'all' },
        { key: C, ref: 'c', eservices: 'all' },
        { key: F, ref: 'f', eservices: 'all' },
      ]);
    });

    it('checkpoints the WAL on a worker while importing, and gives the connection its own checkpoints back', async () => {
      const db = freshDb();
      const before = db.pragma('wal_autocheckpoint', { simple: true });
      const rows = Array.from({ length: 3000 }, (_, i) => `${fiscalCode(100 + i)},r${i}`);
      const report = await run(db, csv('key,ref', ...rows), { batchSize: 100 });
      expect(report).toMatchObject({ imported: 3000, committed: true });
      expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(before);
      // The worker's last checkpoint copied every frame into the database.
      const [state] = db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[];
      expect(state!.log).toBeGreaterThan(0);
      expect(state!.checkpointed).toBe(state!.log);
    });

    it('a crash leaves a scratch file that the next import replaces', async () => {
      const db = freshDb();
      fs.writeFileSync(`${db.name}-import`, 'what a killed import left');
      fs.writeFileSync(`${db.name}-import-journal`, 'and its journal');
      const report = await run(db, csv('key,ref', `${A},a`, `${B},b`, `${A},a-again`), { runRows: 1 });
      expect(report).toMatchObject({ imported: 2, rejectedCount: 1 });
      for (const leftover of ['-import', '-import-journal']) expect(fs.existsSync(`${db.name}${leftover}`)).toBe(false);
    });
  });
});
