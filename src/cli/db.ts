import type { Config } from '../config/types.js';
import { openDatabase, type Db } from '../store/db.js';
import { WriterLock } from '../store/lock.js';

/** A database opened for writing under the single-writer lock. */
export interface WriterDb {
  db: Db;
  close(): void;
}

/** Takes the writer lock first (refusing while the daemon runs), then opens and migrates. */
export function openWriter(config: Pick<Config, 'database'>, purpose: string): WriterDb {
  const lock = WriterLock.acquire(config.database, purpose);
  let db: Db;
  try {
    db = openDatabase(config.database);
  } catch (err) {
    lock.release();
    throw err;
  }
  return {
    db,
    close: () => {
      try {
        db.close();
      } finally {
        lock.release();
      }
    },
  };
}

/** Read-only access works while the daemon runs (WAL readers never block the writer). */
export function openReader(config: Pick<Config, 'database'>): Db {
  return openDatabase(config.database, { readonly: true });
}
