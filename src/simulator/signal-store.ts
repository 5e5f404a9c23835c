/** A signal as Signal Hub stores and returns it (SPEC §2). */
export interface HubSignal {
  signalId: number;
  signalType: string;
  objectId: string;
  objectType: string;
  eserviceId: string;
}

export interface PageResult {
  /** `{"signals":[...],"lastSignalId":...}`, serialized. */
  body: string;
  count: number;
  lastSignalId: number | null;
  /** Some signal, visible or not, has an id above the page's last (or above the cursor when empty). */
  more: boolean;
}

/**
 * The signals of one e-service, kept in parallel arrays sorted by id so that a million of them
 * cost little memory and a page is a binary search plus a short scan. Each signal is stored
 * with its JSON already rendered, so serving a page is string concatenation.
 */
export class SignalStore {
  private readonly ids: number[] = [];
  private readonly visibleAt: number[] = [];
  private readonly rendered: string[] = [];
  /** Highest id ever deposited (survives purges), for choosing the next id. */
  private highest = 0;

  constructor(readonly eserviceId: string) {}

  get size(): number {
    return this.ids.length;
  }

  get lastId(): number {
    return this.highest;
  }

  has(signalId: number): boolean {
    const i = lowerBound(this.ids, signalId);
    return this.ids[i] === signalId;
  }

  /**
   * Stores a signal. Ids above the last are appended (the common case); a lower id is inserted
   * in place, which is how "late lower ids" (SPEC §3) are simulated. Duplicates are refused.
   */
  insert(signal: Omit<HubSignal, 'eserviceId'>, visibleAt: number): void {
    const rendered = renderSignal(signal, this.eserviceId);
    const n = this.ids.length;
    if (n === 0 || signal.signalId > this.ids[n - 1]!) {
      this.ids.push(signal.signalId);
      this.visibleAt.push(visibleAt);
      this.rendered.push(rendered);
    } else {
      const i = lowerBound(this.ids, signal.signalId);
      if (this.ids[i] === signal.signalId) throw new Error(`signalId ${signal.signalId} already exists for e-service ${this.eserviceId}`);
      this.ids.splice(i, 0, signal.signalId);
      this.visibleAt.splice(i, 0, visibleAt);
      this.rendered.splice(i, 0, rendered);
    }
    if (signal.signalId > this.highest) this.highest = signal.signalId;
  }

  /**
   * Signal Hub's pull query: ids above `cursor`, ascending, at most `size`, hiding signals that
   * became visible less than `windowMs` ago; `more` ignores the window, as the real server does.
   */
  page(cursor: number, size: number, now: number, windowMs: number): PageResult {
    const limit = now - windowMs;
    const parts: string[] = [];
    let lastSignalId: number | null = null;
    let i = upperBound(this.ids, cursor);
    const n = this.ids.length;
    for (; i < n && parts.length < size; i++) {
      if (this.visibleAt[i]! > limit) continue;
      parts.push(this.rendered[i]!);
      lastSignalId = this.ids[i]!;
    }
    const after = lastSignalId ?? cursor;
    const more = parts.length > 0 && upperBound(this.ids, after) < n;
    return {
      body: `{"signals":[${parts.join(',')}],"lastSignalId":${lastSignalId === null ? 'null' : String(lastSignalId)}}`,
      count: parts.length,
      lastSignalId,
      more,
    };
  }

  /** All signals with ids in (from, to], parsed back: for tests and the admin API, not the hot path. */
  list(from = 0, to = Number.MAX_SAFE_INTEGER): HubSignal[] {
    const out: HubSignal[] = [];
    for (let i = upperBound(this.ids, from); i < this.ids.length && this.ids[i]! <= to; i++) {
      out.push(JSON.parse(this.rendered[i]!) as HubSignal);
    }
    return out;
  }

  /** Retention: drops signals with id <= `upTo`; returns how many were dropped. */
  purgeUpTo(upTo: number): number {
    const cut = upperBound(this.ids, upTo);
    this.ids.splice(0, cut);
    this.visibleAt.splice(0, cut);
    this.rendered.splice(0, cut);
    return cut;
  }
}

function renderSignal(signal: Omit<HubSignal, 'eserviceId'>, eserviceId: string): string {
  // Field order as the real server returns them; JSON.stringify escapes producer-chosen text.
  return `{"signalId":${signal.signalId},"signalType":${JSON.stringify(signal.signalType)},"objectId":${JSON.stringify(signal.objectId)},"objectType":${JSON.stringify(signal.objectType)},"eserviceId":${JSON.stringify(eserviceId)}}`;
}

/** First index whose id is >= value. */
function lowerBound(ids: number[], value: number): number {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ids[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index whose id is > value. */
function upperBound(ids: number[], value: number): number {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ids[mid]! <= value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
