import type { Db } from './db.js';

/**
 * The consumer's subjects (`subjects`, `subject_eservices`) and who follows each one
 * (`subject_tenants`, `subject_tenant_eservices`: the consumer itself as tenant '', and the
 * delegators it acts for). Keys are stored normalized; they are personal data and must never
 * reach a log line. This module only reads and writes rows: keeping the subject row's e-service
 * set equal to the union of its memberships, and pseudonyms in step, is the caller's job
 * (src/subjects/apply.ts), inside the same transaction.
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

/** One tenant's claim on a subject: its ref and the e-services it follows for that key. */
export interface Membership {
  subjectId: number;
  /** '' for the consumer's own subject (OWN_TENANT in src/tenant.ts). */
  tenant: string;
  ref: string | null;
  eservices: string[] | 'all';
  addedAt: number;
}

/** Who receives an event of a matched subject for an e-service. */
export interface Recipient {
  tenant: string;
  ref: string | null;
  addedAt: number;
}

interface RawMembership {
  subject_id: number;
  tenant: string;
  ref: string | null;
  all_eservices: number;
  added_at: number;
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
  private readonly membershipStmt;
  private readonly membershipsStmt;
  private readonly membershipEservices;
  private readonly insertMembershipStmt;
  private readonly insertMembershipEservice;
  private readonly updateMembershipStmt;
  private readonly deleteMembershipEservices;
  private readonly deleteMembershipStmt;
  private readonly recipientsStmt;
  private readonly anyMembershipStmt;
  private readonly keysFor;
  private readonly packedFor;

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
    // One string per page (SQLite builds it): a row each as JS values costs 3× the read.
    this.packedFor = db
      .prepare(
        `SELECT count(*), max(id), group_concat(id || char(31) || key, char(30)) FROM (
           SELECT id, key FROM subjects WHERE all_eservices = 1 AND id > @after
           UNION ALL
           SELECT se.subject_id, s.key FROM subject_eservices se JOIN subjects s ON s.id = se.subject_id
           WHERE se.eservice_id = @eservice AND se.subject_id > @after AND s.all_eservices = 0
           ORDER BY 1 LIMIT @limit)`,
      )
      .raw();
    this.keysFor = db
      .prepare(
        `SELECT id, key FROM subjects WHERE all_eservices = 1 AND id > @after AND id <= @upTo
         UNION ALL
         SELECT se.subject_id, s.key FROM subject_eservices se JOIN subjects s ON s.id = se.subject_id
         WHERE se.eservice_id = @eservice AND se.subject_id > @after AND se.subject_id <= @upTo AND s.all_eservices = 0
         ORDER BY 1`,
      )
      .raw();
    this.pageAll = db.prepare('SELECT id, key, ref, all_eservices FROM subjects WHERE id > ? ORDER BY id LIMIT ?');
    this.membershipStmt = db.prepare('SELECT * FROM subject_tenants WHERE subject_id = ? AND tenant = ?');
    this.membershipsStmt = db.prepare('SELECT * FROM subject_tenants WHERE subject_id = ? ORDER BY tenant');
    this.membershipEservices = db.prepare('SELECT eservice_id FROM subject_tenant_eservices WHERE subject_id = ? AND tenant = ? ORDER BY eservice_id').pluck();
    this.insertMembershipStmt = db.prepare('INSERT INTO subject_tenants (subject_id, tenant, ref, all_eservices, added_at) VALUES (?, ?, ?, ?, ?)');
    this.insertMembershipEservice = db.prepare('INSERT OR IGNORE INTO subject_tenant_eservices (subject_id, tenant, eservice_id) VALUES (?, ?, ?)');
    this.updateMembershipStmt = db.prepare('UPDATE subject_tenants SET ref = ?, all_eservices = ? WHERE subject_id = ? AND tenant = ?');
    this.deleteMembershipEservices = db.prepare('DELETE FROM subject_tenant_eservices WHERE subject_id = ? AND tenant = ?');
    this.deleteMembershipStmt = db.prepare('DELETE FROM subject_tenants WHERE subject_id = ? AND tenant = ?');
    // At emission only (a matched signal): a point lookup per match, nothing on the unmatched path.
    this.recipientsStmt = db.prepare(
      `SELECT m.tenant, m.ref, m.added_at AS addedAt FROM subject_tenants m
       WHERE m.subject_id = @subject AND (m.all_eservices = 1 OR EXISTS (
         SELECT 1 FROM subject_tenant_eservices e WHERE e.subject_id = m.subject_id AND e.tenant = m.tenant AND e.eservice_id = @eservice))
       ORDER BY m.tenant`,
    );
    this.anyMembershipStmt = db.prepare('SELECT 1 FROM subject_tenants WHERE subject_id = ? LIMIT 1').pluck();
  }

  private toMembership(raw: RawMembership): Membership {
    return {
      subjectId: raw.subject_id,
      tenant: raw.tenant,
      ref: raw.ref,
      eservices: raw.all_eservices === 1 ? 'all' : (this.membershipEservices.all(raw.subject_id, raw.tenant) as string[]),
      addedAt: raw.added_at,
    };
  }

  membership(subjectId: number, tenant: string): Membership | undefined {
    const raw = this.membershipStmt.get(subjectId, tenant) as RawMembership | undefined;
    return raw && this.toMembership(raw);
  }

  memberships(subjectId: number): Membership[] {
    return (this.membershipsStmt.all(subjectId) as RawMembership[]).map((r) => this.toMembership(r));
  }

  insertMembership(subjectId: number, m: { tenant: string; ref: string | null; eservices: string[] | 'all' }, now = Date.now()): void {
    const all = m.eservices === 'all';
    this.insertMembershipStmt.run(subjectId, m.tenant, m.ref, all ? 1 : 0, now);
    if (!all) for (const eservice of m.eservices as string[]) this.insertMembershipEservice.run(subjectId, m.tenant, eservice);
  }

  updateMembership(subjectId: number, tenant: string, change: { ref: string | null; eservices: string[] | 'all' }): void {
    const all = change.eservices === 'all';
    this.updateMembershipStmt.run(change.ref, all ? 1 : 0, subjectId, tenant);
    this.deleteMembershipEservices.run(subjectId, tenant);
    if (!all) for (const eservice of change.eservices as string[]) this.insertMembershipEservice.run(subjectId, tenant, eservice);
  }

  /** Removes one membership; returns whether it existed. The subject row stays (the caller decides). */
  deleteMembership(subjectId: number, tenant: string): boolean {
    return this.deleteMembershipStmt.run(subjectId, tenant).changes === 1;
  }

  /**
   * The tenants whose membership of the subject follows the e-service, by tenant ('' first).
   * A subject with no membership at all (written around SubjectWriter) counts as the
   * consumer's own, as every subject did before tenants existed.
   */
  recipients(subjectId: number, eserviceId: string): Recipient[] {
    const rows = this.recipientsStmt.all({ subject: subjectId, eservice: eserviceId }) as Recipient[];
    if (rows.length > 0 || this.anyMembershipStmt.get(subjectId) !== undefined) return rows;
    const subject = this.byId.get(subjectId) as RawSubject | undefined;
    return subject ? [{ tenant: '', ref: subject.ref, addedAt: 0 }] : [];
  }

  /** Subjects per tenant ('' = own), by tenant. */
  countByTenant(): { tenant: string; subjects: number }[] {
    return this.db.prepare('SELECT tenant, COUNT(*) AS subjects FROM subject_tenants GROUP BY tenant ORDER BY tenant').all() as { tenant: string; subjects: number }[];
  }

  /** The next `limit` memberships of `tenant` with subject id > afterId, by subject id. */
  pageForTenant(tenant: string, afterId: number, limit: number): { subject: StoredSubject; membership: Membership }[] {
    const rows = this.db
      .prepare('SELECT s.id, s.key, s.ref, s.all_eservices FROM subject_tenants m JOIN subjects s ON s.id = m.subject_id WHERE m.tenant = ? AND m.subject_id > ? ORDER BY m.subject_id LIMIT ?')
      .all(tenant, afterId, limit) as RawSubject[];
    return rows.map((r) => ({ subject: this.withEservices(r), membership: this.membership(r.id, tenant)! }));
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

  /**
   * pageForEService() packed in one string, "id US key RS id US key ..." (US = \x1f, RS = \x1e),
   * with the page's size and highest id. A key holding RS cannot be unpacked: the reader
   * notices (the record count differs) and reads the range again with keysForEService().
   */
  packedKeysForEService(eserviceId: string, afterId: number, limit: number): { count: number; maxId: number; packed: string } {
    const [count, maxId, packed] = this.packedFor.get({ eservice: eserviceId, after: afterId, limit }) as [number, number | null, string | null];
    return { count, maxId: maxId ?? afterId, packed: packed ?? '' };
  }

  /** The highest subject id (0 with none): an upper bound of any subject count, found in O(log n). */
  maxId(): number {
    return (this.db.prepare('SELECT MAX(id) FROM subjects').pluck().get() as number | null) ?? 0;
  }

  /** The subjects with afterId < id <= upTo that follow the e-service, as ids and keys, by id. */
  keysForEService(eserviceId: string, afterId: number, upTo: number): { ids: Float64Array; keys: string[] } {
    const rows = this.keysFor.all({ eservice: eserviceId, after: afterId, upTo }) as [number, string][];
    const ids = new Float64Array(rows.length);
    const keys = new Array<string>(rows.length);
    for (let i = 0; i < rows.length; i++) {
      ids[i] = rows[i]![0];
      keys[i] = rows[i]![1];
    }
    return { ids, keys };
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
    // One row per (key, tenant): a file may list the same key for several tenants. Good rows are
    // staged here too (good = 1): the store is then written in key order, so the key index is
    // appended to or walked once instead of updated at random (the file's order).
    db.exec(
      `CREATE TEMP TABLE subject_import_seen (
         key TEXT NOT NULL, tenant TEXT NOT NULL, line INTEGER NOT NULL,
         good INTEGER NOT NULL DEFAULT 0, ref TEXT, ref_given INTEGER NOT NULL DEFAULT 0, eservices TEXT,
         PRIMARY KEY (key, tenant)
       ) WITHOUT ROWID`,
    );
    this.stageStmt = db.prepare('UPDATE temp.subject_import_seen SET good = 1, ref = ?, ref_given = ?, eservices = ? WHERE key = ? AND tenant = ?');
    this.stagedStmt = db.prepare(
      'SELECT key, tenant, ref, ref_given AS refGiven, eservices FROM temp.subject_import_seen WHERE good = 1 AND (key, tenant) > (?, ?) ORDER BY key, tenant LIMIT ?',
    );
    this.markStmt = db.prepare('INSERT OR IGNORE INTO temp.subject_import_seen (key, tenant, line) VALUES (?, ?, ?)');
    this.firstLineStmt = db.prepare('SELECT line FROM temp.subject_import_seen WHERE key = ? AND tenant = ?').pluck();
    this.absentStmt = db.prepare(
      `SELECT s.id, s.key, s.ref, s.all_eservices FROM main.subject_tenants m JOIN main.subjects s ON s.id = m.subject_id
       WHERE m.tenant = @tenant AND m.subject_id > @after
         AND NOT EXISTS (SELECT 1 FROM temp.subject_import_seen x WHERE x.key = s.key AND x.tenant = @tenant)
       ORDER BY m.subject_id LIMIT @limit`,
    );
  }

  /** Records `key` as seen for `tenant` at `line`; returns the line of its first occurrence if already seen. */
  markSeen(key: string, tenant: string, line: number): number | undefined {
    if (this.markStmt.run(key, tenant, line).changes === 1) return undefined;
    return this.firstLineStmt.get(key, tenant) as number;
  }

  /**
   * Stages a good row (already marked seen) for the write phase. `ref` undefined: keep the
   * stored one; `eservices` undefined: keep the stored set.
   */
  stage(row: { key: string; tenant: string; ref: string | null | undefined; eservices: string[] | 'all' | undefined }): void {
    this.stageStmt.run(row.ref ?? null, row.ref === undefined ? 0 : 1, row.eservices === undefined ? null : JSON.stringify(row.eservices), row.key, row.tenant);
  }

  /** The next `limit` staged rows after (afterKey, afterTenant), in key order. */
  stagedPage(after: { key: string; tenant: string }, limit: number): { key: string; tenant: string; ref: string | null | undefined; eservices: string[] | 'all' | undefined }[] {
    return (this.stagedStmt.all(after.key, after.tenant, limit) as { key: string; tenant: string; ref: string | null; refGiven: number; eservices: string | null }[]).map((r) => ({
      key: r.key,
      tenant: r.tenant,
      ref: r.refGiven === 1 ? r.ref : undefined,
      eservices: r.eservices === null ? undefined : (JSON.parse(r.eservices) as string[] | 'all'),
    }));
  }

  /** The next `limit` stored subjects (id > afterId) with a membership of `tenant` whose key was not seen for it. */
  absentPage(store: SubjectStore, tenant: string, afterId: number, limit: number): StoredSubject[] {
    return (this.absentStmt.all({ tenant, after: afterId, limit }) as RawSubject[]).map((r) => store.withEservices(r));
  }

  dispose(): void {
    if (this.db.open) this.db.exec('DROP TABLE IF EXISTS temp.subject_import_seen');
  }
}
