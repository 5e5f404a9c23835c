import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { fileEventIds, outboxEventIds, startNotifyListener, startRun, storeSubjects } from './run-helpers.js';

const ES1 = '21111111-1111-4111-8111-111111111111';
const ES2 = '22222222-2222-4222-8222-222222222222';

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

const FILE_SINK = `
[[sinks]]
name = "file"
type = "file"
path = "events.ndjson"
`;

describe('signalhub-sync run: systemd notifications', () => {
  it('sends READY=1 once running, a STATUS= summary, WATCHDOG=1 repeatedly and STOPPING=1 on SIGTERM', async () => {
    world = await createWorld({ eservices: [{ id: ES1, name: 'residenze' }], toml: `[hub]\npoll_interval_seconds = 1\n${FILE_SINK}` });
    const listener = await startNotifyListener();
    const daemon = startRun(world, { env: { NOTIFY_SOCKET: listener.socketPath, WATCHDOG_USEC: '1000000' } });

    await daemon.until(() => listener.assignments().includes('READY=1'), 'READY=1');
    const status = await daemon.until(() => listener.assignments().find((a) => a.startsWith('STATUS=') && a.includes('events pending')), 'a STATUS= line');
    expect(status).toMatch(/^STATUS=1 e-service: .*; \d+ events? pending$/);
    // The watchdog pings only while the scheduler loop ticks: several pings prove a live loop.
    await daemon.until(() => listener.assignments().filter((a) => a === 'WATCHDOG=1').length >= 3, 'three WATCHDOG=1');

    daemon.child.kill('SIGTERM');
    const exit = await daemon.exited;
    expect(exit.code).toBe(0);
    const sent = listener.assignments();
    expect(sent).toContain('STOPPING=1');
    expect(sent.indexOf('READY=1')).toBeLessThan(sent.indexOf('STOPPING=1'));
    // Once stopping, no further watchdog ping or status: systemd would read them as a live service.
    expect(sent.slice(sent.indexOf('STOPPING=1') + 1).filter((a) => a === 'WATCHDOG=1')).toEqual([]);
  });

  it('sends nothing and runs normally without NOTIFY_SOCKET', async () => {
    world = await createWorld({ eservices: [{ id: ES1, name: 'residenze' }], toml: `[hub]\npoll_interval_seconds = 1\n${FILE_SINK}` });
    const daemon = startRun(world, { env: { NOTIFY_SOCKET: '', WATCHDOG_USEC: '' } });
    await daemon.waitForLog((l) => l.msg === 'signalhub-sync running', 'the daemon to start');
    daemon.child.kill('SIGINT');
    expect((await daemon.exited).code).toBe(0);
    expect(daemon.stderr()).not.toMatch(/systemd-notify/);
  });
});

describe('signalhub-sync run: graceful stop', () => {
  it('stops on SIGTERM with a pull in flight, exits 0 in time, and loses nothing', async () => {
    world = await createWorld({
      eservices: [{ id: ES1, name: 'residenze' }],
      toml: `[hub]\npoll_interval_seconds = 1\npage_size = 10\n\n[daemon]\nshutdown_timeout_seconds = 8\n${FILE_SINK}`,
    });
    const mine = Array.from({ length: 10 }, (_, i) => fiscalCode(100 + i));
    storeSubjects(world, mine.map((key, i) => ({ key, ref: `pratica-${i}` })));
    const expected: string[] = [];
    for (let i = 0; i < 120; i++) {
      const ours = i % 3 === 0;
      const id = world.sim.depositForSubject(ES1, ours ? mine[i % 10]! : fiscalCode(5000 + i), 'UPDATE', 'domicile');
      if (ours) expected.push(`${ES1}:${id}`);
    }
    // Two quick pages, then every pull hangs far longer than the test waits.
    world.sim.faults.inject('pull', { kind: 'delay', ms: 0, times: 2 });
    world.sim.faults.inject('pull', { kind: 'delay', ms: 60_000 });

    const daemon = startRun(world);
    await daemon.until(() => (world!.sim.stats().requests.pull ?? 0) >= 3, 'a third pull to be in flight');
    await daemon.until(() => fileEventIds(path.join(world!.dir, 'events.ndjson')).length > 0, 'the first events to be delivered');
    daemon.child.kill('SIGTERM');
    const exit = await daemon.exited;
    // 70 would mean the stop was forced by daemon.shutdown_timeout_seconds.
    expect(exit).toEqual({ code: 0, signal: null });
    expect(daemon.logs().some((l) => l.msg === 'e-service sync interrupted by shutdown')).toBe(true);
    const before = outboxEventIds(world);
    expect(before.length).toBeGreaterThan(0);
    expect(before.length).toBeLessThan(expected.length);
    expect(before).toEqual(expected.slice(0, before.length));

    world.sim.faults.clear();
    const catchUp = await runCli(['--config', world.configFile, 'sync', '--once']);
    expect(catchUp.code, catchUp.stderr).toBe(0);
    expect(outboxEventIds(world)).toEqual(expected);
    // At least once to the sink: every event, none missing (duplicates would be allowed).
    expect(new Set(fileEventIds(path.join(world.dir, 'events.ndjson')))).toEqual(new Set(expected));
  });
});

