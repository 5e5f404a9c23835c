import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import fc from 'fast-check';
import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAppError, type AppError, type ErrorCode } from '../src/errors.js';
import { HubClient } from '../src/hub/client.js';
import { RateLimiter } from '../src/hub/rate-limiter.js';
import type { Page, Signal } from '../src/hub/types.js';
import { m2mVoucherSource } from '../src/hub/vouchers.js';
import { silentLogger } from '../src/log.js';
import type { VoucherProvider } from '../src/pdnd/vouchers.js';
import type { Simulator } from '../src/simulator/index.js';
import { openDatabase, type Db } from '../src/store/db.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import { closeRemotes, createEngine, createRemotes, type Remotes } from '../src/sync/runtime.js';
import { simulatorWithM2m } from './pdnd-fixtures.js';
import { bounded, outcomeOf, propertyParameters, propertyTimeoutMs, startScriptedServer, type ScriptedAnswer, type ScriptedServer } from './helpers/property.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { tempDir } from './helpers/fs.js';
import { pseudonymCount } from './helpers/pseudonyms.js';

/**
 * The bad-input corpus for Signal Hub answers (issue 8): a real HTTP server serves whatever
 * fast-check generated (status, headers, bytes) and the real hub client, then the real engine,
 * consume it. Each answer must be either a page equal to what an independent model of SPEC §3
 * accepts, or an AppError with a HUB_* code naming the e-service, the cursor and the status;
 * never a crash, never a hang, and for the engine never a state change.
 */

const ES = '7f1c2e6a-0000-4000-8000-00000000aa01';
const OTHER_ES = '7f1c2e6a-0000-4000-8000-00000000aa02';
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const SIGNAL_TYPES = ['CREATE', 'UPDATE', 'DELETE', 'SEEDUPDATE'];

// ---- generated answers: every field is raw JSON text, so the model reads what the client reads ----

/** Raw JSON text of a value; undefined = the field is absent. */
type Lit = string | undefined;

interface RawSignal {
  kind: 'object';
  fields: Array<[string, Lit]>;
}
type RawSignalItem = RawSignal | { kind: 'literal'; text: string };

interface RawPage {
  /** Raw JSON text of the `signals` value when it is not an array of generated signals. */
  signals: RawSignalItem[] | { literal: Lit };
  lastSignalId: Lit;
  extra: Array<[string, string]>;
  spacing: { afterColon: string; afterComma: string };
}

type Body = { kind: 'page'; page: RawPage; truncateAt?: number } | { kind: 'bytes'; bytes: Uint8Array } | { kind: 'text'; text: string } | { kind: 'problem'; problem: Record<string, unknown>; echoVoucher: boolean };

interface Answer {
  status: number;
  contentType: string | undefined;
  correlationHeader: string | undefined;
  retryAfter: string | undefined;
  rateLimitHeaders: Record<string, string>;
  body: Body;
  cut: boolean;
}

const safeId = fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,35}$/);

/** A signal id literal near `id`: mostly valid, sometimes every way an id can be wrong. */
function idLiteral(id: bigint): fc.Arbitrary<Lit> {
  return fc.oneof(
    { weight: 40, arbitrary: fc.constant(String(id)) },
    {
      weight: 1,
      arbitrary: fc.constantFrom<Lit>(
        JSON.stringify(String(id)),
        `${id}.5`,
        `${id}.0`,
        `${id}.0000000000000001`,
        `${id}e0`,
        `-${id}`,
        '0',
        '-0',
        '1e3',
        '9007199254740991',
        '9007199254740992',
        '9007199254740993',
        '18446744073709551617',
        'null',
        'true',
        '[1]',
        undefined,
      ),
    },
  );
}

/** A required non-empty string field: mostly a string, sometimes empty, another type or absent. */
function stringLiteral(valid: fc.Arbitrary<string>): fc.Arbitrary<Lit> {
  return fc.oneof(
    { weight: 40, arbitrary: valid.map((s) => JSON.stringify(s)) },
    { weight: 1, arbitrary: fc.constantFrom<Lit>('""', '5', 'null', 'false', '["x"]', '{}', undefined) },
  );
}

