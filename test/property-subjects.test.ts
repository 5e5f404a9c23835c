import path from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isAppError } from '../src/errors.js';
import { openDatabase, type Db } from '../src/store/db.js';
import { importSubjects, type ImportOptions, type ImportReport } from '../src/subjects/import.js';
import { checkLetter, fiscalCode, legalPersonCode, omocode } from './fixtures/subjects-codes.js';
import { tempDir } from './helpers/fs.js';
import { bounded, propertyParameters, propertyTimeoutMs, yieldToEventLoop } from './helpers/property.js';
import { pseudonymCount } from './helpers/pseudonyms.js';

/**
 * The bad-input corpus for subject files (issue 8): generated CSV and NDJSON files (valid,
 * omocodic and 11-digit codes, bad check characters, months and days, BOMs, CRLF, quotes,
 * empty lines, duplicates, missing columns, huge lines, random bytes) through the real import
 * into a real SQLite file. The stored set must equal an independent model, every rejected row
 * must be reported by its line, no report may contain a subject key, and `strict` must leave
 * the database untouched when any row is bad.
 */

const RES = '00000000-0000-4000-8000-0000000000e1';

// ---- an independent model of subject keys (DM 12/03/1974, partita IVA) ----

const OMOCODE = 'LMNPQRSTUV';
const MONTHS = 'ABCDEHLMPRST';

function digitValue(ch: string): number {
  if (/[0-9]/.test(ch)) return Number(ch);
  const i = OMOCODE.indexOf(ch);
  return i; // -1 when neither
}

function modelValidKey(raw: string): string | undefined {
  const key = raw.trim().toUpperCase();
  if (/^[0-9]{11}$/.test(key)) {
    let total = 0;
    for (let i = 0; i < 10; i++) {
      const d = Number(key[i]);
      total += i % 2 === 0 ? d : d * 2 > 9 ? d * 2 - 9 : d * 2;
    }
    return String((10 - (total % 10)) % 10) === key[10] ? key : undefined;
  }
  if (key.length !== 16 || !/^[A-Z0-9]+$/.test(key)) return undefined;
  const letters = [0, 1, 2, 3, 4, 5, 8, 11, 15];
  const digits = [6, 7, 9, 10, 12, 13, 14];
  if (!letters.every((i) => /[A-Z]/.test(key[i]!))) return undefined;
  if (!digits.every((i) => digitValue(key[i]!) >= 0)) return undefined;
  if (!MONTHS.includes(key[8]!)) return undefined;
  const day = digitValue(key[9]!) * 10 + digitValue(key[10]!);
  if (!((day >= 1 && day <= 31) || (day >= 41 && day <= 71))) return undefined;
  return checkLetter(key.slice(0, 15)) === key[15] ? key : undefined;
}

/** A key of the code's shape with the check character recomputed (so only the mutated rule fails). */
const rechecked = (first15: string): string => first15 + checkLetter(first15);

const keyText: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 3000 }).map((n) => fiscalCode(n)) },
  { weight: 2, arbitrary: fc.tuple(fc.integer({ min: 0, max: 3000 }), fc.integer({ min: 1, max: 7 })).map(([n, k]) => omocode(fiscalCode(n), k)) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 99_999_999 }).map((n) => legalPersonCode(n)) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 3000 }).map((n) => fiscalCode(n, '80A41H501')) }, // a woman's day
  // Each rule broken once, the check character kept right.
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 3000 }).map((n) => rechecked(fiscalCode(n).slice(0, 8) + 'F' + fiscalCode(n).slice(9, 15))) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 3000 }).map((n) => rechecked(fiscalCode(n, '80A32H501').slice(0, 15))) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 3000 }).map((n) => rechecked(fiscalCode(n, '80A00H501').slice(0, 15))) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 3000 }).map((n) => rechecked(fiscalCode(n, '8WA01H501').slice(0, 15))) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 3000 }).map((n) => { const c = fiscalCode(n); return c.slice(0, 15) + (c[15] === 'Z' ? 'A' : String.fromCharCode(c.charCodeAt(15) + 1)); }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 99_999_999 }).map((n) => { const c = legalPersonCode(n); return c.slice(0, 10) + String((Number(c[10]) + 1) % 10); }) },
  { weight: 1, arbitrary: fc.constantFrom('', '   ', 'ABC', '1234567890A', '123456789012', 'X'.repeat(300)) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }).filter((s) => !/[",\n\r;]/.test(s)) },
);

/** Keys as people type them: lower case, padded. */
const spelledKey = fc.tuple(keyText, fc.constantFrom('', ' ', '  '), fc.boolean()).map(([k, pad, lower]) => `${pad}${lower ? k.toLowerCase() : k}${pad}`);

interface Row {
  key: string;
  ref: string;
  eservices: string;
  /** CSV only: fields dropped or added (a row that does not fit the header). */
  arity: 0 | -1 | 1;
  quoted: boolean;
}

const row: fc.Arbitrary<Row> = fc.record({
  key: spelledKey,
  ref: fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 1, max: 1e6 }).map((n) => `PRAT-${n}`) },
    { weight: 1, arbitrary: fc.constantFrom('', 'line one\nline two', 'a "quoted" ref', 'x'.repeat(20_000)) },
  ),
  eservices: fc.constantFrom('', '', 'residences', 'RESIDENCES', RES, `${RES.toUpperCase()};residences`, 'unknown-es', 'residences;nope'),
  arity: fc.oneof({ weight: 12, arbitrary: fc.constant(0 as const) }, { weight: 1, arbitrary: fc.constantFrom(-1 as const, 1 as const) }),
  quoted: fc.boolean(),
});

