import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { createDemoWorld, type DemoWorld } from '../src/daemon/demo.js';
import type { CheckResult, DoctorReport } from '../src/daemon/doctor.js';
import { silentLogger } from '../src/log.js';
import { DEFAULT_PRODUCER_AUDIENCE, startSimulator, type Simulator } from '../src/simulator/index.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { testKey } from './helpers/keys.js';
import { SecretSet } from './helpers/secrets.js';
import { createWorld, ES_CLIENT, M2M_CLIENT, ORG, type World, type WorldEService } from './helpers/world.js';

/**
 * `signalhub-sync doctor` as a child process of the built CLI: it passes on the demo world, and
 * for each broken piece names that piece, its fix, and the exit code of its kind of failure.
 */
const ES = '81111111-1111-4111-8111-111111111111';
const ES2 = '82222222-2222-4222-8222-222222222222';

let world: World | undefined;
let demo: DemoWorld | undefined;
const extra: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await world?.close();
  await demo?.close();
  for (const e of extra.splice(0)) await e.close();
  world = undefined;
  demo = undefined;
});

async function doctor(w: { configFile: string; dir: string }, env: NodeJS.ProcessEnv = {}): Promise<{ result: CliResult; report: DoctorReport }> {
  const json = await runCli(['--config', w.configFile, 'doctor', '--json'], { cwd: w.dir, env });
  const result = await runCli(['--config', w.configFile, 'doctor'], { cwd: w.dir, env });
  expect(json.code, json.stderr).toBe(result.code);
  return { result, report: JSON.parse(json.stdout) as DoctorReport };
}

/** The one failing check whose name starts with `name`, with its line in the human output. */
function failed(run: { result: CliResult; report: DoctorReport }, name: string): CheckResult & { line: string } {
  const failures = run.report.checks.filter((c) => c.ok === false);
  const check = failures.find((c) => c.check.startsWith(name));
  expect(check, `no failed check "${name}" in:\n${run.result.stdout}`).toBeDefined();
  const line = run.result.stdout.split('\n').find((l) => l.startsWith(`✗ ${check!.check}:`));
  expect(line, run.result.stdout).toBeDefined();
  expect(line).toContain(`fix: ${check!.fix}`);
  return { ...check!, line: line! };
}

async function brokenWorld(eservices: WorldEService[] = [{ id: ES, name: 'residenze' }], toml = ''): Promise<World> {
  world = await createWorld({ eservices, toml });
  return world;
}

