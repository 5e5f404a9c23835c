import { AppError, type ErrorCode } from '../errors.js';

/**
 * Signal Hub answers and failures → AppError values (SPEC §3 status table). The client decides
 * what to retry; this module only says what an answer means and names it well.
 */

/** An `application/problem+json` body, reduced to what we report. */
export interface Problem {
  title: string | undefined;
  detail: string | undefined;
  correlationId: string | undefined;
  /** `errors[].code`, e.g. `10004` for a 429. */
  codes: string[];
}

/**
 * Problem code of the hub's 500 for a voucher whose signature and audience are valid but that
 * lacks a claim it requires (`nbf`, `organizationId`, a string `aud`): SPEC §10.
 */
export const VOUCHER_LACKS_CLAIM_CODE = '9990';

/** Whether an answer is the hub's "voucher lacks a claim" 500, which a fresh voucher may cure. */
export function isVoucherLacksClaim(status: number, problem: Problem | undefined): boolean {
  return status === 500 && problem !== undefined && problem.codes.includes(VOUCHER_LACKS_CLAIM_CODE);
}

/** What an HTTP status means for a consumer of the pull API. */
export type StatusClass = 'success' | 'bad-request' | 'unauthorized' | 'forbidden' | 'rate-limited' | 'transient' | 'unexpected';

export function classifyStatus(status: number): StatusClass {
  if (status === 200 || status === 206) return 'success';
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'forbidden';
  if (status === 429) return 'rate-limited';
  // 408 is a proxy giving up on us; 5xx (503 = maintenance) are the hub's own transient failures.
  if (status === 408 || status >= 500) return 'transient';
  if (status >= 400) return 'bad-request';
  // Other 2xx, 1xx, 3xx (undici does not follow redirects): not an answer the API gives.
  return 'unexpected';
}

/** Parses a problem body if there is one; a firewall's HTML page or an empty body gives undefined. */
export function parseProblem(text: string): Problem | undefined {
  if (text.length === 0 || text.length > 64 * 1024) return undefined;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const record = body as Record<string, unknown>;
  const codes: string[] = [];
  if (Array.isArray(record.errors)) {
    for (const entry of record.errors) {
      if (typeof entry === 'object' && entry !== null && 'code' in entry) {
        const code = (entry as { code: unknown }).code;
        if (typeof code === 'string' || typeof code === 'number') codes.push(sanitize(String(code), 20));
      }
    }
  }
  return {
    title: typeof record.title === 'string' ? sanitize(record.title, 120) : undefined,
    detail: typeof record.detail === 'string' ? sanitize(record.detail, 200) : undefined,
    correlationId: typeof record.correlationId === 'string' ? sanitize(record.correlationId, 100) : undefined,
    codes,
  };
}

/** The correlationId of an answer: the problem body's, else a correlation header. */
export function correlationIdOf(problem: Problem | undefined, headers: Record<string, string | string[] | undefined>): string | undefined {
  if (problem?.correlationId) return problem.correlationId;
  for (const name of ['x-correlation-id', 'x-correlationid', 'correlation-id']) {
    const value = headers[name];
    const first = Array.isArray(value) ? value[0] : value;
    if (first) return sanitize(first, 100);
  }
  return undefined;
}

export interface HttpFailure {
  /** What was attempted, e.g. `pull of e-service X from cursor 12`. */
  operation: string;
  status: number;
  problem: Problem | undefined;
  correlationId: string | undefined;
  eserviceId?: string | undefined;
}

// ---- 403 classification (issue 14: warnings before data is lost) -------------------------

/**
 * Why the hub refused an e-service with 403 (SPEC §3, §10). The hub uses one problem code
 * (0004) for all of them; the detail text tells them apart, and a 403 without a problem body
 * is not the hub at all but a firewall in front of it.
 */
export const FORBIDDEN_REASONS = ['no-agreement', 'signalhub-disabled', 'delegation', 'eservice-unknown', 'firewall', 'unclassified'] as const;
export type ForbiddenReason = (typeof FORBIDDEN_REASONS)[number];

/** The PDND back-office step (or network step) that fixes each kind of 403. */
export const FORBIDDEN_FIXES: Record<ForbiddenReason, string> = {
  'no-agreement': 'activate the agreement and the purpose for this e-service in the PDND back office (both must be ACTIVE)',
  'signalhub-disabled': 'ask the producer to enable Signal Hub on the e-service',
  delegation: 'check the delegation in the PDND back office (active, and covering this e-service and purpose)',
  'eservice-unknown': 'the hub does not know this e-service id: check eservices[].id against the e-service in the PDND catalogue, and that its producer enabled Signal Hub',
  firewall: 'a firewall refused the request (403 without a problem body): check egress rules / proxy towards the hub',
  unclassified:
    'no ACTIVE agreement and purpose (or delegation) for this e-service, or Signal Hub disabled on it: check them in the PDND back office',
};

