import fs from 'node:fs';
import { beforeAll, expect } from 'vitest';
import { silentLogger } from '../../src/log.js';
import type { EServiceRegistration, Fault } from '../../src/simulator/index.js';
import { openDatabase } from '../../src/store/db.js';
import { EServiceStore } from '../../src/store/eservices.js';
import { OutboxStore } from '../../src/store/outbox.js';
import { SubjectWriter } from '../../src/subjects/apply.js';
import { subjectIndexOptions } from '../../src/subjects/import.js';
import { catchUpAll } from '../../src/sync/catchup.js';
import { closeRemotes, createEngine, createRemotes } from '../../src/sync/runtime.js';
import { openWriter } from '../../src/cli/db.js';
import { runCli, type CliResult } from './cli.js';
import { seededRandom } from './random.js';
import { createWorld, fiscalCode, type World } from './world.js';

/**
 * The scenario of every fault suite (test/faults-*.test.ts), and the checks each fault test makes.
 * A fault test is written like this:
 *
 *   const control = useControlOutbox();                    // once per file (or describe): the fault-free outcome
 *
 *   it('…', () => withScenario(control, async (s) => {     // same deposits, fresh world, closed afterwards
 *     s.world.sim.faults.inject('pull', { kind: 'status', status: 503, after: 3 });
 *     const run = await runSync(s.world);                  // a real `sync --once` child process
 *     expect(run.code, run.stderr).toBe(69);
 *     expectErrorLogged(run.stderr, { code: 'HUB_UNAVAILABLE', status: 503, correlationId: true });  // (a)
 *     expectStoppedMidRun(s, control);                     // (b) via expectCursorNeverPassesUnprocessed
 *     await expectRecovery(s, control);                    // (c) fault cleared: one more run, exact outbox
 *   }));
 *
 * A fault the run rides out ends with `expectCaughtUpExactly(s, control)` instead. Tests that need
 * other settings build their world with `createFaultScenario(options)` and close it themselves.
 *
 * Deposits are deterministic (seeded PRNG, fixed producer seeds), so two worlds built with the
 * same e-services, signals and subjects hold the same signals with the same objectIds, and their
 * outboxes compare whole (`readOutbox` names each epoch by what it stands for, not its row id).
 */

/** The followed e-services, in order; hex-only uuids so that the world's purpose ids derive from them. */
export const ES_A = 'a1a1a1a1-0000-4000-8000-00000000000a';
export const ES_B = 'b2b2b2b2-0000-4000-8000-00000000000b';
export const FAULT_ESERVICES = [ES_A, ES_B] as const;

/** Local subjects stored by default. */
export const SUBJECT_COUNT = 50;

/** The fiscal code of local subject `i` (the scenario stores subjects 0 … subjects-1). */
export function localSubject(i: number): string {
  return fiscalCode(1000 + i);
}

type TomlValue = number | string | boolean;
export type TomlTable = Record<string, TomlValue>;

export interface FaultScenarioOptions {
  /** How many of FAULT_ESERVICES to follow (default 2). */
  eservices?: 1 | 2;
  /** Signals deposited per e-service, the SEEDUPDATE (halfway) included (default 150: 8 pages of 20). */
  signals?: number;
  /** Local subjects (default SUBJECT_COUNT). */
  subjects?: number;
  /** Extra simulator settings of every e-service (staleReads, …). */
  registration?: Partial<EServiceRegistration>;
  /** Deposit the backlog only when the scenario's `deposit()` is called (default: at once). */
  deferDeposits?: boolean;
  /** Keys of `[hub]`, `[pdnd]`, `[crypto]`, merged over FAULT_HUB/PDND/CRYPTO_SETTINGS. */
  hub?: TomlTable;
  pdnd?: TomlTable;
  crypto?: TomlTable;
  /** `[daemon]` and `[outbox]` keys (the config defaults otherwise). */
  daemon?: TomlTable;
  outbox?: TomlTable;
  /** `[[sinks]]` tables. */
  sinks?: TomlTable[];
}

