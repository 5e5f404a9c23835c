import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/cli.js';

interface BenchRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runBench(args: string[]): Promise<BenchRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bench/run.mjs'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * The benchmark at N = 10,000, to keep its code working: it checks what the benchmark computed
 * and that the figures are there, never how fast anything was (timing belongs to `npm run bench`).
 */
describe('bench smoke (N = 10,000)', () => {
  it('runs every phase and prints one JSON object with correct results', async () => {
    const run = await runBench(['--json', '--subjects', '10000', '--signals', '10000', '--paced-seconds', '2', '--footprint-seconds', '0']);
    expect(run.code, run.stderr.slice(-3000)).toBe(0);
    const lines = run.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const result = JSON.parse(lines[0]!);

    // Reseed: the engine's rows equal the bare loop's, one per subject.
    expect(result.reseed).toMatchObject({ subjects: 10_000, verified: { rows: 10_000, equalToLimit: 10_000 } });
    for (const key of ['seconds', 'limitSeconds', 'ratio', 'peakRssMb']) expect(result.reseed[key]).toBeGreaterThan(0);

    // Catch-up: every signal pulled, exactly the 1% about stored subjects matched and in the outbox.
    expect(result.catchup).toMatchObject({ signals: 10_000, pages: 100, matches: 100, verified: { expectedMatches: 100, outboxEvents: 100 } });
    for (const key of ['signalsPerSec', 'limitSignalsPerSec', 'ratio']) expect(result.catchup[key]).toBeGreaterThan(0);

    // Paced: 50 pages against a 25 requests/s hub, never refused.
    expect(result.paced).toMatchObject({ signals: 5000, limitRequestsPerSec: 25, responses429: 0 });
    expect(result.paced.requests).toBeGreaterThanOrEqual(50);
    expect(result.paced.requestsPerSec).toBeGreaterThan(0);

    // Footprint: the daemon got idle, the database holds what the run put there.
    expect(result.footprint.idleRssMb).toBeGreaterThan(0);
    expect(result.footprint.dbRows).toEqual({ subjects: 10_000, pseudonyms: 20_000, signalLog: 15_000, outbox: 150 });
    expect(result.footprint.dbBytesPerSubject).toBeGreaterThan(result.footprint.subjectBytesPerSubject);

    expect(result.machine).toMatchObject({ cpus: expect.any(Number), model: expect.any(String), node: process.version });
  });

  it('refuses a bad option with exit 64 and prints nothing on stdout', async () => {
    const run = await runBench(['--json', '--subjects', 'many']);
    expect(run.code).toBe(64);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('--subjects must be an integer');
  });
});
