import { expect } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { openDatabase } from '../../src/store/db.js';
import { EServiceStore } from '../../src/store/eservices.js';
import { OutboxStore } from '../../src/store/outbox.js';
import { SubjectWriter } from '../../src/subjects/apply.js';
import { subjectIndexOptions } from '../../src/subjects/import.js';
import { catchUpAll } from '../../src/sync/catchup.js';
import { closeRemotes, createEngine, createRemotes } from '../../src/sync/runtime.js';
import { openWriter } from '../../src/cli/db.js';
import type { SimulatorOptions } from '../../src/simulator/index.js';
import { runCli, type CliResult } from './cli.js';
import { seededRandom } from './random.js';
import { createWorld, fiscalCode, type World } from './world.js';

/**
 * The standard scenario of the fault suites, and the checks each fault test makes:
 *
 *   const control = await controlOutbox();                 // once per file: the fault-free outcome
 *   const s = await createFaultScenario();                 // same deposits, fresh world
 *   s.world.sim.faults.inject('pull', { kind: 'status', status: 503, after: 3 });
 *   const faulty = await runSync(s.world);                 // a real `sync --once` child process
 *   expectCursorNeverPassesUnprocessed(s);                 // (b)
 *   s.world.sim.faults.clear();
 *   expect((await runSync(s.world)).code).toBe(0);
 *   expectSameOutbox(readOutbox(s.world), control);        // (c)
 *   await s.close();
 *
 * Deposits are deterministic (seeded PRNG, fixed producer seeds), so two worlds built with the
 * same options hold the same signals with the same objectIds, and their outboxes compare whole.
 */

/** Two e-services; hex-only uuids so that the world's purpose ids derive from them. */
export const FAULT_ESERVICES = ['a1a1a1a1-0000-4000-8000-00000000000a', 'b2b2b2b2-0000-4000-8000-00000000000b'] as const;

export interface FaultScenarioOptions {
  /** How many of FAULT_ESERVICES to follow (default 2). */
  eservices?: 1 | 2;
  /** Signals deposited per e-service, SEEDUPDATE included (default 150: 8 pages of 20). */
  signals?: number;
  /** Overrides of the `[hub]`, `[pdnd]` and `[crypto]` settings below (TOML values as JS values). */
  hub?: Record<string, number | string>;
  pdnd?: Record<string, number | string>;
  crypto?: Record<string, number | string>;
  simulator?: SimulatorOptions;
}

/** Small timeouts and retry delays, so that a fault test retries in well under a second. */
export const FAULT_HUB_SETTINGS = { page_size: 20, request_timeout_ms: 3000, max_retries: 3, max_retry_delay_ms: 200, max_rate_limit_wait_ms: 2000 };
export const FAULT_PDND_SETTINGS = { request_timeout_ms: 1000 };
export const FAULT_CRYPTO_SETTINGS = { request_timeout_ms: 3000, rotation_wait_seconds: 1 };

export interface FaultScenario {
  world: World;
  eserviceIds: string[];
  /** Per e-service: the signalIds that match a local subject (one `signal` event each). */
  matches: Map<string, number[]>;
  /** Per e-service: the SEEDUPDATE's signalId. */
  seedUpdates: Map<string, number>;
  close(): Promise<void>;
}

export const SUBJECT_COUNT = 50;

/**
 * A world with `SUBJECT_COUNT` local subjects (stored as `subjects import` does), a consumer that
 * already followed the e-services before the backlog began (one fault-free in-process sync on an
 * empty hub, so it knows the first seed), then per e-service `signals` deposits: ~20% matches of
 * local subjects, the rest other people's, and a SEEDUPDATE halfway.
 */
export async function createFaultScenario(options: FaultScenarioOptions = {}): Promise<FaultScenario> {
  const eserviceIds = FAULT_ESERVICES.slice(0, options.eservices ?? 2);
  const toml = [
    section('hub', { ...FAULT_HUB_SETTINGS, ...options.hub }),
    section('pdnd', { ...FAULT_PDND_SETTINGS, ...options.pdnd }),
    section('crypto', { ...FAULT_CRYPTO_SETTINGS, ...options.crypto }),
  ].join('\n');
  const world = await createWorld({
    eservices: eserviceIds.map((id, i) => ({ id, name: `es-${i}`, seed: `first-seed-${i}-Xzzh3pQqLp+VK7gG9NwR6w==` })),
    toml,
    ...(options.simulator ? { simulator: options.simulator } : {}),
  });
  try {
    const locals = Array.from({ length: SUBJECT_COUNT }, (_, i) => fiscalCode(1000 + i));
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
    return { world, eserviceIds, matches, seedUpdates, close: () => world.close() };
  } catch (err) {
    await world.close();
    throw err;
  }
}

function section(name: string, values: Record<string, number | string>): string {
  return `[${name}]\n${Object.entries(values)
    .map(([k, v]) => `${k} = ${JSON.stringify(v)}`)
    .join('\n')}\n`;
}