/** Small timeouts and retry delays, so that a fault test retries in well under a second. */
export const FAULT_HUB_SETTINGS: TomlTable = { page_size: 20, request_timeout_ms: 3000, max_retries: 3, max_retry_delay_ms: 200, max_rate_limit_wait_ms: 2000 };
export const FAULT_PDND_SETTINGS: TomlTable = { request_timeout_ms: 1000 };
export const FAULT_CRYPTO_SETTINGS: TomlTable = { request_timeout_ms: 3000, rotation_wait_seconds: 1 };

export interface FaultScenario {
  world: World;
  eserviceIds: string[];
  /** Per e-service: the signalIds that match a local subject (one `signal` event each), once deposited. */
  matches: Map<string, number[]>;
  /** Per e-service: the SEEDUPDATE's signalId, once deposited. */
  seedUpdates: Map<string, number>;
  /** Deposits the backlog (with `deferDeposits`; once). */
  deposit(): void;
  close(): Promise<void>;
}

/**
 * A world with local subjects (stored as `subjects import` does), a consumer that already
 * followed the e-services before the backlog began (one fault-free in-process sync on an empty
 * hub, so it knows the first seed; producers send `signalId` with their crypto info), then per
 * e-service `signals` deposits: ~20% matches of local subjects, the rest other people's, and a
 * SEEDUPDATE halfway.
 */
export async function createFaultScenario(options: FaultScenarioOptions = {}): Promise<FaultScenario> {
  const eserviceIds = FAULT_ESERVICES.slice(0, options.eservices ?? 2);
  const world = await createWorld({
    eservices: eserviceIds.map((id, i) => ({ id, name: `es-${i}`, seed: `first-seed-${i}-Xzzh3pQqLp+VK7gG9NwR6w==`, includeSignalId: true, ...options.registration })),
    toml: scenarioToml(options),
  });
  try {
    const locals = Array.from({ length: options.subjects ?? SUBJECT_COUNT }, (_, i) => localSubject(i));
    const db = openDatabase(world.config.database);
    try {
      new SubjectWriter(db, { index: subjectIndexOptions(world.config) }).upsertBatch(locals.map((key, i) => ({ key, ref: `ref-${i}`, eservices: 'all' as const })));
    } finally {
      db.close();
    }
    await syncInProcess(world);

    const matches = new Map<string, number[]>();
    const seedUpdates = new Map<string, number>();
    const count = options.signals ?? 150;
    let deposited = false;
    const deposit = () => {
      if (deposited) throw new Error('the scenario backlog is already deposited');
      deposited = true;
      eserviceIds.forEach((es, index) => {
        const rnd = seededRandom(4242 + index);
        const matched: number[] = [];
        for (let i = 0; i < count; i++) {
          if (i === Math.floor(count / 2)) {
            seedUpdates.set(es, world.sim.rotateSeed(es, `second-seed-${index}-9NwR6w+VK7gG`));
            continue;
          }
          const signalType = ['CREATE', 'UPDATE', 'DELETE'][Math.floor(rnd() * 3)]!;
          const objectType = rnd() < 0.5 ? 'residence' : 'IDcard';
          if (rnd() < 0.2) {
            matched.push(world.sim.depositForSubject(es, locals[Math.floor(rnd() * locals.length)]!, signalType, objectType));
          } else {
            world.sim.depositForSubject(es, fiscalCode(90_000 + Math.floor(rnd() * 5000)), signalType, objectType);
          }
        }
        matches.set(es, matched);
      });
    };
    if (!options.deferDeposits) deposit();
    return { world, eserviceIds, matches, seedUpdates, deposit, close: () => world.close() };
  } catch (err) {
    await world.close();
    throw err;
  }
}

function scenarioToml(options: FaultScenarioOptions): string {
  return [
    section('hub', { ...FAULT_HUB_SETTINGS, ...options.hub }),
    section('pdnd', { ...FAULT_PDND_SETTINGS, ...options.pdnd }),
    section('crypto', { ...FAULT_CRYPTO_SETTINGS, ...options.crypto }),
    ...(options.daemon ? [section('daemon', options.daemon)] : []),
    ...(options.outbox ? [section('outbox', options.outbox)] : []),
    ...(options.sinks ?? []).map((sink) => section('[sinks]', sink)),
  ].join('\n');
}

