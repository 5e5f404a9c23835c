import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { summarizeConfig } from '../src/config/summary.js';
import { tempDir } from './helpers/fs.js';
import { writeKeyFile } from './helpers/keys.js';
import { configDir, parseIn, problemLines, problemsOf, productionToml } from './config-helpers.js';

/** The config of SPEC §4b (voucher_type, pdnd.dpop_key_file) and of key rotation (next_key_id). */
const withPdnd = (pdnd: string, extra = '') => productionToml(extra).replace('[pdnd.m2m]', `[pdnd]\n${pdnd}\n\n[pdnd.m2m]`);

function keyFile(dir: string, name: string, type: 'ec' | 'ed25519', curve?: string): void {
  const { privateKey } = type === 'ec' ? generateKeyPairSync('ec', { namedCurve: curve! }) : generateKeyPairSync('ed25519');
  fs.writeFileSync(path.join(dir, name), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
}

describe('config: DPoP and key rotation', () => {
  it('voucher_type defaults to bearer; dpop and a dpop_key_file (EC P-256) are read, and the summary says so', () => {
    const dir = configDir(tempDir());
    keyFile(dir, 'dpop.pem', 'ec', 'P-256');
    const config = parseIn(dir, withPdnd('dpop_key_file = "dpop.pem"', 'voucher_type = "dpop"\n'));
    expect(config.eservices.map((e) => e.voucherType)).toEqual(['bearer', 'dpop']);
    expect(config.pdnd.dpopKeyFile).toBe(path.join(dir, 'dpop.pem'));
    const summary = summarizeConfig(config);
    expect(summary).toContain(`DPoP key: ${path.join(dir, 'dpop.pem')}`);
    expect(summary).toContain('audit off, DPoP voucher');
  });

  it('refuses an unknown voucher_type and a DPoP key of another kind, each by key path', () => {
    const dir = configDir(tempDir());
    keyFile(dir, 'ed.pem', 'ed25519');
    keyFile(dir, 'p384.pem', 'ec', 'P-384');
    expect(problemLines(problemsOf(dir, withPdnd('dpop_key_file = "ed.pem"', 'voucher_type = "DPoP-please"\n')))).toEqual([
      'pdnd.dpop_key_file: is a ed25519 key; DPoP needs RSA (RS256) or EC P-256 (ES256)',
      'eservices[1].voucher_type: must be one of "bearer", "dpop"',
    ]);
    expect(problemLines(problemsOf(dir, withPdnd('dpop_key_file = "p384.pem"')))).toEqual(['pdnd.dpop_key_file: is a ec secp384r1 key; DPoP needs RSA (RS256) or EC P-256 (ES256)']);
  });

  it('next_key_id of an e-service belongs with its own client; the summary lists the second key', () => {
    const dir = configDir(tempDir());
    writeKeyFile(dir, 'next.pem');
    expect(problemLines(problemsOf(dir, productionToml('next_key_id = "k2"\nnext_private_key_file = "next.pem"\n')))).toEqual([
      "eservices[1].next_key_id: belongs to the e-service's own client: set client_id, key_id and private_key_file too, or put next_key_id in [pdnd.eservice_client]",
    ]);
    const config = parseIn(dir, productionToml().replace('private_key_file = "eservice.pem"', 'private_key_file = "eservice.pem"\nnext_key_id = "kid-es-2"\nnext_private_key_file = "next.pem"'));
    expect(config.eservices[0]!.client.nextKey).toEqual({ keyId: 'kid-es-2', privateKeyFile: path.join(dir, 'next.pem') });
    expect(summarizeConfig(config)).toContain('next key id kid-es-2');
  });
});