/** Classifies a hub 403 from its problem body (undefined: no problem body). */
export function classifyForbidden(problem: Problem | undefined): ForbiddenReason {
  if (!problem) return 'firewall';
  const text = `${problem.title ?? ''} ${problem.detail ?? ''}`.toLowerCase();
  if (/delegat/.test(text)) return 'delegation';
  if (/signal ?hub/.test(text) && /(disabled|not enabled|not active)/.test(text)) return 'signalhub-disabled';
  if (/e-?service/.test(text) && /(not found|unknown|does not exist|not exist)/.test(text)) return 'eservice-unknown';
  if (/agreement|purpose/.test(text)) return 'no-agreement';
  // Code 0004 with a detail we cannot read: its documented meaning first (SPEC §3).
  if (problem.codes.includes('0004')) return 'no-agreement';
  return 'unclassified';
}

/**
 * The reason is written into the message as `[403 REASON]` so that it survives where only the
 * message is stored (the e-service's last error in the database) and can be read back by status.
 */
const FORBIDDEN_TAG = /\[403 ([a-z-]+)\]/;
export function forbiddenReasonOf(message: string): ForbiddenReason {
  const tagged = FORBIDDEN_TAG.exec(message)?.[1];
  return (FORBIDDEN_REASONS as readonly string[]).includes(tagged ?? '') ? (tagged as ForbiddenReason) : 'unclassified';
}

// ---- end of 403 classification ------------------------------------------------------------

const HINTS: Partial<Record<ErrorCode, string>> = {
  HUB_BAD_REQUEST: 'the hub rejected the request as malformed: a bug on our side or a wrong hub.base_url; not retried',
  HUB_UNAUTHORIZED: 'the voucher was rejected again after fetching a new one: check the M2M (API Interop) client, its key and the token endpoint',
};

/** An AppError for a final HTTP answer (after whatever retries the client made). */
export function httpError(code: ErrorCode, failure: HttpFailure, extra?: { retryable?: boolean; note?: string }): AppError {
  const { problem } = failure;
  const parts = [`Signal Hub ${failure.operation}: HTTP ${failure.status}${failure.correlationId ? ` (correlationId ${failure.correlationId})` : ''}`];
  if (problem?.title) parts.push(` ${problem.title}`);
  if (problem?.detail) parts.push(`: ${problem.detail}`);
  if (problem && problem.codes.length > 0) parts.push(` (codes ${problem.codes.join(', ')})`);
  if (!problem && failure.status === 403) parts.push(' without a problem body');
  const forbiddenReason = code === 'HUB_FORBIDDEN' ? classifyForbidden(problem) : undefined;
  const hint = extra?.note ?? (forbiddenReason ? `[403 ${forbiddenReason}] ${FORBIDDEN_FIXES[forbiddenReason]}` : HINTS[code]);
  if (hint) parts.push(`; ${hint}`);
  const details: Record<string, unknown> = {};
  if (failure.eserviceId !== undefined) details.eserviceId = failure.eserviceId;
  if (forbiddenReason !== undefined) details.forbiddenReason = forbiddenReason;
  return new AppError(code, parts.join(''), {
    status: failure.status,
    correlationId: failure.correlationId,
    problemCodes: problem?.codes,
    retryable: extra?.retryable ?? false,
    details: Object.keys(details).length === 0 ? undefined : details,
  });
}

/** Network failures and timeouts, named by their undici/system code (never by request headers). */
export function networkFailureDescription(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const label = typeof code === 'string' ? code : err.name;
    return `${label}: ${sanitize(err.message, 160)}`;
  }
  return sanitize(String(err), 160);
}

/** Whether an undici/system error is a timeout (reported as such, retried like network errors). */
export function isTimeout(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ETIMEDOUT';
}

/** Runs of base64url characters and dots: each is looked at once (linear, unlike a backtracking JWT regex on "eyJeyJ…"). */
const TOKEN_RUN = /[A-Za-z0-9_.-]+/g;

/** Anything shaped like a JWT (`eyJ…` then a dot) becomes `[jwt]`, with the rest of its run. */
function redactJwts(text: string): string {
  return text.replace(TOKEN_RUN, (run) => {
    const start = run.indexOf('eyJ');
    return start !== -1 && run.indexOf('.', start + 3) !== -1 ? `${run.slice(0, start)}[jwt]` : run;
  });
}
/** Longer than any voucher or assertion we send (a few KiB with the audit pattern). */
const JWT_MARGIN = 16 * 1024;

/**
 * Remote text goes into messages only clipped, on one line, and with anything shaped like a
 * JWT removed: a server or proxy echoing our Authorization header must not leak the voucher.
 */
export function sanitize(text: string, max: number): string {
  // Clipped first: a remote body can be megabytes, and only `max` characters are kept. The
  // margin keeps a JWT that starts inside the kept part whole enough to be recognized (a JWT
  // cut inside its header leaves only the header, which holds no secret).
  const head = text.length > max + JWT_MARGIN ? text.slice(0, max + JWT_MARGIN) : text;
  // eslint-disable-next-line no-control-regex
  const clean = redactJwts(head).replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  return clean.length <= max ? clean : `${clean.slice(0, max)}…`;
}
