import type { Db } from '../store/db.js';
import { PseudonymHasher, type PseudonymEncoding } from '../crypto/pseudonym.js';
import { OutboxStore } from '../store/outbox.js';
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
  seed: string;
  algorithm: string;
  template: string;
  encoding: PseudonymEncoding;
}

function liveEpochs(db: Db): { epoch: LiveEpoch; hasher: PseudonymHasher }[] {
  const rows = db
    .prepare(
      `SELECT e.id, e.eservice, s.eservice_id AS eserviceId, e.seed, e.algorithm, e.template, e.encoding
       FROM epochs e JOIN eservices s ON s.id = e.eservice
       WHERE e.retired_at IS NULL AND e.status != 'unknown' AND e.seed IS NOT NULL`,
    )
    .all() as LiveEpoch[];
  return rows.map((epoch) => ({ epoch, hasher: new PseudonymHasher({ template: epoch.template, encoding: epoch.encoding }, epoch.seed, epoch.algorithm) }));
}

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
  const insert = db.prepare('INSERT OR IGNORE INTO pseudonyms (epoch, digest, subject_id) VALUES (?, ?, ?)');
  const bump = db.prepare('UPDATE epochs SET pseudonym_count = pseudonym_count + ? WHERE id = ?');
  const outbox = new OutboxStore(db);
  const fanout = new TenantFanout(db);
  const log = new SignalLogStore(db);
  let pseudonyms = 0;
  let backfilled = 0;
  for (const { epoch, hasher } of epochs) {
    let added = 0;
    for (const subject of subjects) {
      if (!follows(subject, epoch.eserviceId)) continue;
      const digest = hasher.digest(subject.key);
      added += insert.run(epoch.id, digest, subject.id).changes;
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
    if (added > 0) bump.run(added, epoch.id);
    pseudonyms += added;
  }
  return { pseudonyms, backfilled };
}

/** Call inside the transaction that deletes the subjects (before the delete). */
export function unindexSubjects(db: Db, subjects: IndexedSubject[]): number {
  if (subjects.length === 0) return 0;
  const del = db.prepare('DELETE FROM pseudonyms WHERE epoch = ? AND digest = ? AND subject_id = ?');
  const bump = db.prepare('UPDATE epochs SET pseudonym_count = MAX(0, pseudonym_count - ?) WHERE id = ?');
  let removed = 0;
  for (const { epoch, hasher } of liveEpochs(db)) {
    let n = 0;
    for (const subject of subjects) {
      if (follows(subject, epoch.eserviceId)) n += del.run(epoch.id, hasher.digest(subject.key), subject.id).changes;
    }
    if (n > 0) bump.run(n, epoch.id);
    removed += n;
  }
  return removed;
}
