import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';

/**
 * README "Who runs what": only the commands that call PDND or deliver (run, sync, config check)
 * open the private keys; the others work on the host where the keys are out of reach; root
 * running the CLI acts as the owner of the database folder, so the daemon can use what it made.
 */
const ES = '11111111-1111-4111-8111-111111111111';
let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

describe('commands that do not call PDND never open the keys', () => {
  it('status, events list, subjects import/count, cursor show, sinks list and resync list work with the key files gone; config check and sync refuse (78)', async () => {
    world = await createWorld({ eservices: [{ id: ES, name: 'residenze' }] });
    const cli = (...args: string[]) => runCli(['--config', world!.configFile, ...args]);
    const synced = await cli('sync', '--once');
    expect(synced.code, synced.stderr).toBe(0);
    fs.rmSync(path.join(world.dir, 'm2m.pem'));
    fs.rmSync(path.join(world.dir, 'eservice.pem'));

    const subjects = path.join(world.dir, 'subjects.csv');
    fs.writeFileSync(subjects, `key,ref\n${fiscalCode(3)},r3\n`);
    for (const args of [['status'], ['events', 'list'], ['subjects', 'import', subjects], ['subjects', 'count'], ['cursor', 'show'], ['sinks', 'list'], ['resync', 'list']]) {
      const r = await cli(...args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(r.stderr).not.toContain('m2m.pem');
    }
    for (const args of [['config', 'check'], ['sync', '--once']]) {
      const r = await cli(...args);
      expect(r.code, args.join(' ')).toBe(78);
      expect(r.stderr).toMatch(/file not found: .*m2m\.pem/);
    }
  });

  it('a secret pasted where its path belongs is still refused by every command', async () => {
    world = await createWorld({ eservices: [{ id: ES, name: 'residenze' }] });
    const text = fs.readFileSync(world.configFile, 'utf8').replace('private_key_file = "m2m.pem"', 'private_key_file = "-----BEGIN PRIVATE KEY-----MIIE"');
    fs.writeFileSync(world.configFile, text);
    const r = await runCli(['--config', world.configFile, 'status']);
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('pdnd.m2m.private_key_file');
    expect(r.stderr).not.toContain('MIIE');
  });
});

describe('subjects count', () => {
  it('exits 66 on a missing database, like the other read commands', async () => {
    world = await createWorld({ eservices: [{ id: ES, name: 'residenze' }] });
    const r = await runCli(['--config', world.configFile, 'subjects', 'count']);
    expect(r.code).toBe(66);
    expect(r.stderr).toMatch(/database .*state\.db does not exist yet/);
    expect(fs.existsSync(world.config.database)).toBe(false);
  });
});

describe.skipIf(process.getuid?.() !== 0)('root runs the CLI (these tests need root: CI runs as root)', () => {
  it('acts as the owner of the database folder: every file it creates there (database, WAL, lock) belongs to the service user; the root-only input file is still read', async () => {
    world = await createWorld({ eservices: [{ id: ES, name: 'residenze' }] });
    const serviceUid = 65534; // nobody: any non-root owner will do
    fs.chmodSync(world.dir, 0o711); // like /var/lib: others may traverse, not list
    const stateDir = path.join(world.dir, 'state');
    fs.mkdirSync(stateDir, { mode: 0o700 });
    fs.chownSync(stateDir, serviceUid, serviceUid);
    const text = fs.readFileSync(world.configFile, 'utf8').replace('database = "state.db"', `database = "${stateDir}/state.db"`);
    fs.writeFileSync(world.configFile, text);
    // The administrator's file is root's alone, in a folder only root may enter (like /root):
    // opened, and its size taken, before acting as the service user.
    const adminDir = path.join(world.dir, 'admin');
    fs.mkdirSync(adminDir, { mode: 0o700 });
    const subjects = path.join(adminDir, 'subjects.csv');
    fs.writeFileSync(subjects, `key,ref\n${fiscalCode(1)},r1\n${fiscalCode(2)},r2\n`, { mode: 0o600 });

    const imported = await runCli(['--config', world.configFile, 'subjects', 'import', subjects]);
    expect(imported.code, imported.stderr).toBe(0);
    const made = fs.readdirSync(stateDir);
    expect(made).toContain('state.db');
    for (const name of made) expect(fs.statSync(path.join(stateDir, name)).uid, name).toBe(serviceUid);

    const count = await runCli(['--config', world.configFile, 'subjects', 'count', '--json']);
    expect(JSON.parse(count.stdout).total).toBe(2);
  });
});
