import pino, { type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/**
 * Field names whose values are secrets or personal data. Redaction is a safety net: code must
 * not log these in the first place (tests assert it), but a future slip gets censored.
 */
export const REDACTED_PATHS = [
  'seed',
  '*.seed',
  'privateKey',
  '*.privateKey',
  'key',
  '*.key',
  'subjectKey',
  '*.subjectKey',
  'voucher',
  '*.voucher',
  'access_token',
  '*.access_token',
  'client_assertion',
  '*.client_assertion',
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'headers["agid-jwt-trackingevidence"]',
  'trackingEvidence',
  '*.trackingEvidence',
  'secret',
  '*.secret',
];

export interface LoggerOptions {
  level?: LevelWithSilent;
  /** Where log lines go. Default stderr, so that stdout stays free for data (NDJSON, --json). */
  destination?: 'stdout' | 'stderr' | NodeJS.WritableStream;
  /** Static fields added to every line. */
  base?: Record<string, unknown>;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const dest = options.destination ?? 'stderr';
  const stream =
    dest === 'stdout'
      ? pino.destination({ fd: 1, sync: true })
      : dest === 'stderr'
        ? pino.destination({ fd: 2, sync: true })
        : dest;
  return pino(
    {
      level: options.level ?? 'info',
      base: { service: 'signalhub-sync', ...(options.base ?? {}) },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
}

/** A logger that drops everything: the default for library code called without one. */
export const silentLogger: Logger = pino({ level: 'silent' });
