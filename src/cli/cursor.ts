import type { Command } from 'commander';
import type { Config } from '../config/types.js';
import { EServiceStore, type EServiceRow } from '../store/eservices.js';
import { action, cliLogger, loadCliConfig } from './common.js';
import { openReader, openWriter } from './db.js';
import { formatTable, integerArg, resolveEService } from './status.js';

export interface CursorEntry {
  eserviceId: string;
  name: string;
  /** Last processed signalId (0: nothing yet). */
  cursor: number;
  state: string;
  lastPullAt: string | null;
}

export interface CursorChange {
  eserviceId: string;
  name: string;
  from: number;
  to: number;
}

const MOVE_HELP = `
Moving the cursor is an operator's deliberate act; the daemon must be stopped (the command is
refused with exit 75 while it holds the database).
- Backwards (or "reset", to 0): the next sync reads those signals again. Signals it already
  processed within the retention period (the signal log remembers them) are passed over: no
  duplicate events, no duplicate resync reports, counters unchanged. With subjects.backfill off
  and hub.rescan_overlap 0 there is no signal log: re-read signals are matched again, and the
  outbox still ignores event ids it already holds, so sinks see no duplicates.
- Forwards: the signals in between are never read and produce no events. If a SEEDUPDATE is
  among them, later signals are matched with the old seed and missed: move forward only when
  the local side is resynchronized by other means.
Exit codes: 0 done; 64 unknown e-service or bad id; 66 no database (show); 75 database in use.`;

export function registerCursor(program: Command): void {
  const cursor = program.command('cursor').description('Show or move the per e-service cursor (the last processed signalId)').addHelpText('after', MOVE_HELP);

  cursor
    .command('show')
    .description('Show the cursor of every e-service (read-only: safe while the daemon runs)')
    .option('--eservice <id>', 'only this e-service (id or configured name)')
    .option('--json', 'print JSON')
    .action(
      action(async (opts: { eservice?: string; json?: boolean }, cmd: Command) => {
        const config = await loadCliConfig(cmd);
        const entries = showCursors(config, opts.eservice);
        if (opts.json) process.stdout.write(`${JSON.stringify(opts.eservice !== undefined ? entries[0] : entries, null, 2)}\n`);
        else process.stdout.write(`${formatTable(['E-SERVICE', 'NAME', 'CURSOR', 'STATE', 'LAST PULL'], entries.map((e) => [e.eserviceId, e.name, String(e.cursor), e.state, e.lastPullAt ?? 'never']))}\n`);
      }),
    );

  cursor
    .command('set')
    .description('Set the cursor of an e-service to a signalId (backwards re-reads, forwards skips)')
    .argument('<signalId>', 'the new cursor: the next sync reads signals with a higher id', integerArg(0))
    .requiredOption('--eservice <id>', 'the e-service (id or configured name)')
    .option('--json', 'print the change as JSON')
    .addHelpText('after', MOVE_HELP)
    .action(
      action(async (signalId: number, opts: { eservice: string; json?: boolean }, cmd: Command) => {
        const config = await loadCliConfig(cmd);
        reportChange(cmd, config, moveCursor(config, opts.eservice, signalId, 'cursor set'), opts.json);
      }),
    );

  cursor
    .command('reset')
    .description('Set the cursor of an e-service to 0: the next sync reads everything the hub still keeps')
    .requiredOption('--eservice <id>', 'the e-service (id or configured name)')
    .option('--json', 'print the change as JSON')
    .addHelpText('after', MOVE_HELP)
    .action(
      action(async (opts: { eservice: string; json?: boolean }, cmd: Command) => {
        const config = await loadCliConfig(cmd);
        reportChange(cmd, config, moveCursor(config, opts.eservice, 0, 'cursor reset'), opts.json);
      }),
    );
}

export function showCursors(config: Config, eservice?: string): CursorEntry[] {
  const db = openReader(config);
  try {
    const rows = new EServiceStore(db).all();
    const byId = new Map(rows.map((r) => [r.eserviceId, r]));
    const entry = (id: string, name: string, row: EServiceRow | undefined): CursorEntry => ({
      eserviceId: id,
      name,
      cursor: row?.cursor ?? 0,
      state: row?.state ?? 'new',
      lastPullAt: row?.lastPullAt != null ? new Date(row.lastPullAt).toISOString() : null,
    });
    if (eservice !== undefined) {
      const es = resolveEService(config, eservice, rows);
      return [entry(es.id, es.name, byId.get(es.id))];
    }
    const configured = config.eservices.map((e) => entry(e.id, e.name, byId.get(e.id)));
    const others = rows.filter((r) => !config.eservices.some((e) => e.id === r.eserviceId)).map((r) => entry(r.eserviceId, `${r.name} (not configured)`, r));
    return [...configured, ...others];
  } finally {
    db.close();
  }
}

/** Sets the cursor under the writer lock; an e-service never synced gets its row now. */
export function moveCursor(config: Config, eservice: string, to: number, purpose: string): CursorChange {
  const es = resolveEService(config, eservice);
  const store = openWriter(config, `${purpose} ${es.id}`);
  try {
    const eservices = new EServiceStore(store.db);
    return store.db.transaction(() => {
      const from = eservices.ensure(es.id, es.name).cursor;
      eservices.setCursor(es.id, to);
      return { eserviceId: es.id, name: es.name, from, to };
    }).immediate();
  } finally {
    store.close();
  }
}

function reportChange(cmd: Command, config: Config, change: CursorChange, json: boolean | undefined): void {
  cliLogger(cmd, config).info({ eservice: change.eserviceId, from: change.from, to: change.to }, 'cursor moved by the operator');
  if (change.to > change.from) {
    process.stderr.write(`signalhub-sync: warning: no events will be produced for signals ${change.from + 1}..${change.to}; if a SEEDUPDATE is among them, later signals are matched with the old seed\n`);
  }
  if (json) {
    process.stdout.write(`${JSON.stringify(change)}\n`);
    return;
  }
  const what =
    change.to < change.from
      ? `the next sync reads signals ${change.to + 1}..${change.from} again (no duplicate events)`
      : change.to > change.from
        ? `signals ${change.from + 1}..${change.to} will not be read`
        : 'unchanged';
  process.stdout.write(`${change.name} (${change.eserviceId}): cursor ${change.from} -> ${change.to}: ${what}\n`);
}
