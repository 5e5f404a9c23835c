/**
 * A model of the whole sync engine's world (issue 12): a producer in any seed mode, a hub with
 * its time window and retention, a consumer that runs now and then with its subjects changing
 * in between; in-process fakes that serve that world to the real SyncEngine through its
 * PageSource and CryptoSource interfaces (src/sync/engine.ts); and an oracle, written from
 * SPEC §3/§8/§10 and the seed epoch rules without reading the engine, that says for every
 * change signal whether a perfect consumer matches it, reports it, or may do either.
 *
 * Independence: pseudonyms are computed here with node:crypto (GovWay's recipe,
 * base64(SHA-256(subject + seed)), checked against test/fixtures/pseudonyms.json), never with
 * the product's PseudonymHasher; the oracle reads only the world and the outbox.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import type { Config, EServiceConfig } from '../../src/config/types.js';
import { parseConfigText } from '../../src/config/load.js';
import type { CryptoInfo } from '../../src/crypto/crypto-info-client.js';
import { AppError } from '../../src/errors.js';
import type { Page } from '../../src/hub/types.js';
import { parsePullBody } from '../../src/hub/validate.js';
import { createLogger, silentLogger } from '../../src/log.js';
import { openDatabase, type Db } from '../../src/store/db.js';
import { EServiceStore } from '../../src/store/eservices.js';
import { OutboxStore } from '../../src/store/outbox.js';
import { ResyncStore } from '../../src/store/resync.js';
import { SubjectWriter } from '../../src/subjects/apply.js';
import { subjectIndexOptions } from '../../src/subjects/import.js';
import { SyncEngine, type CryptoSource, type PageSource, type SyncEngineOptions } from '../../src/sync/engine.js';
import { writeKeyFile } from './keys.js';
import { fiscalCode } from './world.js';

export const MODEL_ES = '77777777-7777-4777-8777-777777777777';
const PURPOSE = '88888888-8888-4888-8888-888888888888';
/** Local subjects the consumer may hold (indexes 0..UNIVERSE-1); higher indexes are strangers. */
export const UNIVERSE = 6;
export const STRANGERS = 3;
/** The hub's time window (SPEC §3: 10 s in production): a signal is visible this long after insertion. */
export const WINDOW_MS = 10_000;
/** How long after a SEEDUPDATE is visible a short race may last (the default crypto.rotation_wait_seconds). */
const RACE_MS = 120_000;
const DAY_MS = 86_400_000;
const RETENTION_DAYS = 30;
/** A stale race at least this long outlasts any wait the rules allow (a "huge" race). */
const HUGE_STALE = 1000;
/** Every crypto-info request takes this long on the world's clock. */
const CRYPTO_LATENCY_MS = 50;

// ---- scenarios -------------------------------------------------------------------------------

export type Junk = 'none' | 'emptyObjectId' | 'emptyObjectType' | 'badObjectId';
export type ChangeType = 'CREATE' | 'UPDATE' | 'DELETE' | 'FROBNICATE';

export interface DepositSpec {
  /** 0..UNIVERSE-1: a local subject; above: a stranger. */
  who: number;
  type: ChangeType;
  junk: Junk;
  /** Ids left unused before this one (room for late lower ids). */
  gap: number;
}

export type Step =
  | { kind: 'deposit'; signals: DepositSpec[] }
  /** A SEEDUPDATE; `stale`: crypto reads that still see the old seed; `lateMs` > 0: the SEEDUPDATE is pushed that much after the signals that follow it. */
  | { kind: 'rotate'; stale: number; lateMs: number }
  /** A signal with an id lower than the highest, pushed while the highest is younger than the window. */
  | { kind: 'late'; signal: DepositSpec; pick: number }
  | { kind: 'run' }
  | { kind: 'advance'; ms: number }
  | { kind: 'subjects'; add: number[]; remove: number[] };

export interface ProducerMode {
  /** The consumer's `crypto_history` setting. */
  cryptoHistory: boolean;
  /** Seeds the producer keeps for `?signalId=S` (1 = only the current one; 0 = none). */
  depth: number;
  includeSignalId: boolean;
}

export interface Scenario {
  mode: ProducerMode;
  pageSize: number;
  /** undefined: a fresh start at cursor 0; a fraction: an operator sets the cursor that far into the backlog before the first run. */
  operatorCursor: number | undefined;
  initialSubjects: number[];
  steps: Step[];
}

const changeType = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom<ChangeType>('CREATE', 'UPDATE', 'DELETE') },
  { weight: 1, arbitrary: fc.constant<ChangeType>('FROBNICATE') },
);
const junk = fc.oneof(
  { weight: 14, arbitrary: fc.constant<Junk>('none') },
  { weight: 1, arbitrary: fc.constantFrom<Junk>('emptyObjectId', 'emptyObjectType', 'badObjectId') },
);
const depositSpec = fc.record({ who: fc.nat({ max: UNIVERSE + STRANGERS - 1 }), type: changeType, junk, gap: fc.nat({ max: 2 }) });
const subjectIndexes = fc.uniqueArray(fc.nat({ max: UNIVERSE - 1 }), { maxLength: 3 });

