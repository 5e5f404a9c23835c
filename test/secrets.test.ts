import { createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SignJWT, importPKCS8 } from 'jose';
import { runCli, type CliResult } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { testKey, writeKeyFile } from './helpers/keys.js';
import { SecretSet, type SecretKind } from './helpers/secrets.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { legalPersonCode, omocode, withWrongCheck } from './fixtures/subjects-codes.js';

const ES1 = '31111111-1111-4111-8111-111111111111';
const SEED = 'Xzzh3pQqLp+VK7gG9NwR6w==';
const WEBHOOK_SECRET = 'whsec-0f1e2d3c4b5a69788796a5b4c3d2e1f0';

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

/** Every stream of a CLI run, named for the harness's report. */
function streams(name: string, result: CliResult): Record<string, string> {
  return { [`${name} stdout`]: result.stdout, [`${name} stderr`]: result.stderr };
}

/** The fixtures every test here holds: the client key, the webhook secret and the subjects. */
function fixtureSecrets(subjects: readonly string[]): SecretSet {
  const set = new SecretSet().addPrivateKey(testKey().privatePem, 'client key').addWebhookSecret(WEBHOOK_SECRET);
  subjects.forEach((key, i) => set.addSubjectKey(key, `subject ${i + 1}`));
  return set;
}

/** First 16 hex of SHA-256 of the DER SPKI public key, computed here independently of src/config/keys.ts. */
function expectedKeyFingerprint(): string {
  const spki = createPublicKey(testKey().privatePem).export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('hex').slice(0, 16);
}

