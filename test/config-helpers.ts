import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, type ConfigProblem } from '../src/errors.js';
import { parseConfigText } from '../src/config/load.js';
import { writeKeyFile } from './helpers/keys.js';

export const M2M_CLIENT = '11111111-1111-4111-8111-111111111111';
export const ES_CLIENT = '22222222-2222-4222-8222-222222222222';
export const ES1 = '33333333-3333-4333-8333-333333333333';
export const ES2 = '44444444-4444-4444-8444-444444444444';
export const PURPOSE1 = '55555555-5555-4555-8555-555555555555';
export const PURPOSE2 = '66666666-6666-4666-8666-666666666666';

/** A valid production config: keys m2m.pem and eservice.pem next to it. `extra` is appended. */
export function productionToml(extra = ''): string {
  return `preset = "production"
database = "state/shs.db"

[pdnd.m2m]
client_id = "${M2M_CLIENT}"
key_id = "kid-m2m"
private_key_file = "m2m.pem"

[pdnd.eservice_client]
client_id = "${ES_CLIENT}"
key_id = "kid-es"
private_key_file = "eservice.pem"

[[eservices]]
id = "${ES1}"
name = "residences"
purpose_id = "${PURPOSE1}"
crypto_info_url = "https://producer.example.it/pseudonymization"

[[eservices]]
id = "${ES2}"
name = "documents"
purpose_id = "${PURPOSE2}"
crypto_info_url = "https://producer2.example.it/pseudonymization"
${extra}`;
}

/** A folder with the two key files the configs above refer to. */
export function configDir(dir: string): string {
  writeKeyFile(dir, 'm2m.pem');
  writeKeyFile(dir, 'eservice.pem');
  return dir;
}

export function parseIn(dir: string, text: string, env: NodeJS.ProcessEnv = {}) {
  return parseConfigText(text, { file: path.join(dir, 'config.toml'), env });
}

/** The problems a config text produces (fails the test if it is valid). */
export function problemsOf(dir: string, text: string, env: NodeJS.ProcessEnv = {}): ConfigProblem[] {
  try {
    parseIn(dir, text, env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected the config to be invalid');
}

export function problemLines(problems: ConfigProblem[]): string[] {
  return problems.map((p) => `${p.path}: ${p.message}`);
}

export function writeConfig(dir: string, text: string): string {
  const file = path.join(dir, 'config.toml');
  fs.writeFileSync(file, text);
  return file;
}