const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('deposit' as const), signals: fc.array(depositSpec, { minLength: 1, maxLength: 6 }) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('rotate' as const),
      stale: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.integer({ min: 1, max: 3 }) }, { weight: 1, arbitrary: fc.constant(100_000) }),
      lateMs: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1000, max: WINDOW_MS - 1000 }) }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('late' as const), signal: depositSpec, pick: fc.nat({ max: 7 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('run' as const) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('advance' as const),
      ms: fc.oneof(
        { weight: 5, arbitrary: fc.integer({ min: 100, max: 15_000 }) },
        { weight: 2, arbitrary: fc.integer({ min: 3_600_000, max: 3 * DAY_MS }) },
        { weight: 1, arbitrary: fc.integer({ min: (RETENTION_DAYS + 1) * DAY_MS, max: (RETENTION_DAYS + 10) * DAY_MS }) },
      ),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('subjects' as const), add: subjectIndexes, remove: subjectIndexes }) },
);

export const scenarioArbitrary: fc.Arbitrary<Scenario> = fc
  .record({
    mode: fc.record({ cryptoHistory: fc.boolean(), depth: fc.integer({ min: 0, max: 4 }), includeSignalId: fc.boolean() }),
    pageSize: fc.oneof(fc.integer({ min: 1, max: 4 }), fc.constant(100)),
    operatorCursor: fc.option(fc.double({ min: 0.05, max: 0.95, noNaN: true }), { nil: undefined, freq: 4 }),
    initialSubjects: fc.uniqueArray(fc.nat({ max: UNIVERSE - 1 }), { minLength: 1, maxLength: UNIVERSE }),
    steps: fc.array(step, { minLength: 1, maxLength: 30 }),
  })
  .map((s) => {
    // A race longer than the wait, from a producer that neither keeps history nor says
    // `signalId`, cannot be told from "the backlog predates this seed": SPEC §8 bounds the race
    // by crypto.rotation_wait_seconds for exactly that reason, so such a producer races briefly.
    if (s.mode.cryptoHistory || s.mode.includeSignalId) return s;
    return { ...s, steps: s.steps.map((st) => (st.kind === 'rotate' && st.stale >= HUGE_STALE ? { ...st, stale: 3 } : st)) };
  });

// ---- the world -------------------------------------------------------------------------------

/** GovWay's recipe, computed independently of src/crypto: base64(SHA-256(subject + seed)). */
export function modelPseudonym(subjectKey: string, seed: string): string {
  return createHash('sha256').update(subjectKey + seed, 'utf8').digest('base64');
}

export interface WorldSignal {
  id: number;
  type: ChangeType | 'SEEDUPDATE';
  objectId: string;
  objectType: string;
  who: number | undefined;
  junk: Junk;
  insertedAt: number;
  /** Pushed with an id below one already stored (SPEC §10). */
  late: boolean;
  firstServedRun: number | undefined;
  /** Order of the first serving among all pulls (processing order). */
  firstServedSeq: number | undefined;
  /** Deleted by retention before it was ever served: the run whose pull found it gone. */
  lostInRun: number | undefined;
  deleted: boolean;
}

interface Rotation {
  /** 0 for the producer's first seed (GovWay numbers it 0). */
  id: number;
  seed: string;
}

/** The world as the consumer's run r found it when it started. */
export interface RunSnapshot {
  startedAt: number;
  /** Id of the newest seed the producer had (0 = the first). */
  newest: number;
  /** Seed ids the producer kept for `?signalId=`. */
  kept: Set<number>;
  /** Stale reads still pending on the newest seed. */
  staleLeft: number;
  subjects: Set<number>;
  cursorAfter: number | undefined;
  /** Time the engine slept in this run (rotation race waits). */
  slept: number;
}

export class ModelWorld {
  clock = Date.UTC(2026, 0, 5, 8, 0, 0);
  readonly signals = new Map<number, WorldSignal>();
  readonly rotations: Rotation[];
  staleLeft = 0;
  /**
   * SPEC §8: the race is "right after S becomes visible": a producer that still serves the old
   * seed long after is stuck (HUGE_STALE), not racing. Short races end with time as well as reads.
   */
  staleUntil = 0;

  private racing(): boolean {
    if (this.staleLeft <= 0) return false;
    if (this.staleLeft < HUGE_STALE && this.clock > this.staleUntil) this.staleLeft = 0;
    return this.staleLeft > 0;
  }
  maxId = 0;
  readonly subjects = new Set<number>();
  readonly runs: RunSnapshot[] = [];
  currentRun = -1;
  private served = 0;
  /** The consumer's starting cursor (operator cursor or 0): signals at or below it are not its business. */
  startCursor = 0;
  readonly cryptoCalls: { signalId: number | undefined; run: number }[] = [];

  constructor(
    readonly mode: ProducerMode,
    private readonly nonce: string,
  ) {
    this.rotations = [{ id: 0, seed: this.seedFor(0) }];
  }

