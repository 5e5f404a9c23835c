import type { Command } from 'commander';
import fs from 'node:fs';
import type { Config } from '../config/types.js';
import { AppError, isAppError } from '../errors.js';
import { SinkPositionStore } from '../store/sink-positions.js';
import { pendingExceeds, sinkStatus, type SinkStatus } from '../sinks/status.js';
import { action, loadCliConfig } from './common.js';
import { openReader, openWriter, type WriterDb } from './db.js';
import { formatTable } from './status.js';

export interface SinkListEntry extends SinkStatus {
  /** More than outbox.max_pending events wait: pulling pauses for the e-services it takes. */
  backpressure: boolean;
}

/**
 * `signalhub-sync sinks list|retry`. `list` only reads (safe next to a running daemon).
 * `retry NAME` writes, so it takes the writer lock: while the daemon runs it is refused, and
 * the running daemon is told instead with SIGHUP (`systemctl reload signalhub-sync`), on which
 * it resumes its stopped sinks.
 */
export function registerSinks(program: Command): void {
  const sinks = program.command('sinks').description('Show and manage the sinks events are delivered to');

  sinks
    .command('list')
    .description('Per sink: state, position, pending events, last error')
    .option('--json', 'print JSON instead of a table')
    .action(
      action(async (opts: { json?: boolean }, cmd: Command) => {
        const config = await loadCliConfig(cmd);
        const entries = listSinks(config);
        process.stdout.write(opts.json ? `${JSON.stringify(entries, null, 2)}\n` : formatSinkTable(entries));
      }),
    );

  sinks
    .command('retry')
    .description('Resume a sink stopped on a permanent error (after fixing the receiver)')
    .argument('<name>', 'sink name')
    .addHelpText('after', '\nWhile the daemon runs this is refused (it holds the database); send it SIGHUP instead: "systemctl reload signalhub-sync" resumes every stopped sink.')
    .action(
      action(async (name: string, _opts: unknown, cmd: Command) => {
        const config = await loadCliConfig(cmd);
        const result = retrySink(config, name);
        process.stdout.write(
          result.resumed
            ? `sink "${name}" resumed at position ${result.position}; ${result.pending} event(s) pending; the next run delivers them\n`
            : `sink "${name}" was not stopped (position ${result.position}, ${result.pending} pending)\n`,
        );
      }),
    );
}

export function listSinks(config: Pick<Config, 'database' | 'sinks' | 'outbox'>): SinkListEntry[] {
  const db = openReader(config);
  try {
    return sinkStatus(db, config.sinks).map((s) => ({
      ...s,
      backpressure: config.outbox.maxPending > 0 && pendingExceeds(db, s.position, s.eservices, config.outbox.maxPending),
    }));
  } finally {
    db.close();
  }
}

export function retrySink(config: Pick<Config, 'database' | 'sinks'>, name: string): { resumed: boolean; position: number; pending: number } {
  const sink = config.sinks.find((s) => s.name === name);
  if (!sink) {
    throw new AppError('USAGE', `no sink named "${name}" in the configuration (configured: ${config.sinks.map((s) => s.name).join(', ') || 'none'})`);
  }
  if (!fs.existsSync(config.database)) {
    throw new AppError('DB_NOT_INITIALIZED', `database ${config.database} does not exist yet: no sink has run, nothing to retry`);
  }
  let store: WriterDb;
  try {
    store = openWriter(config, `sinks retry ${name}`);
  } catch (err) {
    if (isAppError(err) && err.code === 'DB_LOCKED') {
      throw new AppError('DB_LOCKED', `${err.message}. To resume stopped sinks in the running daemon, send it SIGHUP ("systemctl reload signalhub-sync")`, { retryable: true, cause: err });
    }
    throw err;
  }
  try {
    const resumed = new SinkPositionStore(store.db).resume(name);
    const status = sinkStatus(store.db, [sink])[0]!;
    return { resumed, position: status.position, pending: status.pending };
  } finally {
    store.close();
  }
}

export function formatSinkTable(entries: readonly SinkListEntry[]): string {
  if (entries.length === 0) return 'no sinks configured: events stay in the outbox\n';
  const header = ['NAME', 'TYPE', 'STATE', 'POSITION', 'PENDING', 'DELIVERED', 'LAST ERROR'];
  const rows = entries.map((e) => [
    e.name,
    e.type,
    e.state === 'stopped' ? 'STOPPED' : e.backpressure ? 'active (backpressure)' : 'active',
    String(e.position),
    String(e.pending),
    String(e.delivered),
    e.lastError ? `${e.lastErrorAt ?? ''} ${e.lastError}` : '-',
  ]);
  return `${formatTable(header, rows)}\n`;
}