describe('secrets harness: it catches what it must', () => {
  it('flags a planted private key in every form: PEM (PKCS#8 and PKCS#1), each PEM body line, DER in base64/base64url/hex, JWK d/p/q/dp/dq/qi', () => {
    const { privateKey, privatePem } = testKey();
    const set = new SecretSet().addPrivateKey(privatePem, 'client key');
    const forms = set.forms().filter((f) => f.kind === 'private-key');
    const pkcs8Lines = privatePem.split('\n').filter((l) => l.length >= 16 && !l.startsWith('-----'));
    expect(forms.filter((f) => f.form.startsWith('pem-pkcs8-line-')).length).toBe(pkcs8Lines.length);

    const pkcs1 = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
    const der = privateKey.export({ type: 'pkcs8', format: 'der' });
    const jwk = privateKey.export({ format: 'jwk' }) as Record<string, string>;
    const planted: [string, string][] = [
      ['pem-pkcs8', privatePem.trim()],
      ['pem-pkcs1', pkcs1.trim()],
      ...pkcs8Lines.map((line, i): [string, string] => [`pem-pkcs8-line-${i + 1}`, line]),
      ['der-pkcs8-base64', der.toString('base64')],
      ['der-pkcs8-base64url', der.toString('base64url')],
      ['der-pkcs8-hex', der.toString('hex')],
      ...['d', 'p', 'q', 'dp', 'dq', 'qi'].map((m): [string, string] => [`jwk-${m}`, jwk[m]!]),
    ];
    for (const [form, text] of planted) {
      // As a pino line would carry it: inside a JSON string, newlines escaped.
      const line = JSON.stringify({ level: 'error', msg: 'boom', detail: `before ${text} after` });
      const leaks = set.scan(line, form);
      expect(leaks.length, `form ${form}`).toBeGreaterThan(0);
      expect(leaks.every((l) => l.kind === 'private-key')).toBe(true);
      // A whole PEM inside JSON has its newlines escaped: it is still caught through its lines.
      if (!form.startsWith('pem-pkcs')) expect(leaks.map((l) => l.form)).toContain(form);
    }
  });

  it('flags planted seeds, vouchers, client assertions, webhook secrets and fiscal codes in each form, with kind, offset and fingerprint', async () => {
    const key = await importPKCS8(testKey().privatePem, 'RS256');
    const voucher = await new SignJWT({ purposeId: 'p' }).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt' }).setIssuedAt().sign(key);
    const assertion = await new SignJWT({ jti: 'j' }).setProtectedHeader({ alg: 'RS256', kid: 'k', typ: 'JWT' }).setIssuedAt().sign(key);
    const hexSeed = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
    const code = fiscalCode(4242);
    const set = new SecretSet().addSeed(SEED).addSeed(hexSeed, 'hex seed').addVoucher(voucher).addClientAssertion(assertion).addWebhookSecret(WEBHOOK_SECRET).addSubjectKey(code);

    const seedBytes = Buffer.from(SEED, 'base64');
    const cases: [SecretKind, string, string][] = [
      ['seed', 'raw', SEED],
      ['seed', 'utf8-hex', Buffer.from(SEED).toString('hex')],
      ['seed', 'utf8-base64', Buffer.from(SEED).toString('base64')],
      ['seed', 'base64-decoded-hex', seedBytes.toString('hex')],
      ['seed', 'base64-decoded-base64url', seedBytes.toString('base64url')],
      ['seed', 'raw', hexSeed],
      ['seed', 'hex-decoded-base64', Buffer.from(hexSeed, 'hex').toString('base64')],
      ['voucher', 'jwt', voucher],
      ['voucher', 'jwt-signature', voucher.split('.')[2]!],
      ['client-assertion', 'jwt', assertion],
      ['client-assertion', 'jwt-signature', assertion.split('.')[2]!],
      ['webhook-secret', 'raw', WEBHOOK_SECRET],
      ['webhook-secret', 'utf8-hex', Buffer.from(WEBHOOK_SECRET).toString('hex')],
      ['webhook-secret', 'utf8-base64', Buffer.from(WEBHOOK_SECRET).toString('base64')],
      ['subject-key', 'upper', code],
      ['subject-key', 'lower', code.toLowerCase()],
    ];
    for (const [kind, form, text] of cases) {
      const line = `{"level":"debug","msg":"request","authorization":"Bearer ${text}"}\n`;
      const leaks = set.scan(`first line\n${line}`, 'captured');
      const leak = leaks.find((l) => l.form === form && l.kind === kind);
      expect(leak, `${kind} ${form}`).toBeDefined();
      expect(leak!.offset).toBe(`first line\n${line}`.indexOf(text));
      expect(leak!.line).toBe(2);
      expect(leak!.fingerprint).toBe(createHash('sha256').update(text).digest('hex').slice(0, 8));
      // The report names the leak without repeating it, nor any other secret before it.
      let report = '';
      try {
        set.assertClean({ captured: `first line\n${line}` });
      } catch (err) {
        report = (err as Error).message;
      }
      expect(report).toContain(`${kind} (${form}`);
      expect(set.scan(report)).toEqual([]);
      expect(report).not.toContain(text);
    }
  });

  it('finds nothing in output that holds only fingerprints, pseudonyms, refs and public identifiers', () => {
    const set = fixtureSecrets([fiscalCode(1), fiscalCode(2)]).addSeed(SEED);
    const clean = [
      JSON.stringify({ level: 'info', msg: 'crypto info fetched', seedFingerprint: createHash('sha256').update(SEED).digest('hex').slice(0, 8), eservice: ES1 }),
      JSON.stringify({ level: 'info', msg: 'event', objectId: 'LAa/aPrxlEvOKacO1KFhEJDVj+UqHXg30Ksb7kE1+z8=', subjectRef: 'PRAT-2024-0042' }),
      `key fingerprint ${expectedKeyFingerprint()}`,
      '-----BEGIN PRIVATE KEY-----', // the PEM armour alone is no secret
    ].join('\n');
    expect(set.scan(clean)).toEqual([]);
    expect(() => set.assertClean({ clean })).not.toThrow();
  });

  it('refuses secrets too short to scan for without false alarms', () => {
    expect(() => new SecretSet().addSeed('abc')).toThrow(/too short/);
  });
});

/** A simulator-preset config at trace level in `dir` (key file client.pem), with the values error-path tests vary. */
function baseConfig(dir: string, overrides: { m2mKey?: string; tokenUrl?: string; cryptoInfoUrl?: string; sink?: string } = {}): string {
  const file = path.join(dir, 'config.toml');
  fs.writeFileSync(
    file,
    `preset = "simulator"
database = "state.db"

[log]
level = "trace"
${overrides.tokenUrl !== undefined ? `\n[pdnd]\ntoken_url = ${JSON.stringify(overrides.tokenUrl)}\n` : ''}
[pdnd.m2m]
client_id = "00000000-0000-4000-8000-000000000001"
key_id = "m2m-kid"
private_key_file = ${JSON.stringify(overrides.m2mKey ?? 'client.pem')}

[pdnd.eservice_client]
client_id = "00000000-0000-4000-8000-000000000002"
key_id = "eservice-kid"
private_key_file = "client.pem"

[[eservices]]
id = "${ES1}"
name = "residences"
purpose_id = "00000000-0000-4000-8000-0000000000f1"
${overrides.cryptoInfoUrl !== undefined ? `crypto_info_url = ${JSON.stringify(overrides.cryptoInfoUrl)}\n` : ''}${overrides.sink ?? ''}
`,
  );
  return file;
}

