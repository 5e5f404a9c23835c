import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export interface TestKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  privatePem: string;
}

let cached: TestKey | undefined;

/** An RSA key pair (generated once per worker: RSA generation is slow). */
export function testKey(): TestKey {
  if (!cached) {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    cached = { privateKey, publicKey, privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
  }
  return cached;
}

/** Writes the test private key as a PEM file (mode 0600) and returns its path. */
export function writeKeyFile(dir: string, name = 'client.pem'): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, testKey().privatePem, { mode: 0o600 });
  return file;
}
