import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { fileEventIds, startRun, storeSubjects } from './run-helpers.js';

const ES1 = '41111111-1111-4111-8111-111111111111';

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

describe('signalhub-sync run: backpressure', () => {
  it('pauses pulling while a sink holds more than outbox.max_pending events, says why, and resumes after the sink recovers', async () => {
    const dir = tempDir('shs-run-bp-');
    const script = `cd '${dir}' && test -e ok && cat >> delivered.ndjson || exit 65`;
    world = await createWorld({
      dir,
      eservices: [{ id: ES1, name: 'residenze' }],
      toml: `[hub]\npoll_interval_seconds = 1\n\n[outbox]\nmax_pending = 2\n\n[[sinks]]\nname = "hook"\ntype = "exec"\ncommand = ["/bin/sh", "-c", ${JSON.stringify(script)}]\n`,
    });
    const key = fiscalCode(3);
    storeSubjects(world, [{ key, ref: 'pratica-3' }]);
    const first = Array.from({ length: 5 }, () => world!.sim.depositForSubject(ES1, key, 'UPDATE', 'domicile'));
    const daemon = startRun(world);

    const paused = await daemon.waitForLog((l) => l.msg === 'e-service paused', 'the pause');
    expect(paused.eservice).toBe(ES1);
    expect(paused.reason).toBe('sink hook has more than 2 undelivered events (outbox.max_pending)');
    const status = await runCli(['--config', world.configFile, 'status', '--json']);
    // Exit 1: a paused e-service is blocked (README "Status and its exit code").
    expect(status.code, status.stderr).toBe(1);
    expect((JSON.parse(status.stdout) as { eservices: { pausedBySink: string | null }[] }).eservices[0]!.pausedBySink).toBe('hook');

    // While paused nothing is pulled: a signal deposited now waits on the hub.
    const pullsWhilePaused = world.sim.stats().requests.pull ?? 0;
    const later = world.sim.depositForSubject(ES1, key, 'DELETE', 'domicile');
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(world.sim.stats().requests.pull ?? 0).toBe(pullsWhilePaused);

    fs.writeFileSync(path.join(dir, 'ok'), '');
    daemon.child.kill('SIGHUP');
    await daemon.waitForLog((l) => l.msg === 'e-service resumed', 'the e-service to resume');
    const delivered = path.join(dir, 'delivered.ndjson');
    await daemon.until(() => fileEventIds(delivered).includes(`${ES1}:${later}`), 'the signal deposited while paused');
    expect(fileEventIds(delivered)).toEqual([...first, later].map((id) => `${ES1}:${id}`));

    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
