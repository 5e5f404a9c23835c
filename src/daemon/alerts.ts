import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Db } from '../store/db.js';
import { EServiceStore } from '../store/eservices.js';
import { forbiddenState, retentionAlert, type RetentionLevel } from '../sync/alerts.js';

/**
 * The daemon's side of "warnings before data is lost": per configured e-service, the retention
 * margin gauge, a log line when it becomes stale (warn) or critical (error), once per change of
 * level and once at start, never once per poll, and the /readyz reasons. Reads the database
 * (last successful pull, first configured, last error) so it agrees with `status`.
 */
export class RetentionWatch {
  private readonly levels = new Map<string, RetentionLevel>();

  constructor(
    private readonly db: Db,
    private readonly deps: { logger: Logger; metrics: Metrics; now: () => number },
  ) {}

  /**
   * Evaluates every configured e-service at the clock's now: updates the gauge, logs level
   * changes, and returns the /readyz reasons (stale, critical, refused by the hub).
   */
  evaluate(config: Pick<Config, 'eservices' | 'alerts' | 'hub'>): string[] {
    const now = this.deps.now();
    const rows = new Map(new EServiceStore(this.db).all().map((r) => [r.eserviceId, r]));
    const reasons: string[] = [];
    const configured = new Set<string>();
    for (const es of config.eservices) {
      configured.add(es.id);
      const row = rows.get(es.id);
      if (!row) continue;
      const alert = retentionAlert(row.lastPullAt, row.createdAt, now, config);
      this.deps.metrics.retentionMargin.set({ eservice: es.id }, alert.marginSeconds);
      const previous = this.levels.get(es.id);
      this.levels.set(es.id, alert.level);
      const fields = { eservice: es.id, eserviceName: es.name, retentionLevel: alert.level, ageSeconds: alert.ageSeconds, marginSeconds: alert.marginSeconds, since: alert.since, sinceAt: alert.sinceAt };
      if (alert.level !== previous) {
        if (alert.level === 'critical') this.deps.logger.error(fields, `e-service ${es.name} is CRITICAL: ${alert.message}`);
        else if (alert.level === 'stale') this.deps.logger.warn(fields, `e-service ${es.name} is stale: ${alert.message}`);
        else if (previous !== undefined) this.deps.logger.info(fields, `e-service ${es.name} pulled again: no longer ${previous}`);
      }
      if (alert.message) reasons.push(`e-service ${es.name} (${es.id}) ${alert.level === 'critical' ? 'CRITICAL' : 'stale'}: ${alert.message}`);
      const forbidden = forbiddenState(row.lastErrorCode, row.lastError);
      if (forbidden) reasons.push(`e-service ${es.name} (${es.id}) refused by the hub (403, ${forbidden.reason}): ${forbidden.fix}`);
    }
    // E-services removed by a reload: forget them, so that re-adding one logs its level again.
    for (const id of [...this.levels.keys()]) {
      if (!configured.has(id)) {
        this.levels.delete(id);
        this.deps.metrics.retentionMargin.remove({ eservice: id });
      }
    }
    return reasons;
  }
}
