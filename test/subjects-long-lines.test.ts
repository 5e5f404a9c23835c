import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { startRun } from './run-helpers.js';

const ES = '61111111-1111-4111-8111-111111111111';
const LONG = 'A'.repeat(3 * 1024 * 1024); // a "line" of 3 MiB: a file that lost its line breaks

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

async function newWorld(): Promise<World> {
  world = await createWorld({ dir: tempDir('shs-long-lines-'), eservices: [{ id: ES, name: 'residenze' }], toml: '[hub]\npoll_interval_seconds = 1\n' });
  return world;
}

describe('subject files with a giant line', () => {
  it('subjects import refuses it with its file and line number, in every format, and nothing after it is read', async () => {
    const w = await newWorld();
    const files: [string, string, RegExp][] = [
      ['subjects.ndjson', `{"key":"${fiscalCode(1)}","ref":"a"}\n\n${LONG}\n{"key":"${fiscalCode(2)}"}\n`, /subjects\.ndjson:3: line longer than 1048576 characters/],
      ['subjects.txt', `${fiscalCode(1)}\n${fiscalCode(2)}\n${LONG}`, /subjects\.txt:3: line longer than 1048576 characters/],
      ['subjects.csv', `key,ref\n${fiscalCode(1)},a\n${LONG}\n${fiscalCode(2)},b\n`, /line 3: record longer than 1048576 characters/],
    ];
    for (const [name, content, message] of files) {
      const file = path.join(w.dir, name);
      fs.writeFileSync(file, content);
      const r = await runCli(['--config', w.configFile, 'subjects', 'import', '--strict', file]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(65);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.length).toBeLessThan(2000);
    }
    const count = await runCli(['--config', w.configFile, 'subjects', 'count', '--json']);
    expect(JSON.parse(count.stdout).total).toBe(0);
  });

  it('through --queue the daemon reports the failed job, keeps running, and applies the next one', async () => {
    const w = await newWorld();
    const daemon = startRun(w);
    await daemon.waitForLog((l) => l.msg === 'signalhub-sync running', 'the daemon to start');
    const bad = path.join(w.dir, 'broken.ndjson');
    fs.writeFileSync(bad, `{"key":"${fiscalCode(3)}"}\n${LONG}`);
    const refused = await runCli(['--config', w.configFile, 'subjects', 'import', '--queue', bad], { timeoutMs: 60_000 });
    expect(refused.code, refused.stderr).toBe(65);
    expect(refused.stderr).toMatch(/broken\.ndjson:2: line longer than 1048576 characters/);
    const failed = await daemon.waitForLog((l) => l.msg === 'queued subject import failed', 'the failure to be logged');
    expect(failed.level).toBe('error');

    const good = path.join(w.dir, 'good.ndjson');
    fs.writeFileSync(good, `{"key":"${fiscalCode(4)}","ref":"d"}\n`);
    const applied = await runCli(['--config', w.configFile, 'subjects', 'import', '--queue', good], { timeoutMs: 60_000 });
    expect(applied.code, applied.stderr).toBe(0);
    expect(fs.readdirSync(`${w.config.database}.inbox`)).toEqual([]);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('a queued job that was being applied when the daemon died is reported as failed at the next start, not applied again', async () => {
    const w = await newWorld();
    // What a daemon killed in the middle of applying a job leaves: the job, its data, the mark.
    const inbox = `${w.config.database}.inbox`;
    fs.mkdirSync(inbox, { mode: 0o700 });
    const id = '000001700000000-crashed';
    fs.writeFileSync(path.join(inbox, `${id}.data`), `{"key":"${fiscalCode(5)}"}\n`, { mode: 0o600 });
    fs.writeFileSync(path.join(inbox, `${id}.job.json`), JSON.stringify({ id, format: 'ndjson', source: 'crash.ndjson', strict: false, replace: false, queuedAt: new Date().toISOString() }), { mode: 0o600 });
    fs.writeFileSync(path.join(inbox, `${id}.attempted`), 'attempted at 2026-11-30T00:00:00.000Z\n', { mode: 0o600 });

    const daemon = startRun(w);
    const failed = await daemon.waitForLog((l) => l.msg === 'queued subject import failed', 'the job to be reported');
    expect(failed.message).toContain('was being applied when the daemon stopped');
    const result = JSON.parse(fs.readFileSync(path.join(inbox, `${id}.result.json`), 'utf8')) as { error: { code: string } };
    expect(result.error.code).toBe('INPUT_INVALID');
    expect(fs.readdirSync(inbox)).toEqual([`${id}.result.json`]);
    const count = await runCli(['--config', w.configFile, 'subjects', 'count', '--json']);
    expect(JSON.parse(count.stdout).total).toBe(0);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