describe('secrets: subjects import never echoes a subject key', () => {
  function subjectsSetup(): { dir: string; config: string; cli: (args: string[], input?: string) => Promise<CliResult> } {
    const dir = tempDir('shs-secrets-subjects-');
    writeKeyFile(dir, 'client.pem');
    const config = baseConfig(dir);
    return { dir, config, cli: (args, input) => runCli(['--config', config, ...args], { input, cwd: dir }) };
  }

  it('CSV and NDJSON imports with bad rows, --dry-run and --strict: no valid or invalid key, in any case, in stdout or stderr', async () => {
    const s = subjectsSetup();
    const good = [fiscalCode(11), fiscalCode(12), legalPersonCode(4243)];
    const wrongCheck = withWrongCheck(fiscalCode(13));
    const omo = omocode(fiscalCode(14), 3);
    const tooLong = `${fiscalCode(15)}X`;
    const wrongVat = `${legalPersonCode(4244).slice(0, 10)}${(Number(legalPersonCode(4244).slice(10)) + 1) % 10}`;
    // Invalid codes in rejected rows are personal data too: the harness looks for them as well.
    const set = fixtureSecrets([...good, wrongCheck, omo, tooLong, wrongVat, fiscalCode(16)]);

    const csv = path.join(s.dir, 'subjects.csv');
    fs.writeFileSync(
      csv,
      [
        'key,ref,eservices',
        `${good[0]},ok-1,`,
        `${wrongCheck.toLowerCase()},bad-check,`,
        `${omo},omocode,residences`,
        `${tooLong},too-long,`,
        `${good[1]!.toLowerCase()},ok-2,`,
        `${good[0]},duplicate,`,
        `${wrongVat},bad-vat,`,
        `${good[2]},company,unknown-eservice`,
        // A key in the ref column and in the e-services column: a swapped export.
        `${fiscalCode(16)},${fiscalCode(16)},${fiscalCode(16)}`,
      ].join('\n') + '\n',
    );
    const ndjson = path.join(s.dir, 'subjects.ndjson');
    fs.writeFileSync(
      ndjson,
      [
        JSON.stringify({ key: good[0], ref: 'ok-1' }),
        JSON.stringify({ key: wrongCheck, ref: 'bad-check' }),
        `{"key": "${tooLong}", "ref": `, // broken JSON holding a key
        JSON.stringify({ [fiscalCode(16)]: 'x', key: omo }),
        JSON.stringify({ key: good[1], eservices: [fiscalCode(16)] }),
      ].join('\n') + '\n',
    );

    const runs: [string, CliResult][] = [
      ['csv dry-run', await s.cli(['subjects', 'import', csv, '--dry-run'])],
      ['csv --json dry-run', await s.cli(['subjects', 'import', csv, '--dry-run', '--json'])],
      ['csv --strict', await s.cli(['subjects', 'import', csv, '--strict'])],
      ['csv', await s.cli(['subjects', 'import', csv])],
      ['ndjson', await s.cli(['subjects', 'import', ndjson])],
      ['ndjson --json', await s.cli(['subjects', 'import', ndjson, '--json'])],
      ['stdin csv', await s.cli(['subjects', 'import', '-'], fs.readFileSync(csv, 'utf8'))],
      ['remove', await s.cli(['subjects', 'remove', good[0]!, wrongCheck])],
      ['count', await s.cli(['subjects', 'count'])],
    ];
    for (const [name, result] of runs) {
      // Each run did run: bad rows give 65, the removal and count 0.
      expect(result.code, `${name}: ${result.stderr}`).toBe(name === 'remove' || name === 'count' ? 0 : 65);
    }
    // The rejected rows were reported (by line and ref), and trace logging was on.
    const csvRun = runs.find(([n]) => n === 'csv')![1];
    expect(csvRun.stderr).toMatch(/line 3: .*\(ref bad-check\)/);
    expect(csvRun.stderr).toContain('"level":"info"');
    set.assertClean(Object.assign({}, ...runs.map(([name, result]) => streams(name, result))));
  });
});

