import { describe, expect, it } from 'vitest';
import type { CryptoInfo } from '../src/crypto/crypto-info-client.js';
import type { EpochStatus } from '../src/store/epochs.js';
import { decideInitial, decideRotation, type CryptoAnswer, type EpochView, type RotationDecision } from '../src/sync/rotation.js';

/**
 * The seed-epoch policy (src/sync/rotation.ts) from a table: every combination of what the
 * producer answered for SEEDUPDATE S, whether it keeps history, the epochs known before S, and
 * whether the race wait is over, with the outcome each must have.
 */
const S = 100;
const seed = (fingerprint: string, signalId?: number): CryptoInfo => ({ seed: `seed-${fingerprint}`, cryptoHashFunction: 'SHA-256', fingerprint, signalId });
const epoch = (id: number, start: number, status: EpochStatus, fingerprint: string | null): EpochView => ({ id, startSignalId: start, status, seedFingerprint: status === 'unknown' ? null : fingerprint });

type Answer = 'not-found' | 'sid=S' | 'sid<S' | 'sid>S' | 'same-as-previous' | 'same-as-first' | 'new-seed';
type Previous = 'none' | 'known' | 'assumed' | 'unknown' | 'assumed-first-then-known' | 'assumed-then-lost';
const ANSWERS: Answer[] = ['not-found', 'sid=S', 'sid<S', 'sid>S', 'same-as-previous', 'same-as-first', 'new-seed'];
const PREVIOUS: Previous[] = ['none', 'known', 'assumed', 'unknown', 'assumed-first-then-known', 'assumed-then-lost'];

function earlierOf(p: Previous): EpochView[] {
  switch (p) {
    case 'none':
      return [];
    case 'known':
      return [epoch(1, 0, 'known', 'aaaa')];
    case 'assumed':
      return [epoch(1, 0, 'assumed', 'aaaa')];
    case 'unknown':
      return [epoch(1, 0, 'unknown', null)];
    case 'assumed-first-then-known':
      return [epoch(1, 0, 'assumed', 'aaaa'), epoch(2, 50, 'known', 'bbbb')];
    case 'assumed-then-lost':
      // Assumed, then reported when the retention deleted what would confirm it: unknown, with
      // the fingerprint of the seed served then (src/store/epochs.ts markUnknown).
      return [{ id: 1, startSignalId: 0, status: 'unknown', seedFingerprint: 'aaaa' }];
  }
}

function answerOf(a: Answer, earlier: EpochView[]): CryptoAnswer {
  const previous = earlier.at(-1)?.seedFingerprint ?? 'zzzz';
  const first = earlier[0]?.seedFingerprint ?? 'zzzz';
  switch (a) {
    case 'not-found':
      return { kind: 'not-found' };
    case 'sid=S':
      return { kind: 'seed', info: seed('cccc', S) };
    case 'sid<S':
      return { kind: 'seed', info: seed(previous, earlier.at(-1)?.startSignalId ?? 0) };
    case 'sid>S':
      return { kind: 'seed', info: seed('dddd', S + 7) };
    case 'same-as-previous':
      return { kind: 'seed', info: seed(previous) };
    case 'same-as-first':
      return { kind: 'seed', info: seed(first) };
    case 'new-seed':
      return { kind: 'seed', info: seed('cccc') };
  }
}

/** The outcome in words: `wait`, or the epochs opened (`start:status`) and those invalidated (`id:reason`). */
function summary(d: RotationDecision): string {
  if (d.kind === 'wait') return `wait(${d.reason})`;
  const opened = d.epochs.map((e) => `${e.start}:${e.status}${e.status === 'unknown' ? `(${e.reason})` : ''}`).join(' ');
  const invalid = d.invalidate.map((i) => `${i.epochId}:${i.reason}`).join(' ');
  return invalid ? `${opened} invalidate ${invalid}` : opened;
}

// [answer, history, previous, expected before the wait expired, expected after]
const TABLE: [Answer, boolean, Previous, string, string][] = [];
const expect_ = (a: Answer, h: boolean, p: Previous, before: string, after = before) => TABLE.push([a, h, p, before, after]);

for (const p of PREVIOUS) {
  for (const h of [true, false]) {
    // The producer names the SEEDUPDATE its seed belongs to: decided at once, whatever else.
    const invalidFirst = p === 'assumed' || p === 'assumed-first-then-known';
    expect_('sid=S', h, p, `100:known`);
    expect_('sid>S', h, p, `100:unknown(seed-from-later-epoch) 107:known`);
    // An older signalId is the race: wait, then the epoch is unknown.
    expect_('sid<S', h, p, 'wait(answer-older)', '100:unknown(seed-unchanged)');
    void invalidFirst;
  }
  // History: 404 is the race or a purged seed.
  expect_('not-found', true, p, 'wait(history-not-found)', '100:unknown(seed-history-missing)');
}

