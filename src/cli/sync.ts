import type { Command } from 'commander';
import { EXIT, AppError } from '../errors.js';
import { Metrics } from '../metrics.js';
import { DeliveryService } from '../sinks/delivery.js';
import { catchUpAll, catchUpExitCode, describeFailure } from '../sync/catchup.js';
import { closeRemotes, createEngine, createRemotes } from '../sync/runtime.js';
import { action, cliLogger, loadCliConfig } from './common.js';
import { resolveEService } from './status.js';
import { openWriter } from './db.js';
import { DeadLetterStore } from '../store/dead-letters.js';
import { ResyncStore } from '../store/resync.js';

interface SyncOptions {
  once?: boolean;
  eservice?: string[];
  deliver: boolean;
  json?: boolean;
}

export function registerSync(program: Command): void {
  program
    .command('sync')
    .description('Catch-up run: sync every e-service until the hub has nothing more, deliver pending events to the sinks, exit')
    .option('--once', 'required: run once and exit (the daemon is "run")')
    .option('--eservice <id-or-name>', 'only this e-service, by id or configured name (repeatable)', (v: string, acc: string[] = []) => [...acc, v])
    .option('--no-deliver', 'do not deliver pending events to the sinks')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExit codes: 0 all synced and delivered; 3 some e-services failed or events left undelivered; 69 a sink is stopped on a refusal (or the hub or producer unavailable); 64 usage; 75 database in use by the daemon; 77 not authorized (401/403); 78 configuration error.')
    .action(
      action(async (opts: SyncOptions, cmd: Command) => {
        if (!opts.once) throw new AppError('USAGE', 'sync needs --once (the long-running daemon is "signalhub-sync run")');
        const config = await loadCliConfig(cmd, { needsSecrets: true });
        const logger = cliLogger(cmd, config);
        // Resolved before the database is opened: a typo is a usage error (64) that touches nothing.
        // An e-service named twice (by id and by name) is synced once.
        const ids = opts.eservice ? [...new Set(opts.eservice.map((ref) => resolveEService(config, ref).id))] : config.eservices.map((e) => e.id);
        const store = openWriter(config, 'sync --once');
        const abort = new AbortController();
        const onSignal = () => {
          if (abort.signal.aborted) process.exit(EXIT.TEMPFAIL);
          logger.info('stopping after the current page');
          abort.abort();
        };
        process.on('SIGTERM', onSignal).on('SIGINT', onSignal);
        const metrics = new Metrics();
        const remotes = createRemotes(config, { logger, metrics });
        // What this run adds that needs a person: resync reports and dead letters.
        const startedAt = Date.now();
        const lastReportBefore = Math.max(0, ...new ResyncStore(store.db).list({ includeAcked: true }).map((r) => r.id));
        try {
          const engine = createEngine(config, store.db, remotes, { logger, metrics });
          const results = await catchUpAll(engine, ids, { concurrency: config.daemon.concurrency, signal: abort.signal });
          let deliveryComplete = true;
          let delivery;
          if (opts.deliver && config.sinks.length > 0 && !abort.signal.aborted) {
            const service = new DeliveryService({ db: store.db, sinks: config.sinks, batchSize: config.outbox.deliveryBatchSize, metrics, logger });
            try {
              delivery = await service.drain({ signal: abort.signal });
            } finally {
              // Closes the sinks (webhook connections) even when the drain throws.
              await service.stop(1000);
            }
            deliveryComplete = delivery.complete;
          }
          const summary = results.map((r) => ({
            eserviceId: r.eserviceId,
            ok: r.error === undefined,
            ...(r.outcome ? { pages: r.outcome.pages, signals: r.outcome.signals, matches: r.outcome.matches, skipped: r.outcome.skipped, cursor: r.outcome.cursor, caughtUp: r.outcome.caughtUp } : {}),
            ...(r.error !== undefined ? { error: describeFailure(r.error) } : {}),
          }));
          const newReports = new ResyncStore(store.db).list({ includeAcked: true }).filter((r) => r.id > lastReportBefore);
          const newDeadLetters = new DeadLetterStore(store.db).countSince(startedAt);
          const stopped = (delivery?.sinks ?? []).filter((d) => d.state === 'stopped');
          if (opts.json) {
            process.stdout.write(
              `${JSON.stringify({
                eservices: summary,
                delivery: delivery?.sinks ?? [],
                newResyncReports: newReports.map((r) => ({ id: r.id, eserviceId: r.eserviceId, fromSignalId: r.fromSignalId, toSignalId: r.toSignalId, reason: r.reason })),
                newDeadLetters,
              })}\n`,
            );
          } else {
            for (const s of summary) {
              process.stdout.write(s.ok ? `${s.eserviceId}: ${s.signals} signals, ${s.matches} matches${s.skipped ? `, ${s.skipped} skipped (see status)` : ''}, cursor ${s.cursor}${s.caughtUp ? '' : ' (interrupted)'}\n` : `${s.eserviceId}: FAILED ${s.error}\n`);
            }
            for (const d of delivery?.sinks ?? []) {
              const aside = d.deadLettered ? `, ${d.deadLettered} set aside as dead letters` : '';
              process.stdout.write(`sink ${d.name}: ${d.state === 'stopped' ? 'STOPPED, ' : ''}delivered ${d.delivered}${aside}, pending ${d.pending}${d.error ? `, ${d.error}` : ''}\n`);
            }
            if (newReports.length > 0) {
              process.stdout.write(`new resync reports: ${newReports.map((r) => `#${r.id} (${r.eserviceId} signals ${r.fromSignalId}..${r.toSignalId}, ${r.reason})`).join(', ')}: see "signalhub-sync resync list"\n`);
            }
            if (newDeadLetters > 0) process.stdout.write(`new dead letters: ${newDeadLetters}: see "signalhub-sync sinks dead-letters list"\n`);
          }
          if (abort.signal.aborted) return EXIT.TEMPFAIL;
          const code = catchUpExitCode(results);
          // A stopped sink needs an operator: a timer running sync --once must see it fail.
          if (code === EXIT.OK && stopped.length > 0) return EXIT.UNAVAILABLE;
          return code === EXIT.OK && !deliveryComplete ? EXIT.PARTIAL : code;
        } finally {
          process.off('SIGTERM', onSignal).off('SIGINT', onSignal);
          await closeRemotes(remotes);
          store.close();
        }
      }),
    );
}
