import fs from 'node:fs';
import type { Command } from 'commander';
import type { Config } from '../config/types.js';
import { AppError } from '../errors.js';
import type { ResyncReason } from '../events.js';
import { ResyncStore, type ResyncReport } from '../store/resync.js';
import { action, cliLogger, loadCliConfig } from './common.js';
import { openReader, openWriter } from './db.js';
import { formatTable, integerArg } from './status.js';

export interface ListedReport {
  id: number;
  eserviceId: string;
  eserviceName: string;
  /** Inclusive range of signal ids whose subjects may have changed unseen. */
  fromSignalId: number;
  toSignalId: number;
  reason: ResyncReason;
  detail: string | null;
  createdAt: string;
  /** Null while the range still grows (signals of an unknown epoch keep arriving). */
  closedAt: string | null;
  ackedAt: string | null;
}

export type AckResult = { outcome: 'acknowledged' | 'already-acknowledged'; report: ListedReport };

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export function registerResync(program: Command): void {
  const resync = program
    .command('resync')
    .description('Signal ranges whose subjects may have changed without an event: resynchronize them locally, then acknowledge');

  resync
    .command('list')
    .description('List open (unacknowledged) resync reports (read-only: safe while the daemon runs)')
    .option('--all', 'include acknowledged reports')
    .option('--json', 'print a JSON array')
    .action(
      action(async (opts: { all?: boolean; json?: boolean }, cmd: Command) => {
        const config = await loadCliConfig(cmd);
        const reports = listReports(config, opts.all ?? false);
        if (opts.json) process.stdout.write(`${JSON.stringify(reports, null, 2)}\n`);
        else process.stdout.write(reports.length === 0 ? `no ${opts.all ? '' : 'open '}resync reports\n` : formatReports(reports));
      }),
    );

  resync
    .command('ack')
    .description('Acknowledge a resync report once the local side is resynchronized for its range')
    .argument('<id>', 'report id (see "resync list")', integerArg(1))
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nWrites, so it is refused (exit 75) while the daemon holds the database.\nExit codes: 0 acknowledged, or already acknowledged; 64 no such report; 66 no database yet; 75 database in use.')
    .action(
      action(async (id: number, opts: { json?: boolean }, cmd: Command) => {
        const config = await loadCliConfig(cmd);
        const result = ackReport(config, id);
        const r = result.report;
        if (result.outcome === 'acknowledged') cliLogger(cmd, config).info({ reportId: r.id, eservice: r.eserviceId, from: r.fromSignalId, to: r.toSignalId }, 'resync report acknowledged');
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(result)}\n`);
          return;
        }
        const what = `resync report ${r.id} (${r.eserviceName}, signals ${r.fromSignalId}..${r.toSignalId}, ${r.reason})`;
        process.stdout.write(result.outcome === 'acknowledged' ? `${what} acknowledged\n` : `${what} was already acknowledged at ${r.ackedAt}\n`);
        if (r.closedAt === null) {
          process.stdout.write('note: this report is still open: its range grows while signals of its epoch arrive, and its resync-required event is written when it closes\n');
        }
      }),
    );
}

function nameOf(config: Pick<Config, 'eservices'>, eserviceId: string): string {
  return config.eservices.find((e) => e.id === eserviceId)?.name ?? eserviceId;
}

function toListed(config: Pick<Config, 'eservices'>, r: ResyncReport): ListedReport {
  return {
    id: r.id,
    eserviceId: r.eserviceId,
    eserviceName: nameOf(config, r.eserviceId),
    fromSignalId: r.fromSignalId,
    toSignalId: r.toSignalId,
    reason: r.reason,
    detail: r.detail,
    createdAt: iso(r.createdAt)!,
    closedAt: iso(r.closedAt),
    ackedAt: iso(r.ackedAt),
  };
}

export function listReports(config: Config, includeAcked: boolean): ListedReport[] {
  const db = openReader(config);
  try {
    return new ResyncStore(db).list({ includeAcked }).map((r) => toListed(config, r));
  } finally {
    db.close();
  }
}

export function ackReport(config: Config, id: number): AckResult {
  // openWriter would create an empty database; there is nothing to acknowledge in one.
  if (!fs.existsSync(config.database)) {
    throw new AppError('DB_NOT_INITIALIZED', `database ${config.database} does not exist yet: there are no resync reports`);
  }
  const store = openWriter(config, `resync ack ${id}`);
  try {
    const reports = new ResyncStore(store.db);
    const acked = reports.ack(id);
    const report = reports.get(id);
    if (!report) throw new AppError('USAGE', `no resync report with id ${id} (see "signalhub-sync resync list --all")`);
    return { outcome: acked ? 'acknowledged' : 'already-acknowledged', report: toListed(config, report) };
  } finally {
    store.close();
  }
}

export function formatReports(reports: readonly ListedReport[]): string {
  const rows = reports.map((r) => [
    String(r.id),
    r.eserviceName,
    `${r.fromSignalId}..${r.toSignalId}`,
    r.reason,
    r.createdAt,
    r.ackedAt ? `acknowledged ${r.ackedAt}` : r.closedAt ? 'open' : 'open, growing',
    r.detail ?? '',
  ]);
  return `${formatTable(['ID', 'E-SERVICE', 'SIGNALS', 'REASON', 'CREATED', 'STATE', 'DETAIL'], rows)}\n`;
}
