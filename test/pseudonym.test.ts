import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { IDENTITY_ALGORITHM, PseudonymHasher, decodeObjectId, digestLength, normalizeSubjectKey, type PseudonymEncoding } from '../src/crypto/pseudonym.js';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';

interface Vector {
  subject: string;
  seed: string;
  cryptoHashFunction: string;
  template: string;
  encoding: PseudonymEncoding;
  pseudonym: string;
}
const vectors = (JSON.parse(fs.readFileSync(path.join(import.meta.dirname, 'fixtures/pseudonyms.json'), 'utf8')) as { vectors: Vector[] }).vectors;

function seedFile(content: string): string {
  const file = path.join(tempDir('shs-pseudo-'), 'seed');
  fs.writeFileSync(file, content, { mode: 0o600 });
  return file;
}

describe('pseudonym vectors', () => {
  it('has vectors to check', () => {
    expect(vectors.length).toBeGreaterThanOrEqual(6);
  });

  it.each(vectors.map((v, i) => [i, v] as const))('vector %i through PseudonymHasher', (_i, v) => {
    const hasher = new PseudonymHasher({ template: v.template, encoding: v.encoding }, v.seed, v.cryptoHashFunction);
    expect(hasher.pseudonym(normalizeSubjectKey(v.subject))).toBe(v.pseudonym);
  });

  it.each(vectors.map((v, i) => [i, v] as const))('vector %i through the CLI', async (_i, v) => {
    const res = await runCli(['pseudonym', '--algorithm', v.cryptoHashFunction, '--seed-file', seedFile(v.seed + '\n'), '--template', v.template, '--encoding', v.encoding], { input: v.subject + '\n' });
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toBe(v.pseudonym + '\n');
  });
});

describe('PseudonymHasher template expansion', () => {
  const SUBJECT = 'RSSMRA80A01H501Z';
  /** The SPEC §7 definition, spelled out independently of the hasher's split-once shortcut. */
  const reference = (text: string, nodeAlg: string, outputLength?: number): string =>
    createHash(nodeAlg, outputLength === undefined ? undefined : { outputLength }).update(text, 'utf8').digest('base64');

  it('uses a seed holding replacement patterns ($&, $$, $\', ${algorithm}) exactly as received', () => {
    for (const seed of ['a$&b', 'x$$y', "p$'q$`r", 's${algorithm}t', 'u${seed}v${subject}w']) {
      const hasher = new PseudonymHasher({ template: '${subject}${seed}', encoding: 'base64' }, seed, 'SHA-256');
      expect(hasher.pseudonym(SUBJECT), seed).toBe(reference(SUBJECT + seed, 'sha256'));
    }
  });

  it.each([
    ['SHA-256', 'sha256', undefined],
    ['SHA-384', 'sha384', undefined],
    ['SHA-512', 'sha512', undefined],
    ['SHA-512/256', 'sha512-256', undefined],
    ['SHA3-256', 'sha3-256', undefined],
    ['SHA3-384', 'sha3-384', undefined],
    ['SHA3-512', 'sha3-512', undefined],
    ['SHAKE128', 'shake128', 32],
    ['SHAKE256', 'shake256', 64],
  ] as const)('%s hashes with %s (XOF output %s bytes, SPEC §6) and digestLength agrees', (name, nodeAlg, outputLength) => {
    const hasher = new PseudonymHasher({ template: '${subject}${seed}', encoding: 'base64' }, 'seed', name);
    const expected = reference(`${SUBJECT}seed`, nodeAlg, outputLength);
    expect(hasher.pseudonym(SUBJECT)).toBe(expected);
    expect(digestLength(name)).toBe(Buffer.from(expected, 'base64').length);
  });

  it('expands every placeholder, also with ${subject} more than once and an XOF', () => {
    const seed = 'Xzzh3pQqLp+VK7gG9NwR6w==';
    const template = '${subject}|${algorithm}|${seed}|${subject}|${seed}';
    for (const [name, nodeAlg, outputLength] of [['SHA-256', 'sha256', undefined], ['shake256', 'shake256', 64]] as const) {
      const hasher = new PseudonymHasher({ template, encoding: 'base64' }, seed, name);
      expect(hasher.pseudonym(SUBJECT)).toBe(reference(`${SUBJECT}|${name}|${seed}|${SUBJECT}|${seed}`, nodeAlg, outputLength));
    }
  });
});

