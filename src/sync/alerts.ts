import type { Config } from '../config/types.js';
import { forbiddenReasonOf, FORBIDDEN_FIXES, type ForbiddenReason } from '../hub/errors.js';

/**
 * Warnings before data is lost (SPEC §3 retention): PDND recommends pulling every e-service at
 * least once a day, and the hub deletes signals `hub.retention_days` after insertion. An
 * e-service whose last successful pull is older than `alerts.stale_after_hours` is `stale`;
 * older than `alerts.critical_after_days`, `critical` (a few days before anything is lost);
 * older than the retention, signals have certainly been lost.
 */
export type RetentionLevel = 'ok' | 'stale' | 'critical';

export interface RetentionAlert {
  level: RetentionLevel;
  /** What the age counts from: the last successful pull, or (never pulled) when the e-service was first configured. */
  since: 'last-pull' | 'configured';
  sinceAt: string;
  ageSeconds: number;
  /** Retention − age: seconds before signals not yet pulled start being deleted (negative: some already are). */
  marginSeconds: number;
  /** One line for status, /readyz and the log; null when level is `ok`. */
  message: string | null;
}

export type AlertSettings = Pick<Config, 'alerts' | 'hub'>;

/**
 * The retention alert of one e-service at `now`. `lastPullAt` null = never pulled: the age then
 * counts from `configuredAt` (when the database first saw the e-service), so a new e-service
 * that never manages a pull is flagged on the same schedule as one that stopped pulling.
 */
export function retentionAlert(lastPullAt: number | null, configuredAt: number, now: number, settings: AlertSettings): RetentionAlert {
  const since = lastPullAt ?? configuredAt;
  const ageMs = Math.max(0, now - since);
  const ageSeconds = Math.floor(ageMs / 1000);
  const retentionMs = settings.hub.retentionDays * 86_400_000;
  const marginSeconds = Math.floor((retentionMs - ageMs) / 1000);
  const level: RetentionLevel =
    ageMs >= settings.alerts.criticalAfterDays * 86_400_000 ? 'critical' : ageMs >= settings.alerts.staleAfterHours * 3_600_000 ? 'stale' : 'ok';
  const what = lastPullAt === null ? `never pulled successfully (configured ${formatDuration(ageSeconds)} ago)` : `last successful pull ${formatDuration(ageSeconds)} ago`;
  let message: string | null = null;
  if (level === 'stale') {
    message = `${what}: older than alerts.stale_after_hours = ${settings.alerts.staleAfterHours} (PDND recommends pulling at least once a day)`;
  } else if (level === 'critical') {
    message =
      marginSeconds > 0
        ? `${what}: older than alerts.critical_after_days = ${settings.alerts.criticalAfterDays}; the hub starts deleting unpulled signals in ${formatDuration(marginSeconds)} (retention ${settings.hub.retentionDays} days)`
        : `${what}: beyond the hub's ${settings.hub.retentionDays}-day retention, signals have been lost (see "resync list" after the next pull)`;
  }
  return { level, since: lastPullAt === null ? 'configured' : 'last-pull', sinceAt: new Date(since).toISOString(), ageSeconds, marginSeconds, message };
}

/** Why the hub refuses an e-service (403), with the PDND back-office step that fixes it. */
export interface ForbiddenState {
  reason: ForbiddenReason;
  fix: string;
}

/** The 403 classification of a recorded error (code and message as the store keeps them), or null. */
export function forbiddenState(code: string | null | undefined, message: string | null | undefined): ForbiddenState | null {
  if (code !== 'HUB_FORBIDDEN') return null;
  const reason = forbiddenReasonOf(message ?? '');
  return { reason, fix: FORBIDDEN_FIXES[reason] };
}

/** 90s, 42m, 5h, 3d 4h: ages in alert lines. */
export function formatDuration(seconds: number): string {
  const s = Math.abs(seconds);
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172_800) return `${Math.floor(s / 3600)}h`;
  const days = Math.floor(s / 86_400);
  const hours = Math.floor((s % 86_400) / 3600);
  return hours > 0 ? `${days}d ${hours}h` : `${days}d`;
}
