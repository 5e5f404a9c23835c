import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SinkPositionStore } from '../src/store/sink-positions.js';
import { openDatabase } from '../src/store/db.js';
import { startReceiver } from './delivery-fixtures.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { SecretSet } from './helpers/secrets.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { httpGet, startRun, storeSubjects } from './run-helpers.js';

const ES = '41111111-1111-4111-8111-111111111111';
/** Where an incoming-webhook service keeps its credential: the path. */
const PATH_TOKEN = 'xoxb7Hq2mZ9pL4vR8sT1wY6u';

let world: World | undefined;
const closers: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const close of closers) await close();
  await world?.close();
  if (world) fs.rmSync(world.dir, { recursive: true, force: true });
});

describe('secrets: a webhook URL whose path is the credential', () => {
  it('a receiver that refuses (400) stops the sink: logs at trace level, the last error in the database, /readyz reasons, sinks list, status and config check show the host and a path fingerprint only', async () => {
    const receiver = await startReceiver(() => ({ status: 400 }));
    closers.push(receiver.close);
    const url = receiver.url.replace('/events', `/services/T0AB12CD/B0EF34GH/${PATH_TOKEN}`);
    world = await createWorld({
      dir: fs.mkdtempSync(path.join(os.tmpdir(), 'shs-webhook-path-')),
      eservices: [{ id: ES, name: 'residenze' }],
      toml: `[hub]
poll_interval_seconds = 1

[http]
enabled = true
listen = "127.0.0.1:0"

[[sinks]]
name = "chat"
type = "webhook"
url = "${url}"
max_retries = 0
`,
    });
    fs.writeFileSync(world.configFile, fs.readFileSync(world.configFile, 'utf8').replace('level = "warn"', 'level = "trace"'));
    const key = fiscalCode(41);
    storeSubjects(world, [{ key, ref: 'pratica-41' }]);
    world.sim.depositForSubject(ES, key, 'UPDATE', 'domicile');

    const daemon = startRun(world, { logLevel: 'trace' });
    const endpoint = (await daemon.waitForLog((l) => l.msg === 'health and metrics endpoint listening', 'the HTTP endpoint')).url as string;
    await daemon.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('sink STOPPED'), 'the sink to stop on the 400');
    expect(receiver.requests.length).toBeGreaterThan(0);
    const readyz = await daemon.until(async () => {
      const r = await httpGet(`${endpoint}/readyz`);
      return r.body.includes('sink chat is stopped') ? r : undefined;
    }, '/readyz to name the stopped sink');
    const outputs: Record<string, string> = { '/readyz': readyz.body };
    const cli = async (name: string, args: string[]): Promise<CliResult> => {
      const r = await runCli(['--config', world!.configFile, ...args]);
      outputs[`${name} stdout`] = r.stdout;
      outputs[`${name} stderr`] = r.stderr;
      return r;
    };
    const list = await cli('sinks list', ['sinks', 'list', '--json']);
    await cli('sinks list table', ['sinks', 'list']);
    await cli('status', ['status', '--json']);
    await cli('config check', ['config', 'check']);
    daemon.child.kill('SIGTERM');
    await daemon.exited;
    outputs['run stdout'] = daemon.stdout();
    outputs['run stderr'] = daemon.stderr();
    const db = openDatabase(world.config.database, { readonly: true });
    try {
      outputs['sink_positions.last_error'] = new SinkPositionStore(db).get('chat').lastError ?? '';
    } finally {
      db.close();
    }

    // The host and the status are there (the operator can tell which receiver and why) ...
    const host = new URL(url).origin;
    expect(outputs['sink_positions.last_error']).toMatch(new RegExp(`POST ${host}/\\[path [0-9a-f]{8}\\] answered HTTP 400`));
    expect(JSON.parse(list.stdout)[0].lastError).toBe(outputs['sink_positions.last_error']);
    expect(JSON.parse(readyz.body).reasons.join('\n')).toContain(`${host}/[path `);
    // ... the path never is, in any form.
    const set = new SecretSet().addWebhookUrl(url);
    expect(set.forms().map((f) => f.form)).toContain('segment-4');
    set.assertClean(outputs);
  });
});
