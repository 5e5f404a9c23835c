import type { Db } from './db.js';
import type { PseudonymEncoding } from '../crypto/pseudonym.js';

/**
 * known: the seed is proven to be the one introduced at `startSignalId` (the producer said so
 * with `signalId`, or answered a history lookup for exactly that id).
 * assumed: the seed in force when fetched, without proof of where its epoch starts.
 * unknown: no seed can be had; signals of this epoch cannot be matched and are reported.
 */
export type EpochStatus = 'known' | 'assumed' | 'unknown';

/**
 * pending: created, no pseudonyms computed yet (lazy: a run of SEEDUPDATEs costs one fill).
 * filling: being computed, invisible to matching. First every subject is hashed into a spool
 *   (`fillMerged` null; the subjects with id <= fillAfter are in it), then the spool's buckets
 *   are written to the table in prefix order (`fillMerged` of its 2^fillBits are).
 * ready: every subject's pseudonym is stored; matching may use the epoch.
 */
export type FillState = 'pending' | 'filling' | 'ready';

export interface Epoch {
  id: number;
  eservice: number;
  startSignalId: number;
  status: EpochStatus;
  /** Secret: never log. Null for unknown epochs and once retired. */
  seed: string | null;
  seedFingerprint: string | null;
  algorithm: string | null;
  template: string | null;
  encoding: PseudonymEncoding | null;
  producerSignalId: number | null;
  note: string | null;
  pseudonymCount: number;
  firstSignalId: number | null;
  lastSignalId: number | null;
  signalCount: number;
  createdAt: number;
  retiredAt: number | null;
  /** Assumed epochs: when the hub showed no later SEEDUPDATE existed at their fetch (null: not yet). */
  confirmedAt: number | null;
  fillState: FillState;
  fillAfter: number;
  /** While filling: the spool's bucket bits, once spooled (null: still spooling). */
  fillBits: number | null;
  /** While filling: buckets written to the table so far (null: still spooling). */
  fillMerged: number | null;
  /**
   * A SEEDUPDATE that became visible late: the logged signals after the epoch's start up to
   * this id were matched under the previous seed and are to be matched again under this one
   * once it is filled (null: nothing owed).
   */
  rematchTo: number | null;
}

interface RawEpoch {
  id: number;
  eservice: number;
  start_signal_id: number;
  status: EpochStatus;
  seed: string | null;
  seed_fingerprint: string | null;
  algorithm: string | null;
  template: string | null;
  encoding: PseudonymEncoding | null;
  producer_signal_id: number | null;
  note: string | null;
  pseudonym_count: number;
  first_signal_id: number | null;
  last_signal_id: number | null;
  signal_count: number;
  created_at: number;
  retired_at: number | null;
  confirmed_at: number | null;
  fill_state: FillState;
  fill_after: number;
  fill_bits: number | null;
  fill_merged: number | null;
  rematch_to: number | null;
}

const toEpoch = (r: RawEpoch): Epoch => ({
  id: r.id,
  eservice: r.eservice,
  startSignalId: r.start_signal_id,
  status: r.status,
  seed: r.seed,
  seedFingerprint: r.seed_fingerprint,
  algorithm: r.algorithm,
  template: r.template,
  encoding: r.encoding,
  producerSignalId: r.producer_signal_id,
  note: r.note,
  pseudonymCount: r.pseudonym_count,
  firstSignalId: r.first_signal_id,
  lastSignalId: r.last_signal_id,
  signalCount: r.signal_count,
  createdAt: r.created_at,
  retiredAt: r.retired_at,
  confirmedAt: r.confirmed_at,
  fillState: r.fill_state,
  fillAfter: r.fill_after,
  fillBits: r.fill_bits,
  fillMerged: r.fill_merged,
  rematchTo: r.rematch_to,
});

export interface NewEpoch {
  eservice: number;
  startSignalId: number;
  status: EpochStatus;
  seed: string | null;
  seedFingerprint: string | null;
  algorithm: string | null;
  template: string | null;
  encoding: PseudonymEncoding | null;
  producerSignalId: number | null;
  note?: string;
}