describe('identity recipe (SPEC §8b: objectId is the subject key in clear)', () => {
  const KEY = 'RSSMRA80A01H501Z';
  const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest();

  it('hashes the normalized key with IDENTITY_ALGORITHM, ignoring seed, algorithm and template', () => {
    const a = new PseudonymHasher({ template: '${subject}${seed}', encoding: 'identity' }, 'seed-a', 'SHA-512');
    const b = new PseudonymHasher({ template: 'no placeholder at all', encoding: 'identity' }, '', 'not-an-algorithm');
    expect(a.digest(KEY)).toEqual(sha256(KEY));
    expect(b.digest(KEY)).toEqual(sha256(KEY));
    expect(a.digest(` ${KEY.toLowerCase()}\t`)).toEqual(sha256(KEY));
    expect(a.algorithm.canonical).toBe(IDENTITY_ALGORITHM);
    expect(digestLength(IDENTITY_ALGORITHM)).toBe(32);
    expect(a.pseudonym(' rssmra80a01h501z ')).toBe(KEY);
    expect(a.objectIdOf(KEY, a.digest(KEY))).toBe(KEY);
  });

  it('decodeObjectId gives the same digest as the hasher for the key as any producer spells it', () => {
    const hasher = new PseudonymHasher({ template: '${subject}${seed}', encoding: 'identity' }, 'ignored', 'SHA-256');
    const length = digestLength(IDENTITY_ALGORITHM);
    for (const objectId of [KEY, KEY.toLowerCase(), `  ${KEY} `, '01234567890']) {
      expect(decodeObjectId(objectId, 'identity', length), objectId).toEqual(hasher.digest(normalizeSubjectKey(objectId)));
    }
    expect(decodeObjectId('FLZCRN65R02E202N', 'identity', length)).not.toEqual(hasher.digest(KEY));
  });

  it('decodeObjectId refuses a blank objectId and a length other than the identity hash\'s', () => {
    expect(decodeObjectId('', 'identity', 32)).toBeNull();
    expect(decodeObjectId('   ', 'identity', 32)).toBeNull();
    expect(decodeObjectId(KEY, 'identity', 64)).toBeNull();
  });

  it('a digest encoding still never matches a key in clear', () => {
    expect(decodeObjectId(KEY, 'base64', 32)).toBeNull();
  });
});