describe('secrets: read-only commands and config check show fingerprints only', () => {
  it('status, status --json, config check, cursor show, events list, resync list, sinks list and pseudonym: fingerprints where keys or seeds are shown, no secret anywhere', async () => {
    const subjects = [fiscalCode(21), fiscalCode(22)];
    world = await createWorld({ eservices: [{ id: ES1, name: 'residenze', seed: SEED, includeSignalId: true }], toml: '[[sinks]]\nname = "file"\ntype = "file"\npath = "events.ndjson"\n' });
    fs.writeFileSync(world.configFile, fs.readFileSync(world.configFile, 'utf8').replace('level = "warn"', 'level = "trace"'));
    const cli = (args: string[], input?: string) => runCli(['--config', world!.configFile, ...args], { input, cwd: world!.dir });
    const csv = path.join(world.dir, 'subjects.csv');
    fs.writeFileSync(csv, `key,ref\n${subjects[0]},pratica-1\n${subjects[1]},pratica-2\n`);
    expect((await cli(['subjects', 'import', csv])).code).toBe(0);
    world.sim.depositForSubject(ES1, subjects[0]!, 'UPDATE', 'domicile');
    const rotation = world.sim.rotateSeed(ES1, 'Qm9ndXNTZWVkRm9yVGVzdHM9PQ==');
    world.sim.depositForSubject(ES1, subjects[1]!, 'CREATE', 'domicile');
    const sync = await cli(['sync', '--once']);
    expect(sync.code, sync.stderr).toBe(0);
    expect(rotation).toBeGreaterThan(1);

    const seedFile = path.join(world.dir, 'seed.txt');
    fs.writeFileSync(seedFile, `${SEED}\n`, { mode: 0o600 });
    const runs: [string, CliResult][] = [
      ['sync', sync],
      ['status', await cli(['status'])],
      ['status --json', await cli(['status', '--json'])],
      ['config check', await cli(['config', 'check'])],
      ['cursor show', await cli(['cursor', 'show'])],
      ['events list', await cli(['events', 'list'])],
      ['events list --json', await cli(['events', 'list', '--json'])],
      ['resync list', await cli(['resync', 'list', '--all'])],
      ['sinks list', await cli(['sinks', 'list'])],
      ['pseudonym', await runCli(['pseudonym', '--algorithm', 'SHA-256', '--seed-file', seedFile], { input: `${subjects[0]}\n${subjects[1]!.toLowerCase()}\n` })],
    ];
    for (const [name, result] of runs) expect(result.code, `${name}: ${result.stderr}`).toBe(0);
    const out = Object.fromEntries(runs);

    const set = fixtureSecrets(subjects).addFromSimulator(world.sim, [ES1]);
    expect(world.sim.seedHistory(ES1)).toEqual([SEED, 'Qm9ndXNTZWVkRm9yVGVzdHM9PQ==']);
    expect(world.sim.issuedVouchers().length).toBeGreaterThan(0);
    expect(world.sim.receivedAssertions().length).toBe(world.sim.issuedVouchers().length);
    // pseudonym's stdout is data (the pseudonyms), nothing else: its stderr and every other stream are scanned.
    const pseudonyms = out.pseudonym!.stdout.trim().split('\n');
    expect(pseudonyms).toEqual(subjects.map((k) => createHash('sha256').update(`${k}${SEED}`).digest('base64')));
    const scanned = Object.assign({}, ...runs.map(([name, result]) => streams(name, result)));
    set.assertClean(scanned);
    // The outbox and the file sink carry no subject key by default (events.include_subject_key = false).
    set.assertClean({ 'file sink': fs.readFileSync(path.join(world.dir, 'events.ndjson'), 'utf8') });
    // pratica-1's signal predates the first seed this consumer saw: a resync report stands for it.
    expect(out['events list --json']!.stdout).toContain('"subjectRef":"pratica-2"');
    expect(out['resync list']!.stdout).toContain('backlog-predates-seed');

    // Where keys and seeds are mentioned, they are fingerprints: seeds the first 8 hex of SHA-256.
    const currentFingerprint = createHash('sha256').update('Qm9ndXNTZWVkRm9yVGVzdHM9PQ==').digest('hex').slice(0, 8);
    expect(out.status!.stdout).toContain(currentFingerprint);
    expect(out['status --json']!.stdout).toContain(`"${currentFingerprint}"`);
    expect(out['config check']!.stdout).toContain(`key fingerprint ${expectedKeyFingerprint()}`);
  });
});

