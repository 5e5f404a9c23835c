import type { Statement } from 'better-sqlite3';
import type { Db } from './db.js';

/**
 * The pseudonym index: the one owner of the per-epoch pseudonym tables.
 *
 * Each seed epoch has its own table `pseudonyms_<epoch id>` holding, per subject following the
 * e-service, the first PREFIX_BYTES bytes of the digest as a signed INTEGER and the subject id.
 * That is what matching needs and no more (≈16 bytes a row before B-tree slack, against ≈50 for
 * the full digest): an objectId's prefix selects the candidate subjects, and the caller
 * recomputes the full pseudonym of each candidate, so a prefix collision costs one hash, never
 * a wrong match. A table per epoch is dropped whole when the epoch retires; its pages go to the
 * freelist and the next epoch's table reuses them, so the file does not grow with rotations.
 *
 * SQL on these tables happens only here.
 */

/** 6 bytes: SQLite stores the value in a 6-byte integer and JS reads it as an exact Number. */
export const PREFIX_BYTES = 6;

/** The signed big-endian integer of a digest's first PREFIX_BYTES bytes. */
export function digestPrefix(digest: Uint8Array, offset = 0): number {
  const b = digest;
  const o = offset;
  // Same as Buffer.readIntBE(o, 6), without needing a Buffer view.
  const high = (b[o]! << 8) | b[o + 1]!;
  const signedHigh = high >= 0x8000 ? high - 0x10000 : high;
  return signedHigh * 2 ** 32 + ((b[o + 2]! << 24) >>> 0) + (b[o + 3]! << 16) + (b[o + 4]! << 8) + b[o + 5]!;
}

export interface PseudonymCandidate {
  id: number;
  key: string;
  ref: string | null;
  addedAt: number;
}

const TABLE_PREFIX = 'pseudonyms_';

function tableName(epochId: number): string {
  if (!Number.isSafeInteger(epochId) || epochId <= 0) throw new Error(`invalid epoch id ${epochId}`);
  return `${TABLE_PREFIX}${epochId}`;
}

/** Rows a multi-row INSERT carries: one statement per hundred rows, not per row. */
const ROWS_PER_INSERT = 100;

interface EpochStatements {
  insert: Statement<unknown[]>;
  insertBatch: Statement<unknown[]>;
  remove: Statement<unknown[]>;
  candidates: Statement<unknown[]>;
  candidatesMany: Statement<unknown[]>;
}

export class PseudonymStore {
  private readonly statements = new Map<number, EpochStatements>();

  constructor(private readonly db: Db) {}

  /** Creates the (empty) table of an epoch; a table left by an interrupted fill is kept. */
  create(epochId: number): void {
    this.db.exec(`CREATE TABLE IF NOT EXISTS ${tableName(epochId)} (prefix INTEGER NOT NULL, subject_id INTEGER NOT NULL, PRIMARY KEY (prefix, subject_id)) WITHOUT ROWID`);
  }

  exists(epochId: number): boolean {
    return this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(tableName(epochId)) !== undefined;
  }

  private stmts(epochId: number): EpochStatements {
    let s = this.statements.get(epochId);
    if (!s) {
      const t = tableName(epochId);
      s = {
        insert: this.db.prepare(`INSERT OR IGNORE INTO ${t} (prefix, subject_id) VALUES (?, ?)`),
        insertBatch: this.db.prepare(`INSERT OR IGNORE INTO ${t} (prefix, subject_id) VALUES ${Array(ROWS_PER_INSERT).fill('(?, ?)').join(', ')}`),
        remove: this.db.prepare(`DELETE FROM ${t} WHERE prefix = ? AND subject_id = ?`),
        candidates: this.db.prepare(`SELECT s.id, s.key, s.ref, s.added_at AS addedAt FROM ${t} p JOIN subjects s ON s.id = p.subject_id WHERE p.prefix = ?`),
        candidatesMany: this.db.prepare(
          `SELECT p.prefix, s.id, s.key, s.ref, s.added_at AS addedAt FROM ${t} p JOIN subjects s ON s.id = p.subject_id WHERE p.prefix IN (SELECT value FROM json_each(?))`,
        ),
      };
      this.statements.set(epochId, s);
    }
    return s;
  }