describe('signalhub-sync pseudonym', () => {
  const GOVWAY = 'LAa/aPrxlEvOKacO1KFhEJDVj+UqHXg30Ksb7kE1+z8=';
  const SEED = 'Xzzh3pQqLp+VK7gG9NwR6w==';

  it('reproduces the GovWay documentation example with defaults and no config file', async () => {
    const res = await runCli(['pseudonym', '--algorithm', 'SHA-256', '--seed-file', seedFile(SEED)], {
      input: 'RSSMRA80A01H501Z\n',
      env: { SIGNALHUB_SYNC_CONFIG: '/nonexistent/config.toml' },
    });
    expect(res.code).toBe(0);
    expect(res.stdout).toBe(GOVWAY + '\n');
  });

  it('drops exactly one trailing newline (LF or CRLF) from the seed file', async () => {
    for (const content of [SEED + '\n', SEED + '\r\n', SEED]) {
      const res = await runCli(['pseudonym', '--algorithm', 'SHA-256', '--seed-file', seedFile(content)], { input: 'RSSMRA80A01H501Z\n' });
      expect(res.stdout).toBe(GOVWAY + '\n');
    }
    // A second newline belongs to the seed: the pseudonym must change.
    const twice = await runCli(['pseudonym', '--algorithm', 'SHA-256', '--seed-file', seedFile(SEED + '\n\n')], { input: 'RSSMRA80A01H501Z\n' });
    expect(twice.code).toBe(0);
    const expected = new PseudonymHasher({ template: '${subject}${seed}', encoding: 'base64' }, SEED + '\n', 'SHA-256').pseudonym('RSSMRA80A01H501Z');
    expect(twice.stdout).toBe(expected + '\n');
    expect(expected).not.toBe(GOVWAY);
  });

  it('normalizes keys and keeps one output line per input line, in order', async () => {
    const hasher = new PseudonymHasher({ template: '${subject}${seed}', encoding: 'hex' }, SEED, 'sha256');
    const keys = ['RSSMRA80A01H501Z', 'FLZCRN65R02E202N', '01234567890'];
    const input = `  rssmra80a01h501z \r\n\nFLZCRN65R02E202N\n01234567890`;
    const res = await runCli(['pseudonym', '--algorithm', 'sha256', '--encoding', 'hex', '--seed-file', seedFile(SEED)], { input });
    expect(res.code).toBe(0);
    expect(res.stdout.split('\n')).toEqual([hasher.pseudonym(keys[0]!), '', hasher.pseudonym(keys[1]!), hasher.pseudonym(keys[2]!), '']);
  });

  it('streams many keys', async () => {
    const hasher = new PseudonymHasher({ template: '${subject}${seed}', encoding: 'base64' }, SEED, 'SHA-256');
    const keys = Array.from({ length: 20_000 }, (_, i) => `K${String(i).padStart(15, '0')}`);
    const res = await runCli(['pseudonym', '--algorithm', 'SHA-256', '--seed-file', seedFile(SEED)], { input: keys.join('\n') + '\n' });
    expect(res.code).toBe(0);
    const lines = res.stdout.split('\n');
    expect(lines).toHaveLength(keys.length + 1);
    expect(lines[0]).toBe(hasher.pseudonym(keys[0]!));
    expect(lines[keys.length - 1]).toBe(hasher.pseudonym(keys[keys.length - 1]!));
  });

  it('rejects an unknown algorithm with exit 64, naming the option and not the seed', async () => {
    const res = await runCli(['pseudonym', '--algorithm', 'MD5', '--seed-file', seedFile(SEED)], { input: 'RSSMRA80A01H501Z\n' });
    expect(res.code).toBe(64);
    expect(res.stdout).toBe('');
    expect(res.stderr).toContain('--algorithm');
    expect(res.stderr).toContain('MD5');
    expect(res.stderr).not.toContain(SEED);
    expect(res.stderr).not.toContain('RSSMRA80A01H501Z');
  });

  it('rejects an unknown encoding and a template without ${subject} with exit 64', async () => {
    const enc = await runCli(['pseudonym', '--algorithm', 'SHA-256', '--encoding', 'base32', '--seed-file', seedFile(SEED)], { input: '' });
    expect(enc.code).toBe(64);
    expect(enc.stderr).toContain('--encoding');
    const tpl = await runCli(['pseudonym', '--algorithm', 'SHA-256', '--template', '${seed}', '--seed-file', seedFile(SEED)], { input: '' });
    expect(tpl.code).toBe(64);
    expect(tpl.stderr).toContain('${subject}');
    expect(tpl.stderr).not.toContain(SEED);
  });

  it('needs a seed file: missing is 66, empty is 65, and there is no --seed option', async () => {
    const missing = await runCli(['pseudonym', '--algorithm', 'SHA-256', '--seed-file', '/nonexistent/seed'], { input: '' });
    expect(missing.code).toBe(66);
    expect(missing.stderr).toContain('/nonexistent/seed');
    const empty = await runCli(['pseudonym', '--algorithm', 'SHA-256', '--seed-file', seedFile('\n')], { input: '' });
    expect(empty.code).toBe(65);
    const noFile = await runCli(['pseudonym', '--algorithm', 'SHA-256'], { input: '' });
    expect(noFile.code).toBe(64);
    const asArg = await runCli(['pseudonym', '--algorithm', 'SHA-256', '--seed', SEED], { input: '' });
    expect(asArg.code).toBe(64);
  });

  it('with --encoding identity prints the normalized keys and needs no seed or algorithm', async () => {
    const res = await runCli(['pseudonym', '--encoding', 'identity'], { input: ' rssmra80a01h501z \r\n\n01234567890\n' });
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toBe('RSSMRA80A01H501Z\n\n01234567890\n');
  });

  it('rejects a seed or an algorithm with --encoding identity (exit 64), and still needs --algorithm otherwise', async () => {
    const withSeed = await runCli(['pseudonym', '--encoding', 'identity', '--seed-file', seedFile(SEED)], { input: '' });
    expect(withSeed.code).toBe(64);
    expect(withSeed.stderr).toContain('--encoding identity');
    expect(withSeed.stderr).not.toContain(SEED);
    const withAlgorithm = await runCli(['pseudonym', '--encoding', 'identity', '--algorithm', 'SHA-256'], { input: '' });
    expect(withAlgorithm.code).toBe(64);
    const noAlgorithm = await runCli(['pseudonym', '--seed-file', seedFile(SEED)], { input: 'RSSMRA80A01H501Z\n' });
    expect(noAlgorithm.code).toBe(64);
    expect(noAlgorithm.stderr).toContain('--algorithm');
    expect(noAlgorithm.stdout).toBe('');
  });
});
