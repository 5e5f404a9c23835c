/**
 * Errors are values with a stable `code`. Every error that crosses a module boundary is an
 * AppError (or a subclass); `exitCodeFor` and `errorLogFields` are the one place where codes
 * become process exit codes and log fields.
 *
 * Messages must never contain secrets (keys, seeds, vouchers) or subject keys (fiscal codes):
 * name the config key, the file and line, the HTTP status and correlationId instead.
 */

/** Exit codes, after sysexits(3) where one fits. */
export const EXIT = {
  OK: 0,
  /** `status`: shown, but an e-service is failing, stale or blocked (README "Status and its exit code"). */
  UNHEALTHY: 1,
  /** `sync --once`: some e-services synced, others failed. */
  PARTIAL: 3,
  USAGE: 64,
  DATAERR: 65,
  NOINPUT: 66,
  UNAVAILABLE: 69,
  SOFTWARE: 70,
  IOERR: 74,
  TEMPFAIL: 75,
  NOPERM: 77,
  CONFIG: 78,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'CONFIG_NOT_FOUND'
  | 'USAGE'
  | 'INPUT_NOT_FOUND'
  | 'INPUT_INVALID'
  | 'DB_LOCKED'
  | 'DB_NOT_INITIALIZED'
  | 'DB_ERROR'
  /** SQLITE_FULL: the disk or the database's page limit is full. */
  | 'DB_FULL'
  | 'TOKEN_REJECTED'
  | 'TOKEN_UNAVAILABLE'
  | 'HUB_BAD_REQUEST'
  | 'HUB_UNAUTHORIZED'
  | 'HUB_FORBIDDEN'
  | 'HUB_RATE_LIMITED'
  | 'HUB_UNAVAILABLE'
  | 'HUB_BAD_RESPONSE'
  | 'CRYPTO_NOT_FOUND'
  | 'CRYPTO_UNAUTHORIZED'
  | 'CRYPTO_UNAVAILABLE'
  | 'CRYPTO_BAD_RESPONSE'
  | 'UNSUPPORTED_ALGORITHM'
  | 'SINK_FAILED'
  | 'SINK_REJECTED'
  | 'SHUTTING_DOWN'
  | 'QUEUED_NOT_APPLIED'
  | 'INTERNAL';

export interface AppErrorOptions {
  cause?: unknown;
  /** HTTP status of the remote answer that caused this error, if any. */
  status?: number;
  /** PDND / Signal Hub correlationId of the failed request, if any. */
  correlationId?: string;
  /** Problem codes (`errors[].code`) of a problem+json body. */
  problemCodes?: string[];
  /** Whether retrying the same operation later can succeed. */
  retryable?: boolean;
  /** Extra structured, non-secret fields for logs. */
  details?: Record<string, unknown>;
}

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number | undefined;
  readonly correlationId: string | undefined;
  readonly problemCodes: string[] | undefined;
  readonly retryable: boolean;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: AppErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.status = options.status;
    this.correlationId = options.correlationId;
    this.problemCodes = options.problemCodes;
    this.retryable = options.retryable ?? false;
    this.details = options.details;
  }
}

