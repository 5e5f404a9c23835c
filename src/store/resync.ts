import type { Db } from './db.js';
import type { ResyncReason } from '../events.js';

export interface ResyncReport {
  id: number;
  eserviceId: string;
  fromSignalId: number;
  toSignalId: number;
  reason: ResyncReason;
  detail: string | null;
  epoch: number | null;
  createdAt: number;
  closedAt: number | null;
  ackedAt: number | null;
}

interface RawReport {
  id: number;
  eservice_id: string;
  from_signal_id: number;
  to_signal_id: number;
  reason: ResyncReason;
  detail: string | null;
  epoch: number | null;
  created_at: number;
  closed_at: number | null;
  acked_at: number | null;
}

const toReport = (r: RawReport): ResyncReport => ({
  id: r.id,
  eserviceId: r.eservice_id,
  fromSignalId: r.from_signal_id,
  toSignalId: r.to_signal_id,
  reason: r.reason,
  detail: r.detail,
  epoch: r.epoch,
  createdAt: r.created_at,
  closedAt: r.closed_at,
  ackedAt: r.acked_at,
});

/**
 * Signal ranges whose subjects may have changed without a matching event (SPEC §8, retention).
 * A report of an unknown epoch stays open (closed_at NULL) and grows while signals of that
 * epoch arrive; its resync-required event is written when it closes.
 */
export class ResyncStore {
  private readonly growingAll;
  private readonly growingOne;

  constructor(private readonly db: Db) {
    this.growingAll = db.prepare('SELECT * FROM resync_reports WHERE closed_at IS NULL ORDER BY id');
    this.growingOne = db.prepare('SELECT * FROM resync_reports WHERE closed_at IS NULL AND eservice_id = ? ORDER BY id');
  }

  create(r: { eserviceId: string; from: number; to: number; reason: ResyncReason; detail: string; epoch?: number; closed: boolean }, now = Date.now()): ResyncReport {
    const info = this.db
      .prepare('INSERT INTO resync_reports (eservice_id, from_signal_id, to_signal_id, reason, detail, epoch, created_at, closed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(r.eserviceId, r.from, r.to, r.reason, r.detail, r.epoch ?? null, now, r.closed ? now : null);
    return this.get(Number(info.lastInsertRowid))!;
  }

  get(id: number): ResyncReport | undefined {
    const r = this.db.prepare('SELECT * FROM resync_reports WHERE id = ?').get(id) as RawReport | undefined;
    return r && toReport(r);
  }

  /** The growing report of an unknown epoch, if any. */
  openForEpoch(epoch: number): ResyncReport | undefined {
    const r = this.db.prepare('SELECT * FROM resync_reports WHERE epoch = ? AND closed_at IS NULL').get(epoch) as RawReport | undefined;
    return r && toReport(r);
  }

  extend(id: number, to: number): void {
    this.db.prepare('UPDATE resync_reports SET to_signal_id = MAX(to_signal_id, ?) WHERE id = ?').run(to, id);
  }

  /** Open reports of an e-service (all e-services when omitted). */
  growing(eserviceId?: string): ResyncReport[] {
    const rows = eserviceId === undefined ? this.growingAll.all() : this.growingOne.all(eserviceId);
    return (rows as RawReport[]).map(toReport);
  }

  close(id: number, now = Date.now()): ResyncReport {
    this.db.prepare('UPDATE resync_reports SET closed_at = ? WHERE id = ? AND closed_at IS NULL').run(now, id);
    return this.get(id)!;
  }

  list(options: { includeAcked?: boolean; eserviceId?: string } = {}): ResyncReport[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (!options.includeAcked) where.push('acked_at IS NULL');
    if (options.eserviceId !== undefined) {
      where.push('eservice_id = ?');
      args.push(options.eserviceId);
    }
    const sql = `SELECT * FROM resync_reports ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id`;
    return (this.db.prepare(sql).all(...args) as RawReport[]).map(toReport);
  }

  ack(id: number, now = Date.now()): boolean {
    return this.db.prepare('UPDATE resync_reports SET acked_at = ? WHERE id = ? AND acked_at IS NULL').run(now, id).changes === 1;
  }

  openCountByEService(): Map<string, number> {
    const rows = this.db.prepare('SELECT eservice_id, COUNT(*) AS n FROM resync_reports WHERE acked_at IS NULL GROUP BY eservice_id').all() as { eservice_id: string; n: number }[];
    return new Map(rows.map((r) => [r.eservice_id, r.n]));
  }
}
