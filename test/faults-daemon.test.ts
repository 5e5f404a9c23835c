import { describe, expect, it } from 'vitest';
import { createFaultScenario, expectCaughtUpExactly, expectSameOutbox, expectStoppedMidRun, readOutbox, useControlOutbox } from './helpers/faults.js';
import { startRun } from './run-helpers.js';

// The daemon under a hub outage: `run` as a child process, the hub answering 503 to every pull
// from the middle of the catch-up for several scheduler runs. It must stay up, keep the cursor
// behind what it processed, catch up exactly once the hub is back, and stop cleanly on SIGTERM.

const control = useControlOutbox();

describe('run (daemon) through a hub outage', () => {
  it('keeps running through a 503 outage spanning several polls, then catches up exactly; SIGTERM afterwards exits 0', async () => {
    const s = await createFaultScenario({ hub: { poll_interval_seconds: 1 } });
    try {
      s.world.sim.faults.inject('pull', { kind: 'status', status: 503, after: 5 });
      const daemon = startRun(s.world);

      // Two failed scheduler runs per e-service (each after the hub client's own retries).
      for (const es of s.eserviceIds) {
        const line = await daemon.waitForLog((l) => l.msg === 'e-service sync failed' && l.eservice === es && l.failures === 2, `second failed run of ${es}`, 40_000);
        const err = line.err as { code: string; status: number; correlationId: string };
        expect(err).toMatchObject({ code: 'HUB_UNAVAILABLE', status: 503 });
        expect(err.correlationId).toMatch(/^[0-9a-f-]{36}$/);
      }
      expect(daemon.child.exitCode).toBeNull();
      expectStoppedMidRun(s, control);

      s.world.sim.faults.clear();
      await daemon.until(() => readOutbox(s.world).length === control.events.length, 'the catch-up after the outage', 45_000);
      await daemon.until(() => (expectCaughtUpExactly(s, control), true), 'cursors at the last signal', 15_000);

      daemon.child.kill('SIGTERM');
      const exit = await daemon.exited;
      expect(exit, daemon.stderr().slice(-2000)).toEqual({ code: 0, signal: null });
      expectSameOutbox(s.world, control);
    } finally {
      await s.close();
    }
  }, 120_000);
});