function section(name: string, values: TomlTable): string {
  return `[${name}]\n${Object.entries(values)
    .map(([k, v]) => `${k} = ${JSON.stringify(v)}`)
    .join('\n')}\n`;
}

/**
 * The real engine in this process, fault-free: to bring a world to its starting point, or to
 * sync a control world without a child process.
 */
export async function syncInProcess(world: World): Promise<void> {
  const store = openWriter(world.config, 'fault scenario setup');
  const remotes = createRemotes(world.config, { logger: silentLogger });
  try {
    const engine = createEngine(world.config, store.db, remotes, { logger: silentLogger });
    // One at a time, so that the setup numbers its epochs alike in every world.
    const results = await catchUpAll(engine, world.config.eservices.map((e) => e.id), { concurrency: 1 });
    for (const r of results) if (r.error !== undefined) throw r.error;
  } finally {
    await closeRemotes(remotes);
    store.close();
  }
}

/** `sync --once` of the scenario's config as a child process. */
export function runSync(world: World, args: string[] = [], timeoutMs = 90_000): Promise<CliResult> {
  return runCli(['--config', world.configFile, 'sync', '--once', ...args], { timeoutMs });
}

/**
 * Inserts `key = value` at the top of a config section (after the scenario's setup ran, so only
 * the child processes see it). Returns the function that restores the file.
 */
export function setConfig(world: World, section: string, key: string, value: string): () => void {
  const original = fs.readFileSync(world.configFile, 'utf8');
  expect(original).toContain(`[${section}]\n`);
  fs.writeFileSync(world.configFile, original.replace(`[${section}]\n`, `[${section}]\n${key} = ${JSON.stringify(value)}\n`));
  return () => fs.writeFileSync(world.configFile, original);
}

/** An outbox event as compared across worlds: the stored JSON minus the times it was made. */
export interface ComparableEvent {
  eventId: string;
  kind: string;
  event: Record<string, unknown>;
}

/**
 * How two outboxes are lined up: in outbox order (which for one e-service is signal order), or
 * sorted by event id (two e-services synced concurrently interleave in any order).
 */
export type OutboxOrder = 'outbox' | 'eventId';

/** The strictest order that is the same in every run: outbox order unless several e-services interleave. */
function defaultOrder(world: World): OutboxOrder {
  return world.config.eservices.length > 1 ? 'eventId' : 'outbox';
}

/**
 * Every outbox event, without receivedAt and createdAt, and with `epoch` (a local row id,
 * numbered across e-services in whatever order their runs create epochs) replaced by what it
 * stands for: the epoch's start signal and seed fingerprint.
 */
export function readOutbox(world: World, order: OutboxOrder = defaultOrder(world)): ComparableEvent[] {
  const db = openDatabase(world.config.database, { readonly: true });
  try {
    const epochs = new Map(
      (db.prepare('SELECT id, start_signal_id AS start, seed_fingerprint AS fp FROM epochs').all() as { id: number; start: number; fp: string | null }[]).map((e) => [e.id, `from ${e.start}, seed ${e.fp}`]),
    );
    const events = new OutboxStore(db).all().map((row) => {
      const { receivedAt: _r, createdAt: _c, ...event } = JSON.parse(row.payload) as Record<string, unknown>;
      if (typeof event.epoch === 'number') event.epoch = epochs.get(event.epoch) ?? `missing epoch ${event.epoch}`;
      return { eventId: row.eventId, kind: row.kind, event };
    });
    return order === 'eventId' ? events.sort((a, b) => (a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0)) : events;
  } finally {
    db.close();
  }
}

