import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/types.js';
import { startSimulator, type Simulator, type SimulatorOptions, type EServiceRegistration } from '../../src/simulator/index.js';
import { fiscalCodeCheckChar } from '../../src/subjects/fiscal-code.js';
import { testKey, writeKeyFile } from './keys.js';
import { tempDir } from './fs.js';

export const ORG = 'org-consumer-1';
export const M2M_CLIENT = '0c0c0c0c-0000-4000-8000-000000000001';
export const ES_CLIENT = '0c0c0c0c-0000-4000-8000-000000000002';

export interface WorldEService extends Partial<EServiceRegistration> {
  id: string;
  name: string;
  cryptoHistory?: boolean;
  /** Extra TOML lines inside this [[eservices]] table. */
  toml?: string;
}

export interface World {
  dir: string;
  sim: Simulator;
  configFile: string;
  config: Config;
  close(): Promise<void>;
}

/**
 * A consumer and its remote parties: a real simulator on loopback with the consumer's PDND
 * clients registered (one RSA key), and a config file (simulator preset) pointing at it.
 */
export async function createWorld(opts: { eservices: WorldEService[]; toml?: string; simulator?: SimulatorOptions; dir?: string }): Promise<World> {
  const dir = opts.dir ?? tempDir('shs-world-');
  const sim = await startSimulator(opts.simulator ?? {});
  const { publicKey } = testKey();
  writeKeyFile(dir, 'm2m.pem');
  writeKeyFile(dir, 'eservice.pem');
  sim.registerClient({ clientId: M2M_CLIENT, kind: 'm2m', keyId: 'kid-m2m', publicKey, organizationId: ORG });
  sim.registerClient({
    clientId: ES_CLIENT,
    kind: 'eservice',
    keyId: 'kid-es',
    publicKey,
    organizationId: ORG,
    purposes: opts.eservices.map((e) => ({ id: purposeOf(e.id), eserviceId: e.id })),
  });
  for (const e of opts.eservices) {
    const { name: _n, cryptoHistory: _c, toml: _t, ...reg } = e;
    sim.addEService(reg);
  }
  const configFile = path.join(dir, 'config.toml');
  const esToml = opts.eservices
    .map((e) => `[[eservices]]\nid = "${e.id}"\nname = "${e.name}"\npurpose_id = "${purposeOf(e.id)}"\ncrypto_history = ${e.cryptoHistory ? 'true' : 'false'}\n${e.toml ?? ''}\n`)
    .join('\n');
  fs.writeFileSync(
    configFile,
    `preset = "simulator"
simulator_url = "${sim.url}"
database = "state.db"

[log]
level = "warn"

[pdnd.m2m]
client_id = "${M2M_CLIENT}"
key_id = "kid-m2m"
private_key_file = "m2m.pem"

[pdnd.eservice_client]
client_id = "${ES_CLIENT}"
key_id = "kid-es"
private_key_file = "eservice.pem"

${opts.toml ?? ''}

${esToml}`,
  );
  const config = await loadConfig(configFile);
  return { dir, sim, configFile, config, close: () => sim.close() };
}

/** A valid Italian fiscal code derived from n (distinct n give distinct codes). */
export function fiscalCode(n: number): string {
  const letters = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
  const l = (i: number) => letters[i % 26]!;
  const surname = l(n) + l(Math.floor(n / 26)) + l(Math.floor(n / 676));
  const name = l(Math.floor(n / 17576)) + l(Math.floor(n / 456976) + 3) + 'X';
  const year = String(n % 100).padStart(2, '0');
  const month = 'ABCDEHLMPRST'[Math.floor(n / 100) % 12]!;
  const day = String(1 + (Math.floor(n / 1200) % 28)).padStart(2, '0');
  const place = 'H501';
  const first15 = surname + name + year + month + day + place;
  return first15 + fiscalCodeCheckChar(first15);
}

/** A purpose id (uuid) derived from the e-service id. */
export function purposeOf(eserviceId: string): string {
  return `9${eserviceId.slice(1)}`;
}