describe('signalhub-sync doctor on a working setup', () => {
  it('passes on the demo world: every check ✓, exit 0, and --json says the same', async () => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    demo = await createDemoWorld({ logger: silentLogger, env });
    const run = await doctor({ configFile: demo.configFile, dir: demo.dir }, { SIGNALHUB_SYNC_DEMO_DIR: env.SIGNALHUB_SYNC_DEMO_DIR, SIGNALHUB_SYNC_SIMULATOR_URL: env.SIGNALHUB_SYNC_SIMULATOR_URL });
    expect(run.result.code, run.result.stdout + run.result.stderr).toBe(0);
    expect(run.report.ok).toBe(true);
    const lines = run.result.stdout.trim().split('\n');
    expect(lines.slice(0, -1).every((l) => l.startsWith('✓ '))).toBe(true);
    expect(lines.at(-1)).toMatch(/^all \d+ checks passed$/);
    const names = run.report.checks.map((c) => c.check);
    for (const name of ['key file', 'clock', 'M2M voucher', 'hub /status', 'database']) expect(names).toContain(name);
    for (const es of demo.config.eservices) {
      expect(names).toContain(`pull ${es.name}`);
      expect(names).toContain(`crypto info ${es.name}`);
    }
    // Changes nothing: no cursor moved, nothing pulled into the store, no signal consumed.
    const statusAfter = await runCli(['--config', demo.configFile, 'status', '--json'], { env: { SIGNALHUB_SYNC_DEMO_DIR: env.SIGNALHUB_SYNC_DEMO_DIR, SIGNALHUB_SYNC_SIMULATOR_URL: env.SIGNALHUB_SYNC_SIMULATOR_URL } });
    const status = JSON.parse(statusAfter.stdout) as { eservices: { cursor: number; signalsSeen?: number }[] };
    expect(status.eservices.every((e) => e.cursor === 0)).toBe(true);
  });

  it('DPoP and the audit pattern are checked where configured, with both keys of a rotating client; the seed shows only as its fingerprint', async () => {
    const w = await brokenWorld([
      { id: ES, name: 'dpop-audit', requireDpop: true, requireAudit: true, toml: `voucher_type = "dpop"\naudit = { audience = "${DEFAULT_PRODUCER_AUDIENCE}", claims = { userID = "op" } }\n` },
    ]);
    fs.writeFileSync(path.join(w.dir, 'm2m-next.pem'), testKey().privatePem, { mode: 0o600 });
    w.sim.registerClient({ clientId: M2M_CLIENT, kind: 'm2m', keyId: 'kid-m2m-next', publicKey: testKey().publicKey, organizationId: ORG });
    fs.writeFileSync(w.configFile, fs.readFileSync(w.configFile, 'utf8').replace('private_key_file = "m2m.pem"', 'private_key_file = "m2m.pem"\nnext_key_id = "kid-m2m-next"\nnext_private_key_file = "m2m-next.pem"'));
    const run = await doctor(w);
    expect(run.result.code, run.result.stdout).toBe(0);
    expect(run.result.stdout).toMatch(/^✓ DPoP key: generated in memory: ES256/m);
    expect(run.result.stdout).toMatch(/^✓ e-service voucher dpop-audit: .*DPoP \+ audit$/m);
    expect(run.result.stdout).toMatch(/^✓ crypto info dpop-audit: SHA-256, seed fingerprint [0-9a-f]{8}/m);
    expect(run.result.stdout).toMatch(/^✓ M2M key_id kid-m2m: accepted by PDND$/m);
    expect(run.result.stdout).toMatch(/^✓ M2M next_key_id kid-m2m-next: accepted by PDND$/m);
    // Nothing secret in either output: keys, vouchers, assertions, audit JWS, DPoP proofs, the seed.
    new SecretSet().addPrivateKey(testKey().privatePem, 'client key').addFromSimulator(w.sim, [ES]).assertClean({ stdout: run.result.stdout, stderr: run.result.stderr });
    expect(w.sim.receivedDpopProofs().length).toBeGreaterThan(0);
  });
});

