import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach } from 'vitest';
import { openDatabase } from '../src/store/db.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import type { World } from './helpers/world.js';
import { spawnCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { expectContractEvent, expectContractText } from './helpers/event-contract.js';

const children: ChildProcess[] = [];
afterEach(() => {
  while (children.length > 0) {
    const child = children.pop()!;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

/** Resolves when `check` returns a value other than undefined/false; polls every 100 ms. */
export async function eventually<T>(check: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastError ? `: ${(lastError as Error).message}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export interface LogLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

export interface DaemonChild {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Pino lines of stderr, parsed. */
  logs(): LogLine[];
  waitForLog(predicate: (line: LogLine) => boolean, what: string, timeoutMs?: number): Promise<LogLine>;
  /** Like `eventually`, but fails at once (with the daemon's stderr) if the daemon exits meanwhile. */
  until<T>(check: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs?: number): Promise<T>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `signalhub-sync --config <world> run` as a child process, at info level unless told. */
export function startRun(world: World, options: { env?: NodeJS.ProcessEnv; logLevel?: string } = {}): DaemonChild {
  const child = spawnCli(['--config', world.configFile, '--log-level', options.logLevel ?? 'info', 'run'], { env: options.env ?? {} });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  const logs = (): LogLine[] =>
    stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as LogLine);
  const until = async <T>(check: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs?: number): Promise<T> => {
    const exitedEarly = exited.then(({ code, signal }) => {
      throw new Error(`daemon exited (${code ?? signal}) while waiting for ${what}; stderr:\n${stderr.slice(-4000)}`);
    });
    exitedEarly.catch(() => undefined);
    try {
      return await Promise.race([eventually(check, what, timeoutMs), exitedEarly]);
    } catch (err) {
      if ((err as Error).message.startsWith('timed out')) (err as Error).message += `; daemon stderr:\n${stderr.slice(-4000)}`;
      throw err;
    }
  };
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    logs,
    exited,
    until,
    waitForLog: (predicate, what, timeoutMs) => until(() => logs().find(predicate), what, timeoutMs),
  };
}

/** Stores subjects (linked to every e-service) the way `subjects import` does, before the daemon runs. */
export function storeSubjects(world: World, subjects: { key: string; ref: string; tenant?: string; eservices?: string[] }[]): void {
  const db = openDatabase(world.config.database);
  try {
    new SubjectWriter(db, { index: subjectIndexOptions(world.config) }).upsertBatch(subjects.map((s) => ({ eservices: 'all' as const, ...s })));
  } finally {
    db.close();
  }
}

/** Event ids in an NDJSON file sink's output (empty while the file does not exist). */
export function fileEventIds(file: string): string[] {
  if (!fs.existsSync(file)) return [];
  const text = fs.readFileSync(file, 'utf8');
  // A line still being written is not complete JSON: only whole lines are checked.
  const whole = text.slice(0, text.lastIndexOf('\n') + 1);
  expectContractText(whole, file);
  return whole
    .split('\n')
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { id: string }).id);
}

/** Event ids in the outbox, in order (read-only connection). */
export function outboxEventIds(world: World): string[] {
  const db = openDatabase(world.config.database, { readonly: true });
  try {
    const rows = db.prepare('SELECT event_id AS id, payload FROM outbox ORDER BY seq').all() as { id: string; payload: string }[];
    for (const row of rows) expectContractEvent(JSON.parse(row.payload), `outbox event ${row.id}`);
    return rows.map((r) => r.id);
  } finally {
    db.close();
  }
}

/**
 * A stand-in for systemd's notify socket: a python3 unix datagram socket printing each datagram
 * as a JSON string per line. It closes the pipe fd that systemd-notify passes with BARRIER=1,
 * which is how the manager acknowledges it.
 */
const LISTENER_PY = `
import array, json, socket, sys, os
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("LISTENING", flush=True)
while True:
    data, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(payload[: len(payload) - len(payload) % 4])
            for fd in fds:
                os.close(fd)
    print(json.dumps(data.decode()), flush=True)
`;

export interface NotifyListener {
  socketPath: string;
  /** Every assignment received in order, without systemd-notify's BARRIER=1 datagrams. */
  assignments(): string[];
}

export async function startNotifyListener(): Promise<NotifyListener> {
  const dir = tempDir('shs-run-notify-');
  const script = path.join(dir, 'listener.py');
  fs.writeFileSync(script, LISTENER_PY);
  const socketPath = path.join(dir, 'notify.sock');
  const child = spawn('python3', [script, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const received: string[][] = [];
  let buffer = '';
  await new Promise<void>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`listener exited with ${code}`)));
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line === 'LISTENING') resolve();
        else received.push((JSON.parse(line) as string).split('\n').filter(Boolean));
      }
    });
  });
  return { socketPath, assignments: () => received.filter((d) => !d.includes('BARRIER=1')).flat() };
}

export async function httpGet(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.text() };
}

/** The value of one Prometheus sample, e.g. metric('signalhub_matches_total', {eservice: id}). */
export function metricValue(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const match = /^([^{\s]+)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(match[3]);
  }
  return undefined;
}
