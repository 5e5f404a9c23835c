import { AppError } from '../errors.js';
import { MAX_OBJECT_TYPE_LENGTH, type Page, type Signal, type SkipReason } from './types.js';

/**
 * Parses a pull answer (200/206) into a Page, or throws HUB_BAD_RESPONSE naming the first
 * structural problem and where it is. Never returns a partial page: the caller's cursor moves
 * only over a page whose structure is valid as a whole (ARCHITECTURE invariants 4 and 6).
 *
 * Structure is: a JSON object with a `signals` array of objects whose ids are positive safe
 * integers, strictly ascending above the cursor, and a matching `lastSignalId`. Anything else
 * wrong with one signal (an empty or non-string objectId, an empty, non-string or over-long
 * objectType, a non-string signalType, another e-service's id) marks that signal `skip` and the
 * page is still processed: one signal never blocks an e-service (invariant 7). The real server
 * accepts `"objectId": ""` and serves it (SPEC §10), and a later server may add signal types.
 *
 * Decisions where SPEC §3 leaves room:
 * - Unknown extra fields (top level or in a signal) are ignored, so that a server adding a field
 *   does not stop every consumer; every field we rely on must be present with its exact type.
 * - A SEEDUPDATE's objectId/objectType are expected to be `-` but are not required to be: the
 *   engine never matches a SEEDUPDATE's objectId, so a producer deviating there is harmless.
 * - An empty page is accepted with 206 as well as 200: the server's 206 check ignores the
 *   time window that hides young signals, so "more exist" may hold while none is visible yet.
 *   Callers must stop paging on an empty page whatever its status.
 * - `lastSignalId` must be null on an empty page and equal to the last signal's id otherwise.
 */
export interface PullContext {
  eserviceId: string;
  /** The `signalId` query parameter: every returned id must be above it. */
  cursor: number;
  /** The `size` query parameter: no more signals than this. */
  size: number;
  status: 200 | 206;
  correlationId?: string | undefined;
}

/** Largest body accepted from the hub: 100 signals are a few tens of kB. */
export const MAX_PULL_BODY_BYTES = 1024 * 1024;

export function parsePullBody(text: string, ctx: PullContext): Page {
  const fail = (where: string, problem: string): never => {
    throw badResponse(ctx, `${where}: ${problem}`);
  };

  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    // The parser's message quotes the body: keep it out, the length and start are enough.
    fail('body', `not valid JSON (${text.length} characters${text.length === 0 ? '' : `, starting ${JSON.stringify(text.slice(0, 12))}`})`);
  }
  if (!isPlainObject(body)) fail('body', `not a JSON object (got ${describe(body)})`);
  const record = body as Record<string, unknown>;

  if (!('signals' in record)) fail('signals', 'missing');
  if (!Array.isArray(record.signals)) fail('signals', `not an array (got ${describe(record.signals)})`);
  if (!('lastSignalId' in record)) fail('lastSignalId', 'missing');
  const rawSignals = record.signals as unknown[];
  if (rawSignals.length > ctx.size) fail('signals', `${rawSignals.length} signals, more than the requested size ${ctx.size}`);

  const signals: Signal[] = [];
  let previousId = ctx.cursor;
  rawSignals.forEach((raw, index) => {
    const signal = parseSignal(raw, `signals[${index}]`, ctx, fail);
    if (signal.signalId <= ctx.cursor) fail(`signals[${index}].signalId`, `${signal.signalId} is not above the cursor ${ctx.cursor}`);
    if (signal.signalId <= previousId) fail(`signals[${index}].signalId`, `${signal.signalId} is not above the previous id ${previousId} (not strictly ascending)`);
    previousId = signal.signalId;
    signals.push(signal);
  });

  const lastSignalId = record.lastSignalId;
  const last = signals.at(-1);
  if (last === undefined) {
    if (lastSignalId !== null) fail('lastSignalId', `must be null on an empty page (got ${describe(lastSignalId)})`);
  } else {
    if (lastSignalId === null) fail('lastSignalId', `null on a page of ${signals.length} signals`);
    checkId(lastSignalId, 'lastSignalId', fail);
    if (lastSignalId !== last.signalId) fail('lastSignalId', `${String(lastSignalId)} differs from the last signal's id ${last.signalId}`);
  }

  checkIdLiterals(text, fail);

  const page: Page = { status: ctx.status, signals, lastSignalId: last === undefined ? null : last.signalId };
  if (ctx.correlationId !== undefined) page.correlationId = ctx.correlationId;
  return page;
}

type Fail = (where: string, problem: string) => never;

