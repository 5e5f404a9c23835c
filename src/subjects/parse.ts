/**
 * Streaming readers of subject files. They yield one item per record, each with the file line
 * where it starts, and never hold more than the current record. They only parse: validation of
 * keys and e-services belongs to the import. Messages name lines and columns, never the values
 * of the `key` column (personal data).
 */
import { StringDecoder } from 'node:string_decoder';
import { Readable, Transform, pipeline, type TransformCallback } from 'node:stream';
import { parse as parseCsv, type CsvError } from 'csv-parse';
import { AppError } from '../errors.js';
import { normalizeSubjectKey } from '../crypto/pseudonym.js';
import { quoteSafely } from './redact.js';

export const SUBJECT_FORMATS = ['csv', 'ndjson', 'lines'] as const;
export type SubjectFormat = (typeof SUBJECT_FORMATS)[number];

/** One record as written in the file (key not yet normalized or validated). */
export interface SubjectRecord {
  kind: 'record';
  /** 1-based line where the record starts. */
  line: number;
  key: string;
  /** undefined: the file has no ref column/field (an existing subject keeps its ref). */
  ref: string | null | undefined;
  /** e-service ids or names; 'all' when empty; undefined when the file has no such column/field. */
  eservices: string[] | 'all' | undefined;
  /** The tenant (delegator) as written; undefined when the file has no such column/field or it is empty. */
  tenant?: string | undefined;
}

/** A record that cannot be read. `fatal`: the rest of the file cannot be read either. */
export interface RecordProblem {
  kind: 'problem';
  line: number;
  reason: string;
  ref?: string;
  fatal?: boolean;
}

export type SubjectFileItem = SubjectRecord | RecordProblem;

/** Picks the format from `--format` or the file extension (.csv, .ndjson/.jsonl, .txt). */
export function detectFormat(file: string, explicit?: string): SubjectFormat {
  if (explicit !== undefined) {
    if ((SUBJECT_FORMATS as readonly string[]).includes(explicit)) return explicit as SubjectFormat;
    throw new AppError('USAGE', `unknown format "${explicit}" (expected ${SUBJECT_FORMATS.join(', ')})`);
  }
  // stdin has no extension: CSV, the format public bodies' systems export most easily.
  if (file === '-') return 'csv';
  const lower = file.toLowerCase();
  if (lower.endsWith('.csv')) return 'csv';
  if (lower.endsWith('.ndjson') || lower.endsWith('.jsonl')) return 'ndjson';
  if (lower.endsWith('.txt')) return 'lines';
  throw new AppError('USAGE', `cannot tell the format of ${file} from its extension (.csv, .ndjson, .jsonl, .txt): use --format`);
}

export function readSubjectFile(input: Readable, format: SubjectFormat, source: string): AsyncGenerator<SubjectFileItem> {
  switch (format) {
    case 'csv':
      return readCsv(input, source);
    case 'ndjson':
      return readNdjson(input, source);
    case 'lines':
      return readLines(input, source);
  }
}

const CSV_COLUMNS = ['key', 'ref', 'eservices', 'tenant'] as const;
type CsvColumn = (typeof CSV_COLUMNS)[number];

/**
 * csv-parse counts lines wrongly when a quoted field holds CRLF, so line endings become LF
 * before parsing. A CR at the end of a chunk is held back until the next chunk shows whether
 * an LF follows.
 */
class CrlfToLf extends Transform {
  private pendingCr = false;
  // Chunks may split a multi-byte UTF-8 character.
  private readonly decoder = new StringDecoder('utf8');
  override _transform(chunk: Buffer | string, _enc: BufferEncoding, done: TransformCallback): void {
    let text = (this.pendingCr ? '\r' : '') + (typeof chunk === 'string' ? chunk : this.decoder.write(chunk));
    this.pendingCr = text.endsWith('\r');
    if (this.pendingCr) text = text.slice(0, -1);
    done(null, text.replaceAll('\r\n', '\n'));
  }
  override _flush(done: TransformCallback): void {
    done(null, (this.pendingCr ? '\r' : '') + this.decoder.end());
  }
}

