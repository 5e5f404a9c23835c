import { OWN_TENANT_LABEL } from '../tenant.js';
import { InvalidArgumentError, type Command } from 'commander';
import type { Config } from '../config/types.js';
import { createRequire } from 'node:module';
import { AppError, EXIT } from '../errors.js';
import { collectStatus, type EServiceStatus, type Moment, type SyncStatus } from '../sync/status.js';
import { action, loadCliConfig } from './common.js';
import { openReader } from './db.js';

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('Per e-service: cursor, last pull, signals and matches, current seed epoch, open resync reports; per sink: pending events')
    .option('--json', 'print JSON instead of tables (with ISO times and ages)')
    .addHelpText(
      'after',
      '\nRead-only: safe while the daemon runs. Seeds are shown by fingerprint (first 8 hex of SHA-256) only.\n' +
        'Exit codes: 0 every configured e-service healthy; 1 shown, but an e-service is failing, stale\n' +
        '(no successful pull for 3 poll intervals, at least 15 minutes) or blocked (paused by a sink\'s\n' +
        'backlog, or a stopped sink); 66 the database does not exist yet; 78 configuration error.',
    )
    .action(
      action(async (opts: { json?: boolean }, cmd: Command) => {
        const config = await loadCliConfig(cmd);
        const db = openReader(config);
        let status: SyncStatus;
        try {
          status = collectStatus(db, config, Date.now());
        } finally {
          db.close();
        }
        const health = assessHealth(status, config);
        process.stdout.write(opts.json ? `${JSON.stringify({ version: VERSION, ...status, health }, null, 2)}\n` : formatStatus(status) + formatHealth(health));
        return health.ok ? EXIT.OK : EXIT.UNHEALTHY;
      }),
    );
}

const VERSION = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

export interface HealthProblem {
  /** E-service id or sink name. */
  subject: string;
  problem: 'failing' | 'stale' | 'blocked';
  detail: string;
}

export interface Health {
  ok: boolean;
  problems: HealthProblem[];
}

/** An e-service is stale after this many poll intervals without a successful pull (never under STALE_MIN_SECONDS). */
export const STALE_POLL_INTERVALS = 3;
export const STALE_MIN_SECONDS = 900;

/**
 * The rule `status` exits by (README "Status and its exit code"): configured e-services only
 * (one the config no longer lists is history). A new e-service never pulled is not stale: the
 * daemon may not have started yet.
 */
export function assessHealth(status: SyncStatus, config: Pick<Config, 'eservices'>): Health {
  const problems: HealthProblem[] = [];
  for (const e of status.eservices.filter((x) => x.configured)) {
    if (e.state === 'failing' || e.state === 'stopped') {
      problems.push({ subject: e.id, problem: 'failing', detail: `${e.name}: ${e.state}${e.lastError ? `: ${e.lastError.code ?? 'ERROR'}: ${e.lastError.message}` : ''}` });
    }
    const interval = config.eservices.find((c) => c.id === e.id)?.pollIntervalSeconds ?? 60;
    const limit = Math.max(STALE_POLL_INTERVALS * interval, STALE_MIN_SECONDS);
    if (e.lastPull && e.lastPull.ageSeconds > limit) {
      problems.push({ subject: e.id, problem: 'stale', detail: `${e.name}: last successful pull ${age(e.lastPull.ageSeconds)} ago (limit ${age(limit)})` });
    }
    if (e.pausedBySink || e.state === 'paused') {
      problems.push({ subject: e.id, problem: 'blocked', detail: `${e.name}: pulling paused${e.pausedBySink ? ` by the backlog of sink ${e.pausedBySink}` : ''}` });
    }
  }
  for (const s of status.sinks.filter((x) => x.state === 'stopped')) {
    problems.push({ subject: s.name, problem: 'blocked', detail: `sink ${s.name} stopped: ${s.lastError ?? 'see "sinks list"'}; resume with "sinks retry ${s.name}"` });
  }
  return { ok: problems.length === 0, problems };
}

function formatHealth(health: Health): string {
  if (health.ok) return 'health: ok\n';
  return `health: ${health.problems.length} problem(s)\n${health.problems.map((p) => `  ${p.problem}: ${p.detail}`).join('\n')}\n`;
}

