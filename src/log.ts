import fs from 'node:fs';
import tty from 'node:tty';
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
  /** Environment for JOURNAL_STREAM and SIGNALHUB_SYNC_LOG_FORMAT. Default process.env. */
  env?: NodeJS.ProcessEnv;
}

/**
 * How records are written to a file descriptor:
 * - `journal`: JSON lines prefixed with their syslog priority (`<3>` error … `<7>` debug), which
 *   journald strips and stores as PRIORITY, so `journalctl -p err` finds errors;
 * - `pretty`: one readable line per record, for a person at a terminal;
 * - `json`: plain JSON lines (pipes, files, log shippers).
 */
export type LogFormat = 'journal' | 'pretty' | 'json';

/**
 * Chooses the format for `fd`: SIGNALHUB_SYNC_LOG_FORMAT (json|pretty|journal) wins; else
 * `journal` when systemd connected this very descriptor to the journal (JOURNAL_STREAM is
 * "<device>:<inode>" of the stream socket, and it is inherited by children whose stderr may go
 * elsewhere, hence the comparison); else `pretty` on a terminal; else `json`.
 */
export function logFormatFor(fd: number, env: NodeJS.ProcessEnv = process.env): LogFormat {
  const forced = env.SIGNALHUB_SYNC_LOG_FORMAT;
  if (forced === 'json' || forced === 'pretty' || forced === 'journal') return forced;
  if (env.JOURNAL_STREAM && isJournalStream(fd, env.JOURNAL_STREAM)) return 'journal';
  return tty.isatty(fd) ? 'pretty' : 'json';
}

function isJournalStream(fd: number, journalStream: string): boolean {
  const match = /^(\d+):(\d+)$/.exec(journalStream.trim());
  if (!match) return false;
  try {
    const stat = fs.fstatSync(fd, { bigint: true });
    return stat.dev === BigInt(match[1]!) && stat.ino === BigInt(match[2]!);
  } catch {
    return false;
  }
}

/** `<3>` before a plain-text error line on stderr when stderr is the journal (the CLI's last word on a failure), else ''. */
export function stderrErrorPrefix(env: NodeJS.ProcessEnv = process.env): string {
  return logFormatFor(2, env) === 'journal' ? '<3>' : '';
}

/** syslog(3) priority of each pino level: fatal is crit (2), error err (3) … trace and debug debug (7). */
export const SYSLOG_PRIORITY: Record<string, number> = { fatal: 2, error: 3, warn: 4, info: 6, debug: 7, trace: 7 };

/** pino writes `{"level":"<label>",…` first (formatters.level below): the label, without parsing the line. */
const LEADING_LEVEL = /^\{"level":"([a-z]+)"/;

/** Prefixes every JSON line with `<priority>` for journald (sd-daemon(3) SyslogLevelPrefix). */
function journalStream(fd: number): { write(line: string): boolean } {
  const out = pino.destination({ fd, sync: true });
  return {
    write(line: string): boolean {
      const priority = SYSLOG_PRIORITY[LEADING_LEVEL.exec(line)?.[1] ?? ''] ?? 6;
      return out.write(`<${priority}>${line}`);
    },
  };
}

const STANDARD_FIELDS = new Set(['level', 'time', 'msg', 'service', 'pid', 'hostname']);

/**
 * One record as a person reads it: `12:04:05.123 WARN  message key=value …`; nested values
 * (err) stay compact JSON. Redaction has already happened: this only reformats pino's output.
 */
export function prettyLine(line: string): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.endsWith('\n') ? line : `${line}\n`;
  }
  const time = typeof record.time === 'string' ? record.time.slice(11, 23) : '';
  const level = String(record.level ?? '').toUpperCase().padEnd(5);
  const fields = Object.entries(record)
    .filter(([k]) => !STANDARD_FIELDS.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/[\s"=]/.test(v) ? v : JSON.stringify(v)}`);
  return `${time} ${level} ${String(record.msg ?? '')}${fields.length > 0 ? ` ${fields.join(' ')}` : ''}\n`;
}

function prettyStream(fd: number): { write(line: string): boolean } {
  const out = pino.destination({ fd, sync: true });
  return { write: (line: string) => out.write(prettyLine(line)) };
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const dest = options.destination ?? 'stderr';
  const stream = typeof dest === 'string' ? streamFor(dest === 'stdout' ? 1 : 2, options.env ?? process.env) : dest;
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

function streamFor(fd: number, env: NodeJS.ProcessEnv): pino.DestinationStream {
  switch (logFormatFor(fd, env)) {
    case 'journal':
      return journalStream(fd);
    case 'pretty':
      return prettyStream(fd);
    case 'json':
      return pino.destination({ fd, sync: true });
  }
}

/** A logger that drops everything: the default for library code called without one. */
export const silentLogger: Logger = pino({ level: 'silent' });