type Item = { kind: 'row'; row: Row; refIsKey: boolean } | { kind: 'blank'; text: string } | { kind: 'bytes'; bytes: Uint8Array };

const items = fc.array(
  fc.oneof(
    { weight: 12, arbitrary: fc.tuple(row, fc.boolean()).map(([r, refIsKey]): Item => ({ kind: 'row', row: refIsKey && r.ref.startsWith('PRAT') ? { ...r, ref: r.key } : r, refIsKey })) },
    { weight: 1, arbitrary: fc.constantFrom('', '   ', '\t').map((text): Item => ({ kind: 'blank', text })) },
    // NDJSON only (CSV turns them into rows of blanks or ignores them): bytes without line breaks.
    { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 40 }).map((bytes): Item => ({ kind: 'bytes', bytes: bytes.map((b) => (b === 10 || b === 13 ? 32 : b)) })) },
  ),
  { maxLength: 25 },
);

interface File {
  format: 'csv' | 'ndjson';
  bom: boolean;
  eol: '\n' | '\r\n';
  items: Item[];
}

const files: fc.Arbitrary<File> = fc.record({ format: fc.constantFrom('csv' as const, 'ndjson' as const), bom: fc.boolean(), eol: fc.constantFrom('\n' as const, '\r\n' as const), items });

