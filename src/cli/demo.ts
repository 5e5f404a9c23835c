import type { Command } from 'commander';
import { startDaemon, type Daemon } from '../daemon/daemon.js';
import { createDemoWorld, demoBanner, startFeeder, type Feeder } from '../daemon/demo.js';
import { SystemdNotifier } from '../daemon/notify.js';
import { installSignalHandlers } from '../daemon/shutdown.js';
import { EXIT } from '../errors.js';
import { createLogger } from '../log.js';
import { action, globalOptions } from './common.js';
import { integerArg } from './status.js';

interface DemoOptions {
  dir?: string;
  duration?: number;
}

const ROTATE_AFTER_SECONDS = 12;

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('see the product work in a minute, without PDND credentials: a simulated Signal Hub, the daemon, and a stream of signals whose matches are printed as they arrive')
    .option('--dir <path>', 'keep the demo state (database, generated keys) in this directory instead of a temporary one')
    .option('--duration <seconds>', 'stop by itself after this many seconds (default: run until Ctrl-C)', integerArg(1))
    .action(
      action(async (opts: DemoOptions, cmd: Command) => {
        // Warnings only on stderr: the terminal is for the events.
        const logger = createLogger({ level: globalOptions(cmd).logLevel ?? 'warn', destination: 'stderr' });
        const print = (line: string): void => {
          process.stdout.write(`${line}\n`);
        };
        const world = await createDemoWorld({ ...(opts.dir !== undefined ? { dir: opts.dir } : {}), logger });
        let daemon: Daemon | undefined;
        let feeder: Feeder | undefined;
        const handlers = installSignalHandlers({
          timeoutMs: world.config.daemon.shutdownTimeoutSeconds * 1000,
          logger,
          onStop: async () => {
            feeder?.stop();
            await daemon?.stop();
            await world.close();
            const stats = feeder?.stats();
            const delivered = daemon ? (await daemon.metrics.eventsDelivered.get()).values.reduce((n, v) => n + v.value, 0) : 0;
            if (stats) {
              const late = delivered < stats.ours ? ' (signals deposited in the last seconds were not pulled yet)' : '';
              print(`\ndemo stopped: ${stats.deposited} signals deposited (${stats.ours} about our subjects), ${stats.rotations} seed rotation(s); ${delivered} events delivered${late}.`);
            }
          },
          // A closed terminal sends SIGHUP: end the demo rather than run on without one.
          onReload: () => {
            void handlers.requestStop();
          },
        });
        try {
          process.stdout.write(demoBanner(world, { rotateAfterSeconds: ROTATE_AFTER_SECONDS }));
          daemon = await startDaemon({
            config: world.config,
            configFile: world.configFile,
            logger,
            keepLogLevel: true,
            // The demo is never a systemd service, even when started from one.
            notifier: new SystemdNotifier({ env: {} }),
          });
          feeder = startFeeder({ sim: world.sim, config: world.config, subjects: world.subjects, print, rotateAfterMs: ROTATE_AFTER_SECONDS * 1000 });
        } catch (err) {
          handlers.uninstall();
          feeder?.stop();
          await daemon?.stop();
          await world.close();
          throw err;
        }
        if (opts.duration !== undefined) setTimeout(() => void handlers.requestStop(), opts.duration * 1000);
        await handlers.stopped;
        return EXIT.OK;
      }),
    );
}
