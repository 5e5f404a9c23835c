import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { AppError } from '../errors.js';

export interface BackupResult {
  file: string;
  bytes: number;
  pages: number;
}

/**
 * An online copy of the database at `target` (which must not exist): SQLite's backup API on a
 * read-only connection, so it runs beside the daemon and sees one consistent snapshot. The copy
 * is written to a 0600 temporary file beside the target (it holds fiscal codes and seeds),
 * checked with `PRAGMA integrity_check`, and only then renamed into place.
 */
export async function backupDatabase(source: string, target: string, onProgress?: (done: number, total: number) => void): Promise<BackupResult> {
  if (!fs.existsSync(source)) throw new AppError('DB_NOT_INITIALIZED', `database ${source} does not exist: nothing to back up`);
  if (fs.existsSync(target)) throw new AppError('USAGE', `${target} exists: give a new file name (a backup never overwrites)`);
  const folder = path.dirname(path.resolve(target));
  const temporary = path.join(folder, `.${path.basename(target)}.partial-${process.pid}`);
  const cleanup = () => {
    for (const f of [temporary, `${temporary}-wal`, `${temporary}-shm`, `${temporary}-journal`]) fs.rmSync(f, { force: true });
  };
  try {
    fs.closeSync(fs.openSync(temporary, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY, 0o600));
  } catch (err) {
    throw new AppError('DB_ERROR', `cannot create ${temporary}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  const previousUmask = process.umask(0o077);
  try {
    const db = new Database(source, { readonly: true, fileMustExist: true });
    let pages = 0;
    try {
      await db.backup(temporary, {
        progress: ({ totalPages, remainingPages }) => {
          pages = totalPages;
          onProgress?.(totalPages - remainingPages, totalPages);
          // Pages per step: the backup yields to the event loop between steps.
          return 1000;
        },
      });
    } finally {
      db.close();
    }
    const copy = new Database(temporary, { fileMustExist: true });
    try {
      // A plain file: no -wal beside a backup that is copied or moved elsewhere.
      copy.pragma('journal_mode = DELETE');
      const result = copy.pragma('integrity_check') as { integrity_check: string }[];
      const problems = result.map((r) => r.integrity_check).filter((r) => r !== 'ok');
      if (problems.length > 0) throw new AppError('DB_ERROR', `the backup of ${source} failed its integrity check: ${problems.slice(0, 3).join('; ')}`);
    } finally {
      copy.close();
    }
    fs.renameSync(temporary, target);
    const dir = fs.openSync(folder, 'r');
    try {
      fs.fsyncSync(dir);
    } finally {
      fs.closeSync(dir);
    }
    return { file: path.resolve(target), bytes: fs.statSync(target).size, pages };
  } catch (err) {
    cleanup();
    if (err instanceof AppError) throw err;
    throw new AppError('DB_ERROR', `backup of ${source} to ${target} failed: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  } finally {
    process.umask(previousUmask);
    cleanup();
  }
}
