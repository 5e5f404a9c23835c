import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { CLI, runCli, spawnCli, type CliResult } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { writeKeyFile } from './helpers/keys.js';
import { WriterLock } from '../src/store/lock.js';
import { fiscalCode, legalPersonCode, omocode, withWrongCheck } from './fixtures/subjects-codes.js';

/** Stored subjects are compared by key: an import inserts each batch in key order, not file order. */
function expectByKey<T extends { key: string }>(actual: T[], expected: T[]): void {
  expect(actual).toEqual([...expected].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)));
}


const RES = '00000000-0000-4000-8000-0000000000e1';
const DOC = '00000000-0000-4000-8000-0000000000e2';

interface Setup {
  dir: string;
  config: string;
  database: string;
  cli: (args: string[], input?: string) => Promise<CliResult>;
}

function setup(options: { validate?: boolean } = {}): Setup {
  const dir = tempDir('shs-subjects-');
  writeKeyFile(dir, 'client.pem');
  const database = path.join(dir, 'state', 'signalhub-sync.db');
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

[subjects]
validate = ${options.validate ?? true}

[[eservices]]
id = "${RES}"
name = "residences"
purpose_id = "00000000-0000-4000-8000-0000000000f1"
[eservices.recipe]
template = "\${subject}\${seed}"
encoding = "base64"

[[eservices]]
id = "${DOC}"
name = "id-documents"
purpose_id = "00000000-0000-4000-8000-0000000000f2"
[eservices.recipe]
template = "\${subject}\${seed}"
encoding = "hex"
`,
  );
  return { dir, config, database, cli: (args, input) => runCli(['--config', config, ...args], { input, cwd: dir }) };
}

function storedKeys(database: string): { key: string; ref: string | null }[] {
  const db = new Database(database, { readonly: true });
  try {
    // By key: an import inserts each batch in key order (ids follow it), not in file order.
    return db.prepare('SELECT key, ref FROM subjects ORDER BY key').all() as { key: string; ref: string | null }[];
  } finally {
    db.close();
  }
}

const write = (s: Setup, name: string, text: string) => {
  const file = path.join(s.dir, name);
  fs.writeFileSync(file, text);
  return file;
};

const A = fiscalCode(101);
const B = fiscalCode(102);
const C = fiscalCode(103);

describe('subjects import (CLI)', () => {
  it('imports a semicolon-separated CSV as Excel saves it in an Italian locale (quoted e-service list)', async () => {
    const s = setup();
    const file = write(s, 'soggetti.csv', `\uFEFFkey;ref;eservices\r\n${A};Pratica 1;residences\r\n${legalPersonCode(4242)};"Rossi, Mario";"id-documents;residences"\r\n`);
    const result = await s.cli(['subjects', 'import', file]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe('subjects import: read 2, new 2, updated 0, unchanged 0, removed 0, rejected 0\nall rows imported\n');
    expectByKey(storedKeys(s.database), [
      { key: A, ref: 'Pratica 1' },
      { key: legalPersonCode(4242), ref: 'Rossi, Mario' },
    ]);
    const count = await s.cli(['subjects', 'count', '--json']);
    expect(JSON.parse(count.stdout).eservices).toEqual([
      { id: RES, name: 'residences', subjects: 2 },
      { id: DOC, name: 'id-documents', subjects: 1 },
    ]);
  });

  it('imports a CSV file with BOM and CRLF, prints a summary, exits 0; count reports it', async () => {
    const s = setup();
    const file = write(s, 'subjects.csv', `\uFEFFkey,ref,eservices\r\n${A},r-a,\r\n${B.toLowerCase()},r-b,residences\r\n${legalPersonCode(4242)},co,id-documents;residences\r\n`);
    const result = await s.cli(['subjects', 'import', file]);
    expect(result.stdout).toBe('subjects import: read 3, new 3, updated 0, unchanged 0, removed 0, rejected 0\nall rows imported\n');
    expect(result.code).toBe(0);
    expectByKey(storedKeys(s.database), [
      { key: A, ref: 'r-a' },
      { key: B, ref: 'r-b' },
      { key: legalPersonCode(4242), ref: 'co' },
    ]);
    expect(fs.statSync(s.database).mode & 0o777).toBe(0o600);

    const count = await s.cli(['subjects', 'count', '--json']);
    expect(count.code).toBe(0);
    expect(JSON.parse(count.stdout)).toEqual({
      total: 3,
      eservices: [
        { id: RES, name: 'residences', subjects: 3 },
        { id: DOC, name: 'id-documents', subjects: 2 },
      ],
      tenants: [{ tenant: null, subjects: 3 }],
    });
    const human = await s.cli(['subjects', 'count']);
    expect(human.stdout).toBe(`subjects: 3\n  residences (${RES}): 3\n  id-documents (${DOC}): 2\n`);
  });

  it('reads NDJSON from stdin with --format, and --json prints the report', async () => {
    const s = setup();
    const input = [JSON.stringify({ key: A, ref: 'r-a', eservices: ['id-documents'] }), '', JSON.stringify({ key: 'nope', ref: 'r-x' })].join('\n');
    const result = await s.cli(['subjects', 'import', '-', '--format', 'ndjson', '--json'], input);
    expect(result.code).toBe(65);
    expect(JSON.parse(result.stdout)).toMatchObject({ read: 2, imported: 1, rejectedCount: 1, rejected: [{ line: 3, reason: 'wrong length (4 characters; expected 16, or 11 digits)', ref: 'r-x' }], committed: true });
    expectByKey(storedKeys(s.database), [{ key: A, ref: 'r-a' }]);
  });

  it('reports bad rows on stderr by line and ref, imports the good ones, exits 65; no key in any output', async () => {
    const s = setup();
    const wrong = withWrongCheck(B);
    const omo = omocode(C, 2);
    const lines = [
      'key,ref,eservices', // 1
      `${A},ok-a,`, // 2
      `${wrong.toLowerCase()},bad-b,`, // 3
      `${omo},"ref with`, // 4
      `two lines",residences`, // 5
      `${A},dup-a,`, // 6
      `${C},unknown,other-eservice`, // 7
      `${C}X,,`, // 8
      `${legalPersonCode(77).slice(0, 10)}9,vat,`, // 9 (wrong check digit unless it happens to be 9)
    ];
    const vat = `${legalPersonCode(77).slice(0, 10)}9`;
    const vatValid = vat === legalPersonCode(77);
    const file = write(s, 'subjects.csv', lines.join('\n') + '\n');
    const result = await s.cli(['--log-level', 'trace', 'subjects', 'import', file]);
    expect(result.code).toBe(65);
    const rejected = result.stderr.split('\n').filter((l) => l.startsWith('line '));
    expect(rejected).toEqual([
      'line 3: wrong check character (ref bad-b)',
      'line 6: duplicate key (first at line 2) (ref dup-a)',
      'line 7: unknown e-service "other-eservice" (not an id or name in the configuration) (ref unknown)',
      'line 8: wrong length (17 characters; expected 16, or 11 digits)',
      ...(vatValid ? [] : ['line 9: wrong check digit (ref vat)']),
    ]);
    expect(result.stdout).toContain(`new ${vatValid ? 3 : 2}, updated 0, unchanged 0, removed 0, rejected ${vatValid ? 4 : 5}`);
    expect(result.stdout).toContain('good rows imported, bad rows reported on stderr');
    expect(storedKeys(s.database).map((r) => r.ref)).toEqual(['ok-a', 'ref with\ntwo lines', ...(vatValid ? ['vat'] : [])]);

    const json = await s.cli(['--log-level', 'trace', 'subjects', 'import', file, '--json', '--dry-run']);
    const everything = [result.stdout, result.stderr, json.stdout, json.stderr].join('\n');
    // The log line of the run is there (so logs were captured), and no key in any form.
    expect(result.stderr).toContain('"msg":"subjects import finished"');
    for (const key of [A, wrong, omo, C, `${C}X`, vat]) {
      expect(everything).not.toContain(key);
      expect(everything).not.toContain(key.toLowerCase());
    }
  });

  it('--strict imports nothing when a row is bad', async () => {
    const s = setup();
    const file = write(s, 'subjects.csv', `key\n${A}\nbad\n${B}\n`);
    const result = await s.cli(['subjects', 'import', '--strict', file]);
    expect(result.code).toBe(65);
    expect(result.stderr).toContain('line 3: wrong length');
    expect(result.stdout).toContain('nothing was imported (--strict): 1 bad row');
    expectByKey(storedKeys(s.database), []);
  });

  it('--replace removes the subjects absent from the file', async () => {
    const s = setup();
    await s.cli(['subjects', 'import', write(s, 'first.csv', `key,ref\n${A},a\n${B},b\n`)]);
    const result = await s.cli(['subjects', 'import', '--replace', write(s, 'second.ndjson', `{"key":"${C}","ref":"c"}\n{"key":"${B}","ref":"b"}\n`)]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('read 2, new 1, updated 0, unchanged 1, removed 1, rejected 0');
    expectByKey(storedKeys(s.database), [
      { key: B, ref: 'b' },
      { key: C, ref: 'c' },
    ]);
  });

  it('validate = false accepts keys that are not fiscal codes', async () => {
    const s = setup({ validate: false });
    const result = await s.cli(['subjects', 'import', write(s, 'keys.csv', 'key\nemployee-17\n')]);
    expect(result.code).toBe(0);
    expectByKey(storedKeys(s.database), [{ key: 'EMPLOYEE-17', ref: null }]);
  });

  it('exits 66 for a missing file and 64 for an unknown format, writing nothing', async () => {
    const s = setup();
    const missing = await s.cli(['subjects', 'import', path.join(s.dir, 'missing.csv')]);
    expect(missing.code, missing.stderr).toBe(66);
    expect(missing.stderr).toContain('missing.csv: no such file');
    const unknown = await s.cli(['subjects', 'import', write(s, 'subjects.xlsx', 'x')]);
    expect(unknown.code).toBe(64);
    expect(fs.existsSync(s.database)).toBe(false);
  });

  it('exits 65 naming the line when the header has no key column', async () => {
    const s = setup();
    const result = await s.cli(['subjects', 'import', write(s, 'subjects.csv', 'ref\nx\n')]);
    expect(result.code).toBe(65);
    expect(result.stderr).toContain('subjects.csv:1: the header has no "key" column');
  });
});

