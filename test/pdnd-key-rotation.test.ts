import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { ConfigError } from '../src/errors.js';
import { VoucherProvider } from '../src/pdnd/vouchers.js';
import { startSimulator, type Simulator } from '../src/simulator/index.js';
import { failure } from './helpers/errors.js';
import { tempDir } from './helpers/fs.js';
import { createWorld, fiscalCode, M2M_CLIENT, ORG, type World } from './helpers/world.js';
import { FAST_RETRY, captureLogger, pdndConfig } from './pdnd-fixtures.js';
import { fileEventIds, startRun, storeSubjects } from './run-helpers.js';

/** Key rotation without a restart: a second key per client, tried when PDND refuses the first; SIGHUP applies a promoted key. */

let sim: Simulator | undefined;
let world: World | undefined;
afterEach(async () => {
  await sim?.close();
  await world?.close();
  sim = undefined;
  world = undefined;
});

const CLIENT = '0d0d0d0d-0000-4000-8000-000000000001';

/** A fresh RSA key written 0600 as `name` in `dir`. */
function newKey(dir: string, name: string): { file: string; publicKey: KeyObject } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const file = path.join(dir, name);
  fs.writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return { file, publicKey };
}

describe('a client with next_key_id', () => {
  it('PDND refuses the first key: the second is tried, and used first from then on (one warning)', async () => {
    sim = await startSimulator({ voucherTtlSeconds: 600 });
    const dir = tempDir('shs-rot-');
    const old = newKey(dir, 'old.pem');
    const next = newKey(dir, 'next.pem');
    // Only the new key is registered: the operator already deleted the old one in the back office.
    sim.registerClient({ clientId: CLIENT, kind: 'm2m', keyId: 'kid-next', publicKey: next.publicKey, organizationId: ORG });
    const logs = captureLogger();
    const m2m = { clientId: CLIENT, keyId: 'kid-old', privateKeyFile: old.file, nextKey: { keyId: 'kid-next', privateKeyFile: next.file } };
    const provider = new VoucherProvider({ pdnd: pdndConfig(sim, m2m), retry: FAST_RETRY, logger: logs.logger });
    await provider.m2m();
    expect(sim.stats().responses.token).toEqual({ '200': 1, '400': 1 });
    expect(sim.stats().tokenRejections).toEqual(['kid is not a key of this client']);
    provider.clear();
    await provider.m2m();
    // The accepted key goes first: no second refusal.
    expect(sim.stats().responses.token).toEqual({ '200': 2, '400': 1 });
    const warnings = logs.text().split('\n').filter((l) => l.includes('accepted next_key_id'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('"refusedKeyId":"kid-old"');
  });

  it('both keys refused: TOKEN_REJECTED; an unavailable token endpoint does not move to the second key', async () => {
    sim = await startSimulator();
    const dir = tempDir('shs-rot-');
    const a = newKey(dir, 'a.pem');
    const b = newKey(dir, 'b.pem');
    sim.registerClient({ clientId: CLIENT, kind: 'm2m', keyId: 'kid-other', publicKey: a.publicKey, organizationId: ORG });
    const m2m = { clientId: CLIENT, keyId: 'kid-a', privateKeyFile: a.file, nextKey: { keyId: 'kid-b', privateKeyFile: b.file } };
    const provider = new VoucherProvider({ pdnd: pdndConfig(sim, m2m), retry: { retries: 0, minTimeoutMs: 1, maxTimeoutMs: 1 } });
    expect((await failure(provider.m2m())).code).toBe('TOKEN_REJECTED');
    expect(sim.stats().tokenRejections).toEqual(['kid is not a key of this client', 'kid is not a key of this client']);
    sim.registerClient({ clientId: CLIENT, kind: 'm2m', keyId: 'kid-a', publicKey: a.publicKey, organizationId: ORG });
    sim.faults.inject('token', { kind: 'status', status: 503, times: 1 });
    expect((await failure(provider.m2m())).code).toBe('TOKEN_UNAVAILABLE');
    expect(sim.stats().requests.token).toBe(3);
  });

  it('config: next_key_id needs next_private_key_file (and the other way round), named by key path', async () => {
    const dir = tempDir('shs-rot-');
    newKey(dir, 'k.pem');
    const file = path.join(dir, 'c.toml');
    fs.writeFileSync(file, `preset = "simulator"\n[pdnd.m2m]\nclient_id = "${CLIENT}"\nkey_id = "a"\nprivate_key_file = "k.pem"\nnext_key_id = "b"\n`);
    const err = await loadConfig(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems.map((p) => p.path)).toEqual(['pdnd.m2m.next_private_key_file']);
    fs.writeFileSync(file, `preset = "simulator"\n[pdnd.m2m]\nclient_id = "${CLIENT}"\nkey_id = "a"\nprivate_key_file = "k.pem"\nnext_key_id = "b"\nnext_private_key_file = "k.pem"\n`);
    expect((await loadConfig(file)).pdnd.m2m.nextKey).toEqual({ keyId: 'b', privateKeyFile: path.join(dir, 'k.pem') });
  });
});

describe('signalhub-sync run: key rotation without a restart', () => {
  it('falls over to next_key_id when PDND refuses the first key, and SIGHUP applies a new key', async () => {
    const ES = '71111111-1111-4111-8111-111111111111';
    world = await createWorld({ eservices: [{ id: ES, name: 'residenze' }], toml: '[hub]\npoll_interval_seconds = 1\n[[sinks]]\nname = "file"\ntype = "file"\npath = "events.ndjson"\n' });
    const w = world;
    const events = path.join(w.dir, 'events.ndjson');
    const second = newKey(w.dir, 'm2m-2.pem');
    const third = newKey(w.dir, 'm2m-3.pem');
    w.sim.registerClient({ clientId: M2M_CLIENT, kind: 'm2m', keyId: 'kid-m2m-2', publicKey: second.publicKey, organizationId: ORG });
    const original = fs.readFileSync(w.configFile, 'utf8');
    fs.writeFileSync(w.configFile, original.replace('private_key_file = "m2m.pem"', 'private_key_file = "m2m.pem"\nnext_key_id = "kid-m2m-2"\nnext_private_key_file = "m2m-2.pem"'));
    // The operator deleted the first key in the back office before updating the daemon.
    w.sim.revokeClientKey(M2M_CLIENT, 'kid-m2m');
    const key = fiscalCode(5);
    storeSubjects(w, [{ key, ref: 'r5' }]);
    const daemon = startRun(w);
    const first = w.sim.depositForSubject(ES, key, 'UPDATE');
    await daemon.until(() => fileEventIds(events).includes(`${ES}:${first}`), 'an event pulled with the second key');
    await daemon.waitForLog((l) => l.msg.includes('accepted next_key_id'), 'the rotation warning');

    // A new key, known only from the reloaded file; the second key is then revoked and every voucher expired.
    w.sim.registerClient({ clientId: M2M_CLIENT, kind: 'm2m', keyId: 'kid-m2m-3', publicKey: third.publicKey, organizationId: ORG });
    fs.writeFileSync(w.configFile, original.replace('key_id = "kid-m2m"\nprivate_key_file = "m2m.pem"', 'key_id = "kid-m2m-3"\nprivate_key_file = "m2m-3.pem"'));
    daemon.child.kill('SIGHUP');
    const reloaded = await daemon.waitForLog((l) => l.msg === 'configuration reloaded', 'the reload');
    expect(daemon.logs().some((l) => l.msg.startsWith('configuration changes that take effect only after a restart'))).toBe(false);
    expect(reloaded.level).toBe('info');
    w.sim.revokeClientKey(M2M_CLIENT, 'kid-m2m-2');
    w.sim.faults.inject('pull', { kind: 'expireVouchers', times: 1 });
    const later = w.sim.depositForSubject(ES, key, 'DELETE');
    await daemon.until(() => fileEventIds(events).includes(`${ES}:${later}`), 'an event pulled with the key the reload brought');
    expect(w.sim.stats().tokenRejections.filter((r) => r !== 'kid is not a key of this client')).toEqual([]);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