const csvField = (value: string, quoted: boolean): string => (quoted || /[",\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value);

interface Rendered {
  bytes: Buffer;
  /** What the model expects of each record: its line and its fields (undefined = a malformed line). */
  records: Array<{ line: number; row: Row | undefined }>;
}

function render(file: File): Rendered {
  const parts: Buffer[] = [];
  const records: Rendered['records'] = [];
  let line = 1;
  const emit = (text: string | Buffer): void => {
    const buffer = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
    parts.push(buffer, Buffer.from(file.eol));
    line += 1 + buffer.toString('utf8').split('\n').length - 1;
  };
  if (file.bom) parts.push(Buffer.from('\uFEFF'));
  if (file.format === 'csv') emit('key,ref,eservices');
  for (const item of file.items) {
    if (item.kind === 'blank') {
      emit(item.text);
      continue;
    }
    if (item.kind === 'bytes') {
      if (file.format === 'csv') continue;
      const text = Buffer.from(item.bytes).toString('utf8');
      if (text.trim() !== '') records.push({ line, row: undefined });
      emit(Buffer.from(item.bytes));
      continue;
    }
    const r = item.row;
    if (file.format === 'csv') {
      const values = [r.key, r.ref, r.eservices];
      if (r.arity === -1) values.pop();
      if (r.arity === 1) values.push('extra');
      const fields = values.map((f) => csvField(f, r.quoted));
      if (values.every((v) => v.trim() === '')) {
        emit(fields.join(','));
        continue; // a row of blanks is skipped, like an empty line
      }
      const start = line;
      emit(fields.join(','));
      records.push({ line: start, row: r.arity === 0 ? r : undefined });
    } else {
      const object: Record<string, unknown> = { key: r.key, ref: r.ref };
      if (r.eservices !== '') object.eservices = r.eservices.split(';');
      if (r.arity === 1) object.extra = 1;
      if (r.arity === -1) delete object.key;
      records.push({ line, row: r.arity === 0 ? r : undefined });
      emit(JSON.stringify(object));
    }
  }
  return { bytes: Buffer.concat(parts), records };
}

/** What the import must do with the rendered file: the stored subjects and the rejected lines. */
function model(rendered: Rendered): { stored: Map<string, string | null>; rejectedLines: number[] } {
  const stored = new Map<string, string | null>();
  const seen = new Set<string>();
  const rejectedLines: number[] = [];
  for (const { line, row } of rendered.records) {
    if (row === undefined) {
      rejectedLines.push(line);
      continue;
    }
    const key = row.key.trim().toUpperCase();
    if (key === '' || key.length > 256) {
      rejectedLines.push(line);
      continue;
    }
    const duplicate = seen.has(key);
    seen.add(key);
    const valid = modelValidKey(key);
    const names = row.eservices.split(';').map((s) => s.trim().toLowerCase()).filter((s) => s !== '');
    const known = names.every((n) => n === 'residences' || n === RES);
    if (duplicate || valid === undefined || !known) {
      rejectedLines.push(line);
      continue;
    }
    stored.set(key, row.ref.trim() === '' ? null : row.ref.trim());
  }
  return { stored, rejectedLines };
}

function options(format: 'csv' | 'ndjson', overrides: Partial<ImportOptions> = {}): ImportOptions {
  return {
    format,
    source: `subjects.${format}`,
    eservices: [{ id: RES, name: 'residences' }],
    validate: true,
    index: { backfill: false, includeSubjectKey: false, eserviceNames: new Map([[RES, 'residences']]) },
    batchSize: 7,
    // Many sorted runs of a few rows: repeated keys meet in the merge, not in memory.
    runRows: 5,
    ...overrides,
  };
}

function storedSubjects(db: Db): Map<string, string | null> {
  return new Map((db.prepare('SELECT key, ref FROM subjects ORDER BY key').all() as Array<{ key: string; ref: string | null }>).map((r) => [r.key, r.ref]));
}

function snapshot(db: Db): unknown {
  return {
    subjects: db.prepare('SELECT * FROM subjects ORDER BY id').all(),
    eservices: db.prepare('SELECT * FROM subject_eservices ORDER BY subject_id, eservice_id').all(),
    pseudonyms: pseudonymCount(db),
  };
}

/**
 * Every key-length value written in the key column, as the report must never show it (valid or
 * not: a mistyped code is personal data too). An NDJSON row without its "key" field holds no
 * key: its ref is only a ref, whatever it repeats (the soak run found the model counting it).
 */
function keysOf(file: File): string[] {
  const written = (item: Item): item is Extract<Item, { kind: 'row' }> => item.kind === 'row' && !(file.format === 'ndjson' && item.row.arity === -1);
  return file.items.filter(written).flatMap((item) => [item.row.key.trim(), item.row.key.trim().toUpperCase()]).filter((k) => k.length === 16 || k.length === 11);
}

async function runImport(db: Db, file: File, rendered: Rendered, overrides: Partial<ImportOptions> = {}): Promise<ImportReport> {
  try {
    return await bounded(importSubjects(db, Readable.from([rendered.bytes]), options(file.format, overrides)), 20_000, 'subject import');
  } catch (err) {
    if (isAppError(err)) throw new Error(`the import refused the whole file (${err.code}): ${err.message}`);
    throw err;
  }
}

describe('subject files: generated CSV and NDJSON through the real import', () => {
  it(
    'the stored subjects equal the model, every rejected row is reported by its line, and no report contains a subject key',
    async () => {
      await fc.assert(
        fc.asyncProperty(files, async (file) => {
          // The import awaits only stream microtasks and synchronous SQLite: let vitest's RPC through.
          await yieldToEventLoop();
          const rendered = render(file);
          const expected = model(rendered);
          const db = openDatabase(path.join(tempDir('shs-prop-subjects-'), 'state.db'));
          try {
            const report = await runImport(db, file, rendered);
            expect(storedSubjects(db)).toEqual(expected.stored);
            expect(report.rejected.map((r) => r.line)).toEqual(expected.rejectedLines);
            expect(report.rejectedCount).toBe(expected.rejectedLines.length);
            expect(report.imported).toBe(expected.stored.size);
            for (const r of report.rejected) expect(r.reason.length).toBeGreaterThan(0);
            const text = JSON.stringify(report);
            for (const key of keysOf(file)) expect(text).not.toContain(key);
          } finally {
            db.close();
          }
        }),
        propertyParameters({ runs: 150, soakRuns: 3000 }),
      );
    },
    propertyTimeoutMs(120_000),
  );

  it(
    'strict: a file with any bad row changes nothing in a database that already holds subjects; a clean file imports exactly the model',
    async () => {
      const existing = `key,ref,eservices\n${fiscalCode(9001)},kept-1,\n${legalPersonCode(424242)},kept-2,residences\n`;
      await fc.assert(
        fc.asyncProperty(files, async (file) => {
          // The import awaits only stream microtasks and synchronous SQLite: let vitest's RPC through.
          await yieldToEventLoop();
          const rendered = render(file);
          const expected = model(rendered);
          const db = openDatabase(path.join(tempDir('shs-prop-subjects-strict-'), 'state.db'));
          try {
            await importSubjects(db, Readable.from([Buffer.from(existing)]), options('csv'));
            const before = snapshot(db);
            const storedBefore = storedSubjects(db);
            const report = await runImport(db, file, rendered, { strict: true });
            expect(report.rejected.map((r) => r.line)).toEqual(expected.rejectedLines);
            if (expected.rejectedLines.length > 0) {
              expect(report.committed).toBe(false);
              expect(snapshot(db)).toEqual(before);
            } else {
              expect(report.committed).toBe(true);
              expect(storedSubjects(db)).toEqual(new Map([...storedBefore, ...expected.stored]));
            }
            const text = JSON.stringify(report);
            for (const key of keysOf(file)) expect(text).not.toContain(key);
          } finally {
            db.close();
          }
        }),
        propertyParameters({ runs: 100, soakRuns: 2000 }),
      );
    },
    propertyTimeoutMs(120_000),
  );
});