describe('subjects remove (CLI)', () => {
  it('removes by argument or file, counting keys that were not stored', async () => {
    const s = setup();
    await s.cli(['subjects', 'import', write(s, 'subjects.csv', `key\n${A}\n${B}\n${C}\n${fiscalCode(104)}\n`)]);
    const byArgs = await s.cli(['subjects', 'remove', A.toLowerCase(), ` ${B} `, fiscalCode(999)]);
    expect(byArgs.code).toBe(0);
    expect(byArgs.stdout).toBe('subjects remove: removed 2, not found 1\n');
    expect(byArgs.stderr).toContain('argument 3: not found');
    expect(byArgs.stderr).not.toContain(fiscalCode(999));

    const byFile = await s.cli(['subjects', 'remove', '--file', write(s, 'gone.txt', `${C}\n\n${fiscalCode(998)}\n`)]);
    expect(byFile.code).toBe(0);
    expect(byFile.stdout).toBe('subjects remove: removed 1, not found 1\n');
    expect(byFile.stderr).toContain('line 3: not found');
    expectByKey(storedKeys(s.database), [{ key: fiscalCode(104), ref: null }]);

    const usage = await s.cli(['subjects', 'remove']);
    expect(usage.code).toBe(64);
  });
});

describe('single writer', () => {
  it('refuses to import while another process holds the database, with a clear message and exit 75, writing nothing', async () => {
    const s = setup();
    await s.cli(['subjects', 'import', write(s, 'first.csv', `key,ref\n${A},a\n`)]);
    const lock = WriterLock.acquire(s.database, 'run (test daemon)');
    let refused: CliResult;
    try {
      refused = await s.cli(['subjects', 'import', write(s, 'second.csv', `key,ref\n${B},b\n`)]);
    } finally {
      lock.release();
    }
    expect(refused.code).toBe(75);
    expect(refused.stderr).toContain(`database ${s.database} is in use by another signalhub-sync process (pid ${process.pid}, "run (test daemon)"`);
    expect(refused.stderr).toContain('stop it first');
    expectByKey(storedKeys(s.database), [{ key: A, ref: 'a' }]);
  });

  it('a second CLI writer is refused while the first runs, and succeeds after it ends', async () => {
    const s = setup();
    // The first import reads stdin, which stays open: it holds the lock until stdin ends.
    const first = spawnCli(['--config', s.config, 'subjects', 'import', '-'], { cwd: s.dir });
    let firstOut = '';
    first.stdout!.setEncoding('utf8').on('data', (d: string) => (firstOut += d));
    first.stdin!.write(`key,ref\n${A},a\n`);
    const infoFile = `${s.database}.lock.json`;
    for (let i = 0; i < 600 && !fs.existsSync(infoFile); i++) await new Promise((r) => setTimeout(r, 100));
    expect(fs.existsSync(infoFile)).toBe(true);

    const second = await s.cli(['subjects', 'remove', A]);
    expect(second.code).toBe(75);
    expect(second.stderr).toContain(`(pid ${first.pid}, "subjects import"`);

    first.stdin!.end(`${B},b\n`);
    const code = await new Promise<number | null>((resolve) => first.on('close', resolve));
    expect(code).toBe(0);
    expect(firstOut).toContain('new 2');
    const third = await s.cli(['subjects', 'remove', A]);
    expect(third.code).toBe(0);
    expectByKey(storedKeys(s.database), [{ key: B, ref: 'b' }]);
  });

  it('the scratch file of an import killed by SIGKILL (it holds keys) is removed by the next writer, not by a reader', async () => {
    const s = setup();
    const scratch = `${s.database}-import`;
    const killed = spawnCli(['--config', s.config, 'subjects', 'import', '-'], { cwd: s.dir });
    killed.stdout!.resume();
    killed.stderr!.resume();
    // More than a run (20 000 rows): staged on disk, not only buffered.
    const rows = Array.from({ length: 25_000 }, (_, i) => `${fiscalCode(i)},r${i}`).join('\n');
    killed.stdin!.write(`key,ref\n${rows}\n`);
    const staged = () => fs.existsSync(scratch) && fs.statSync(scratch).size > 100_000;
    for (let i = 0; i < 600 && !staged(); i++) await new Promise((r) => setTimeout(r, 100));
    expect(staged()).toBe(true);
    killed.kill('SIGKILL');
    await new Promise((resolve) => killed.on('close', resolve));
    expect(fs.readFileSync(scratch).includes(fiscalCode(0))).toBe(true);

    const count = await s.cli(['subjects', 'count']);
    expect(count.code).toBe(0);
    expect(fs.existsSync(scratch)).toBe(true);
    const removed = await s.cli(['subjects', 'remove', A]);
    expect(removed.code).toBe(0);
    expect(fs.existsSync(scratch)).toBe(false);
    expect(fs.existsSync(`${scratch}-journal`)).toBe(false);
  });
});

