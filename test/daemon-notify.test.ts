import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/log.js';
import { SystemdNotifier, Watchdog, watchdogIntervalMs } from '../src/daemon/notify.js';
import { tempDir } from './helpers/fs.js';
import { ROOT } from './helpers/cli.js';
import { eventually, startNotifyListener } from './run-helpers.js';

const NOTIFY_MODULE = pathToFileURL(path.join(ROOT, 'dist/daemon/notify.js')).href;
const LOG_MODULE = pathToFileURL(path.join(ROOT, 'dist/log.js')).href;

const children: ChildProcess[] = [];
afterEach(() => {
  while (children.length > 0) children.pop()!.kill('SIGKILL');
});

/** Runs an ES module body in a fresh node process, with the built notify module imported as `n`. */
function runNode(body: string, env: NodeJS.ProcessEnv): ChildProcess {
  const source = `import * as n from ${JSON.stringify(NOTIFY_MODULE)};\n${body}`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', source], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  return child;
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; stderr: string }> {
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stderr })));
}

describe('systemd notifications through systemd-notify', () => {
  it('sends READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 to NOTIFY_SOCKET', async () => {
    const listener = await startNotifyListener();
    const child = runNode(
      `
      n.notifyReady();
      await n.processNotifier().flush();
      n.notifyStatus('2 e-services: 2 idle');
      await n.processNotifier().flush();
      n.notifyWatchdog();
      await n.processNotifier().flush();
      n.notifyStopping();
      await n.processNotifier().flush();
      `,
      { NOTIFY_SOCKET: listener.socketPath },
    );
    const { code, stderr } = await exitOf(child);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    await eventually(() => listener.assignments().includes('STOPPING=1'), 'STOPPING=1');
    expect(listener.assignments()).toEqual(['READY=1', 'STATUS=2 e-services: 2 idle', 'WATCHDOG=1', 'STOPPING=1']);
  });

  it('coalesces a burst of STATUS updates instead of spawning one process each', async () => {
    const listener = await startNotifyListener();
    const child = runNode(
      `
      for (let i = 0; i < 50; i++) n.notifyStatus('status ' + i + '\\nsecond line');
      await n.processNotifier().flush();
      `,
      { NOTIFY_SOCKET: listener.socketPath },
    );
    expect((await exitOf(child)).code).toBe(0);
    await eventually(() => listener.assignments().includes('STATUS=status 49 second line'), 'the last status');
    const statuses = listener.assignments().filter((a) => a.startsWith('STATUS='));
    // The first update goes out at once; the other 49 wait for it and leave as one.
    expect(statuses).toEqual(['STATUS=status 0 second line', 'STATUS=status 49 second line']);
  });

  it('pings the watchdog only after the main loop has beaten since the last ping', async () => {
    const listener = await startNotifyListener();
    const child = runNode(
      `
      const notifier = n.processNotifier();
      const watchdog = new n.Watchdog({ notifier });
      if (!watchdog.enabled) throw new Error('watchdog not enabled');
      watchdog.start();
      watchdog.beat();
      const keepAlive = setInterval(() => {}, 1000);
      process.stdin.setEncoding('utf8').on('data', (cmd) => {
        if (cmd.includes('beat')) watchdog.beat();
        if (cmd.includes('exit')) { watchdog.stop(); clearInterval(keepAlive); process.stdin.destroy(); }
      });
      `,
      // 100 ms watchdog: pings are due every 50 ms.
      { NOTIFY_SOCKET: listener.socketPath, WATCHDOG_USEC: '100000' },
    );
    const done = exitOf(child);
    const pings = (): number => listener.assignments().filter((a) => a === 'WATCHDOG=1').length;
    await eventually(() => pings() >= 1, 'the first ping');
    // A stuck loop: many ping periods pass without a beat, and no ping may go out.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(pings()).toBe(1);
    child.stdin!.write('beat\n');
    await eventually(() => pings() >= 2, 'the ping after the second beat');
    await new Promise((resolve) => setTimeout(resolve, 300));
    child.stdin!.write('exit\n');
    const { code, stderr } = await done;
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(pings()).toBe(2);
  });

  it('is a no-op without NOTIFY_SOCKET', async () => {
    const child = runNode(
      `
      const notifier = new n.SystemdNotifier({ env: {}, binary: '/nonexistent/systemd-notify' });
      if (notifier.enabled) throw new Error('enabled without NOTIFY_SOCKET');
      notifier.ready(); notifier.status('x'); notifier.watchdog(); notifier.stopping();
      await notifier.flush();
      console.log('done');
      `,
      {},
    );
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    const { code, stderr } = await exitOf(child);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(out).toBe('done\n');
  });
});

describe('notifier failures', () => {
  function capture(): { logger: ReturnType<typeof createLogger>; lines: () => Array<Record<string, unknown>> } {
    const stream = new PassThrough();
    let text = '';
    stream.setEncoding('utf8').on('data', (d: string) => (text += d));
    const logger = createLogger({ level: 'debug', destination: stream });
    return { logger, lines: () => text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) };
  }

  it('tolerates a missing systemd-notify binary and says so once', async () => {
    // In a child process: it ends only once every event of the failed spawns has been handled.
    const child = runNode(
      `
      const { createLogger } = await import(${JSON.stringify(LOG_MODULE)});
      const logger = createLogger({ level: 'debug', destination: 'stderr' });
      const notifier = new n.SystemdNotifier({ env: { NOTIFY_SOCKET: '/nonexistent/notify.sock' }, binary: '/nonexistent/systemd-notify', logger });
      if (!notifier.enabled) throw new Error('not enabled with NOTIFY_SOCKET');
      notifier.ready();
      await notifier.flush();
      notifier.status('a');
      notifier.watchdog();
      await notifier.flush();
      `,
      {},
    );
    const { code, stderr } = await exitOf(child);
    expect(code, stderr).toBe(0);
    const logged = stderr
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { level: string; msg: string });
    expect(logged.map((l) => [l.level, l.msg])).toEqual([['warn', expect.stringContaining('systemd-notify was not found')]]);
  });

  it('logs a failing notify socket once at warn level, then at debug', async () => {
    const { logger, lines } = capture();
    const dir = tempDir('shs-notify-');
    const notifier = new SystemdNotifier({ env: { ...process.env, NOTIFY_SOCKET: path.join(dir, 'nobody-listens.sock') }, logger });
    for (let i = 0; i < 3; i++) {
      notifier.watchdog();
      await notifier.flush();
    }
    expect(lines().filter((l) => l.level === 'warn')).toHaveLength(1);
    expect(lines().filter((l) => l.level === 'debug' && l.msg === 'systemd notification failed')).toHaveLength(2);
  });
});

describe('watchdog settings', () => {
  it('pings at half of WATCHDOG_USEC', () => {
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '60000000' }, 42)).toBe(30_000);
  });

  it('ignores a watchdog meant for another pid', () => {
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '60000000', WATCHDOG_PID: '41' }, 42)).toBeUndefined();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '60000000', WATCHDOG_PID: '42' }, 42)).toBe(30_000);
  });

  it('is off without a valid WATCHDOG_USEC or without a notify socket', () => {
    expect(watchdogIntervalMs({}, 42)).toBeUndefined();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: 'soon' }, 42)).toBeUndefined();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '0' }, 42)).toBeUndefined();
    const notifier = new SystemdNotifier({ env: {} });
    expect(new Watchdog({ notifier, env: { WATCHDOG_USEC: '60000000' } }).enabled).toBe(false);
  });
});
