import type { Command } from 'commander';
import { loadConfig } from '../config/load.js';
import { startDaemon, type Daemon } from '../daemon/daemon.js';
import { installSignalHandlers } from '../daemon/shutdown.js';
import { EXIT } from '../errors.js';
import { action, actAsDatabaseOwner, cliLogger, configPath, globalOptions } from './common.js';

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('the daemon: sync every e-service on its poll interval and deliver events to the sinks until stopped')
    .addHelpText(
      'after',
      `
Signals: SIGTERM/SIGINT stop gracefully within daemon.shutdown_timeout_seconds (exit 0);
SIGHUP reloads the config file (an invalid file is logged and the running config kept),
reopens sink files and resumes stopped sinks. Settings such as database, pdnd, http and
daemon need a restart. With NOTIFY_SOCKET set (systemd Type=notify) it sends READY=1,
STATUS=, WATCHDOG=1 and STOPPING=1. A one-shot catch-up is "sync --once".
Exit codes: 0 stopped; 70 did not stop in time; 75 database in use; 78 configuration error.`,
    )
    .action(
      action(async (_opts: unknown, cmd: Command) => {
        const file = configPath(globalOptions(cmd));
        const config = await loadConfig(file);
        actAsDatabaseOwner(config.database);
        const logger = cliLogger(cmd, config);
        // Handlers first: a SIGTERM during startup must stop cleanly, not kill the process.
        let starting: Promise<Daemon> | undefined;
        const handlers = installSignalHandlers({
          timeoutMs: config.daemon.shutdownTimeoutSeconds * 1000,
          logger,
          onStop: async () => {
            const daemon = await starting?.catch(() => undefined);
            await daemon?.stop();
          },
          onReload: async () => {
            const daemon = await starting?.catch(() => undefined);
            await daemon?.reload();
          },
        });
        starting = startDaemon({ config, configFile: file, logger, keepLogLevel: globalOptions(cmd).logLevel !== undefined });
        try {
          await starting;
        } catch (err) {
          handlers.uninstall();
          throw err;
        }
        await handlers.stopped;
        return EXIT.OK;
      }),
    );
}
