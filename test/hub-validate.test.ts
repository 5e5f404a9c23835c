import { describe, expect, it } from 'vitest';
import { isAppError, type AppError } from '../src/errors.js';
import { parsePullBody, type PullContext } from '../src/hub/validate.js';

const ES = '7f1c2e6a-0000-4000-8000-000000000001';
const ctx = (over: Partial<PullContext> = {}): PullContext => ({ eserviceId: ES, cursor: 10, size: 10, status: 200, correlationId: 'corr-1', ...over });
const sig = (signalId: unknown, over: Record<string, unknown> = {}) => ({ signalId, signalType: 'UPDATE', objectId: 'pseudo', objectType: 'domicile', eserviceId: ES, ...over });

function rejection(text: string, context: PullContext = ctx()): AppError {
  try {
    parsePullBody(text, context);
  } catch (err) {
    if (isAppError(err)) return err;
    throw err;
  }
  throw new Error('expected HUB_BAD_RESPONSE, the body was accepted');
}

describe('parsePullBody: valid pages', () => {
  it('parses a page with gaps, keeps status and correlationId', () => {
    const body = JSON.stringify({ signals: [sig(11), sig(25), sig(26, { signalType: 'DELETE' })], lastSignalId: 26 });
    const page = parsePullBody(body, ctx({ status: 206 }));
    expect(page).toEqual({ status: 206, signals: [sig(11), sig(25), sig(26, { signalType: 'DELETE' })], lastSignalId: 26, correlationId: 'corr-1' });
  });

  it('accepts an empty page with lastSignalId null, with 200 and with 206 (time window)', () => {
    for (const status of [200, 206] as const) {
      expect(parsePullBody('{"signals":[],"lastSignalId":null}', ctx({ status }))).toEqual({ status, signals: [], lastSignalId: null, correlationId: 'corr-1' });
    }
  });

  it('accepts a SEEDUPDATE with "-" and ignores unknown extra fields', () => {
    const body = JSON.stringify({ signals: [sig(11, { signalType: 'SEEDUPDATE', objectId: '-', objectType: '-', extra: 1 })], lastSignalId: 11, next: 'x' });
    expect(parsePullBody(body, ctx()).signals).toEqual([sig(11, { signalType: 'SEEDUPDATE', objectId: '-', objectType: '-' })]);
  });

  it('accepts the largest safe id, 2^53-1', () => {
    const max = Number.MAX_SAFE_INTEGER;
    expect(parsePullBody(`{"signals":[${JSON.stringify(sig(max))}],"lastSignalId":${max}}`, ctx()).lastSignalId).toBe(max);
  });
});

