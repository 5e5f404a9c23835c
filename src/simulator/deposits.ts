import { normalizeSubjectKey } from '../crypto/pseudonym.js';
import type { SimState } from './state.js';

/** Deposits a signal about a subject, its objectId the producer's pseudonym under the current seed. */
export function depositForSubject(state: SimState, eserviceId: string, subjectKey: string, signalType: string, objectType = 'subject'): number {
  const es = state.eservice(eserviceId);
  const objectId = state.hasher(es).pseudonym(normalizeSubjectKey(subjectKey));
  return state.deposit(eserviceId, { signalType, objectId, objectType });
}

const TYPES = ['CREATE', 'UPDATE', 'DELETE'] as const;

/**
 * Deposits `count` synthetic signals (for benchmarks): objectIds are pseudonyms of synthetic
 * subject keys `SIM<number>` under the current seed, so they look like real ones and match nothing
 * a consumer holds unless it loads the same synthetic keys.
 */
export function generateSignals(state: SimState, eserviceId: string, count: number): { first: number | null; last: number | null } {
  const es = state.eservice(eserviceId);
  const hasher = es.seeds.length > 0 ? state.hasher(es) : undefined;
  let first: number | null = null;
  let last: number | null = null;
  const visibleAt = state.now();
  for (let i = 0; i < count; i++) {
    const id = es.signals.lastId + 1;
    const objectId = hasher ? hasher.pseudonym(`SIM${id}`) : `object-${id}`;
    state.deposit(eserviceId, { signalType: TYPES[i % 3]!, objectId, objectType: 'generated', signalId: id, visibleAt });
    first ??= id;
    last = id;
  }
  return { first, last };
}
