import { afterEach, describe, expect, it } from 'vitest';
import { Scheduler, staleEServices, summarize, type EServiceStatus, type EServiceSyncer, type SchedulerOptions, type SyncRunResult } from '../src/daemon/scheduler.js';
import { AppError } from '../src/errors.js';
import { Metrics } from '../src/metrics.js';

/**
 * The scheduler's job is timing and isolation, so these tests drive it with an in-process fake
 * engine that records calls and answers as told. Intervals are short; assertions are on order
 * and counts, never on how long anything took.
 */
type Behaviour = (call: number, signal: AbortSignal | undefined) => Promise<SyncRunResult> | SyncRunResult;

class FakeEngine implements EServiceSyncer {
  readonly calls: string[] = [];
  active = 0;
  maxActive = 0;
  readonly maxPagesSeen: Array<number | undefined> = [];
  constructor(private readonly behaviours: Record<string, Behaviour>) {}

  async syncEService(eserviceId: string, opts: { signal?: AbortSignal; maxPages?: number }): Promise<SyncRunResult> {
    this.calls.push(eserviceId);
    this.maxPagesSeen.push(opts.maxPages);
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      const behaviour = this.behaviours[eserviceId] ?? caughtUp;
      return await behaviour(this.count(eserviceId), opts.signal);
    } finally {
      this.active--;
    }
  }

  count(eserviceId: string): number {
    return this.calls.filter((c) => c === eserviceId).length;
  }
}

const caughtUp: Behaviour = () => ({ caughtUp: true, pages: 1, signals: 2, matches: 1 });

const schedulers: Scheduler[] = [];
afterEach(async () => {
  await Promise.all(schedulers.splice(0).map((s) => s.stop()));
});

function schedule(engine: FakeEngine, options: Partial<SchedulerOptions> & Pick<SchedulerOptions, 'eservices'>): Scheduler {
  const scheduler = new Scheduler({ syncer: engine, concurrency: 4, jitter: 0, tickMs: 5, random: () => 0.5, ...options });
  schedulers.push(scheduler);
  scheduler.start();
  return scheduler;
}

async function until(predicate: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (predicate()) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Lets the scheduler tick many times, to show that something does NOT happen. */
const someTicks = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 150));

function statusOf(scheduler: Scheduler, id: string): EServiceStatus {
  const status = scheduler.snapshot().find((s) => s.id === id);
  if (!status) throw new Error(`no e-service ${id}`);
  return status;
}

