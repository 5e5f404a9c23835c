/**
 * The local change events that signalhub-sync writes to its outbox and delivers to sinks.
 * This is the contract with the consumer's applications: add fields, never rename them.
 * `id` is stable across redeliveries: receivers de-duplicate on it.
 */
export type ChangeSignalType = 'CREATE' | 'UPDATE' | 'DELETE';

export interface SignalEvent {
  /** `eserviceId:signalId` for the consumer's own subject; `eserviceId:signalId:tenant:<tenant>` for a delegator's. */
  id: string;
  type: 'signal';
  eserviceId: string;
  eserviceName: string;
  signalId: number;
  /** CREATE, UPDATE or DELETE today; a type a later hub adds is delivered as sent. */
  signalType: ChangeSignalType | (string & {});
  objectType: string;
  objectId: string;
  /** The subject's local reference (never the fiscal code, unless includeSubjectKey). */
  subjectRef: string | null;
  /** Only with `events.include_subject_key = true`. */
  subjectKey?: string;
  /** Local id of the seed epoch the signal was matched under. */
  epoch: number;
  /** ISO time the signal was received from the hub. */
  receivedAt: string;
  /** Emitted when a subject added later matched a signal kept for back-matching. */
  backfilled?: true;
  /** The delegator whose subject matched (SPEC §8c); absent for the consumer's own subject. */
  tenant?: string;
}

export type ResyncReason =
  | 'retention-gap'
  | 'seed-unchanged'
  | 'seed-history-missing'
  | 'seed-from-later-epoch'
  | 'backlog-predates-seed'
  | 'late-seedupdate';

export interface ResyncEvent {
  /** `eserviceId:resync:<reportId>` */
  id: string;
  type: 'resync-required';
  eserviceId: string;
  eserviceName: string;
  reportId: number;
  /** Inclusive range of signal ids whose subjects may have changed unseen. */
  fromSignalId: number;
  toSignalId: number;
  reason: ResyncReason;
  detail: string;
  createdAt: string;
}

export type OutboxEvent = SignalEvent | ResyncEvent;
