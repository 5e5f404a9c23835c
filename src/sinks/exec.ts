import { spawn } from 'node:child_process';
import { allowedInChildEnv } from '../config/exec-env.js';
import { silentLogger, type Logger } from '../log.js';
import type { ExecSinkConfig } from '../config/types.js';
import type { OutboxRow } from '../store/outbox.js';
import { ndjson, sinkFailed, sinkRejected, type Sink } from './sink.js';

export interface ExecSinkOptions {
  config: ExecSinkConfig;
  logger?: Logger;
  maxBatchSize?: number;
  /** After a timeout SIGTERM, SIGKILL follows this much later. */
  killGraceMs?: number;
}

/**
 * Exit codes that say "this input will never be accepted" (sysexits(3)): EX_USAGE, EX_DATAERR,
 * EX_NOPERM, EX_CONFIG. They stop the sink, like a webhook's 4xx, rather than re-running the
 * command on the same batch forever. Every other failure (other exit codes, including
 * EX_TEMPFAIL 75, signals, a timeout, a command that cannot be started) is retried.
 */
export const PERMANENT_EXIT_CODES: ReadonlySet<number> = new Set([64, 65, 77, 78]);

/**
 * Runs `command[0]` with `command.slice(1)` (no shell) for each batch, feeding it the batch as
 * NDJSON on stdin. Exit 0 confirms the batch. The command's stdout is discarded (stdout may be
 * another sink's NDJSON stream); its stderr goes to ours, i.e. the journal. It runs in its own
 * process group with a clean environment (see childEnv); a timeout kills the whole group.
 */
export class ExecSink implements Sink {
  readonly type = 'exec';
  readonly name: string;
  readonly maxBatchSize: number;
  private readonly logger: Logger;

  constructor(private readonly options: ExecSinkOptions) {
    this.name = options.config.name;
    this.maxBatchSize = options.maxBatchSize ?? 500;
    this.logger = (options.logger ?? silentLogger).child({ sink: this.name });
    if (options.config.command.length === 0) throw sinkRejected(this.name, 'command is empty');
  }

  deliver(batch: readonly OutboxRow[], signal: AbortSignal): Promise<void> {
    if (batch.length === 0) return Promise.resolve();
    const { command, timeoutMs } = this.options.config;
    const program = command[0]!;
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(sinkFailed(this.name, 'delivery abandoned on shutdown'));
      // detached: the child leads its own process group (and session), so a timeout can end
      // everything it started (`sh -c 'work & wait'`), not only the direct child.
      const child = spawn(program, command.slice(1), { stdio: ['pipe', 'ignore', 'inherit'], shell: false, detached: true, env: this.childEnv() });
      let settled = false;
      let why: 'timeout' | 'shutdown' | undefined;
      let killTimer: NodeJS.Timeout | undefined;
      const killGroup = (sig: NodeJS.Signals): void => {
        if (child.pid === undefined) return;
        try {
          process.kill(-child.pid, sig);
        } catch {
          // ESRCH: the whole group is gone already.
        }
      };
      const terminate = (reason: 'timeout' | 'shutdown'): void => {
        why ??= reason;
        killGroup('SIGTERM');
        killTimer = setTimeout(() => killGroup('SIGKILL'), this.options.killGraceMs ?? 2000);
        killTimer.unref();
      };
      const timer = setTimeout(() => terminate('timeout'), timeoutMs);
      const onAbort = (): void => terminate('shutdown');
      signal.addEventListener('abort', onAbort, { once: true });
      const finish = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (killTimer) clearTimeout(killTimer);
        signal.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      child.on('error', (err: NodeJS.ErrnoException) => {
        finish(sinkFailed(this.name, `cannot run ${program}: ${err.code ?? err.message}`, { cause: err }));
      });
      child.on('close', (code, sig) => {
        // The leader is gone; a descendant that ignored SIGTERM must not outlive the batch it was killed for.
        if (why !== undefined) killGroup('SIGKILL');
        if (why === 'shutdown') return finish(sinkFailed(this.name, `${program} killed on shutdown`));
        if (why === 'timeout') return finish(sinkFailed(this.name, `${program} did not finish within ${timeoutMs} ms and was killed`));
        if (code === 0) return finish();
        if (code !== null && PERMANENT_EXIT_CODES.has(code)) {
          const next = this.options.config.onReject === 'dead-letter' ? 'they are set aside as dead letters ("signalhub-sync sinks dead-letters list")' : `fix it, then run "signalhub-sync sinks retry ${this.name}"`;
          return finish(sinkRejected(this.name, `${program} exited with ${code}: the command refuses these events; ${next}`, { details: { exitCode: code } }));
        }
        finish(sinkFailed(this.name, code !== null ? `${program} exited with ${code}` : `${program} was killed by ${sig}`, { details: { exitCode: code, signal: sig } }));
      });
      // A command that exits without reading all of stdin gives EPIPE: its exit code decides.
      child.stdin.on('error', (err: NodeJS.ErrnoException) => this.logger.debug({ err: { code: err.code } }, 'exec sink stdin closed early'));
      child.stdin.end(ndjson(batch));
    });
  }

  /**
   * The child's whole environment: PATH, the variables the config names (env, pass_env), and
   * nothing else of ours. The daemon's environment holds what systemd gives it (NOTIFY_SOCKET,
   * CREDENTIALS_DIRECTORY, WATCHDOG_*), which a sink program must never get: the config refuses
   * those names, and they are filtered here again for configs built in code.
   */
  childEnv(): NodeJS.ProcessEnv {
    const { env = {}, passEnv = [] } = this.options.config;
    const out: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin' };
    for (const name of passEnv) {
      const value = process.env[name];
      if (value !== undefined) out[name] = value;
    }
    Object.assign(out, env);
    for (const name of Object.keys(out)) if (!allowedInChildEnv(name)) delete out[name];
    return out;
  }

  async close(): Promise<void> {}
}
