import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, exitCodeFor, EXIT } from '../src/errors.js';
import { configWarnings } from '../src/config/summary.js';
import { FileSink } from '../src/sinks/file.js';
import { openDatabase } from '../src/store/db.js';
import { WriterLock } from '../src/store/lock.js';
import type { OutboxRow } from '../src/store/outbox.js';
import { CLI, ROOT, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { writeKeyFile } from './helpers/keys.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { configDir, parseIn, problemLines, problemsOf, productionToml, writeConfig } from './config-helpers.js';
import { captureLogger } from './pdnd-fixtures.js';
import { eventually, fileEventIds, httpGet, startRun } from './run-helpers.js';

/**
 * Files and network of issue 8: secret files readable by others refuse the config, every file
 * the daemon creates is 0600 whatever the umask, and the HTTP endpoint stays on loopback
 * unless configured otherwise. Real files, real child processes, a real simulator.
 */

const ES = '71111111-1111-4111-8111-111111111111';
// Child processes must see the config's $CREDENTIALS_DIRECTORY rules, not the runner's.
const cleanEnv = { SIGNALHUB_SYNC_CONFIG: '', CREDENTIALS_DIRECTORY: '', STATE_DIRECTORY: '' };
const modeOf = (file: string): number => fs.statSync(file).mode & 0o777;
const octal = (mode: number): string => mode.toString(8).padStart(4, '0');
const webhook = (extra: string) => `[[sinks]]\nname = "crm"\ntype = "webhook"\nurl = "https://crm.example.it/hook"\n${extra}\n`;

let world: World | undefined;
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await world?.close();
  world = undefined;
});