  /**
   * Inserts rows already in (prefix, subject id) order, `skip(i)` leaving some out, a hundred to
   * a statement (the per-statement cost dominated: 10 M rows took 10 s one by one, 4 s so).
   * Returns the rows added (a row already present is not).
   */
  insertSorted(epochId: number, prefixes: ArrayLike<number>, subjectIds: ArrayLike<number>, skip?: (i: number) => boolean): number {
    const { insert, insertBatch } = this.stmts(epochId);
    const args = new Array<number>(ROWS_PER_INSERT * 2);
    let filled = 0;
    let added = 0;
    for (let i = 0; i < prefixes.length; i++) {
      if (skip?.(i)) continue;
      args[filled * 2] = prefixes[i]!;
      args[filled * 2 + 1] = subjectIds[i]!;
      if (++filled === ROWS_PER_INSERT) {
        added += insertBatch.run(args).changes;
        filled = 0;
      }
    }
    for (let k = 0; k < filled; k++) added += insert.run(args[k * 2]!, args[k * 2 + 1]!).changes;
    return added;
  }

  /**
   * Fill skips: rows of a spooled fill (src/store/fill-spool.ts) that must not be written,
   * because the subject was removed (or stopped following the e-service) after it was spooled.
   */
  addSkip(epochId: number, subjectId: number, prefix: number): void {
    this.db.prepare('INSERT OR IGNORE INTO fill_skips (epoch_id, prefix, subject_id) VALUES (?, ?, ?)').run(epochId, prefix, subjectId);
  }

  /** Skips with a prefix in [low, high], as "prefix:subjectId". */
  skipsBetween(epochId: number, low: number, high: number): Set<string> {
    const rows = this.db.prepare('SELECT prefix, subject_id FROM fill_skips WHERE epoch_id = ? AND prefix BETWEEN ? AND ?').raw().all(epochId, low, high) as [number, number][];
    return new Set(rows.map(([p, id]) => `${p}:${id}`));
  }

  clearSkips(epochId: number): void {
    this.db.prepare('DELETE FROM fill_skips WHERE epoch_id = ?').run(epochId);
  }

  remove(epochId: number, prefix: number, subjectId: number): number {
    return this.stmts(epochId).remove.run(prefix, subjectId).changes;
  }

  /** Subjects whose pseudonym under the epoch starts with `prefix` (usually one, or none). */
  candidates(epochId: number, prefix: number): PseudonymCandidate[] {
    return this.stmts(epochId).candidates.all(prefix) as PseudonymCandidate[];
  }

  /**
   * candidates() for many prefixes in one statement (a page's objectIds), by prefix; prefixes
   * with no candidate are absent. Prefixes are at most 6 bytes: exact in JSON numbers.
   */
  candidatesMany(epochId: number, prefixes: readonly number[]): Map<number, PseudonymCandidate[]> {
    const found = new Map<number, PseudonymCandidate[]>();
    if (prefixes.length === 0) return found;
    for (const row of this.stmts(epochId).candidatesMany.all(JSON.stringify(prefixes)) as (PseudonymCandidate & { prefix: number })[]) {
      const { prefix, ...candidate } = row;
      const list = found.get(prefix);
      if (list) list.push(candidate);
      else found.set(prefix, [candidate]);
    }
    return found;
  }

  count(epochId: number): number {
    if (!this.exists(epochId)) return 0;
    return this.db.prepare(`SELECT COUNT(*) FROM ${tableName(epochId)}`).pluck().get() as number;
  }

  /**
   * Deletes up to `limit` rows of an epoch's table, then drops it once empty. Returns true when
   * the table is gone. In slices so that returning a large epoch's space never blocks for long.
   */
  dropSlice(epochId: number, limit: number): boolean {
    this.statements.delete(epochId);
    if (!this.exists(epochId)) return true;
    const t = tableName(epochId);
    const deleted = this.db.prepare(`DELETE FROM ${t} WHERE (prefix, subject_id) IN (SELECT prefix, subject_id FROM ${t} LIMIT ?)`).run(limit).changes;
    if (deleted < limit) {
      this.db.exec(`DROP TABLE ${t}`);
      return true;
    }
    return false;
  }

  /** Epoch ids that still have a pseudonym table. */
  tables(): number[] {
    const names = this.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'pseudonyms_[0-9]*'").pluck().all() as string[];
    return names.map((n) => Number(n.slice(TABLE_PREFIX.length))).filter((id) => Number.isSafeInteger(id) && id > 0).sort((a, b) => a - b);
  }
}