  private seedFor(n: number): string {
    return createHash('sha256').update(`${this.nonce}:${n}`).digest('base64').slice(0, 24);
  }

  key(who: number): string {
    return fiscalCode(who * 37 + 11);
  }

  ref(who: number): string {
    return `ref-${who}`;
  }

  /** The seed in force for a signal id (SPEC §8: ids above S use seed(S)). */
  epochOf(id: number): Rotation {
    let found = this.rotations[0]!;
    for (const r of this.rotations) if (r.id < id && r.id >= found.id) found = r;
    return found;
  }

  private nextId(gap: number): number {
    this.maxId += 1 + gap;
    return this.maxId;
  }

  private objectFor(spec: DepositSpec, id: number): { objectId: string; objectType: string } {
    const seed = this.epochOf(id).seed;
    const objectId = spec.junk === 'emptyObjectId' ? '' : spec.junk === 'badObjectId' ? 'not a pseudonym!' : modelPseudonym(this.key(spec.who), seed);
    return { objectId, objectType: spec.junk === 'emptyObjectType' ? '' : 'residence' };
  }

  private add(s: Omit<WorldSignal, 'firstServedRun' | 'firstServedSeq' | 'lostInRun' | 'deleted'>): void {
    this.signals.set(s.id, { ...s, firstServedRun: undefined, firstServedSeq: undefined, lostInRun: undefined, deleted: false });
  }

  deposit(spec: DepositSpec): void {
    const id = this.nextId(spec.gap);
    this.add({ id, type: spec.type, ...this.objectFor(spec, id), who: spec.who, junk: spec.junk, insertedAt: this.clock, late: false });
  }

  rotate(stale: number, lateMs: number): void {
    const id = this.nextId(0);
    this.rotations.push({ id, seed: this.seedFor(this.rotations.length) });
    this.staleLeft = stale;
    this.staleUntil = this.clock + lateMs + WINDOW_MS + RACE_MS;
    this.add({ id, type: 'SEEDUPDATE', objectId: '-', objectType: 'seed', who: undefined, junk: 'none', insertedAt: this.clock + lateMs, late: lateMs > 0 });
  }

  /**
   * SPEC §10: a lower id is accepted while the higher ones stored are younger than the window
   * ("after a consumer has seen id X, a lower id can still appear for about one window; after
   * that, none can"): the hole must lie above every signal older than the window.
   */
  depositLate(spec: DepositSpec, pick: number): void {
    let floor = 0;
    for (const s of this.signals.values()) if (s.insertedAt <= this.clock - WINDOW_MS && s.id > floor) floor = s.id;
    const holes: number[] = [];
    for (let id = this.maxId - 1; id > floor && holes.length < 8; id--) if (!this.signals.has(id)) holes.push(id);
    if (holes.length === 0) return;
    const id = holes[pick % holes.length]!;
    this.add({ id, type: spec.type, ...this.objectFor(spec, id), who: spec.who, junk: spec.junk, insertedAt: this.clock, late: true });
  }

  private visibleAt(s: WorldSignal): number {
    return s.insertedAt + WINDOW_MS;
  }

  /** The hub deletes signals older than its retention, silently (SPEC §3). */
  private purge(): void {
    const horizon = this.clock - RETENTION_DAYS * DAY_MS;
    for (const s of this.signals.values()) {
      if (!s.deleted && s.insertedAt < horizon) {
        s.deleted = true;
        if (s.firstServedRun === undefined) s.lostInRun = this.currentRun;
      }
    }
  }

  readonly hub: PageSource = {
    pull: async (eserviceId: string, cursor: number, size = 10): Promise<Page> => {
      if (eserviceId !== MODEL_ES) throw new Error(`model hub: unknown e-service ${eserviceId}`);
      this.purge();
      const stored = [...this.signals.values()].filter((s) => !s.deleted && s.id > cursor).sort((a, b) => a.id - b.id);
      const visible = stored.filter((s) => this.visibleAt(s) <= this.clock);
      const page = visible.slice(0, size);
      for (const s of page) {
        if (s.firstServedRun !== undefined) continue;
        s.firstServedRun = this.currentRun;
        s.firstServedSeq = ++this.served;
      }
      const last = page.at(-1)?.id ?? null;
      // SPEC §3: the 206 check ignores the time window.
      const more = last !== null && stored.some((s) => s.id > last);
      // The wire body, parsed by the hub client's own edge parser: the engine sees exactly what
      // the real client hands it (junk signals marked `skip`, SPEC §10).
      const body = JSON.stringify({ signals: page.map((s) => ({ signalId: s.id, signalType: s.type, objectId: s.objectId, objectType: s.objectType, eserviceId })), lastSignalId: last });
      return parsePullBody(body, { eserviceId, cursor, size, status: more ? 206 : 200 });
    },
  };

