import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { AppError } from '../errors.js';
import { MIGRATIONS, type Migration } from './migrations.js';

export type Db = Database.Database;

export interface OpenOptions {
  /** Open for reading only: no migrations, no lock; the file must exist. */
  readonly?: boolean;
  /** Milliseconds a statement waits for another connection's lock. */
  busyTimeoutMs?: number;
  migrations?: Migration[];
}

/**
 * Opens (creating with mode 0600 if needed) the SQLite database, in WAL mode, and applies
 * pending migrations. Writers must also hold the WriterLock (see lock.ts).
 */
export function openDatabase(file: string, options: OpenOptions = {}): Db {
  const readonly = options.readonly ?? false;
  if (readonly && !fs.existsSync(file)) {
    throw new AppError('DB_NOT_INITIALIZED', `database ${file} does not exist yet: run "signalhub-sync sync --once" or "subjects import" first`);
  }
  if (!readonly) {
    ensureFile(file);
    // SQLite gives new -wal and -shm files the database file's mode, so tightening the
    // database first covers them; ones left from an earlier run are tightened as well.
    for (const own of [file, `${file}-wal`, `${file}-shm`]) tightenMode(own);
  }
  let db: Db;
  try {
    db = new Database(file, { readonly, fileMustExist: readonly });
  } catch (err) {
    throw new AppError('DB_ERROR', `cannot open database ${file}: ${(err as Error).message}`, { cause: err });
  }
  db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
  db.pragma('foreign_keys = ON');
  if (!readonly) {
    db.pragma('journal_mode = WAL');
    // NORMAL in WAL mode: a commit survives a process crash (SIGKILL); only an OS crash or
    // power loss may roll back the last transactions, never corrupt the file.
    db.pragma('synchronous = NORMAL');
    migrate(db, options.migrations ?? MIGRATIONS);
  } else {
    const pending = pendingMigrations(db, options.migrations ?? MIGRATIONS);
    if (pending.length > 0) {
      db.close();
      throw new AppError('DB_NOT_INITIALIZED', `database ${file} needs migrations (${pending.map((m) => m.version).join(', ')}): run a command that writes (e.g. "sync --once") first`);
    }
  }
  return db;
}

function ensureFile(file: string): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true, mode: 0o700 });
  // Create with 0600 before SQLite does, so the seed and subject keys are never world-readable.
  try {
    fs.closeSync(fs.openSync(file, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY, 0o600));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new AppError('DB_ERROR', `cannot create database ${file}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/**
 * Removes group and other permissions from a file that has them: a database created by an
 * older version or by hand with a wide umask holds seeds and subject keys. A file that does
 * not exist, or that this user cannot chmod (owned by someone else), is left as it is.
 */
function tightenMode(file: string): void {
  try {
    const mode = fs.statSync(file).mode & 0o777;
    if ((mode & 0o077) !== 0) fs.chmodSync(file, mode & 0o700);
  } catch {
    // Not there (-wal/-shm before the first write) or not ours: nothing to tighten.
  }
}

function appliedVersions(db: Db): Set<number> {
  const exists = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").get();
  if (!exists) return new Set();
  return new Set((db.prepare('SELECT version FROM schema_migrations').all() as { version: number }[]).map((r) => r.version));
}

function pendingMigrations(db: Db, migrations: Migration[]): Migration[] {
  const applied = appliedVersions(db);
  return migrations.filter((m) => !applied.has(m.version));
}

export function schemaVersion(db: Db): number {
  return Math.max(0, ...appliedVersions(db));
}

export function migrate(db: Db, migrations: Migration[] = MIGRATIONS): number[] {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
  const known = Math.max(0, ...migrations.map((m) => m.version));
  const current = schemaVersion(db);
  if (current > known) {
    throw new AppError('DB_ERROR', `database schema version ${current} is newer than this signalhub-sync knows (${known}): upgrade signalhub-sync`);
  }
  const done: number[] = [];
  for (const m of pendingMigrations(db, migrations).sort((a, b) => a.version - b.version)) {
    db.transaction(() => {
      db.exec(m.sql);
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(m.version, m.name, Date.now());
    }).immediate();
    done.push(m.version);
  }
  return done;
}

export type WritableProbe = { ok: true; exists: boolean } | { ok: false; denied: boolean; reason: string };

/**
 * Whether this process could write the database, without writing anything (`doctor`): an
 * existing file is opened and a write transaction begun (BEGIN IMMEDIATE takes the write lock)
 * and rolled back; a missing one needs a writable folder (or the nearest existing ancestor).
 * `denied`: a permission problem (the file, its folder, a read-only mount) rather than a lock.
 */
export function probeWritable(file: string, busyTimeoutMs = 2000): WritableProbe {
  if (!fs.existsSync(file)) {
    let dir = path.dirname(path.resolve(file));
    while (!fs.existsSync(dir) && path.dirname(dir) !== dir) dir = path.dirname(dir);
    if (!fs.statSync(dir).isDirectory()) return { ok: false, denied: true, reason: `does not exist, and ${dir} is not a folder` };
    try {
      fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
      return { ok: true, exists: false };
    } catch (err) {
      return { ok: false, denied: true, reason: `does not exist, and folder ${dir} is not writable (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
    }
  }
  let db: Db | undefined;
  try {
    db = new Database(file, { fileMustExist: true, timeout: busyTimeoutMs });
    db.exec('BEGIN IMMEDIATE');
    db.exec('ROLLBACK');
    return { ok: true, exists: true };
  } catch (err) {
    const code = (err as { code?: string }).code ?? 'error';
    const busy = code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED');
    return { ok: false, denied: !busy, reason: busy ? `write lock held by another connection for more than ${busyTimeoutMs} ms (${code})` : `cannot be written (${code})` };
  } finally {
    db?.close();
  }
}
