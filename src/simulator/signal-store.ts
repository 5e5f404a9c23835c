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
  /** Some signal, visible or not, has an id above the page's last; false on an empty page (a 200). */
  more: boolean;
}

/**
 * The signals of one e-service, kept column by column in arrays sorted by id, so that a million
 * of them cost about 100 bytes each and a page is a binary search plus a short scan. Types are
 * interned (few distinct values) and a page's JSON is rendered by hand from pre-escaped parts.
 */
export class SignalStore {
  private readonly ids: number[] = [];
  private readonly visibleAt: number[] = [];
  private readonly signalTypes: number[] = [];
  private readonly objectTypes: number[] = [];
  private readonly objectIds: string[] = [];
  /** Interned strings' JSON, indexed by the numbers in signalTypes/objectTypes. */
  private readonly internIndex = new Map<string, number>();
  private readonly internedJson: string[] = [];
  private readonly eserviceJson: string;
  /** Highest id ever deposited (survives purges), for choosing the next id. */
  private highest = 0;

  constructor(readonly eserviceId: string) {
    this.eserviceJson = JSON.stringify(eserviceId);
  }

  get lastId(): number {
    return this.highest;
  }

  /**
   * Stores a signal. Ids above the last are appended (the common case); a lower id is inserted
   * in place, which is how "late lower ids" (SPEC §3) are simulated. Duplicates are refused.
   */
  insert(signal: Omit<HubSignal, 'eserviceId'>, visibleAt: number): void {
    const signalType = this.intern(signal.signalType);
    const objectType = this.intern(signal.objectType);
    const n = this.ids.length;
    if (n === 0 || signal.signalId > this.ids[n - 1]!) {
      this.ids.push(signal.signalId);
      this.visibleAt.push(visibleAt);
      this.signalTypes.push(signalType);
      this.objectTypes.push(objectType);
      this.objectIds.push(signal.objectId);
    } else {
      const i = lowerBound(this.ids, signal.signalId);
      if (this.ids[i] === signal.signalId) throw new Error(`signalId ${signal.signalId} already exists for e-service ${this.eserviceId}`);
      this.ids.splice(i, 0, signal.signalId);
      this.visibleAt.splice(i, 0, visibleAt);
      this.signalTypes.splice(i, 0, signalType);
      this.objectTypes.splice(i, 0, objectType);
      this.objectIds.splice(i, 0, signal.objectId);
    }
    if (signal.signalId > this.highest) this.highest = signal.signalId;
  }

  /**
   * Signal Hub's pull query: ids above `cursor`, ascending, at most `size`, hiding signals that
   * became visible less than `windowMs` ago; `more` ignores the window, as the real server does.
   */
  page(cursor: number, size: number, now: number, windowMs: number): PageResult {
    const limit = now - windowMs;
    let body = '{"signals":[';
    let count = 0;
    let lastSignalId: number | null = null;
    const n = this.ids.length;
    for (let i = upperBound(this.ids, cursor); i < n && count < size; i++) {
      if (this.visibleAt[i]! > limit) continue;
      if (count > 0) body += ',';
      body += this.render(i);
      count++;
      lastSignalId = this.ids[i]!;
    }
    body += `],"lastSignalId":${lastSignalId === null ? 'null' : String(lastSignalId)}}`;
    const more = lastSignalId !== null && upperBound(this.ids, lastSignalId) < n;
    return { body, count, lastSignalId, more };
  }

  /** Retention: drops signals with id <= `upTo`; returns how many were dropped. */
  purgeUpTo(upTo: number): number {
    const cut = upperBound(this.ids, upTo);
    for (const column of [this.ids, this.visibleAt, this.signalTypes, this.objectTypes, this.objectIds] as unknown[][]) column.splice(0, cut);
    return cut;
  }

  private render(i: number): string {
    // Field order as the real server returns them; producer-chosen text is JSON-escaped.
    return `{"signalId":${this.ids[i]},"signalType":${this.internedJson[this.signalTypes[i]!]},"objectId":${JSON.stringify(this.objectIds[i])},"objectType":${this.internedJson[this.objectTypes[i]!]},"eserviceId":${this.eserviceJson}}`;
  }

  private intern(text: string): number {
    let index = this.internIndex.get(text);
    if (index === undefined) {
      index = this.internedJson.length;
      this.internIndex.set(text, index);
      this.internedJson.push(JSON.stringify(text));
    }
    return index;
  }
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
