import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli, type CliResult } from './helpers/cli.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { SecretSet } from './helpers/secrets.js';
import { checkEvent } from '../src/event-schema.js';

/**
 * Delegations (issue 14, SPEC §8c), end to end as an operator runs them: subjects imported per
 * tenant with the CLI, `sync --once` against the simulator over loopback HTTP, file sinks routed
 * by tenant, e-service and signal type, `status --json` and `subjects count --json`.
 */

const ES1 = '14141414-0000-4000-8000-000000000001';
const ES2 = '14141414-0000-4000-8000-000000000002';
const A = 'c_a001';
const B = '5a1b2c3d-0000-4000-8000-00000000000b';

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

const SINKS = `
[[sinks]]
type = "file"
name = "everything"
path = "out/everything.ndjson"

[[sinks]]
type = "file"
name = "comune-a"
path = "out/comune-a.ndjson"
tenants = ["C_A001"]

[[sinks]]
type = "file"
name = "own"
path = "out/own.ndjson"
tenants = ["@own"]

[[sinks]]
type = "file"
name = "documents-deleted"
path = "out/documents-deleted.ndjson"
eservices = ["documents"]
signal_types = ["DELETE"]
`;

interface Ev {
  id: string;
  type: string;
  eserviceId: string;
  signalId: number;
  signalType: string;
  subjectRef: string | null;
  tenant?: string;
  backfilled?: true;
}

async function start(): Promise<{ w: World; cli: (args: string[], input?: string) => Promise<CliResult>; file: (name: string, text: string) => string; sink: (name: string) => Ev[]; secrets: SecretSet }> {
  const w = await createWorld({
    eservices: [
      { id: ES1, name: 'residences', includeSignalId: true },
      { id: ES2, name: 'documents', includeSignalId: true },
    ],
    toml: SINKS,
  });
  world = w;
  fs.mkdirSync(path.join(w.dir, 'out'));
  const cli = (args: string[], input?: string) => runCli(['--config', w.configFile, ...args], { cwd: w.dir, ...(input !== undefined ? { input } : {}) });
  const file = (name: string, text: string) => {
    const p = path.join(w.dir, name);
    fs.writeFileSync(p, text);
    return p;
  };
  const sink = (name: string): Ev[] => {
    const p = path.join(w.dir, 'out', `${name}.ndjson`);
    if (!fs.existsSync(p)) return [];
    return fs
      .readFileSync(p, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Ev);
  };
  const secrets = new SecretSet();
  for (let n = 1; n <= 12; n++) secrets.addSubjectKey(fiscalCode(n), `subject ${n}`);
  return { w, cli, file, sink, secrets };
}

const K = (n: number) => fiscalCode(n);