describe('parsePullBody: every malformed answer is HUB_BAD_RESPONSE naming what and where', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['not JSON', '<html>maintenance</html>', /body: not valid JSON/],
    ['empty body', '', /body: not valid JSON \(0 characters\)/],
    ['truncated JSON', '{"signals":[{"signalId":11,"signalTy', /body: not valid JSON/],
    ['not an object', '[1,2]', /body: not a JSON object/],
    ['signals missing', '{"lastSignalId":null}', /signals: missing/],
    ['signals not an array', '{"signals":{},"lastSignalId":null}', /signals: not an array/],
    ['lastSignalId missing', '{"signals":[]}', /lastSignalId: missing/],
    ['signal not an object', '{"signals":[11],"lastSignalId":11}', /signals\[0\]: not an object/],
    ['signalId a string', JSON.stringify({ signals: [sig('11')], lastSignalId: 11 }), /signals\[0\]\.signalId: not a number \(got string\)/],
    ['signalId missing', JSON.stringify({ signals: [sig(undefined)], lastSignalId: 11 }), /signals\[0\]\.signalId: missing/],
    ['non-integer id', JSON.stringify({ signals: [sig(11.5)], lastSignalId: 11.5 }), /signals\[0\]\.signalId: 11\.5 is not an integer/],
    ['zero id', JSON.stringify({ signals: [sig(0)], lastSignalId: 0 }), /signals\[0\]\.signalId: 0 is not positive/],
    ['id not above the cursor', JSON.stringify({ signals: [sig(11), sig(12), sig(13), sig(9)], lastSignalId: 9 }), /signals\[3\]\.signalId: 9 is not above the cursor 10/],
    ['id equal to the cursor', JSON.stringify({ signals: [sig(10)], lastSignalId: 10 }), /signals\[0\]\.signalId: 10 is not above the cursor 10/],
    ['not ascending', JSON.stringify({ signals: [sig(11), sig(15), sig(14)], lastSignalId: 14 }), /signals\[2\]\.signalId: 14 is not above the previous id 15/],
    ['duplicate id', JSON.stringify({ signals: [sig(11), sig(11)], lastSignalId: 11 }), /signals\[1\]\.signalId: 11 is not above the previous id 11/],
    ['id above 2^53-1 (parsed unsafe)', `{"signals":[${JSON.stringify(sig(1)).replace('"signalId":1', '"signalId":9007199254740993')}],"lastSignalId":9007199254740993}`, /signals\[0\]\.signalId: 9007199254740992 is above 2\^53-1/],
    ['fraction rounded to an integer by JSON.parse', `{"signals":[${JSON.stringify(sig(1)).replace('"signalId":1', '"signalId":12.0000000000000001')}],"lastSignalId":12}`, /signalId: literal 12\.0000000000000001 at offset \d+ is not a plain integer/],
    ['exponent literal', `{"signals":[${JSON.stringify(sig(1)).replace('"signalId":1', '"signalId":1.2e1')}],"lastSignalId":12}`, /signalId: literal 1\.2e1 .* is not a plain integer/],
    ['lastSignalId mismatch', JSON.stringify({ signals: [sig(11), sig(12)], lastSignalId: 13 }), /lastSignalId: 13 differs from the last signal's id 12/],
    ['lastSignalId null on a non-empty page', JSON.stringify({ signals: [sig(11)], lastSignalId: null }), /lastSignalId: null on a page of 1 signals/],
    ['lastSignalId set on an empty page', '{"signals":[],"lastSignalId":10}', /lastSignalId: must be null on an empty page/],
    ['more signals than size', JSON.stringify({ signals: [sig(11), sig(12), sig(13)], lastSignalId: 13 }), /signals: 3 signals, more than the requested size 2/],
  ];

  it.each(cases)('%s', (_name, text, expected) => {
    const size = _name === 'more signals than size' ? 2 : 10;
    const err = rejection(text, ctx({ size }));
    expect(err.code).toBe('HUB_BAD_RESPONSE');
    expect(err.message).toMatch(expected);
    // Where: the e-service, the cursor, the status and the correlationId of the answer.
    expect(err.message).toContain(`e-service ${ES} from cursor 10 (status 200, correlationId corr-1)`);
    expect(err.status).toBe(200);
    expect(err.correlationId).toBe('corr-1');
  });

  it('keeps objectId values (possibly personal data) out of messages', () => {
    const err = rejection(JSON.stringify({ signals: [sig(12, { objectId: 'RSSMRA80A01H501Z' }), sig(11, { objectId: 'RSSMRA80A01H501Z' })], lastSignalId: 11 }));
    expect(err.message).toMatch(/not strictly ascending/);
    expect(err.message).not.toContain('RSSMRA80A01H501Z');
  });

  // Invariant 7: one signal never blocks an e-service. What is wrong with one signal (not with
  // the page's structure) marks it skipped; the page and its other signals are kept.
  const defects: [string, Record<string, unknown>, string | undefined][] = [
    ['empty objectId (the real push API accepts it)', { objectId: '' }, 'empty-object-id'],
    ['objectId not a string', { objectId: 42 }, 'malformed-object-id'],
    ['objectId missing', { objectId: undefined }, 'malformed-object-id'],
    ['empty objectType', { objectType: '' }, 'bad-object-type'],
    ['objectType not a string', { objectType: 3 }, 'bad-object-type'],
    ['objectType over 255 characters', { objectType: 'x'.repeat(256) }, 'bad-object-type'],
    ['signalType not a string', { signalType: null }, 'malformed-signal-type'],
    ['empty signalType', { signalType: '' }, 'malformed-signal-type'],
    ['another e-service in the page', { eserviceId: 'another-eservice' }, 'foreign-eservice'],
    ['a signal type this version does not know', { signalType: 'FROBNICATE' }, undefined],
    ['objectType of exactly 255 characters', { objectType: 'x'.repeat(255) }, undefined],
  ];
  it.each(defects)('%s: the page parses, the signal is marked, its neighbours are intact', (_name, over, reason) => {
    const page = parsePullBody(JSON.stringify({ signals: [sig(11), sig(12, over), sig(13)], lastSignalId: 13 }), ctx());
    expect(page.signals.map((s) => s.signalId)).toEqual([11, 12, 13]);
    expect(page.signals[0]).toEqual(sig(11));
    expect(page.signals[2]).toEqual(sig(13));
    expect(page.signals[1]!.skip).toBe(reason);
    if (reason !== undefined) expect(page.signals[1]!.objectId).toBe(''); // what cannot be matched is not kept
    if (reason === undefined) expect(page.signals[1]).toEqual(sig(12, over));
  });

  it('a skipped objectId never reaches the parsed signal (it may be personal data)', () => {
    const page = parsePullBody(JSON.stringify({ signals: [sig(11, { objectId: 'RSSMRA80A01H501Z', eserviceId: 'x' })], lastSignalId: 11 }), ctx());
    expect(page.signals[0]!.skip).toBe('foreign-eservice');
    expect(JSON.stringify(page)).not.toContain('RSSMRA80A01H501Z');
  });

  it('does not mistake an id-like text inside a string for an id', () => {
    const body = JSON.stringify({ signals: [sig(11, { objectType: 'x"signalId":1.5' })], lastSignalId: 11 });
    expect(parsePullBody(body, ctx()).signals[0]!.objectType).toBe('x"signalId":1.5');
  });
});
