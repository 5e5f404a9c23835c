import { describe, expect, it } from 'vitest';
import type { Fault } from '../src/simulator/index.js';
import { expectErrorLogged, expectRecovery, expectStoppedMidRun, runSync, useControlOutbox, withScenario } from './helpers/faults.js';

// The failure rows of SPEC §3's table that stop a run, striking the pull route mid-run (after a
// few pages were served) of a real `sync --once` child process: it stops with the code of
// README's exit table and a log line naming code, status and correlationId; the cursor never
// passes a signal it did not process; and once the fault is gone, one more run leaves the
// outbox exactly as a fault-free world's. (Faults it rides out: faults-remote.test.ts.)

const control = useControlOutbox();

/** Pulls let through before the fault strikes: the first pages of both e-services commit first. */
const AFTER = 5;

interface Stopping {
  name: string;
  fault: Fault;
  code: string;
  exit: number;
  status: number;
  correlationId: boolean;
}

const STOPPING: Stopping[] = [
  { name: '400 (code 0001, a bug on our side)', fault: { kind: 'status', status: 400, code: '0001' }, code: 'HUB_BAD_REQUEST', exit: 70, status: 400, correlationId: true },
  { name: '404 (not in the table: a wrong hub.base_url), like a 400', fault: { kind: 'status', status: 404 }, code: 'HUB_BAD_REQUEST', exit: 70, status: 404, correlationId: true },
  { name: '401 again after a new voucher', fault: { kind: 'status', status: 401, code: '9001' }, code: 'HUB_UNAUTHORIZED', exit: 77, status: 401, correlationId: true },
  { name: '403 (code 0004, no active agreement)', fault: { kind: 'status', status: 403, code: '0004' }, code: 'HUB_FORBIDDEN', exit: 77, status: 403, correlationId: true },
  { name: '403 without a problem body (a firewall)', fault: { kind: 'status', status: 403, problem: false }, code: 'HUB_FORBIDDEN', exit: 77, status: 403, correlationId: false },
  { name: '429 beyond hub.max_rate_limit_wait_ms', fault: { kind: 'status', status: 429, code: '10004', headers: { 'retry-after': '0.6' } }, code: 'HUB_RATE_LIMITED', exit: 69, status: 429, correlationId: true },
  ...[500, 502, 503, 504].map((status) => ({ name: `${status} on every retry`, fault: { kind: 'status', status } as Fault, code: 'HUB_UNAVAILABLE', exit: 69, status, correlationId: true })),
];

describe('Signal Hub failures mid-run that stop the run with a clear error', () => {
  for (const row of STOPPING) it(`${row.name}: exit ${row.exit}, ${row.code} logged with status${row.correlationId ? ' and correlationId' : ''}, cursor before the failed page, exact after recovery`, async () => {
    await withScenario(control, async (s) => {
      s.world.sim.faults.inject('pull', { ...row.fault, after: AFTER });
      const run = await runSync(s.world);
      expect(run.code, run.stderr).toBe(row.exit);
      const line = expectErrorLogged(run.stderr, { code: row.code, status: row.status, correlationId: row.correlationId });
      expect(line.msg).toBe('sync run failed');
      expect(s.eserviceIds).toContain(line.eservice);
      expect(line.err.message).toContain(`HTTP ${row.status}`);
      expectStoppedMidRun(s, control);
      await expectRecovery(s, control);
    });
  });
});
