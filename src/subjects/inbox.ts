import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { Config } from '../config/types.js';
import { AppError, isAppError } from '../errors.js';
import type { Db } from '../store/db.js';
import { importSubjects, subjectIndexOptions, type ImportReport } from './import.js';
import type { SubjectFormat } from './parse.js';

/**
 * Subject imports queued for the running daemon. The daemon holds the single-writer lock, so a
 * `subjects import --queue` run spools its file here and the daemon applies it between sync
 * runs, on its own connection; the CLI waits for the result file.
 *
 * Layout, beside the database (same protection: the folder is 0700, files 0600, since the data
 * holds fiscal codes): `<id>.data` (the file as given), `<id>.job.json` (written last: its
 * presence means the job is complete), `<id>.result.json` (the report: line numbers and refs,
 * never keys). A job is applied at most once: its files are removed in the step that writes the
 * result.
 */
export interface QueuedImport {
  id: string;
  format: SubjectFormat;
  source: string;
  strict: boolean;
  replace: boolean;
  /** `subjects import --tenant`: the delegator every row belongs to (absent in jobs queued before tenants existed). */
  tenant?: string;
  queuedAt: string;
}

export interface InboxResult {
  id: string;
  finishedAt: string;
  report?: ImportReport;
  error?: { code: string; message: string };
}

const JOB = '.job.json';
const RESULT = '.result.json';
const ATTEMPTED = '.attempted';

/** Written and fsynced: the mark must survive the crash it is there for. */
function writeSynced(file: string, text: string): void {
  const fd = fs.openSync(file, 'w', 0o600);
  try {
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export class SubjectInbox {
  readonly dir: string;

  constructor(database: string) {
    this.dir = `${database}.inbox`;
  }

  async enqueueImport(input: Readable, job: Omit<QueuedImport, 'id' | 'queuedAt'>): Promise<QueuedImport> {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    // Sortable ids: jobs are applied in the order they were queued.
    const queued: QueuedImport = { ...job, id: `${Date.now().toString().padStart(15, '0')}-${randomUUID()}`, queuedAt: new Date().toISOString() };
    const data = this.file(queued.id, '.data');
    await pipeline(input, fs.createWriteStream(data, { mode: 0o600 }));
    const tmp = `${this.file(queued.id, JOB)}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(queued), { mode: 0o600 });
    fs.renameSync(tmp, this.file(queued.id, JOB));
    return queued;
  }

  /** Queued job ids, oldest first. */
  pending(): string[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return [];
    }
    return names.filter((n) => n.endsWith(JOB)).map((n) => n.slice(0, -JOB.length)).sort();
  }

  /**
   * Applies one queued job on `db` (the caller holds the writer lock) and records its result.
   * Never throws: a job that fails gets a result with the error, and its files are removed, so
   * no job is tried again and again. The job is marked as attempted (`<id>.attempted`, synced)
   * before it is applied: a job found marked was being applied when the process died (a file
   * that exhausts memory would otherwise crash the daemon at every start), and is reported as
   * failed instead of applied again.
   */
  async apply(id: string, db: Db, config: Config): Promise<InboxResult> {
    let result: InboxResult;
    const attempted = this.file(id, ATTEMPTED);
    try {
      if (fs.existsSync(attempted)) {
        throw new AppError('INPUT_INVALID', `queued import ${id} was being applied when the daemon stopped (${fs.readFileSync(attempted, 'utf8').trim() || 'time unknown'}), perhaps because of this file; it is not applied again: check the file and import it again`);
      }
      const job = JSON.parse(fs.readFileSync(this.file(id, JOB), 'utf8')) as QueuedImport;
      writeSynced(attempted, `attempted at ${new Date().toISOString()}\n`);
      const report = await importSubjects(db, fs.createReadStream(this.file(id, '.data')), {
        format: job.format,
        source: job.source,
        eservices: config.eservices.map((e) => ({ id: e.id, name: e.name })),
        validate: config.subjects.validate,
        index: subjectIndexOptions(config),
        strict: job.strict,
        replace: job.replace,
        ...(job.tenant !== undefined ? { tenant: job.tenant } : {}),
      });
      result = { id, finishedAt: new Date().toISOString(), report };
    } catch (err) {
      result = { id, finishedAt: new Date().toISOString(), error: { code: isAppError(err) ? err.code : 'INTERNAL', message: err instanceof Error ? err.message : String(err) } };
    }
    const tmp = `${this.file(id, RESULT)}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(result), { mode: 0o600 });
    fs.renameSync(tmp, this.file(id, RESULT));
    fs.rmSync(this.file(id, JOB), { force: true });
    fs.rmSync(this.file(id, '.data'), { force: true });
    fs.rmSync(attempted, { force: true });
    return result;
  }

  /** Waits for the result of a job, then removes the result file. */
  async waitForResult(id: string, options: { timeoutMs: number; pollMs?: number }): Promise<InboxResult> {
    const deadline = Date.now() + options.timeoutMs;
    const file = this.file(id, RESULT);
    for (;;) {
      if (fs.existsSync(file)) {
        const result = JSON.parse(fs.readFileSync(file, 'utf8')) as InboxResult;
        fs.rmSync(file, { force: true });
        return result;
      }
      if (Date.now() >= deadline) {
        throw new AppError('QUEUED_NOT_APPLIED', `the daemon has not applied queued import ${id} within ${Math.round(options.timeoutMs / 1000)} s; it stays queued in ${this.dir} and will be applied when the daemon runs`, { retryable: true });
      }
      await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 250));
    }
  }

  /** Removes results nobody collected (a CLI run that did not wait). */
  pruneResults(olderThanMs: number, now = Date.now()): void {
    for (const name of fs.existsSync(this.dir) ? fs.readdirSync(this.dir) : []) {
      if (!name.endsWith(RESULT)) continue;
      const file = path.join(this.dir, name);
      if (now - fs.statSync(file).mtimeMs > olderThanMs) fs.rmSync(file, { force: true });
    }
  }

  private file(id: string, suffix: string): string {
    return path.join(this.dir, `${id}${suffix}`);
  }
}
