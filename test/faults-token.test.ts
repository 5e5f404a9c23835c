import net from 'node:net';
import { describe, expect, it } from 'vitest';
import type { Fault } from '../src/simulator/index.js';
import { TOKEN_FAULTS_RIDDEN_OUT, expectErrorLogged, expectRecovery, expectTokenFaultsRiddenOut, readCursors, readOutbox, runSync, setConfig, useControlOutbox, withScenario } from './helpers/faults.js';

// The PDND token endpoint down, slow, or answering 400/429/500, at the start of a `sync --once`
// child process (its first voucher). Transient faults are retried (exit 0); persistent ones stop
// the run with TOKEN_UNAVAILABLE (69) or TOKEN_REJECTED (77), logged with status and
// correlationId where PDND gave one, and nothing is pulled or stored. Once the endpoint is
// back, the outbox is exactly a fault-free world's. (Between pages: faults-token-midrun.test.ts.)

const control = useControlOutbox({ eservices: 1 });

/** [pdnd] request_timeout_ms is 1000 in the scenario: a 1.5 s answer is a timeout. */
const SLOW: Fault = { kind: 'delay', ms: 1500 };

describe('token endpoint faults at the start of a run, ridden out', () => {
  for (const { name, fault, times } of TOKEN_FAULTS_RIDDEN_OUT) {
    it(`the token endpoint ${name}: retried with a fresh assertion, exit 0, outbox exact`, async () => {
      await withScenario(control, async (s) => {
        s.world.sim.faults.inject('token', { ...fault, times });
        expectTokenFaultsRiddenOut(s, control, await runSync(s.world), times);
      });
    });
  }
});

const PERSISTENT: { name: string; fault: Fault; code: string; exit: number; status?: number; message: RegExp }[] = [
  { name: 'answering 500', fault: { kind: 'status', status: 500 }, code: 'TOKEN_UNAVAILABLE', exit: 69, status: 500, message: /answered HTTP 500/ },
  { name: 'answering 429', fault: { kind: 'status', status: 429 }, code: 'TOKEN_UNAVAILABLE', exit: 69, status: 429, message: /answered HTTP 429/ },
  { name: 'answering 400 (015-0008, the assertion refused)', fault: { kind: 'status', status: 400, code: '015-0008' }, code: 'TOKEN_REJECTED', exit: 77, status: 400, message: /rejected the client assertion/ },
  { name: 'slower than pdnd.request_timeout_ms', fault: SLOW, code: 'TOKEN_UNAVAILABLE', exit: 69, message: /timed out after 1000 ms/ },
  { name: 'dropping every connection', fault: { kind: 'drop' }, code: 'TOKEN_UNAVAILABLE', exit: 69, message: /network error/ },
];

describe('token endpoint faults at the start of a run that persist', () => {
  for (const row of PERSISTENT) {
    it(`the token endpoint ${row.name}: exit ${row.exit}, ${row.code} logged${row.status ? ' with status and correlationId' : ''}, nothing stored; exact once it is back`, async () => {
      await withScenario(control, async (s) => {
        const pullsBefore = s.world.sim.stats().requests.pull ?? 0;
        s.world.sim.faults.inject('token', row.fault);
        const run = await runSync(s.world);
        expect(run.code, run.stderr).toBe(row.exit);
        const line = expectErrorLogged(run.stderr, { code: row.code, ...(row.status ? { status: row.status, correlationId: true } : {}), message: row.message });
        expect(line.err.message).toContain(s.world.sim.tokenUrl);
        expect(s.world.sim.stats().requests.pull ?? 0).toBe(pullsBefore);
        expect(readOutbox(s.world)).toEqual([]);
        expect([...readCursors(s.world).values()]).toEqual([0]);
        await expectRecovery(s, control);
      });
    });
  }

  it('the token endpoint refusing connections (pdnd.token_url on a closed port): exit 69, TOKEN_UNAVAILABLE naming ECONNREFUSED and the URL; exact once it is back', async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const server = net.createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as net.AddressInfo;
        server.close(() => resolve(port));
      });
    });
    const tokenUrl = `http://127.0.0.1:${closedPort}/token.oauth2`;
    await withScenario(control, async (s) => {
      const restore = setConfig(s.world, 'pdnd', 'token_url', tokenUrl);
      const run = await runSync(s.world);
      expect(run.code, run.stderr).toBe(69);
      const line = expectErrorLogged(run.stderr, { code: 'TOKEN_UNAVAILABLE', message: /ECONNREFUSED/ });
      expect(line.err.message).toContain(tokenUrl);
      expect(readOutbox(s.world)).toEqual([]);
      expect([...readCursors(s.world).values()]).toEqual([0]);
      restore();
      await expectRecovery(s, control);
    });
  });
});
