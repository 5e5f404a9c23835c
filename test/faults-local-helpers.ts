import { expect } from 'vitest';
import { silentLogger } from '../src/log.js';
import type { EServiceRegistration } from '../src/simulator/index.js';
import { openDatabase } from '../src/store/db.js';
import { EServiceStore } from '../src/store/eservices.js';
import { OutboxStore } from '../src/store/outbox.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import { catchUpAll } from '../src/sync/catchup.js';
import { closeRemotes, createEngine, createRemotes } from '../src/sync/runtime.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { seededRandom } from './helpers/random.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';

/**
 * The scenario of the local fault suites (faults-crypto, faults-store, faults-sink): the
 * producer's crypto endpoint, the database and the disk, the sinks.
 *
 * Deposits are deterministic (seeded PRNG, fixed producer seeds), so two worlds built with the
 * same options hold the same signals with the same objectIds: a control world without the fault
 * gives the outbox the faulty world must end up with, event for event.
 */

export const ES_A = 'c3c3c3c3-0000-4000-8000-00000000000c';
export const ES_B = 'd4d4d4d4-0000-4000-8000-00000000000d';
export const SUBJECTS = 50;
export const FIRST_SEED = 'local-first-seed-Xzzh3pQqLp+VK7gG9NwR6w==';
export const SECOND_SEED = 'local-second-seed-9NwR6w+VK7gG==';

export interface LocalScenarioOptions {
  /** Followed e-services: ES_A, or ES_A and ES_B (default 1). */
  eservices?: 1 | 2;
  /** Signals deposited per e-service, the SEEDUPDATE (halfway) included. Default 150: 8 pages of 20. */
  signals?: number;
  /** Local subjects (default SUBJECTS). */
  subjects?: number;
  /** Extra simulator settings of every e-service (staleReads, ...). */
  registration?: Partial<EServiceRegistration>;
  /** More `[hub]` keys, one per line. */
  hub?: string;
  /** Replaces the default `[crypto]` section. */
  crypto?: string;
  /** More TOML (sections other than [hub] and [crypto]). */
  toml?: string;
  /** Deposit the backlog only when the returned `deposit()` is called (default: at once). */
  deferDeposits?: boolean;
}

export interface LocalScenario {
  world: World;
  eserviceIds: string[];
  /** Per e-service: the SEEDUPDATE's signalId (once deposited). */
  seedUpdates: Map<string, number>;
  /** Per e-service: the signalIds matching a local subject. */
  matches: Map<string, number[]>;
  deposit(): void;
  close(): Promise<void>;
}

/**
 * A world whose consumer already follows the e-services (one fault-free in-process sync on an
 * empty hub: it knows the first seed, `known` since the producer sends `signalId`), with local
 * subjects, then per e-service a backlog of `signals`: ~20% about local subjects, the rest about
 * other people, a SEEDUPDATE (to SECOND_SEED) halfway.
 */
export async function createLocalScenario(options: LocalScenarioOptions = {}): Promise<LocalScenario> {
  const eserviceIds = [ES_A, ES_B].slice(0, options.eservices ?? 1);
  const world = await createWorld({
    eservices: eserviceIds.map((id, i) => ({ id, name: `local-${i}`, seed: `${FIRST_SEED}${i}`, includeSignalId: true, ...options.registration })),
    toml: `[hub]\npage_size = 20\nmax_retries = 2\nmax_retry_delay_ms = 200\n${options.hub ?? ''}\n\n${options.crypto ?? '[crypto]\nrotation_wait_seconds = 3'}\n\n${options.toml ?? ''}`,
  });
  try {
    const locals = Array.from({ length: options.subjects ?? SUBJECTS }, (_, i) => fiscalCode(2000 + i));
    const db = openDatabase(world.config.database);
    try {
      new SubjectWriter(db, { index: subjectIndexOptions(world.config) }).upsertBatch(locals.map((key, i) => ({ key, ref: `ref-${i}`, eservices: 'all' as const })));
    } finally {
      db.close();
    }
    await syncInProcess(world);
    const seedUpdates = new Map<string, number>();
    const matches = new Map<string, number[]>();
    const deposit = () => {
      eserviceIds.forEach((es, index) => {
        const rnd = seededRandom(777 + index);
        const count = options.signals ?? 150;
        const matched: number[] = [];
        for (let i = 0; i < count; i++) {
          if (i === Math.floor(count / 2)) {
            seedUpdates.set(es, world.sim.rotateSeed(es, `${SECOND_SEED}${index}`));
            continue;
          }
          const signalType = ['CREATE', 'UPDATE', 'DELETE'][Math.floor(rnd() * 3)]!;
          const objectType = rnd() < 0.5 ? 'residence' : 'IDcard';
          if (rnd() < 0.2) matched.push(world.sim.depositForSubject(es, locals[Math.floor(rnd() * locals.length)]!, signalType, objectType));
          else world.sim.depositForSubject(es, fiscalCode(80_000 + Math.floor(rnd() * 5000)), signalType, objectType);
        }
        matches.set(es, matched);
      });
    };
    if (!options.deferDeposits) deposit();
    return { world, eserviceIds, seedUpdates, matches, deposit, close: () => world.close() };
  } catch (err) {
    await world.close();
    throw err;
  }
}