  readonly crypto: CryptoSource = {
    fetch: async (_es: EServiceConfig, opts: { signalId?: number } = {}): Promise<CryptoInfo> => {
      this.clock += CRYPTO_LATENCY_MS;
      this.cryptoCalls.push({ signalId: opts.signalId, run: this.currentRun });
      const newest = this.rotations.at(-1)!;
      const previous = this.rotations.at(-2);
      let entry: Rotation | undefined;
      if (opts.signalId !== undefined) {
        const kept = this.rotations.slice(Math.max(0, this.rotations.length - this.mode.depth));
        entry = kept.find((r) => r.id === opts.signalId);
        // During the race the producer does not know its new seed yet.
        if (entry === newest && previous && this.racing()) {
          this.staleLeft--;
          entry = undefined;
        }
        if (!entry) throw new AppError('CRYPTO_NOT_FOUND', `model producer: no crypto info introduced by signalId ${opts.signalId}`);
      } else {
        entry = newest;
        if (previous && this.racing()) {
          this.staleLeft--;
          entry = previous;
        }
      }
      const fingerprint = createHash('sha256').update(entry.seed, 'utf8').digest('hex').slice(0, 8);
      return { seed: entry.seed, cryptoHashFunction: 'SHA-256', fingerprint, signalId: this.mode.includeSignalId ? entry.id : undefined };
    },
  };

  /** Called before each consumer run. */
  beginRun(): number {
    const kept = new Set(this.rotations.slice(Math.max(0, this.rotations.length - this.mode.depth)).map((r) => r.id));
    this.racing(); // a race that time has ended is over for this run's snapshot too
    this.runs.push({ startedAt: this.clock, newest: this.rotations.at(-1)!.id, kept, staleLeft: this.staleLeft, subjects: new Set(this.subjects), cursorAfter: undefined, slept: 0 });
    this.currentRun = this.runs.length - 1;
    return this.currentRun;
  }

  /** A fake clock: the engine's rotation wait advances the world instead of sleeping. */
  readonly sleep = async (ms: number, signal?: AbortSignal): Promise<void> => {
    signal?.throwIfAborted();
    this.clock += Math.max(0, ms);
    const run = this.runs[this.currentRun];
    if (run) run.slept += Math.max(0, ms);
    await Promise.resolve();
  };

  readonly now = (): number => this.clock;
}

// ---- running a scenario against the real engine ---------------------------------------------

const configCache = new Map<string, Config>();

/** A real, validated config for the model's single e-service (keys written once into `dir`). */
export function modelConfig(dir: string, opts: { cryptoHistory: boolean; pageSize: number; rotationWaitSeconds: number }): Config {
  const cacheKey = `${dir}|${opts.cryptoHistory}|${opts.pageSize}|${opts.rotationWaitSeconds}`;
  const cached = configCache.get(cacheKey);
  if (cached) return cached;
  if (!fs.existsSync(path.join(dir, 'm2m.pem'))) {
    writeKeyFile(dir, 'm2m.pem');
    writeKeyFile(dir, 'eservice.pem');
  }
  const text = `preset = "production"
database = "model.db"

[hub]
page_size = ${opts.pageSize}

[crypto]
rotation_wait_seconds = ${opts.rotationWaitSeconds}

[pdnd.m2m]
client_id = "11111111-1111-4111-8111-111111111111"
key_id = "kid-m2m"
private_key_file = "m2m.pem"

[pdnd.eservice_client]
client_id = "22222222-2222-4222-8222-222222222222"
key_id = "kid-es"
private_key_file = "eservice.pem"

[[eservices]]
id = "${MODEL_ES}"
name = "model"
purpose_id = "${PURPOSE}"
crypto_info_url = "https://producer.example.it/pseudonymization"
crypto_history = ${opts.cryptoHistory}
`;
  const config = parseConfigText(text, { file: path.join(dir, 'config.toml'), env: {} });
  configCache.set(cacheKey, config);
  return config;
}

export interface ModelRun {
  world: ModelWorld;
  db: Db;
  config: Config;
  /** Errors the engine threw in a run (none is allowed). */
  failures: { run: number; error: unknown }[];
  finalCursor: number;
}

export interface RunOptions {
  dir: string;
  dbFile: string;
  rotationWaitSeconds: number;
  nonce: string;
}

