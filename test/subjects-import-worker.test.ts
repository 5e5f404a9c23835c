import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../src/store/db.js';
import { importSubjects, type ImportOptions, type ImportReport } from '../src/subjects/import.js';
import { readSubjectFile, MAX_LINE_CHARS, type SubjectFormat } from '../src/subjects/parse.js';
import { checkRecord, eserviceResolver } from '../src/subjects/check.js';
import type { CheckedItem } from '../src/subjects/checked-batch.js';
import { readCheckedOffThread, type ReadJob } from '../src/subjects/read-off-thread.js';
import { AppError } from '../src/errors.js';
import { runCli, spawnCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { writeKeyFile } from './helpers/keys.js';
import { fiscalCode, legalPersonCode, omocode, withWrongCheck } from './fixtures/subjects-codes.js';

/**
 * The import reads and checks its file on a worker thread (src/subjects/read-off-thread.ts,
 * running dist/subjects/read-worker.js): these tests hold it to the in-thread readers' results,
 * whatever the chunks the input arrives in, and to the failures of issue 13's follow-up.
 */

const RES = '00000000-0000-4000-8000-0000000000e1';
const DOC = '00000000-0000-4000-8000-0000000000e2';
const ESERVICES = [
  { id: RES, name: 'residences' },
  { id: DOC, name: 'ID-Documents' },
];
const A = fiscalCode(1);
const B = fiscalCode(2);
const C = fiscalCode(3);
const D = fiscalCode(4);

function job(format: SubjectFormat, overrides: Partial<ReadJob> = {}): ReadJob {
  return { format, source: `subjects.${format}`, eservices: ESERVICES, validate: true, fileTenant: undefined, replace: false, ...overrides };
}

function options(format: SubjectFormat, overrides: Partial<ImportOptions> = {}): ImportOptions {
  return {
    format,
    source: `subjects.${format}`,
    eservices: ESERVICES,
    validate: true,
    index: { backfill: false, includeSubjectKey: false, eserviceNames: new Map(ESERVICES.map((e) => [e.id, e.name])) },
    ...overrides,
  };
}

function freshDb(): Db {
  return openDatabase(path.join(tempDir(), 'subjects.db'));
}

/** Files with every kind of problem each reader and check reports (lines in the comments). */
const FILES: Record<string, { format: SubjectFormat; text: string }> = {
  'CSV with every kind of bad row, CRLF, a BOM and multi-byte refs': {
    format: 'csv',
    text:
      '\uFEFFkey,ref,eservices,tenant\r\n' + // 1
      [
        `${A},città ✓ 😀,,`, // 2: 2-, 3- and 4-byte UTF-8
        `${withWrongCheck(A)},bad-check,,`, // 3
        `${B},"multi\r\nline ref",residences;${DOC.toUpperCase()},`, // 4-5
        `${B},dup,,`, // 6
        'RSSMRA80A01H50,short,,', // 7
        `${C},unknown-es,nope,`, // 8
        `${C},wrong-es-key,${D},`, // 9: a key as e-service
        ',no-key,,', // 10
        `${D},,,`, // 11: empty ref
        `${omocode(fiscalCode(9), 3)},omocode,,`, // 12
        `${legalPersonCode(12345)},company,id-documents,c_a001`, // 13
        `${fiscalCode(5)},bad-tenant,,no way`, // 14
        `${fiscalCode(6)},fc-tenant,,${fiscalCode(7)}`, // 15
        `${fiscalCode(8)},too,many,fields,here`, // 16
        '', // 17: blank
        `${'X'.repeat(300)},long-key,,`, // 18
        `${fiscalCode(10)},"quoted, with comma",,`, // 19
      ].join('\r\n') +
      '\r\n',
  },
  'CSV as Excel saves it in Italian (";" between fields)': {
    format: 'csv',
    text: ['key;ref;eservices', `${A};a;"residences;id-documents"`, `${B};b;`, 'bad;x;'].join('\n'),
  },
  'CSV with a syntax error that ends the read': {
    format: 'csv',
    text: ['key,ref', `${A},a`, `${B},"broken"quote`, `${C},c`].join('\n') + '\n',
  },
  'CSV with a quote never closed': {
    format: 'csv',
    text: ['key,ref', `${A},a`, `${B},"open`, `${C},c`].join('\n') + '\n',
  },
  'NDJSON with every kind of bad line': {
    format: 'ndjson',
    text:
      [
        JSON.stringify({ key: A, ref: 'ünïcödé 😀', eservices: ['residences'] }), // 1
        'not json', // 2
        '[1, 2]', // 3
        JSON.stringify({ key: 5 }), // 4
        JSON.stringify({ key: B, colour: 'blue' }), // 5
        JSON.stringify({ key: B, eservices: 'residences' }), // 6
        JSON.stringify({ key: B, tenant: 7 }), // 7
        JSON.stringify({ key: B, ref: 42, eservices: null }), // 8
        JSON.stringify({ key: C, ref: { no: 1 } }), // 9
        JSON.stringify({ ref: 'keyless' }), // 10
        '', // 11
        JSON.stringify({ key: withWrongCheck(D), ref: 'bad' }), // 12
        JSON.stringify({ key: D, ref: null, eservices: [], tenant: ' t1 ' }), // 13
        JSON.stringify({ key: `${fiscalCode(11)}\u001e\u001f\ud800`, ref: 'odd characters' }), // 14: a lone surrogate
      ].join('\r\n') + '\n',
  },
  'plain lines': {
    format: 'lines',
    text: `\uFEFF${A}\n\n ${B.toLowerCase()} \r\nnot-a-code\n${C}`,
  },
};

/** What the in-thread readers and checks yield for `text` (the code the thread runs, from src/). */
async function inThread(format: SubjectFormat, text: string, readJob: ReadJob): Promise<CheckedItem[]> {
  const rules = { validate: readJob.validate, fileTenant: readJob.fileTenant, replace: readJob.replace };
  const resolve = eserviceResolver(readJob.eservices);
  const items: CheckedItem[] = [];
  for await (const item of readSubjectFile(Readable.from([Buffer.from(text)]), format, readJob.source)) {
    if (item.kind === 'problem') items.push(item);
    else {
      const row = checkRecord(item, rules, resolve);
      items.push('reason' in row ? { kind: 'rejected', row } : { kind: 'staged', row });
    }
  }
  return items;
}

async function offThread(input: Readable, readJob: ReadJob): Promise<CheckedItem[]> {
  const items: CheckedItem[] = [];
  for await (const batch of readCheckedOffThread(input, readJob)) items.push(...batch);
  return items;
}

/** The bytes of `text` in chunks of `size` bytes: multi-byte characters and CRLF split across chunks. */
function chunked(text: string, size: number): Readable {
  const bytes = Buffer.from(text);
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
  return Readable.from(chunks);
}

function stored(db: Db): unknown[] {
  return db
    .prepare(
      `SELECT s.key, m.tenant, m.ref, m.all_eservices,
              (SELECT group_concat(eservice_id) FROM (SELECT eservice_id FROM subject_tenant_eservices e WHERE e.subject_id = s.id AND e.tenant = m.tenant ORDER BY eservice_id)) AS eservices
         FROM subjects s LEFT JOIN subject_tenants m ON m.subject_id = s.id ORDER BY s.key, m.tenant`,
    )
    .all();
}

describe('the reader thread yields what the in-thread readers and checks do', () => {
  for (const [name, { format, text }] of Object.entries(FILES)) {
    it(name, async () => {
      const expected = await inThread(format, text, job(format));
      // Items and problems are there, or the file does not test what it says.
      expect(expected.length).toBeGreaterThanOrEqual(2);
      expect(await offThread(Readable.from([Buffer.from(text)]), job(format))).toEqual(expected);
      expect(await offThread(chunked(text, 1), job(format))).toEqual(expected);
      expect(await offThread(chunked(text, 7), job(format))).toEqual(expected);
      // Text chunks, as src/daemon/demo.ts passes them.
      expect(await offThread(Readable.from([text]), job(format))).toEqual(expected);
    });
  }

  it('with --tenant, --replace and validate = false', async () => {
    const { text } = FILES['CSV with every kind of bad row, CRLF, a BOM and multi-byte refs']!;
    for (const overrides of [{ fileTenant: 'c_a001' }, { replace: true }, { validate: false }]) {
      const expected = await inThread('csv', text, job('csv', overrides));
      expect(await offThread(chunked(text, 3), job('csv', overrides))).toEqual(expected);
    }
  });

  it('a line just under the limit arrives whole, in one chunk or in 64 KiB ones', async () => {
    const ref = 'r'.repeat(MAX_LINE_CHARS - 40);
    const text = `key,ref\n${A},${ref}\n${B},b\n`;
    const expected = await inThread('csv', text, job('csv'));
    expect(expected.map((item) => (item.kind === 'staged' ? item.row.ref?.length : item.kind))).toEqual([ref.length, 1]);
    expect(await offThread(Readable.from([Buffer.from(text)]), job('csv'))).toEqual(expected);
    expect(await offThread(chunked(text, 64 * 1024), job('csv'))).toEqual(expected);
  });

  it('a line over the limit fails as in the thread, with its file and line', async () => {
    const text = `${A}\n${'x'.repeat(MAX_LINE_CHARS + 1)}\n${B}\n`;
    const failure = await offThread(chunked(text, 64 * 1024), job('lines')).catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(AppError);
    expect(failure).toMatchObject({ code: 'INPUT_INVALID', message: `subjects.lines:2: line longer than ${MAX_LINE_CHARS} characters (a subject line is short: is a line break missing?); nothing after it was read` });
  });
});

describe('importSubjects through the reader thread', () => {
  it('imports the same report and rows whatever the chunks', async () => {
    for (const [name, { format, text }] of Object.entries(FILES)) {
      const results: { report: ImportReport; rows: unknown[] }[] = [];
      for (const input of [Readable.from([Buffer.from(text)]), chunked(text, 1), Readable.from([text])]) {
        const db = freshDb();
        let worker: Worker | undefined;
        const report = await importSubjects(db, input, options(format, { runRows: 2, batchSize: 3, onReadWorker: (w) => (worker = w) }));
        expect(worker, name).toBeDefined();
        expect(input.destroyed).toBe(true);
        results.push({ report, rows: stored(db) });
        db.close();
      }
      expect(results[0]!.report.rejectedCount, name).toBeGreaterThan(0);
      expect(results[1], name).toEqual(results[0]);
      expect(results[2], name).toEqual(results[0]);
    }
  });

  it('a thread that read its file to the end serves the next import; one stopped early is ended', async () => {
    const dbs = [freshDb(), freshDb(), freshDb(), freshDb()];
    const workers: Worker[] = [];
    const exited = new Set<Worker>();
    const onReadWorker = (w: Worker) => {
      workers.push(w);
      w.on('exit', () => exited.add(w));
    };
    const clean = `key,ref\n${A},a\n`;
    const stopped = `key,ref\n${A},a\n${B},"broken"quote\n${C},c\n`;
    await importSubjects(dbs[0]!, Readable.from([clean]), options('csv', { onReadWorker }));
    await importSubjects(dbs[1]!, Readable.from([clean]), options('csv', { onReadWorker }));
    expect(workers[1]).toBe(workers[0]);
    const report = await importSubjects(dbs[2]!, Readable.from([stopped]), options('csv', { onReadWorker }));
    expect(report.complete).toBe(false);
    expect(workers[2]).toBe(workers[0]);
    expect(exited.has(workers[0]!)).toBe(true);
    await importSubjects(dbs[3]!, Readable.from([clean]), options('csv', { onReadWorker }));
    expect(workers[3]).not.toBe(workers[0]);
    expect(exited.has(workers[3]!)).toBe(false);
  });

  it('fails on a line over the limit while the input is still open (stdin), ending the thread and the input', async () => {
    // (A CSV syntax error is only reported once the input ends: csv-parse holds what follows
    // it until then, in the thread as it did on the main thread.)
    const db = freshDb();
    const input = new Readable({ read() {} });
    input.push(`${A}\n${'x'.repeat(MAX_LINE_CHARS + 1)}`);
    let exited = false;
    const failure = await importSubjects(db, input, options('lines', { onReadWorker: (w) => w.on('exit', () => (exited = true)) })).catch((err: unknown) => err);
    expect(failure).toMatchObject({ code: 'INPUT_INVALID', message: `subjects.lines:2: line longer than ${MAX_LINE_CHARS} characters (a subject line is short: is a line break missing?); nothing after it was read` });
    expect(exited).toBe(true);
    expect(input.destroyed).toBe(true);
    expect(stored(db)).toEqual([]);
  });

  it('an input error midway fails with the words of the in-thread readers and stores nothing', async () => {
    for (const format of ['csv', 'ndjson', 'lines'] as const) {
      const db = freshDb();
      const rows = format === 'ndjson' ? [JSON.stringify({ key: A }), JSON.stringify({ key: B })] : format === 'csv' ? ['key', A, B] : [A, B];
      let sent = 0;
      const input = new Readable({
        read() {
          if (sent < rows.length) this.push(`${rows[sent++]}\n`);
          else this.destroy(Object.assign(new Error('disk on fire'), { code: 'EIO' }));
        },
      });
      const failure = await importSubjects(db, input, options(format)).catch((err: unknown) => err);
      expect(failure, format).toMatchObject({ code: 'INPUT_INVALID', message: `subjects.${format}: cannot read: EIO` });
      expect((failure as AppError).cause).toMatchObject({ message: 'disk on fire' });
      expect(stored(db)).toEqual([]);
      expect(fs.existsSync(`${db.name}-import`)).toBe(false);
      db.close();
    }
    const db = freshDb();
    await expect(importSubjects(db, fs.createReadStream(path.join(tempDir(), 'absent.csv')), options('csv'))).rejects.toMatchObject({ code: 'INPUT_NOT_FOUND', message: 'subjects.csv: no such file' });
  });

  it('a reader thread that dies midway is an INTERNAL error that names the file; nothing is stored, the input is closed', async () => {
    for (const replace of [false, true]) {
      const db = freshDb();
      const input = new Readable({ read() {} });
      input.push('key,ref\n');
      for (let i = 0; i < 3000; i++) input.push(`${fiscalCode(100 + i)},r${i}\n`);
      let worker: Worker | undefined;
      let killed = false;
      const failure = await importSubjects(
        db,
        input,
        options('csv', {
          replace,
          batchSize: 100,
          runRows: 50,
          onReadWorker: (w) => (worker = w),
          onProgress: (p) => {
            // Rows were read, staged and (without --replace) committed to the scratch file.
            if (p.phase === 'read' && p.read >= 200 && !killed) {
              killed = true;
              void worker!.terminate();
            }
          },
        }),
      ).catch((err: unknown) => err);
      expect(killed).toBe(true);
      expect(failure).toBeInstanceOf(AppError);
      expect(failure).toMatchObject({ code: 'INTERNAL', message: 'subjects.csv: the reader thread stopped (exit code 1) before the end of the file' });
      expect(input.destroyed).toBe(true);
      expect(stored(db)).toEqual([]);
      expect(fs.existsSync(`${db.name}-import`)).toBe(false);
      db.close();
    }
  });

  it('a reader thread that throws is an INTERNAL error', async () => {
    const db = freshDb();
    const input = new Readable({ read() {} });
    input.push(`key,ref\n${A},a\n`);
    // A message the thread cannot take (after the import's 'start'): its handler throws, and
    // the thread ends with the error.
    const failure = await importSubjects(db, input, options('csv', { onReadWorker: (w) => queueMicrotask(() => w.postMessage({ type: 'chunk', data: 42 })) })).catch((err: unknown) => err);
    expect(failure).toMatchObject({ code: 'INTERNAL' });
    expect((failure as Error).message).toMatch(/^subjects\.csv: the reader thread failed: /);
    expect(input.destroyed).toBe(true);
    expect(stored(db)).toEqual([]);
  });
});

describe('bounded reading ahead', () => {
  it('reads the input only as far as the import takes the results, and stops reading when it returns', async () => {
    const total = 200_000;
    let pulled = 0;
    const input = new Readable({
      read() {
        if (pulled === 0) this.push('key,ref\n');
        if (pulled < total) this.push(`${fiscalCode(pulled % 5000)},r${pulled}\n`);
        else this.push(null);
        pulled++;
      },
    });
    let worker: Worker | undefined;
    let exited = false;
    const reader = readCheckedOffThread(input, job('csv'), { onWorker: (w) => ((worker = w), w.on('exit', () => (exited = true))) });
    const first = await reader.next();
    expect(first.done).toBe(false);
    // Whatever the time given, the thread waits for the import to take what it sent: at most a
    // few chunks in flight, the parser's buffers and 8 batches of 2048 rows.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const ahead = pulled;
    expect(ahead).toBeLessThan(40_000);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(pulled).toBe(ahead);
    await reader.return(undefined);
    expect(worker).toBeDefined();
    expect(exited).toBe(true);
    expect(input.destroyed).toBe(true);
  });
});

describe('subjects import from stdin (CLI child process)', () => {
  function setup(): { dir: string; config: string; database: string } {
    const dir = tempDir('shs-import-worker-');
    writeKeyFile(dir, 'client.pem');
    const config = path.join(dir, 'config.toml');
    fs.writeFileSync(
      config,
      `preset = "simulator"
database = "state/signalhub-sync.db"

[log]
level = "info"

[pdnd.m2m]
client_id = "00000000-0000-4000-8000-000000000001"
key_id = "m2m-kid"
private_key_file = "client.pem"

[pdnd.eservice_client]
client_id = "00000000-0000-4000-8000-000000000002"
key_id = "eservice-kid"
private_key_file = "client.pem"

[[eservices]]
id = "${RES}"
name = "residences"
purpose_id = "00000000-0000-4000-8000-0000000000f1"
`,
    );
    return { dir, config, database: path.join(dir, 'state', 'signalhub-sync.db') };
  }
  const keysOf = (database: string) => {
    const db = new Database(database, { readonly: true });
    try {
      return (db.prepare('SELECT key FROM subjects ORDER BY key').all() as { key: string }[]).map((r) => r.key);
    } finally {
      db.close();
    }
  };

  it('imports stdin and exits 0; bad rows exit 65 with their lines, no key in any output', async () => {
    const s = setup();
    const rows = Array.from({ length: 5000 }, (_, i) => `${fiscalCode(200 + i)},r${i}`);
    const ok = await runCli(['--config', s.config, 'subjects', 'import', '-', '--json'], { input: `key,ref\n${rows.join('\n')}\n`, cwd: s.dir });
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ read: 5000, imported: 5000, complete: true, committed: true });
    expect(keysOf(s.database)).toHaveLength(5000);

    const bad = await runCli(['--config', s.config, 'subjects', 'import', '-'], { input: `key,ref\n${A},a\n${withWrongCheck(B)},b\n`, cwd: s.dir });
    expect(bad.code).toBe(65);
    expect(bad.stderr).toContain('line 3: wrong check character (ref b)');
    for (const key of [A, B, withWrongCheck(B)]) expect(bad.stdout + bad.stderr).not.toContain(key);
  });

  it('exits on a line over the limit although stdin stays open: no reader thread keeps it alive', async () => {
    const s = setup();
    const child = spawnCli(['--config', s.config, 'subjects', 'import', '-', '--format', 'lines'], { cwd: s.dir });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdout!.resume();
    child.stdin!.on('error', () => {}); // the child may exit before taking all of it
    child.stdin!.write(`${A}\n${'x'.repeat(MAX_LINE_CHARS + 1)}`);
    // stdin is never ended.
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(65);
    expect(stderr).toContain(`stdin:2: line longer than ${MAX_LINE_CHARS} characters`);
    expect(stderr).not.toContain(A);
  });
});
