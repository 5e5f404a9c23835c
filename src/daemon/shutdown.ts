import os from 'node:os';
import { EXIT, errorLogFields } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';

export interface SignalHandlerOptions {
  /** Graceful stop: no new pulls, finish the running transaction, flush sinks. */
  onStop: (signal: NodeJS.Signals | 'request') => Promise<void>;
  /** SIGHUP: reload the config and reopen sink files. Overlapping SIGHUPs are merged. */
  onReload?: () => Promise<void> | void;
  /** Longest graceful stop before the process is forced out (`daemon.shutdownTimeoutSeconds`). */
  timeoutMs: number;
  logger?: Logger;
  /** How the process ends; process.exit by default (tests of this module run it in a child). */
  exit?: (code: number) => void;
}

export interface SignalHandlers {
  /** Starts the same graceful stop as SIGTERM (e.g. after a fatal error); idempotent. */
  requestStop(): Promise<void>;
  /** Resolves when the graceful stop has finished (before exit is called). */
  readonly stopped: Promise<void>;
  uninstall(): void;
}

/** The exit code of a stop that did not finish within timeoutMs. */
export const EXIT_SHUTDOWN_TIMEOUT = EXIT.SOFTWARE;

/**
 * SIGTERM/SIGINT: graceful stop, bounded by timeoutMs, then exit 0 (or EXIT_SHUTDOWN_TIMEOUT
 * when forced by the timeout). A second SIGTERM/SIGINT during the stop exits at once with
 * 128 + signal number, as a shell would report it. SIGHUP: reload.
 */
export function installSignalHandlers(options: SignalHandlerOptions): SignalHandlers {
  const logger = options.logger ?? silentLogger;
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let stopping: Promise<void> | undefined;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
  let reloading: Promise<void> | undefined;
  let reloadAgain = false;

  const stop = (signal: NodeJS.Signals | 'request'): Promise<void> => {
    if (stopping) return stopping;
    logger.info({ signal, timeoutSeconds: options.timeoutMs / 1000 }, 'stopping gracefully');
    const timer = setTimeout(() => {
      logger.error({ timeoutSeconds: options.timeoutMs / 1000 }, 'graceful stop did not finish in time: forcing exit');
      exit(EXIT_SHUTDOWN_TIMEOUT);
    }, options.timeoutMs);
    stopping = (async () => {
      let code: number = EXIT.OK;
      try {
        await options.onStop(signal);
        logger.info('stopped');
      } catch (err) {
        logger.error({ ...errorLogFields(err) }, 'graceful stop failed');
        code = EXIT.SOFTWARE;
      } finally {
        clearTimeout(timer);
      }
      resolveStopped();
      // One turn of the loop so that whoever awaits `stopped` runs before the process ends.
      await new Promise((resolve) => setImmediate(resolve));
      exit(code);
    })();
    return stopping;
  };

  const onTerminate = (signal: NodeJS.Signals): void => {
    if (stopping) {
      const signo = os.constants.signals[signal as keyof typeof os.constants.signals] ?? 15;
      logger.warn({ signal }, 'second stop signal: exiting at once');
      exit(128 + signo);
      return;
    }
    void stop(signal);
  };

  const runReload = async (): Promise<void> => {
    do {
      reloadAgain = false;
      try {
        logger.info('reloading (SIGHUP)');
        await options.onReload?.();
      } catch (err) {
        logger.error({ ...errorLogFields(err) }, 'reload failed: keeping the running configuration');
      }
    } while (reloadAgain && !stopping);
  };

  const onHangup = (): void => {
    if (stopping) return;
    if (!options.onReload) {
      logger.info('SIGHUP ignored: nothing to reload');
      return;
    }
    if (reloading) {
      reloadAgain = true;
      return;
    }
    reloading = runReload().finally(() => (reloading = undefined));
  };

  process.on('SIGTERM', onTerminate);
  process.on('SIGINT', onTerminate);
  process.on('SIGHUP', onHangup);

  return {
    requestStop: () => stop('request'),
    stopped,
    uninstall: () => {
      process.off('SIGTERM', onTerminate);
      process.off('SIGINT', onTerminate);
      process.off('SIGHUP', onHangup);
    },
  };
}
