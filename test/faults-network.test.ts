import { describe, expect, it } from 'vitest';
import type { Fault } from '../src/simulator/index.js';
import { openDatabase } from '../src/store/db.js';
import { expectCaughtUpExactly, expectErrorLogged, expectRecovery, expectStoppedMidRun, logLines, readCursors, runSync, setConfig, useControlOutbox, withScenario, type FaultScenario } from './helpers/faults.js';
import { pseudonymCount } from './helpers/pseudonyms.js';

// The network between the consumer and the hub: connections dropped without an answer or cut
// mid-body, names that do not resolve, and a hub that drips its answer slower than any read
// timeout notices. Each against a real `sync --once` child process, checked as the other fault
// suites are: exit code and log line, cursor never past an unprocessed signal, exact outbox
// once the fault is gone.

const control = useControlOutbox();

const AFTER = 5;

/** Everything a failed run must leave as it was: cursors, outbox, epochs, signal log. */
function storedState(s: FaultScenario): unknown {
  const db = openDatabase(s.world.config.database, { readonly: true });
  try {
    return {
      cursors: [...readCursors(s.world)],
      outbox: db.prepare('SELECT * FROM outbox ORDER BY seq').all(),
      epochs: db.prepare('SELECT * FROM epochs ORDER BY id').all(),
      pseudonyms: pseudonymCount(db),
    };
  } finally {
    db.close();
  }
}

describe('connections lost mid-run on the pull route', () => {
  const LOST: { name: string; fault: Fault }[] = [
    { name: 'dropped without an answer', fault: { kind: 'drop' } },
    { name: 'cut mid-body (full Content-Length, half the body)', fault: { kind: 'truncate' } },
  ];
  for (const { name, fault } of LOST) {
    it(`a connection ${name}, twice: retried, exit 0, outbox exact`, async () => {
      await withScenario(control, async (s) => {
        s.world.sim.faults.inject('pull', { ...fault, after: AFTER, times: 2 });
        const run = await runSync(s.world);
        expect(run.code, run.stderr).toBe(0);
        expect(s.world.sim.stats().faultsFired.pull).toBe(2);
        const retries = logLines(run.stderr).filter((l) => l.msg === 'hub request failed, retrying');
        expect(retries.filter((r) => /network error/.test(r.reason as string)).length).toBe(2);
        expectCaughtUpExactly(s, control);
      });
    });
  }

  it('connections cut mid-body on every retry: exit 69, HUB_UNAVAILABLE naming the network error, cursor before the cut page; exact once it heals', async () => {
    await withScenario(control, async (s) => {
      s.world.sim.faults.inject('pull', { kind: 'truncate', after: AFTER });
      const run = await runSync(s.world);
      expect(run.code, run.stderr).toBe(69);
      expectErrorLogged(run.stderr, { code: 'HUB_UNAVAILABLE', message: /network error .*gave up after 4 attempts/ });
      expectStoppedMidRun(s, control);
      await expectRecovery(s, control);
    });
  });
});

describe('names that do not resolve', () => {
  it('a hub.base_url whose host does not resolve: exit 69, HUB_UNAVAILABLE naming ENOTFOUND and the host, nothing stored changes; exact once fixed', async () => {
    await withScenario(control, async (s) => {
      const restore = setConfig(s.world, 'hub', 'base_url', 'http://signalhub.invalid/1.0/pull');
      const before = storedState(s);
      const run = await runSync(s.world);
      expect(run.code, run.stderr).toBe(69);
      const line = expectErrorLogged(run.stderr, { code: 'HUB_UNAVAILABLE', message: /ENOTFOUND/ });
      expect(line.err.message).toContain('signalhub.invalid');
      expect(storedState(s)).toEqual(before);
      restore();
      await expectRecovery(s, control);
    });
  });

  it('a pdnd.token_url whose host does not resolve: exit 69, TOKEN_UNAVAILABLE naming ENOTFOUND and the host, nothing stored changes; exact once fixed', async () => {
    await withScenario(control, async (s) => {
      const restore = setConfig(s.world, 'pdnd', 'token_url', 'http://auth.invalid/token.oauth2');
      const before = storedState(s);
      const run = await runSync(s.world);
      expect(run.code, run.stderr).toBe(69);
      const line = expectErrorLogged(run.stderr, { code: 'TOKEN_UNAVAILABLE', message: /ENOTFOUND/ });
      expect(line.err.message).toContain('auth.invalid');
      expect(storedState(s)).toEqual(before);
      restore();
      await expectRecovery(s, control);
    });
  });
});

describe('a hub that drips its answer', () => {
  // 16 bytes every 250 ms: never silent for hub.request_timeout_ms (3000), so no read timeout
  // fires, but a page of 20 signals (about 3 kB) would take about 50 s to arrive.
  const DRIP: Fault = { kind: 'drip', intervalMs: 250, chunkBytes: 16 };

  it('an answer dripping slower than hub.request_timeout_ms once: abandoned at the deadline, retried, exit 0, outbox exact', async () => {
    await withScenario(control, async (s) => {
      s.world.sim.faults.inject('pull', { ...DRIP, after: AFTER, times: 1 });
      const run = await runSync(s.world, [], 45_000);
      expect(run.signal, 'sync --once hung on the dripping answer').toBeNull();
      expect(run.code, run.stderr).toBe(0);
      const retry = logLines(run.stderr).find((l) => l.msg === 'hub request failed, retrying');
      expect(retry?.reason, run.stderr).toMatch(/no complete answer within 3000 ms/);
      expectCaughtUpExactly(s, control);
    });
  });

  it('answers dripping on every retry: exit 69, HUB_UNAVAILABLE naming the deadline, cursor before that page; exact once it heals', async () => {
    await withScenario(control, async (s) => {
      s.world.sim.faults.inject('pull', { ...DRIP, after: AFTER });
      const run = await runSync(s.world, [], 45_000);
      expect(run.signal, 'sync --once hung on the dripping answers').toBeNull();
      expect(run.code, run.stderr).toBe(69);
      expectErrorLogged(run.stderr, { code: 'HUB_UNAVAILABLE', message: /no complete answer within 3000 ms/ });
      expectStoppedMidRun(s, control);
      await expectRecovery(s, control);
    });
  });
});
