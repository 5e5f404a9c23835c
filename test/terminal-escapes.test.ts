import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/store/db.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import { escapeForTerminal } from '../src/terminal.js';
import { runCli } from './helpers/cli.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';

const ES = '11111111-1111-4111-8111-111111111111';
const KEY = fiscalCode(7);
/** A producer-chosen objectType that, printed raw, retitles the terminal (OSC 0) and clears the screen (CSI 2J). */
const HOSTILE = '\u001b]0;pwned\u0007\u001b[2Jdomicile\u202e';

/** Any ESC, BEL, C1 control or bidi override in text meant for a terminal. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

let world: World;

beforeAll(async () => {
  // A directory of our own: tempDir() would be removed after the first test.
  world = await createWorld({
    dir: fs.mkdtempSync(path.join(os.tmpdir(), 'shs-terminal-')),
    eservices: [{ id: ES, name: 'residenze' }],
    toml: '[[sinks]]\nname = "terminal"\ntype = "stdout"\nformat = "pretty"\n',
  });
  const db = openDatabase(world.config.database);
  try {
    new SubjectWriter(db, { index: subjectIndexOptions(world.config) }).upsertBatch([{ key: KEY, ref: 'mario', eservices: 'all' }]);
  } finally {
    db.close();
  }
  world.sim.depositForSubject(ES, KEY, 'UPDATE', HOSTILE);
});

afterAll(async () => {
  await world?.close();
  if (world) fs.rmSync(world.dir, { recursive: true, force: true });
});

describe('control characters in producer-chosen fields never reach a terminal raw', () => {
  it('the pretty stdout sink escapes them (sync --once), NDJSON keeps the value exact', async () => {
    const r = await runCli(['--config', world.configFile, 'sync', '--once']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const line = r.stdout.split('\n').find((l) => l.includes('UPDATE'))!;
    expect(line).toContain('UPDATE \\u{1b}]0;pwned\\u{7}\\u{1b}[2Jdomicile\\u{202e}  ref=mario');
    expect(r.stdout).not.toMatch(CONTROL);

    const json = await runCli(['--config', world.configFile, 'events', 'list', '--json']);
    expect(JSON.parse(json.stdout.trim()).objectType).toBe(HOSTILE);
  });

  it('events list (table) escapes them', async () => {
    const r = await runCli(['--config', world.configFile, 'events', 'list']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('\\u{1b}]0;pwned\\u{7}\\u{1b}[2Jdomicile\\u{202e}');
    expect(r.stdout).not.toMatch(CONTROL);
  });

  it('escapeForTerminal leaves printable text, accents and emoji alone', () => {
    expect(escapeForTerminal('residenza àèìòù 🏠 tab\there')).toBe('residenza àèìòù 🏠 tab\\u{9}here');
  });
});