// History, no signalId: the answer is the producer's word for S.
expect_('new-seed', true, 'none', '100:known');
expect_('new-seed', true, 'known', '100:known');
expect_('new-seed', true, 'unknown', '100:known');
expect_('new-seed', true, 'assumed', '100:known');
expect_('new-seed', true, 'assumed-first-then-known', '100:known');
expect_('same-as-previous', true, 'known', 'wait(seed-unchanged)', '100:unknown(seed-unchanged)');
expect_('same-as-previous', true, 'assumed', '100:known invalidate 1:backlog-predates-seed');
expect_('same-as-previous', true, 'assumed-first-then-known', 'wait(seed-unchanged)', '100:unknown(seed-unchanged)');
expect_('same-as-first', true, 'assumed-first-then-known', '100:known invalidate 1:backlog-predates-seed');
expect_('same-as-first', true, 'known', 'wait(seed-unchanged)', '100:unknown(seed-unchanged)');
expect_('same-as-first', true, 'assumed', '100:known invalidate 1:backlog-predates-seed');
expect_('new-seed', true, 'assumed-then-lost', '100:known');
expect_('same-as-previous', true, 'assumed-then-lost', '100:known');
expect_('same-as-first', true, 'assumed-then-lost', '100:known');

// No history, no signalId: only a changed seed can be told from the race.
expect_('new-seed', false, 'none', '100:assumed');
expect_('new-seed', false, 'known', '100:assumed');
expect_('new-seed', false, 'assumed', '100:assumed');
// Nothing known before S: a new seed may be the race's stale one; a change during the wait
// shows the race (below), an answer unchanged through the wait is S's.
expect_('new-seed', false, 'unknown', 'wait(previous-unknown)', '100:assumed');
expect_('new-seed', false, 'assumed-first-then-known', '100:assumed');
expect_('same-as-previous', false, 'known', 'wait(seed-unchanged)', '100:unknown(seed-unchanged)');
expect_('same-as-previous', false, 'assumed', 'wait(seed-unchanged)', '100:assumed invalidate 1:backlog-predates-seed');
expect_('same-as-previous', false, 'assumed-first-then-known', 'wait(seed-unchanged)', '100:unknown(seed-unchanged)');
// The seed once assumed, then lost its confirmation to the retention: the race, or (unchanged
// after the wait) the seed after S, as for an assumed one; its signals were reported already.
expect_('new-seed', false, 'assumed-then-lost', 'wait(previous-unknown)', '100:assumed');
expect_('same-as-previous', false, 'assumed-then-lost', 'wait(seed-unchanged)', '100:assumed');
// An answer equal to an older (not the previous) epoch's seed is not the race without history.
expect_('same-as-first', false, 'assumed-first-then-known', '100:assumed');

describe('decideRotation: every combination of answer, history, earlier epochs and race', () => {
  it('the table covers every combination', () => {
    const keys = new Set(TABLE.map(([a, h, p]) => `${a}|${h}|${p}`));
    // Unreachable cells: without earlier epochs there is no "previous" or "first" seed to repeat;
    // "same as first" with a single earlier epoch is "same as previous".
    const unreachable = (a: Answer, p: Previous) => (p === 'none' || p === 'unknown') && (a === 'same-as-previous' || a === 'same-as-first');
    const single = (a: Answer, p: Previous) => a === 'same-as-first' && (p === 'known' || p === 'assumed' || p === 'assumed-then-lost');
    for (const a of ANSWERS)
      for (const h of [true, false])
        for (const p of PREVIOUS) {
          if (unreachable(a, p) || (a === 'not-found' && !h)) continue;
          if (single(a, p) && !h) continue; // same cell as same-as-previous without history
          expect(keys.has(`${a}|${h}|${p}`), `${a} history=${h} previous=${p}`).toBe(true);
        }
  });

  it.each(TABLE)('%s, history=%s, earlier=%s → %s, after the wait %s', (a, history, p, before, after) => {
    const earlier = earlierOf(p);
    const answer = answerOf(a, earlier);
    expect(summary(decideRotation({ S, answer, history, earlier, waitExpired: false }))).toBe(before);
    expect(summary(decideRotation({ S, answer, history, earlier, waitExpired: true }))).toBe(after);
  });

  it('properties over the whole table: expiry only turns waits into conclusions; history never assumes; only assumed epochs are invalidated', () => {
    for (const [a, history, p] of TABLE) {
      const earlier = earlierOf(p);
      const answer = answerOf(a, earlier);
      const live = decideRotation({ S, answer, history, earlier, waitExpired: false });
      const expired = decideRotation({ S, answer, history, earlier, waitExpired: true });
      expect(expired.kind).toBe('open');
      if (live.kind === 'open') expect(expired).toEqual(live);
      if (expired.kind !== 'open') continue;
      expect(expired.epochs[0]!.start).toBe(S);
      if (history) expect(expired.epochs.some((e) => e.status === 'assumed')).toBe(false);
      for (const inv of expired.invalidate) expect(earlier.find((e) => e.id === inv.epochId)?.status).toBe('assumed');
      // A seed proven for an earlier epoch is never opened again for S.
      for (const e of expired.epochs) if (e.status !== 'unknown') expect(earlier.some((k) => k.status === 'known' && k.seedFingerprint === e.info.fingerprint)).toBe(false);
    }
  });
});

