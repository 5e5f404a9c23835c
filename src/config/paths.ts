import path from 'node:path';

/**
 * Where relative paths of a config file point. Secrets may also come from systemd's
 * LoadCredential= (`$CREDENTIALS_DIRECTORY`), data from StateDirectory= (`$STATE_DIRECTORY`).
 */
export interface PathContext {
  /** Absolute folder of the config file. */
  configDir: string;
  env: NodeJS.ProcessEnv;
}

/**
 * A secret file (private key, HMAC secret, CA bundle): absolute stays; a bare name (no `/`)
 * is a systemd credential when `$CREDENTIALS_DIRECTORY` is set; otherwise relative to the config folder.
 */
export function resolveSecretPath(value: string, ctx: PathContext): string {
  if (path.isAbsolute(value)) return path.normalize(value);
  const credentials = ctx.env.CREDENTIALS_DIRECTORY;
  if (credentials && !value.includes('/')) return path.join(credentials, value);
  return path.resolve(ctx.configDir, value);
}

/** A data file (database, NDJSON output): absolute stays, relative is against the config folder. */
export function resolveDataPath(value: string, ctx: PathContext): string {
  return path.isAbsolute(value) ? path.normalize(value) : path.resolve(ctx.configDir, value);
}

export const DATABASE_FILE_NAME = 'signalhub-sync.db';

/** `$STATE_DIRECTORY/signalhub-sync.db` under systemd (first entry if several), else /var/lib/signalhub-sync/. */
export function defaultDatabasePath(env: NodeJS.ProcessEnv): string {
  const state = env.STATE_DIRECTORY?.split(':').find((dir) => dir !== '');
  return path.join(state ?? '/var/lib/signalhub-sync', DATABASE_FILE_NAME);
}
