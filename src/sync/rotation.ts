import type { CryptoInfo } from '../crypto/crypto-info-client.js';
import type { ResyncReason } from '../events.js';
import type { EpochStatus } from '../store/epochs.js';

/**
 * The seed-epoch policy of SPEC §8 as pure functions: what the producer answered, where, and
 * what the consumer already knows go in; a decision comes out. The engine only fetches, sleeps
 * and writes what these decide. The rules, case by case, are in the README ("Seed epochs").
 */

/** What the engine knows of an epoch, for the decisions. */
export interface EpochView {
  id: number;
  startSignalId: number;
  status: EpochStatus;
  /**
   * Null for an unknown epoch, except one that was assumed until the retention deleted what
   * would have confirmed it: the seed the producer served then, which a SEEDUPDATE's answer
   * may repeat in the race.
   */
  seedFingerprint: string | null;
}

/** The producer's answer: a seed, or (for a history lookup only) 404. */
export type CryptoAnswer = { kind: 'seed'; info: CryptoInfo } | { kind: 'not-found' };

/** An earlier epoch now known to have been matched under a seed that was not its own. */
export interface Invalidation {
  epochId: number;
  reason: ResyncReason;
}

/** A new epoch to open, in start order. */
export type EpochPlan =
  | { start: number; status: 'known' | 'assumed'; info: CryptoInfo }
  | { start: number; status: 'unknown'; reason: ResyncReason };

export type WaitReason = 'history-not-found' | 'seed-unchanged' | 'answer-older' | 'previous-unknown';

export type RotationDecision =
  /** The answer may be the SPEC §8 race: ask again later, unless the wait is over. */
  | { kind: 'wait'; reason: WaitReason }
  /** Open these epochs (the one at S first) and invalidate these earlier ones. */
  | { kind: 'open'; epochs: readonly EpochPlan[]; invalidate: readonly Invalidation[] };

export interface RotationFacts {
  /** The SEEDUPDATE's id. */
  S: number;
  answer: CryptoAnswer;
  /** `crypto_history`: the answer is the producer's word for `?signalId=S`. */
  history: boolean;
  /** The e-service's epochs starting before S, ordered by start. */
  earlier: readonly EpochView[];
  /** Epochs starting after S: S became visible late (SPEC §10), after a later SEEDUPDATE. Default none. */
  later?: readonly EpochView[];
  /** The race wait is over, or was already spent once in this run. */
  waitExpired: boolean;
  /** The fingerprint of the first answer for this S in this wait, when this is a later one. */
  firstAnswer?: string;
}

