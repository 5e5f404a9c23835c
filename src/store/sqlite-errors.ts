import { AppError, isAppError } from '../errors.js';

/**
 * A raw SQLite failure (better-sqlite3's SqliteError, `code` like SQLITE_BUSY) as the AppError
 * that says what happened to which database file, so that the process exits with the code the
 * README promises instead of "internal error" (70). Other errors pass through unchanged.
 * - SQLITE_BUSY / SQLITE_LOCKED: another process held a write lock on the file for longer than
 *   the busy timeout: DB_LOCKED (75, try again later);
 * - SQLITE_FULL: the disk (or the database's page limit) is full: DB_FULL (74);
 * - SQLITE_IOERR*, SQLITE_CANTOPEN, SQLITE_READONLY*, SQLITE_CORRUPT, SQLITE_NOTADB: DB_ERROR (74).
 * The transaction that failed was rolled back by better-sqlite3: nothing of it is stored.
 */
export function storeError(err: unknown, file: string): unknown {
  if (isAppError(err) || !(err instanceof Error)) return err;
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string' || !code.startsWith('SQLITE_')) return err;
  const base = code.replace(/^(SQLITE_[A-Z]+)_.*$/, '$1');
  const where = `database ${file}`;
  switch (base) {
    case 'SQLITE_BUSY':
    case 'SQLITE_LOCKED':
      return new AppError('DB_LOCKED', `${where} is busy: another process held a lock on it longer than the busy timeout (${code}); nothing of the interrupted transaction was stored, run again once that process has finished`, { cause: err, retryable: true, details: { sqliteCode: code, database: file } });
    case 'SQLITE_FULL':
      return new AppError('DB_FULL', `${where}: the database or the disk is full (${code}); nothing of the interrupted transaction was stored, free space and run again`, { cause: err, retryable: true, details: { sqliteCode: code, database: file } });
    case 'SQLITE_IOERR':
    case 'SQLITE_CANTOPEN':
    case 'SQLITE_READONLY':
    case 'SQLITE_CORRUPT':
    case 'SQLITE_NOTADB':
    case 'SQLITE_PERM':
      return new AppError('DB_ERROR', `${where}: ${err.message} (${code})`, { cause: err, details: { sqliteCode: code, database: file } });
    default:
      return err;
  }
}
