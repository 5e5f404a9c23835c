import { describe, expect, it } from 'vitest';
import type { Fault } from '../src/simulator/index.js';
import { expectCaughtUpExactly, expectErrorLogged, expectRecovery, expectStoppedMidRun, logLines, runSync, useControlOutbox, withScenario } from './helpers/faults.js';

// SPEC §3 failures the client rides out, and malformed pages, striking the pull route mid-run
// (after a few pages were served) of a real `sync --once` child process: the run completes
// (exit 0) or stops with the code of README's exit table; the cursor never passes a signal it
// did not process; and once the fault is gone, one more run leaves the outbox exactly as a
// fault-free world's. (The failure rows that stop a run: faults-hub-stop.test.ts.)

const control = useControlOutbox();

/** Pulls let through before the fault strikes: the first pages of both e-services commit first. */
const AFTER = 5;

describe('Signal Hub failures mid-run that the client rides out (sync --once exits 0)', () => {
  it.each([500, 502, 503, 504])('a transient %i on two pulls is retried with backoff and the outbox is exact', async (status) => {
    await withScenario(control, async (s) => {
      s.world.sim.faults.inject('pull', { kind: 'status', status, after: AFTER, times: 2 });
      const run = await runSync(s.world);
      expect(run.code, run.stderr).toBe(0);
      expect(s.world.sim.stats().faultsFired.pull).toBe(2);
      const retry = logLines(run.stderr).find((l) => l.msg === 'hub request failed, retrying' && l.status === status);
      expect(retry, run.stderr).toBeDefined();
      expect(retry!.correlationId).toMatch(/^[0-9a-f-]{36}$/);
      expectCaughtUpExactly(s, control);
    });
  });

  it('a 429 with a fractional Retry-After, twice, is waited out and the run completes exactly', async () => {
    await withScenario(control, async (s) => {
      s.world.sim.faults.inject('pull', { kind: 'status', status: 429, code: '10004', headers: { 'retry-after': '0.25' }, after: AFTER, times: 2 });
      const run = await runSync(s.world);
      expect(run.code, run.stderr).toBe(0);
      expect(s.world.sim.stats().faultsFired.pull).toBe(2);
      const waits = logLines(run.stderr).filter((l) => l.msg === 'hub rate limit hit, waiting');
      expect(waits.map((l) => l.waitMs)).toEqual([250, 250]);
      expectCaughtUpExactly(s, control);
    });
  });

  it('a single 401 (voucher refused) makes the client fetch a new voucher once and go on exactly', async () => {
    await withScenario(control, async (s) => {
      const tokensBefore = s.world.sim.stats().tokensIssued;
      s.world.sim.faults.inject('pull', { kind: 'status', status: 401, code: '9001', after: AFTER, times: 1 });
      const run = await runSync(s.world);
      expect(run.code, run.stderr).toBe(0);
      const refused = logLines(run.stderr).find((l) => l.msg === 'hub rejected the voucher, retrying once with a new one');
      expect(refused?.problemCodes, run.stderr).toEqual(['9001']);
      // M2M at start, the refresh, and one e-service voucher per e-service at its SEEDUPDATE.
      expect(s.world.sim.stats().tokensIssued - tokensBefore).toBe(1 + 1 + s.eserviceIds.length);
      expectCaughtUpExactly(s, control);
    });
  });
});

describe('malformed pull answers mid-run', () => {
  const BODIES: { name: string; fault: Fault }[] = [
    { name: 'a 200 whose body is not JSON', fault: { kind: 'malformed' } },
    { name: 'a 206 whose body is not JSON', fault: { kind: 'malformed', status: 206 } },
    { name: 'a 200 of the wrong shape', fault: { kind: 'wrongShape' } },
    { name: 'a 206 whose signals have the wrong types', fault: { kind: 'wrongShape', status: 206, body: { signals: [{ signalId: 'x', signalType: 'UPDATE' }], lastSignalId: 'x' } } },
  ];
  for (const { name, fault } of BODIES) it(`${name} is rejected (HUB_BAD_RESPONSE, exit 69), the cursor stays before it, exact after recovery`, async () => {
    await withScenario(control, async (s) => {
      s.world.sim.faults.inject('pull', { ...fault, after: AFTER });
      const run = await runSync(s.world);
      expect(run.code, run.stderr).toBe(69);
      expectErrorLogged(run.stderr, { code: 'HUB_BAD_RESPONSE' });
      expectStoppedMidRun(s, control);
      await expectRecovery(s, control);
    });
  });
});
