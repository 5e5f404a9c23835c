/**
 * Changes to the subject set, each batch in one transaction together with the pseudonym index
 * (src/sync/subject-index.ts), so that the pseudonyms of every live epoch always match the
 * stored subjects: unindex before a subject's rows go or its e-services change, index after
 * its rows exist.
 */
import type { Db } from '../store/db.js';
import { SubjectStore, type StoredSubject } from '../store/subjects.js';
import { indexNewSubjects, unindexSubjects, type SubjectIndexOptions } from '../sync/subject-index.js';

/** A subject as a file states it: normalized key, e-services resolved to hub ids. */
export interface SubjectUpsert {
  key: string;
  /** undefined: keep the stored ref (null for a new subject). */
  ref: string | null | undefined;
  /** undefined: keep the stored set ('all' for a new subject). */
  eservices: string[] | 'all' | undefined;
}

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
   * Upserts a batch of subjects with distinct keys, atomically (a savepoint when the caller
   * already holds a transaction). Returns the outcome of each, in order.
   */
  upsertBatch(batch: SubjectUpsert[]): UpsertOutcome[] {
    return this.db.transaction(() => {
      const outcomes: UpsertOutcome[] = [];
      const created: StoredSubject[] = [];
      const reindexBefore: StoredSubject[] = [];
      const reindexAfter: StoredSubject[] = [];
      const updates: { subject: StoredSubject; ref: string | null; eservices: string[] | 'all' }[] = [];
      const now = this.now();

      for (const row of batch) {
        const existing = this.store.findByKey(row.key);
        if (existing === undefined) {
          created.push(this.store.insert({ key: row.key, ref: row.ref ?? null, eservices: normalizeSet(row.eservices ?? 'all') }, now));
          outcomes.push('new');
          continue;
        }
        const ref = row.ref === undefined ? existing.ref : row.ref;
        const eservices = row.eservices === undefined ? existing.eservices : normalizeSet(row.eservices);
        const setChanged = !sameSet(existing.eservices, eservices);
        if (!setChanged && ref === existing.ref) {
          outcomes.push('unchanged');
          continue;
        }
        updates.push({ subject: existing, ref, eservices });
        if (setChanged) {
          reindexBefore.push(existing);
          reindexAfter.push({ ...existing, ref, eservices });
        }
        outcomes.push('updated');
      }

      if (this.options.index && reindexBefore.length > 0) unindexSubjects(this.db, reindexBefore);
      for (const u of updates) this.store.update(u.subject.id, { ref: u.ref, eservices: u.eservices });
      // A changed ref alone leaves pseudonyms as they are: they depend on the key only.
      const toIndex = [...created, ...reindexAfter];
      if (this.options.index && toIndex.length > 0) indexNewSubjects(this.db, toIndex, this.options.index);
      return outcomes;
    })();
  }

  /** Removes stored subjects (and their pseudonyms), atomically. */
  remove(subjects: StoredSubject[]): number {
    if (subjects.length === 0) return 0;
    return this.db.transaction(() => {
      if (this.options.index) unindexSubjects(this.db, subjects);
      return this.store.deleteByIds(subjects.map((s) => s.id));
    })();
  }

  /** Removes subjects by normalized key; returns, per key, whether it was stored. */
  removeKeys(keys: string[]): boolean[] {
    return this.db.transaction(() => {
      const found: boolean[] = [];
      const stored: StoredSubject[] = [];
      const ids = new Set<number>();
      for (const key of keys) {
        const subject = this.store.findByKey(key);
        found.push(subject !== undefined);
        if (subject && !ids.has(subject.id)) {
          ids.add(subject.id);
          stored.push(subject);
        }
      }
      this.remove(stored);
      return found;
    })();
  }
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