describe('bounded memory', () => {
  it('imports a 1,000,000-row file with the real CLI below 250 MB of peak RSS', { timeout: 600_000 }, async () => {
    const s = setup();
    const file = path.join(s.dir, 'million.csv');
    const fd = fs.openSync(file, 'w');
    fs.writeSync(fd, 'key,ref\n');
    for (let start = 0; start < 1_000_000; start += 20_000) {
      let chunk = '';
      for (let n = start; n < start + 20_000; n++) chunk += `${fiscalCode(n)},ref-${n}\n`;
      fs.writeSync(fd, chunk);
    }
    fs.closeSync(fd);

    const { code, stdout, peakKb } = await runMeasured(['--config', s.config, '--log-level', 'warn', 'subjects', 'import', file], s.dir);
    expect(code).toBe(0);
    expect(stdout).toContain('read 1000000, new 1000000');
    expect(peakKb).toBeGreaterThan(0);
    expect(peakKb).toBeLessThan(250 * 1024);
    const count = await s.cli(['subjects', 'count', '--json']);
    expect(JSON.parse(count.stdout).total).toBe(1_000_000);
  });
});

/** Runs the CLI and measures its peak RSS: GNU time when installed, else VmHWM polled from /proc. */
async function runMeasured(args: string[], cwd: string): Promise<{ code: number | null; stdout: string; peakKb: number }> {
  const gnuTime = fs.existsSync('/usr/bin/time');
  const child = gnuTime
    ? spawn('/usr/bin/time', ['-f', 'PEAK_RSS_KB=%M', process.execPath, CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, [CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let polledKb = 0;
  const poll = setInterval(() => {
    try {
      const match = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (match) polledKb = Math.max(polledKb, Number(match[1]));
    } catch {
      // The process has just exited.
    }
  }, 100);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearInterval(poll);
  const measured = gnuTime ? Number(/PEAK_RSS_KB=(\d+)/.exec(stderr)?.[1] ?? 0) : polledKb;
  return { code, stdout, peakKb: measured };
}
