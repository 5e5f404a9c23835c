import type { Command } from 'commander';
import { EXIT, AppError } from '../errors.js';
import { Metrics } from '../metrics.js';
import { DeliveryService } from '../sinks/delivery.js';
import { catchUpAll, catchUpExitCode, describeFailure } from '../sync/catchup.js';
import { closeRemotes, createEngine, createRemotes } from '../sync/runtime.js';
import { action, cliLogger, loadCliConfig } from './common.js';
import { openWriter } from './db.js';

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
    .option('--eservice <id>', 'only this e-service (repeatable)', (v: string, acc: string[] = []) => [...acc, v])
    .option('--no-deliver', 'do not deliver pending events to the sinks')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExit codes: 0 all synced; 3 some e-services failed; 64 usage; 69 hub or producer unavailable; 75 database in use by the daemon; 77 not authorized (401/403); 78 configuration error.')
    .action(
      action(async (opts: SyncOptions, cmd: Command) => {
        if (!opts.once) throw new AppError('USAGE', 'sync needs --once (the long-running daemon is "signalhub-sync run")');
        const config = await loadCliConfig(cmd, { needsSecrets: true });
        const logger = cliLogger(cmd, config);
        const ids = opts.eservice ?? config.eservices.map((e) => e.id);
        for (const id of ids) {
          if (!config.eservices.some((e) => e.id === id)) throw new AppError('USAGE', `--eservice ${id}: not in the configuration`);
        }
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
            ...(r.outcome ? { pages: r.outcome.pages, signals: r.outcome.signals, matches: r.outcome.matches, cursor: r.outcome.cursor, caughtUp: r.outcome.caughtUp } : {}),
            ...(r.error !== undefined ? { error: describeFailure(r.error) } : {}),
          }));
          if (opts.json) {
            process.stdout.write(`${JSON.stringify({ eservices: summary, delivery: delivery?.sinks ?? [] })}\n`);
          } else {
            for (const s of summary) {
              process.stdout.write(s.ok ? `${s.eserviceId}: ${s.signals} signals, ${s.matches} matches, cursor ${s.cursor}${s.caughtUp ? '' : ' (interrupted)'}\n` : `${s.eserviceId}: FAILED ${s.error}\n`);
            }
            for (const d of delivery?.sinks ?? []) process.stdout.write(`sink ${d.name}: delivered ${d.delivered}, pending ${d.pending}${d.error ? `, ${d.error}` : ''}\n`);
          }
          if (abort.signal.aborted) return EXIT.TEMPFAIL;
          const code = catchUpExitCode(results);
          return code === EXIT.OK && !deliveryComplete ? EXIT.PARTIAL : code;
        } finally {
          process.off('SIGTERM', onSignal).off('SIGINT', onSignal);
          await closeRemotes(remotes);
          store.close();
        }
      }),
    );
}
