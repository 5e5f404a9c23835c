import { afterEach, describe, expect, it } from 'vitest';
import type { Fault } from '../src/simulator/index.js';
import { openDatabase } from '../src/store/db.js';
import { ResyncStore } from '../src/store/resync.js';
import { startRun } from './run-helpers.js';
import { ES_A, createFaultScenario, expectCaughtUpExactly, expectCursorNeverPassesUnprocessed, expectErrorLogged, expectRecovery, logLines, readCursors, readOutbox, runSync, useControlOutbox, type FaultScenario } from './helpers/faults.js';

/**
 * Faults of the producer's crypto-info endpoint right after a SEEDUPDATE (SPEC §6, §8). The
 * consumer already knows the first seed; the backlog holds a SEEDUPDATE halfway, so the first
 * crypto request of each faulty run is the one the rotation makes. For every fault: the process
 * recovers or stops with a clear error, the cursor stays before the SEEDUPDATE it could not
 * process, and a run after the fault clears leaves exactly the control world's outbox.
 */

// One e-service: its control is compared in outbox order, and holds matches on both sides of the SEEDUPDATE.
const control = useControlOutbox({ eservices: 1 });
let scenario: FaultScenario | undefined;

afterEach(async () => {
  await scenario?.close();
  scenario = undefined;
});

