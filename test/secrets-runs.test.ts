import { createHmac, generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli, type CliResult } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { testKey } from './helpers/keys.js';
import { SecretSet } from './helpers/secrets.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { fileEventIds, startRun, storeSubjects } from './run-helpers.js';
import { DEFAULT_PRODUCER_AUDIENCE } from '../src/simulator/index.js';

/**
 * End-to-end runs at trace level, every stream captured and scanned by the secrets harness:
 * `sync --once` through seed rotations, a seed-history producer, the audit pattern and faults on
 * the way; the daemon delivering to a signed webhook and a file, reloading a bad config, stopping.
 */

const RES = '41111111-1111-4111-8111-111111111111';
const DOCS = '42222222-2222-4222-8222-222222222222';
const AUDIT = '43333333-3333-4333-8333-333333333333';
const WEBHOOK_SECRET = 'whsec-5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d';
const QUERY_TOKEN = 'tok_1f2e3d4c5b6a79880f1e2d3c';

let world: World | undefined;
const servers: http.Server[] = [];
afterEach(async () => {
  await world?.close();
  world = undefined;
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

function streams(name: string, result: CliResult): Record<string, string> {
  return { [`${name} stdout`]: result.stdout, [`${name} stderr`]: result.stderr };
}

/** The world's config at `[log] level = "trace"`. */
function atTraceLevel(w: World): void {
  fs.writeFileSync(w.configFile, fs.readFileSync(w.configFile, 'utf8').replace('level = "warn"', 'level = "trace"'));
}

function fixtureSecrets(subjects: readonly string[]): SecretSet {
  const set = new SecretSet().addPrivateKey(testKey().privatePem, 'client key').addWebhookSecret(WEBHOOK_SECRET).addToken(QUERY_TOKEN, 'webhook query token');
  subjects.forEach((key, i) => set.addSubjectKey(key, `subject ${i + 1}`));
  return set;
}

describe('secrets: sync --once end to end at trace level', () => {
  it('matches, SEEDUPDATEs, a crypto_history producer, the audit pattern, and token/hub/crypto faults (one body with a seed-like value in the wrong field): no secret in any output', async () => {
    world = await createWorld({
      eservices: [
        { id: RES, name: 'residenze', includeSignalId: true },
        { id: DOCS, name: 'documenti', cryptoHistory: true, historyDepth: 5 },
        {
          id: AUDIT,
          name: 'audit',
          includeSignalId: true,
          requireAudit: true,
          toml: `[eservices.audit]\naudience = "${DEFAULT_PRODUCER_AUDIENCE}"\n[eservices.audit.claims]\nuserID = "operatore-7"\nuserLocation = "sede-1"\nLoA = "LoA3"\n`,
        },
      ],
      toml: '[hub]\npage_size = 5\nmax_retries = 3\n',
    });
    atTraceLevel(world);
    const w = world;
    const cli = (args: string[]) => runCli(['--config', w.configFile, ...args], { cwd: w.dir });
    const mine = Array.from({ length: 6 }, (_, i) => fiscalCode(300 + i));
    const strangers = Array.from({ length: 6 }, (_, i) => fiscalCode(900 + i));
    const csv = path.join(w.dir, 'subjects.csv');
    fs.writeFileSync(csv, `key,ref\n${mine.map((k, i) => `${k},pratica-${i}`).join('\n')}\n`);
    const runs: [string, CliResult][] = [['import', await cli(['subjects', 'import', csv])]];
    expect(runs[0]![1].code).toBe(0);
    // A delegator's subjects (issue 14), and tenant values that are keys in the wrong place:
    // refused by line, never echoed.
    const delegated = Array.from({ length: 3 }, (_, i) => fiscalCode(400 + i));
    const tenantCsv = path.join(w.dir, 'tenant.csv');
    fs.writeFileSync(tenantCsv, `key,ref,tenant\n${delegated.map((k, i) => `${k},deleg-${i},c_a001`).join('\n')}\n${strangers[0]},x,${strangers[1]}\n`);
    runs.push(['import tenants', await cli(['subjects', 'import', tenantCsv])]);
    expect(runs.at(-1)![1].code).toBe(65);
    expect(runs.at(-1)![1].stderr).toContain('line 5: tenant is a personal fiscal code');
    runs.push(['import --tenant KEY', await cli(['subjects', 'import', '--tenant', strangers[2]!, tenantCsv])]);
    expect(runs.at(-1)![1].code).toBe(64);

    // Run 0 opens the initial epochs, so that every signal below has a knowable seed.
    runs.push(['sync 0', await cli(['sync', '--once'])]);
    expect(runs.at(-1)![1].code, runs.at(-1)![1].stderr).toBe(0);

    // Signals: matches and strangers on each e-service, rotations on two of them.
    const expected: string[] = [];
    const depositBoth = (es: string, round: number) => {
      for (let i = 0; i < 2; i++) {
        expected.push(`${es}:${w.sim.depositForSubject(es, mine[(round * 2 + i) % mine.length]!, 'UPDATE', 'domicile')}`);
        w.sim.depositForSubject(es, strangers[(round + i) % strangers.length]!, 'UPDATE', 'domicile');
      }
    };
    for (const es of [RES, DOCS, AUDIT]) depositBoth(es, 0);
    expected.push(`${RES}:${w.sim.depositForSubject(RES, delegated[0]!, 'UPDATE', 'domicile')}:tenant:c_a001`);
    w.sim.rotateSeed(RES);
    depositBoth(RES, 1);

    // Run 1 through a refused token, hub 500s and a crypto 500 (on the fetch after the SEEDUPDATE).
    w.sim.faults.inject('token', { kind: 'status', status: 401, times: 1 });
    w.sim.faults.inject('pull', { kind: 'status', status: 500, times: 2 });
    w.sim.faults.inject('crypto', { kind: 'status', status: 500, times: 1 });
    runs.push(['sync 1 (token 401, hub and crypto 500)', await cli(['sync', '--once'])]);
    // A refused token fails whichever e-service asked first: catch up before the next rotations.
    runs.push(['sync 1b', await cli(['sync', '--once'])]);
    expect(runs.at(-1)![1].code, runs.at(-1)![1].stderr).toBe(0);

    w.sim.rotateSeed(RES);
    depositBoth(RES, 2);
    w.sim.rotateSeed(DOCS);
    depositBoth(DOCS, 1);
    w.sim.rotateSeed(DOCS);
    depositBoth(DOCS, 2);
    depositBoth(AUDIT, 1);

    // Crypto bodies of the wrong shape, each holding a seed-like value, then a token endpoint 400.
    const seedLike = ['c2VlZC1pbi10aGUtd3JvbmctZmllbGQ=', 'bmVzdGVkLXNlZWQtdmFsdWUtMDAwMQ=='];
    w.sim.faults.inject('crypto', { kind: 'wrongShape', eserviceId: RES, body: { seed: 'SHA-256', cryptoHashFunction: seedLike[0] }, times: 1 });
    w.sim.faults.inject('crypto', { kind: 'wrongShape', eserviceId: DOCS, body: { crypto: { seed: seedLike[1] }, cryptoHashFunction: 'SHA-256' }, times: 1 });
    runs.push(['sync 2 (bad crypto bodies)', await cli(['sync', '--once'])]);
    w.sim.faults.inject('token', { kind: 'status', status: 400, code: '015-0008', times: 1 });
    runs.push(['sync 3 (token 400)', await cli(['sync', '--once'])]);
    runs.push(['sync 4', await cli(['sync', '--once'])]);
    const last = runs.at(-1)![1];
    expect(last.code, last.stderr).toBe(0);
    // The faults did strike, and the runs they struck did not succeed.
    expect(w.sim.stats().faultsFired).toMatchObject({ token: 2, pull: 2, crypto: 3 });
    expect(runs.find(([n]) => n.startsWith('sync 2'))![1].code).not.toBe(0);

    runs.push(['events list --json', await cli(['events', 'list', '--json', '--limit', '1000'])]);
    runs.push(['status', await cli(['status'])]);
    runs.push(['status --json', await cli(['status', '--json'])]);
    const events = runs
      .at(-3)![1]
      .stdout.split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { id: string; type: string; subjectKey?: unknown });
    // Every match arrived, once (the audit e-service too: its voucher and evidence were accepted).
    expect(events.filter((e) => e.type === 'signal').map((e) => e.id).sort()).toEqual([...expected].sort());
    expect(events.some((e) => 'subjectKey' in e)).toBe(false);

    const set = fixtureSecrets([...mine, ...strangers, ...delegated]).addFromSimulator(w.sim, [RES, DOCS, AUDIT]);
    seedLike.forEach((s, i) => set.addSeed(s, `seed-like value ${i + 1}`));
    expect(w.sim.seedHistory(DOCS).length).toBe(3);
    expect(w.sim.seedHistory(RES).length).toBe(3);
    expect(w.sim.issuedVouchers().length).toBeGreaterThanOrEqual(4);
    expect(w.sim.receivedAssertions().length).toBeGreaterThan(w.sim.issuedVouchers().length);
    // The audit e-service's JWS (Agid-JWT-TrackingEvidence, with its producer claims) is scanned for too.
    const claimsOf = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
    expect(w.sim.receivedAssertions().some((jwt) => claimsOf(jwt).userID === 'operatore-7')).toBe(true);
    // The logs were really captured at trace level, and they name faults by status, not by content.
    const allStderr = runs.map(([, r]) => r.stderr).join('\n');
    expect(allStderr).toContain('"level":"debug"');
    expect(allStderr).toContain('"status":500');
    set.assertClean(Object.assign({}, ...runs.map(([name, result]) => streams(name, result))));
  });
});

describe('secrets: the daemon end to end at trace level', () => {
  it('run delivers to a signed webhook (URL with a query token) and a file, reloads a bad config holding a pasted key, stops on SIGTERM: no secret in its output, no subject key in what it delivered', async () => {
    const received: { headers: http.IncomingHttpHeaders; body: string }[] = [];
    let answered = 0;
    const receiver = http.createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (d: string) => (body += d));
      req.on('end', () => {
        // The first delivery fails: the retry path logs the URL too.
        if (answered++ === 0) {
          res.writeHead(503).end();
          return;
        }
        received.push({ headers: req.headers, body });
        res.writeHead(200).end();
      });
    });
    servers.push(receiver);
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const port = (receiver.address() as AddressInfo).port;

    // The secret exists before the world's config is loaded.
    const dir = tempDir('shs-secrets-run-');
    fs.writeFileSync(path.join(dir, 'webhook.secret'), `${WEBHOOK_SECRET}\n`, { mode: 0o600 });
    world = await createWorld({
      dir,
      eservices: [{ id: RES, name: 'residenze', includeSignalId: true }],
      toml: `[hub]
poll_interval_seconds = 1

[[sinks]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:${port}/signals?access_token=${QUERY_TOKEN}"
secret_file = "webhook.secret"
max_retries = 5

[[sinks]]
name = "file"
type = "file"
path = "events.ndjson"
`,
    });
    atTraceLevel(world);
    const w = world;
    const mine = Array.from({ length: 4 }, (_, i) => fiscalCode(500 + i));
    const strangers = [fiscalCode(950), fiscalCode(951)];
    storeSubjects(w, mine.map((key, i) => ({ key, ref: `pratica-${i}` })));
    // Initial seed known before any signal: the first start has no backlog older than it.
    const expected = [w.sim.depositForSubject(RES, mine[0]!, 'UPDATE', 'domicile'), w.sim.depositForSubject(RES, mine[1]!, 'CREATE', 'domicile')];
    w.sim.depositForSubject(RES, strangers[0]!, 'UPDATE', 'domicile');

    const daemon = startRun(w, { logLevel: 'trace' });
    const delivered = (): string[] =>
      received.flatMap((r) => {
        const parsed = JSON.parse(r.body) as { id: string } | { id: string }[];
        return (Array.isArray(parsed) ? parsed : [parsed]).map((e) => e.id);
      });
    await daemon.until(() => received.length > 0 && delivered().includes(`${RES}:${expected[1]}`), 'the webhook deliveries');

    // A rotation while running: the daemon fetches the new seed and keeps matching.
    w.sim.rotateSeed(RES);
    expected.push(w.sim.depositForSubject(RES, mine[2]!, 'UPDATE', 'domicile'));
    w.sim.depositForSubject(RES, strangers[1]!, 'UPDATE', 'domicile');
    await daemon.until(() => delivered().includes(`${RES}:${expected[2]}`) && fileEventIds(path.join(w.dir, 'events.ndjson')).includes(`${RES}:${expected[2]}`), 'the event after the rotation');

    // A reload with a config holding another key's PEM where a path belongs: rejected, the old config stays.
    const good = fs.readFileSync(w.configFile, 'utf8');
    const pasted = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    fs.writeFileSync(w.configFile, good.replace('private_key_file = "eservice.pem"', `private_key_file = ${JSON.stringify(pasted)}`));
    daemon.child.kill('SIGHUP');
    const rejected = await daemon.waitForLog((l) => l.msg.startsWith('configuration reload rejected'), 'the rejected reload');
    expect(JSON.stringify(rejected)).toContain('pdnd.eservice_client.private_key_file');
    fs.writeFileSync(w.configFile, good);

    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);

    // Every delivery was signed with the secret (so it was read and used), and said what it carried.
    for (const r of received) expect(r.headers['x-signature']).toBe(`sha256=${createHmac('sha256', WEBHOOK_SECRET).update(r.body, 'utf8').digest('hex')}`);
    expect(new Set(delivered())).toEqual(new Set(expected.map((id) => `${RES}:${id}`)));

    const set = fixtureSecrets([...mine, ...strangers]).addFromSimulator(w.sim, [RES]).addPrivateKey(pasted, 'pasted key');
    // Nothing logs at trace level here; debug lines prove the verbose levels were on.
    expect(daemon.stderr()).toContain('"level":"debug"');
    set.assertClean({ 'run stdout': daemon.stdout(), 'run stderr': daemon.stderr() });
    // What sinks received carries pseudonyms and refs, never a subject key (events.include_subject_key = false).
    set.assertClean({
      'webhook bodies': received.map((r) => r.body).join('\n'),
      'webhook headers': received.map((r) => JSON.stringify(r.headers)).join('\n'),
      'file sink': fs.readFileSync(path.join(w.dir, 'events.ndjson'), 'utf8'),
    });
  });
});