/** A config file that cannot be used: every problem, each with its key path. */
export class ConfigError extends AppError {
  readonly problems: ConfigProblem[];
  constructor(file: string, problems: ConfigProblem[]) {
    super(
      'CONFIG_INVALID',
      `${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n` +
        problems.map((p) => `  ${p.path || '(root)'}: ${p.message}`).join('\n'),
      { details: { file } },
    );
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export interface ConfigProblem {
  /** Key path such as `eservices[1].purpose_id`; empty for the whole file. */
  path: string;
  message: string;
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}

const EXIT_BY_CODE: Record<ErrorCode, ExitCode> = {
  CONFIG_INVALID: EXIT.CONFIG,
  CONFIG_NOT_FOUND: EXIT.CONFIG,
  USAGE: EXIT.USAGE,
  INPUT_NOT_FOUND: EXIT.NOINPUT,
  INPUT_INVALID: EXIT.DATAERR,
  DB_LOCKED: EXIT.TEMPFAIL,
  DB_NOT_INITIALIZED: EXIT.NOINPUT,
  DB_ERROR: EXIT.IOERR,
  DB_FULL: EXIT.IOERR,
  TOKEN_REJECTED: EXIT.NOPERM,
  TOKEN_UNAVAILABLE: EXIT.UNAVAILABLE,
  HUB_BAD_REQUEST: EXIT.SOFTWARE,
  HUB_UNAUTHORIZED: EXIT.NOPERM,
  HUB_FORBIDDEN: EXIT.NOPERM,
  HUB_RATE_LIMITED: EXIT.UNAVAILABLE,
  HUB_UNAVAILABLE: EXIT.UNAVAILABLE,
  HUB_BAD_RESPONSE: EXIT.UNAVAILABLE,
  CRYPTO_NOT_FOUND: EXIT.UNAVAILABLE,
  CRYPTO_UNAUTHORIZED: EXIT.NOPERM,
  CRYPTO_UNAVAILABLE: EXIT.UNAVAILABLE,
  CRYPTO_BAD_RESPONSE: EXIT.UNAVAILABLE,
  UNSUPPORTED_ALGORITHM: EXIT.CONFIG,
  SINK_FAILED: EXIT.UNAVAILABLE,
  SINK_REJECTED: EXIT.UNAVAILABLE,
  SHUTTING_DOWN: EXIT.OK,
  QUEUED_NOT_APPLIED: EXIT.TEMPFAIL,
  INTERNAL: EXIT.SOFTWARE,
};

export function exitCodeFor(err: unknown): ExitCode {
  return isAppError(err) ? EXIT_BY_CODE[err.code] : EXIT.SOFTWARE;
}

/** Structured log fields for an error: code, status, correlationId; never a stack of secrets. */
export function errorLogFields(err: unknown): Record<string, unknown> {
  if (isAppError(err)) {
    const fields: Record<string, unknown> = { code: err.code, message: err.message };
    if (err.status !== undefined) fields.status = err.status;
    if (err.correlationId !== undefined) fields.correlationId = err.correlationId;
    if (err.problemCodes !== undefined) fields.problemCodes = err.problemCodes;
    if (err.details !== undefined) Object.assign(fields, err.details);
    return { err: fields };
  }
  if (err instanceof Error) return { err: { code: 'INTERNAL', message: err.message, stack: err.stack } };
  return { err: { code: 'INTERNAL', message: String(err) } };
}

/**
 * The most specific code in an error's cause chain: the system or library code of the failure
 * underneath (ECONNREFUSED, ENOTFOUND, UND_ERR_HEADERS_TIMEOUT, a certificate code), else the
 * error's own code. What an operator greps for when a retry warning repeats.
 */
export function rootCauseCode(err: unknown): string | undefined {
  let found: string | undefined;
  let current: unknown = err;
  for (let depth = 0; depth < 8 && typeof current === 'object' && current !== null; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && code !== '') found = code;
    current = (current as { cause?: unknown }).cause;
  }
  return found;
}

/** Fields of every "…, retrying" warning: which attempt failed, how many remain, and why (code, cause, status). */
export function retryLogFields(err: unknown, attempt: number, retriesLeft: number): Record<string, unknown> {
  const fields: Record<string, unknown> = { attempt, retriesLeft };
  if (isAppError(err)) {
    fields.code = err.code;
    if (err.status !== undefined) fields.status = err.status;
    if (err.correlationId !== undefined) fields.correlationId = err.correlationId;
  }
  const cause = rootCauseCode(err);
  fields.cause = cause !== undefined && cause !== fields.code ? cause : err instanceof Error ? err.message : String(err);
  return fields;
}
