import type { Parameters } from 'fast-check';

/**
 * fast-check settings shared by the property suites: a fixed seed and a bounded number of runs
 * in `npm test` so CI is fast and reproducible; `npm run test:soak` (SIGNALHUB_SOAK=1) runs many
 * more cases. FC_SEED replays a failure that a soak run printed.
 */
export function propertyParameters<T>(options: { runs?: number; soakRuns?: number } = {}): Parameters<T> {
  const soak = process.env.SIGNALHUB_SOAK === '1';
  const seed = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : soak ? Date.now() : 20261122;
  return {
    seed,
    numRuns: soak ? (options.soakRuns ?? 2000) : (options.runs ?? 100),
    // The failing input is what helps; the seed lets anyone replay it.
    verbose: 1,
  };
}

/** Vitest timeout for a property test, scaled for soak runs. */
export function propertyTimeoutMs(normalMs: number): number {
  return process.env.SIGNALHUB_SOAK === '1' ? normalMs * 40 : normalMs;
}
