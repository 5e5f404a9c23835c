import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { WriterLock } from '../src/store/lock.js';
import { SinkPositionStore } from '../src/store/sink-positions.js';
import { EXIT } from '../src/errors.js';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { writeKeyFile } from './helpers/keys.js';
import { ES_A, appendSignals, openTestDb } from './delivery-fixtures.js';

function writeConfig(dir: string): string {
  writeKeyFile(dir, 'm2m.pem');
  const file = path.join(dir, 'config.toml');
  fs.writeFileSync(
    file,
    `preset = "simulator"
database = "state.db"
[outbox]
max_pending = 1
[pdnd.m2m]
client_id = "11111111-1111-4111-8111-111111111111"
key_id = "kid-1"
private_key_file = "m2m.pem"
[[sinks]]
type = "webhook"
name = "crm"
url = "http://127.0.0.1:9/events"
[[sinks]]
type = "file"
name = "archive"
path = "events.ndjson"
`,
  );
  return file;
}

describe('signalhub-sync sinks', () => {
  it('list --json shows positions, pending, state; retry resumes a stopped sink; refused while the database is held', async () => {
    const dir = tempDir();
    const config = writeConfig(dir);
    const dbFile = path.join(dir, 'state.db');
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1, 2]);
    const positions = new SinkPositionStore(db);
    positions.advance('archive', 2, 2);
    positions.stop('crm', 'sink "crm": POST http://127.0.0.1:9/events answered HTTP 410');
    db.close();

    const list = await runCli(['-c', config, 'sinks', 'list', '--json']);
    expect(list.stderr).toBe('');
    expect(list.code).toBe(0);
    const entries = JSON.parse(list.stdout) as { name: string; state: string; position: number; pending: number; backpressure: boolean; lastError: string | null }[];
    expect(entries.map((e) => [e.name, e.state, e.position, e.pending, e.backpressure])).toEqual([
      ['crm', 'stopped', 0, 2, true],
      ['archive', 'active', 2, 0, false],
    ]);
    expect(entries[0]!.lastError).toContain('HTTP 410');

    const table = await runCli(['-c', config, 'sinks', 'list']);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^NAME\s+TYPE\s+STATE\s+POSITION\s+PENDING/);
    expect(table.stdout).toMatch(/crm\s+webhook\s+STOPPED\s+0\s+2/);

    const lock = WriterLock.acquire(dbFile, 'run');
    try {
      const refused = await runCli(['-c', config, 'sinks', 'retry', 'crm']);
      expect(refused.code).toBe(EXIT.TEMPFAIL);
      expect(refused.stderr).toContain('DB_LOCKED');
      expect(refused.stderr).toContain('SIGHUP');
    } finally {
      lock.release();
    }

    const unknown = await runCli(['-c', config, 'sinks', 'retry', 'nope']);
    expect(unknown.code).toBe(EXIT.USAGE);
    expect(unknown.stderr).toContain('no sink named "nope"');

    const retried = await runCli(['-c', config, 'sinks', 'retry', 'crm']);
    expect(retried.stderr).toBe('');
    expect(retried.code).toBe(0);
    expect(retried.stdout).toContain('sink "crm" resumed at position 0; 2 event(s) pending');

    const after = openTestDb(dir);
    expect(new SinkPositionStore(after).get('crm').state).toBe('active');
    after.close();
  });
});