function parseSignal(raw: unknown, where: string, ctx: PullContext, fail: Fail): Signal {
  if (!isPlainObject(raw)) fail(where, `not an object (got ${describe(raw)})`);
  const record = raw as Record<string, unknown>;
  const signalId = checkId(record.signalId, `${where}.signalId`, fail);
  const { signalType, objectId, objectType, eserviceId } = record;
  const text = (value: unknown): string => (typeof value === 'string' ? value : '');
  const signal: Signal = { signalId, signalType: text(signalType), objectId: text(objectId), objectType: text(objectType), eserviceId: ctx.eserviceId };
  const skip = signalDefect(signalType, objectId, objectType, eserviceId, ctx);
  if (skip !== undefined) {
    signal.skip = skip;
    // What cannot be matched is not kept: a malformed objectId may be anything, personal data included.
    signal.objectId = '';
    signal.objectType = signal.objectType.slice(0, 64);
  }
  return signal;
}

/** The first reason this signal cannot be matched, if any (the order is the reported one). */
function signalDefect(signalType: unknown, objectId: unknown, objectType: unknown, eserviceId: unknown, ctx: PullContext): SkipReason | undefined {
  if (typeof signalType !== 'string' || signalType.length === 0) return 'malformed-signal-type';
  if (eserviceId !== ctx.eserviceId) return 'foreign-eservice';
  if (signalType === 'SEEDUPDATE') return undefined; // its objectId/objectType are never used
  if (typeof objectType !== 'string' || objectType.length === 0 || objectType.length > MAX_OBJECT_TYPE_LENGTH) return 'bad-object-type';
  if (typeof objectId !== 'string') return 'malformed-object-id';
  if (objectId.length === 0) return 'empty-object-id';
  return undefined;
}

/** A signal id: a positive integer the server's JS serializer can represent exactly (SPEC §2). */
function checkId(value: unknown, where: string, fail: Fail): number {
  if (value === undefined) fail(where, 'missing');
  if (typeof value !== 'number') fail(where, `not a number (got ${describe(value)})`);
  const id = value as number;
  if (!Number.isInteger(id)) fail(where, `${id} is not an integer`);
  // JSON.parse already rounded: anything above 2^53-1 lands on an unsafe value, never a safe one.
  if (!Number.isSafeInteger(id)) fail(where, `${id} is above 2^53-1 (the largest id the hub can serialize exactly)`);
  if (id <= 0) fail(where, `${id} is not positive`);
  return id;
}

/** Id literals worth a closer look: signed, with a fraction or exponent, or 16+ digits long. */
const SUSPICIOUS_ID_LITERAL = /(?<!\\)"(signalId|lastSignalId)"\s*:\s*(?=-|[0-9]+[.eE]|[0-9]{16})(-?[0-9][0-9.eE+-]*)/g;

/**
 * JSON.parse rounds before we see a number: `12.0000000000000001` arrives as 12 and
 * `9007199254740991.5` as an unsafe 2^53 (caught above) or a safe neighbour. Check the
 * literals themselves, so that only plain digit strings within 2^53-1 pass as ids. The
 * pattern matches only unusual literals, so a normal page costs one quick scan.
 */
function checkIdLiterals(text: string, fail: Fail): void {
  for (const match of text.matchAll(SUSPICIOUS_ID_LITERAL)) {
    const key = match[1]!;
    const literal = match[2]!;
    if (!/^[0-9]+$/.test(literal)) fail(key, `literal ${clip(literal)} at offset ${match.index} is not a plain integer`);
    if (BigInt(literal) > BigInt(Number.MAX_SAFE_INTEGER)) fail(key, `literal ${clip(literal)} at offset ${match.index} is above 2^53-1`);
  }
}

function badResponse(ctx: PullContext, problem: string): AppError {
  const at = ctx.correlationId === undefined ? `status ${ctx.status}` : `status ${ctx.status}, correlationId ${ctx.correlationId}`;
  return new AppError('HUB_BAD_RESPONSE', `Signal Hub pull of e-service ${ctx.eserviceId} from cursor ${ctx.cursor} (${at}): ${problem}`, {
    status: ctx.status,
    correlationId: ctx.correlationId,
    // The hub may serve a good page later (a proxy, a deploy): the engine retries at the next poll.
    retryable: true,
    details: { eserviceId: ctx.eserviceId, cursor: ctx.cursor },
  });
}

function isPlainObject(value: unknown): boolean {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The JSON type of a value; values themselves stay out of messages (they may be personal data). */
function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'number') return `number ${value}`;
  return typeof value;
}

function clip(text: string, max = 40): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