const objectIdText = fc.oneof(
  fc.string({ unit: 'binary', minLength: 1, maxLength: 24 }),
  // Text that looks like an id field inside a string value: only real keys may count as ids.
  fc.constantFrom('"signalId":-5', 'x","signalId":1.5,"y', '-', 'LAa/aPrxlEvOKacO1KFhEJDVj+UqHXg30Ksb7kE1+z8='),
);

const extraValue = fc.oneof(
  fc.constantFrom('1', '"x"', 'null', 'true', '[]', '{"nested":{"deeper":[1,2,3]}}', '1.5e300', '"\\u0000"'),
  fc.string({ maxLength: 12 }).map((s) => JSON.stringify(s)),
);
const extraFields = fc.array(fc.tuple(fc.constantFrom('producerId', 'note', 'signalID', 'SignalId', 'type', 'correlation'), extraValue), { maxLength: 2 });

function rawSignal(id: bigint): fc.Arbitrary<RawSignalItem> {
  const object = fc
    .record({
      signalId: idLiteral(id),
      signalType: fc.oneof(
        { weight: 40, arbitrary: fc.constantFrom(...SIGNAL_TYPES).map((t) => JSON.stringify(t)) as fc.Arbitrary<Lit> },
        { weight: 1, arbitrary: fc.constantFrom<Lit>('"create"', '"PATCH"', '""', '"SEED_UPDATE"', '5', 'null', undefined) },
      ),
      objectId: stringLiteral(objectIdText),
      objectType: stringLiteral(fc.oneof(fc.constantFrom('domicile', 'IDcard', '-'), fc.string({ minLength: 1, maxLength: 10 }))),
      eserviceId: fc.oneof({ weight: 40, arbitrary: fc.constant<Lit>(JSON.stringify(ES)) }, { weight: 1, arbitrary: fc.constantFrom<Lit>(JSON.stringify(OTHER_ES), JSON.stringify(ES.toUpperCase()), '""', 'null', undefined) }),
      extra: extraFields,
      order: fc.boolean(),
    })
    .map(({ extra, order, ...named }): RawSignalItem => {
      const fields: Array<[string, Lit]> = Object.entries(named);
      if (order) fields.reverse();
      return { kind: 'object', fields: [...fields, ...extra] };
    });
  return fc.oneof({ weight: 30, arbitrary: object }, { weight: 1, arbitrary: fc.constantFrom<RawSignalItem>({ kind: 'literal', text: '11' }, { kind: 'literal', text: 'null' }, { kind: 'literal', text: '"x"' }, { kind: 'literal', text: '[]' }) });
}

/** A page of signals after `cursor`: ascending ids with gaps, sometimes duplicated, descending or at/below the cursor. */
function rawPage(cursor: number, size: number, types: { changesOnly: boolean }): fc.Arbitrary<RawPage> {
  const step = fc.oneof({ weight: 10, arbitrary: fc.integer({ min: 1, max: 1000 }) }, { weight: 1, arbitrary: fc.integer({ min: -3, max: 0 }) });
  return fc
    .array(step, { maxLength: size + 1 })
    .chain((steps) => {
      let id = BigInt(cursor);
      const ids = steps.map((s) => (id += BigInt(s)));
      const signals = fc.tuple(...ids.map((i) => rawSignal(i))).map((items) =>
        types.changesOnly ? items.map((item) => (item.kind === 'object' ? { ...item, fields: item.fields.map(([k, v]): [string, Lit] => (k === 'signalType' && v === '"SEEDUPDATE"' ? [k, '"UPDATE"'] : [k, v])) } : item)) : items,
      );
      const lastValid = ids.length === 0 ? 'null' : String(ids.at(-1));
      const lastSignalId = fc.oneof(
        { weight: 40, arbitrary: fc.constant<Lit>(lastValid) },
        { weight: 1, arbitrary: fc.constantFrom<Lit>('null', undefined, String((ids.at(-1) ?? BigInt(cursor)) + 1n), JSON.stringify(lastValid), `${lastValid}.0`, String(cursor)) },
      );
      const signalsField = fc.oneof({ weight: 20, arbitrary: signals }, { weight: 1, arbitrary: fc.constantFrom<{ literal: Lit }>({ literal: undefined }, { literal: 'null' }, { literal: '{}' }, { literal: '"[]"' }) });
      return fc.record({
        signals: signalsField,
        lastSignalId,
        extra: fc.array(fc.tuple(fc.constantFrom('next', 'total', 'meta'), extraValue), { maxLength: 2 }),
        spacing: fc.record({ afterColon: fc.constantFrom('', ' ', '\n  '), afterComma: fc.constantFrom('', ' ', '\n') }),
      });
    });
}