function countNewlines(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

const CSV_FATAL_REASONS: Record<string, string> = {
  CSV_INVALID_CLOSING_QUOTE: 'malformed CSV: characters after a closing quote',
  CSV_QUOTE_NOT_CLOSED: 'malformed CSV: quote not closed',
  CSV_NON_TRIMABLE_CHAR_AFTER_CLOSING_QUOTE: 'malformed CSV: characters after a closing quote',
  CSV_MAX_RECORD_SIZE: `record longer than ${1 << 20} characters (a subject line is short: is a line break missing?)`,
};

/**
 * The field delimiter a header line uses: Excel in an Italian locale saves "CSV" with ";"
 * between fields. A header is column names only (key, ref, eservices, tenant), so a ";" in it with no
 * "," can only be the delimiter. (Inside a field, ";" still separates e-services: Excel quotes
 * such a field.)
 */
export function csvDelimiterOf(headerLine: string): ',' | ';' {
  const line = headerLine.replace(/^\uFEFF/, '');
  return line.includes(';') && !line.includes(',') ? ';' : ',';
}

/** Longest stretch read ahead to find the header line; a file without one by then is comma-separated. */
const HEADER_PEEK_CHARS = 64 * 1024;

/**
 * The decoded text of `input` as a stream, with the delimiter its header line uses: the text up
 * to the first non-blank line is read ahead, then replayed in front of the rest.
 */
async function sniffCsv(input: Readable, source: string): Promise<{ text: Readable; delimiter: ',' | ';' }> {
  const decoder = new CrlfToLf();
  // pipeline destroys the decoder with the input's error, which then ends the reads below.
  pipeline(input, decoder, () => {});
  const chunks = decoder[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>;
  const head: string[] = [];
  let headText = '';
  // Scanned once, chunk by chunk: whether a non-blank character was seen, then whether a line
  // break followed it. (A regex re-run over the growing text would be quadratic on one long line.)
  let sawText = false;
  let complete = false;
  try {
    while (headText.length < HEADER_PEEK_CHARS && !complete) {
      const next = await chunks.next();
      if (next.done) break;
      const chunk = typeof next.value === 'string' ? next.value : next.value.toString('utf8');
      head.push(chunk);
      headText += chunk;
      for (let i = 0; i < chunk.length && !complete; i++) {
        const c = chunk.charCodeAt(i);
        if (c === 10) complete = sawText;
        else if (!sawText && !/\s/.test(chunk[i]!)) sawText = true;
      }
    }
  } catch (err) {
    throw inputError(err, source);
  }
  const headerLine = headText.slice(0, HEADER_PEEK_CHARS).split('\n').find((line) => line.trim() !== '') ?? '';
  async function* replay(): AsyncGenerator<string> {
    yield* head;
    for (;;) {
      const next = await chunks.next();
      if (next.done) return;
      yield typeof next.value === 'string' ? next.value : next.value.toString('utf8');
    }
  }
  return { text: Readable.from(replay(), { objectMode: false }), delimiter: csvDelimiterOf(headerLine) };
}

async function* readCsv(input: Readable, source: string): AsyncGenerator<SubjectFileItem> {
  const { text, delimiter } = await sniffCsv(input, source);
  // Line numbers are counted here rather than with csv-parse's `info`/`raw`, which cost 5x the
  // parse time: blank lines are kept as records (and skipped below), so each record starts on
  // the line after the previous one, plus the newlines inside its quoted fields.
  // skip_records_with_error: a thrown parse error would drop the records parsed before it in
  // the same chunk. Instead the first syntax error is noted with the number of records before
  // it, and reading stops there: after broken quoting nothing can be trusted.
  const parser = parseCsv({ bom: true, delimiter, record_delimiter: '\n', relax_column_count: true, skip_records_with_error: true, max_record_size: MAX_LINE_CHARS });
  let syntaxError: { code: string; line: number | undefined; recordsBefore: number } | undefined;
  parser.on('skip', (err: CsvError) => {
    const line = err.lines;
    const recordsBefore = err.records;
    syntaxError ??= { code: err.code, line: typeof line === 'number' ? line : undefined, recordsBefore: typeof recordsBefore === 'number' ? recordsBefore : 0 };
  });
  // pipeline destroys the parser with the input's error, which then ends the loop below.
  pipeline(text, parser, () => {});

  let columns: Map<CsvColumn, number> | undefined;
  let headerLength = 0;
  let records = 0;
  let nextLine = 1;
  const fatal = (): RecordProblem => {
    const { code, line } = syntaxError!;
    // An unclosed quote is only noticed at the end of the file: report where its record starts.
    // The parser's own message may quote field values (keys): use our reasons.
    const at = code !== 'CSV_QUOTE_NOT_CLOSED' && line !== undefined ? line : nextLine;
    return { kind: 'problem', line: at, reason: `${CSV_FATAL_REASONS[code] ?? `malformed CSV (${code})`}; the rest of the file was not read`, fatal: true };
  };
  try {
    for await (const record of parser as AsyncIterable<string[]>) {
      records++;
      if (syntaxError !== undefined && records > syntaxError.recordsBefore) break;
      const line = nextLine;
      nextLine += 1;
      for (const field of record) nextLine += countNewlines(field);
      if (record.every((field) => field.trim() === '')) continue;
      if (columns === undefined) {
        columns = parseHeader(record, source, line);
        headerLength = record.length;
        continue;
      }
      const field = (name: CsvColumn): string | undefined => {
        const index = columns!.get(name);
        return index === undefined ? undefined : record[index];
      };
      const rawRef = field('ref');
      const ref = rawRef === undefined ? undefined : rawRef.trim() === '' ? null : rawRef.trim();
      if (record.length !== headerLength) {
        yield { kind: 'problem', line, reason: `${record.length} fields, but the header has ${headerLength}`, ...refUnlessKey(ref, field('key')) };
        continue;
      }
      const rawEservices = field('eservices');
      const rawTenant = field('tenant')?.trim();
      yield { kind: 'record', line, key: field('key') ?? '', ref, eservices: rawEservices === undefined ? undefined : splitEservices(rawEservices), tenant: rawTenant === '' ? undefined : rawTenant };
    }
  } catch (err) {
    throw inputError(err, source);
  }
  if (syntaxError !== undefined) {
    yield fatal();
    return;
  }
  if (columns === undefined) throw new AppError('INPUT_INVALID', `${source}: empty file: a CSV subject file needs a header row (key, ref, eservices)`);
}

function parseHeader(record: string[], source: string, line: number): Map<CsvColumn, number> {
  const columns = new Map<CsvColumn, number>();
  record.forEach((name, index) => {
    const column = name.trim().toLowerCase();
    if (!(CSV_COLUMNS as readonly string[]).includes(column)) {
      throw new AppError('INPUT_INVALID', `${source}:${line}: unknown column ${quoteSafely(name, 40)} in the header: the first line must name the columns (key, and optionally ref, eservices, tenant)`);
    }
    if (columns.has(column as CsvColumn)) throw new AppError('INPUT_INVALID', `${source}:${line}: column "${column}" appears twice in the header`);
    columns.set(column as CsvColumn, index);
  });
  if (!columns.has('key')) throw new AppError('INPUT_INVALID', `${source}:${line}: the header has no "key" column`);
  return columns;
}

/**
 * A problem may name its record by ref, never by key: a ref that repeats the key (someone used
 * the key as ref) is left out whatever the key looks like, since a mistyped key is personal
 * data too. The import drops refs equal to the key the same way for records that parse.
 */
function refUnlessKey(ref: string | null | undefined, key: unknown): { ref?: string } {
  if (!ref) return {};
  if (typeof key === 'string' && normalizeSubjectKey(key) === normalizeSubjectKey(ref)) return {};
  return { ref };
}

function splitEservices(value: string): string[] | 'all' {
  const list = value
    .split(';')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  return list.length === 0 ? 'all' : list;
}

/**
 * Longest line of an NDJSON or plain-lines subject file (and CSV record: csv-parse's
 * max_record_size). A subject line is tens of characters; a file without line breaks must fail
 * on its first mebibyte with its line number, not after filling memory (a 600 MB line would end
 * the process with "Invalid string length").
 */
export const MAX_LINE_CHARS = 1 << 20;

/** Lines of a text stream, numbered from 1, without the BOM and line endings (LF or CRLF), each at most MAX_LINE_CHARS. */
async function* numberedLines(input: Readable, source: string): AsyncGenerator<{ line: number; text: string }> {
  const decoder = new StringDecoder('utf8');
  let line = 0;
  let partial = '';
  const tooLong = (): AppError =>
    new AppError('INPUT_INVALID', `${source}:${line + 1}: line longer than ${MAX_LINE_CHARS} characters (a subject line is short: is a line break missing?); nothing after it was read`);
  const finish = (raw: string): { line: number; text: string } => {
    line++;
    const text = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    return { line, text: line === 1 && text.startsWith('\uFEFF') ? text.slice(1) : text };
  };
  try {
    for await (const chunk of input as AsyncIterable<Buffer | string>) {
      const text = typeof chunk === 'string' ? chunk : decoder.write(chunk);
      let start = 0;
      for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
        if (partial.length + (nl - start) > MAX_LINE_CHARS) throw tooLong();
        yield finish(partial + text.slice(start, nl));
        partial = '';
        start = nl + 1;
      }
      if (partial.length + (text.length - start) > MAX_LINE_CHARS) throw tooLong();
      partial += text.slice(start);
    }
  } catch (err) {
    throw inputError(err, source);
  }
  partial += decoder.end();
  if (partial.length > MAX_LINE_CHARS) throw tooLong();
  if (partial !== '') yield finish(partial);
}

const NDJSON_FIELDS = new Set(['key', 'ref', 'eservices', 'tenant']);

async function* readNdjson(input: Readable, source: string): AsyncGenerator<SubjectFileItem> {
  for await (const { line, text } of numberedLines(input, source)) {
    if (text.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      // JSON.parse's message may quote the line, key included.
      yield { kind: 'problem', line, reason: 'malformed JSON' };
      continue;
    }
    yield ndjsonRecord(value, line);
  }
}

function ndjsonRecord(value: unknown, line: number): SubjectFileItem {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { kind: 'problem', line, reason: 'not a JSON object' };
  const obj = value as Record<string, unknown>;
  const refValue = obj.ref;
  let ref: string | null | undefined;
  if (refValue === undefined) ref = undefined;
  else if (refValue === null) ref = null;
  else if (typeof refValue === 'string') ref = refValue.trim() === '' ? null : refValue.trim();
  else if (typeof refValue === 'number') ref = String(refValue);
  else return { kind: 'problem', line, reason: '"ref" must be a string' };
  const withRef = <T extends RecordProblem>(p: T): T => ({ ...p, ...refUnlessKey(ref, obj.key) });

  const unknown = Object.keys(obj).find((name) => !NDJSON_FIELDS.has(name));
  if (unknown !== undefined) return withRef({ kind: 'problem', line, reason: `unknown field ${quoteSafely(unknown, 40)} (expected key, ref, eservices, tenant)` });
  if (obj.key === undefined || obj.key === null) return withRef({ kind: 'problem', line, reason: 'missing key' });
  if (typeof obj.key !== 'string') return withRef({ kind: 'problem', line, reason: '"key" must be a string' });

  let eservices: string[] | 'all' | undefined;
  const es = obj.eservices;
  if (es === undefined) eservices = undefined;
  else if (es === null || es === 'all') eservices = 'all';
  else if (Array.isArray(es) && es.every((e): e is string => typeof e === 'string')) {
    const list = es.map((e) => e.trim()).filter((e) => e !== '');
    eservices = list.length === 0 ? 'all' : list;
  } else return withRef({ kind: 'problem', line, reason: '"eservices" must be an array of e-service ids or names' });

  let tenant: string | undefined;
  if (obj.tenant === undefined || obj.tenant === null) tenant = undefined;
  else if (typeof obj.tenant === 'string') tenant = obj.tenant.trim() === '' ? undefined : obj.tenant.trim();
  else return withRef({ kind: 'problem', line, reason: '"tenant" must be a string' });

  return { kind: 'record', line, key: obj.key, ref, eservices, tenant };
}

/** One key per line: for `subjects remove --file` and plain key lists. */
async function* readLines(input: Readable, source: string): AsyncGenerator<SubjectFileItem> {
  for await (const { line, text } of numberedLines(input, source)) {
    if (text.trim() === '') continue;
    yield { kind: 'record', line, key: text, ref: undefined, eservices: undefined };
  }
}

function inputError(err: unknown, source: string): AppError {
  if (err instanceof AppError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new AppError('INPUT_NOT_FOUND', `${source}: no such file`, { cause: err });
  return new AppError('INPUT_INVALID', `${source}: cannot read: ${code ?? (err as Error).message}`, { cause: err });
}
