import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExecSinkConfig } from '../src/config/types.js';
import { DeliveryService } from '../src/sinks/delivery.js';
import { openDatabase } from '../src/store/db.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import { ES_A, appendSignals, openTestDb, waitUntil } from './delivery-fixtures.js';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';

const ES = '11111111-1111-4111-8111-111111111111';
const KEY = fiscalCode(3);

/** A process that exists and is not a zombie (a container's PID 1 may never reap orphans). */
function running(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

describe('exec sink: the child gets a clean environment (sync --once as systemd would start it)', () => {
  let world: World;
  let envFile: string;

  beforeAll(async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shs-exec-env-'));
    envFile = path.join(dir, 'child-env.txt');
    world = await createWorld({
      dir,
      eservices: [{ id: ES, name: 'residenze' }],
      toml: `[[sinks]]
name = "program"
type = "exec"
command = ["/bin/sh", "-c", "env > '${envFile}'; cat > /dev/null"]
env = { SINK_TOKEN = "from-config" }
pass_env = ["LANG"]
`,
    });
    const db = openDatabase(world.config.database);
    try {
      new SubjectWriter(db, { index: subjectIndexOptions(world.config) }).upsertBatch([{ key: KEY, ref: 'r1', eservices: 'all' }]);
    } finally {
      db.close();
    }
    world.sim.depositForSubject(ES, KEY, 'UPDATE', 'residence');
  });

  afterAll(async () => {
    await world?.close();
    if (world) fs.rmSync(world.dir, { recursive: true, force: true });
  });

  it('holds PATH and what the config names, never NOTIFY_SOCKET, CREDENTIALS_DIRECTORY or WATCHDOG_*', async () => {
    // The daemon resolves its key files in CREDENTIALS_DIRECTORY (LoadCredential=): a real one.
    const credentials = path.join(world.dir, 'credentials');
    fs.mkdirSync(credentials, { mode: 0o700 });
    for (const key of ['m2m.pem', 'eservice.pem']) fs.copyFileSync(path.join(world.dir, key), path.join(credentials, key));
    const r = await runCli(['--config', world.configFile, 'sync', '--once'], {
      env: {
        NOTIFY_SOCKET: '/run/systemd/notify',
        CREDENTIALS_DIRECTORY: credentials,
        WATCHDOG_USEC: '30000000',
        WATCHDOG_PID: String(process.pid),
        DAEMON_ONLY_SECRET: 'not-for-children',
        LANG: 'it_IT.UTF-8',
      },
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const vars = new Map(
      fs
        .readFileSync(envFile, 'utf8')
        .split('\n')
        .filter((l) => l.includes('='))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const),
    );
    expect(vars.get('SINK_TOKEN')).toBe('from-config');
    expect(vars.get('LANG')).toBe('it_IT.UTF-8');
    expect(vars.get('PATH')).toBe(process.env.PATH);
    for (const name of ['NOTIFY_SOCKET', 'CREDENTIALS_DIRECTORY', 'WATCHDOG_USEC', 'WATCHDOG_PID', 'DAEMON_ONLY_SECRET']) expect(vars.has(name)).toBe(false);
    // What the shell adds itself (PWD, SHLVL, _) is all that is left.
    expect([...vars.keys()].filter((k) => !['SINK_TOKEN', 'LANG', 'PATH', 'PWD', 'SHLVL', '_', 'OLDPWD'].includes(k))).toEqual([]);
  });

  it('the config refuses to pass those variables on', async () => {
    const bad = path.join(world.dir, 'bad.toml');
    fs.writeFileSync(bad, fs.readFileSync(world.configFile, 'utf8').replace('pass_env = ["LANG"]', 'pass_env = ["LANG", "NOTIFY_SOCKET"]').replace('SINK_TOKEN = "from-config"', 'SINK_TOKEN = "x", WATCHDOG_USEC = "1"'));
    const r = await runCli(['--config', bad, 'config', 'check']);
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('sinks[0].pass_env[1]');
    expect(r.stderr).toContain('sinks[0].env.WATCHDOG_USEC');
    expect(r.stderr).toContain('NOTIFY_SOCKET, CREDENTIALS_DIRECTORY and WATCHDOG_* belong to the daemon');
  });
});

describe('exec sink: a timeout kills the whole process group', () => {
  it("a timed-out `sh -c 'sleep 1000 & wait'` leaves no sleep behind", async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1]);
    const pidFile = path.join(dir, 'grandchild.pid');
    const config: ExecSinkConfig = { type: 'exec', name: 'cmd', eservices: [], command: ['/bin/sh', '-c', `sleep 1000 & echo $! > '${pidFile}'; wait`], timeoutMs: 500 };
    const service = new DeliveryService({ db, batchSize: 10, sinks: [config], drainAttempts: 1, pollIntervalMs: 50, retryBaseMs: 10, retryMaxMs: 50 });
    const result = await service.drain();
    await service.stop(0);
    expect(result.sinks[0]!.error).toContain('did not finish within 500 ms');
    expect(result.sinks[0]!.pending).toBe(1);
    const grandchild = Number(fs.readFileSync(pidFile, 'utf8').trim());
    expect(grandchild).toBeGreaterThan(0);
    try {
      await waitUntil(() => !running(grandchild), 'the grandchild to end', 5_000);
    } finally {
      if (running(grandchild)) process.kill(grandchild, 'SIGKILL');
    }
    db.close();
  });
});