/** The real engine in this process, fault-free, to bring a world to its starting point. */
export async function syncInProcess(world: World): Promise<void> {
  const db = openDatabase(world.config.database);
  const remotes = createRemotes(world.config, { logger: silentLogger });
  try {
    const engine = createEngine(world.config, db, remotes, { logger: silentLogger });
    // One at a time: epoch ids are global, and events carry them, so worlds must number alike.
    const results = await catchUpAll(engine, world.config.eservices.map((e) => e.id), { concurrency: 1 });
    for (const r of results) if (r.error !== undefined) throw r.error;
  } finally {
    await closeRemotes(remotes);
    db.close();
  }
}

/** `sync --once` as a child process. */
export function runSync(world: World, args: string[] = []): Promise<CliResult> {
  return runCli(['--config', world.configFile, 'sync', '--once', ...args], { timeoutMs: 90_000 });
}

/** An outbox event as compared across worlds: its stored JSON minus the times it was made. */
export interface ComparableEvent {
  eventId: string;
  kind: string;
  event: Record<string, unknown>;
}

/** Every outbox event in outbox order, without receivedAt/createdAt. */
export function readOutbox(world: World): ComparableEvent[] {
  const db = openDatabase(world.config.database, { readonly: true });
  try {
    return new OutboxStore(db).all().map((row) => {
      const { receivedAt: _r, createdAt: _c, ...event } = JSON.parse(row.payload) as Record<string, unknown>;
      return { eventId: row.eventId, kind: row.kind, event };
    });
  } finally {
    db.close();
  }
}

/** Sorted by event id: with two e-services synced concurrently, the interleaving may differ. */
export function byEventId(events: ComparableEvent[]): ComparableEvent[] {
  return [...events].sort((a, b) => (a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0));
}

export function readCursor(world: World, eserviceId: string): number {
  const db = openDatabase(world.config.database, { readonly: true });
  try {
    return new EServiceStore(db).get(eserviceId)?.cursor ?? 0;
  } finally {
    db.close();
  }
}

/**
 * (b) The cursor never passes an unprocessed signal: the outbox holds exactly the control's
 * events at or below the cursor, and none above it. Returns the cursor.
 */
export function expectOutboxUpToCursor(world: World, eserviceId: string, control: ComparableEvent[]): number {
  const cursor = readCursor(world, eserviceId);
  const mine = (events: ComparableEvent[]) =>
    events.filter((e) => e.event.eserviceId === eserviceId && e.kind === 'signal').sort((a, b) => (a.event.signalId as number) - (b.event.signalId as number));
  expect(mine(readOutbox(world)), `e-service ${eserviceId} at cursor ${cursor}`).toEqual(mine(control).filter((e) => (e.event.signalId as number) <= cursor));
  return cursor;
}

/** Pino JSON lines of a child's stderr. */
export function logLines(stderr: string): Record<string, any>[] {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, any>);
}

/** (a) A log line whose `err` names `code` (and `status`, with the remote's correlationId). */
export function expectErrorLogged(stderr: string, code: string, status?: number): Record<string, any> {
  const line = logLines(stderr).find((l) => l.err?.code === code && (status === undefined || l.err?.status === status));
  expect(line, `no log line with err.code ${code} in:\n${stderr.slice(-3000)}`).toBeDefined();
  if (status !== undefined) expect(line!.err.correlationId).toMatch(/^[0-9a-f-]{36}$/);
  return line!;
}
