import type { Db } from '../store/db.js';
import { PseudonymHasher, type PseudonymEncoding } from '../crypto/pseudonym.js';
import { OutboxStore } from '../store/outbox.js';
import { EpochStore, type FillState } from '../store/epochs.js';
import { EServiceStore } from '../store/eservices.js';
import { PseudonymStore, digestPrefix } from '../store/pseudonyms.js';
import { SignalLogStore } from '../store/signal-log.js';
import type { ChangeSignalType, SignalEvent } from '../events.js';
import { TenantFanout } from './tenant-events.js';

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

interface LiveEpoch {
  id: number;
  eservice: number;
  eserviceId: string;
  encoding: PseudonymEncoding;
  fillState: FillState;
  /** While spooling: the subjects with id <= fillAfter are in the spool. */
  fillAfter: number;
  /** Null while spooling; once merging, every subject is spooled. */
  fillMerged: number | null;
}

function liveEpochs(db: Db): { epoch: LiveEpoch; hasher: PseudonymHasher }[] {
  const eservices = new EServiceStore(db);
  const byId = new Map(eservices.all().map((e) => [e.id, e.eserviceId]));
  return new EpochStore(db).live().map((e) => ({
    epoch: { id: e.id, eservice: e.eservice, eserviceId: byId.get(e.eservice)!, encoding: e.encoding!, fillState: e.fillState, fillAfter: e.fillAfter, fillMerged: e.fillMerged },
    hasher: new PseudonymHasher({ template: e.template!, encoding: e.encoding! }, e.seed!, e.algorithm!),
  }));
}

/**
 * Whether the upkeep must write the subject's row itself: the epoch is ready, or its fill has
 * already read the subject (spooled, or merging) and will not see the change. A fill still to
 * reach the subject takes it as it is then; a pending epoch has no index yet.
 */
const covers = (epoch: LiveEpoch, subjectId: number) =>
  epoch.fillState === 'ready' || (epoch.fillState === 'filling' && (epoch.fillMerged !== null || subjectId <= epoch.fillAfter));

const follows = (s: IndexedSubject, eserviceId: string) => s.eservices === 'all' || s.eservices.includes(eserviceId);

/**
 * Keeps the pseudonyms of every live seed epoch in step with the subject set, incrementally:
 * one hash per subject and live epoch, never a full recompute. With backfill, signals kept
 * unmatched in the signal log are looked up and turned into events flagged `backfilled`.
 * Call inside the transaction that inserts the subjects (after the insert, so ids exist).
 */
