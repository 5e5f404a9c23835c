/**
 * Changes to the subject set, each batch in one transaction together with the pseudonym index
 * (src/sync/subject-index.ts), so that the pseudonyms of every live epoch always match the
 * stored subjects: unindex before a subject's rows go or its e-services change, index after
 * its rows exist.
 *
 * Tenants (SPEC §8c): pseudonyms depend on the key only, so a key shared by several tenants is
 * one subject row, indexed once for the union of the e-services its tenants follow; each
 * tenant's ref and e-service list live in its membership, and the sync engine expands a match
 * to the memberships that follow the signal's e-service (src/sync/tenant-events.ts).
 */
import type { Db } from '../store/db.js';
import { SubjectStore, type StoredSubject } from '../store/subjects.js';
import { deferToFill, indexNewSubjects, unindexSubjects, type SubjectIndexOptions } from '../sync/subject-index.js';
import { OWN_TENANT } from '../tenant.js';

/** A subject as a file states it: normalized key, e-services resolved to hub ids. */
export interface SubjectUpsert {
  key: string;
  /** The tenant whose subject this is: '' (OWN_TENANT) for the consumer's own. */
  tenant?: string;
  /** undefined: keep the stored ref (null for a new subject). */
  ref: string | null | undefined;
  /** undefined: keep the stored set ('all' for a new subject). */
  eservices: string[] | 'all' | undefined;
}

/** 'new': the key is new for this tenant (the subject row may have existed for another). */
export type UpsertOutcome = 'new' | 'updated' | 'unchanged';

export interface BatchCounts {
  imported: number;
  updated: number;
  unchanged: number;
}

export interface SubjectWriterOptions {
  /** How new pseudonyms are indexed; null skips the index (a dry run that is rolled back). */
  index: SubjectIndexOptions | null;
  now?: () => number;
}

/** A membership to remove: the subject (as stored) and the tenant. */
export interface MembershipRef {
  subject: StoredSubject;
  tenant: string;
}

/**
 * Writes subjects and their tenant memberships. The subject row (one per key, what pseudonyms
 * are computed for) follows the union of its memberships' e-services and carries the own
 * membership's ref; it goes when its last membership goes.
 */
export class SubjectWriter {
  readonly store: SubjectStore;
  private readonly now: () => number;

  constructor(
    private readonly db: Db,
    private readonly options: SubjectWriterOptions,
  ) {
    this.store = new SubjectStore(db);
    this.now = options.now ?? Date.now;
  }

  /**
   * Upserts a batch of subjects with distinct (key, tenant) pairs, atomically (a savepoint when
   * the caller already holds a transaction). Returns the outcome of each, in order.
   */
  upsertBatch(batch: SubjectUpsert[]): UpsertOutcome[] {
    return this.db.transaction(() => {
      const outcomes: UpsertOutcome[] = [];
      // Per subject touched: its row before this batch (null: created by it). The same key may
      // come several times (once per tenant): pseudonyms are settled once, from the final rows.
      const before = new Map<number, StoredSubject | null>();
      // Subjects this batch created and did not touch again: indexed as inserted, no re-read.
      const created = new Map<number, StoredSubject>();
      const now = this.now();
      // New keys are inserted together at the end (multi-row statements), with the ids SQLite
      // would have given them; a key met again in the batch (another tenant) flushes them first.
      const fresh: { subject: StoredSubject; tenant: string; ref: string | null }[] = [];
      const freshKeys = new Set<string>();
      let nextId = 0;
      const insertFresh = (): void => {
        if (fresh.length === 0) return;
        this.store.insertMany(fresh.map((f) => f.subject), now);
        this.store.insertMemberships(fresh.map((f) => ({ subjectId: f.subject.id, tenant: f.tenant, ref: f.ref, eservices: f.subject.eservices })), now);
        fresh.length = 0;
        freshKeys.clear();
      };

      for (const row of batch) {
        const tenant = row.tenant ?? OWN_TENANT;
        if (freshKeys.has(row.key)) insertFresh();
        const existing = this.store.findByKey(row.key);
        if (existing === undefined) {
          const eservices = normalizeSet(row.eservices ?? 'all');
          const ref = row.ref ?? null;
          if (nextId === 0) nextId = this.store.nextId();
          const subject: StoredSubject = { id: nextId++, key: row.key, ref: tenant === OWN_TENANT ? ref : null, eservices };
          fresh.push({ subject, tenant, ref });
          freshKeys.add(row.key);
          before.set(subject.id, null);
          created.set(subject.id, subject);
          outcomes.push('new');
          continue;
        }
        const member = this.store.membership(existing.id, tenant);
        let ref: string | null;
        if (member === undefined) {
          ref = row.ref ?? null;
          this.store.insertMembership(existing.id, { tenant, ref, eservices: normalizeSet(row.eservices ?? 'all') }, now);
          outcomes.push('new');
        } else {
          ref = row.ref === undefined ? member.ref : row.ref;
          const eservices = row.eservices === undefined ? member.eservices : normalizeSet(row.eservices);
          if (sameSet(member.eservices, eservices) && ref === member.ref) {
            outcomes.push('unchanged');
            continue;
          }
          this.store.updateMembership(existing.id, tenant, { ref, eservices });
          outcomes.push('updated');
        }
        if (!before.has(existing.id)) before.set(existing.id, existing);
        created.delete(existing.id);
      }

      insertFresh();
      this.settle(before, created);
      return outcomes;
    })();
  }

