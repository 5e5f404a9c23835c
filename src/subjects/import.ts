/**
 * The subject import: streams a CSV/NDJSON file into the store in batches, in bounded memory
 * whatever the file's size. Two phases: every row is read, checked and staged in sorted runs
 * (src/subjects/staged-runs.ts, in a scratch database next to the store); the runs are then
 * merged in key order, which finds repeated keys and writes the store in key order (the key
 * index is appended to, not updated at random). Rejections are reported in line order at the
 * end of the merge.
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
import { ImportScratch, importScratchFile, type StagedRow } from '../store/subjects.js';
import { StagedRuns } from './staged-runs.js';
import { BackgroundCheckpointer } from '../store/checkpointer.js';
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
  /** Rows sorted in memory at a time (default 20 000); tests merge many tiny runs. */
  runRows?: number;
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
 * Page caches while importing (KiB), restored afterwards. The store is written in key order and
 * the scratch tables are appended to and read in runs, so little of either is read twice: a
 * small cache does, and keeps a 10 M-row import within 250 MB of RSS (32 MiB for the store,
 * from the days of random-order probes, and the 16 MiB default for TEMP put it near 290 MB).
 */
const IMPORT_CACHE_KIB = 8 * 1024;
const SCRATCH_CACHE_KIB = 8 * 1024;
/**
 * Main-thread time between yields to the event loop (ARCHITECTURE.md invariant 8): a batch is
 * cut short when it takes longer, so a slow disk or a busy core does not stretch the stall.
 */