describe('decideRotation: no seed known before S, no history, no signalId', () => {
  it('an answer that changed during the wait ends the race at once: the new one is S\'s', () => {
    for (const earlier of [earlierOf('unknown'), earlierOf('assumed-then-lost')]) {
      expect(summary(decideRotation({ S, answer: { kind: 'seed', info: seed('cccc') }, history: false, earlier, waitExpired: false, firstAnswer: 'cccc' }))).toBe('wait(previous-unknown)');
      expect(summary(decideRotation({ S, answer: { kind: 'seed', info: seed('dddd') }, history: false, earlier, waitExpired: false, firstAnswer: 'cccc' }))).toBe('100:assumed');
    }
  });
});

describe('decideRotation: a SEEDUPDATE that became visible after a later one (SPEC §10)', () => {
  const earlier = [epoch(1, 0, 'assumed', 'aaaa')];
  const later = [epoch(2, 120, 'assumed', 'eeee')];
  it.each([
    ['no history', false, seed('eeee'), '100:unknown(seed-from-later-epoch)'],
    ['history, a producer ignoring ?signalId', true, seed('eeee'), '100:unknown(seed-from-later-epoch)'],
    ['no history, a seed of its own', false, seed('cccc'), '100:assumed'],
    ['the producer names S', false, seed('eeee', S), '100:known'],
  ] as const)('%s: the answer %s', (_name, history, info, expected) => {
    for (const waitExpired of [false, true]) expect(summary(decideRotation({ S, answer: { kind: 'seed', info }, history, earlier, later, waitExpired }))).toBe(expected);
  });
});

describe('decideInitial: the first epochs of a fresh e-service', () => {
  const cases: [string, Parameters<typeof decideInitial>[0], string][] = [
    ['history from 0: the first seed, numbered 0', { cursor: 0, history: true, first: { kind: 'seed', info: seed('aaaa', 0) } }, '0:known'],
    ['history from 0: the first seed, no signalId', { cursor: 0, history: true, first: { kind: 'seed', info: seed('aaaa') } }, '0:known'],
    ['history from 0: a producer ignoring ?signalId answers its current seed', { cursor: 0, history: true, first: { kind: 'seed', info: seed('aaaa', 40) } }, '0:unknown(backlog-predates-seed) 40:known'],
    ['history from 0: first seed purged, current names its start', { cursor: 0, history: true, first: { kind: 'not-found' }, current: seed('bbbb', 40) }, '0:unknown(seed-history-missing) 40:known'],
    ['history from 0: first seed purged, current without signalId', { cursor: 0, history: true, first: { kind: 'not-found' }, current: seed('bbbb') }, '0:assumed'],
    ['history from a cursor: current covers it', { cursor: 30, history: true, current: seed('bbbb', 20) }, '20:known'],
    ['history from a cursor: current starts later', { cursor: 30, history: true, current: seed('bbbb', 40) }, '30:unknown(backlog-predates-seed) 40:known'],
    ['history from a cursor: current without signalId', { cursor: 30, history: true, current: seed('bbbb') }, '30:assumed'],
    ['no history: current covers the backlog', { cursor: 0, history: false, current: seed('bbbb', 0) }, '0:known'],
    ['no history: current starts later', { cursor: 0, history: false, current: seed('bbbb', 40) }, '0:unknown(backlog-predates-seed) 40:known'],
    ['no history: current without signalId', { cursor: 0, history: false, current: seed('bbbb') }, '0:assumed'],
  ];
  it.each(cases)('%s', (_name, facts, expected) => {
    const plans = decideInitial(facts);
    expect(plans).not.toBe('need-current');
    if (plans === 'need-current') return;
    expect(plans.map((e) => `${e.start}:${e.status}${e.status === 'unknown' ? `(${e.reason})` : ''}`).join(' ')).toBe(expected);
  });

  it('asks for the current seed only when the first one does not settle it', () => {
    expect(decideInitial({ cursor: 0, history: true, first: { kind: 'not-found' } })).toBe('need-current');
    expect(decideInitial({ cursor: 5, history: true })).toBe('need-current');
    expect(decideInitial({ cursor: 0, history: false })).toBe('need-current');
  });
});
