/** The Signal Hub pull API's data, as validated at the edge (validate.ts). SPEC §2–§3. */

/** The types this version knows. A later server may add more (SPEC §2): see `Signal.signalType`. */
export const SIGNAL_TYPES = ['CREATE', 'UPDATE', 'DELETE', 'SEEDUPDATE'] as const;
export type KnownSignalType = (typeof SIGNAL_TYPES)[number];

/** Longest objectType the hub's push API accepts (SPEC §10). */
export const MAX_OBJECT_TYPE_LENGTH = 255;

/**
 * Why a signal of a page that parsed is passed without matching (ARCHITECTURE invariant 7).
 * The first four are found at the edge (validate.ts); `undecodable-object-id` by the engine,
 * under the recipe of the signal's epoch.
 */
export const SKIP_REASONS = ['empty-object-id', 'malformed-object-id', 'bad-object-type', 'malformed-signal-type', 'foreign-eservice', 'undecodable-object-id'] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

export interface Signal {
  /** Positive safe integer, strictly increasing per e-service; gaps are normal. */
  signalId: number;
  /**
   * As sent. Types this version does not know (a later server's) are matched like changes and
   * delivered with the type as sent; only SEEDUPDATE is special.
   */
  signalType: string;
  /** The pseudonym of the subject (`-` on a SEEDUPDATE). Empty when `skip` says so. */
  objectId: string;
  objectType: string;
  eserviceId: string;
  /** Set when the signal cannot be matched: it is recorded and passed, never a reason to stop. */
  skip?: SkipReason;
}

export interface Page {
  /** 206: more signals exist after this page; 200: none (or none visible yet). */
  status: 200 | 206;
  /** Ascending, every id above the requested cursor. May be empty (also on a 206: see validate.ts). */
  signals: Signal[];
  /** Id of the last signal of the page; null exactly when the page is empty. Never a cursor by itself. */
  lastSignalId: number | null;
  correlationId?: string;
}

/**
 * Where the hub client gets its M2M voucher. Kept this small so that the hub does not depend
 * on the voucher cache's exact API: adapt any provider with two closures.
 */
export interface VoucherSource {
  /** A voucher valid now (cached by the source). */
  get(): Promise<string>;
  /**
   * The hub answered 401 to `rejected`: the next `get()` must not return it. Naming the
   * voucher lets concurrent callers refused with the same one cause a single refresh.
   */
  invalidate(rejected: string): void;
}

/** Page sizes the pull API accepts (SPEC §3: 0 or >100 is a 400, not clamped). */
export const MIN_PAGE_SIZE = 1;
export const MAX_PAGE_SIZE = 100;
