import type { Db } from './db.js';

/**
 * The consumer's subjects (`subjects`, `subject_eservices`). Keys are stored normalized; they
 * are personal data and must never reach a log line. This module only reads and writes rows:
 * keeping pseudonyms in step is the caller's job (src/subjects/apply.ts), inside the same
 * transaction.
 */

/** `eservices`: hub e-service ids the subject follows, or 'all' (every configured e-service). */
export interface StoredSubject {
  id: number;
  key: string;
  ref: string | null;
  eservices: string[] | 'all';
}

/** A subject as the reseed loop needs it. */
export interface SubjectRow {
  id: number;
  key: string;
  ref: string | null;
}

export interface NewSubject {
  key: string;
  ref: string | null;
  eservices: string[] | 'all';
}

export interface RawSubject {
  id: number;
  key: string;
  ref: string | null;
  all_eservices: number;
}

export class SubjectStore {
  private readonly byKey;
  private readonly byId;
  private readonly eservicesOf;
  private readonly insertSubject;
  private readonly insertEservice;
  private readonly deleteEservices;
  private readonly updateSubject;
  private readonly deleteSubject;
  private readonly countAll;
  private readonly countFor;
  private readonly pageFor;
  private readonly pageAll;
  private readonly rangeFor;

  constructor(private readonly db: Db) {
    this.byKey = db.prepare('SELECT id, key, ref, all_eservices FROM subjects WHERE key = ?');
    this.byId = db.prepare('SELECT id, key, ref, all_eservices FROM subjects WHERE id = ?');
    this.eservicesOf = db.prepare('SELECT eservice_id FROM subject_eservices WHERE subject_id = ? ORDER BY eservice_id').pluck();
    this.insertSubject = db.prepare('INSERT INTO subjects (key, ref, all_eservices, added_at) VALUES (?, ?, ?, ?)');
    this.insertEservice = db.prepare('INSERT OR IGNORE INTO subject_eservices (subject_id, eservice_id) VALUES (?, ?)');
    this.deleteEservices = db.prepare('DELETE FROM subject_eservices WHERE subject_id = ?');
    this.updateSubject = db.prepare('UPDATE subjects SET ref = ?, all_eservices = ? WHERE id = ?');
    this.deleteSubject = db.prepare('DELETE FROM subjects WHERE id = ?');
    this.countAll = db.prepare('SELECT COUNT(*) FROM subjects').pluck();
    this.countFor = db
      .prepare(
        `SELECT (SELECT COUNT(*) FROM subjects WHERE all_eservices = 1)
              + (SELECT COUNT(*) FROM subject_eservices se JOIN subjects s ON s.id = se.subject_id
                 WHERE se.eservice_id = ? AND s.all_eservices = 0)`,
      )
      .pluck();
    // A merge of two ordered range scans (rowid, and the by-e-service index): no sort, no
    // materialization, so each page costs its size whatever the total.
    this.pageFor = db.prepare(
      `SELECT id, key, ref FROM subjects WHERE all_eservices = 1 AND id > @after
       UNION ALL
       SELECT se.subject_id, s.key, s.ref FROM subject_eservices se JOIN subjects s ON s.id = se.subject_id
       WHERE se.eservice_id = @eservice AND se.subject_id > @after AND s.all_eservices = 0
       ORDER BY 1 LIMIT @limit`,
    );
    this.rangeFor = db.prepare(
      `SELECT id, key, ref FROM subjects WHERE all_eservices = 1 AND id > @after AND id <= @upTo
       UNION ALL
       SELECT se.subject_id, s.key, s.ref FROM subject_eservices se JOIN subjects s ON s.id = se.subject_id
       WHERE se.eservice_id = @eservice AND se.subject_id > @after AND se.subject_id <= @upTo AND s.all_eservices = 0
       ORDER BY 1`,
    );
    this.pageAll = db.prepare('SELECT id, key, ref, all_eservices FROM subjects WHERE id > ? ORDER BY id LIMIT ?');
  }

  /** @internal a raw row with its e-service set loaded. */
  withEservices(raw: RawSubject): StoredSubject {
    return {
      id: raw.id,
      key: raw.key,
      ref: raw.ref,
      eservices: raw.all_eservices === 1 ? 'all' : (this.eservicesOf.all(raw.id) as string[]),
    };
  }

  findByKey(key: string): StoredSubject | undefined {
    const raw = this.byKey.get(key) as RawSubject | undefined;
    return raw && this.withEservices(raw);
  }

  findById(id: number): StoredSubject | undefined {
    const raw = this.byId.get(id) as RawSubject | undefined;
    return raw && this.withEservices(raw);
  }

  /** Inserts a subject whose key is not stored yet; returns it with its id. */
  insert(subject: NewSubject, now = Date.now()): StoredSubject {
    const all = subject.eservices === 'all';
    const id = Number(this.insertSubject.run(subject.key, subject.ref, all ? 1 : 0, now).lastInsertRowid);
    if (!all) for (const eservice of subject.eservices as string[]) this.insertEservice.run(id, eservice);
    return { id, key: subject.key, ref: subject.ref, eservices: all ? 'all' : [...new Set(subject.eservices as string[])].sort() };
  }

  /** Replaces the ref and e-service set of a stored subject. */
  update(id: number, change: { ref: string | null; eservices: string[] | 'all' }): void {
    const all = change.eservices === 'all';
    this.updateSubject.run(change.ref, all ? 1 : 0, id);
    this.deleteEservices.run(id);
    if (!all) for (const eservice of change.eservices as string[]) this.insertEservice.run(id, eservice);
  }