describe('signalhub-sync doctor names each broken piece with its fix', () => {
  it('key file: not a private key: exit 78, the key path named', async () => {
    const w = await brokenWorld();
    fs.writeFileSync(path.join(w.dir, 'm2m.pem'), 'not a key\n', { mode: 0o600 });
    const run = await doctor(w);
    expect(run.result.code).toBe(78);
    const check = failed(run, 'configuration');
    expect(check.fix).toContain('pdnd.m2m.private_key_file');
  });

  it('M2M voucher: PDND refuses the key: exit 77, the client-assertion hint', async () => {
    const w = await brokenWorld();
    w.sim.revokeClientKey(M2M_CLIENT, 'kid-m2m');
    const run = await doctor(w);
    expect(run.result.code).toBe(77);
    const check = failed(run, 'M2M voucher');
    expect(check.detail).toContain('TOKEN_REJECTED');
    expect(check.fix).toContain('client-assertion debugging tool');
    expect(run.report.checks.find((c) => c.check === 'hub /status')!.ok).toBeNull();
  });

  it('PDND unreachable: exit 69, token endpoint named', async () => {
    const w = await brokenWorld();
    const port = await closedPort();
    fs.writeFileSync(w.configFile, fs.readFileSync(w.configFile, 'utf8').replace('database = "state.db"', `database = "state.db"\n\n[pdnd]\ntoken_url = "http://127.0.0.1:${port}/token.oauth2"`));
    const run = await doctor(w);
    expect(run.result.code).toBe(69);
    expect(failed(run, 'clock').fix).toContain('pdnd.token_url');
    expect(failed(run, 'M2M voucher').detail).toContain('TOKEN_UNAVAILABLE');
  });

  it('clock: the token endpoint\'s Date is two minutes off: exit 78, synchronize the clock', async () => {
    const skewed = await startSimulator({ now: () => Date.now() + 120_000 });
    extra.push(skewed);
    const w = await brokenWorld();
    fs.writeFileSync(w.configFile, fs.readFileSync(w.configFile, 'utf8').replace('database = "state.db"', `database = "state.db"\n\n[pdnd]\ntoken_url = "${skewed.tokenUrl}"`));
    const run = await doctor(w);
    expect(run.result.code).toBe(78);
    const check = failed(run, 'clock');
    expect(check.detail).toMatch(/this host is 1[12]\d s behind/);
    expect(check.fix).toContain('synchronize the clock');
  });

  it('hub /status: the hub fails: exit 69', async () => {
    const w = await brokenWorld();
    w.sim.faults.inject('status', { kind: 'status', status: 503 });
    const run = await doctor(w);
    expect(run.result.code).toBe(69);
    expect(failed(run, 'hub /status').detail).toContain('503');
  });

  it('environment mismatch: a voucher of another environment\'s PDND, the hub answers 401 "Unable to find a signing key": exit 78, said so', async () => {
    const uat = await startSimulator({ assertionAudience: 'auth.simulator.local/client-assertion' });
    extra.push(uat);
    const w = await brokenWorld();
    uat.registerClient({ clientId: M2M_CLIENT, kind: 'm2m', keyId: 'kid-m2m', publicKey: testKey().publicKey, organizationId: ORG });
    fs.writeFileSync(w.configFile, fs.readFileSync(w.configFile, 'utf8').replace('database = "state.db"', `database = "state.db"\n\n[pdnd]\ntoken_url = "${uat.tokenUrl}"`));
    const run = await doctor(w);
    expect(run.result.code).toBe(78);
    const check = failed(run, 'hub /status');
    expect(check.detail).toContain('Unable to find a signing key');
    expect(check.fix).toContain('environment mismatch');
    expect(check.fix).toContain('UAT voucher against production');
  });

  it('pull: no active agreement for one e-service (403): exit 77, the back-office step', async () => {
    const w = await brokenWorld([
      { id: ES, name: 'residenze' },
      { id: ES2, name: 'documenti', organizationIds: ['another-org'] },
    ]);
    const run = await doctor(w);
    expect(run.result.code).toBe(77);
    expect(run.result.stdout).toMatch(/^✓ pull residenze: size=1 from cursor 0/m);
    const check = failed(run, 'pull documenti');
    expect(check.detail).toContain('HUB_FORBIDDEN');
    // The 403 classified from its problem body: the back-office step for that cause.
    expect(check.fix).toBe('activate the agreement and the purpose for this e-service in the PDND back office (both must be ACTIVE)');
  });

  it('e-service voucher: the e-service client\'s key is refused: exit 77, crypto info not run', async () => {
    const w = await brokenWorld();
    w.sim.revokeClientKey(ES_CLIENT, 'kid-es');
    const run = await doctor(w);
    expect(run.result.code).toBe(77);
    expect(failed(run, 'e-service voucher residenze').detail).toContain('TOKEN_REJECTED');
    expect(run.result.stdout).toMatch(/^- crypto info residenze: not checked: no e-service voucher$/m);
  });

  it('crypto info: a producer that requires DPoP, configured as bearer: exit 77, voucher_type named', async () => {
    const w = await brokenWorld([{ id: ES, name: 'wallet', requireDpop: true }]);
    const run = await doctor(w);
    expect(run.result.code).toBe(77);
    const check = failed(run, 'crypto info wallet');
    expect(check.detail).toContain('CRYPTO_UNAUTHORIZED');
    expect(check.fix).toContain('voucher_type');
  });

  it('crypto info: the producer publishes none (404): exit 78, check crypto_info_url', async () => {
    const w = await brokenWorld([{ id: ES, name: 'residenze', seed: null }]);
    const run = await doctor(w);
    expect(run.result.code).toBe(78);
    expect(failed(run, 'crypto info residenze').fix).toContain('crypto_info_url');
  });

  it('database: another connection holds the write lock: exit 69; nothing was written', async () => {
    const w = await brokenWorld();
    const init = await runCli(['--config', w.configFile, 'sync', '--once'], { cwd: w.dir });
    expect(init.code, init.stderr).toBe(0);
    const holder = new Database(path.join(w.dir, 'state.db'));
    holder.exec('BEGIN IMMEDIATE');
    try {
      const run = await doctor(w);
      expect(run.result.code).toBe(69);
      expect(failed(run, 'database').detail).toContain('write lock held');
    } finally {
      holder.exec('ROLLBACK');
      holder.close();
    }
  });

  it('database: its folder does not exist and cannot be created: exit 77', async () => {
    const w = await brokenWorld();
    fs.writeFileSync(path.join(w.dir, 'not-a-folder'), '');
    fs.writeFileSync(w.configFile, fs.readFileSync(w.configFile, 'utf8').replace('database = "state.db"', 'database = "not-a-folder/state.db"'));
    const run = await doctor(w);
    expect(run.result.code).toBe(77);
    expect(failed(run, 'database').detail).toContain('is not a folder');
    expect(fs.statSync(path.join(w.dir, 'not-a-folder')).isFile()).toBe(true);
  });

  it('sinks: a webhook nobody listens on (exit 69) and an exec program that does not exist (78), each named', async () => {
    const port = await closedPort();
    const w = await brokenWorld(undefined, `[[sinks]]\nname = "crm"\ntype = "webhook"\nurl = "http://127.0.0.1:${port}/hook"\n\n[[sinks]]\nname = "script"\ntype = "exec"\ncommand = ["/nonexistent/deliver.sh"]\n\n[[sinks]]\nname = "archive"\ntype = "file"\npath = "out/events.ndjson"\n`);
    const run = await doctor(w);
    expect(run.result.code).toBe(69);
    expect(failed(run, 'sink crm').detail).toContain('ECONNREFUSED');
    expect(failed(run, 'sink script').fix).toContain('install the program');
    expect(run.result.stdout).toMatch(/^✓ sink archive: file: .* is writable/m);
    expect(fs.existsSync(path.join(w.dir, 'out'))).toBe(false);
  });

  it('both keys: next_key_id not registered on the client yet: exit 77, upload it', async () => {
    const w = await brokenWorld();
    fs.writeFileSync(path.join(w.dir, 'm2m-next.pem'), testKey().privatePem, { mode: 0o600 });
    fs.writeFileSync(w.configFile, fs.readFileSync(w.configFile, 'utf8').replace('private_key_file = "m2m.pem"', 'private_key_file = "m2m.pem"\nnext_key_id = "kid-not-uploaded"\nnext_private_key_file = "m2m-next.pem"'));
    const run = await doctor(w);
    expect(run.result.code).toBe(77);
    expect(run.result.stdout).toMatch(/^✓ M2M voucher:/m);
    expect(failed(run, 'M2M next_key_id kid-not-uploaded').fix).toContain('upload its public key');
  });
});

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('signalhub-sync doctor changes nothing', () => {
  it('on a world never synced, the database is not created', async () => {
    const w = await brokenWorld();
    const run = await doctor(w);
    expect(run.result.code, run.result.stdout).toBe(0);
    expect(run.result.stdout).toMatch(/^✓ database: .* will be created: its folder is writable$/m);
    expect(fs.existsSync(path.join(w.dir, 'state.db'))).toBe(false);
  });
});
