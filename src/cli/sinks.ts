import type { Command } from 'commander';
import fs from 'node:fs';
import type { Config } from '../config/types.js';
import { AppError, isAppError } from '../errors.js';
import { DeadLetterStore, type DeadLetter } from '../store/dead-letters.js';
import { SinkPositionStore } from '../store/sink-positions.js';
import { escapeForTerminal } from '../terminal.js';
import { pendingExceeds, sinkStatus, type SinkStatus } from '../sinks/status.js';
import { action, loadCliConfig } from './common.js';
import { openReader, openWriter, type WriterDb } from './db.js';
import { formatTable, integerArg } from './status.js';

export interface SinkListEntry extends SinkStatus {
  /** More than outbox.max_pending events wait: pulling pauses for the e-services it takes. */
  backpressure: boolean;
}

/**
 * `signalhub-sync sinks list|retry|dead-letters`. `list` only reads (safe next to a running daemon).
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

  registerDeadLetters(sinks);
}

/**
 * `sinks dead-letters list|retry|drop`. `list` only reads; `retry` queues dead letters for
 * redelivery (the delivery loop offers them before its next outbox batch) and `drop` deletes
 * them: both write, so while the daemon runs they are refused (exit 75) like `sinks retry`.
 */
function registerDeadLetters(sinks: Command): void {
  const dead = sinks.command('dead-letters').description('Events a receiver refused for good, set aside by sinks with on_reject = "dead-letter"');

  dead
    .command('list')
    .description('Dead letters, oldest first (read-only: safe while the daemon runs)')
    .option('--sink <name>', 'only this sink')
    .option('--limit <n>', 'at most this many', integerArg(1), 100)
    .option('--json', 'NDJSON: one dead letter per line, with the event as delivered')
    .action(
      action(async (opts: { sink?: string; limit: number; json?: boolean }, cmd: Command) => {
        const config = await loadCliConfig(cmd);
        if (opts.sink !== undefined) sinkNamed(config, opts.sink);
        const letters = listDeadLetters(config, opts);
        if (opts.json) {
          for (const l of letters) process.stdout.write(`${JSON.stringify(deadLetterJson(l))}\n`);
        } else {
          process.stdout.write(formatDeadLetters(letters));
        }
      }),
    );

  for (const verb of ['retry', 'drop'] as const) {
    dead
      .command(verb)
      .description(verb === 'retry' ? 'Queue dead letters of a sink for redelivery (the next run or sync --once offers them again)' : 'Delete dead letters of a sink for good')
      .argument('<sink>', 'sink name')
      .argument('[ids...]', 'dead letter ids (from "list"); with --all, every one of the sink')
      .option('--all', `${verb} every dead letter of the sink`)
      .addHelpText('after', '\nWrites the database: refused while the daemon runs (exit 75); stop it, or run this between timer runs.')
      .action(
        action(async (sink: string, ids: string[], opts: { all?: boolean }, cmd: Command) => {
          const config = await loadCliConfig(cmd);
          const parsed = ids.map((id) => {
            const n = /^\d+$/.test(id) ? Number(id) : NaN;
            if (!Number.isSafeInteger(n)) throw new AppError('USAGE', `dead letter id "${escapeForTerminal(id.slice(0, 40))}" is not a number`);
            return n;
          });
          if ((parsed.length === 0) === !opts.all) throw new AppError('USAGE', `sinks dead-letters ${verb}: give dead letter ids or --all, not both or neither`);
          const count = changeDeadLetters(config, verb, { sink, ids: opts.all ? undefined : parsed });
          process.stdout.write(
            verb === 'retry'
              ? `${count} dead letter(s) of sink "${sink}" queued for redelivery; the next run (or sync --once) offers them again\n`
              : `${count} dead letter(s) of sink "${sink}" dropped\n`,
          );
        }),
      );
  }
}

export function listDeadLetters(config: Pick<Config, 'database'>, opts: { sink?: string; limit: number }): DeadLetter[] {
  const db = openReader(config);
  try {
    return new DeadLetterStore(db).list({ sink: opts.sink, limit: opts.limit });
  } finally {
    db.close();
  }
}

export function changeDeadLetters(config: Pick<Config, 'database' | 'sinks'>, verb: 'retry' | 'drop', selection: { sink: string; ids?: number[] }): number {
  sinkNamed(config, selection.sink);
  if (!fs.existsSync(config.database)) throw new AppError('DB_NOT_INITIALIZED', `database ${config.database} does not exist yet: no dead letters`);
  const store = openWriter(config, `sinks dead-letters ${verb}`);
  try {
    const letters = new DeadLetterStore(store.db);
    return verb === 'retry' ? letters.markForRetry(selection) : letters.drop(selection);
  } finally {
    store.close();
  }
}

function sinkNamed(config: Pick<Config, 'sinks'>, name: string): void {
  if (!config.sinks.some((s) => s.name === name)) {
    throw new AppError('USAGE', `no sink named "${escapeForTerminal(name.slice(0, 80))}" in the configuration (configured: ${config.sinks.map((s) => s.name).join(', ') || 'none'})`);
  }
}

function deadLetterJson(l: DeadLetter): Record<string, unknown> {
  let event: unknown;
  try {
    event = JSON.parse(l.payload);
  } catch {
    event = l.payload;
  }
  return { id: l.id, sink: l.sink, state: l.state, status: l.status, error: l.error, response: l.response, attempts: l.attempts, seq: l.seq, eventId: l.eventId, createdAt: new Date(l.createdAt).toISOString(), updatedAt: new Date(l.updatedAt).toISOString(), event };
}

/** A table; the receiver's answer on one line, clipped, with control characters escaped. */
export function formatDeadLetters(letters: readonly DeadLetter[]): string {
  if (letters.length === 0) return 'no dead letters\n';
  const oneLine = (text: string | null): string => {
    if (!text) return '-';
    const flat = text.replace(/\s+/g, ' ').trim();
    return escapeForTerminal(flat.length > 120 ? `${flat.slice(0, 120)}…` : flat);
  };
  const rows = letters.map((l) => [String(l.id), l.sink, l.state, l.eventId, l.status === null ? '-' : String(l.status), String(l.attempts), new Date(l.updatedAt).toISOString(), oneLine(l.response)]);
  return `${formatTable(['ID', 'SINK', 'STATE', 'EVENT', 'STATUS', 'ATTEMPTS', 'LAST REFUSED', 'ANSWER'], rows)}\n`;
}

export function listSinks(config: Pick<Config, 'database' | 'sinks' | 'outbox'>): SinkListEntry[] {
  const db = openReader(config);
  try {
    return sinkStatus(db, config.sinks).map((s) => ({
      ...s,
      backpressure: config.outbox.maxPending > 0 && pendingExceeds(db, s.position, { eservices: s.eservices, tenants: s.tenants, signalTypes: s.signalTypes }, config.outbox.maxPending),
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