  /**
   * Removes memberships, atomically; a subject left with none is deleted with its pseudonyms.
   * Returns how many memberships were removed.
   */
  removeMemberships(items: MembershipRef[]): number {
    if (items.length === 0) return 0;
    return this.db.transaction(() => {
      const before = new Map<number, StoredSubject | null>();
      const gone: StoredSubject[] = [];
      let removed = 0;
      for (const { subject, tenant } of items) {
        if (!this.store.deleteMembership(subject.id, tenant)) continue;
        removed++;
        if (!before.has(subject.id)) before.set(subject.id, this.store.findById(subject.id) ?? subject);
      }
      for (const [id, previous] of before) {
        if (this.store.memberships(id).length > 0) continue;
        gone.push(previous!);
        before.delete(id);
      }
      if (this.options.index && gone.length > 0) unindexSubjects(this.db, gone);
      this.store.deleteByIds(gone.map((s) => s.id));
      this.settle(before);
      return removed;
    })();
  }

  /**
   * A bulk import: the live epochs' pseudonyms of the subjects still to come are left to a fill
   * (src/sync/subject-index.ts deferToFill) once `newSubjects` are many for an epoch. Returns
   * the epochs handed over.
   */
  deferIndexToFill(newSubjects: number): number[] {
    return this.options.index ? deferToFill(this.db, newSubjects) : [];
  }

  /** Removes stored subjects with every membership (and their pseudonyms), atomically. */
  remove(subjects: StoredSubject[]): number {
    if (subjects.length === 0) return 0;
    return this.db.transaction(() => {
      if (this.options.index) unindexSubjects(this.db, subjects);
      return this.store.deleteByIds(subjects.map((s) => s.id));
    })();
  }

  /**
   * Removes subjects by normalized key: `tenant`'s membership, or with 'every' the whole
   * subject. Returns, per key, whether there was something to remove.
   */
  removeKeys(keys: string[], tenant: string | 'every' = OWN_TENANT): boolean[] {
    return this.db.transaction(() => {
      const found: boolean[] = [];
      const whole: StoredSubject[] = [];
      const memberships: MembershipRef[] = [];
      const seen = new Set<number>();
      for (const key of keys) {
        const subject = this.store.findByKey(key);
        const present = subject !== undefined && (tenant === 'every' || this.store.membership(subject.id, tenant) !== undefined);
        found.push(present);
        if (!present || seen.has(subject.id)) continue;
        seen.add(subject.id);
        if (tenant === 'every') whole.push(subject);
        else memberships.push({ subject, tenant });
      }
      this.remove(whole);
      this.removeMemberships(memberships);
      return found;
    })();
  }

  /**
   * Brings the subject rows of `before` (id -> row before the change, null for a row this batch
   * inserted) in line with their memberships: e-services = the union of theirs, ref = the own
   * membership's. In the order the index needs: unindex the old rows, write, index the new.
   * `created`: rows inserted by the batch and not changed since (written and final already).
   */
  private settle(before: Map<number, StoredSubject | null>, created: Map<number, StoredSubject> = new Map()): void {
    const unindex: StoredSubject[] = [];
    const index: StoredSubject[] = [];
    const writes: StoredSubject[] = [];
    for (const [id, previous] of before) {
      const inserted = created.get(id);
      if (inserted !== undefined) {
        index.push(inserted);
        continue;
      }
      const row = previous ?? this.store.findById(id)!;
      const memberships = this.store.memberships(id);
      const final: StoredSubject = {
        ...row,
        ref: memberships.find((m) => m.tenant === OWN_TENANT)?.ref ?? null,
        eservices: unionOf(memberships.map((m) => m.eservices)),
      };
      if (final.ref !== row.ref || !sameSet(row.eservices, final.eservices)) writes.push(final);
      if (previous === null) index.push(final);
      // A changed ref alone leaves pseudonyms as they are: they depend on the key only.
      else if (!sameSet(previous.eservices, final.eservices)) {
        unindex.push(previous);
        index.push(final);
      }
    }
    if (this.options.index && unindex.length > 0) unindexSubjects(this.db, unindex);
    for (const w of writes) this.store.update(w.id, { ref: w.ref, eservices: w.eservices });
    if (this.options.index && index.length > 0) indexNewSubjects(this.db, index, this.options.index);
  }
}

function unionOf(sets: (string[] | 'all')[]): string[] | 'all' {
  if (sets.some((s) => s === 'all')) return 'all';
  return [...new Set((sets as string[][]).flat())].sort();
}

function normalizeSet(eservices: string[] | 'all'): string[] | 'all' {
  return eservices === 'all' ? 'all' : [...new Set(eservices)].sort();
}

function sameSet(a: string[] | 'all', b: string[] | 'all'): boolean {
  if (a === 'all' || b === 'all') return a === b;
  if (a.length !== b.length) return false;
  const sortedA = [...a].sort();
  const sortedB = [...b].sort();
  return sortedA.every((v, i) => v === sortedB[i]);
}