/** The built CLI under `umask 000`: any file it creates without an explicit mode comes out world-readable. */
function spawnWithOpenUmask(args: string[], cwd: string): { child: ChildProcess; stderr: () => string; exited: Promise<number | null> } {
  const child = spawn('sh', ['-c', 'umask 000; exec "$0" "$@"', process.execPath, CLI, ...args], { cwd, env: { ...process.env, ...cleanEnv }, stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdout!.resume();
  child.stdin!.end();
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, stderr: () => stderr, exited };
}

describe('secret files: a private key or HMAC secret readable by group or others refuses the config', () => {
  it('a private key with mode 0644, 0640 or 0604 is a problem at its key path naming the file, its mode and the fix (chmod 600, chown, or the override); exit 78', () => {
    for (const mode of [0o644, 0o640, 0o604]) {
      const dir = configDir(tempDir());
      const key = path.join(dir, 'm2m.pem');
      fs.chmodSync(key, mode);
      let error: unknown;
      try {
        parseIn(dir, productionToml());
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(ConfigError);
      expect(exitCodeFor(error)).toBe(EXIT.CONFIG);
      expect(problemLines((error as ConfigError).problems)).toEqual([
        `pdnd.m2m.private_key_file: ${key} is readable by group or others (mode ${octal(mode)}): run "chmod 600 ${key}" ` +
          '(and "chown" it to the user the daemon runs as), or, if access by a group is intended, set [security] allow_readable_secrets = true',
      ]);
    }
  });

  it('every key of the file is checked: pdnd.eservice_client, an e-service\'s own key, and a webhook secret_file', () => {
    const dir = configDir(tempDir());
    fs.chmodSync(path.join(dir, 'eservice.pem'), 0o640);
    const own = writeKeyFile(dir, 'own.pem');
    fs.chmodSync(own, 0o604);
    const secret = path.join(dir, 'hmac');
    fs.writeFileSync(secret, 'hmac-secret-value\n', { mode: 0o600 });
    fs.chmodSync(secret, 0o644);
    const text = productionToml(webhook('secret_file = "hmac"')).replace(
      'name = "documents"',
      'name = "documents"\nclient_id = "22222222-2222-4222-8222-222222222222"\nkey_id = "kid-own"\nprivate_key_file = "own.pem"',
    );
    const lines = problemLines(problemsOf(dir, text));
    expect(lines.map((l) => l.slice(0, l.indexOf(':')))).toEqual(['pdnd.eservice_client.private_key_file', 'eservices[1].private_key_file', 'sinks[0].secret_file']);
    expect(lines[0]).toContain('(mode 0640)');
    expect(lines[1]).toContain('(mode 0604)');
    expect(lines[2]).toContain(`${secret} is readable by group or others (mode 0644): run "chmod 600 ${secret}"`);
    expect(lines.join('\n')).not.toContain('hmac-secret-value');
  });

  it('key and secret files with mode 0600 or 0400 are accepted without a warning; a CA bundle (public) may be world-readable', () => {
    for (const mode of [0o600, 0o400]) {
      const dir = configDir(tempDir());
      fs.writeFileSync(path.join(dir, 'hmac'), 'hmac-secret-value\n', { mode });
      fs.writeFileSync(path.join(dir, 'ca.pem'), fs.readFileSync(path.join(ROOT, 'test/fixtures/tls/ca.pem')));
      fs.chmodSync(path.join(dir, 'ca.pem'), 0o644);
      for (const key of ['m2m.pem', 'eservice.pem']) fs.chmodSync(path.join(dir, key), mode);
      const config = parseIn(dir, productionToml(webhook('secret_file = "hmac"\nca_file = "ca.pem"')));
      expect(config.security).toEqual({ allowReadableSecrets: false });
      expect(configWarnings(config).filter((w) => w.includes('readable'))).toEqual([]);
    }
  });

  it('a systemd credential shown as 0440 (root-owned 0400 plus an ACL for the service user) is accepted in $CREDENTIALS_DIRECTORY; 0444 there, or 0440 elsewhere, is refused', () => {
    const dir = configDir(tempDir());
    const credentials = tempDir('shs-credentials-');
    const m2m = writeKeyFile(credentials, 'm2m.pem');
    fs.chmodSync(m2m, 0o440);
    fs.chmodSync(writeKeyFile(credentials, 'eservice.pem'), 0o400);
    const text = productionToml();
    expect(parseIn(dir, text, { CREDENTIALS_DIRECTORY: credentials }).pdnd.m2m.privateKeyFile).toBe(m2m);

    fs.chmodSync(m2m, 0o444);
    expect(problemLines(problemsOf(dir, text, { CREDENTIALS_DIRECTORY: credentials }))).toEqual([
      expect.stringMatching(/^pdnd\.m2m\.private_key_file: .* is readable by group or others \(mode 0444\)/),
    ]);

    fs.chmodSync(m2m, 0o400);
    fs.chmodSync(path.join(dir, 'm2m.pem'), 0o440);
    const outside = productionToml().replace('private_key_file = "m2m.pem"', 'private_key_file = "./m2m.pem"');
    expect(problemLines(problemsOf(dir, outside, { CREDENTIALS_DIRECTORY: credentials }))).toEqual([
      expect.stringMatching(/^pdnd\.m2m\.private_key_file: .* is readable by group or others \(mode 0440\)/),
    ]);
  });

  it('[security] allow_readable_secrets = true accepts such files, and configWarnings names each one with its mode', () => {
    const dir = configDir(tempDir());
    fs.chmodSync(path.join(dir, 'm2m.pem'), 0o640);
    fs.writeFileSync(path.join(dir, 'hmac'), 'hmac-secret-value\n', { mode: 0o600 });
    fs.chmodSync(path.join(dir, 'hmac'), 0o644);
    const config = parseIn(dir, productionToml(`${webhook('secret_file = "hmac"')}\n[security]\nallow_readable_secrets = true\n`));
    expect(config.security).toEqual({ allowReadableSecrets: true });
    expect(configWarnings(config).filter((w) => w.includes('readable by group or others'))).toEqual([
      `${path.join(dir, 'm2m.pem')}: readable by group or others (mode 0640), accepted because [security] allow_readable_secrets = true; use chmod 600 unless a group must read it`,
      `${path.join(dir, 'hmac')}: readable by group or others (mode 0644), accepted because [security] allow_readable_secrets = true; use chmod 600 unless a group must read it`,
    ]);
  });

  it('only a boolean true is an override: allow_readable_secrets = "true" is a type problem and the key is still refused', () => {
    const dir = configDir(tempDir());
    fs.chmodSync(path.join(dir, 'm2m.pem'), 0o644);
    const lines = problemLines(problemsOf(dir, productionToml('[security]\nallow_readable_secrets = "true"\n')));
    expect(lines).toContainEqual(expect.stringMatching(/^pdnd\.m2m\.private_key_file: .* \(mode 0644\)/));
    expect(lines).toContain('security.allow_readable_secrets: expected a boolean, got a string');
  });

  it('config check reports a group-readable key as a problem on stderr and exits 78', async () => {
    const dir = configDir(tempDir());
    fs.chmodSync(path.join(dir, 'eservice.pem'), 0o640);
    const file = writeConfig(dir, productionToml());
    const result = await runCli(['--config', file, 'config', 'check'], { env: cleanEnv });
    expect(result.code).toBe(78);
    expect(result.stderr).toContain(`pdnd.eservice_client.private_key_file: ${path.join(dir, 'eservice.pem')} is readable by group or others (mode 0640)`);
    expect(result.stderr).toContain('allow_readable_secrets');
    expect(result.stdout).toBe('');
  });

  it('run, sync --once and config check refuse a group-readable key with exit 78 before creating the database, its folder or its lock; status never opens the key', async () => {
    const dir = configDir(tempDir());
    fs.chmodSync(path.join(dir, 'm2m.pem'), 0o640);
    const file = writeConfig(dir, productionToml());
    for (const command of [['run'], ['sync', '--once'], ['config', 'check']]) {
      const result = await runCli(['--config', file, ...command], { env: cleanEnv });
      expect(result.code, `${command.join(' ')}: ${result.stderr}`).toBe(78);
      expect(result.stderr).toContain(`pdnd.m2m.private_key_file: ${path.join(dir, 'm2m.pem')} is readable by group or others (mode 0640)`);
    }
    // README "Who runs what": commands that call neither PDND nor a webhook do not judge keys.
    const status = await runCli(['--config', file, 'status'], { env: cleanEnv });
    expect(status.code, status.stderr).toBe(66);
    expect(status.stderr).not.toContain('m2m.pem');
    expect(fs.existsSync(path.join(dir, 'state'))).toBe(false);
  });
});

describe('files the daemon creates are 0600 (folders 0700) whatever the umask', () => {
  it('under umask 000, subjects import and run create the database folder 0700 and the database, -wal, -shm, lock files and the NDJSON sink output 0600', async () => {
    const dir = tempDir('shs-modes-');
    world = await createWorld({ dir, eservices: [{ id: ES, name: 'residenze' }], toml: '[hub]\npoll_interval_seconds = 1\n\n[[sinks]]\nname = "archive"\ntype = "file"\npath = "events.ndjson"\n' });
    fs.writeFileSync(world.configFile, fs.readFileSync(world.configFile, 'utf8').replace('database = "state.db"', 'database = "state/state.db"'));
    const subject = fiscalCode(71);
    const csv = path.join(dir, 'subjects.csv');
    fs.writeFileSync(csv, `key,ref\n${subject},pratica-71\n`, { mode: 0o600 });
    const importing = spawnWithOpenUmask(['--config', world.configFile, 'subjects', 'import', csv], dir);
    expect(await importing.exited, importing.stderr()).toBe(0);
    world.sim.depositForSubject(ES, subject, 'UPDATE', 'domicile');

    const daemon = spawnWithOpenUmask(['--config', world.configFile, 'run'], dir);
    const state = path.join(dir, 'state');
    const events = path.join(dir, 'events.ndjson');
    await eventually(() => fs.existsSync(events) && fileEventIds(events).length === 1, `the event in the file sink; stderr: ${daemon.stderr().slice(-2000)}`);
    // While the daemon runs: -wal and -shm exist only while a connection is open.
    const files = fs.readdirSync(state).sort();
    expect(files).toEqual(expect.arrayContaining(['state.db', 'state.db-shm', 'state.db-wal', 'state.db.lock', 'state.db.lock.json']));
    const modes = Object.fromEntries([...files.map((f) => [f, octal(modeOf(path.join(state, f)))]), ['events.ndjson', octal(modeOf(events))], ['state/', octal(modeOf(state))]]);
    expect(modes).toEqual(Object.fromEntries([...files.map((f) => [f, '0600']), ['events.ndjson', '0600'], ['state/', '0700']]));

    daemon.child.kill('SIGTERM');
    expect(await daemon.exited, daemon.stderr()).toBe(0);
  });

  it('under umask 000, a subjects import queued while the database is locked spools its data and job files 0600 in a 0700 inbox folder', async () => {
    const dir = configDir(tempDir());
    const file = writeConfig(dir, productionToml());
    const database = path.join(dir, 'state/shs.db');
    const lock = WriterLock.acquire(database, 'security-files test');
    try {
      const csv = path.join(dir, 'subjects.csv');
      fs.writeFileSync(csv, `key,ref\n${fiscalCode(72)},pratica-72\n`, { mode: 0o600 });
      const queued = spawnWithOpenUmask(['--config', file, 'subjects', 'import', '--queue', '--wait-timeout', '1', csv], dir);
      expect(await queued.exited, queued.stderr()).toBe(EXIT.TEMPFAIL); // not applied: no daemon
      const inbox = `${database}.inbox`;
      const spooled = fs.readdirSync(inbox);
      expect(spooled.map((f) => f.replace(/^.*?(\.data|\.job\.json)$/, '$1')).sort()).toEqual(['.data', '.job.json']);
      expect(octal(modeOf(inbox))).toBe('0700');
      for (const f of spooled) expect(`${f} ${octal(modeOf(path.join(inbox, f)))}`).toBe(`${f} 0600`);
    } finally {
      lock.release();
    }
  });

  it('a database left 0644 with its -wal and -shm (an older version, a wide umask) is tightened to 0600 when opened for writing', () => {
    const dir = tempDir();
    const file = path.join(dir, 'state.db');
    const other = new Database(file);
    other.pragma('journal_mode = WAL');
    other.exec('CREATE TABLE t (x); INSERT INTO t VALUES (1)');
    for (const f of [file, `${file}-wal`, `${file}-shm`]) fs.chmodSync(f, 0o644);
    const db = openDatabase(file);
    try {
      expect([file, `${file}-wal`, `${file}-shm`].map((f) => octal(modeOf(f)))).toEqual(['0600', '0600', '0600']);
      expect(db.prepare('SELECT x FROM t').pluck().get()).toBe(1);
    } finally {
      db.close();
      other.close();
    }
  });

  it('the file sink appends to an existing 0644 output without changing its mode (a reader may need it) and warns once per open', async () => {
    const dir = tempDir();
    const out = path.join(dir, 'events.ndjson');
    fs.writeFileSync(out, '');
    fs.chmodSync(out, 0o644);
    const logs = captureLogger();
    const sink = new FileSink({ config: { type: 'file', name: 'archive', eservices: [], path: out }, logger: logs.logger });
    const row = (seq: number): OutboxRow => ({ seq, eventId: `${ES}:${seq}`, eserviceId: ES, signalId: seq, kind: 'signal', payload: `{"id":"${ES}:${seq}"}`, createdAt: 0 });
    await sink.deliver([row(1)], new AbortController().signal);
    await sink.deliver([row(2)], new AbortController().signal);
    await sink.close();
    expect(fs.readFileSync(out, 'utf8')).toBe(`{"id":"${ES}:1"}\n{"id":"${ES}:2"}\n`);
    expect(octal(modeOf(out))).toBe('0644');
    const warnings = logs.text().split('\n').filter((l) => l.includes('readable by group or others'));
    expect(warnings).toHaveLength(1);
    expect(JSON.parse(warnings[0]!)).toMatchObject({ level: 'warn', path: out, mode: '0644' });
  });
});

/** Addresses of this machine other than loopback: where a loopback-only server must not answer. */
function externalAddresses(): string[] {
  return Object.values(os.networkInterfaces())
    .flat()
    .filter((i): i is os.NetworkInterfaceInfo => i !== undefined && !i.internal && !i.address.startsWith('fe80:'))
    .map((i) => i.address);
}

/** 'open' if a TCP connection to host:port is accepted, else the error code (ECONNREFUSED, ...). */
function connectOutcome(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, timeout: 5_000 });
    socket.once('connect', () => {
      socket.destroy();
      resolve('open');
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve('ETIMEDOUT');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

describe('network: the HTTP endpoint is on loopback unless configured otherwise', () => {
  it('run with [http] enabled = true and the default listen serves on 127.0.0.1:9464 only: answered on loopback, refused on every other address of the machine', async () => {
    world = await createWorld({ eservices: [{ id: ES, name: 'residenze' }], toml: '[http]\nenabled = true\n' });
    expect(world.config.http).toEqual({ enabled: true, host: '127.0.0.1', port: 9464 });
    const daemon = startRun(world);
    const listening = await daemon.waitForLog((l) => l.msg === 'health and metrics endpoint listening', 'the HTTP endpoint');
    expect(listening.url).toBe('http://127.0.0.1:9464');
    expect(await httpGet('http://127.0.0.1:9464/healthz')).toEqual({ status: 200, body: 'ok\n' });
    for (const address of externalAddresses()) expect(`${address} ${await connectOutcome(address, 9464)}`).toBe(`${address} ECONNREFUSED`);
    expect(daemon.logs().filter((l) => String(l.warning ?? '').includes('non-loopback'))).toEqual([]);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('a non-loopback listen is used only when configured, and the daemon warns about it', async () => {
    world = await createWorld({ eservices: [{ id: ES, name: 'residenze' }], toml: '[http]\nenabled = true\nlisten = "0.0.0.0:0"\n' });
    const daemon = startRun(world);
    const listening = await daemon.waitForLog((l) => l.msg === 'health and metrics endpoint listening', 'the HTTP endpoint');
    const port = Number(/:(\d+)$/.exec(String(listening.url))![1]);
    expect(listening.url).toBe(`http://0.0.0.0:${port}`);
    const warning = daemon.logs().find((l) => l.msg === 'configuration warning' && String(l.warning).includes('non-loopback address 0.0.0.0'));
    expect(warning?.level).toBe('warn');
    for (const address of externalAddresses().filter((a) => net.isIPv4(a))) expect(`${address} ${await connectOutcome(address, port)}`).toBe(`${address} open`);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
