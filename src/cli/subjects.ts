import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { Command, Option } from 'commander';
import { action, cliLogger, loadCliConfig } from './common.js';
import { AppError, EXIT, isAppError, type ErrorCode } from '../errors.js';
import type { Config } from '../config/types.js';
import { openDatabase, type Db } from '../store/db.js';
import { WriterLock } from '../store/lock.js';
import { SubjectStore } from '../store/subjects.js';
import { normalizeSubjectKey } from '../crypto/pseudonym.js';
import { importSubjects, subjectIndexOptions, type ImportReport, type RejectedRow } from '../subjects/import.js';
import { detectFormat, readSubjectFile, SUBJECT_FORMATS } from '../subjects/parse.js';
import { SubjectWriter } from '../subjects/apply.js';
import { SubjectInbox, type QueuedImport } from '../subjects/inbox.js';
import { progressLine } from './progress.js';
import { OWN_TENANT, OWN_TENANT_LABEL, parseTenant } from '../tenant.js';

const formatOption = () => new Option('--format <format>', 'input format (default: from the extension; csv for stdin)').choices([...SUBJECT_FORMATS]);

export function registerSubjects(program: Command): void {
  const subjects = program.command('subjects').description("the subjects (fiscal codes) whose signals are matched: the consumer's own, and its delegators' (--tenant)");

  subjects
    .command('import')
    .description('import subjects from a CSV or NDJSON file ("-" for stdin)')
    .argument('<file>', 'CSV (header: key[,ref][,eservices][,tenant]), NDJSON ({"key","ref","eservices","tenant"} per line), or "-"')
    .addOption(formatOption())
    .option('--tenant <tenant>', "the delegator (tenant id) every row of the file belongs to; without it rows are the consumer's own, or the tenant of their tenant column/field")
    .option('--strict', 'import nothing if any row is bad')
    .option('--replace', "make the stored subjects of the tenant (--tenant, or the consumer's own) exactly those of the file, in one transaction")
    .option('--dry-run', 'check and count, write nothing')
    .option('--queue', 'if the daemon holds the database, queue the file for it to apply between sync runs, and wait for its report')
    .option('--wait-timeout <seconds>', 'with --queue: how long to wait for the daemon', '600')
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      `
Keys are trimmed and upper-cased; unless subjects.validate = false, only Italian fiscal codes
(16 characters, omocodic ones included, check character verified) and 11-digit codes of legal
persons (check digit verified) are accepted. "eservices" lists e-service ids or names separated
by ";" (CSV) or as an array (NDJSON); empty means every configured e-service. A CSV whose
header is separated by ";" (Excel in an Italian locale) is read with ";" between fields; a list
of e-services is then quoted, as Excel does. A file without a ref or eservices column leaves
those of already stored subjects as they are.
Bad rows are reported on stderr by the line where the record starts and its ref (never by
key), and the good rows are imported. With --replace, a stored subject whose row in the file
is bad is kept as it was; if the file cannot be read to its end, nothing changes.

Delegations: a delegate acting for several delegators imports each one's subjects with
--tenant T (a PDND tenant id or IPA code: letters, digits, "_", "." or "-", at most 64, lower-
cased), or one file with a "tenant" column/field. The same key may belong to several tenants
and to the consumer itself: each gets its own events. --replace is scoped to one tenant:
with --tenant T it removes only T's subjects missing from the file; without --tenant only the
consumer's own subjects (a row naming a tenant is then rejected). Other tenants are never touched.

With --queue the import also works while the daemon runs (e.g. from cron): the file is copied
beside the database (mode 0600), the daemon pauses pulling, applies it exactly as a direct
import would, and this command prints its report.

Exit status: 0 all rows imported; 65 some rows were rejected (with --strict: nothing was
imported), or the file could not be read to its end; 66 the file does not exist; 75 the
database is in use by the daemon (without --queue), or the daemon did not apply the queued file
within --wait-timeout (it stays queued); 78 invalid configuration.`,
    )
    .action(action(importCommand));

  subjects
    .command('remove')
    .description('remove subjects by key, given as arguments or in a file')
    .argument('[keys...]', 'subject keys (note: arguments are visible to other local users in the process list; prefer --file)')
    .option('--file <file>', 'a file of keys: CSV/NDJSON as for import, or .txt with one key per line ("-" for stdin)')
    .addOption(formatOption())
    .option('--tenant <tenant>', "remove the keys of this delegator only (default: the consumer's own; a file's tenant column/field applies per row)")
    .option('--all-tenants', 'remove the keys entirely, for the consumer and every delegator')
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      '\nA key shared with other tenants stays for them: its pseudonyms go only when no tenant keeps it.\nExit status: 0 done (keys that were not stored for the tenant are counted as "not found"); 65 the file had unreadable rows; 75 the database is in use.',
    )
    .action(action(removeCommand));

  subjects
    .command('count')
    .description('how many subjects are stored, in total and per configured e-service')
    .option('--json', 'print JSON')
    .action(action(countCommand));
}

