import { EXIT, exitCodeFor, isAppError, type ExitCode } from '../errors.js';
import type { SyncEngine, SyncOutcome } from './engine.js';

export interface CatchUpResult {
  eserviceId: string;
  outcome: SyncOutcome | undefined;
  error: unknown;
}

/**
 * One-shot catch-up: syncs every e-service until the hub answers 200, `concurrency` at a time.
 * One failing e-service never stops the others.
 */
export async function catchUpAll(engine: SyncEngine, eserviceIds: string[], opts: { concurrency: number; signal?: AbortSignal }): Promise<CatchUpResult[]> {
  const results: CatchUpResult[] = [];
  const queue = [...eserviceIds];
  const worker = async () => {
    for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
      try {
        let outcome: SyncOutcome;
        do outcome = await engine.syncEService(id, opts.signal ? { signal: opts.signal } : {});
        while (!outcome.caughtUp && outcome.pages > 0 && !opts.signal?.aborted);
        results.push({ eserviceId: id, outcome, error: undefined });
      } catch (err) {
        results.push({ eserviceId: id, outcome: undefined, error: err });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency, eserviceIds.length)) }, worker));
  return results;
}

/**
 * Exit code of a catch-up run: 0 when all succeeded; PARTIAL (3) when some did; otherwise
 * the most telling failure: configuration (78) > authorization (77) > software (70) > unavailable (69).
 */
export function catchUpExitCode(results: CatchUpResult[]): ExitCode {
  const failed = results.filter((r) => r.error !== undefined);
  if (failed.length === 0) return EXIT.OK;
  if (failed.length < results.length) return EXIT.PARTIAL;
  const codes = failed.map((r) => exitCodeFor(r.error));
  for (const preferred of [EXIT.CONFIG, EXIT.NOPERM, EXIT.SOFTWARE, EXIT.UNAVAILABLE] as const) {
    if (codes.includes(preferred)) return preferred;
  }
  return codes[0] ?? EXIT.SOFTWARE;
}

export function describeFailure(err: unknown): string {
  if (isAppError(err)) return `${err.code}: ${err.message}${err.status ? ` (status ${err.status}${err.correlationId ? `, correlationId ${err.correlationId}` : ''})` : ''}`;
  return err instanceof Error ? err.message : String(err);
}
