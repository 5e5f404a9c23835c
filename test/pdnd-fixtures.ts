import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { AuditConfig, ClientConfig, EServiceConfig, PdndConfig } from '../src/config/types.js';
import { createLogger, type Logger } from '../src/log.js';
import { GOVWAY_RECIPE } from '../src/crypto/pseudonym.js';
import type { RetryPolicy } from '../src/pdnd/http.js';
import { VoucherProvider } from '../src/pdnd/vouchers.js';
import { startSimulator, type Simulator } from '../src/simulator/index.js';
import { testKey, writeKeyFile } from './helpers/keys.js';

/** Shared setup of the pdnd/crypto test files (not a test file itself). */

export const FAST_RETRY: RetryPolicy = { retries: 3, minTimeoutMs: 5, maxTimeoutMs: 20 };
export const ORG = 'org-consumer-1';

export function client(dir: string, clientId: string, keyId = `kid-${clientId}`): ClientConfig {
  const file = path.join(dir, `${clientId}.pem`);
  if (!fs.existsSync(file)) writeKeyFile(dir, `${clientId}.pem`);
  return { clientId, keyId, privateKeyFile: file };
}

export function pdndConfig(sim: { tokenUrl: string; assertionAudience: string }, m2m: ClientConfig, overrides: Partial<PdndConfig> = {}): PdndConfig {
  return {
    tokenUrl: sim.tokenUrl,
    assertionAudience: sim.assertionAudience,
    assertionTtlSeconds: 120,
    voucherRefreshMarginSeconds: 30,
    requestTimeoutMs: 5000,
    m2m,
    ...overrides,
  };
}

export function registerM2m(sim: Simulator, c: ClientConfig): void {
  sim.registerClient({ clientId: c.clientId, kind: 'm2m', keyId: c.keyId, publicKey: testKey().publicKey, organizationId: ORG });
}

export function registerEServiceClient(sim: Simulator, c: ClientConfig, purposes: string[]): void {
  sim.registerClient({ clientId: c.clientId, kind: 'eservice', keyId: c.keyId, publicKey: testKey().publicKey, organizationId: ORG, purposes });
}

export function eservice(sim: Simulator, id: string, c: ClientConfig, purposeId: string, audit?: AuditConfig): EServiceConfig {
  return {
    id,
    name: `es-${id.slice(0, 8)}`,
    client: c,
    purposeId,
    cryptoInfoUrl: sim.cryptoInfoUrl(id),
    cryptoHistory: false,
    recipe: GOVWAY_RECIPE,
    pollIntervalSeconds: 60,
    audit,
    voucherType: 'bearer',
  };
}

/**
 * For a whole test file: a simulator with one registered M2M client and a voucher provider for
 * it. The key lives in its own directory until `close()` (tempDir() would remove it after the
 * first test).
 */
export async function simulatorWithM2m(clientId: string): Promise<{ sim: Simulator; provider: VoucherProvider; close: () => Promise<void> }> {
  const sim = await startSimulator();
  const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'shs-m2m-'));
  const m2m = client(keyDir, clientId);
  registerM2m(sim, m2m);
  const provider = new VoucherProvider({ pdnd: pdndConfig(sim, m2m, { assertionTtlSeconds: 60 }) });
  return {
    sim,
    provider,
    close: async () => {
      await sim.close();
      fs.rmSync(keyDir, { recursive: true, force: true });
    },
  };
}

/** A logger at trace level whose lines are kept in memory, to assert what never gets logged. */
export function captureLogger(): { logger: Logger; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return { logger: createLogger({ level: 'trace', destination: stream }), text: () => chunks.join('') };
}

/** Distinctive lines of the test private key's PEM, which must never appear anywhere. */
export function privateKeyFragments(): string[] {
  const body = testKey()
    .privatePem.split('\n')
    .filter((l) => l && !l.startsWith('-----'));
  return [body[1]!, body[5]!, body[10]!];
}

export function pkcs1KeyFile(dir: string): string {
  const file = path.join(dir, 'pkcs1.pem');
  fs.writeFileSync(file, testKey().privateKey.export({ type: 'pkcs1', format: 'pem' }), { mode: 0o600 });
  return file;
}

export function ecKeyFile(dir: string): string {
  const file = path.join(dir, 'ec.pem');
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  fs.writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return file;
}
