import { createRequire } from 'node:module';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const VERSION = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

/**
 * Every metric the daemon exports, in one registry. Modules receive a `Metrics` in their
 * options and record into it; the HTTP endpoint (daemon/http.ts) serves `registry.metrics()`.
 * Labels carry e-service ids, sink names and tenant ids only: never personal data.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly pulls = new Counter({ name: 'signalhub_pulls_total', help: 'Signal Hub pull requests by e-service and HTTP status (or "error" for network failures)', labelNames: ['eservice', 'status'] as const, registers: [this.registry] });
  readonly signalsSeen = new Counter({ name: 'signalhub_signals_seen_total', help: 'Signals received from the hub', labelNames: ['eservice', 'signal_type'] as const, registers: [this.registry] });
  readonly signalsSkipped = new Counter({ name: 'signalhub_signals_skipped_total', help: 'Signals passed without matching (empty or undecodable objectId, bad objectType, ...), by reason', labelNames: ['eservice', 'reason'] as const, registers: [this.registry] });
  readonly matches = new Counter({ name: 'signalhub_matches_total', help: 'Signals that matched a local subject', labelNames: ['eservice'] as const, registers: [this.registry] });
  readonly eventsWritten = new Counter({ name: 'signalhub_events_written_total', help: 'Events written to the outbox', labelNames: ['eservice', 'kind'] as const, registers: [this.registry] });
  /** Labelled by tenant (the delegator; "" for the consumer's own subjects): tenants are configured by the operator, so the label stays bounded. */
  readonly eventsEmitted = new Counter({ name: 'signalhub_events_emitted_total', help: 'Signal events written to the outbox, by tenant (empty: the consumer\'s own subjects)', labelNames: ['tenant'] as const, registers: [this.registry] });
  readonly subjects = new Gauge({ name: 'signalhub_subjects', help: 'Stored subjects by tenant (empty: the consumer\'s own); a key shared by tenants counts once per tenant', labelNames: ['tenant'] as const, registers: [this.registry] });
  readonly eventsDelivered = new Counter({ name: 'signalhub_events_delivered_total', help: 'Events confirmed by a sink', labelNames: ['sink'] as const, registers: [this.registry] });
  readonly sinkPending = new Gauge({ name: 'signalhub_sink_pending_events', help: 'Outbox events not yet confirmed by a sink', labelNames: ['sink'] as const, registers: [this.registry] });
  readonly sinkStopped = new Gauge({ name: 'signalhub_sink_stopped', help: '1 when a sink stopped on a permanent error and waits for "sinks retry"', labelNames: ['sink'] as const, registers: [this.registry] });
  readonly deadLetters = new Counter({ name: 'signalhub_sink_dead_letters_total', help: 'Events a receiver refused for good, set aside as dead letters (on_reject = "dead-letter")', labelNames: ['sink'] as const, registers: [this.registry] });
  readonly sinkFailures = new Counter({ name: 'signalhub_sink_failures_total', help: 'Failed delivery attempts', labelNames: ['sink'] as const, registers: [this.registry] });
  readonly cursor = new Gauge({ name: 'signalhub_cursor_signal_id', help: 'Last processed signalId per e-service', labelNames: ['eservice'] as const, registers: [this.registry] });
  readonly lastSuccessfulPull = new Gauge({ name: 'signalhub_last_successful_pull_timestamp_seconds', help: 'Unix time of the last successful pull per e-service', labelNames: ['eservice'] as const, registers: [this.registry] });
  readonly secondsSinceLastPull = new Gauge({ name: 'signalhub_seconds_since_last_successful_pull', help: 'Seconds since the last successful pull per e-service', labelNames: ['eservice'] as const, registers: [this.registry] });
  readonly reseedSeconds = new Histogram({ name: 'signalhub_reseed_duration_seconds', help: 'Time to compute the pseudonyms of all subjects for a new seed epoch', labelNames: ['eservice'] as const, buckets: [0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120], registers: [this.registry] });
  readonly reseedProgress = new Gauge({ name: 'signalhub_reseed_progress', help: 'Fraction (0 to 1) of the subjects whose pseudonyms the running reseed of the e-service has computed; 1 when none runs', labelNames: ['eservice'] as const, registers: [this.registry] });
  readonly voucherRefreshes = new Counter({ name: 'signalhub_voucher_refreshes_total', help: 'Vouchers obtained from the PDND token endpoint', labelNames: ['kind', 'outcome'] as const, registers: [this.registry] });
  readonly rateLimitRemaining = new Gauge({ name: 'signalhub_rate_limit_remaining', help: 'X-Rate-Limit-Remaining of the last hub answer', registers: [this.registry] });
  readonly rateLimited = new Counter({ name: 'signalhub_rate_limited_total', help: '429 answers from the hub', registers: [this.registry] });
  readonly resyncOpen = new Gauge({ name: 'signalhub_resync_reports_open', help: 'Resync reports not yet acknowledged', labelNames: ['eservice'] as const, registers: [this.registry] });
  // ---- warnings before data is lost (alerts.*) ----
  readonly retentionMargin = new Gauge({ name: 'signalhub_retention_margin_seconds', help: 'Seconds before the hub starts deleting signals this consumer has not pulled yet: hub.retention_days minus the age of the last successful pull (negative: some are lost)', labelNames: ['eservice'] as const, registers: [this.registry] });
  readonly eserviceUp = new Gauge({ name: 'signalhub_eservice_healthy', help: '1 when the last sync attempt of the e-service succeeded', labelNames: ['eservice'] as const, registers: [this.registry] });

  // --- Operator metrics (issue 15) ---
  readonly buildInfo = new Gauge({ name: 'signalhub_build_info', help: 'Always 1; labels: the running signalhub-sync and Node.js versions', labelNames: ['version', 'node'] as const, registers: [this.registry] });
  /**
   * The configured name of each e-service, joined to any per-e-service series with
   * `* on(eservice) group_left(name) signalhub_eservice_info`: one place for a name that may
   * change on reload, rather than a second label on every series (a rename would split them).
   */
  readonly eserviceInfo = new Gauge({ name: 'signalhub_eservice_info', help: 'Always 1; labels: e-service id and its configured name', labelNames: ['eservice', 'name'] as const, registers: [this.registry] });
  readonly pullDuration = new Histogram({ name: 'signalhub_pull_duration_seconds', help: 'Duration of one Signal Hub pull request (after the rate limiter), by e-service and HTTP status ("error": no answer)', labelNames: ['eservice', 'status'] as const, buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [this.registry] });
  readonly caughtUp = new Gauge({ name: 'signalhub_eservice_caught_up', help: '1 when the last successful sync run of the e-service reached the end of its signals (hub answered 200)', labelNames: ['eservice'] as const, registers: [this.registry] });
  readonly sinkOldestPendingAge = new Gauge({ name: 'signalhub_sink_oldest_pending_event_age_seconds', help: 'Age of the oldest outbox event a sink has not confirmed (0: none pending)', labelNames: ['sink'] as const, registers: [this.registry] });

  constructor() {
    // process_* (CPU, memory, file descriptors) and nodejs_* (heap, GC, event-loop lag, handles).
    collectDefaultMetrics({ register: this.registry });
    this.buildInfo.set({ version: VERSION, node: process.version }, 1);
  }
}
