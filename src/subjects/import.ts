/**
 * The subject import: streams a CSV/NDJSON file into the store in batches, in bounded memory
 * whatever the file's size (keys seen are kept in a TEMP table, not in a JS Set).
 *
 * Transactions:
 * - default: one transaction per batch; good rows are imported, bad rows reported;
 * - `strict`, `replace`, `dryRun`: the whole file in one transaction, rolled back when any row
 *   is bad (strict), when the file cannot be read to its end (replace: removing "absent"
 *   subjects after a truncated read would remove good ones), or always (dry run).
 * Rejections carry line numbers, reasons and refs, never keys (personal data).
 */
import type { Readable } from 'node:stream';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Db } from '../store/db.js';
import type { Config } from '../config/types.js';
import { ImportScratch, type StoredSubject } from '../store/subjects.js';
import type { SubjectIndexOptions } from '../sync/subject-index.js';
import { normalizeSubjectKey } from '../crypto/pseudonym.js';
import { checkSubjectKey } from './fiscal-code.js';
import { looksLikeSubjectKey, quoteSafely } from './redact.js';
import { readSubjectFile, type SubjectFormat, type SubjectRecord } from './parse.js';
import { SubjectWriter, type SubjectUpsert } from './apply.js';
import { OWN_TENANT, parseTenant } from '../tenant.js';
import { AppError } from '../errors.js';

export interface ConfiguredEService {
  id: string;
  name: string;
}

export interface RejectedRow {
  line: number;
  reason: string;
  ref?: string;
}

export interface ImportOptions {
  format: SubjectFormat;
  /** How messages name the input: a path, or "stdin". */
  source: string;
  /** The configured e-services: rows may name them by id or by name. */
  eservices: ConfiguredEService[];
  /** subjects.validate: reject keys that are not valid fiscal codes / 11-digit codes. */
  validate: boolean;
  index: SubjectIndexOptions;
  strict?: boolean;
  /**
   * Make one tenant's subjects exactly those of the file: `tenant`'s, or without it the
   * consumer's own. Other tenants' memberships are never touched.
   */
  replace?: boolean;
  /**
   * The tenant (delegator) of every row: a row naming another tenant is rejected. Without it,
   * each row's `tenant` column/field applies, and rows without one are the consumer's own.
   */
  tenant?: string;
  dryRun?: boolean;
  /** Rows per transaction (default mode) and per index call. */
  batchSize?: number;
  /** Rejections kept in the report (all are counted and passed to onReject). */
  maxRejectedKept?: number;
  onReject?: (row: RejectedRow) => void;
  /** Called after each batch: records read so far, and subjects removed by --replace so far. */
  onProgress?: (progress: ImportProgress) => void;
  now?: () => number;
}

export interface ImportProgress {
  /** read: checking and staging the file; write: storing the staged rows in key order; remove: --replace. */
  phase: 'read' | 'write' | 'remove';
  read: number;
  removed: number;
  /** In the write phase: rows written so far, of `staged`. */
  written?: number;
  staged?: number;
}

/**
 * Page cache while importing (KiB, negative = size): the random-order probes of the key index
 * stay in memory longer. Bounded, and restored afterwards. 64 MiB put a 1 M-row CLI import at
 * 210–290 MB of peak RSS (over the 250 MB bound of test/subjects-cli.test.ts under load); 32 MiB
 * keeps it near 170 MB.
 */
const IMPORT_CACHE_KIB = 32 * 1024;

export interface ImportReport {
  /** Records read (good and bad). */
  read: number;
  /** New subjects (a key new for its tenant). */
  imported: number;
  /** Stored subjects whose ref or e-services changed. */
  updated: number;
  unchanged: number;
  /** Removed by --replace (memberships of the replaced tenant). */
  removed: number;
  /** The first `maxRejectedKept` rejections, by line. */
  rejected: RejectedRow[];
  rejectedCount: number;
  /** Whether the whole file was read (false after a fatal syntax error). */
  complete: boolean;
  /** Whether changes were committed (false: dry run, or rolled back by strict/replace). */
  committed: boolean;
  dryRun: boolean;
}

const MAX_KEY_LENGTH = 256;

