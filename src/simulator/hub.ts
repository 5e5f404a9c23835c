import type { IncomingHttpHeaders } from 'node:http';
import { formatRetryAfter } from './rate-limit.js';
import { json, problem, rawJson, type SimResponse } from './http.js';
import type { SimState } from './state.js';
import { CLAIMS_HUB_REQUIRES, type VoucherClaims } from './vouchers.js';

/** Signal Hub problem codes (SPEC §3). */
export const HUB_CODES = {
  badQuery: '0001',
  forbidden: '0004',
  voucherExpired: '9001',
  /** A voucher with a valid signature and audience that lacks a claim the hub requires: a 500 (SPEC §10). */
  voucherLacksClaim: '9990',
  voucherInvalid: '9994',
  voucherMissing: '10000',
  rateLimited: '10004',
} as const;

const BEARER = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/;
const UNSIGNED_INT = /^(0|[1-9][0-9]*)$/;
const SIGNAL_TYPES = new Set(['CREATE', 'UPDATE', 'DELETE', 'SEEDUPDATE']);

export type AuthResult = { ok: true; claims: VoucherClaims } | { ok: false; response: SimResponse };

/**
 * Authorization as Signal Hub checks it: exactly `Bearer <jwt>`, a voucher of the simulated
 * PDND, not expired, and (when `audience` is given) issued for that audience.
 */
export async function authorizeHub(state: SimState, headers: IncomingHttpHeaders, audience: string | undefined): Promise<AuthResult> {
  const header = headers.authorization;
  if (header === undefined || header === '') return { ok: false, response: problem(401, HUB_CODES.voucherMissing, 'Authorization header missing') };
  const match = BEARER.exec(header);
  if (!match) return { ok: false, response: problem(401, HUB_CODES.voucherInvalid, 'Authorization header must be "Bearer <voucher>"') };
  const check = await state.authority.check(match[1]!);
  if (!check.ok) {
    if (check.reason === 'expired') return { ok: false, response: problem(401, HUB_CODES.voucherExpired, 'Voucher expired') };
    // What the real hub answers a voucher signed by another PDND environment's key (UAT voucher, production hub).
    if (check.reason === 'unknown-key') return { ok: false, response: problem(401, HUB_CODES.voucherInvalid, 'Unable to find a signing key that matches the voucher') };
    return { ok: false, response: problem(401, HUB_CODES.voucherInvalid, 'Voucher not valid') };
  }
  if (audience !== undefined && check.claims.aud !== audience) {
    return { ok: false, response: problem(401, HUB_CODES.voucherInvalid, 'Voucher audience not valid for Signal Hub') };
  }
  // As the real hub: a missing claim surfaces as an internal error, without rate-limit headers.
  const lacking = CLAIMS_HUB_REQUIRES.find((claim) => claim === 'nbf' ? typeof check.claims.nbf !== 'number' : typeof check.claims.organizationId !== 'string');
  if (lacking !== undefined) return { ok: false, response: problem(500, HUB_CODES.voucherLacksClaim, `Voucher without ${lacking}`) };
  return { ok: true, claims: check.claims };
}

/** The organization's shared budget; null when within it, else the 429 to send. */
function rateLimit(state: SimState, organizationId: string): { headers: Record<string, string>; refusal: SimResponse | null } {
  const decision = state.limiter.take(organizationId);
  if (decision.allowed) return { headers: decision.headers, refusal: null };
  state.counters.responses429++;
  return {
    headers: decision.headers,
    refusal: problem(429, HUB_CODES.rateLimited, 'Too many requests', { ...decision.headers, 'retry-after': formatRetryAfter(decision.retryAfterSeconds) }),
  };
}

export async function handleStatus(state: SimState, headers: IncomingHttpHeaders): Promise<SimResponse> {
  const auth = await authorizeHub(state, headers, state.settings.m2mAudience);
  if (!auth.ok) return auth.response;
  const limited = rateLimit(state, auth.claims.organizationId);
  return limited.refusal ?? json(200, 'OK', limited.headers);
}

export async function handlePull(state: SimState, headers: IncomingHttpHeaders, eserviceId: string, query: URLSearchParams): Promise<SimResponse> {
  const auth = await authorizeHub(state, headers, state.settings.m2mAudience);
  if (!auth.ok) return auth.response;
  const limited = rateLimit(state, auth.claims.organizationId);
  if (limited.refusal) return limited.refusal;
  const rl = limited.headers;

  const cursorText = query.get('signalId') ?? '0';
  const sizeText = query.get('size') ?? '10';
  const cursor = UNSIGNED_INT.test(cursorText) ? Number(cursorText) : NaN;
  const size = UNSIGNED_INT.test(sizeText) ? Number(sizeText) : NaN;
  if (!Number.isSafeInteger(cursor)) return problem(400, HUB_CODES.badQuery, 'signalId must be a non-negative integer', rl);
  if (!Number.isSafeInteger(size) || size < 1 || size > 100) return problem(400, HUB_CODES.badQuery, 'size must be an integer between 1 and 100', rl);

  const es = state.eservices.get(eserviceId);
  const allowed = es !== undefined && (es.organizationIds === undefined || es.organizationIds.has(auth.claims.organizationId));
  if (!allowed) {
    // The real hub answers an e-service it does not know with 403, not 404 (SPEC §10).
    if (!es) return problem(403, HUB_CODES.forbidden, `E-service ${eserviceId} not found`, rl);
    if (es.forbiddenWithoutProblem) return { status: 403, headers: { ...rl, 'content-type': 'text/html' }, body: '<html><body><h1>Request Rejected</h1></body></html>' };
    return problem(403, HUB_CODES.forbidden, `Organization has no active agreement for e-service ${eserviceId}`, rl);
  }
  const page = es.signals.page(cursor, size, state.now(), state.settings.timeWindowMs);
  state.counters.signalsServed += page.count;
  return rawJson(page.more ? 206 : 200, page.body, rl);
}

/** The push (deposit) API: any valid voucher may deposit; ids must grow, as the real one demands. */
export async function handlePush(state: SimState, headers: IncomingHttpHeaders, rawBody: string): Promise<SimResponse> {
  const auth = await authorizeHub(state, headers, undefined);
  if (!auth.ok) return auth.response;
  let body: unknown;
  try {
    body = JSON.parse(rawBody);
  } catch {
    return problem(400, HUB_CODES.badQuery, 'body is not JSON');
  }
  const b = body as Record<string, unknown> | null;
  if (
    !b || typeof b !== 'object' ||
    typeof b.signalType !== 'string' || !SIGNAL_TYPES.has(b.signalType) ||
    typeof b.objectId !== 'string' || b.objectId === '' ||
    typeof b.objectType !== 'string' || b.objectType === '' ||
    typeof b.eserviceId !== 'string' ||
    typeof b.signalId !== 'number' || !Number.isSafeInteger(b.signalId) || b.signalId < 1
  ) {
    return problem(400, HUB_CODES.badQuery, 'signal must be {signalType, objectId, objectType, eserviceId, signalId}');
  }
  const es = state.eservices.get(b.eserviceId);
  if (!es) return problem(403, HUB_CODES.forbidden, `e-service ${b.eserviceId} is not enabled for Signal Hub`);
  if (b.signalId <= es.signals.lastId) return problem(400, HUB_CODES.badQuery, `signalId must be greater than ${es.signals.lastId}`);
  state.deposit(es.id, { signalType: b.signalType, objectId: b.objectId, objectType: b.objectType, signalId: b.signalId });
  return json(200, { signalId: b.signalId });
}
