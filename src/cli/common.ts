import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { errorLogFields, exitCodeFor, isAppError, ConfigError, EXIT } from '../errors.js';
import { createLogger, stderrErrorPrefix, type Logger } from '../log.js';
import type { Config, LogLevel } from '../config/types.js';
import { loadConfig } from '../config/load.js';

/** Options every command inherits from the program. */
export interface GlobalOptions {
  config?: string;
  logLevel?: LogLevel;
}

export const DEFAULT_CONFIG_PATH = '/etc/signalhub-sync/config.toml';

export function configPath(opts: GlobalOptions): string {
  return opts.config ?? process.env.SIGNALHUB_SYNC_CONFIG ?? DEFAULT_CONFIG_PATH;
}

export function globalOptions(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}

/**
 * Loads the config named by --config / $SIGNALHUB_SYNC_CONFIG / the default path. Only commands
 * that call PDND or deliver to sinks (`run`, `sync`, `config check`) pass `needsSecrets`: the
 * others never open a key, so an operator can run them on the host whatever user can read the
 * keys (README "Who runs what").
 */
export async function loadCliConfig(cmd: Command, { needsSecrets = false, asDatabaseOwner = true }: { needsSecrets?: boolean; asDatabaseOwner?: boolean } = {}): Promise<Config> {
  const config = await loadConfig(configPath(globalOptions(cmd)), { checkSecrets: needsSecrets });
  if (asDatabaseOwner) actAsDatabaseOwner(config.database);
  return config;
}

/**
 * root running the CLI acts as the owner of the database's folder (the service user): files it
 * creates there (the database, its -wal/-shm, the lock, a queued import in the inbox) then
 * belong to the daemon's user, which could not read or write root's 0600 files. Keys are
 * loaded before, while still root. Anyone else runs as themselves; permissions decide.
 */
export function actAsDatabaseOwner(database: string): void {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0 || !process.setuid || !process.setgid) return;
  let owner: fs.Stats;
  try {
    owner = fs.statSync(path.dirname(database));
  } catch {
    return;
  }
  if (owner.uid === 0) return;
  process.setgroups?.([owner.gid]);
  process.setgid(owner.gid);
  process.setuid(owner.uid);
}

export function cliLogger(cmd: Command, config?: Config): Logger {
  const opts = globalOptions(cmd);
  return createLogger({ level: opts.logLevel ?? config?.log.level ?? 'info', destination: config?.log.destination ?? 'stderr' });
}

/**
 * Wraps a command action: turns a thrown error into one clear message on stderr and the
 * process exit code of errors.ts. Never prints a stack for expected (AppError) failures.
 */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<number | void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      const code = await fn(...args);
      process.exitCode = code ?? EXIT.OK;
    } catch (err) {
      reportError(err);
      process.exitCode = exitCodeFor(err);
    }
  };
}

export function reportError(err: unknown): void {
  if (err instanceof ConfigError) {
    process.stderr.write(`${stderrErrorPrefix()}signalhub-sync: invalid configuration ${err.message}\n`);
  } else if (isAppError(err)) {
    const extra = [err.status !== undefined ? `status ${err.status}` : '', err.correlationId ? `correlationId ${err.correlationId}` : '']
      .filter(Boolean)
      .join(', ');
    process.stderr.write(`${stderrErrorPrefix()}signalhub-sync: ${err.code}: ${err.message}${extra ? ` (${extra})` : ''}\n`);
  } else {
    process.stderr.write(`${stderrErrorPrefix()}signalhub-sync: internal error: ${JSON.stringify(errorLogFields(err))}\n`);
  }
}