/** The real engine in this process, fault-free: only to bring a scenario to its starting point. */
async function syncInProcess(world: World): Promise<void> {
  const store = openWriter(world.config, 'fault scenario setup');
  const remotes = createRemotes(world.config, { logger: silentLogger });
  try {
    const engine = createEngine(world.config, store.db, remotes, { logger: silentLogger });
    const results = await catchUpAll(engine, world.config.eservices.map((e) => e.id), { concurrency: 2 });
    for (const r of results) if (r.error !== undefined) throw r.error;
  } finally {
    await closeRemotes(remotes);
    store.close();
  }
}

/** `sync --once` of the scenario's config as a child process. */
export function runSync(world: World, args: string[] = [], timeoutMs = 60_000): Promise<CliResult> {
  return runCli(['--config', world.configFile, 'sync', '--once', ...args], { timeoutMs });
}

/** An outbox event as compared across worlds: the stored JSON minus the times it was made. */
export interface ComparableEvent {
  eventId: string;
  kind: string;
  event: Record<string, unknown>;
}

/**
 * Every outbox event, sorted by id (e-services interleave in any order), without receivedAt and
 * createdAt, and with `epoch` (a local row id, numbered across e-services in whatever order
 * their runs create epochs) replaced by what it stands for: the epoch's start signal and seed
 * fingerprint.
 */
export function readOutbox(world: World): ComparableEvent[] {
  const db = openDatabase(world.config.database, { readonly: true });
  try {
    const epochs = new Map(
      (db.prepare('SELECT id, start_signal_id AS start, seed_fingerprint AS fp FROM epochs').all() as { id: number; start: number; fp: string | null }[]).map((e) => [e.id, `from ${e.start}, seed ${e.fp}`]),
    );
    return new OutboxStore(db)
      .readAfter(0, 1_000_000)
      .map((row) => {
        const { receivedAt: _r, createdAt: _c, ...event } = JSON.parse(row.payload) as Record<string, unknown>;
        if (typeof event.epoch === 'number') event.epoch = epochs.get(event.epoch) ?? `missing epoch ${event.epoch}`;
        return { eventId: row.eventId, kind: row.kind, event };
      })
      .sort((a, b) => (a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0));
  } finally {
    db.close();
  }
}

/** (c): the outbox is exactly the control's, event for event, field for field. */
export function expectSameOutbox(actual: ComparableEvent[], control: ComparableEvent[]): void {
  expect(actual.length).toBe(control.length);
  expect(actual).toEqual(control);
}

/** The cursor of each e-service (0 when never synced). */
export function readCursors(world: World): Map<string, number> {
  const db = openDatabase(world.config.database, { readonly: true });
  try {
    const store = new EServiceStore(db);
    return new Map(world.config.eservices.map((e) => [e.id, store.get(e.id)?.cursor ?? 0]));
  } finally {
    db.close();
  }
}

/**
 * (b): for each e-service, the outbox holds exactly the expected events at or below the cursor
 * and none above it: the cursor never passed a signal it did not process. Returns the cursors.
 */
export function expectCursorNeverPassesUnprocessed(scenario: FaultScenario): Map<string, number> {
  const cursors = readCursors(scenario.world);
  const events = readOutbox(scenario.world);
  for (const es of scenario.eserviceIds) {
    const cursor = cursors.get(es)!;
    const stored = events.filter((e) => e.kind === 'signal' && e.event.eserviceId === es).map((e) => e.event.signalId as number);
    const expected = scenario.matches.get(es)!.filter((id) => id <= cursor);
    expect(stored.sort((a, b) => a - b), `e-service ${es} at cursor ${cursor}`).toEqual(expected);
  }
  return cursors;
}

/** The outbox of the fault-free run of a scenario (built, synced by a `sync --once` child, read, closed). */
export async function controlOutbox(options: FaultScenarioOptions = {}): Promise<{ events: ComparableEvent[]; tokensIssued: number; scenario: Omit<FaultScenario, 'world' | 'close'> }> {
  const scenario = await createFaultScenario(options);
  try {
    const tokensBefore = scenario.world.sim.stats().tokensIssued;
    const run = await runSync(scenario.world);
    expect(run.code, run.stderr).toBe(0);
    const events = readOutbox(scenario.world);
    // The control itself is right: one event per deposited match, nothing else.
    expect(events.map((e) => e.eventId)).toEqual(
      [...scenario.matches].flatMap(([es, ids]) => ids.map((id) => `${es}:${id}`)).sort(),
    );
    expect(events.every((e) => e.kind === 'signal')).toBe(true);
    const { world: _w, close: _c, ...rest } = scenario;
    return { events, tokensIssued: scenario.world.sim.stats().tokensIssued - tokensBefore, scenario: rest };
  } finally {
    await scenario.close();
  }
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
