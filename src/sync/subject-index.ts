import type { Db } from '../store/db.js';

/** A stored subject as the index needs it. `eservices` are hub e-service ids, or 'all'. */
export interface IndexedSubject {
  id: number;
  /** Normalized key (personal data: never log it). */
  key: string;
  ref: string | null;
  eservices: string[] | 'all';
}

export interface SubjectIndexOptions {
  /** Emit back-matched events for kept unmatched signals (subjects.backfill). */
  backfill: boolean;
  includeSubjectKey: boolean;
  /** e-service id -> human name, for events. */
  eserviceNames: Map<string, string>;
}

/**
 * Keeps the pseudonyms of every live seed epoch in step with the subject set, incrementally.
 * Call inside the transaction that inserts the subjects (after the insert, so ids exist).
 * Placeholder until the engine lands: implemented in the sync engine work.
 */
export function indexNewSubjects(db: Db, subjects: IndexedSubject[], options: SubjectIndexOptions): { pseudonyms: number; backfilled: number } {
  void db;
  void subjects;
  void options;
  return { pseudonyms: 0, backfilled: 0 };
}

/** Call inside the transaction that deletes the subjects (before the delete). */
export function unindexSubjects(db: Db, subjects: IndexedSubject[]): number {
  void db;
  void subjects;
  return 0;
}
