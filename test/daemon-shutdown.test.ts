import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { ROOT } from './helpers/cli.js';

const SHUTDOWN = pathToFileURL(path.join(ROOT, 'dist/daemon/shutdown.js')).href;
const LOG = pathToFileURL(path.join(ROOT, 'dist/log.js')).href;

/**
 * A tiny daemon around installSignalHandlers, run as a real child process because this is about
 * process signals and exit codes. Its stop and reload wait for "go" on stdin when told to, so
 * the test decides when they finish.
 */
const DAEMON = `
import { installSignalHandlers } from ${JSON.stringify(SHUTDOWN)};
import { createLogger } from ${JSON.stringify(LOG)};
const say = (line) => process.stdout.write(line + '\\n');
const gates = [];
process.stdin.setEncoding('utf8').on('data', (d) => { for (const l of d.split('\\n')) if (l === 'go') gates.shift()?.(); });
const waitForGo = () => new Promise((resolve) => gates.push(resolve));
let reloads = 0;
const keepAlive = setInterval(() => {}, 1000);
process.on('SIGHUP', () => say('hup'));
const handlers = installSignalHandlers({
  timeoutMs: Number(process.env.TIMEOUT_MS),
  logger: createLogger({ level: 'info', destination: 'stderr' }),
  onStop: async (signal) => {
    say('stop ' + signal);
    if (process.env.STOP === 'hang') await new Promise(() => {});
    if (process.env.STOP === 'gate') await waitForGo();
    if (process.env.STOP === 'fail') throw new Error('sink flush failed');
    clearInterval(keepAlive);
    say('stop done');
  },
  onReload: async () => {
    const n = ++reloads;
    say('reload start ' + n);
    if (process.env.RELOAD === 'gate') await waitForGo();
    if (process.env.RELOAD === 'fail' && n === 1) throw new Error('config.toml: hub.page_size: must be 1..100');
    say('reload done ' + n);
  },
});
handlers.stopped.then(() => say('stopped promise'));
if (process.env.REQUEST_STOP) setTimeout(() => handlers.requestStop(), 10);
say('ready');
`;

interface Daemon {
  child: ChildProcess;
  lines: () => string[];
  stderr: () => string;
  waitForLine: (line: string) => Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children: ChildProcess[] = [];
afterEach(() => {
  while (children.length > 0) {
    const child = children.pop()!;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

async function startDaemon(env: Record<string, string>): Promise<Daemon> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', DAEMON], { env: { ...process.env, TIMEOUT_MS: '30000', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  const wakers: Array<() => void> = [];
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    for (const wake of wakers.splice(0)) wake();
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  const lines = (): string[] => stdout.split('\n').filter(Boolean);
  const daemon: Daemon = {
    child,
    lines,
    stderr: () => stderr,
    exited,
    async waitForLine(line) {
      const deadline = Date.now() + 20_000;
      while (!lines().includes(line)) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for "${line}"; got ${JSON.stringify(lines())}; stderr ${stderr}`);
        await Promise.race([new Promise<void>((resolve) => wakers.push(resolve)), exited, new Promise((resolve) => setTimeout(resolve, 200))]);
      }
    },
  };
  await daemon.waitForLine('ready');
  return daemon;
}

function logMessages(stderr: string): string[] {
  return stderr
    .split('\n')
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { msg: string }).msg);
}

describe('signal handling', () => {
  it.each(['SIGTERM', 'SIGINT'] as const)('%s stops gracefully and exits 0', async (signal) => {
    const daemon = await startDaemon({});
    daemon.child.kill(signal);
    expect(await daemon.exited).toEqual({ code: 0, signal: null });
    expect(daemon.lines()).toEqual(['ready', `stop ${signal}`, 'stop done', 'stopped promise']);
    expect(logMessages(daemon.stderr())).toEqual(['stopping gracefully', 'stopped']);
  });

  it('forces the exit when the graceful stop outlasts the timeout', async () => {
    const daemon = await startDaemon({ STOP: 'hang', TIMEOUT_MS: '300' });
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toEqual({ code: 70, signal: null });
    expect(daemon.lines()).toEqual(['ready', 'stop SIGTERM']);
    expect(logMessages(daemon.stderr())).toContain('graceful stop did not finish in time: forcing exit');
  });

  it('exits at once on a second SIGTERM during the stop, with 128 + signal number', async () => {
    const daemon = await startDaemon({ STOP: 'gate' });
    daemon.child.kill('SIGTERM');
    await daemon.waitForLine('stop SIGTERM');
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toEqual({ code: 143, signal: null });
    expect(daemon.lines()).not.toContain('stop done');
  });

  it('a SIGINT after SIGTERM forces too', async () => {
    const daemon = await startDaemon({ STOP: 'gate' });
    daemon.child.kill('SIGTERM');
    await daemon.waitForLine('stop SIGTERM');
    daemon.child.kill('SIGINT');
    expect((await daemon.exited).code).toBe(130);
  });

  it('exits non-zero when the graceful stop fails', async () => {
    const daemon = await startDaemon({ STOP: 'fail' });
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(70);
    expect(daemon.stderr()).toContain('sink flush failed');
  });

  it('requestStop() takes the same graceful path', async () => {
    const daemon = await startDaemon({ REQUEST_STOP: '1' });
    expect((await daemon.exited).code).toBe(0);
    expect(daemon.lines()).toEqual(['ready', 'stop request', 'stop done', 'stopped promise']);
  });

  it('SIGHUP reloads and keeps running; a failed reload is logged and the process keeps running', async () => {
    const daemon = await startDaemon({ RELOAD: 'fail' });
    daemon.child.kill('SIGHUP');
    await daemon.waitForLine('reload start 1');
    daemon.child.kill('SIGHUP');
    await daemon.waitForLine('reload done 2');
    expect(daemon.lines()).not.toContain('reload done 1');
    expect(daemon.child.exitCode).toBeNull();
    const failure = daemon
      .stderr()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { msg: string; level: string; err?: { message: string } })
      .find((l) => l.msg === 'reload failed: keeping the running configuration');
    expect(failure?.level).toBe('error');
    expect(failure?.err?.message).toBe('config.toml: hub.page_size: must be 1..100');
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('merges SIGHUPs that arrive during a reload into one more reload', async () => {
    const daemon = await startDaemon({ RELOAD: 'gate' });
    daemon.child.kill('SIGHUP');
    await daemon.waitForLine('reload start 1');
    daemon.child.kill('SIGHUP');
    await waitForCount(daemon, 'hup', 2);
    daemon.child.kill('SIGHUP');
    await waitForCount(daemon, 'hup', 3);
    daemon.child.stdin!.write('go\n');
    await daemon.waitForLine('reload start 2');
    daemon.child.stdin!.write('go\n');
    await daemon.waitForLine('reload done 2');
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
    expect(daemon.lines().filter((l) => l.startsWith('reload start'))).toEqual(['reload start 1', 'reload start 2']);
  });
});

async function waitForCount(daemon: Daemon, line: string, count: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (daemon.lines().filter((l) => l === line).length < count) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${count} × "${line}"`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