function renderObject(fields: Array<[string, Lit]>, spacing: RawPage['spacing']): string {
  return `{${fields
    .filter((f): f is [string, string] => f[1] !== undefined)
    .map(([k, v]) => `${JSON.stringify(k)}:${spacing.afterColon}${v}`)
    .join(`,${spacing.afterComma}`)}}`;
}

function renderPage(page: RawPage): string {
  const signals = Array.isArray(page.signals)
    ? `[${page.signals.map((s) => (s.kind === 'literal' ? s.text : renderObject(s.fields, page.spacing))).join(`,${page.spacing.afterComma}`)}]`
    : page.signals.literal;
  return renderObject([['signals', signals], ['lastSignalId', page.lastSignalId], ...page.extra], page.spacing);
}

// ---- the model: SPEC §2-§3, read off the generated literals ----

function modelId(lit: Lit): bigint | undefined {
  if (lit === undefined || !/^[1-9][0-9]*$/.test(lit)) return undefined;
  const id = BigInt(lit);
  return id <= MAX_SAFE ? id : undefined;
}

function modelString(lit: Lit): string | undefined {
  if (lit === undefined) return undefined;
  const value: unknown = JSON.parse(lit);
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

/**
 * The page SPEC §3 accepts for this body, or undefined when it must be rejected. Only the page's
 * structure rejects it (not an object, ids missing, not ascending above the cursor, unsafe,
 * `lastSignalId` wrong); a signal that is wrong in itself is kept, marked skipped, with no
 * objectId (ARCHITECTURE invariant 7).
 */
function modelPage(page: RawPage, cursor: number, size: number, status: 200 | 206, correlationId: string | undefined): Page | undefined {
  if (!Array.isArray(page.signals)) return undefined;
  if (page.signals.length > size) return undefined;
  const signals: Signal[] = [];
  let previous = BigInt(cursor);
  for (const item of page.signals) {
    if (item.kind === 'literal') return undefined;
    const field = (name: string): unknown => {
      const lit = item.fields.find(([k]) => k === name)?.[1];
      return lit === undefined ? undefined : JSON.parse(lit);
    };
    const id = modelId(item.fields.find(([k]) => k === 'signalId')?.[1]);
    if (id === undefined || id <= previous) return undefined;
    previous = id;
    const signalType = field('signalType');
    const objectId = field('objectId');
    const objectType = field('objectType');
    const asText = (v: unknown) => (typeof v === 'string' ? v : '');
    let skip: Signal['skip'];
    if (typeof signalType !== 'string' || signalType === '') skip = 'malformed-signal-type';
    else if (field('eserviceId') !== ES) skip = 'foreign-eservice';
    else if (signalType !== 'SEEDUPDATE') {
      if (typeof objectType !== 'string' || objectType === '' || objectType.length > 255) skip = 'bad-object-type';
      else if (typeof objectId !== 'string') skip = 'malformed-object-id';
      else if (objectId === '') skip = 'empty-object-id';
    }
    const signal: Signal = { signalId: Number(id), signalType: asText(signalType), objectId: skip ? '' : asText(objectId), objectType: skip ? asText(objectType).slice(0, 64) : asText(objectType), eserviceId: ES };
    if (skip) signal.skip = skip;
    signals.push(signal);
  }
  const last = signals.at(-1);
  if (last === undefined) {
    if (page.lastSignalId !== 'null') return undefined;
  } else if (modelId(page.lastSignalId) !== BigInt(last.signalId)) {
    return undefined;
  }
  return { status, signals, lastSignalId: last?.signalId ?? null, ...(correlationId !== undefined ? { correlationId } : {}) };
}

/** The HUB_* code SPEC §3's status table gives a non-page answer. */
function codeForStatus(status: number): ErrorCode {
  if (status === 401) return 'HUB_UNAUTHORIZED';
  if (status === 403) return 'HUB_FORBIDDEN';
  if (status === 429) return 'HUB_RATE_LIMITED';
  if (status === 408 || status >= 500) return 'HUB_UNAVAILABLE';
  if (status >= 400) return 'HUB_BAD_REQUEST';
  return 'HUB_BAD_RESPONSE';
}

function bodyText(body: Body, voucher: string): Buffer {
  switch (body.kind) {
    case 'page': {
      const text = renderPage(body.page);
      return Buffer.from(body.truncateAt === undefined ? text : text.slice(0, body.truncateAt % Math.max(1, text.length)), 'utf8');
    }
    case 'bytes':
      return Buffer.from(body.bytes);
    case 'text':
      return Buffer.from(body.text, 'utf8');
    case 'problem':
      // A proxy echoing the request's Authorization header back: the voucher must not travel on.
      return Buffer.from(JSON.stringify(body.echoVoucher ? { ...body.problem, detail: `rejected Authorization: Bearer ${voucher}` } : body.problem), 'utf8');
  }
}

/** The correlationId the answer carries: the problem body's (errors only), else the header. */
function modelCorrelationId(answer: Answer, text: string): string | undefined {
  if (answer.status >= 400) {
    try {
      const body: unknown = JSON.parse(text);
      if (typeof body === 'object' && body !== null && !Array.isArray(body)) {
        const id = (body as Record<string, unknown>).correlationId;
        if (typeof id === 'string' && id.length > 0) return id;
      }
    } catch {
      // not a problem body
    }
  }
  return answer.correlationHeader;
}

const OTHER_STATUSES = [201, 204, 301, 302, 400, 401, 403, 404, 405, 408, 409, 422, 429, 500, 502, 503, 504];

function answers(cursor: number, size: number, types: { changesOnly: boolean }): fc.Arbitrary<Answer> {
  const page = rawPage(cursor, size, types);
  const problem = fc.record(
    {
      type: fc.constant('about:blank'),
      status: fc.integer({ min: 100, max: 599 }),
      title: fc.string({ maxLength: 30 }),
      detail: fc.string({ maxLength: 60 }),
      correlationId: fc.oneof(safeId, fc.constant(''), fc.constant(42)),
      errors: fc.array(fc.record({ code: fc.oneof(fc.constantFrom('0001', '10004', '0004'), fc.integer()), detail: fc.string({ maxLength: 10 }) }), { maxLength: 2 }),
    },
    { requiredKeys: ['type', 'status', 'title'] },
  );
  const body: fc.Arbitrary<Body> = fc.oneof(
    { weight: 40, arbitrary: page.map((p): Body => ({ kind: 'page', page: p })) },
    { weight: 2, arbitrary: fc.tuple(page, fc.nat()).map(([p, at]): Body => ({ kind: 'page', page: p, truncateAt: at })) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((bytes): Body => ({ kind: 'bytes', bytes })) },
    { weight: 1, arbitrary: fc.constantFrom('', '[]', 'null', '"OK"', '42', '<html><body>maintenance</body></html>', '{"signals":[],"lastSignalId":null}{}').map((text): Body => ({ kind: 'text', text })) },
    { weight: 3, arbitrary: fc.tuple(problem, fc.boolean()).map(([p, echoVoucher]): Body => ({ kind: 'problem', problem: p, echoVoucher })) },
  );
  const now = Date.now();
  return fc.record({
    status: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(200, 206) }, { weight: 2, arbitrary: fc.constantFrom(...OTHER_STATUSES) }),
    contentType: fc.constantFrom(undefined, 'application/json', 'application/problem+json', 'text/html; charset=utf-8', 'application/octet-stream'),
    correlationHeader: fc.option(safeId, { nil: undefined }),
    retryAfter: fc.constantFrom(undefined, '0', '0.004', '0.01', 'soon', '-1', '1e3', 'Wed, 21 Oct 2015 07:28:00 GMT', 'Wed, 21 Oct 2099 07:28:00 GMT'),
    rateLimitHeaders: fc.oneof(
      { weight: 3, arbitrary: fc.constant({}) },
      {
        weight: 1,
        arbitrary: fc.record({
          'x-rate-limit-limit': fc.constantFrom('25', '0', '-1', 'abc', '1e309'),
          'x-rate-limit-remaining': fc.constantFrom('24', '0', '-3', 'x'),
          'x-rate-limit-interval': fc.constantFrom('1000', '0', 'NaN', '-5', '1000000000'),
          'x-rate-limit-reset': fc.constantFrom(String(now + 20), '0', 'never', String(now + 1e9), '1e400'),
        }),
      },
    ),
    body,
    cut: fc.oneof({ weight: 19, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  });
}

function toScripted(answer: Answer, voucherOf: (req: IncomingMessage) => string): (req: IncomingMessage) => ScriptedAnswer {
  return (req) => {
    const headers: Record<string, string> = { ...answer.rateLimitHeaders };
    if (answer.contentType !== undefined) headers['content-type'] = answer.contentType;
    if (answer.correlationHeader !== undefined) headers['x-correlation-id'] = answer.correlationHeader;
    if (answer.retryAfter !== undefined) headers['retry-after'] = answer.retryAfter;
    return { status: answer.status, headers, body: bodyText(answer.body, voucherOf(req)), cut: answer.cut && answer.status !== 204 };
  };
}

/** Checks an outcome against the model; returns the accepted page (or undefined on rejection). */
function checkOutcome(outcome: { ok: true; value: Page } | { ok: false; error: unknown }, answer: Answer, text: string, ctx: { cursor: number; size: number; vouchers: Set<string> }): Page | undefined {
  const cut = answer.cut && answer.status !== 204;
  const expectedPage =
    !cut && (answer.status === 200 || answer.status === 206) && answer.body.kind === 'page' && answer.body.truncateAt === undefined
      ? modelPage(answer.body.page, ctx.cursor, ctx.size, answer.status, answer.correlationHeader)
      : undefined;
  if (outcome.ok) {
    // Accepted: only a page the model accepts (a random body that happens to be a valid page does not occur at these sizes).
    expect(expectedPage, 'the client accepted an answer SPEC §3 rejects').toBeDefined();
    expect(outcome.value).toEqual(expectedPage);
    return outcome.value;
  }
  const err = outcome.error;
  if (!isAppError(err)) throw err; // a crash (TypeError, RangeError, ...): fail with it
  expect(expectedPage, `the client rejected a valid page: ${err.message}`).toBeUndefined();
  const error: AppError = err;
  expect(error.code).toBe(cut ? 'HUB_UNAVAILABLE' : answer.status === 200 || answer.status === 206 ? 'HUB_BAD_RESPONSE' : codeForStatus(answer.status));
  // What and where: the operation, the e-service and the cursor, and for answers the status and correlationId.
  expect(error.message).toContain(`e-service ${ES} from cursor ${ctx.cursor}`);
  if (!cut) {
    expect(error.status).toBe(answer.status);
    expect(error.message).toContain(String(answer.status));
    expect(error.correlationId).toBe(modelCorrelationId(answer, text));
    if (error.correlationId !== undefined) expect(error.message).toContain(error.correlationId);
  }
  for (const voucher of ctx.vouchers) expect(error.message + JSON.stringify(error.details ?? {})).not.toContain(voucher);
  expect(error.message).not.toMatch(/eyJ[\w-]+\.eyJ[\w-]+/);
  return undefined;
}

// ---- client level ----

describe('hub client against generated answers', () => {
  let sim: Simulator;
  let provider: VoucherProvider;
  let closeSim: () => Promise<void>;
  let server: ScriptedServer;
  let dispatcher: Agent;
  let current: (req: IncomingMessage) => ScriptedAnswer = () => ({ status: 500, body: '' });
  const vouchers = new Set<string>();
  const voucherOf = (req: IncomingMessage): string => {
    const voucher = (req.headers.authorization ?? '').replace(/^Bearer /, '');
    vouchers.add(voucher);
    return voucher;
  };

  beforeAll(async () => {
    ({ sim, provider, close: closeSim } = await simulatorWithM2m('m2m-property-hub'));
    void sim;
    server = await startScriptedServer((req) => current(req));
    dispatcher = new Agent({ keepAliveTimeout: 1000 });
  });
  afterAll(async () => {
    await server.close();
    await dispatcher.close();
    await closeSim();
  });

  it(
    'every generated pull answer is either the page the SPEC §3 model accepts or a HUB_* AppError naming e-service, cursor, status and correlationId; no crash, no hang, no voucher in messages',
    async () => {
      const scenario = fc.tuple(fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 1, max: 8 })).chain(([cursor, size]) => fc.record({ cursor: fc.constant(cursor), size: fc.constant(size), answer: answers(cursor, size, { changesOnly: false }) }));
      await fc.assert(
        fc.asyncProperty(scenario, async ({ cursor, size, answer }) => {
          current = toScripted(answer, voucherOf);
          const client = new HubClient({
            baseUrl: `${server.url}/1.0/pull/`,
            pageSize: size,
            requestTimeoutMs: 5000,
            maxRetries: 0,
            maxRetryDelayMs: 5,
            minRetryDelayMs: 1,
            maxRateLimitWaitMs: 30,
            vouchers: m2mVoucherSource(provider),
            rateLimiter: new RateLimiter({ initialRatePerSecond: 10_000 }),
            logger: silentLogger,
            dispatcher,
          });
          const outcome = await bounded(outcomeOf(client.pull(ES, cursor)), 10_000, `pull answered ${answer.status}`);
          await client.close();
          const text = bodyText(answer.body, [...vouchers].at(-1) ?? '').toString('utf8');
          checkOutcome(outcome, answer, text, { cursor, size, vouchers });
        }),
        propertyParameters({ runs: 300, soakRuns: 5000 }),
      );
    },
    propertyTimeoutMs(40_000),
  );
});

