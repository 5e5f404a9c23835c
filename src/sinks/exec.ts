import { spawn } from 'node:child_process';
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
 * another sink's NDJSON stream); its stderr goes to ours, i.e. the journal.
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
      const child = spawn(program, command.slice(1), { stdio: ['pipe', 'ignore', 'inherit'], shell: false });
      let settled = false;
      let why: 'timeout' | 'shutdown' | undefined;
      let killTimer: NodeJS.Timeout | undefined;
      const terminate = (reason: 'timeout' | 'shutdown'): void => {
        why ??= reason;
        child.kill('SIGTERM');
        killTimer = setTimeout(() => child.kill('SIGKILL'), this.options.killGraceMs ?? 2000);
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
        if (why === 'shutdown') return finish(sinkFailed(this.name, `${program} killed on shutdown`));
        if (why === 'timeout') return finish(sinkFailed(this.name, `${program} did not finish within ${timeoutMs} ms and was killed`));
        if (code === 0) return finish();
        if (code !== null && PERMANENT_EXIT_CODES.has(code)) {
          return finish(sinkRejected(this.name, `${program} exited with ${code}: the command refuses these events; fix it, then run "signalhub-sync sinks retry ${this.name}"`, { details: { exitCode: code } }));
        }
        finish(sinkFailed(this.name, code !== null ? `${program} exited with ${code}` : `${program} was killed by ${sig}`, { details: { exitCode: code, signal: sig } }));
      });
      // A command that exits without reading all of stdin gives EPIPE: its exit code decides.
      child.stdin.on('error', (err: NodeJS.ErrnoException) => this.logger.debug({ err: { code: err.code } }, 'exec sink stdin closed early'));
      child.stdin.end(ndjson(batch));
    });
  }

  async close(): Promise<void> {}
}