/** Decides the epoch a SEEDUPDATE at S opens. */
export function decideRotation(f: RotationFacts): RotationDecision {
  const { S, answer, earlier, waitExpired } = f;
  const stale = (reason: WaitReason, conclusion: ResyncReason): RotationDecision =>
    waitExpired ? open([{ start: S, status: 'unknown', reason: conclusion }]) : { kind: 'wait', reason };

  if (answer.kind === 'not-found') return stale('history-not-found', 'seed-history-missing');
  const { info } = answer;
  const assumedWithThisSeed = earlier.filter((e) => e.status === 'assumed' && e.seedFingerprint === info.fingerprint);

  if (info.signalId !== undefined) {
    // The producer says where its answer starts: no guessing, no waiting beyond the race.
    if (info.signalId === S) return open([{ start: S, status: 'known', info }], invalidations(earlier, assumedWithThisSeed));
    if (info.signalId < S) return stale('answer-older', 'seed-unchanged');
    return open([{ start: S, status: 'unknown', reason: 'seed-from-later-epoch' }, { start: info.signalId, status: 'known', info }], invalidations(earlier, assumedWithThisSeed));
  }

  // A late S (SPEC §10): the answer is a later SEEDUPDATE's seed (the current one, or a producer
  // ignoring `?signalId`), and waiting will not bring S's own.
  if (f.later?.some((e) => e.seedFingerprint === info.fingerprint)) return open([{ start: S, status: 'unknown', reason: 'seed-from-later-epoch' }]);

  if (f.history) {
    // The producer's word for S. A seed already proven for an earlier epoch cannot be S's too
    // (the race); one only assumed for an earlier epoch was never that epoch's: it is S's.
    if (earlier.some((e) => e.status === 'known' && e.seedFingerprint === info.fingerprint)) return stale('seed-unchanged', 'seed-unchanged');
    return open([{ start: S, status: 'known', info }], invalidations(earlier, assumedWithThisSeed));
  }

  const previous = earlier.at(-1);
  if (previous?.status === 'unknown' && previous.seedFingerprint !== info.fingerprint) {
    // The seed before S is not known (the retention may have deleted a SEEDUPDATE unseen): a
    // seed unlike the last one seen may still be the race's stale answer. Only a change of
    // answer during the wait shows the race; unchanged through the whole wait, it is S's.
    if (waitExpired || (f.firstAnswer !== undefined && f.firstAnswer !== info.fingerprint)) return open([{ start: S, status: 'assumed', info }]);
    return { kind: 'wait', reason: 'previous-unknown' };
  }
  if (previous === undefined || previous.seedFingerprint !== info.fingerprint) return open([{ start: S, status: 'assumed', info }], []);
  if (!waitExpired) return { kind: 'wait', reason: 'seed-unchanged' };
  // Unchanged after the whole wait. An assumed previous seed is then the one in force after S:
  // what was matched before S under it was matched under a seed that was not its own.
  if (previous.status === 'assumed') return open([{ start: S, status: 'assumed', info }], invalidations(earlier, [previous]));
  // The same, for an assumed seed already reported when the retention took its confirmation.
  if (previous.status === 'unknown') return open([{ start: S, status: 'assumed', info }]);
  return open([{ start: S, status: 'unknown', reason: 'seed-unchanged' }]);
}

export interface InitialFacts {
  /** The stored cursor: the first signal to process is above it. */
  cursor: number;
  history: boolean;
  /** The answer to `?signalId=0` (history and cursor 0 only): GovWay numbers the first seed 0. */
  first?: CryptoAnswer;
  /** The current seed (asked when `first` does not settle it). */
  current?: CryptoInfo;
}

/** The first epochs of a fresh e-service, or `need-current` when the current seed must be asked. */
export function decideInitial(f: InitialFacts): EpochPlan[] | 'need-current' {
  if (f.history && f.cursor === 0 && f.first?.kind === 'seed') {
    const info = f.first.info;
    if (info.signalId === undefined || info.signalId === 0) return [{ start: 0, status: 'known', info }];
    // A producer ignoring the parameter answered with its current seed, introduced later.
    return [{ start: 0, status: 'unknown', reason: 'backlog-predates-seed' }, { start: info.signalId, status: 'known', info }];
  }
  const info = f.current;
  if (info === undefined) return 'need-current';
  if (info.signalId === undefined) return [{ start: f.cursor, status: 'assumed', info }];
  if (info.signalId <= f.cursor) return [{ start: info.signalId, status: 'known', info }];
  // The first seed is gone from the history: older epochs of the backlog cannot be had.
  const reason: ResyncReason = f.history && f.cursor === 0 && f.first?.kind === 'not-found' ? 'seed-history-missing' : 'backlog-predates-seed';
  return [{ start: f.cursor, status: 'unknown', reason }, { start: info.signalId, status: 'known', info }];
}

function open(epochs: EpochPlan[], invalidate: Invalidation[] = []): RotationDecision {
  return { kind: 'open', epochs, invalidate };
}

function invalidations(earlier: readonly EpochView[], wrong: readonly EpochView[]): Invalidation[] {
  return wrong.map((e) => ({ epochId: e.id, reason: e.id === earlier[0]?.id ? 'backlog-predates-seed' : 'seed-unchanged' }));
}