/** The epoch whose seed pseudonymized signal `signalId`: the last one starting below it (`epochs` ordered by start). */
export function epochForSignal(epochs: readonly Epoch[], signalId: number): Epoch | undefined {
  let found: Epoch | undefined;
  for (const e of epochs) if (e.startSignalId < signalId) found = e;
  return found;
}

/** Seed epochs (their pseudonyms are in src/store/pseudonyms.ts). */
export class EpochStore {
  private readonly noteStmt;
  private readonly byEServiceStmt;
  private readonly byIdStmt;

  constructor(private readonly db: Db) {
    this.byEServiceStmt = db.prepare('SELECT * FROM epochs WHERE eservice = ? ORDER BY start_signal_id, id');
    this.byIdStmt = db.prepare('SELECT * FROM epochs WHERE id = ?');
    this.noteStmt = db.prepare(
      // MIN/MAX, not first seen: a late lower id (SPEC §10) lands below the range already noted.
      'UPDATE epochs SET first_signal_id = MIN(COALESCE(first_signal_id, @first), @first), last_signal_id = MAX(COALESCE(last_signal_id, 0), @last), signal_count = signal_count + @count WHERE id = @id',
    );
  }

  /** Epochs of an e-service ordered by start. */
  forEService(eservice: number): Epoch[] {
    return (this.byEServiceStmt.all(eservice) as RawEpoch[]).map(toEpoch);
  }

  get(id: number): Epoch | undefined {
    const r = this.byIdStmt.get(id) as RawEpoch | undefined;
    return r && toEpoch(r);
  }

  /**
   * Epochs with a seed still in use: their pseudonyms are kept up to date with the subject set
   * (fully when ready, up to fillAfter while filling, not at all while pending).
   */
  live(): Epoch[] {
    return (this.db.prepare("SELECT * FROM epochs WHERE retired_at IS NULL AND status != 'unknown' AND seed IS NOT NULL ORDER BY id").all() as RawEpoch[]).map(toEpoch);
  }

  /** Retired epochs (and epoch ids no longer present) among `ids`: their pseudonym tables can go. */
  reclaimable(ids: number[]): number[] {
    const stmt = this.db.prepare('SELECT retired_at FROM epochs WHERE id = ?').pluck();
    return ids.filter((id) => {
      const retired = stmt.get(id) as number | null | undefined;
      return retired === undefined || retired !== null;
    });
  }

  /** pending -> filling: the epoch's table exists and is empty. */
  startFill(id: number): void {
    this.db.prepare("UPDATE epochs SET fill_state = 'filling', fill_after = 0, fill_bits = NULL, fill_merged = NULL, pseudonym_count = 0 WHERE id = ? AND fill_state = 'pending'").run(id);
  }

  /**
   * ready -> filling, from the first subject, keeping the table and its count: the fill writes
   * what the table lacks (INSERT OR IGNORE). Invisible to matching until it is ready again.
   */
  refill(id: number): boolean {
    return this.db.prepare("UPDATE epochs SET fill_state = 'filling', fill_after = 0, fill_bits = NULL, fill_merged = NULL WHERE id = ? AND fill_state = 'ready'").run(id).changes > 0;
  }

  /** A fill spools (again) from the first subject; rows already in the table stay. */
  restartSpool(id: number): void {
    this.db.prepare("UPDATE epochs SET fill_after = 0, fill_bits = NULL, fill_merged = NULL WHERE id = ? AND fill_state = 'filling'").run(id);
  }

  /** The subjects up to `after` are being spooled. */
  spooledUpTo(id: number, after: number): void {
    this.db.prepare("UPDATE epochs SET fill_after = ? WHERE id = ? AND fill_state = 'filling' AND fill_merged IS NULL").run(after, id);
  }