export function indexNewSubjects(db: Db, subjects: IndexedSubject[], options: SubjectIndexOptions): { pseudonyms: number; backfilled: number } {
  if (subjects.length === 0) return { pseudonyms: 0, backfilled: 0 };
  const epochs = liveEpochs(db);
  if (epochs.length === 0) return { pseudonyms: 0, backfilled: 0 };
  const index = new PseudonymStore(db);
  const epochStore = new EpochStore(db);
  const outbox = new OutboxStore(db);
  const fanout = new TenantFanout(db);
  const log = new SignalLogStore(db);
  const unmatched = options.backfill ? log.unmatchedLookup() : undefined;
  let pseudonyms = 0;
  let backfilled = 0;
  for (const { epoch, hasher } of epochs) {
    // Rows to write, inserted in key order at the end: a batch of a big import touches each
    // page of the table once, with a hundred rows to a statement.
    const rows: { prefix: number; id: number }[] = [];
    for (const subject of subjects) {
      if (!follows(subject, epoch.eserviceId)) continue;
      const covered = covers(epoch, subject.id);
      if (!covered && !unmatched) continue;
      const digest = hasher.digest(subject.key);
      // A subject spooled, removed (a skip) and back is written here: the skip may stay.
      if (covered) rows.push({ prefix: digestPrefix(digest), id: subject.id });
      // The log, not the index, says what is owed: an epoch still pending or filling (one
      // turned pending by migration 4) may hold unmatched signals from before.
      if (!unmatched) continue;
      for (const missed of unmatched(epoch.id, hasher.objectIdOf(subject.key, digest))) {
        const event: SignalEvent = {
          id: `${epoch.eserviceId}:${missed.signalId}`,
          type: 'signal',
          eserviceId: epoch.eserviceId,
          eserviceName: options.eserviceNames.get(epoch.eserviceId) ?? epoch.eserviceId,
          signalId: missed.signalId,
          signalType: missed.signalType as ChangeSignalType,
          objectType: missed.objectType,
          objectId: missed.objectId,
          subjectRef: subject.ref,
          ...(options.includeSubjectKey ? { subjectKey: subject.key } : {}),
          epoch: epoch.id,
          receivedAt: new Date(missed.receivedAt).toISOString(),
          backfilled: true,
        };
        // One event per tenant of the subject that follows the e-service (src/sync/tenant-events.ts).
        for (const e of fanout.expand(event, subject.id)) if (outbox.append(e)) backfilled++;
        log.markMatched(epoch.eservice, missed.signalId);
      }
    }
    // A pending epoch has no table yet: nothing to write there.
    if (rows.length === 0) continue;
    rows.sort((a, b) => a.prefix - b.prefix || a.id - b.id);
    const added = index.insertSorted(
      epoch.id,
      rows.map((r) => r.prefix),
      rows.map((r) => r.id),
    );
    if (added > 0) epochStore.addPseudonymCount(epoch.id, added);
    pseudonyms += added;
  }
  return { pseudonyms, backfilled };
}

const BULK_MIN_NEW_SUBJECTS = 10_000;

/**
 * Hands the pseudonyms of the subjects still to come to a fill, for every ready live epoch whose
 * table holds at most `newSubjects * 10` rows (and 10 000 new subjects at least): a bulk
 * import. Written one batch at a time, new subjects land all over a table far bigger than the
 * page cache (each batch of 5 000 rewrote about as many pages: 17 µs a row at 1 M subjects,
 * worse with every million), where a fill spools and writes in key order (src/sync/reseed.ts).
 * The epoch keeps its rows and becomes a fill from its first subject: the upkeep treats it as
 * one (new subjects are left to the fill, removals delete their rows), and the engine completes
 * it before it next matches a signal of it. Returns the epochs handed over. Call inside the
 * import's transaction.
 */
export function deferToFill(db: Db, newSubjects: number): number[] {
  // Below this, row by row costs a fraction of a second: not worth making an epoch wait for a fill.
  if (newSubjects < BULK_MIN_NEW_SUBJECTS) return [];
  const store = new EpochStore(db);
  const deferred: number[] = [];
  for (const epoch of store.live()) {
    if (epoch.fillState !== 'ready' || epoch.pseudonymCount > newSubjects * 10) continue;
    if (store.refill(epoch.id)) deferred.push(epoch.id);
  }
  return deferred;
}

/** Call inside the transaction that deletes the subjects (before the delete). */
export function unindexSubjects(db: Db, subjects: IndexedSubject[]): number {
  if (subjects.length === 0) return 0;
  const index = new PseudonymStore(db);
  const epochStore = new EpochStore(db);
  let removed = 0;
  for (const { epoch, hasher } of liveEpochs(db)) {
    let n = 0;
    for (const subject of subjects) {
      if (!follows(subject, epoch.eserviceId) || epoch.fillState === 'pending') continue;
      const prefix = digestPrefix(hasher.digest(subject.key));
      // While filling the row may be in the table already (a merged bucket, an earlier attempt):
      // it goes whatever the fill's progress, and a spooled copy is marked not to be written.
      n += index.remove(epoch.id, prefix, subject.id);
      if (epoch.fillState === 'filling' && covers(epoch, subject.id)) index.addSkip(epoch.id, subject.id, prefix);
    }
    if (n > 0) epochStore.addPseudonymCount(epoch.id, -n);
    removed += n;
  }
  return removed;
}