/** The cursor of each followed e-service (0 when never synced). */
export function readCursors(world: World): Map<string, number> {
  const db = openDatabase(world.config.database, { readonly: true });
  try {
    const store = new EServiceStore(db);
    return new Map(world.config.eservices.map((e) => [e.id, store.get(e.id)?.cursor ?? 0]));
  } finally {
    db.close();
  }
}

/** The fault-free outcome a faulty world must end up with. */
export interface ControlOutbox {
  /** The options its world was built with (deposits never deferred). */
  options: FaultScenarioOptions;
  events: ComparableEvent[];
  order: OutboxOrder;
  /** Vouchers the control's `sync --once` obtained. */
  tokensIssued: number;
  matches: Map<string, number[]>;
  seedUpdates: Map<string, number>;
}

/**
 * The outbox of the fault-free run of a scenario (built, synced by a `sync --once` child, read,
 * closed), checked: exactly one event per deposited match, matches on both sides of the SEEDUPDATE.
 */
export async function controlOutbox(options: FaultScenarioOptions = {}): Promise<ControlOutbox> {
  const built = { ...options, deferDeposits: false };
  const scenario = await createFaultScenario(built);
  try {
    const tokensBefore = scenario.world.sim.stats().tokensIssued;
    const run = await runSync(scenario.world);
    expect(run.code, run.stderr).toBe(0);
    const order = defaultOrder(scenario.world);
    const events = readOutbox(scenario.world, order);
    const expectedIds = [...scenario.matches].flatMap(([es, ids]) => ids.map((id) => `${es}:${id}`));
    expect(events.map((e) => e.eventId)).toEqual(order === 'eventId' ? expectedIds.sort() : expectedIds);
    expect(events.every((e) => e.kind === 'signal')).toBe(true);
    for (const [es, ids] of scenario.matches) {
      const seedUpdate = scenario.seedUpdates.get(es)!;
      expect(ids.some((id) => id < seedUpdate) && ids.some((id) => id > seedUpdate), `matches of ${es} on both sides of the SEEDUPDATE`).toBe(true);
    }
    return {
      options: built,
      events,
      order,
      tokensIssued: scenario.world.sim.stats().tokensIssued - tokensBefore,
      matches: scenario.matches,
      seedUpdates: scenario.seedUpdates,
    };
  } finally {
    await scenario.close();
  }
}

/**
 * `controlOutbox(options)` in a beforeAll of the calling file (or describe). The object returned
 * is filled in by then: the tests use it as is.
 */
export function useControlOutbox(options: FaultScenarioOptions = {}): ControlOutbox {
  const control = { options } as ControlOutbox;
  beforeAll(async () => {
    Object.assign(control, await controlOutbox(options));
  }, 90_000);
  return control;
}

/** A fresh scenario built like the control's, closed after `body` whatever happens. */
export async function withScenario(control: ControlOutbox, body: (s: FaultScenario) => Promise<void>): Promise<void> {
  const scenario = await createFaultScenario(control.options);
  try {
    await body(scenario);
  } finally {
    await scenario.close();
  }
}

/** (c): the outbox is exactly the control's, event for event, field for field. */
export function expectSameOutbox(world: World, control: ControlOutbox): void {
  const actual = readOutbox(world, control.order);
  expect(actual.length).toBe(control.events.length);
  expect(actual).toEqual(control.events);
}

/**
 * (b): for each e-service, the outbox holds exactly the expected events at or below the cursor
 * (the scenario's matches, each equal to the control's event) and none above it: the cursor
 * never passed a signal it did not process. Returns the cursors.
 */
export function expectCursorNeverPassesUnprocessed(scenario: FaultScenario, control: ControlOutbox): Map<string, number> {
  const cursors = readCursors(scenario.world);
  const events = readOutbox(scenario.world);
  for (const es of scenario.eserviceIds) {
    const cursor = cursors.get(es)!;
    const signalsOf = (list: ComparableEvent[]) =>
      list.filter((e) => e.kind === 'signal' && e.event.eserviceId === es).sort((a, b) => (a.event.signalId as number) - (b.event.signalId as number));
    const stored = signalsOf(events);
    expect(stored.map((e) => e.event.signalId), `e-service ${es} at cursor ${cursor}`).toEqual(scenario.matches.get(es)!.filter((id) => id <= cursor));
    expect(stored, `e-service ${es} at cursor ${cursor}, against the control`).toEqual(signalsOf(control.events).filter((e) => (e.event.signalId as number) <= cursor));
  }
  return cursors;
}

