import { describe, expect, it } from 'vitest';
import type { Fault } from '../src/simulator/index.js';
import { TOKEN_FAULTS_RIDDEN_OUT, expectCaughtUpExactly, expectCursorNeverPassesUnprocessed, expectErrorLogged, expectRecovery, expectTokenFaultsRiddenOut, logLines, runSync, useControlOutbox, withScenario } from './helpers/faults.js';

// Vouchers that expire between pages (as when PDND's clock runs ahead or the lifetime is shorter
// than announced), and the token endpoint failing right then, when the run needs a new voucher
// mid-run. One e-service, so the order of token requests is fixed: M2M at start, the M2M
// refresh after the hub refuses the expired voucher at pull 3, the e-service voucher at the
// SEEDUPDATE (page 4).

const control = useControlOutbox({ eservices: 1 });

/** The expiry strikes the third pull: pages 1 and 2 are committed, page 3 is refused. */
const EXPIRE_AT_PULL_3: Fault = { kind: 'expireVouchers', after: 2, times: 1 };

describe('voucher expiry between pages', () => {
  it('the hub refuses the cached voucher mid-run (401 9001): one new M2M voucher, no page lost, outbox exact', async () => {
    await withScenario(control, async (s) => {
      const tokensBefore = s.world.sim.stats().tokensIssued;
      s.world.sim.faults.inject('pull', EXPIRE_AT_PULL_3);
      const run = await runSync(s.world);
      expect(run.code, run.stderr).toBe(0);
      expect(s.world.sim.stats().faultsFired.pull).toBe(1);
      expect(s.world.sim.stats().responses.pull?.['401']).toBe(1);
      const refused = logLines(run.stderr).filter((l) => l.msg === 'hub rejected the voucher, retrying once with a new one');
      expect(refused.map((l) => l.problemCodes)).toEqual([['9001']]);
      expect(s.world.sim.stats().tokensIssued - tokensBefore).toBe(control.tokensIssued + 1);
      expectCaughtUpExactly(s, control);
    });
  });
});

describe('token endpoint faults when a voucher expired between pages, ridden out', () => {
  for (const { name, fault, times } of TOKEN_FAULTS_RIDDEN_OUT) {
    it(`the token endpoint ${name} for the mid-run refresh: retried, exit 0, outbox exact`, async () => {
      await withScenario(control, async (s) => {
        s.world.sim.faults.inject('pull', EXPIRE_AT_PULL_3);
        s.world.sim.faults.inject('token', { ...fault, after: 1, times });
        expectTokenFaultsRiddenOut(s, control, await runSync(s.world), times);
      });
    });
  }
});

const PERSISTENT: { name: string; fault: Fault; code: string; exit: number; status?: number }[] = [
  { name: 'answering 500', fault: { kind: 'status', status: 500 }, code: 'TOKEN_UNAVAILABLE', exit: 69, status: 500 },
  { name: 'answering 429', fault: { kind: 'status', status: 429 }, code: 'TOKEN_UNAVAILABLE', exit: 69, status: 429 },
  { name: 'answering 400', fault: { kind: 'status', status: 400, code: '015-0008' }, code: 'TOKEN_REJECTED', exit: 77, status: 400 },
  { name: 'slower than pdnd.request_timeout_ms', fault: { kind: 'delay', ms: 1500 }, code: 'TOKEN_UNAVAILABLE', exit: 69 },
  { name: 'dropping every connection', fault: { kind: 'drop' }, code: 'TOKEN_UNAVAILABLE', exit: 69 },
];

describe('token endpoint faults when a voucher expired between pages, persisting', () => {
  for (const row of PERSISTENT) {
    it(`the token endpoint ${row.name} for the mid-run refresh: exit ${row.exit}, ${row.code} logged, cursor after page 2; exact once it is back`, async () => {
      await withScenario(control, async (s) => {
        s.world.sim.faults.inject('pull', EXPIRE_AT_PULL_3);
        s.world.sim.faults.inject('token', { ...row.fault, after: 1 });
        const run = await runSync(s.world);
        expect(run.code, run.stderr).toBe(row.exit);
        expectErrorLogged(run.stderr, { code: row.code, ...(row.status ? { status: row.status, correlationId: true } : {}) });
        const cursors = expectCursorNeverPassesUnprocessed(s, control);
        // Pages 1 and 2 (20 signals each) committed before the refusal; nothing after.
        expect([...cursors.values()]).toEqual([40]);
        await expectRecovery(s, control);
      });
    });
  }
});