describe('signalhub-sync run: SIGHUP', () => {
  it('applies a valid config (a new e-service gets synced) and keeps the running one when the new file is invalid', async () => {
    world = await createWorld({
      eservices: [
        { id: ES1, name: 'residenze' },
        { id: ES2, name: 'documenti' },
      ],
      toml: `[hub]\npoll_interval_seconds = 1\n${FILE_SINK}`,
    });
    const full = fs.readFileSync(world.configFile, 'utf8');
    // Start with the first e-service only: the second block is the last one in the file.
    const withoutEs2 = full.slice(0, full.lastIndexOf('[[eservices]]'));
    expect(withoutEs2).toContain(ES1);
    expect(withoutEs2).not.toContain(ES2);
    fs.writeFileSync(world.configFile, withoutEs2);
    const key = fiscalCode(42);
    storeSubjects(world, [{ key, ref: 'pratica-42' }]);
    const events = path.join(world.dir, 'events.ndjson');
    const first = world.sim.depositForSubject(ES1, key, 'CREATE', 'domicile');
    const second = world.sim.depositForSubject(ES2, key, 'UPDATE', 'document');

    const daemon = startRun(world);
    await daemon.until(() => fileEventIds(events).includes(`${ES1}:${first}`), 'the event of the first e-service');
    expect(fileEventIds(events)).not.toContain(`${ES2}:${second}`);

    fs.writeFileSync(world.configFile, full);
    daemon.child.kill('SIGHUP');
    await daemon.waitForLog((l) => l.msg === 'configuration reloaded', 'the reload');
    await daemon.until(() => fileEventIds(events).includes(`${ES2}:${second}`), 'the event of the added e-service');

    // Invalid: a page size the hub refuses, and an unknown key.
    fs.writeFileSync(world.configFile, full.replace('[hub]\n', '[hub]\npage_size = 500\npoll_intervall = 3\n'));
    daemon.child.kill('SIGHUP');
    const rejected = await daemon.waitForLog((l) => l.msg.startsWith('configuration reload rejected'), 'the rejection');
    expect(rejected.level).toBe('error');
    expect(rejected.msg).toContain('hub.page_size');
    expect(rejected.msg).toContain('hub.poll_intervall');
    // Still running with the old config: both e-services keep syncing.
    const third = world.sim.depositForSubject(ES2, key, 'DELETE', 'document');
    const fourth = world.sim.depositForSubject(ES1, key, 'UPDATE', 'domicile');
    await daemon.until(() => fileEventIds(events).includes(`${ES2}:${third}`) && fileEventIds(events).includes(`${ES1}:${fourth}`), 'events after the rejected reload');
    expect(daemon.child.exitCode).toBeNull();
    expect(daemon.stderr()).not.toContain(key);

    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('says which changed settings need a restart, and resumes a stopped sink', async () => {
    const dir = tempDir('shs-run-hup-');
    // The receiver refuses (exit 65: a permanent error) until the file "ok" exists.
    const script = `cd '${dir}' && test -e ok && cat >> delivered.ndjson || exit 65`;
    world = await createWorld({
      dir,
      eservices: [{ id: ES1, name: 'residenze' }],
      toml: `[hub]\npoll_interval_seconds = 1\n\n[[sinks]]\nname = "hook"\ntype = "exec"\ncommand = ["/bin/sh", "-c", ${JSON.stringify(script)}]\n`,
    });
    const key = fiscalCode(7);
    storeSubjects(world, [{ key, ref: 'pratica-7' }]);
    const id = world.sim.depositForSubject(ES1, key, 'CREATE', 'domicile');
    const daemon = startRun(world);
    await daemon.waitForLog((l) => l.msg.startsWith('sink STOPPED'), 'the exec sink to stop on exit 65');

    fs.writeFileSync(path.join(world.dir, 'ok'), '');
    const text = fs.readFileSync(world.configFile, 'utf8');
    fs.writeFileSync(world.configFile, text.replace('database = "state.db"', 'database = "other.db"'));
    daemon.child.kill('SIGHUP');
    const restart = await daemon.waitForLog((l) => l.msg.startsWith('configuration changes that take effect only after a restart'), 'the restart warning');
    expect(restart.settings).toEqual(['database']);
    await daemon.waitForLog((l) => l.msg === 'configuration reloaded', 'the reload');
    await daemon.until(() => fileEventIds(path.join(world!.dir, 'delivered.ndjson')).includes(`${ES1}:${id}`), 'delivery after the sink was resumed');
    expect(fs.existsSync(path.join(world.dir, 'other.db'))).toBe(false);

    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