/** After a run stopped mid-run: (b) holds, some pages committed, not all. Returns the cursors. */
export function expectStoppedMidRun(scenario: FaultScenario, control: ControlOutbox): Map<string, number> {
  const cursors = expectCursorNeverPassesUnprocessed(scenario, control);
  expect([...cursors.values()].some((c) => c > 0)).toBe(true);
  for (const es of scenario.eserviceIds) expect(cursors.get(es)!).toBeLessThan(scenario.world.sim.lastSignalId(es));
  return cursors;
}

/** After a run that completed: the outbox is exactly the control's, every cursor at the hub's last signal. */
export function expectCaughtUpExactly(scenario: FaultScenario, control: ControlOutbox): void {
  expectSameOutbox(scenario.world, control);
  const cursors = expectCursorNeverPassesUnprocessed(scenario, control);
  for (const es of scenario.eserviceIds) expect(cursors.get(es), `cursor of ${es}`).toBe(scenario.world.sim.lastSignalId(es));
}

/** The fault cleared (and whatever else the test restored), one more run completes and the outcome is exactly the control's. */
export async function expectRecovery(scenario: FaultScenario, control: ControlOutbox): Promise<void> {
  scenario.world.sim.faults.clear();
  const again = await runSync(scenario.world);
  expect(again.code, again.stderr).toBe(0);
  expectCaughtUpExactly(scenario, control);
}

/** Pino JSON lines of a child's stderr. */
export function logLines(stderr: string): Record<string, any>[] {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, any>);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * (a): stderr has a JSON log line whose `err` names `code`, the HTTP `status` when given, and a
 * correlationId when the remote gave one (the simulator's problem bodies carry a uuid). Returns it.
 */
export function expectErrorLogged(stderr: string, want: { code: string; status?: number; correlationId?: boolean; message?: RegExp }): Record<string, any> {
  const line = logLines(stderr).find((l) => l.err?.code === want.code && (want.status === undefined || l.err?.status === want.status));
  expect(line, `no log line with err.code ${want.code}${want.status ? ` and status ${want.status}` : ''} in:\n${stderr.slice(-3000)}`).toBeDefined();
  if (want.correlationId) expect(line!.err.correlationId).toMatch(UUID);
  if (want.message) expect(line!.err.message).toMatch(want.message);
  return line!;
}

/** The token endpoint faults a run rides out (retried with a fresh assertion), at the start or mid-run. */
export const TOKEN_FAULTS_RIDDEN_OUT: { name: string; fault: Fault; times: number }[] = [
  { name: 'answering 500 twice', fault: { kind: 'status', status: 500 }, times: 2 },
  { name: 'answering 429 twice', fault: { kind: 'status', status: 429 }, times: 2 },
  // [pdnd] request_timeout_ms is 1000 in the scenario: a 1.5 s answer is a timeout.
  { name: 'slower than pdnd.request_timeout_ms once', fault: { kind: 'delay', ms: 1500 }, times: 1 },
  { name: 'dropping the connection twice', fault: { kind: 'drop' }, times: 2 },
];

/** A run through `times` token faults: exit 0, every fault retried, outcome exactly the control's. */
export function expectTokenFaultsRiddenOut(scenario: FaultScenario, control: ControlOutbox, run: CliResult, times: number): void {
  expect(run.code, run.stderr).toBe(0);
  expect(scenario.world.sim.stats().faultsFired.token).toBe(times);
  // At least: a loaded machine may add a retry of its own; the outcome must not change.
  expect(logLines(run.stderr).filter((l) => l.msg === 'token request failed, retrying').length).toBeGreaterThanOrEqual(times);
  expectCaughtUpExactly(scenario, control);
}
