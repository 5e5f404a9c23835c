import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli, type CliResult } from './helpers/cli.js';
import { testKey } from './helpers/keys.js';
import { SecretSet } from './helpers/secrets.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { DEFAULT_PRODUCER_AUDIENCE } from '../src/simulator/index.js';

/**
 * `sync --once` at trace level against producers that require DPoP (one with a nonce, one with
 * the audit pattern too), through a DPoP refusal on the way: the DPoP private key, every proof
 * the producers and the token endpoint received, and every voucher stay out of every stream.
 */
const DPOP = '61111111-1111-4111-8111-111111111111';
const DPOP_AUDIT = '62222222-2222-4222-8222-222222222222';

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

describe('secrets: DPoP keys, proofs and vouchers never reach any output', () => {
  it('sync --once with dpop_key_file, a nonce, the audit pattern and a producer 401: no secret in any stream', async () => {
    world = await createWorld({
      eservices: [
        { id: DPOP, name: 'dpop', requireDpop: true, dpopNonce: true, toml: 'voucher_type = "dpop"\n' },
        {
          id: DPOP_AUDIT,
          name: 'dpop-audit',
          requireDpop: true,
          requireAudit: true,
          toml: `voucher_type = "dpop"\naudit = { audience = "${DEFAULT_PRODUCER_AUDIENCE}", claims = { userID = "operatore-7", LoA = "LoA3" } }\n`,
        },
      ],
    });
    const w = world;
    const dpopKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    fs.writeFileSync(path.join(w.dir, 'dpop.pem'), dpopKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    fs.writeFileSync(
      w.configFile,
      fs
        .readFileSync(w.configFile, 'utf8')
        .replace('level = "warn"', 'level = "trace"')
        .replace('[pdnd.m2m]', '[pdnd]\ndpop_key_file = "dpop.pem"\n\n[pdnd.m2m]'),
    );
    const cli = (args: string[]) => runCli(['--config', w.configFile, ...args], { cwd: w.dir });
    const mine = [fiscalCode(71), fiscalCode(72)];
    fs.writeFileSync(path.join(w.dir, 'subjects.csv'), `key,ref\n${mine.map((k, i) => `${k},pratica-${i}`).join('\n')}\n`);
    const runs: [string, CliResult][] = [['import', await cli(['subjects', 'import', path.join(w.dir, 'subjects.csv')])]];
    runs.push(['sync 0', await cli(['sync', '--once'])]);
    expect(runs[1]![1].code, runs[1]![1].stderr).toBe(0);

    const expected: string[] = [];
    for (const es of [DPOP, DPOP_AUDIT]) for (const key of mine) expected.push(`${es}:${w.sim.depositForSubject(es, key, 'UPDATE')}`);
    w.sim.rotateSeed(DPOP);
    expected.push(`${DPOP}:${w.sim.depositForSubject(DPOP, mine[0]!, 'DELETE')}`);
    // A producer 401 on the fetch after the SEEDUPDATE: the voucher is refreshed and the call retried.
    w.sim.faults.inject('crypto', { kind: 'status', status: 401, times: 1, eserviceId: DPOP });
    runs.push(['sync 1 (crypto 401)', await cli(['sync', '--once'])]);
    runs.push(['sync 2', await cli(['sync', '--once'])]);
    expect(runs.at(-1)![1].code, runs.at(-1)![1].stderr).toBe(0);
    runs.push(['events list --json', await cli(['events', 'list', '--json', '--limit', '100'])]);
    const events = runs
      .at(-1)![1]
      .stdout.split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { id: string; type: string });
    expect(events.filter((e) => e.type === 'signal').map((e) => e.id).sort()).toEqual(expected.sort());

    const set = new SecretSet().addPrivateKey(testKey().privatePem, 'client key').addPrivateKey(dpopKey, 'DPoP key').addFromSimulator(w.sim, [DPOP, DPOP_AUDIT]);
    mine.forEach((k, i) => set.addSubjectKey(k, `subject ${i + 1}`));
    // The harness holds what it must look for: proofs of the token endpoint and of both producers, and DPoP vouchers.
    expect(w.sim.receivedDpopProofs().length).toBeGreaterThanOrEqual(6);
    expect(set.forms().filter((f) => f.kind === 'dpop-proof').length).toBe(2 * w.sim.receivedDpopProofs().length);
    expect(set.forms().some((f) => f.kind === 'private-key' && f.label === 'DPoP key' && f.form === 'jwk-d')).toBe(true);
    const all = runs.map(([name, r]) => [name, r] as const);
    // Trace level did log the DPoP exchange (so the scan has something to look through).
    expect(all.map(([, r]) => r.stderr).join('')).toContain('voucher obtained');
    set.assertClean(Object.fromEntries(all.flatMap(([name, r]) => [[`${name} stdout`, r.stdout], [`${name} stderr`, r.stderr]])));
  });

  it('the harness would catch a leaked proof: a planted one is found with its kind', async () => {
    world = await createWorld({ eservices: [{ id: DPOP, name: 'dpop', requireDpop: true, toml: 'voucher_type = "dpop"\n' }] });
    const w = world;
    const result = await runCli(['--config', w.configFile, 'sync', '--once'], { cwd: w.dir });
    expect(result.code, result.stderr).toBe(0);
    const proofs = w.sim.receivedDpopProofs();
    expect(proofs.length).toBeGreaterThan(0);
    const set = new SecretSet().addFromSimulator(w.sim, [DPOP]);
    const leaks = set.scan(`${result.stderr}\nleaked: ${proofs[0]!.split('.')[2]}\n`, 'planted');
    expect(leaks.map((l) => [l.kind, l.form])).toEqual([['dpop-proof', 'jwt-signature']]);
  });
});