interface ImportFlags {
  format?: string;
  strict?: boolean;
  replace?: boolean;
  dryRun?: boolean;
  queue?: boolean;
  waitTimeout: string;
  json?: boolean;
  tenant?: string;
}

async function importCommand(file: string, flags: ImportFlags, cmd: Command): Promise<number> {
  // Opened before the config is loaded: root then acts as the service user (loadCliConfig),
  // who may not be able to read an administrator's file.
  // Checked before anything else: a bad tenant must not reach a log line nor the daemon's queue.
  if (flags.tenant !== undefined) flags = { ...flags, tenant: tenantOption(flags.tenant) };
  const { input, bytes: inputBytes } = openInput(file);
  const config = await loadCliConfig(cmd);
  const logger = cliLogger(cmd, config);
  const format = detectFormat(file, flags.format);
  const source = file === '-' ? 'stdin' : file;
  const waitSeconds = Number(flags.waitTimeout);
  if (!(waitSeconds > 0)) throw new AppError('USAGE', `--wait-timeout ${flags.waitTimeout}: expected a positive number of seconds`);
  const progress = progressLine({ label: 'subjects import', stream: process.stderr, logger });
  // The input file's size against the bytes read so far gives the ETA (not for stdin or a FIFO).
  const fractionRead = () => (inputBytes > 0 && 'bytesRead' in input ? Math.min(1, (input as fs.ReadStream).bytesRead / inputBytes) : undefined);
  const direct = () =>
    withWriter(config, 'subjects import', (db) =>
      importSubjects(db, input, {
        format,
        source,
        eservices: config.eservices.map((e) => ({ id: e.id, name: e.name })),
        validate: config.subjects.validate,
        index: subjectIndexOptions(config),
        strict: flags.strict ?? false,
        replace: flags.replace ?? false,
        ...(flags.tenant !== undefined ? { tenant: flags.tenant } : {}),
        dryRun: flags.dryRun ?? false,
        onReject: flags.json
          ? undefined
          : (row) => {
              progress.done(); // the rejection gets its own line, the live line comes back on the next update
              process.stderr.write(`${describeRejection(row)}\n`);
            },
        onProgress: (p) => {
          if (p.phase === 'read') progress.update({ what: 'rows read and checked', rows: p.read, ...optional('fraction', fractionRead()) });
          else if (p.phase === 'write') progress.update({ what: 'subjects stored (key order)', rows: p.written ?? 0, ...optional('fraction', p.staged ? (p.written ?? 0) / p.staged : undefined) });
          else progress.update({ what: 'absent subjects removed (--replace)', rows: p.removed });
        },
      }),
    ).finally(() => progress.done());
  let report: ImportReport;
  try {
    report = await direct();
  } catch (err) {
    // The lock is taken before the input is read: the whole file is still there to queue.
    if (!(flags.queue && !flags.dryRun && isAppError(err) && err.code === 'DB_LOCKED')) throw err;
    report = await queueForDaemon(config, input, { format, source, strict: flags.strict ?? false, replace: flags.replace ?? false, ...(flags.tenant !== undefined ? { tenant: flags.tenant } : {}) }, waitSeconds * 1000, !flags.json);
  }
  logger.info({ source, ...(flags.tenant !== undefined ? { tenant: flags.tenant } : {}), read: report.read, imported: report.imported, updated: report.updated, unchanged: report.unchanged, removed: report.removed, rejected: report.rejectedCount, committed: report.committed, refilledEpochs: report.refilledEpochs }, 'subjects import finished');
  process.stdout.write(flags.json ? `${JSON.stringify(report)}\n` : importSummary(report, flags));
  return report.rejectedCount > 0 || !report.complete ? EXIT.DATAERR : EXIT.OK;
}

async function queueForDaemon(config: Config, input: Readable, job: Omit<QueuedImport, 'id' | 'queuedAt'>, timeoutMs: number, printRejections: boolean): Promise<ImportReport> {
  const inbox = new SubjectInbox(config.database);
  const queued = await inbox.enqueueImport(input, job);
  process.stderr.write(`the daemon holds the database: import queued as ${queued.id}, waiting for the daemon to apply it\n`);
  const result = await inbox.waitForResult(queued.id, { timeoutMs });
  if (result.error) throw new AppError(result.error.code as ErrorCode, `queued import: ${result.error.message}`);
  const report = result.report!;
  if (printRejections) for (const row of report.rejected) process.stderr.write(`${describeRejection(row)}\n`);
  if (printRejections && report.rejectedCount > report.rejected.length) process.stderr.write(`... and ${report.rejectedCount - report.rejected.length} more rejected rows\n`);
  return report;
}