const SLICE_MS = 25;

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
  /**
   * Live seed epochs whose pseudonyms of the new subjects were left to a fill, as for a bulk
   * import (src/sync/subject-index.ts deferToFill): it runs before the next signal of the
   * e-service is matched.
   */
  refilledEpochs: number;
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
  const report: ImportReport = { read: 0, imported: 0, updated: 0, unchanged: 0, removed: 0, rejected: [], rejectedCount: 0, complete: true, committed: false, dryRun, refilledEpochs: 0 };

  const scratch = new ImportScratch(db, scratchFileFor(db));
  const runs = new StagedRuns(scratch, options.runRows);
  // Every rejection goes through the scratch table and is reported from there in line order:
  // repeated keys are only found by the key-order merge, after the rows around them were read.
  const reject = (row: RejectedRow): void => {
    report.rejectedCount++;
    scratch.reject({ line: row.line, reason: row.reason, ref: row.ref ?? null });
  };
  const cacheBefore = db.pragma('main.cache_size', { simple: true }) as number;
  db.pragma(`main.cache_size = -${IMPORT_CACHE_KIB}`);
  const scratchCacheBefore = db.pragma(`${scratch.schema}.cache_size`, { simple: true }) as number;
  db.pragma(`${scratch.schema}.cache_size = -${SCRATCH_CACHE_KIB}`);
  // The WAL is copied into the database on a worker, not in the COMMITs of the import.
  const checkpointer = BackgroundCheckpointer.start(db);
  let sliceStarted = performance.now();
  const sliceSpent = (): boolean => performance.now() - sliceStarted > SLICE_MS;
  const begin = (): void => {
    if (!db.inTransaction) db.exec('BEGIN IMMEDIATE');
  };
  // reopen = false: the next transaction starts when there is something to write, so that the
  // checkpointer can catch up meanwhile (the WAL restarts only at a write transaction that
  // starts with the WAL wholly copied into the database).
  const commitAndYield = async (reopen = true): Promise<void> => {
    if (!wholeFileTransaction) {
      db.exec('COMMIT');
      if (reopen) begin();
    }
    // Never stop the world (the daemon imports its inbox in-process): a batch at a time.
    await yieldToLoop();
    sliceStarted = performance.now();
  };

  try {
    begin();
    // Phase 1: read and check every row, and stage it (sorted runs in the scratch database, on
    // disk: bounded memory). Bad rows are staged too: a later row with the same key is a duplicate,
    // and --replace keeps the stored subject.
    let goodStaged = 0;
    let sinceYield = 0;
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
      const row = checkRecord(item, { validate: options.validate, fileTenant, replace: options.replace ?? false }, resolveEservices);
      if ('reason' in row) reject(row);
      else {
        if (row.problem === null) goodStaged++;
        if (runs.add(row)) await runs.flush(commitAndYield);
      }
      if (++sinceYield >= batchSize || (sinceYield % 64 === 0 && sliceSpent())) {
        sinceYield = 0;
        options.onProgress?.({ phase: 'read', read: report.read, removed: 0 });
        await commitAndYield();
      }
    }
    await runs.flush(commitAndYield);
    options.onProgress?.({ phase: 'read', read: report.read, removed: 0 });

    // Under --strict the transaction is doomed after the first bad row, and under --replace
    // after a truncated read (removing "absent" subjects would remove good ones): the merge
    // then only finds the repeated keys, to report every problem.
    const doomed = (): boolean => Boolean((options.strict && report.rejectedCount > 0) || (options.replace && !report.complete));
    // Phase 2: merge the runs in key order and write the good rows, a batch per transaction.
    let group: StagedRow | undefined;
    let batch: SubjectUpsert[] = [];
    let merged = 0;
    const refilled = new Set<number>();
    const writeBatch = async (): Promise<void> => {
      if (batch.length > 0 && !doomed()) {
        begin();
        // New subjects still to come, at the rate met so far (rows come in key order, which
        // says nothing of which are new): many of them go to a fill, not row by row.
        const written = report.imported + report.updated + report.unchanged;
        if (written > 0 && !dryRun) {
          const comingNew = Math.round(((goodStaged - written) * report.imported) / written);
          for (const epoch of writer.deferIndexToFill(comingNew)) refilled.add(epoch);
          report.refilledEpochs = refilled.size;
        }
        for (const outcome of writer.upsertBatch(batch)) {
          if (outcome === 'new') report.imported++;
          else if (outcome === 'updated') report.updated++;
          else report.unchanged++;
        }
      }
      batch = [];
      options.onProgress?.({ phase: 'write', read: report.read, removed: 0, written: report.imported + report.updated + report.unchanged, staged: goodStaged });
      if (db.inTransaction) await commitAndYield(false);
      else {
        await yieldToLoop();
        sliceStarted = performance.now();
      }
    };
    for (const row of runs.merged()) {
      const repeated = group !== undefined && group.key === row.key && group.tenant === row.tenant;
      if (!repeated) {
        group = row;
        if (options.replace) scratch.markSeen(row.key, row.tenant);
      }
      if (repeated && !row.problemFirst) reject(rejectionOf(row, `duplicate key${row.tenant === OWN_TENANT ? '' : ` for tenant ${JSON.stringify(row.tenant)}`} (first at line ${group!.line})`));
      else if (row.problem !== null) reject(rejectionOf(row, row.problem));
      else batch.push({ key: row.key, tenant: row.tenant, ref: row.ref, eservices: row.eservices });
      // The batch is written after it is gathered: half the slice for each.
      if (++merged >= batchSize || (merged % 64 === 0 && performance.now() - sliceStarted > SLICE_MS / 2)) {
        merged = 0;
        await writeBatch();
      }
    }
    await writeBatch();

    // The rejections, in line order.
    for (let after: { line: number; seq: number } | null = null; ; ) {
      const page = scratch.rejectionsAfter(after, batchSize);
      if (page.length === 0) break;
      for (const { line, reason, ref } of page) emitRejection(line, reason, ref);
      after = page[page.length - 1]!;
      await yieldToLoop();
    }

    if (doomed()) {
      db.exec('ROLLBACK');
      Object.assign(report, { imported: 0, updated: 0, unchanged: 0, removed: 0, refilledEpochs: 0 });
      return report;
    }
    if (options.replace) report.removed = await removeAbsent(writer, scratch, fileTenant ?? OWN_TENANT, batchSize, (removed) => options.onProgress?.({ phase: 'remove', read: report.read, removed }));
    if (dryRun) {
      db.exec('ROLLBACK');
    } else {
      if (db.inTransaction) db.exec('COMMIT');
      report.committed = true;
    }
    return report;
  } catch (err) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw err;
  } finally {
    await checkpointer?.stop();
    if (db.open && scratch.schema === 'temp') db.pragma(`temp.cache_size = ${scratchCacheBefore}`);
    await scratch.dispose();
    if (db.open) db.pragma(`main.cache_size = ${cacheBefore}`);
  }

  function emitRejection(line: number, reason: string, ref: string | null): void {
    const row: RejectedRow = { line, reason };
    // A ref is the local reference and may be shown, unless someone used the key as ref: a
    // mistyped key (wrong check character, bad date) is personal data as much as a valid one.
    if (ref !== null && !(checkSubjectKey(ref).valid || looksLikeSubjectKey(ref))) row.ref = ref;
    if (report.rejected.length < maxKept) report.rejected.push(row);
    options.onReject?.(row);
  }
}

