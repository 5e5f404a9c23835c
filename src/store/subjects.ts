import fs from 'node:fs';
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

/** Rows per multi-row INSERT: one statement per 64 rows costs a fraction of 64 statements. */
const ROWS_PER_INSERT = 64;

/** An INSERT of many rows, ROWS_PER_INSERT per statement. */
class BulkInsert {
  private readonly many;
  private readonly one;
  private readonly params: unknown[] = [];

  constructor(db: Db, table: string, private readonly columns: number) {
    const values = (rows: number) => Array.from({ length: rows }, () => `(${Array.from({ length: columns }, () => '?').join(', ')})`).join(', ');
    this.many = db.prepare(`INSERT INTO ${table} VALUES ${values(ROWS_PER_INSERT)}`);
    this.one = db.prepare(`INSERT INTO ${table} VALUES ${values(1)}`);
  }

  /** Inserts `count` rows; `fill(i, params)` pushes the values of row i. */
  run(count: number, fill: (i: number, params: unknown[]) => void): void {
    const params = this.params;
    let i = 0;
    for (; i + ROWS_PER_INSERT <= count; i += ROWS_PER_INSERT) {
      params.length = 0;
      for (let j = i; j < i + ROWS_PER_INSERT; j++) fill(j, params);
      this.many.run(params);
    }
    for (; i < count; i++) {
      params.length = 0;
      fill(i, params);
      this.one.run(params);
    }
    params.length = 0;
  }
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
  private readonly nextIdStmt;
  private readonly bulkSubjects;
  private readonly bulkMemberships;