// ---- engine level ----

interface Snapshot {
  eservice: unknown;
  outbox: unknown[];
  signalLog: unknown[];
  epochs: unknown[];
  resync: unknown[];
  pseudonyms: unknown;
}

function snapshot(db: Db): Snapshot {
  return {
    // state/last_error change on a failed run by design; the data columns must not.
    eservice: db.prepare('SELECT eservice_id, cursor, high_water, last_pull_at, caught_up_at, signals_seen, matches FROM eservices ORDER BY id').all(),
    outbox: db.prepare('SELECT * FROM outbox ORDER BY seq').all(),
    signalLog: db.prepare('SELECT * FROM signal_log ORDER BY eservice, signal_id').all(),
    epochs: db.prepare('SELECT * FROM epochs ORDER BY id').all(),
    resync: db.prepare('SELECT * FROM resync_reports ORDER BY id').all(),
    pseudonyms: pseudonymCount(db),
  };
}

describe('sync engine against a generated second page', () => {
  const PAGE_SIZE = 6;
  const FIRST_PAGE_LAST = 20;
  const locals = [fiscalCode(7001), fiscalCode(7002), fiscalCode(7003)];
  const strangers = [fiscalCode(8001), fiscalCode(8002)];
  let world: World;
  let server: ScriptedServer;
  let remotes: Remotes;
  let second: (req: IncomingMessage) => ScriptedAnswer = () => ({ status: 500, body: '' });
  const vouchers = new Set<string>();

  const pageOne = (): string =>
    JSON.stringify({
      signals: [
        { signalId: 10, signalType: 'UPDATE', objectId: world.sim.pseudonymFor(ES, locals[0]!), objectType: 'domicile', eserviceId: ES },
        { signalId: FIRST_PAGE_LAST, signalType: 'CREATE', objectId: world.sim.pseudonymFor(ES, strangers[0]!), objectType: 'domicile', eserviceId: ES },
      ],
      lastSignalId: FIRST_PAGE_LAST,
    });

  beforeAll(async () => {
    server = await startScriptedServer((req) => {
      vouchers.add((req.headers.authorization ?? '').replace(/^Bearer /, ''));
      const cursor = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('signalId'));
      if (cursor === 0) return { status: 206, headers: { 'content-type': 'application/json' }, body: pageOne() };
      if (cursor === FIRST_PAGE_LAST) return second(req);
      return { status: 200, headers: { 'content-type': 'application/json' }, body: '{"signals":[],"lastSignalId":null}' };
    });
    world = await createWorld({
      eservices: [{ id: ES, name: 'residenze' }],
      toml: `[hub]\nbase_url = "${server.url}/1.0/pull"\npage_size = ${PAGE_SIZE}\nmax_retries = 0\nmax_retry_delay_ms = 5\nmax_rate_limit_wait_ms = 30\ntime_window_seconds = 0\n[crypto]\nrotation_wait_seconds = 0\n`,
    });
    remotes = createRemotes(world.config, { logger: silentLogger });
  });
  afterAll(async () => {
    await closeRemotes(remotes);
    await world.close();
    await server.close();
  });

  /** A fresh database with the local subjects, synced over the first page only. */
  async function afterFirstPage(): Promise<Db> {
    const db = openDatabase(path.join(tempDir('shs-prop-hub-'), 'state.db'));
    new SubjectWriter(db, { index: subjectIndexOptions(world.config) }).upsertBatch(locals.map((key, i) => ({ key, ref: `ref-${i}`, eservices: 'all' })));
    const engine = createEngine(world.config, db, remotes, { logger: silentLogger });
    await engine.syncEService(ES, { maxPages: 1 });
    return db;
  }

  it(
    'a rejected second page leaves cursor, outbox, signal log, epochs and reports exactly as after the first page; an accepted one adds exactly the events the model matches',
    async () => {
      const objectIds = [...locals, ...strangers].map((key) => world.sim.pseudonymFor(ES, key));
      const refOf = new Map(locals.map((key, i) => [world.sim.pseudonymFor(ES, key), `ref-${i}`]));
      // Object ids are pseudonyms of local subjects or of strangers, so that accepted pages match.
      const answer = answers(FIRST_PAGE_LAST, PAGE_SIZE, { changesOnly: true }).map((a) => withObjectIds(a, objectIds));
      await fc.assert(
        fc.asyncProperty(answer, fc.nat(), async (a, _salt) => {
          second = toScripted(a, (req) => (req.headers.authorization ?? '').replace(/^Bearer /, ''));
          const db = await afterFirstPage();
          try {
            const before = snapshot(db);
            const engine = createEngine(world.config, db, remotes, { logger: silentLogger });
            const outcome = await bounded(outcomeOf(engine.syncEService(ES)), 10_000, `engine with a second page answered ${a.status}`);
            const text = bodyText(a.body, '').toString('utf8');
            const accepted = checkOutcome(
              outcome.ok ? { ok: true, value: acceptedPageOf(a) ?? ({} as Page) } : outcome,
              a,
              text,
              { cursor: FIRST_PAGE_LAST, size: PAGE_SIZE, vouchers },
            );
            const after = snapshot(db);
            if (accepted === undefined) {
              expect(after).toEqual(before);
              return;
            }
            const lastId = accepted.lastSignalId ?? FIRST_PAGE_LAST;
            expect((after.eservice as Array<{ cursor: number }>)[0]!.cursor).toBe(lastId);
            const newEvents = (after.outbox as Array<{ payload: string; kind: string }>).slice(before.outbox.length).map((row) => JSON.parse(row.payload) as { signalId: number; subjectRef: string });
            const expected = accepted.signals.filter((s) => s.skip === undefined && refOf.has(s.objectId)).map((s) => ({ signalId: s.signalId, subjectRef: refOf.get(s.objectId) }));
            expect(newEvents.map((e) => ({ signalId: e.signalId, subjectRef: e.subjectRef }))).toEqual(expected);
            expect(after.outbox.slice(0, before.outbox.length)).toEqual(before.outbox);
          } finally {
            db.close();
          }
        }),
        propertyParameters({ runs: 60, soakRuns: 1000 }),
      );
    },
    propertyTimeoutMs(40_000),
  );
});

/** The model's page for an answer the engine consumed successfully (for the shared outcome check). */
function acceptedPageOf(answer: Answer): Page | undefined {
  if (answer.cut || answer.body.kind !== 'page' || answer.body.truncateAt !== undefined) return undefined;
  if (answer.status !== 200 && answer.status !== 206) return undefined;
  return modelPage(answer.body.page, 20, 6, answer.status, answer.correlationHeader);
}

/** Replaces valid generated objectIds by pseudonyms (local or stranger), keeping the malformed ones. */
function withObjectIds(answer: Answer, objectIds: string[]): Answer {
  if (answer.body.kind !== 'page' || !Array.isArray(answer.body.page.signals)) return answer;
  let n = 0;
  const signals = answer.body.page.signals.map((item): RawSignalItem => {
    if (item.kind !== 'object') return item;
    return {
      kind: 'object',
      fields: item.fields.map(([k, v]): [string, Lit] => {
        if (k !== 'objectId' || v === undefined || modelString(v) === undefined) return [k, v];
        return [k, JSON.stringify(objectIds[n++ % objectIds.length])];
      }),
    };
  });
  return { ...answer, body: { ...answer.body, page: { ...answer.body.page, signals } } };
}