export async function importSubjects(db: Db, input: Readable, options: ImportOptions): Promise<ImportReport> {
  const batchSize = options.batchSize ?? 5000;
  const maxKept = options.maxRejectedKept ?? 1000;
  const dryRun = options.dryRun ?? false;
  const wholeFileTransaction = Boolean(options.strict || options.replace || dryRun);
  const resolveEservices = eserviceResolver(options.eservices);
  let fileTenant: string | undefined;
  if (options.tenant !== undefined) {
    const parsed = parseTenant(options.tenant);
    if ('problem' in parsed) throw new AppError('USAGE', `--tenant: ${parsed.problem}`);
    fileTenant = parsed.tenant;
  }
  const writer = new SubjectWriter(db, { index: dryRun ? null : options.index, ...(options.now ? { now: options.now } : {}) });
  const report: ImportReport = { read: 0, imported: 0, updated: 0, unchanged: 0, removed: 0, rejected: [], rejectedCount: 0, complete: true, committed: false, dryRun };

  const reject = (row: RejectedRow): void => {
    // A ref is the local reference and may be shown, unless someone used the key as ref: a
    // mistyped key (wrong check character, bad date) is personal data as much as a valid one.
    if (row.ref !== undefined && (checkSubjectKey(row.ref).valid || looksLikeSubjectKey(row.ref))) delete row.ref;
    report.rejectedCount++;
    if (report.rejected.length < maxKept) report.rejected.push(row);
    options.onReject?.(row);
  };

  const scratch = new ImportScratch(db);
  const cacheBefore = db.pragma('cache_size', { simple: true }) as number;
  db.pragma(`cache_size = -${IMPORT_CACHE_KIB}`);
  const begin = (): void => {
    if (!db.inTransaction) db.exec('BEGIN IMMEDIATE');
  };
  const commitAndYield = async (): Promise<void> => {
    if (!wholeFileTransaction) {
      db.exec('COMMIT');
      begin();
    }
    // Never stop the world (the daemon imports its inbox in-process): a batch at a time.
    await yieldToLoop();
  };

  try {
    begin();
    // Phase 1: read, check and stage every row (TEMP table, on disk: bounded memory).
    let staged = 0;
    for await (const item of readSubjectFile(input, options.format, options.source)) {
      if (item.kind === 'problem') {
        if (!item.fatal) report.read++;
        reject({ line: item.line, reason: item.reason, ...(item.ref ? { ref: item.ref } : {}) });
        if (item.fatal) {
          report.complete = false;
          break;
        }
        continue;
      }
      report.read++;
      const upsert = checkRecord(item, { validate: options.validate, fileTenant, replace: options.replace ?? false }, resolveEservices, scratch);
      if ('reason' in upsert) {
        reject(upsert);
        continue;
      }
      // Under --strict the transaction is doomed after the first bad row: keep reading only to
      // report every problem.
      if (options.strict && report.rejectedCount > 0) continue;
      scratch.stage({ ...upsert, tenant: upsert.tenant ?? OWN_TENANT });
      if (++staged % batchSize === 0) {
        options.onProgress?.({ phase: 'read', read: report.read, removed: 0 });
        await commitAndYield();
      }
    }

    const rollBack = (options.strict && report.rejectedCount > 0) || (options.replace && !report.complete);
    if (rollBack) {
      db.exec('ROLLBACK');
      Object.assign(report, { imported: 0, updated: 0, unchanged: 0, removed: 0 });
      return report;
    }
    options.onProgress?.({ phase: 'read', read: report.read, removed: 0 });
    // Phase 2: write the staged rows to the store in key order, a batch per transaction.
    let after = { key: '', tenant: '' };
    for (;;) {
      const batch: SubjectUpsert[] = scratch.stagedPage(after, batchSize);
      if (batch.length === 0) break;
      for (const outcome of writer.upsertBatch(batch)) {
        if (outcome === 'new') report.imported++;
        else if (outcome === 'updated') report.updated++;
        else report.unchanged++;
      }
      const last = batch[batch.length - 1]!;
      after = { key: last.key, tenant: last.tenant ?? OWN_TENANT };
      options.onProgress?.({ phase: 'write', read: report.read, removed: 0, written: report.imported + report.updated + report.unchanged, staged });
      await commitAndYield();
    }
    if (options.replace) report.removed = await removeAbsent(writer, scratch, fileTenant ?? OWN_TENANT, batchSize, (removed) => options.onProgress?.({ phase: 'remove', read: report.read, removed }));
    if (dryRun) {
      db.exec('ROLLBACK');
    } else {
      db.exec('COMMIT');
      report.committed = true;
    }
    return report;
  } catch (err) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw err;
  } finally {
    scratch.dispose();
    if (db.open) db.pragma(`cache_size = ${cacheBefore}`);
  }
}

