import type { Db } from '../store/db.js';
import { SubjectStore } from '../store/subjects.js';
import type { SignalEvent } from '../events.js';
import { OWN_TENANT } from '../tenant.js';

/**
 * The stable id of a signal event: `eserviceId:signalId` for the consumer's own subject (the
 * id every event had before tenants existed, so upgraded databases keep emitting the same
 * ids), `eserviceId:signalId:tenant:<tenant>` for a delegator's. Tenant ids contain no ":".
 */
export function signalEventId(eserviceId: string, signalId: number, tenant: string): string {
  return tenant === OWN_TENANT ? `${eserviceId}:${signalId}` : `${eserviceId}:${signalId}:tenant:${tenant}`;
}

/**
 * Matching yields a subject id (pseudonyms are per key); delivery wants one event per tenant
 * whose subject matched (SPEC §8c). This turns the event of a match into those events: one per
 * membership of the subject that follows the e-service, each with that tenant's ref and id.
 */
export class TenantFanout {
  private readonly subjects: SubjectStore;

  constructor(db: Db) {
    this.subjects = new SubjectStore(db);
  }

  /**
   * `event` as built for the match (its id and subjectRef are replaced). With `signalReceivedAt`,
   * an event for a tenant that added the key after the signal arrived is flagged backfilled.
   */
  expand(event: SignalEvent, subjectId: number, signalReceivedAt?: number): SignalEvent[] {
    return this.subjects.recipients(subjectId, event.eserviceId).map((r) => {
      const { tenant: _drop, backfilled, ...base } = event;
      const late = backfilled === true || (signalReceivedAt !== undefined && r.addedAt > signalReceivedAt);
      return {
        ...base,
        id: signalEventId(event.eserviceId, event.signalId, r.tenant),
        subjectRef: r.ref,
        ...(late ? { backfilled: true as const } : {}),
        ...(r.tenant === OWN_TENANT ? {} : { tenant: r.tenant }),
      };
    });
  }
}