  constructor(private readonly db: Db) {
    this.nextIdStmt = db.prepare('SELECT COALESCE(MAX(id), 0) + 1 FROM subjects').pluck();
    this.bulkSubjects = new BulkInsert(db, 'subjects (id, key, ref, all_eservices, added_at)', 5);
    this.bulkMemberships = new BulkInsert(db, 'subject_tenants (subject_id, tenant, ref, all_eservices, added_at)', 5);
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

  /** countByTenant() over the subjects with afterId < id <= upTo: a slice of a count that must not block. */
  countByTenantBetween(afterId: number, upTo: number): { tenant: string; subjects: number }[] {
    return this.db.prepare('SELECT tenant, COUNT(*) AS subjects FROM subject_tenants WHERE subject_id > ? AND subject_id <= ? GROUP BY tenant').all(afterId, upTo) as { tenant: string; subjects: number }[];
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

  /** The id SQLite would give the next inserted subject (the largest + 1). */
  nextId(): number {
    return this.nextIdStmt.get() as number;
  }

  /**
   * Inserts new subjects with the ids they were given (from nextId, ascending), in multi-row
   * statements: an import of new keys in key order spends most of its time here.
   */
  insertMany(subjects: readonly StoredSubject[], now = Date.now()): void {
    this.bulkSubjects.run(subjects.length, (i, params) => {
      const s = subjects[i]!;
      params.push(s.id, s.key, s.ref, s.eservices === 'all' ? 1 : 0, now);
    });
    for (const s of subjects) if (s.eservices !== 'all') for (const eservice of s.eservices) this.insertEservice.run(s.id, eservice);
  }

  /** Inserts memberships of subjects that have none for their tenant, in multi-row statements. */
  insertMemberships(memberships: readonly { subjectId: number; tenant: string; ref: string | null; eservices: string[] | 'all' }[], now = Date.now()): void {
    this.bulkMemberships.run(memberships.length, (i, params) => {
      const m = memberships[i]!;
      params.push(m.subjectId, m.tenant, m.ref, m.eservices === 'all' ? 1 : 0, now);
    });
    for (const m of memberships) if (m.eservices !== 'all') for (const eservice of m.eservices) this.insertMembershipEservice.run(m.subjectId, m.tenant, eservice);
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
 * A row of the file being imported, as staged for the key-order write: every row whose key is
 * usable (good or bad), so that repeated keys are found and, for `--replace`, the keys the file
 * lists are known, whatever is wrong with the row.
 */
export interface StagedRow {
  key: string;
  tenant: string;
  line: number;
  /** Why the row is rejected, found when it was read; null: a good row. */
  problem: string | null;
  /** The problem is reported even when the key repeats an earlier row's (a bad tenant). */
  problemFirst: boolean;
  /** undefined: keep the stored ref. */
  ref: string | null | undefined;
  /** undefined: keep the stored set. */
  eservices: string[] | 'all' | undefined;
}

export interface StagedRejection {
  line: number;
  reason: string;
  ref: string | null;
}

/**
 * Per-import scratch state in a database attached to this connection, in bounded memory
 * whatever the file's size: a file next to the database (mode 0600, as private as the database
 * itself; one left by a crash is replaced by the next import), or a private temporary one.
 * Removing a 10 M-row scratch (500 MB) at the end blocked for 220 ms when SQLite dropped or
 * closed it; the named file is detached (instant) and unlinked off the event loop.
 * Inside a transaction (where ATTACH is not allowed) TEMP tables stand in.
 * - staged rows, appended in sorted runs (src/subjects/staged-runs.ts sorts and merges them):
 *   appending and reading back by position never updates a B-tree at random, which for a
 *   file in no particular order made a key-indexed table cost O(log n) page misses per row;
 * - rejections, by line, so that they are reported in line order although repeated keys are
 *   only found by the merge;
 * - for `--replace`, the keys the file lists (written in key order, by the merge) and the
 *   stored subjects absent from it.
 */
const SCRATCH_SCHEMA = 'subject_import';

/** The import's scratch file beside an on-disk database. */
export function importScratchFile(dbFile: string): string {
  return `${dbFile}-import`;
}

/**
 * Removes the scratch file an import killed mid-way left (it holds the file's keys: personal
 * data). Only for the holder of the writer lock: no import can be running then.
 */
export function removeLeftoverImportScratch(dbFile: string): void {
  const file = importScratchFile(dbFile);
  for (const leftover of [file, `${file}-journal`]) fs.rmSync(leftover, { force: true });
}

/** A staged row's less usual fields (JSON drops an undefined `e`). */
interface StagedInfo {
  p: string | null;
  f: boolean;
  /** Whether the row gives a ref. */
  r: boolean;
  e?: string[] | 'all' | undefined;
}

export class ImportScratch {
  private readonly stageStmt;
  private readonly stagedStmt;
  private readonly rejectStmt;
  private readonly rejectionsStmt;
  private readonly seenStmt;
  private readonly absentStmt;
  private readonly lastMemberStmt;
  private staged = 0;
  private rejections = 0;
  /** The schema of the scratch tables: the attached database, or `temp`. */
  readonly schema: string;

  /**
   * @param file the scratch database file, replaced if it exists; '' for a private temporary
   *   one (deleted by SQLite when detached, on the calling thread).
   */
  constructor(
    private readonly db: Db,
    private file = '',
  ) {
    if (db.inTransaction) {
      this.schema = 'temp';
      this.dropTables();
    } else {
      this.schema = SCRATCH_SCHEMA;
      if (this.attached()) db.exec(`DETACH DATABASE ${SCRATCH_SCHEMA}`);
      if (file !== '') {
        try {
          for (const leftover of [file, `${file}-journal`]) fs.rmSync(leftover, { force: true });
          fs.closeSync(fs.openSync(file, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY, 0o600));
        } catch {
          // A folder this user cannot write to: a private temporary database does too.
          this.file = '';
        }
      }
      db.prepare(`ATTACH DATABASE ? AS ${SCRATCH_SCHEMA}`).run(this.file);
      // Never read back after a crash: no journal file.
      db.pragma(`${SCRATCH_SCHEMA}.journal_mode = MEMORY`);
    }
    const x = this.schema;
    db.exec(
      // info: NULL for the usual row (good, ref given, no e-service column), else the rest as
      // JSON. Every column costs on the way in and out: nine took twice as long as five.
      `CREATE TABLE ${x}.subject_import_staged (
         seq INTEGER PRIMARY KEY, key TEXT NOT NULL, tenant TEXT NOT NULL, line INTEGER NOT NULL, ref TEXT, info TEXT
       );
       CREATE TABLE ${x}.subject_import_rejected (
         line INTEGER NOT NULL, seq INTEGER NOT NULL, reason TEXT NOT NULL, ref TEXT, PRIMARY KEY (line, seq)
       ) WITHOUT ROWID;
       CREATE TABLE ${x}.subject_import_seen (key TEXT NOT NULL, tenant TEXT NOT NULL, PRIMARY KEY (key, tenant)) WITHOUT ROWID;`,
    );
    this.stageStmt = new BulkInsert(db, `${x}.subject_import_staged`, 6);
    this.stagedStmt = db.prepare(`SELECT key, tenant, line, ref, info FROM ${x}.subject_import_staged WHERE seq > ? ORDER BY seq LIMIT ?`).raw();
    this.rejectStmt = db.prepare(`INSERT INTO ${x}.subject_import_rejected (line, seq, reason, ref) VALUES (?, ?, ?, ?)`);
    this.rejectionsStmt = db.prepare(`SELECT line, seq, reason, ref FROM ${x}.subject_import_rejected WHERE (line, seq) > (?, ?) ORDER BY line, seq LIMIT ?`);
    this.seenStmt = db.prepare(`INSERT OR IGNORE INTO ${x}.subject_import_seen (key, tenant) VALUES (?, ?)`);
    this.absentStmt = db.prepare(
      `SELECT s.id, s.key, s.ref, s.all_eservices FROM main.subject_tenants m JOIN main.subjects s ON s.id = m.subject_id
       WHERE m.tenant = @tenant AND m.subject_id > @after AND m.subject_id <= @upTo
         AND NOT EXISTS (SELECT 1 FROM ${x}.subject_import_seen x WHERE x.key = s.key AND x.tenant = @tenant)
       ORDER BY m.subject_id`,
    );
    this.lastMemberStmt = db.prepare('SELECT MAX(subject_id) FROM main.subject_tenants WHERE tenant = ?').pluck();
  }

  /** Rows staged so far: the staged rows are positions 1..stagedCount. */
  get stagedCount(): number {
    return this.staged;
  }

  /** Appends rows after the staged ones (a sorted run is appended whole, in order). */
  append(rows: readonly StagedRow[]): void {
    this.stageStmt.run(rows.length, (i, params) => {
      const row = rows[i]!;
      const usual = row.problem === null && row.ref !== undefined && row.eservices === undefined;
      const info: StagedInfo | null = usual ? null : { p: row.problem, f: row.problemFirst, r: row.ref !== undefined, e: row.eservices };
      params.push(++this.staged, row.key, row.tenant, row.line, row.ref ?? null, info === null ? null : JSON.stringify(info));
    });
  }

  /** Up to `limit` staged rows from position after+1 on, in position order. */
  stagedFrom(after: number, limit: number): StagedRow[] {
    return (this.stagedStmt.all(after, limit) as [string, string, number, string | null, string | null][]).map(([key, tenant, line, ref, json]) => {
      if (json === null) return { key, tenant, line, problem: null, problemFirst: false, ref, eservices: undefined };
      const info = JSON.parse(json) as StagedInfo;
      return { key, tenant, line, problem: info.p, problemFirst: info.f, ref: info.r ? ref : undefined, eservices: info.e };
    });
  }

  /** Records a rejection, to be reported in line order by rejectionsAfter. */
  reject(row: StagedRejection): void {
    this.rejectStmt.run(row.line, ++this.rejections, row.reason, row.ref);
  }

  /** The next `limit` rejections after `after` (null: from the first), by line. */
  rejectionsAfter(after: { line: number; seq: number } | null, limit: number): (StagedRejection & { seq: number })[] {
    return this.rejectionsStmt.all(after?.line ?? -1, after?.seq ?? -1, limit) as (StagedRejection & { seq: number })[];
  }

  /** Records that the file lists `key` for `tenant` (--replace). In key order, it appends. */
  markSeen(key: string, tenant: string): void {
    this.seenStmt.run(key, tenant);
  }

  /**
   * The stored subjects with afterId < id <= upToId and a membership of `tenant` whose key was
   * not seen for it. A range of ids, not a number of results: the scan is bounded even where
   * the absent subjects are few and far between.
   */
  absentBetween(store: SubjectStore, tenant: string, afterId: number, upToId: number): StoredSubject[] {
    return (this.absentStmt.all({ tenant, after: afterId, upTo: upToId }) as RawSubject[]).map((r) => store.withEservices(r));
  }

  /** The largest subject id with a membership of `tenant` (0: none). */
  lastMember(tenant: string): number {
    return (this.lastMemberStmt.get(tenant) as number | null) ?? 0;
  }

  /**
   * Removes the scratch state. Call outside any transaction (DETACH is refused inside one).
   * Resolves when the scratch file is gone (unlinked on the thread pool).
   */
  async dispose(): Promise<void> {
    if (this.db.open) {
      if (this.schema === 'temp' || this.db.inTransaction) this.dropTables();
      else if (this.attached()) this.db.exec(`DETACH DATABASE ${SCRATCH_SCHEMA}`);
    }
    if (this.schema !== 'temp' && this.file !== '') await fs.promises.rm(this.file, { force: true });
  }

  private attached(): boolean {
    return (this.db.pragma('database_list') as { name: string }[]).some((d) => d.name === SCRATCH_SCHEMA);
  }

  private dropTables(): void {
    for (const table of ['subject_import_staged', 'subject_import_rejected', 'subject_import_seen']) this.db.exec(`DROP TABLE IF EXISTS ${this.schema}.${table}`);
  }
}