type EserviceResolver = (names: string[] | 'all' | undefined) => { ids: string[] | 'all' | undefined } | { unknown: string };

/** Rows name e-services by hub id (any case) or by configured name (any case). */
function eserviceResolver(configured: ConfiguredEService[]): EserviceResolver {
  const byName = new Map<string, string>();
  for (const e of configured) byName.set(e.name.trim().toLowerCase(), e.id);
  // Ids win over names when a name happens to equal another e-service's id.
  for (const e of configured) byName.set(e.id.toLowerCase(), e.id);
  return (names) => {
    if (names === undefined || names === 'all') return { ids: names };
    const ids: string[] = [];
    for (const name of names) {
      const id = byName.get(name.toLowerCase());
      if (id === undefined) return { unknown: name };
      ids.push(id);
    }
    return { ids };
  };
}

interface RecordRules {
  validate: boolean;
  /** --tenant, normalized. */
  fileTenant: string | undefined;
  replace: boolean;
}

function checkRecord(record: SubjectRecord, rules: RecordRules, resolve: EserviceResolver, scratch: ImportScratch): SubjectUpsert | RejectedRow {
  const key = normalizeSubjectKey(record.key);
  const refPart = record.ref && normalizeSubjectKey(record.ref) !== key ? { ref: record.ref } : {};
  const fail = (reason: string): RejectedRow => ({ line: record.line, reason, ...refPart });
  if (key === '') return fail('missing key');
  if (key.length > MAX_KEY_LENGTH) return fail(`key longer than ${MAX_KEY_LENGTH} characters`);
  let tenant = rules.fileTenant ?? OWN_TENANT;
  let tenantProblem: string | undefined;
  if (record.tenant !== undefined) {
    const parsed = parseTenant(record.tenant);
    if ('problem' in parsed) tenantProblem = parsed.problem;
    else if (rules.fileTenant !== undefined && parsed.tenant !== rules.fileTenant) tenantProblem = `tenant ${JSON.stringify(parsed.tenant)} differs from --tenant ${JSON.stringify(rules.fileTenant)}`;
    else if (rules.fileTenant === undefined && rules.replace) tenantProblem = 'a row with a tenant under --replace: replace one tenant at a time with --tenant';
    else tenant = parsed.tenant;
  }
  // Marked seen even when the row is bad: --replace must not remove a stored subject because
  // its row in the new file has a problem. (A bad tenant counts as the tenant being replaced.)
  const firstLine = scratch.markSeen(key, tenant, record.line);
  if (tenantProblem !== undefined) return fail(tenantProblem);
  if (firstLine !== undefined) return fail(`duplicate key${tenant === OWN_TENANT ? '' : ` for tenant ${JSON.stringify(tenant)}`} (first at line ${firstLine})`);
  const validate = rules.validate;
  if (validate) {
    const check = checkSubjectKey(key);
    if (!check.valid) return fail(check.reason);
  }
  const resolved = resolve(record.eservices);
  if ('unknown' in resolved) return fail(`unknown e-service ${quoteSafely(resolved.unknown, 80)} (not an id or name in the configuration)`);
  return { key, tenant, ref: record.ref, eservices: resolved.ids };
}

/** --replace: removes `tenant`'s memberships of keys the file did not list for it. */
async function removeAbsent(writer: SubjectWriter, scratch: ImportScratch, tenant: string, pageSize: number, onProgress: (removed: number) => void): Promise<number> {
  let removed = 0;
  let after = 0;
  for (;;) {
    const page: StoredSubject[] = scratch.absentPage(writer.store, tenant, after, pageSize);
    if (page.length === 0) return removed;
    removed += writer.removeMemberships(page.map((subject) => ({ subject, tenant })));
    after = page[page.length - 1]!.id;
    onProgress(removed);
    await yieldToLoop();
  }
}

/** The index settings of a configuration, for importSubjects and SubjectWriter. */
export function subjectIndexOptions(config: Pick<Config, 'subjects' | 'events' | 'eservices'>): SubjectIndexOptions {
  return {
    backfill: config.subjects.backfill,
    includeSubjectKey: config.events.includeSubjectKey,
    eserviceNames: new Map(config.eservices.map((e) => [e.id, e.name])),
  };
}
