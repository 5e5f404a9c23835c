import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { AppError } from '../errors.js';
import { removeLeftoverImportScratch } from './subjects.js';

/**
 * One writer process per database. The lock is an EXCLUSIVE transaction held open on a side
 * file (`<db>.lock`, rollback-journal mode): SQLite takes it with POSIX advisory locks, so the
 * kernel releases it when the holder dies, even by SIGKILL; no stale lock files to clean up.
 * `<db>.lock.json` records who holds it, for the refusal message only.
 */
export class WriterLock {
  private constructor(
    private readonly conn: Database.Database,
    private readonly infoFile: string,
  ) {}

  static acquire(dbFile: string, purpose: string): WriterLock {
    const lockFile = `${dbFile}.lock`;
    const infoFile = `${lockFile}.json`;
    let conn: Database.Database;
    try {
      // The lock comes before openDatabase, which would create the folder: on a first run the
      // folder may not exist yet (same mode as openDatabase gives it).
      fs.mkdirSync(path.dirname(path.resolve(lockFile)), { recursive: true, mode: 0o700 });
      // Created 0600 before SQLite opens it, which would apply the umask (0644 typically).
      fs.closeSync(fs.openSync(lockFile, 'a', 0o600));
      // timeout 0 from the start: journal_mode below would otherwise wait out better-sqlite3's
      // default 5 s busy timeout on a held lock before refusing.
      conn = new Database(lockFile, { timeout: 0 });
    } catch (err) {
      throw new AppError('DB_ERROR', `cannot create the lock file ${lockFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
    try {
      fs.chmodSync(lockFile, 0o600);
      conn.pragma('journal_mode = DELETE');
      conn.pragma('busy_timeout = 0');
      conn.exec('BEGIN EXCLUSIVE');
    } catch (err) {
      conn.close();
      if ((err as { code?: string }).code === 'SQLITE_BUSY') {
        throw new AppError('DB_LOCKED', `database ${dbFile} is in use by another signalhub-sync process (${describeHolder(infoFile)}); stop it first (e.g. "systemctl stop signalhub-sync") or use a read-only command such as "status"`, { retryable: true });
      }
      throw new AppError('DB_ERROR', `cannot lock database ${dbFile}: ${(err as Error).message}`, { cause: err });
    }
    try {
      // A writer killed mid-import left its scratch file (keys: personal data) for nobody to
      // remove: the next writer does, as no other can be running now.
      removeLeftoverImportScratch(dbFile);
    } catch (err) {
      conn.exec('ROLLBACK');
      conn.close();
      throw new AppError('DB_ERROR', `cannot remove the scratch file a killed import left beside ${dbFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
    fs.writeFileSync(infoFile, JSON.stringify({ pid: process.pid, purpose, since: new Date().toISOString() }), { mode: 0o600 });
    return new WriterLock(conn, infoFile);
  }

  release(): void {
    if (!this.conn.open) return;
    try {
      fs.rmSync(this.infoFile, { force: true });
    } finally {
      this.conn.exec('ROLLBACK');
      this.conn.close();
    }
  }
}

function describeHolder(infoFile: string): string {
  try {
    const info = JSON.parse(fs.readFileSync(infoFile, 'utf8')) as { pid?: number; purpose?: string; since?: string };
    return `pid ${info.pid ?? '?'}, "${info.purpose ?? '?'}" since ${info.since ?? '?'}`;
  } catch {
    return 'holder unknown';
  }
}
