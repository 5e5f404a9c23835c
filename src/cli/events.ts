import type { Command } from 'commander';
import type { Config } from '../config/types.js';
import { AppError } from '../errors.js';
import type { OutboxEvent } from '../events.js';
import { eventJsonSchema } from '../event-schema.js';
import { EServiceStore } from '../store/eservices.js';
import { OutboxStore } from '../store/outbox.js';
import { OWN_TENANT_LABEL, parseTenantFilter } from '../tenant.js';
import { action, loadCliConfig } from './common.js';
import { openReader } from './db.js';
import { escapeForTerminal } from '../terminal.js';
import { formatTable, integerArg, resolveEService } from './status.js';

export interface ListedEvent {
  seq: number;
  event: OutboxEvent;
}

export interface EventPage {
  events: ListedEvent[];
  /** More events follow the last one listed: continue with `--since <lastSeq>`. */
  more: boolean;
  lastSeq: number;
}

const DEFAULT_LIMIT = 100;

export function registerEvents(program: Command): void {
  const events = program.command('events').description('Inspect the outbox of change events; print their JSON Schema');
  registerEventSchema(events);

  events
    .command('list')
    .description('List outbox events in order (read-only: safe while the daemon runs)')
    .option('--since <seq>', 'only events after this outbox seq', integerArg(0), 0)
    .option('--limit <n>', 'at most this many events', integerArg(1), DEFAULT_LIMIT)
    .option('--eservice <id>', 'only events of this e-service (id or configured name; repeatable)', (v: string, acc: string[] = []) => [...acc, v])
    .option('--tenant <tenant>', `only signal events of this tenant ("${OWN_TENANT_LABEL}": the consumer's own subjects; repeatable)`, (v: string, acc: string[] = []) => [...acc, v])
    .option('--json', 'NDJSON: one event per line, as delivered to sinks, with its "seq"')
    .addHelpText(
      'after',
      `
The table shows the subject's local ref, never its key; --json prints events exactly as stored,
which include "subjectKey" only when events.include_subject_key = true.
When more events follow, a hint on stderr gives the --since to continue with.
Exit codes: 0 listed (possibly none); 64 bad option or unknown e-service; 66 no database yet.`,
    )
    .action(
      action(async (opts: { since: number; limit: number; eservice?: string[]; tenant?: string[]; json?: boolean }, cmd: Command) => {
        const config = await loadCliConfig(cmd);
        const page = listEvents(config, { since: opts.since, limit: opts.limit, eservices: opts.eservice ?? [], tenants: opts.tenant ?? [] });
        if (opts.json) {
          for (const e of page.events) process.stdout.write(`${JSON.stringify({ seq: e.seq, ...e.event })}\n`);
        } else {
          process.stdout.write(page.events.length === 0 ? `no events after seq ${opts.since}\n` : formatEvents(page.events));
        }
        if (page.more) process.stderr.write(`more events follow: continue with --since ${page.lastSeq}\n`);
      }),
    );
}

function registerEventSchema(events: Command): void {
  events
    .command('schema')
    .description('Print the JSON Schema (draft 2020-12) of the events delivered to sinks, versioned')
    .addHelpText('after', '\nCompatibility: fields and event types are added (minor version), never renamed or removed: receivers ignore what they do not know.\nNeeds no configuration.')
    .action(
      action(async () => {
        process.stdout.write(`${JSON.stringify(eventJsonSchema(), null, 2)}\n`);
      }),
    );
}

export function listEvents(config: Config, opts: { since: number; limit: number; eservices: readonly string[]; tenants?: readonly string[] }): EventPage {
  const tenants = (opts.tenants ?? []).map((t) => {
    const parsed = parseTenantFilter(t);
    if ('problem' in parsed) throw new AppError('USAGE', `--tenant: ${parsed.problem}`);
    return parsed.tenant;
  });
  const db = openReader(config);
  try {
    const known = new EServiceStore(db).all();
    const ids = opts.eservices.map((ref) => resolveEService(config, ref, known).id);
    // One row beyond the limit tells whether more follow without counting the whole outbox.
    const rows = new OutboxStore(db).readAfter(opts.since, opts.limit + 1, { eservices: ids, tenants });
    const events = rows.slice(0, opts.limit).map((row) => ({ seq: row.seq, event: parsePayload(row.seq, row.payload) }));
    return { events, more: rows.length > opts.limit, lastSeq: events.at(-1)?.seq ?? opts.since };
  } finally {
    db.close();
  }
}

function parsePayload(seq: number, payload: string): OutboxEvent {
  let value: unknown;
  try {
    value = JSON.parse(payload);
  } catch {
    throw new AppError('DB_ERROR', `outbox seq ${seq}: the stored event is not valid JSON`);
  }
  const type = (value as { type?: unknown } | null)?.type;
  if (typeof value !== 'object' || value === null || (type !== 'signal' && type !== 'resync-required')) {
    throw new AppError('DB_ERROR', `outbox seq ${seq}: the stored event has no known "type"`);
  }
  return value as OutboxEvent;
}

export function formatEvents(events: readonly ListedEvent[]): string {
  const rows = events.map(({ seq, event: e }) =>
    e.type === 'signal'
      ? [String(seq), e.id, e.type, e.eserviceName, String(e.signalId), e.signalType, e.objectType, e.subjectRef ?? '-', e.receivedAt, e.backfilled ? 'backfilled' : '']
      : [String(seq), e.id, e.type, e.eserviceName, `${e.fromSignalId}..${e.toSignalId}`, e.reason, '-', '-', e.createdAt, e.detail],
  );
  // objectType, detail and the names come from producers or files: no terminal escapes through.
  const safeRows = rows.map((cells) => cells.map(escapeForTerminal));
  return `${formatTable(['SEQ', 'ID', 'TYPE', 'E-SERVICE', 'SIGNAL', 'SIGNAL TYPE', 'OBJECT TYPE', 'SUBJECT REF', 'RECEIVED', 'NOTE'], safeRows)}\n`;
}