const optional = <K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } => (value === undefined ? {} : ({ [key]: value } as { [P in K]?: V }));

export function describeRejection(row: RejectedRow): string {
  return `line ${row.line}: ${row.reason}${row.ref ? ` (ref ${row.ref})` : ''}`;
}

function importSummary(report: ImportReport, flags: ImportFlags): string {
  const counts = `read ${report.read}, new ${report.imported}, updated ${report.updated}, unchanged ${report.unchanged}, removed ${report.removed}, rejected ${report.rejectedCount}`;
  let outcome: string;
  if (report.dryRun) outcome = 'dry run: nothing was written';
  else if (!report.committed && flags.strict && report.rejectedCount > 0) outcome = `nothing was imported (--strict): ${report.rejectedCount} bad row${report.rejectedCount === 1 ? '' : 's'}`;
  else if (!report.committed) outcome = 'nothing was imported (--replace): the file could not be read to its end';
  else if (!report.complete) outcome = 'the file could not be read to its end: rows after the error were not imported';
  else outcome = report.rejectedCount > 0 ? 'good rows imported, bad rows reported on stderr' : 'all rows imported';
  // A queued report from a daemon of an earlier version has no such field.
  const refilled = report.committed && (report.refilledEpochs ?? 0) > 0 ? `a bulk import: ${report.refilledEpochs} seed epoch${report.refilledEpochs === 1 ? '' : 's'} will compute the new subjects' pseudonyms in one fill, before the next signal of their e-service is matched\n` : '';
  return `subjects import: ${counts}\n${outcome}\n${refilled}`;
}

interface RemoveFlags {
  file?: string;
  format?: string;
  tenant?: string;
  allTenants?: boolean;
  json?: boolean;
}

const REMOVE_BATCH = 5000;

async function removeCommand(keys: string[], flags: RemoveFlags, cmd: Command): Promise<number> {
  if (keys.length > 0 && flags.file !== undefined) throw new AppError('USAGE', 'give keys as arguments or --file, not both');
  if (keys.length === 0 && flags.file === undefined) throw new AppError('USAGE', 'give the keys to remove as arguments or with --file');
  if (flags.tenant !== undefined && flags.allTenants) throw new AppError('USAGE', 'give --tenant or --all-tenants, not both');
  const flagTenant = flags.tenant === undefined ? undefined : tenantOption(flags.tenant);
  const file = flags.file;
  const input = file === undefined ? undefined : openInput(file).input;
  const config = await loadCliConfig(cmd);
  const logger = cliLogger(cmd, config);
  const format = file === undefined ? undefined : detectFormat(file, flags.format);
  const where = (n: number) => (file === undefined ? `argument ${n}` : `line ${n}`);

  let removed = 0;
  let notFound = 0;
  let problems = 0;
  await withWriter(config, 'subjects remove', async (db) => {
    const writer = new SubjectWriter(db, { index: subjectIndexOptions(config) });
    // Removals of one tenant at a time (a file's rows may name several).
    let batch: { position: number; key: string }[] = [];
    let batchTenant: string | 'every' = flags.allTenants ? 'every' : (flagTenant ?? OWN_TENANT);
    const flush = () => {
      const found = writer.removeKeys(batch.map((b) => b.key), batchTenant);
      found.forEach((wasStored, i) => {
        if (wasStored) return;
        notFound++;
        if (!flags.json) process.stderr.write(`${where(batch[i]!.position)}: not found\n`);
      });
      removed += found.filter(Boolean).length;
      batch = [];
    };
    const add = (position: number, rawKey: string, tenant: string | 'every') => {
      if (tenant !== batchTenant) {
        flush();
        batchTenant = tenant;
      }
      batch.push({ position, key: normalizeSubjectKey(rawKey) });
      if (batch.length >= REMOVE_BATCH) flush();
    };
    if (input === undefined) {
      keys.forEach((key, i) => add(i + 1, key, batchTenant));
    } else {
      for await (const item of readSubjectFile(input, format!, file === '-' ? 'stdin' : file!)) {
        if (item.kind === 'problem') {
          problems++;
          if (!flags.json) process.stderr.write(`line ${item.line}: ${item.reason}\n`);
          if (item.fatal) break;
          continue;
        }
        const tenant = rowTenant(item.tenant, flags.allTenants ? 'every' : flagTenant);
        if (typeof tenant === 'object') {
          problems++;
          if (!flags.json) process.stderr.write(`line ${item.line}: ${tenant.problem}\n`);
          continue;
        }
        add(item.line, item.key, tenant);
      }
    }
    flush();
  });
  // Keys removed twice in one run count once as removed, then as not found: what the store saw.
  logger.info({ removed, notFound, problems }, 'subjects remove finished');
  process.stdout.write(flags.json ? `${JSON.stringify({ removed, notFound, problems })}\n` : `subjects remove: removed ${removed}, not found ${notFound}${problems ? `, unreadable rows ${problems}` : ''}\n`);
  return problems > 0 ? EXIT.DATAERR : EXIT.OK;
}