  /** Deletes subjects by id (their subject_eservices rows go by ON DELETE CASCADE). */
  deleteByIds(ids: Iterable<number>): number {
    let removed = 0;
    for (const id of ids) removed += this.deleteSubject.run(id).changes;
    return removed;
  }

  count(): number {
    return this.countAll.get() as number;
  }

  /** Subjects that follow the e-service (all_eservices = 1 or listed for it). */
  countForEService(eserviceId: string): number {
    return this.countFor.get(eserviceId) as number;
  }

  /** The next `limit` subjects with id > afterId that follow the e-service, by id. */
  pageForEService(eserviceId: string, afterId: number, limit: number): SubjectRow[] {
    return this.pageFor.all({ eservice: eserviceId, after: afterId, limit }) as SubjectRow[];
  }

  /** The subjects with afterId < id <= upTo that follow the e-service, by id. */
  rangeForEService(eserviceId: string, afterId: number, upTo: number): SubjectRow[] {
    return this.rangeFor.all({ eservice: eserviceId, after: afterId, upTo }) as SubjectRow[];
  }

  /** Iterates over the subjects following an e-service in pages of `pageSize`, by id. */
  *iterateForEService(eserviceId: string, pageSize = 5000): Generator<SubjectRow[]> {
    let after = 0;
    for (;;) {
      const page = this.pageForEService(eserviceId, after, pageSize);
      if (page.length === 0) return;
      yield page;
      after = page[page.length - 1]!.id;
    }
  }

  /** The next `limit` subjects with id > afterId, by id. */
  page(afterId: number, limit: number): StoredSubject[] {
    return (this.pageAll.all(afterId, limit) as RawSubject[]).map((r) => this.withEservices(r));
  }
}

/**
 * Per-import scratch state in a TEMP table of this connection (on disk, outside the database
 * file): the keys seen so far, to reject duplicates within a file and, for `--replace`, to find
 * the stored subjects absent from it, in bounded memory whatever the file's size.
 */
export class ImportScratch {
  private readonly markStmt;
  private readonly firstLineStmt;
  private readonly absentStmt;
  private readonly stageStmt;
  private readonly stagedStmt;

  constructor(private readonly db: Db) {
    db.exec('DROP TABLE IF EXISTS temp.subject_import_seen');
    // Good rows are staged here too (good = 1): the store is then written in key order, so the
    // key index is appended to or walked once instead of updated at random (the file's order).
    db.exec(
      `CREATE TEMP TABLE subject_import_seen (
         key TEXT PRIMARY KEY, line INTEGER NOT NULL,
         good INTEGER NOT NULL DEFAULT 0, ref TEXT, ref_given INTEGER NOT NULL DEFAULT 0, eservices TEXT
       ) WITHOUT ROWID`,
    );
    this.stageStmt = db.prepare('UPDATE temp.subject_import_seen SET good = 1, ref = ?, ref_given = ?, eservices = ? WHERE key = ?');
    this.stagedStmt = db.prepare('SELECT key, ref, ref_given AS refGiven, eservices FROM temp.subject_import_seen WHERE good = 1 AND key > ? ORDER BY key LIMIT ?');
    this.markStmt = db.prepare('INSERT OR IGNORE INTO temp.subject_import_seen (key, line) VALUES (?, ?)');
    this.firstLineStmt = db.prepare('SELECT line FROM temp.subject_import_seen WHERE key = ?').pluck();
    this.absentStmt = db.prepare(
      `SELECT id, key, ref, all_eservices FROM main.subjects
       WHERE id > ? AND key NOT IN (SELECT key FROM temp.subject_import_seen) ORDER BY id LIMIT ?`,
    );
  }

  /** Records `key` as seen at `line`; returns the line of its first occurrence if already seen. */
  markSeen(key: string, line: number): number | undefined {
    if (this.markStmt.run(key, line).changes === 1) return undefined;
    return this.firstLineStmt.get(key) as number;
  }

  /**
   * Stages a good row (already marked seen) for the write phase. `ref` undefined: keep the
   * stored one; `eservices` undefined: keep the stored set.
   */
  stage(row: { key: string; ref: string | null | undefined; eservices: string[] | 'all' | undefined }): void {
    this.stageStmt.run(row.ref ?? null, row.ref === undefined ? 0 : 1, row.eservices === undefined ? null : JSON.stringify(row.eservices), row.key);
  }

  /** The next `limit` staged rows with key > afterKey, in key order. */
  stagedPage(afterKey: string, limit: number): { key: string; ref: string | null | undefined; eservices: string[] | 'all' | undefined }[] {
    return (this.stagedStmt.all(afterKey, limit) as { key: string; ref: string | null; refGiven: number; eservices: string | null }[]).map((r) => ({
      key: r.key,
      ref: r.refGiven === 1 ? r.ref : undefined,
      eservices: r.eservices === null ? undefined : (JSON.parse(r.eservices) as string[] | 'all'),
    }));
  }

  /** The next `limit` stored subjects (id > afterId) whose key was not seen. */
  absentPage(store: SubjectStore, afterId: number, limit: number): StoredSubject[] {
    return (this.absentStmt.all(afterId, limit) as RawSubject[]).map((r) => store.withEservices(r));
  }

  dispose(): void {
    if (this.db.open) this.db.exec('DROP TABLE IF EXISTS temp.subject_import_seen');
  }
}