export function formatStatus(status: SyncStatus): string {
  const out: string[] = [];
  if (status.eservices.length === 0) out.push('no e-services configured');
  else {
    out.push(
      formatTable(
        ['E-SERVICE', 'NAME', 'STATE', 'CURSOR', 'LAST PULL', 'CAUGHT UP', 'SIGNALS', 'MATCHES', 'EPOCH', 'RESYNC'],
        status.eservices.map((e) => [
          e.id,
          e.configured ? e.name : `${e.name} (not configured)`,
          describeState(e),
          String(e.cursor),
          ago(e.lastPull),
          ago(e.caughtUp),
          String(e.signalsSeen),
          String(e.matches),
          describeEpoch(e),
          e.openResyncReports > 0 ? `${e.openResyncReports} open` : '-',
        ]),
      ),
    );
    for (const e of status.eservices.filter((x) => x.lastError)) {
      const err = e.lastError!;
      out.push(`last error of ${e.name}: ${err.code ?? 'ERROR'}${err.at ? ` ${err.at.at}` : ''}: ${err.message}`);
    }
    // Warnings before data is lost (alerts.*) and why the hub refuses an e-service (403).
    for (const e of status.eservices) {
      if (e.retention?.message) out.push(`${e.retention.level === 'critical' ? 'CRITICAL' : 'STALE'}: ${e.name}: ${e.retention.message}`);
      if (e.forbidden) out.push(`refused by the hub (403, ${e.forbidden.reason}): ${e.name}: ${e.forbidden.fix}`);
    }
    for (const e of status.eservices) {
      const reasons = Object.entries(e.skippedSignals);
      if (reasons.length > 0) out.push(`skipped signals of ${e.name} (recorded, not matched): ${reasons.map(([r, n]) => `${r} ${n}`).join(', ')}`);
    }
  }
  out.push('');
  if (status.sinks.length === 0) out.push('no sinks configured: events stay in the outbox (see "events list")');
  else {
    out.push(
      formatTable(
        ['SINK', 'TYPE', 'STATE', 'POSITION', 'PENDING', 'LAST ERROR'],
        status.sinks.map((s) => [s.name, s.type, s.state === 'stopped' ? 'STOPPED' : s.state, String(s.position), String(s.pending), s.lastError ? `${s.lastErrorAt ?? ''} ${s.lastError}` : '-']),
      ),
    );
  }
  // Delegations (SPEC §8c): shown once some tenant other than the consumer itself has subjects or events.
  if (status.tenants.some((x) => x.tenant !== null)) {
    out.push('');
    out.push(formatTable(['TENANT', 'SUBJECTS', 'EVENTS'], status.tenants.map((x) => [x.tenant ?? `${OWN_TENANT_LABEL} (own subjects)`, String(x.subjects), String(x.events)])));
  }
  const t = status.totals;
  out.push('');
  out.push(`totals: ${t.eservices} e-service(s), ${t.signalsSeen} signals, ${t.matches} matches, ${t.outboxEvents} event(s) in the outbox (last seq ${t.lastSeq}), ${t.openResyncReports} open resync report(s)${t.openResyncReports > 0 ? ': see "resync list"' : ''}`);
  return `${out.join('\n')}\n`;
}

function describeState(e: EServiceStatus): string {
  const parts: string[] = [e.forbidden ? `${e.state} (403 ${e.forbidden.reason})` : e.state];
  if (e.pausedBySink) parts.push(`paused by sink ${e.pausedBySink}`);
  if (e.retention && e.retention.level !== 'ok') parts.push(e.retention.level === 'critical' ? 'CRITICAL' : 'STALE');
  return parts.join(', ');
}

function describeEpoch(e: EServiceStatus): string {
  const epoch = e.epoch;
  if (!epoch) return '-';
  const seed = epoch.status === 'unknown' ? 'no seed' : `${epoch.seedFingerprint ?? '?'} ${epoch.algorithm ?? ''}`.trimEnd();
  return `#${epoch.id} ${epoch.status} ${seed} from ${epoch.startSignalId} (${age(epoch.opened.ageSeconds)})`;
}

function ago(m: Moment | null): string {
  return m ? `${age(m.ageSeconds)} ago` : 'never';
}

/** A compact age: 42s, 7m, 3h, 12d (the table's times; --json has the ISO times). */
export function age(seconds: number): string {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172_800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86_400)}d`;
}

/** Columns padded to their widest cell; the last column is not padded. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(header), ...rows.map(line)].map((l) => l.trimEnd()).join('\n');
}

/** A commander argument parser for an integer in [min, 2^53-1]; bad input is a usage error (64). */
export function integerArg(min: number): (value: string) => number {
  return (value: string) => {
    const n = /^\d+$/.test(value.trim()) ? Number(value.trim()) : NaN;
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min} and <= ${Number.MAX_SAFE_INTEGER}`);
    return n;
  };
}

/**
 * The e-service an operator named on the command line, by id or by configured name. `known`
 * adds e-services the database has but the configuration no longer lists (read-only commands).
 */
export function resolveEService(config: Pick<Config, 'eservices'>, ref: string, known: readonly { eserviceId: string; name: string }[] = []): { id: string; name: string } {
  // As subject files name them: a hub id or a configured name, in any case (ids win).
  const wanted = ref.trim().toLowerCase();
  const configured = config.eservices.find((e) => e.id.toLowerCase() === wanted) ?? config.eservices.find((e) => e.name.trim().toLowerCase() === wanted);
  if (configured) return { id: configured.id, name: configured.name };
  const stored = known.find((e) => e.eserviceId.toLowerCase() === wanted);
  if (stored) return { id: stored.eserviceId, name: stored.name };
  const list = config.eservices.map((e) => `${e.id} (${e.name})`).join(', ') || 'none';
  throw new AppError('USAGE', `--eservice ${ref}: no such e-service in the configuration (configured: ${list})`);
}