/** Plays a scenario: the world evolves, the real engine runs at each `run` step and at the end until caught up. */
export async function playScenario(scenario: Scenario, opts: RunOptions): Promise<ModelRun> {
  const world = new ModelWorld(scenario.mode, opts.nonce);
  const config = modelConfig(opts.dir, { cryptoHistory: scenario.mode.cryptoHistory, pageSize: scenario.pageSize, rotationWaitSeconds: opts.rotationWaitSeconds });
  const db = openDatabase(opts.dbFile);
  const writer = new SubjectWriter(db, { index: subjectIndexOptions(config), now: world.now });
  const eservices = new EServiceStore(db);
  const engineOptions: SyncEngineOptions = {
    db,
    config,
    hub: world.hub,
    crypto: world.crypto,
    logger: process.env.MODEL_LOG ? createLogger({ level: "debug" }) : silentLogger,
    now: world.now,
    sleep: world.sleep,
  };
  const engine = new SyncEngine(engineOptions);
  const failures: ModelRun['failures'] = [];
  const setSubjects = (add: number[], remove: number[]) => {
    const adds = add.filter((w) => !world.subjects.has(w));
    const removes = remove.filter((w) => world.subjects.has(w) && !add.includes(w));
    if (adds.length > 0) writer.upsertBatch(adds.map((w) => ({ key: world.key(w), ref: world.ref(w), eservices: 'all' as const })));
    if (removes.length > 0) writer.removeKeys(removes.map((w) => world.key(w)));
    for (const w of adds) world.subjects.add(w);
    for (const w of removes) world.subjects.delete(w);
  };
  setSubjects(scenario.initialSubjects, []);
  let started = false;
  const run = async (): Promise<boolean> => {
    if (!started) {
      started = true;
      if (scenario.operatorCursor !== undefined && world.maxId > 1) {
        world.startCursor = Math.max(1, Math.floor(world.maxId * scenario.operatorCursor));
        eservices.ensure(MODEL_ES, 'model', world.clock);
        eservices.setCursor(MODEL_ES, world.startCursor);
      }
    }
    const r = world.beginRun();
    let caughtUp = false;
    try {
      caughtUp = (await engine.syncEService(MODEL_ES)).caughtUp;
    } catch (error) {
      failures.push({ run: r, error });
    }
    world.runs[r]!.cursorAfter = eservices.get(MODEL_ES)?.cursor;
    world.clock += 1000;
    return caughtUp;
  };
  for (const st of scenario.steps) {
    switch (st.kind) {
      case 'deposit':
        for (const s of st.signals) world.deposit(s);
        world.clock += 200;
        break;
      case 'rotate':
        world.rotate(st.stale, st.lateMs);
        world.clock += 100;
        break;
      case 'late':
        world.depositLate(st.signal, st.pick);
        break;
      case 'run':
        await run();
        break;
      case 'advance':
        world.clock += st.ms;
        break;
      case 'subjects':
        setSubjects(st.add, st.remove);
        break;
    }
  }
  // Quiesce: everything pushed becomes visible, then the consumer catches up.
  world.clock += 2 * WINDOW_MS + Math.max(0, ...[...world.signals.values()].map((s) => s.insertedAt - world.clock));
  for (let i = 0; i < 4; i++) if (await run()) break;
  return { world, db, config, failures, finalCursor: eservices.get(MODEL_ES)?.cursor ?? 0 };
}

// ---- the oracle -----------------------------------------------------------------------------

/**
 * yes: a perfect consumer has this seed (events, no report); no: it cannot (reports);
 * maybe: the rules allow either, never neither; excused: no consumer can tell (only (b) holds).
 */
export type Knowable = { is: 'yes' } | { is: 'no'; why: string } | { is: 'maybe'; why: string } | { is: 'excused'; why: string };

/**
 * Whether a consumer following SPEC §8 and the seed epoch rules can have the seed of the epoch
 * opened at `start` (0 = the producer's first seed), given the run in which it needs it.
 * `initial`: the epoch in force at the consumer's starting cursor, resolved before the first
 * SEEDUPDATE (the rules' "initial epoch").
 */
export function epochKnowable(world: ModelWorld, start: number, run: RunSnapshot, initial: boolean, afterExcused = false): Knowable {
  const { mode } = world;
  const previousOfNewest = (() => {
    const i = world.rotations.findIndex((r) => r.id === run.newest);
    return i > 0 ? world.rotations[i - 1]!.id : undefined;
  })();
  const racing = run.staleLeft > 0 && previousOfNewest !== undefined;
  const huge = run.staleLeft >= HUGE_STALE;
  // Without `?signalId`: the producer's current seed, which is this epoch's only when it is the newest.
  const current = (): Knowable => {
    if (start === run.newest) {
      if (!racing) return { is: 'yes' };
      // Misled by an excused stale read before, the consumer's belief is not the previous seed,
      // so the race's stale answer does not look stale: nothing tells it without history or signalId.
      if (afterExcused && !mode.cryptoHistory && !mode.includeSignalId) return { is: 'excused', why: 'race after an excused epoch' };
      // A race shorter than the wait is ridden out unless a wait already expired in this run
      // (one full wait per run): timing the model does not predict, so either outcome.
      return huge && (mode.includeSignalId || mode.cryptoHistory) ? { is: 'no', why: 'race outlasts the wait' } : { is: 'maybe', why: 'race shorter than the wait' };
    }
    // A consumer misled by an excused stale read (below) believes a wrong seed, so a stale
    // answer no longer equals its belief; without history or signalId nothing tells it.
    if (racing && afterExcused && !mode.cryptoHistory && !mode.includeSignalId) return { is: 'excused', why: 'stale read after an excused epoch' };
    // A racing producer serves the previous seed: by luck, this epoch's.
    if (racing && start === previousOfNewest) return { is: 'maybe', why: 'stale read served this epoch\'s own seed' };
    return { is: 'no', why: `a later seed (${run.newest}) was current when the consumer needed it` };
  };
  // An operator cursor at or past the newest SEEDUPDATE while the producer still serves the
  // previous seed: the stale answer (signalId <= cursor, or none) is indistinguishable from a
  // producer that never rotated, and no SEEDUPDATE is ever read to start a wait. Nothing in
  // SPEC §8 can detect it; the oracle only asks that no wrong event is written.
  if (initial && racing && start === run.newest && start <= world.startCursor && !(mode.cryptoHistory && world.startCursor === 0)) {
    return { is: 'excused', why: 'initial fetch served stale with the SEEDUPDATE behind the operator cursor' };
  }
  if (mode.cryptoHistory && (!initial || world.startCursor === 0)) {
    if (run.kept.has(start)) {
      if (start === run.newest && racing) return huge ? { is: 'no', why: 'history race outlasts the wait (404)' } : { is: 'maybe', why: 'history race shorter than the wait' };
      return { is: 'yes' };
    }
    // The rules fall through to the current seed only for the first seed of a fresh start.
    if (initial) return current();
    return { is: 'no', why: `seed ${start} no longer kept (depth ${mode.depth})` };
  }
  return current();
}