describe('secrets: error paths that might echo their input', () => {

  it('config check with a truncated key file, or key content pasted where a path belongs: exit 78, the problem named, the key never echoed', async () => {
    const dir = tempDir('shs-secrets-config-');
    writeKeyFile(dir, 'client.pem');
    const { privatePem } = testKey();
    const truncated = privatePem.slice(0, Math.floor(privatePem.length / 2));
    fs.writeFileSync(path.join(dir, 'truncated.pem'), truncated, { mode: 0o600 });
    // A second key that only ever appears pasted into the config.
    const pasted = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const set = fixtureSecrets([]).addPrivateKey(pasted, 'pasted key');
    // The truncated file's lines are the real key's lines: the set already holds them.
    expect(set.scan(truncated).length).toBeGreaterThan(0);

    const truncatedRun = await runCli(['--config', baseConfig(dir, { m2mKey: 'truncated.pem' }), 'config', 'check']);
    expect(truncatedRun.code).toBe(78);
    expect(truncatedRun.stderr).toContain('pdnd.m2m.private_key_file');
    expect(truncatedRun.stderr).toMatch(/not an unencrypted PEM private key/);

    const pastedRun = await runCli(['--config', baseConfig(dir, { m2mKey: pasted }), 'config', 'check']);
    expect(pastedRun.code).toBe(78);
    expect(pastedRun.stderr).toContain('pdnd.m2m.private_key_file');

    const pastedSync = await runCli(['--config', baseConfig(dir, { m2mKey: pasted }), 'sync', '--once']);
    expect(pastedSync.code).toBe(78);
    set.assertClean({ ...streams('truncated key', truncatedRun), ...streams('pasted key', pastedRun), ...streams('pasted key sync', pastedSync) });
  });

  it('a webhook secret pasted on one line where its file path belongs: exit 78 at sinks[0].secret_file, the value never echoed; a missing file with a file-like name is still named', async () => {
    const dir = tempDir('shs-secrets-oneline-');
    writeKeyFile(dir, 'client.pem');
    const pasted = 'whsec_4f1c9a7be2d86035a1f4c9e7';
    const set = fixtureSecrets([]).addWebhookSecret(pasted, 'pasted webhook secret');
    const sink = (secretFile: string) => `[[sinks]]\nname = "hook"\ntype = "webhook"\nurl = "https://hooks.example.it/signals"\nsecret_file = "${secretFile}"\n`;

    const pastedRun = await runCli(['--config', baseConfig(dir, { sink: sink(pasted) }), 'config', 'check']);
    expect(pastedRun.code).toBe(78);
    expect(pastedRun.stderr).toMatch(/sinks\[0\]\.secret_file: no such file in .*, and its 30-character name \(not shown\) does not look like a file name/);
    set.assertClean(streams('pasted secret', pastedRun));

    // A name that looks like a file is a file the operator meant: the message names it.
    const missing = await runCli(['--config', baseConfig(dir, { sink: sink('hook-secret.txt') }), 'config', 'check']);
    expect(missing.code).toBe(78);
    expect(missing.stderr).toContain(`file not found: ${path.join(dir, 'hook-secret.txt')}`);
  });

  it('a webhook URL with credentials, and a token in the query string of a webhook, token endpoint or crypto-info URL: refused or shown without the query, never echoed', async () => {
    const dir = tempDir('shs-secrets-urls-');
    writeKeyFile(dir, 'client.pem');
    const password = 'hunter2-webhook-password-7f3a';
    const queryToken = 'tok_9c8b7a6f5e4d3c2b1a0f';
    const set = fixtureSecrets([]).addToken(password, 'webhook url password').addToken(queryToken, 'query token');

    const credentials = await runCli(['--config', baseConfig(dir, { sink: `[[sinks]]\nname = "hook"\ntype = "webhook"\nurl = "https://receiver:${password}@hooks.example.it/signals"\n` }), 'config', 'check']);
    expect(credentials.code).toBe(78);
    expect(credentials.stderr).toMatch(/sinks\[0\]\.url: must not contain credentials/);

    // Accepted, but shown without its query string.
    const query = await runCli(['--config', baseConfig(dir, { sink: `[[sinks]]\nname = "hook"\ntype = "webhook"\nurl = "https://hooks.example.it/signals?access_token=${queryToken}"\n` }), 'config', 'check']);
    expect(query.code, query.stderr).toBe(0);
    expect(query.stdout).toContain('https://hooks.example.it/[path ');

    // A token endpoint with a token in its query: config check and a failing token request name it without the query.
    const tokenUrl = `http://127.0.0.1:9/token.oauth2?access_token=${queryToken}`;
    const check = await runCli(['--config', baseConfig(dir, { tokenUrl, cryptoInfoUrl: `https://producer.example.it/pseudonymization?access_token=${queryToken}` }), 'config', 'check']);
    expect(check.code, check.stderr).toBe(0);
    expect(check.stdout).toContain('crypto info https://producer.example.it/pseudonymization?…');
    const sync = await runCli(['--config', baseConfig(dir, { tokenUrl }), 'sync', '--once']);
    expect(sync.code).not.toBe(0);
    expect(sync.stderr).toContain('127.0.0.1:9/token.oauth2');
    set.assertClean({ ...streams('credentials', credentials), ...streams('query', query), ...streams('token url check', check), ...streams('token url sync', sync) });
  });
});