/** The import's scratch file, next to an on-disk database; '' (a temporary one) otherwise. */
function scratchFileFor(db: Db): string {
  return db.memory || db.name === '' ? '' : importScratchFile(db.name);
}

/** A staged row's rejection: its ref is shown unless it is the key itself. */
function rejectionOf(row: StagedRow, reason: string): RejectedRow {
  return { line: row.line, reason, ...(row.ref && normalizeSubjectKey(row.ref) !== row.key ? { ref: row.ref } : {}) };
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

/**
 * Checks a record: a rejection when its key is unusable (not staged), else the row to stage,
 * with its problem if any. A problem found here is reported unless the key repeats an earlier
 * row's (then "duplicate" is), except a bad tenant, reported first as before.
 */
function checkRecord(record: SubjectRecord, rules: RecordRules, resolve: EserviceResolver): StagedRow | RejectedRow {
  const key = normalizeSubjectKey(record.key);
  if (key === '' || key.length > MAX_KEY_LENGTH) {
    const refPart = record.ref && normalizeSubjectKey(record.ref) !== key ? { ref: record.ref } : {};
    return { line: record.line, reason: key === '' ? 'missing key' : `key longer than ${MAX_KEY_LENGTH} characters`, ...refPart };
  }
  // A bad tenant counts as the tenant being replaced: --replace must not remove a stored
  // subject because its row in the new file has a problem.
  let tenant = rules.fileTenant ?? OWN_TENANT;
  let tenantProblem: string | undefined;
  if (record.tenant !== undefined) {
    const parsed = parseTenant(record.tenant);
    if ('problem' in parsed) tenantProblem = parsed.problem;
    else if (rules.fileTenant !== undefined && parsed.tenant !== rules.fileTenant) tenantProblem = `tenant ${JSON.stringify(parsed.tenant)} differs from --tenant ${JSON.stringify(rules.fileTenant)}`;
    else if (rules.fileTenant === undefined && rules.replace) tenantProblem = 'a row with a tenant under --replace: replace one tenant at a time with --tenant';
    else tenant = parsed.tenant;
  }
  const row: StagedRow = { key, tenant, line: record.line, problem: tenantProblem ?? null, problemFirst: tenantProblem !== undefined, ref: record.ref, eservices: undefined };
  if (row.problem !== null) return row;
  if (rules.validate) {
    const check = checkSubjectKey(key);
    if (!check.valid) return { ...row, problem: check.reason };
  }
  const resolved = resolve(record.eservices);
  if ('unknown' in resolved) return { ...row, problem: `unknown e-service ${quoteSafely(resolved.unknown, 80)} (not an id or name in the configuration)` };
  row.eservices = resolved.ids;
  return row;
}

/** --replace: removes `tenant`'s memberships of keys the file did not list for it. */
async function removeAbsent(writer: SubjectWriter, scratch: ImportScratch, tenant: string, pageSize: number, onProgress: (removed: number) => void): Promise<number> {
  let removed = 0;
  const last = scratch.lastMember(tenant);
  // Subject ids per step: as many as the last step suggests fit in a slice of main-thread time.
  let span = pageSize;
  for (let after = 0; after < last; ) {
    const started = performance.now();
    const upTo = Math.min(last, after + span);
    const page = scratch.absentBetween(writer.store, tenant, after, upTo);
    if (page.length > 0) removed += writer.removeMemberships(page.map((subject) => ({ subject, tenant })));
    after = upTo;
    onProgress(removed);
    span = Math.max(64, Math.min(pageSize, Math.round((span * SLICE_MS) / Math.max(1, performance.now() - started))));
    await yieldToLoop();
  }
  return removed;
}

/** The index settings of a configuration, for importSubjects and SubjectWriter. */
export function subjectIndexOptions(config: Pick<Config, 'subjects' | 'events' | 'eservices'>): SubjectIndexOptions {
  return {
    backfill: config.subjects.backfill,
    includeSubjectKey: config.events.includeSubjectKey,
    eserviceNames: new Map(config.eservices.map((e) => [e.id, e.name])),
  };
}
