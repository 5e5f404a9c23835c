import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { fileEventIds, startRun, storeSubjects } from './run-helpers.js';

const ES = '51111111-1111-4111-8111-111111111111';

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

describe('subjects import while the daemon runs', () => {
  it('--queue hands the file to the daemon, which applies it between sync runs and back-matches', async () => {
    const dir = tempDir('shs-run-inbox-');
    world = await createWorld({
      dir,
      eservices: [{ id: ES, name: 'residenze' }],
      toml: `[hub]\npoll_interval_seconds = 1\n\n[[sinks]]\nname = "archive"\ntype = "file"\npath = "events.ndjson"\n`,
    });
    const [anna, bruno, carla] = [fiscalCode(501), fiscalCode(502), fiscalCode(503)];
    storeSubjects(world, [{ key: anna, ref: 'anna' }]);
    const daemon = startRun(world);
    await daemon.waitForLog((l) => l.msg === 'signalhub-sync running', 'the daemon to start');
    const brunoEarly = world.sim.depositForSubject(ES, bruno, 'CREATE', 'domicile'); // bruno is not a subject yet
    await daemon.until(() => fileEventIds(path.join(dir, 'events.ndjson')).length === 0 && (world!.sim.stats().requests.pull ?? 0) >= 2, 'a pull after the deposit');

    const csv = path.join(dir, 'new.csv');
    fs.writeFileSync(csv, `key,ref\n${bruno},bruno\n${carla},carla\nRSSMRA80A01H501X,bad\n`);
    const refused = await runCli(['--config', world.configFile, 'subjects', 'import', csv]);
    expect(refused.code).toBe(75);

    const queued = await runCli(['--config', world.configFile, 'subjects', 'import', '--queue', csv], { timeoutMs: 60_000 });
    expect(queued.code, queued.stderr).toBe(65); // one bad row: reported, good rows imported
    expect(queued.stdout).toContain('read 3, new 2');
    expect(queued.stderr).toContain('import queued as');
    expect(queued.stderr).toMatch(/line 4: .*\(ref bad\)/);
    for (const key of [bruno, carla, 'RSSMRA80A01H501X']) expect(queued.stdout + queued.stderr).not.toContain(key);
    await daemon.waitForLog((l) => l.msg === 'queued subject import applied', 'the daemon to apply the import');

    // Bruno's earlier signal is back-matched; carla's new one matches with her fresh pseudonym.
    const carlaNow = world.sim.depositForSubject(ES, carla, 'UPDATE', 'domicile');
    const ids = await daemon.until(() => {
      const got = fileEventIds(path.join(dir, 'events.ndjson'));
      return got.length >= 2 ? got : undefined;
    }, 'both events delivered');
    expect(ids.sort()).toEqual([`${ES}:${brunoEarly}`, `${ES}:${carlaNow}`].sort());

    const count = await runCli(['--config', world.configFile, 'subjects', 'count', '--json']);
    expect(JSON.parse(count.stdout).total).toBe(3);
    expect(fs.readdirSync(`${world.config.database}.inbox`)).toEqual([]); // data (fiscal codes) removed once applied
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