export interface ExpectedSignal {
  signal: WorldSignal;
  /** The subject a perfect consumer reports, if the signal concerns a present local subject. */
  who: number | undefined;
  knowable: Knowable;
}

export interface Verdict {
  violations: string[];
  expected: ExpectedSignal[];
  stats: { events: number; reports: number; yes: number; no: number; maybe: number };
}

interface ReportRange {
  from: number;
  to: number;
  reason: string;
}

/** Checks properties (a)–(e) of issue 12 on a played scenario. */
export function judge(played: ModelRun): Verdict {
  const { world, db } = played;
  const violations: string[] = [];
  const outbox = new OutboxStore(db).all();
  const events = outbox.filter((r) => r.kind === 'signal').map((r) => JSON.parse(r.payload) as { id: string; signalId: number; subjectRef: string | null; signalType: string; objectId: string; backfilled?: boolean });
  const reports: ReportRange[] = outbox
    .filter((r) => r.kind === 'resync-required')
    .map((r) => JSON.parse(r.payload) as { fromSignalId: number; toSignalId: number; reason: string })
    .map((r) => ({ from: r.fromSignalId, to: r.toSignalId, reason: r.reason }));
  const covered = (id: number, exceptRetention = false) => reports.some((r) => r.from <= id && id <= r.to && !(exceptRetention && r.reason === 'retention-gap'));

  for (const f of played.failures) violations.push(`run ${f.run} threw: ${f.error instanceof Error ? `${(f.error as { code?: string }).code ?? ''} ${f.error.message}` : String(f.error)}`);

  // (e) no duplicate event ids; ids say which signal.
  const ids = new Set<string>();
  for (const r of outbox) {
    if (ids.has(r.eventId)) violations.push(`(e) duplicate event id ${r.eventId}`);
    ids.add(r.eventId);
  }
  const open = new ResyncStore(db).growing(MODEL_ES);
  if (open.length > 0 && played.failures.length === 0) violations.push(`reports still open after a caught-up run: ${open.map((r) => `${r.fromSignalId}..${r.toSignalId} ${r.reason}`).join(', ')}`);

  // Epochs: where each starts, and the run in which the consumer needed its seed.
  const c0 = world.startCursor;
  const firstRun = world.runs[0];
  const epochVerdict = new Map<number, Knowable>();
  const verdictOf = (start: number): Knowable => {
    const cached = epochVerdict.get(start);
    if (cached) return cached;
    let k: Knowable;
    const next = world.rotations.find((r) => r.id > start);
    const initial = start <= c0 && (next === undefined || next.id > c0);
    if (!firstRun) k = { is: 'maybe', why: 'no run' };
    else if (initial) {
      k = epochKnowable(world, start, firstRun, true);
      // Without signalId, and without history from cursor 0, the first seed is an assumption:
      // a consumer cannot tell a SEEDUPDATE inserted just after its first fetch from one the
      // window hid at that moment, so reporting the first epoch at its first SEEDUPDATE is allowed
      // (the README's "Seed epochs in every producer mode"); matching it must still be right.
      const firstSeedKept = world.rotations.filter((r) => r.id <= firstRun.newest).length <= world.mode.depth;
      const assumed = !world.mode.includeSignalId && !(world.mode.cryptoHistory && c0 === 0 && firstSeedKept);
      if (k.is === 'yes' && assumed && world.rotations.some((r) => r.id > c0)) k = { is: 'maybe', why: 'the first seed is an assumption' };
    }
    else {
      const su = world.signals.get(start)!;
      // Deleted before any run pulled it while the producer still served the seed before it (a
      // stale read at the first fetch): no trace of the rotation is left anywhere to see.
      // Deleted before the first run ever pulled (it existed then and was never served): a fresh
      // consumer has no trace of it. The README states this limit ("Seed epochs in every
      // producer mode"): from cursor 0 with history the first seed is taken for the backlog.
      if (su.firstServedRun === undefined && firstRun.newest >= start && (firstRun.staleLeft > 0 || world.mode.cryptoHistory)) k = { is: 'excused', why: `SEEDUPDATE ${start} deleted by retention before the first pull` };
      // A producer stuck on its old seed (a race that outlasts every wait) whose SEEDUPDATE the
      // retention deleted: its answers deny the rotation and nothing else shows it.
      else if (su.firstServedRun === undefined && world.runs.some((r) => r.newest >= start && r.staleLeft >= HUGE_STALE)) k = { is: 'excused', why: `SEEDUPDATE ${start} deleted by retention while the producer was stuck on the old seed` };
      else if (su.firstServedRun === undefined) k = { is: 'maybe', why: `SEEDUPDATE ${start} deleted by retention before it was served` };
      else {
        const before = [...world.rotations].reverse().find((r) => r.id < start);
        const afterExcused = before !== undefined && before.id >= 0 && verdictOf(before.id).is === 'excused';
        k = epochKnowable(world, start, world.runs[su.firstServedRun]!, false, afterExcused);
        // Without history or signalId every seed after a SEEDUPDATE is an assumption too: until
        // the hub shows nothing more existed when it was fetched, the next SEEDUPDATE may report it.
        if (k.is === 'yes' && !world.mode.cryptoHistory && !world.mode.includeSignalId && world.rotations.some((r) => r.id > start)) k = { is: 'maybe', why: 'an assumed seed the next SEEDUPDATE came before the hub confirmed' };
      }
    }
    epochVerdict.set(start, k);
    return k;
  };

  const expected: ExpectedSignal[] = [];
  const byId = world.signals;
  for (const s of [...byId.values()].sort((a, b) => a.id - b.id)) {
    if (s.id <= c0) continue;
    if (s.type === 'SEEDUPDATE') {
      if (s.firstServedRun === undefined && !s.deleted) violations.push(`(a) SEEDUPDATE ${s.id} was never pulled`);
      continue;
    }
    const epoch = world.epochOf(s.id);
    let knowable = verdictOf(epoch.id);
    const su = epoch.id > c0 ? byId.get(epoch.id) : undefined;
    // A SEEDUPDATE served after signals of its epoch: those were processed under the previous
    // seed; the rules report them (`late-seedupdate`), or the consumer met S first.
    if (su && s.firstServedSeq !== undefined && (su.firstServedSeq === undefined || su.firstServedSeq > s.firstServedSeq)) {
      if (knowable.is === 'yes') knowable = { is: 'maybe', why: `served before its SEEDUPDATE ${epoch.id}` };
    }
    const junk = s.junk !== 'none';
    const processRun = s.firstServedRun ?? s.lostInRun;
    const present = processRun !== undefined && s.who !== undefined && s.who < UNIVERSE && world.runs[processRun]!.subjects.has(s.who);
    const who = !junk && present ? s.who : undefined;
    expected.push({ signal: s, who, knowable });
    if (s.firstServedRun === undefined && !s.deleted) violations.push(`(a) signal ${s.id} was never pulled`);

    const event = events.find((e) => e.signalId === s.id && e.backfilled !== true);
    if (junk) {
      if (event) violations.push(`(b) signal ${s.id} (${s.junk}) must be skipped, yet has event for ${event.subjectRef}`);
      continue;
    }
    if (s.lostInRun !== undefined) {
      // Deleted before the consumer's first pull: a fresh start reads what the hub still keeps
      // and owes nothing older (SPEC §3's retention gap is about a consumer that was away).
      if (s.lostInRun === 0) continue;
      // Lenient on one point (reported to the lead): when nothing survives after the cursor the
      // engine cannot know the lost ids, and its retention-gap report is the token range c+1..c+1;
      // it is taken to stand for "everything from c+1".
      const openEnded = reports.some((r) => r.reason === 'retention-gap' && r.from === r.to && r.from <= s.id);
      if (who !== undefined && !covered(s.id) && !openEnded) violations.push(`(a) signal ${s.id} deleted by retention unseen, for ${world.ref(who)}, is in no report`);
      continue;
    }
    if (who !== undefined) {
      const why = knowable.is === 'yes' ? '' : ` [${knowable.is}: ${knowable.why}]`;
      // After a retention gap the consumer owes a resynchronization anyway, and cannot always
      // tell whether a SEEDUPDATE was deleted (the window may hide what survived): a knowable
      // signal inside a retention-gap report is allowed, as (c) allows such reports below.
      const inGapReport = reports.some((r) => r.reason === 'retention-gap' && r.from <= s.id && s.id <= r.to);
      if (knowable.is === 'yes' && !event && !inGapReport) violations.push(`(a) signal ${s.id} of epoch ${epoch.id} for ${world.ref(who)}: no event (knowable)${covered(s.id) ? ', only reported' : ''}`);
      if (knowable.is === 'no' && !event && !covered(s.id)) violations.push(`(a) signal ${s.id} of epoch ${epoch.id} for ${world.ref(who)}: neither event nor report${why}`);
      if (knowable.is === 'maybe' && !event && !covered(s.id)) violations.push(`(a) signal ${s.id} of epoch ${epoch.id} for ${world.ref(who)}: silent miss${why}`);
    }
    // (c) a knowable range is never reported (retention-gap reports are mandatory whenever the
    // consumer was away longer than the retention, and their range is a bound, not a claim).
    if (knowable.is === 'yes' && covered(s.id, true)) {
      const r = reports.find((x) => x.from <= s.id && s.id <= x.to && x.reason !== 'retention-gap')!;
      violations.push(`(c) knowable signal ${s.id} (epoch ${epoch.id}) covered by report ${r.from}..${r.to} ${r.reason}`);
    }
  }

  // (b) every event is a true match under the seed in force for its signal.
  for (const e of events) {
    const s = byId.get(e.signalId);
    if (s && s.junk !== 'none') continue; // told above
    if (!s || s.type === 'SEEDUPDATE') {
      violations.push(`(b) event ${e.id} for a signal that is not a change in the world`);
      continue;
    }
    if (e.id !== `${MODEL_ES}:${s.id}`) violations.push(`(e) event id ${e.id} does not name signal ${s.id}`);
    if (s.id <= c0) violations.push(`(b) event for signal ${s.id} at or below the operator cursor ${c0}`);
    const who = s.who;
    const seed = world.epochOf(s.id).seed;
    const backfilled = e.backfilled === true;
    const trueMatch = who !== undefined && who < UNIVERSE && s.junk === 'none' && modelPseudonym(world.key(who), seed) === s.objectId;
    if (!trueMatch || e.subjectRef !== world.ref(who!)) violations.push(`(b) event ${e.id} for ${e.subjectRef} is not a true match under seed ${world.epochOf(s.id).id}`);
    else if (!backfilled) {
      // (A back-matched event, subjects.backfill, is for a subject added after the signal.)
      const processRun = s.firstServedRun;
      if (processRun === undefined || !world.runs[processRun]!.subjects.has(who)) violations.push(`(b) event ${e.id} for ${e.subjectRef}, a subject not held when the signal was processed`);
    }
    if (e.signalType !== s.type) violations.push(`(b) event ${e.id} says ${e.signalType}, the signal is ${s.type}`);
  }

  // (d) a run never moves the cursor past a signal that was visible and not pulled (late lower
  // ids that appear behind the cursor are (a)'s business).
  world.runs.forEach((run, r) => {
    if (run.cursorAfter === undefined) return;
    const before = r === 0 ? c0 : (world.runs[r - 1]!.cursorAfter ?? c0);
    for (const s of byId.values()) {
      if (s.id > before && s.id <= run.cursorAfter && s.insertedAt + WINDOW_MS <= run.startedAt && (s.firstServedRun === undefined || s.firstServedRun > r) && s.lostInRun === undefined) {
        violations.push(`(d) after run ${r} the cursor ${run.cursorAfter} passed signal ${s.id}, visible and never pulled`);
      }
    }
  });
  // Issue 12 finding 4: a run waits for the rotation race at most once (the last backoff step
  // may overshoot the deadline by one sleep, at most 10 s).
  const waitMs = played.config.crypto.rotationWaitSeconds * 1000;
  world.runs.forEach((run, r) => {
    if (run.slept > waitMs + 10_000) violations.push(`run ${r} slept ${run.slept} ms for rotation races: more than one wait (${waitMs} ms)`);
  });
  const lastKept = Math.max(0, ...[...byId.values()].filter((s) => !s.deleted).map((s) => s.id));
  if (played.failures.length === 0 && played.finalCursor < lastKept) violations.push(`(d) final cursor ${played.finalCursor} below the last signal ${lastKept}`);

  const count = (k: Knowable['is']) => expected.filter((x) => x.who !== undefined && x.knowable.is === k).length;
  return { violations, expected, stats: { events: events.length, reports: reports.length, yes: count('yes'), no: count('no'), maybe: count('maybe') } };
}