describe('scheduler', () => {
  it('runs every e-service at start and again on its poll interval', async () => {
    const engine = new FakeEngine({});
    const scheduler = schedule(engine, { eservices: [{ id: 'a', pollIntervalSeconds: 0.02 }, { id: 'b', pollIntervalSeconds: 0.02 }, { id: 'slow', pollIntervalSeconds: 3600 }] });
    await until(() => engine.count('a') >= 3 && engine.count('b') >= 3, 'three runs each');
    expect(engine.count('slow')).toBe(1);
    const a = statusOf(scheduler, 'a');
    expect(a.lastResult).toEqual({ caughtUp: true, pages: 1, signals: 2, matches: 1 });
    expect(a.lastSuccessAt).toBeInstanceOf(Date);
    const slow = statusOf(scheduler, 'slow');
    expect(slow.state).toBe('idle');
    expect(slow.nextRunAt!.getTime() - slow.lastSuccessAt!.getTime()).toBe(3600_000);
  });

  it('applies the poll jitter around the interval', async () => {
    const draws = [0, 0.75];
    const engine = new FakeEngine({});
    const scheduler = schedule(engine, { eservices: [{ id: 'low', pollIntervalSeconds: 100 }, { id: 'high', pollIntervalSeconds: 100 }], jitter: 0.2, concurrency: 1, random: () => draws.shift() ?? 0.5 });
    await until(() => engine.calls.length === 2, 'both first runs');
    await until(() => scheduler.snapshot().every((s) => s.state === 'idle' && s.nextRunAt), 'both scheduled');
    const delays = scheduler.snapshot().map((s) => s.nextRunAt!.getTime() - s.lastSuccessAt!.getTime());
    expect(delays).toEqual([80_000, 110_000]);
  });

  it('re-polls at once while the hub has more (206), then waits for the interval', async () => {
    const engine = new FakeEngine({ e1: (call) => ({ caughtUp: call >= 4, pages: 10, signals: 1000, matches: 0 }) });
    const scheduler = schedule(engine, { eservices: [{ id: 'e1', pollIntervalSeconds: 3600 }], maxPagesPerRun: 10 });
    await until(() => engine.count('e1') === 4 && statusOf(scheduler, 'e1').state === 'idle', 'four runs');
    await someTicks();
    expect(engine.count('e1')).toBe(4);
    expect(engine.maxPagesSeen).toEqual([10, 10, 10, 10]);
  });

  it('never runs more e-services at once than the concurrency limit, oldest-due first', async () => {
    const gates: Array<() => void> = [];
    const blocked: Behaviour = () => new Promise((resolve) => gates.push(() => resolve({ caughtUp: true, pages: 1, signals: 0, matches: 0 })));
    const ids = ['a', 'b', 'c', 'd', 'e'];
    const engine = new FakeEngine(Object.fromEntries(ids.map((id) => [id, blocked])));
    schedule(engine, { eservices: ids.map((id) => ({ id, pollIntervalSeconds: 3600 })), concurrency: 2 });
    await until(() => engine.active === 2, 'two running');
    await someTicks();
    expect(engine.calls).toEqual(['a', 'b']);
    while (engine.calls.length < 5 || engine.active > 0) {
      gates.shift()?.();
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect(engine.calls).toEqual(ids);
    expect(engine.maxActive).toBe(2);
  });

  it('keeps syncing the others while one e-service is forbidden (403), and backs that one off for long', async () => {
    const forbidden = new AppError('HUB_FORBIDDEN', 'Signal Hub refused e-service bad: no active agreement (status 403)', { status: 403, correlationId: 'corr-1', retryable: false });
    const engine = new FakeEngine({
      bad: () => {
        throw forbidden;
      },
    });
    const scheduler = schedule(engine, { eservices: [{ id: 'bad', name: 'Forbidden one', pollIntervalSeconds: 0.01 }, { id: 'good', pollIntervalSeconds: 0.01 }], backoff: { baseMs: 10, maxMs: 50, permanentMs: 3600_000 } });
    await until(() => engine.count('good') >= 5, 'five runs of the good one');
    expect(engine.count('bad')).toBe(1);
    const bad = statusOf(scheduler, 'bad');
    expect(bad.state).toBe('failing');
    expect(bad.consecutiveFailures).toBe(1);
    expect(bad.lastError).toMatchObject({ code: 'HUB_FORBIDDEN', status: 403, correlationId: 'corr-1' });
    expect(bad.nextRunAt!.getTime() - bad.lastError!.at.getTime()).toBe(3600_000);
    expect(statusOf(scheduler, 'good')).toMatchObject({ state: expect.stringMatching(/idle|syncing/), consecutiveFailures: 0, lastError: undefined });
    expect(summarize(scheduler.snapshot())).toMatch(/^2 e-services: .*1 failing \(Forbidden one: HUB_FORBIDDEN\)$/);
  });

  it('backs off transient failures exponentially up to the maximum, and recovers', async () => {
    const delays: number[] = [];
    const engine = new FakeEngine({
      flaky: (call) => {
        if (call <= 5) throw new AppError('HUB_UNAVAILABLE', 'Signal Hub answered 503 (maintenance)', { status: 503, retryable: true });
        return { caughtUp: true, pages: 1, signals: 0, matches: 0 };
      },
    });
    const scheduler = schedule(engine, {
      eservices: [{ id: 'flaky', pollIntervalSeconds: 3600 }],
      backoff: { baseMs: 10, maxMs: 40, permanentMs: 3600_000 },
      onChange: (s) => {
        if (s.state === 'failing' && s.nextRunAt && s.lastError) delays.push(s.nextRunAt.getTime() - s.lastError.at.getTime());
      },
    });
    await until(() => engine.count('flaky') === 6 && statusOf(scheduler, 'flaky').state === 'idle', 'recovery');
    // random() = 0.5 puts the ±20 % spread at its midpoint.
    expect(delays).toEqual([10, 20, 40, 40, 40]);
    const status = statusOf(scheduler, 'flaky');
    expect(status.consecutiveFailures).toBe(0);
    expect(status.lastError?.code).toBe('HUB_UNAVAILABLE');
  });

  it('isolates unexpected exceptions too', async () => {
    const engine = new FakeEngine({
      buggy: () => {
        throw new TypeError('cannot read properties of undefined');
      },
    });
    const scheduler = schedule(engine, { eservices: [{ id: 'buggy', pollIntervalSeconds: 0.01 }, { id: 'fine', pollIntervalSeconds: 0.01 }], backoff: { baseMs: 3600_000 } });
    await until(() => engine.count('fine') >= 3, 'the fine one keeps running');
    expect(statusOf(scheduler, 'buggy').lastError).toMatchObject({ code: 'INTERNAL', message: 'cannot read properties of undefined' });
  });

  it('skips an e-service while backpressure pauses it, and resumes it after', async () => {
    let paused: string | undefined = 'outbox full: 100000 events pending';
    const engine = new FakeEngine({});
    const scheduler = schedule(engine, { eservices: [{ id: 'held', pollIntervalSeconds: 0.01 }, { id: 'free', pollIntervalSeconds: 0.01 }], isPaused: (id) => (id === 'held' ? paused : undefined) });
    await until(() => engine.count('free') >= 3, 'the free one runs');
    expect(engine.count('held')).toBe(0);
    expect(statusOf(scheduler, 'held')).toMatchObject({ state: 'paused', pausedReason: 'outbox full: 100000 events pending' });
    expect(staleEServices(scheduler.snapshot(), { jitter: 0 })).toEqual(['e-service held (held) has not synced yet (paused: outbox full: 100000 events pending)']);
    paused = undefined;
    await until(() => engine.count('held') >= 1, 'the held one runs');
    expect(statusOf(scheduler, 'held').pausedReason).toBeUndefined();
  });

  it('stop() starts no new runs, signals the running ones and waits for them', async () => {
    const finished: string[] = [];
    const engine = new FakeEngine({
      long: (_call, signal) =>
        new Promise((resolve) => {
          // The engine finishes its current page transaction, then returns.
          signal!.addEventListener('abort', () => setTimeout(() => {
            finished.push('long');
            resolve({ caughtUp: false, pages: 1, signals: 10, matches: 0 });
          }, 20));
        }),
    });
    const scheduler = schedule(engine, { eservices: [{ id: 'long', pollIntervalSeconds: 0.01 }, { id: 'short', pollIntervalSeconds: 0.01 }] });
    await until(() => engine.count('long') === 1 && engine.count('short') >= 2, 'both started');
    await scheduler.stop();
    expect(finished).toEqual(['long']);
    const callsAtStop = engine.calls.length;
    await someTicks();
    expect(engine.calls.length).toBe(callsAtStop);
    expect(engine.active).toBe(0);
    expect(statusOf(scheduler, 'long').state).toBe('idle');
  });

  it('does not count a run interrupted by shutdown as a failure', async () => {
    const engine = new FakeEngine({
      aborted: (_call, signal) =>
        new Promise((_resolve, reject) => {
          signal!.addEventListener('abort', () => reject(signal!.reason));
        }),
    });
    const scheduler = schedule(engine, { eservices: [{ id: 'aborted', pollIntervalSeconds: 60 }] });
    await until(() => engine.active === 1, 'running');
    await scheduler.stop();
    const status = statusOf(scheduler, 'aborted');
    expect(status.state).toBe('idle');
    expect(status.consecutiveFailures).toBe(0);
    expect(status.lastError).toBeUndefined();
  });

  it('adds and drops e-services on reload, keeping the state of those that stay', async () => {
    const engine = new FakeEngine({});
    const scheduler = schedule(engine, { eservices: [{ id: 'kept', pollIntervalSeconds: 3600 }, { id: 'dropped', pollIntervalSeconds: 0.01 }] });
    await until(() => engine.count('kept') === 1 && engine.count('dropped') >= 2, 'first runs');
    const keptSuccess = statusOf(scheduler, 'kept').lastSuccessAt;
    scheduler.setEServices([{ id: 'kept', name: 'Kept', pollIntervalSeconds: 3600 }, { id: 'added', pollIntervalSeconds: 3600 }]);
    await until(() => engine.count('added') === 1, 'the added one runs');
    const droppedCalls = engine.count('dropped');
    await someTicks();
    expect(engine.count('dropped')).toBe(droppedCalls);
    expect(engine.count('kept')).toBe(1);
    expect(scheduler.snapshot().map((s) => s.id).sort()).toEqual(['added', 'kept']);
    expect(statusOf(scheduler, 'kept')).toMatchObject({ name: 'Kept', lastSuccessAt: keptSuccess });
  });

  it('applies a shorter poll interval from a reload at once, not after the run already scheduled', async () => {
    const engine = new FakeEngine({});
    const scheduler = schedule(engine, { eservices: [{ id: 'e1', pollIntervalSeconds: 3600 }] });
    await until(() => engine.count('e1') === 1 && statusOf(scheduler, 'e1').state === 'idle', 'the first run');
    scheduler.setEServices([{ id: 'e1', pollIntervalSeconds: 0.01 }]);
    await until(() => engine.count('e1') >= 3, 'runs on the new interval');
    // A longer one applies from the next run on (the run already due still happens).
    scheduler.setEServices([{ id: 'e1', pollIntervalSeconds: 3600 }]);
    await until(() => {
      const s = statusOf(scheduler, 'e1');
      return s.nextRunAt !== undefined && s.nextRunAt.getTime() - s.lastSuccessAt!.getTime() === 3600_000;
    }, 'a run scheduled on the longer interval');
    const calls = engine.count('e1');
    await someTicks();
    expect(engine.count('e1')).toBe(calls);
  });

  it('beats on every tick and records health metrics per e-service', async () => {
    let ticks = 0;
    const metrics = new Metrics();
    const engine = new FakeEngine({
      down: () => {
        throw new AppError('HUB_UNAVAILABLE', 'Signal Hub answered 502', { status: 502, retryable: true });
      },
    });
    const scheduler = schedule(engine, { eservices: [{ id: 'up', pollIntervalSeconds: 3600 }, { id: 'down', pollIntervalSeconds: 3600 }], metrics, onTick: () => ticks++, backoff: { baseMs: 3600_000 } });
    await until(() => statusOf(scheduler, 'up').lastSuccessAt !== undefined && statusOf(scheduler, 'down').state === 'failing' && ticks >= 5, 'runs and ticks');
    const text = await metrics.registry.metrics();
    expect(text).toContain('signalhub_eservice_healthy{eservice="up"} 1');
    expect(text).toContain('signalhub_eservice_healthy{eservice="down"} 0');
    expect(text).toMatch(/signalhub_last_successful_pull_timestamp_seconds\{eservice="up"\} \d+/);
  });
});

describe('readiness and summary', () => {
  const base: EServiceStatus = {
    id: 'e1',
    name: 'Anagrafe',
    state: 'idle',
    pollIntervalSeconds: 300,
    pausedReason: undefined,
    lastError: undefined,
    consecutiveFailures: 0,
    lastAttemptAt: undefined,
    lastSuccessAt: undefined,
    lastResult: undefined,
    nextRunAt: undefined,
  };
  const now = Date.parse('2025-01-01T12:00:00Z');

  it('is ready when every e-service synced within interval × (1 + jitter) + grace', () => {
    const recent = { ...base, lastSuccessAt: new Date(now - 390_000) };
    expect(staleEServices([recent], { jitter: 0.1, graceMs: 60_000, now })).toEqual([]);
  });

  it('names the stale e-service and its last error', () => {
    const stale: EServiceStatus = { ...base, state: 'failing', lastSuccessAt: new Date(now - 391_000), lastError: { code: 'HUB_FORBIDDEN', message: 'x', at: new Date(now) } };
    expect(staleEServices([stale], { jitter: 0.1, graceMs: 60_000, now })).toEqual(['e-service Anagrafe (e1) last synced 391 s ago, expected within 390 s (last error HUB_FORBIDDEN)']);
  });

  it('summarizes states in one line', () => {
    expect(summarize([])).toBe('0 e-services: none');
    expect(summarize([base, { ...base, id: 'e2', state: 'syncing' }, { ...base, id: 'e3', state: 'idle' }])).toBe('3 e-services: 2 idle, 1 syncing');
  });
});
