import type { EServiceConfig } from '../config/types.js';
import type { ResyncEvent, ResyncReason } from '../events.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Db } from '../store/db.js';
import type { Epoch, EpochStore } from '../store/epochs.js';
import type { OutboxStore } from '../store/outbox.js';
import { ResyncStore, type ResyncReport } from '../store/resync.js';

/**
 * Resync-report bookkeeping (SPEC §8, invariant 3): signal ranges that no seed can be had for,
 * and their `resync-required` events. A report over an unknown epoch grows while its signals
 * arrive and closes when processing moves past the epoch, or at the end of a run that caught
 * up; its event is written when it closes, in the same transaction, so a crash cannot lose it.
 * Every method returns whether it wrote an outbox event (the caller wakes the sinks).
 */
export class ResyncReporter {
  readonly store: ResyncStore;

  constructor(
    private readonly db: Db,
    private readonly epochs: EpochStore,
    private readonly outbox: OutboxStore,
    private readonly logger: Logger,
    private readonly metrics: Metrics | undefined,
    private readonly now: () => number,
  ) {
    this.store = new ResyncStore(db);
  }

  /** Signals `first..last` of an unknown (or retired) epoch were passed unmatched. */
  grow(es: EServiceConfig, epoch: Epoch, first: number, last: number): void {
    const open = this.store.openForEpoch(epoch.id);
    if (open) {
      this.store.extend(open.id, last);
      return;
    }
    const reason: ResyncReason = epoch.status === 'unknown' ? ((epoch.note as ResyncReason | null) ?? 'seed-unchanged') : 'seed-unchanged';
    const detail =
      epoch.status === 'unknown'
        ? `no seed can be obtained for the epoch opened at signal ${epoch.startSignalId} (${reason}): its signals cannot be matched`
        : `late signals arrived for the epoch opened at signal ${epoch.startSignalId} after its pseudonyms were dropped`;
    this.store.create({ eserviceId: es.id, from: first, to: last, reason, detail, epoch: epoch.id, closed: false }, this.now());
  }

  /**
   * Closes the growing reports whose epoch processing has moved past (`upTo`), or all of them at
   * the end of a run that caught up (`upTo` undefined).
   */
  closeGrowing(es: EServiceConfig, eservice: number, upTo: number | undefined): boolean {
    const growing = this.store.growing(es.id);
    if (growing.length === 0) return false;
    const epochs = this.epochs.forEService(eservice);
    let wrote = false;
    const close = () => {
      for (const report of growing) {
        if (upTo !== undefined) {
          const idx = epochs.findIndex((e) => e.id === report.epoch);
          const next = epochs[idx + 1];
          if (idx < 0 || next === undefined || next.startSignalId > upTo) continue;
        }
        wrote = this.emit(es, this.store.close(report.id, this.now())) || wrote;
      }
    };
    if (this.db.inTransaction) close();
    else this.db.transaction(close).immediate();
    return wrote;
  }

  /** A range known at once: written closed, with its event. */
  recordClosed(es: EServiceConfig, from: number, to: number, reason: ResyncReason, detail: string): boolean {
    return this.emit(es, this.store.create({ eserviceId: es.id, from, to, reason, detail, closed: true }, this.now()));
  }

  openCount(eserviceId: string): number {
    return this.store.list({ eserviceId }).length;
  }

  private emit(es: EServiceConfig, report: ResyncReport): boolean {
    const event: ResyncEvent = {
      id: `${es.id}:resync:${report.id}`,
      type: 'resync-required',
      eserviceId: es.id,
      eserviceName: es.name,
      reportId: report.id,
      fromSignalId: report.fromSignalId,
      toSignalId: report.toSignalId,
      reason: report.reason,
      detail: report.detail ?? '',
      createdAt: new Date(report.createdAt).toISOString(),
    };
    this.logger.warn({ eservice: es.id, reportId: report.id, from: report.fromSignalId, to: report.toSignalId, reason: report.reason }, 'resync required');
    this.metrics?.eventsWritten.inc({ eservice: es.id, kind: 'resync-required' });
    return this.outbox.append(event, this.now());
  }
}