/** A readable account of a scenario, for a failing case. */
export function describeScenario(s: Scenario): string {
  const step = (st: Step): string => {
    switch (st.kind) {
      case 'deposit':
        return `deposit ${st.signals.map((d) => `${d.type}(${d.who < UNIVERSE ? `s${d.who}` : 'stranger'}${d.junk !== 'none' ? `,${d.junk}` : ''}${d.gap ? `,+${d.gap}` : ''})`).join(' ')}`;
      case 'rotate':
        return `rotate stale=${st.stale}${st.lateMs ? ` late=${st.lateMs}ms` : ''}`;
      case 'late':
        return `late ${st.signal.type}(s${st.signal.who}) pick=${st.pick}`;
      case 'run':
        return 'RUN';
      case 'advance':
        return `advance ${st.ms >= DAY_MS ? `${(st.ms / DAY_MS).toFixed(1)}d` : `${st.ms}ms`}`;
      case 'subjects':
        return `subjects +[${st.add}] -[${st.remove}]`;
    }
  };
  return [`mode ${JSON.stringify(s.mode)} page=${s.pageSize} start=${s.operatorCursor === undefined ? '0' : `operator@${s.operatorCursor.toFixed(2)}`} subjects=[${s.initialSubjects}]`, ...s.steps.map(step)].join('\n  ');
}