describe('faults: the producer crypto endpoint after a SEEDUPDATE', () => {
  it('a crypto endpoint answering 500 twice after a SEEDUPDATE is retried: sync --once exits 0 with the exact outbox', async () => {
    scenario = await createFaultScenario(control.options);
    scenario.world.sim.faults.inject('crypto', { kind: 'status', status: 500, times: 2 });
    const run = await runSync(scenario.world);
    expect(run.code, run.stderr).toBe(0);
    const retries = logLines(run.stderr).filter((l) => l.msg === 'crypto info request failed, retrying');
    expect(retries.map((l) => l.status)).toEqual([500, 500]);
    expect(retries.every((l) => /^[0-9a-f-]{36}$/.test(l.correlationId as string))).toBe(true);
    expectCaughtUpExactly(scenario, control);
  });

  const stopping: { name: string; fault: Fault; code: string; exit: number; status?: number }[] = [
    { name: 'answering 500 on every retry stops with CRYPTO_UNAVAILABLE (exit 69)', fault: { kind: 'status', status: 500 }, code: 'CRYPTO_UNAVAILABLE', exit: 69, status: 500 },
    { name: 'answering 404 (no crypto info) stops with CRYPTO_NOT_FOUND (exit 69)', fault: { kind: 'status', status: 404 }, code: 'CRYPTO_NOT_FOUND', exit: 69, status: 404 },
    { name: 'answering 200 with a body that is not JSON stops with CRYPTO_BAD_RESPONSE (exit 69)', fault: { kind: 'malformed' }, code: 'CRYPTO_BAD_RESPONSE', exit: 69 },
    { name: 'answering 200 with JSON of the wrong shape stops with CRYPTO_BAD_RESPONSE (exit 69)', fault: { kind: 'wrongShape' }, code: 'CRYPTO_BAD_RESPONSE', exit: 69 },
    {
      // SPEC §6: the field is cryptoHashFunction, and MD5 is none of the accepted spellings.
      name: 'answering a seed with cryptoHashFunction "MD5" stops with UNSUPPORTED_ALGORITHM (exit 78)',
      fault: { kind: 'wrongShape', body: { seed: 'md5-seed-never-shown-Q2xhdWRpbw==', cryptoHashFunction: 'MD5', signalId: 76 } },
      code: 'UNSUPPORTED_ALGORITHM',
      exit: 78,
    },
  ];
  for (const t of stopping) {
    it(`a crypto endpoint ${t.name}, the cursor stays before the SEEDUPDATE, and a run after the fault clears gives the exact outbox`, async () => {
      scenario = await createFaultScenario(control.options);
      const S = scenario.seedUpdates.get(ES_A)!;
      scenario.world.sim.faults.inject('crypto', t.fault);
      const run = await runSync(scenario.world);
      expect(run.code, run.stderr).toBe(t.exit);
      expect(run.stdout).toContain(`FAILED ${t.code}`);
      const logged = expectErrorLogged(run.stderr, { code: t.code, ...(t.status ? { status: t.status, correlationId: true } : {}) });
      expect(logged.err.message).toContain(`crypto info of e-service es-0 (${ES_A})`);
      expect(run.stderr + run.stdout).not.toContain('md5-seed-never-shown');
      // Everything before the SEEDUPDATE is processed, nothing from it on.
      expect(expectCursorNeverPassesUnprocessed(scenario, control).get(ES_A)).toBe(S - 1);
      await expectRecovery(scenario, control);
    });
  }

  it('a stale seed after a SEEDUPDATE (the producer serves the old seed for 3 reads) is waited out within rotation_wait_seconds and the new seed matches: the exact outbox', async () => {
    scenario = await createFaultScenario({ ...control.options, registration: { staleReads: 3 }, crypto: { rotation_wait_seconds: 30 } });
    const before = scenario.world.sim.stats().requests.crypto ?? 0;
    const run = await runSync(scenario.world);
    expect(run.code, run.stderr).toBe(0);
    // Three stale answers, then the new seed: the engine asked again instead of concluding.
    expect((scenario.world.sim.stats().requests.crypto ?? 0) - before).toBe(4);
    expectCaughtUpExactly(scenario, control);
    const db = openDatabase(scenario.world.config.database, { readonly: true });
    try {
      expect(new ResyncStore(db).list({ eserviceId: ES_A })).toEqual([]);
    } finally {
      db.close();
    }
  });

  it('a stale seed beyond rotation_wait_seconds records a seed-unchanged resync report for the signals after the SEEDUPDATE and matches none of them with the old seed', async () => {
    scenario = await createFaultScenario({ ...control.options, registration: { staleReads: 1_000 }, crypto: { rotation_wait_seconds: 1 } });
    const S = scenario.seedUpdates.get(ES_A)!;
    const last = scenario.world.sim.lastSignalId(ES_A);
    const run = await runSync(scenario.world);
    expect(run.code, run.stderr).toBe(0);
    expect(logLines(run.stderr).some((l) => l.msg === 'seed did not change after SEEDUPDATE within crypto.rotation_wait_seconds' && l.seedupdate === S)).toBe(true);
    const events = readOutbox(scenario.world);
    // The signals before S are the control's; after S nothing is matched (a hash under the old
    // seed is never a match), and the range is reported instead of silently missed.
    expect(events.filter((e) => e.kind === 'signal')).toEqual(control.events.filter((e) => (e.event.signalId as number) < S));
    const resync = events.filter((e) => e.kind === 'resync-required');
    expect(resync).toHaveLength(1);
    expect(resync[0]!.event).toMatchObject({ type: 'resync-required', eserviceId: ES_A, reason: 'seed-unchanged', fromSignalId: S + 1, toSignalId: last });
    expect(readCursors(scenario.world).get(ES_A)).toBe(last);
  });

  it('a 429 with Retry-After from the crypto endpoint is waited out as announced, without using up the retries (5 answers of 429, 3 retries): the exact outbox', async () => {
    scenario = await createFaultScenario(control.options);
    scenario.world.sim.faults.inject('crypto', { kind: 'status', status: 429, headers: { 'retry-after': '0.3' }, times: 5 });
    const before = scenario.world.sim.stats().requests.crypto ?? 0;
    const run = await runSync(scenario.world);
    expect(run.code, run.stderr).toBe(0);
    const waits = logLines(run.stderr).filter((l) => l.msg === 'crypto info rate limited, waiting as Retry-After says');
    expect(waits.map((l) => l.waitMs)).toEqual([300, 300, 300, 300, 300]);
    // Five 429s then the seed: each wait was followed by exactly one request, none in between.
    expect((scenario.world.sim.stats().requests.crypto ?? 0) - before).toBe(6);
    expect(logLines(run.stderr).filter((l) => l.msg === 'crypto info request failed, retrying')).toEqual([]);
    expectCaughtUpExactly(scenario, control);
  });

  it('run gets SIGTERM while the crypto endpoint honours a long Retry-After: no request before the announced delay, exit 0 at once, and sync --once afterwards gives the exact outbox', async () => {
    scenario = await createFaultScenario({ ...control.options, daemon: { shutdown_timeout_seconds: 50 } });
    const S = scenario.seedUpdates.get(ES_A)!;
    scenario.world.sim.faults.inject('crypto', { kind: 'status', status: 429, headers: { 'retry-after': '50' } });
    const before = scenario.world.sim.stats().requests.crypto ?? 0;
    const daemon = startRun(scenario.world);
    const waiting = await daemon.waitForLog((l) => l.msg === 'crypto info rate limited, waiting as Retry-After says', 'the Retry-After wait');
    expect(waiting.waitMs).toBe(50_000);
    // A client that ignored Retry-After would retry within 125-250 ms (p-retry's first backoff);
    // give it well over that to show itself. Not a timing assertion: an honouring client never fails it.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect((scenario.world.sim.stats().requests.crypto ?? 0) - before).toBe(1);
    daemon.child.kill('SIGTERM');
    // Without the abort the stop would wait out the Retry-After until shutdown_timeout_seconds
    // and exit 70 (forced), or outlast this test.
    const exit = await daemon.exited;
    expect(exit.code, daemon.stderr()).toBe(0);
    expect(daemon.logs().some((l) => l.msg === 'graceful stop did not finish in time: forcing exit')).toBe(false);
    expect(daemon.logs().some((l) => l.msg === 'sync run failed')).toBe(false);
    expect(expectCursorNeverPassesUnprocessed(scenario, control).get(ES_A)).toBe(S - 1);
    await expectRecovery(scenario, control);
  });

  it('run gets SIGTERM while a crypto request hangs (the producer answers only after minutes): exit 0 at once, cursor before the SEEDUPDATE, and sync --once afterwards gives the exact outbox', async () => {
    scenario = await createFaultScenario({ ...control.options, crypto: { rotation_wait_seconds: 3, request_timeout_ms: 300_000 }, daemon: { shutdown_timeout_seconds: 50 } });
    const S = scenario.seedUpdates.get(ES_A)!;
    scenario.world.sim.faults.inject('crypto', { kind: 'delay', ms: 300_000 });
    const before = scenario.world.sim.stats().requests.crypto ?? 0;
    const daemon = startRun(scenario.world);
    await daemon.until(() => (scenario!.world.sim.stats().requests.crypto ?? 0) > before, 'the crypto request after the SEEDUPDATE');
    daemon.child.kill('SIGTERM');
    const exit = await daemon.exited;
    expect(exit.code, daemon.stderr()).toBe(0);
    expect(daemon.logs().some((l) => l.msg === 'graceful stop did not finish in time: forcing exit')).toBe(false);
    expect(expectCursorNeverPassesUnprocessed(scenario, control).get(ES_A)).toBe(S - 1);
    await expectRecovery(scenario, control);
  });
});
