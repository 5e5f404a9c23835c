import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WriterLock } from '../src/store/lock.js';
import { runCli } from './helpers/cli.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';

const ES = '11111111-1111-4111-8111-111111111111';
let world: World;
let subjectsFile: string;

beforeAll(async () => {
  world = await createWorld({ dir: fs.mkdtempSync(path.join(os.tmpdir(), 'shs-backup-')), eservices: [{ id: ES, name: 'residenze' }] });
  subjectsFile = path.join(world.dir, 'subjects.csv');
  fs.writeFileSync(subjectsFile, `key,ref\n${Array.from({ length: 500 }, (_, i) => `${fiscalCode(i + 1)},r${i + 1}`).join('\n')}\n`);
  const imported = await runCli(['--config', world.configFile, 'subjects', 'import', subjectsFile]);
  expect(imported.code, imported.stderr).toBe(0);
  const synced = await runCli(['--config', world.configFile, 'sync', '--once']);
  expect(synced.code, synced.stderr).toBe(0);
});
afterAll(async () => {
  await world.close();
  fs.rmSync(world.dir, { recursive: true, force: true });
});

const tables = (file: string): Record<string, number> => {
  const db = new Database(file, { readonly: true });
  try {
    const names = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[]).map((r) => r.name);
    return Object.fromEntries(names.map((n) => [n, (db.prepare(`SELECT COUNT(*) AS n FROM "${n}"`).get() as { n: number }).n]));
  } finally {
    db.close();
  }
};

describe('db backup', () => {
  it('copies the database while another process holds it for writing: mode 0600, integrity-checked, same content, usable by the CLI', async () => {
    const lock = WriterLock.acquire(world.config.database, 'test: stands in for the daemon');
    const target = path.join(world.dir, 'backups', 'copy.db');
    fs.mkdirSync(path.dirname(target));
    let result;
    try {
      result = await runCli(['--config', world.configFile, 'db', 'backup', target, '--json'], { env: {} });
    } finally {
      lock.release();
    }
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ source: world.config.database, file: target, integrity: 'ok' });
    expect(fs.statSync(target).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(path.dirname(target))).toEqual(['copy.db']);
    expect(tables(target)).toEqual(tables(world.config.database));
    expect(tables(target).subjects).toBe(500);

    // Restored as the README says: the copy is a database the CLI reads.
    const restoredConfig = path.join(world.dir, 'restored.toml');
    fs.writeFileSync(restoredConfig, fs.readFileSync(world.configFile, 'utf8').replace('database = "state.db"', `database = "${target}"`));
    const count = await runCli(['--config', restoredConfig, 'subjects', 'count', '--json']);
    expect(JSON.parse(count.stdout).total).toBe(500);
  });

  it('never overwrites (64), and a missing database is 66', async () => {
    const existing = path.join(world.dir, 'existing.db');
    fs.writeFileSync(existing, 'precious');
    const refused = await runCli(['--config', world.configFile, 'db', 'backup', existing]);
    expect(refused.code).toBe(64);
    expect(refused.stderr).toContain('exists');
    expect(fs.readFileSync(existing, 'utf8')).toBe('precious');

    const noDb = path.join(world.dir, 'nodb.toml');
    fs.writeFileSync(noDb, fs.readFileSync(world.configFile, 'utf8').replace('database = "state.db"', 'database = "missing.db"'));
    const missing = await runCli(['--config', noDb, 'db', 'backup', path.join(world.dir, 'x.db')]);
    expect(missing.code).toBe(66);
    expect(fs.existsSync(path.join(world.dir, 'x.db'))).toBe(false);
  });
});