async function countCommand(flags: { json?: boolean }, cmd: Command): Promise<number> {
  const config = await loadCliConfig(cmd);
  const counts = {
    total: 0,
    eservices: config.eservices.map((e) => ({ id: e.id, name: e.name, subjects: 0 })),
    /** Keys per tenant (null: the consumer's own); a key shared by tenants counts for each. */
    tenants: [] as { tenant: string | null; subjects: number }[],
  };
  // A missing database is exit 66 as for status and events list: a count of 0 would hide a wrong `database` path.
  const db = openDatabase(config.database, { readonly: true });
  try {
    const store = new SubjectStore(db);
    counts.total = store.count();
    for (const e of counts.eservices) e.subjects = store.countForEService(e.id);
    counts.tenants = store.countByTenant().map((t) => ({ tenant: t.tenant === OWN_TENANT ? null : t.tenant, subjects: t.subjects }));
  } finally {
    db.close();
  }
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(counts)}\n`);
  } else {
    const lines = [`subjects: ${counts.total}`, ...counts.eservices.map((e) => `  ${e.name} (${e.id}): ${e.subjects}`)];
    // Delegations: per tenant once a delegator has subjects.
    if (counts.tenants.some((t) => t.tenant !== null)) lines.push('tenants:', ...counts.tenants.map((t) => `  ${t.tenant ?? `${OWN_TENANT_LABEL} (own subjects)`}: ${t.subjects}`));
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  return EXIT.OK;
}

/** Runs `fn` holding the single-writer lock, on a freshly opened (and migrated) database. */
async function withWriter<T>(config: Config, purpose: string, fn: (db: Db) => Promise<T>): Promise<T> {
  // The lock file sits beside the database: its folder must exist before the database does.
  fs.mkdirSync(path.dirname(config.database), { recursive: true, mode: 0o700 });
  const lock = WriterLock.acquire(config.database, purpose);
  try {
    const db = openDatabase(config.database);
    try {
      return await fn(db);
    } finally {
      db.close();
    }
  } finally {
    lock.release();
  }
}

/** A --tenant value, normalized; a usage error that does not echo it (it could be a key typed in the wrong place). */
function tenantOption(value: string): string {
  const parsed = parseTenant(value);
  if ('problem' in parsed) throw new AppError('USAGE', `--tenant: ${parsed.problem}`);
  return parsed.tenant;
}

/** The tenant a removal row applies to: --all-tenants or --tenant, else the row's own, else the consumer's. */
function rowTenant(raw: string | undefined, flag: string | 'every' | undefined): string | 'every' | { problem: string } {
  if (raw === undefined) return flag ?? OWN_TENANT;
  const parsed = parseTenant(raw);
  if ('problem' in parsed) return parsed;
  if (flag === 'every') return 'every';
  if (flag !== undefined && parsed.tenant !== flag) return { problem: `tenant ${JSON.stringify(parsed.tenant)} differs from --tenant ${JSON.stringify(flag)}` };
  return parsed.tenant;
}

/** The input, opened now; `bytes`: a regular file's size, for the ETA (0 for stdin or a FIFO). */
function openInput(file: string): { input: Readable; bytes: number } {
  if (file === '-') return { input: process.stdin, bytes: 0 };
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new AppError('INPUT_NOT_FOUND', `${file}: no such file`);
    throw new AppError('INPUT_INVALID', `${file}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  if (!stat.isFile() && !stat.isFIFO()) throw new AppError('INPUT_INVALID', `${file}: not a file`);
  // Opened now (not on the stream's first read), with the rights of whoever started the command:
  // root then acts as the service user, who may not even be able to stat an administrator's file.
  return { input: fs.createReadStream(file, { fd: fs.openSync(file, 'r') }), bytes: stat.isFile() ? stat.size : 0 };
}