describe('delegations: subjects of several tenants (CLI, simulator, file sinks)', () => {
  it('two tenants sharing subjects get exactly their own events; sinks routed by tenant, e-service and signal type', async () => {
    const { w, cli, file, sink, secrets } = await start();
    const out: Record<string, string> = {};
    const run = async (label: string, args: string[], expectCode = 0, input?: string) => {
      const r = await cli(args, input);
      out[`${label} stdout`] = r.stdout;
      out[`${label} stderr`] = r.stderr;
      expect(r.code, `${label}: ${r.stderr}`).toBe(expectCode);
      return r;
    };

    const check = await run('config check', ['config', 'check']);
    expect(check.stdout).toContain('comune-a: file');
    expect(check.stdout).toMatch(/comune-a: .*; e-services: all; tenants: c_a001\n/);
    expect(check.stdout).toMatch(/own: .*; tenants: @own\n/);
    expect(check.stdout).toMatch(/documents-deleted: .*; e-services: documents; signal types: DELETE\n/);

    // Own subjects 1..4 (no tenant column); tenant A 3..6 (--tenant, case-insensitive); tenant B
    // 5..8 in NDJSON with a per-row tenant, key 8 following residences only.
    await run('import own', ['subjects', 'import', file('own.csv', `key,ref\n${[1, 2, 3, 4].map((n) => `${K(n)},own-${n}`).join('\n')}\n`)]);
    await run('import A', ['subjects', 'import', '--tenant', 'C_A001', file('a.csv', `key,ref\n${[3, 4, 5, 6].map((n) => `${K(n)},a-${n}`).join('\n')}\n`)]);
    await run('import B', [
      'subjects',
      'import',
      file('b.ndjson', [5, 6, 7, 8].map((n) => JSON.stringify({ key: K(n), ref: `b-${n}`, tenant: B, ...(n === 8 ? { eservices: ['residences'] } : {}) })).join('\n') + '\n'),
    ]);
    const count = await run('count', ['subjects', 'count', '--json']);
    expect(JSON.parse(count.stdout)).toMatchObject({
      total: 8,
      tenants: [
        { tenant: null, subjects: 4 },
        { tenant: B, subjects: 4 },
        { tenant: A, subjects: 4 },
      ],
    });

    // Who should hear about key n on an e-service, with which ref.
    const owners = (n: number, es: string): { tenant: string | undefined; ref: string }[] => [
      ...(n >= 1 && n <= 4 ? [{ tenant: undefined, ref: `own-${n}` }] : []),
      ...(n >= 3 && n <= 6 ? [{ tenant: A, ref: `a-${n}` }] : []),
      ...(n >= 5 && n <= 8 && !(n === 8 && es === ES2) ? [{ tenant: B, ref: `b-${n}` }] : []),
    ];
    const expected: Ev[] = [];
    const deposit = (es: string, n: number, type: string) => {
      const signalId = w.sim.depositForSubject(es, K(n), type, 'record');
      for (const o of owners(n, es)) {
        expected.push({ id: o.tenant ? `${es}:${signalId}:tenant:${o.tenant}` : `${es}:${signalId}`, type: 'signal', eserviceId: es, signalId, signalType: type, subjectRef: o.ref, ...(o.tenant ? { tenant: o.tenant } : {}) });
      }
    };
    await run('first sync', ['sync', '--once']); // seeds known before the deposits
    const types = ['CREATE', 'UPDATE', 'DELETE'];
    for (let n = 1; n <= 10; n++) {
      deposit(ES1, n, types[n % 3]!);
      deposit(ES2, n, types[(n + 1) % 3]!);
    }
    w.sim.rotateSeed(ES2);
    for (const n of [3, 5, 8, 9]) deposit(ES2, n, 'DELETE');
    await run('sync', ['sync', '--once']);

    const shape = (e: Ev) => ({ id: e.id, type: e.type, eserviceId: e.eserviceId, signalId: e.signalId, signalType: e.signalType, subjectRef: e.subjectRef, ...(e.tenant ? { tenant: e.tenant } : {}) });
    const byId = (a: Ev, b: Ev) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    const everything = sink('everything');
    expect(everything.map(shape).sort(byId)).toEqual([...expected].sort(byId));
    expect(new Set(everything.map((e) => e.id)).size).toBe(everything.length);
    for (const e of everything) expect(checkEvent(e)).toEqual({ ok: true, type: 'signal' });
    expect(sink('comune-a').map(shape).sort(byId)).toEqual(expected.filter((e) => e.tenant === A).sort(byId));
    expect(sink('own').map(shape).sort(byId)).toEqual(expected.filter((e) => e.tenant === undefined).sort(byId));
    expect(sink('documents-deleted').map(shape).sort(byId)).toEqual(expected.filter((e) => e.eserviceId === ES2 && e.signalType === 'DELETE').sort(byId));
    // Shared keys: key 3 (own and A), 5 and 6 (A and B) each gave two events per signal.
    expect(expected.filter((e) => e.signalId === expected.find((x) => x.subjectRef === 'own-3')!.signalId && e.eserviceId === ES1)).toHaveLength(2);

    // Status: counts per tenant, and a filtered sink has no backlog of events that are not for it.
    const status = JSON.parse((await run('status', ['status', '--json'])).stdout) as {
      tenants: { tenant: string | null; subjects: number; events: number }[];
      sinks: { name: string; pending: number; tenants: string[]; signalTypes: string[] }[];
    };
    const eventsOf = (t: string | undefined) => expected.filter((e) => e.tenant === t).length;
    expect(status.tenants).toEqual([
      { tenant: null, subjects: 4, events: eventsOf(undefined) },
      { tenant: B, subjects: 4, events: eventsOf(B) },
      { tenant: A, subjects: 4, events: eventsOf(A) },
    ]);
    expect(status.sinks.map((s) => [s.name, s.pending])).toEqual([
      ['everything', 0],
      ['comune-a', 0],
      ['own', 0],
      ['documents-deleted', 0],
    ]);
    expect(status.sinks.find((s) => s.name === 'comune-a')!.tenants).toEqual([A]);
    expect(status.sinks.find((s) => s.name === 'own')!.tenants).toEqual(['']);
    const human = await run('status text', ['status']);
    expect(human.stdout).toMatch(new RegExp(`${A}\\s+4\\s+${eventsOf(A)}`));
    expect(human.stdout).toContain('@own (own subjects)');

    // Re-runs and a full rescan from signal 0 emit nothing twice: ids are stable.
    await run('sync again', ['sync', '--once']);
    await run('cursor reset', ['cursor', 'reset', '--eservice', 'residences']);
    await run('sync after reset', ['sync', '--once']);
    const listed = (await run('events list', ['events', 'list', '--json', '--limit', '1000'])).stdout
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Ev);
    expect(listed.map(shape).sort(byId)).toEqual([...expected].sort(byId));
    expect(sink('everything')).toHaveLength(expected.length);
    const onlyA = (await run('events list A', ['events', 'list', '--json', '--limit', '1000', '--tenant', A])).stdout.split('\n').filter((l) => l !== '');
    expect(onlyA).toHaveLength(eventsOf(A));

    secrets.assertClean(out);
  });

  it('a tenant-scoped --replace leaves the other tenants and the own subjects untouched', async () => {
    const { w, cli, file, sink } = await start();
    const ok = async (args: string[]) => {
      const r = await cli(args);
      expect(r.code, r.stderr).toBe(0);
      return r;
    };
    await ok(['subjects', 'import', file('own.csv', `key,ref\n${[1, 2, 3].map((n) => `${K(n)},own-${n}`).join('\n')}\n`)]);
    await ok(['subjects', 'import', '--tenant', A, file('a.csv', `key,ref\n${[2, 3, 4, 5].map((n) => `${K(n)},a-${n}`).join('\n')}\n`)]);
    await ok(['subjects', 'import', '--tenant', B, file('b.csv', `key,ref\n${[3, 4, 5, 6].map((n) => `${K(n)},b-${n}`).join('\n')}\n`)]);
    await ok(['sync', '--once']);

    // A now lists 2 and 7 only: 3, 4, 5 leave A; B and the own subjects keep theirs.
    const replaced = await ok(['subjects', 'import', '--tenant', A, '--replace', '--json', file('a2.csv', `key,ref\n${K(2)},a-2\n${K(7)},a-7\n`)]);
    expect(JSON.parse(replaced.stdout)).toMatchObject({ imported: 1, unchanged: 1, removed: 3, committed: true });
    // The own --replace keeps its meaning for own subjects only: 1 leaves, A's and B's stay.
    const own = await ok(['subjects', 'import', '--replace', '--json', file('own2.csv', `key,ref\n${K(2)},own-2\n${K(3)},own-3\n`)]);
    expect(JSON.parse(own.stdout)).toMatchObject({ removed: 1, unchanged: 2 });
    const count = JSON.parse((await ok(['subjects', 'count', '--json'])).stdout) as { total: number; tenants: unknown[] };
    expect(count.tenants).toEqual([
      { tenant: null, subjects: 2 },
      { tenant: B, subjects: 4 },
      { tenant: A, subjects: 2 },
    ]);
    expect(count.total).toBe(6); // keys 2..7: key 1 had no other tenant and is gone

    const ids: Record<number, number> = {};
    for (const n of [1, 2, 3, 4, 5, 6, 7]) ids[n] = w.sim.depositForSubject(ES1, K(n), 'UPDATE', 'record');
    await ok(['sync', '--once']);
    const got = sink('everything')
      .map((e) => `${e.signalId}:${e.tenant ?? 'own'}:${e.subjectRef}`)
      .sort();
    const want = [
      `${ids[2]}:own:own-2`,
      `${ids[2]}:${A}:a-2`,
      `${ids[3]}:own:own-3`,
      `${ids[3]}:${B}:b-3`,
      `${ids[4]}:${B}:b-4`,
      `${ids[5]}:${B}:b-5`,
      `${ids[6]}:${B}:b-6`,
      `${ids[7]}:${A}:a-7`,
    ].sort();
    expect(got).toEqual(want);

    // remove: by default the own membership; --tenant one delegator's; --all-tenants the key.
    const removeOwn = await ok(['subjects', 'remove', '--json', K(3)]);
    expect(JSON.parse(removeOwn.stdout)).toEqual({ removed: 1, notFound: 0, problems: 0 });
    const removeA = await ok(['subjects', 'remove', '--json', '--tenant', A, K(3), K(7)]);
    expect(JSON.parse(removeA.stdout)).toEqual({ removed: 1, notFound: 1, problems: 0 }); // 3 was not A's any more
    await ok(['subjects', 'remove', '--json', '--all-tenants', K(4)]);
    const after = JSON.parse((await ok(['subjects', 'count', '--json'])).stdout) as { total: number; tenants: unknown[] };
    expect(after.tenants).toEqual([
      { tenant: null, subjects: 1 },
      { tenant: B, subjects: 3 },
      { tenant: A, subjects: 1 },
    ]);
    expect(after.total).toBe(4); // 2, 3 (B), 5, 6
  });

  it('bad tenant values are refused with the file and line, never echoing a key', async () => {
    const { cli, file, secrets } = await start();
    const csv = file('t.csv', `key,ref,tenant\n${K(1)},r1,${A}\n${K(2)},r2,bad tenant!\n${K(3)},r3,${K(9)}\n${K(4)},r4,${'x'.repeat(65)}\n${K(5)},r5,\n`);
    const r = await cli(['subjects', 'import', csv]);
    expect(r.code).toBe(65);
    expect(r.stderr).toContain('line 3: tenant must be letters, digits');
    expect(r.stderr).toContain('line 4: tenant is a personal fiscal code');
    expect(r.stderr).toContain('line 5: tenant longer than 64 characters');
    expect(r.stdout).toContain('new 2'); // line 2 for A, line 6 (empty tenant) for the consumer itself

    const conflict = await cli(['subjects', 'import', '--tenant', B, csv]);
    expect(conflict.code).toBe(65);
    expect(conflict.stderr).toContain(`line 2: tenant "${A}" differs from --tenant "${B}"`);

    const replaceMixed = await cli(['subjects', 'import', '--replace', file('m.ndjson', `${JSON.stringify({ key: K(6), tenant: A })}\n${JSON.stringify({ key: K(7), tenant: 7 })}\n`)]);
    expect(replaceMixed.code).toBe(65);
    expect(replaceMixed.stderr).toContain('line 1: a row with a tenant under --replace: replace one tenant at a time with --tenant');
    expect(replaceMixed.stderr).toContain('line 2: "tenant" must be a string');

    const badFlag = await cli(['subjects', 'import', '--tenant', K(10), csv]);
    expect(badFlag.code).toBe(64);
    expect(badFlag.stderr).toContain('--tenant: tenant is a personal fiscal code');

    fs.appendFileSync(world!.configFile, '\n[[sinks]]\ntype = "stdout"\nname = "bad"\ntenants = ["no spaces allowed"]\n');
    const badConfig = await cli(['config', 'check']);
    expect(badConfig.code).toBe(78);
    expect(badConfig.stderr + badConfig.stdout).toMatch(/sinks\[4\]\.tenants\[0\].*tenant must be letters/);

    secrets.addSubjectKey(K(9), 'key used as tenant').addSubjectKey(K(10), 'key given as --tenant');
    secrets.assertClean({ 'import stderr': r.stderr, 'conflict stderr': conflict.stderr, 'mixed stderr': replaceMixed.stderr, 'flag stderr': badFlag.stderr, 'config check': badConfig.stderr + badConfig.stdout });
  });
});
