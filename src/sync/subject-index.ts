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
  let pseudonyms = 0;
  let backfilled = 0;
  for (const { epoch, hasher } of epochs) {
    let added = 0;
    for (const subject of subjects) {
      if (!follows(subject, epoch.eserviceId)) continue;
      const covered = covers(epoch, subject.id);
      if (!covered && !options.backfill) continue;
      const digest = hasher.digest(subject.key);
      // A subject spooled, removed (a skip) and back is written here: the skip may stay.
      if (covered) added += index.insert(epoch.id, digestPrefix(digest), subject.id);
      // The log, not the index, says what is owed: an epoch still pending or filling (one
      // turned pending by migration 4) may hold unmatched signals from before.
      if (!options.backfill) continue;
      for (const missed of log.unmatched(epoch.id, hasher.objectIdOf(subject.key, digest))) {
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
    if (added > 0) epochStore.addPseudonymCount(epoch.id, added);
    pseudonyms += added;
  }
  return { pseudonyms, backfilled };
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
