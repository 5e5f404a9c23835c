import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ROOT, spawnCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { createWorld, type World } from './helpers/world.js';

/**
 * How log records reach journald and people: a real `sync --once` child against a simulator
 * that has gone away (so the token request is refused and retried, then the run fails), its
 * stderr a real file whose device:inode is, or is not, the JOURNAL_STREAM systemd would set.
 */
const ES = '11111111-1111-4111-8111-111111111111';
let world: World;

beforeAll(async () => {
  world = await createWorld({ dir: fs.mkdtempSync(path.join(os.tmpdir(), 'shs-log-world-')), eservices: [{ id: ES, name: 'residenze' }] });
  await world.close(); // nothing listens on its port any more: ECONNREFUSED
});
afterAll(() => fs.rmSync(world.dir, { recursive: true, force: true }));

/** Runs `sync --once` with stderr written to a real file; returns the file's lines and the exit code. */
async function syncWithStderrFile(journalStream: (stat: fs.Stats) => string | undefined, env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; lines: string[] }> {
  const dir = tempDir('shs-log-');
  const file = path.join(dir, 'stderr.log');
  const fd = fs.openSync(file, 'w');
  const stream = journalStream(fs.fstatSync(fd));
  const child = spawnCli(['--config', world.configFile, '--log-level', 'info', 'sync', '--once'], {
    stdio: ['ignore', 'ignore', fd],
    env: { ...env, JOURNAL_STREAM: stream, SIGNALHUB_SYNC_LOG_FORMAT: env.SIGNALHUB_SYNC_LOG_FORMAT ?? '' },
  });
  fs.closeSync(fd);
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  return { code, lines: fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') };
}

describe('journald priorities', () => {
  it('prefixes every line with its syslog priority when JOURNAL_STREAM is this stderr', async () => {
    const { code, lines } = await syncWithStderrFile((st) => `${st.dev}:${st.ino}`);
    expect(code).toBe(69);
    expect(lines.length).toBeGreaterThan(0);
    const byPriority = new Map<string, Record<string, unknown>[]>();
    for (const line of lines) {
      if (/^<3>signalhub-sync: [A-Z_]+: /.test(line)) continue; // the CLI's last word, an error too
      const match = /^<([0-7])>(\{.*\})$/.exec(line);
      expect(match, line).not.toBeNull();
      const record = JSON.parse(match![2]!) as Record<string, unknown>;
      const expected = { fatal: '2', error: '3', warn: '4', info: '6', debug: '7', trace: '7' }[record.level as string];
      expect(match![1], line).toBe(expected);
      byPriority.set(match![1]!, [...(byPriority.get(match![1]!) ?? []), record]);
    }
    // The refused token requests are warnings (4), the failed run an error (3).
    expect(byPriority.get('4')?.length ?? 0).toBeGreaterThan(0);
    expect(byPriority.get('3')?.length ?? 0).toBeGreaterThan(0);
  });

  it('writes plain JSON when JOURNAL_STREAM names another stream (inherited from a parent whose stderr was the journal)', async () => {
    const { lines } = await syncWithStderrFile((st) => `${st.dev}:${Number(st.ino) + 1}`);
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) expect(() => JSON.parse(line), line).not.toThrow();
  });

  it('every retry warning names the attempt and the cause code', async () => {
    const { lines } = await syncWithStderrFile(() => undefined);
    const retries = lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => String(r.msg).includes('retrying'));
    expect(retries.length).toBeGreaterThan(0);
    retries.forEach((r, i) => {
      expect(r.attempt, JSON.stringify(r)).toBe(i + 1);
      expect(r.retriesLeft).toEqual(expect.any(Number));
      expect(r.code).toBe('TOKEN_UNAVAILABLE');
      expect(r.cause).toBe('ECONNREFUSED');
    });
  });
});

describe('terminal output', () => {
  it('prints one readable line per record on a TTY (script(1) gives the child a real pseudo-terminal)', () => {
    const hasScript = spawnSync('script', ['--version']).status === 0;
    expect(hasScript, 'util-linux script(1) is needed for this test').toBe(true);
    const command = [process.execPath, CLI, '--config', world.configFile, '--log-level', 'info', 'sync', '--once'].map((a) => `'${a}'`).join(' ');
    const result = spawnSync('script', ['-qefc', command, '/dev/null'], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, JOURNAL_STREAM: '', SIGNALHUB_SYNC_LOG_FORMAT: '' }, timeout: 60_000 });
    const lines = result.stdout.split(/\r?\n/).filter((l) => l.trim() !== '');
    const records = lines.filter((l) => /^\d\d:\d\d:\d\d\.\d{3} (INFO |WARN |ERROR) /.test(l));
    expect(records.length, result.stdout).toBeGreaterThan(0);
    expect(lines.some((l) => l.trimStart().startsWith('{"level"'))).toBe(false);
    expect(records.some((l) => /^\S+ WARN  token request failed, retrying .*attempt=1 .*cause=ECONNREFUSED/.test(l)), result.stdout).toBe(true);
  });

  it('SIGNALHUB_SYNC_LOG_FORMAT=json keeps JSON even on a TTY', () => {
    const command = [process.execPath, CLI, '--config', world.configFile, 'sync', '--once'].map((a) => `'${a}'`).join(' ');
    const result = spawnSync('script', ['-qefc', command, '/dev/null'], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, JOURNAL_STREAM: '', SIGNALHUB_SYNC_LOG_FORMAT: 'json' }, timeout: 60_000 });
    const records = result.stdout.split(/\r?\n/).filter((l) => l.startsWith('{'));
    expect(records.length, result.stdout).toBeGreaterThan(0);
    for (const r of records) expect(() => JSON.parse(r)).not.toThrow();
  });
});