  /** Every subject is spooled, in 2^bits buckets: the merge starts. */
  startMerge(id: number, bits: number): void {
    this.db.prepare("UPDATE epochs SET fill_bits = ?, fill_merged = 0 WHERE id = ? AND fill_state = 'filling' AND fill_merged IS NULL").run(bits, id);
  }

  /** Buckets up to `merged` (exclusive) are written, with `added` more rows. */
  advanceMerge(id: number, merged: number, added: number): void {
    this.db.prepare("UPDATE epochs SET fill_merged = ?, pseudonym_count = pseudonym_count + ? WHERE id = ? AND fill_state = 'filling'").run(merged, added, id);
  }

  /** filling -> ready: the epoch becomes visible to matching. */
  finishFill(id: number, count: number): void {
    this.db.prepare("UPDATE epochs SET fill_state = 'ready', fill_bits = NULL, fill_merged = NULL, pseudonym_count = ? WHERE id = ? AND fill_state = 'filling'").run(count, id);
  }

  /** Records the re-match a late SEEDUPDATE owes (see Epoch.rematchTo). */
  oweRematch(id: number, upTo: number): void {
    this.db.prepare('UPDATE epochs SET rematch_to = ? WHERE id = ?').run(upTo, id);
  }

  settleRematch(id: number): void {
    this.db.prepare('UPDATE epochs SET rematch_to = NULL WHERE id = ?').run(id);
  }

  addPseudonymCount(id: number, delta: number): void {
    this.db.prepare('UPDATE epochs SET pseudonym_count = MAX(0, pseudonym_count + ?) WHERE id = ?').run(delta, id);
  }

  create(e: NewEpoch, now = Date.now()): Epoch {
    const info = this.db
      .prepare(
        `INSERT INTO epochs (eservice, start_signal_id, status, seed, seed_fingerprint, algorithm, template, encoding, producer_signal_id, note, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(e.eservice, e.startSignalId, e.status, e.seed, e.seedFingerprint, e.algorithm, e.template, e.encoding, e.producerSignalId, e.note ?? null, now);
    return this.get(Number(info.lastInsertRowid))!;
  }

  /** The hub showed nothing existed beyond the cursor: assumed epochs created up to `createdUpTo` are confirmed. */
  confirmAssumed(eservice: number, createdUpTo: number, now = Date.now()): void {
    this.db.prepare("UPDATE epochs SET confirmed_at = ? WHERE eservice = ? AND status = 'assumed' AND confirmed_at IS NULL AND created_at <= ?").run(now, eservice, createdUpTo);
  }

  setPseudonymCount(id: number, count: number): void {
    this.db.prepare('UPDATE epochs SET pseudonym_count = ? WHERE id = ?').run(count, id);
  }

  /** Records change signals processed under the epoch (first id, last id, count). */
  noteSignals(id: number, first: number, last: number, count: number): void {
    this.noteStmt.run({ first, last, count, id });
  }

  /**
   * The epoch was matched under a seed now known not to be its own: from now on its signals
   * are reported, like those of an epoch whose seed was never had.
   */
  /**
   * `keepFingerprint`: an assumed seed whose confirmation the retention deleted keeps its
   * fingerprint, so that the next SEEDUPDATE can still tell the SPEC §8 race (the producer
   * serving that seed again) from a new seed (src/sync/rotation.ts).
   */
  markUnknown(id: number, note: string, now = Date.now(), keepFingerprint = false): void {
    this.retire(id, now);
    this.db.prepare(`UPDATE epochs SET status = 'unknown', note = ?${keepFingerprint ? '' : ', seed_fingerprint = NULL'} WHERE id = ?`).run(note, id);
  }

  /**
   * Forgets the seed: nothing can need the epoch's pseudonyms any more. Its pseudonym table is
   * dropped afterwards, in slices (src/sync/reseed.ts reclaimPseudonymSpace).
   */
  retire(id: number, now = Date.now()): void {
    this.db.prepare('UPDATE epochs SET retired_at = ?, seed = NULL WHERE id = ? AND retired_at IS NULL').run(now, id);
  }
}
