import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { detectFormat, readSubjectFile, type SubjectFileItem, type SubjectFormat } from '../src/subjects/parse.js';
import { AppError } from '../src/errors.js';

async function read(text: string | Buffer, format: SubjectFormat, chunkSize?: number): Promise<SubjectFileItem[]> {
  const buffer = Buffer.isBuffer(text) ? text : Buffer.from(text, 'utf8');
  // Small chunks exercise CR/LF pairs and multi-byte characters split across chunks.
  const chunks: Buffer[] = [];
  const size = chunkSize ?? buffer.length;
  for (let i = 0; i < buffer.length; i += size) chunks.push(buffer.subarray(i, i + size));
  const items: SubjectFileItem[] = [];
  for await (const item of readSubjectFile(Readable.from(chunks), format, 'test.csv')) items.push(item);
  return items;
}

const lines = (items: SubjectFileItem[]) => items.map((i) => [i.line, i.kind === 'record' ? i.key : i.reason]);

describe('CSV', () => {
  it('reads key, ref and eservices with the line of each record', async () => {
    const items = await read('key,ref,eservices\nAAA,r1,\nBBB,,residences; id-documents\n', 'csv');
    expect(items).toEqual([
      { kind: 'record', line: 2, key: 'AAA', ref: 'r1', eservices: 'all' },
      { kind: 'record', line: 3, key: 'BBB', ref: null, eservices: ['residences', 'id-documents'] },
    ]);
  });

  for (const chunkSize of [undefined, 2]) {
    it(`reads a semicolon-separated file (Excel, Italian locale) like a comma-separated one, an e-service list quoted (chunks of ${chunkSize ?? 'all'})`, async () => {
      const semicolons = await read('\uFEFF\r\nkey;ref;eservices\r\nAAA;r1;\r\nBBB;"Rossi, Mario";"residences; id-documents"\r\n', 'csv', chunkSize);
      const commas = await read('\uFEFF\r\nkey,ref,eservices\r\nAAA,r1,\r\nBBB,"Rossi, Mario","residences; id-documents"\r\n', 'csv', chunkSize);
      expect(semicolons).toEqual(commas);
      expect(semicolons).toEqual([
        { kind: 'record', line: 3, key: 'AAA', ref: 'r1', eservices: 'all' },
        { kind: 'record', line: 4, key: 'BBB', ref: 'Rossi, Mario', eservices: ['residences', 'id-documents'] },
      ]);
    });
  }

  it('a header with commas keeps the comma as delimiter, even when a later row holds semicolons', async () => {
    expect(await read('key,eservices\nAAA,residences;id-documents\n', 'csv')).toEqual([{ kind: 'record', line: 2, key: 'AAA', ref: undefined, eservices: ['residences', 'id-documents'] }]);
    expect(await read('key\nAAA;x\n', 'csv')).toEqual([{ kind: 'record', line: 2, key: 'AAA;x', ref: undefined, eservices: undefined }]);
  });

  it('leaves ref and eservices undefined when the columns are absent; columns in any order and case', async () => {
    expect(await read('key\nAAA\n', 'csv')).toEqual([{ kind: 'record', line: 2, key: 'AAA', ref: undefined, eservices: undefined }]);
    expect(await read('Ref, KEY\nr1,AAA\n', 'csv')).toEqual([{ kind: 'record', line: 2, key: 'AAA', ref: 'r1', eservices: undefined }]);
  });

  for (const chunkSize of [undefined, 1, 3]) {
    it(`counts lines with BOM, CRLF, blank lines and multi-line quoted fields (chunks of ${chunkSize ?? 'all'})`, async () => {
      const text = '\uFEFFkey,ref\r\nAAA,1\r\n\r\nBBB,"multi\r\nline"\r\nCCC,"è,ü"\r\n\r\n\r\nDDD,"a\nb\r\nc"\r\nEEE,5';
      const items = await read(text, 'csv', chunkSize);
      expect(lines(items)).toEqual([
        [2, 'AAA'],
        [4, 'BBB'],
        [6, 'CCC'],
        [9, 'DDD'],
        [12, 'EEE'],
      ]);
      expect(items[2]).toMatchObject({ ref: 'è,ü' });
      expect(items[1]).toMatchObject({ ref: 'multi\nline' });
    });
  }

  it('reports a record with the wrong number of fields, and goes on', async () => {
    const items = await read('key,ref\nAAA,1,extra\nBBB\nCCC,3\n', 'csv');
    expect(items).toEqual([
      { kind: 'problem', line: 2, reason: '3 fields, but the header has 2', ref: '1' },
      { kind: 'problem', line: 3, reason: '1 fields, but the header has 2' },
      { kind: 'record', line: 4, key: 'CCC', ref: '3', eservices: undefined },
    ]);
  });

  it('stops at broken quoting with a fatal problem that quotes nothing from the file', async () => {
    const items = await read('key,ref\nAAA,1\nBBB,"x"SECRETKEY\nCCC,3\n', 'csv');
    expect(items).toEqual([
      { kind: 'record', line: 2, key: 'AAA', ref: '1', eservices: undefined },
      { kind: 'problem', line: 3, reason: 'malformed CSV: characters after a closing quote; the rest of the file was not read', fatal: true },
    ]);
    const unclosed = await read('key,ref\nAAA,1\nBBB,"never closed\nCCC,3\n', 'csv');
    expect(unclosed[1]).toEqual({ kind: 'problem', line: 3, reason: 'malformed CSV: quote not closed; the rest of the file was not read', fatal: true });
  });

  it('rejects a file without a usable header, without echoing key-shaped values', async () => {
    const err = await read('RSSMRA80A01H501U,r1\n', 'csv').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).code).toBe('INPUT_INVALID');
    expect((err as AppError).message).toContain('test.csv:1: unknown column');
    expect((err as AppError).message).not.toContain('RSSMRA80A01H501U');
    await expect(read('ref,eservices\nr,x\n', 'csv')).rejects.toThrow('test.csv:1: the header has no "key" column');
    await expect(read('key,ref,key\n', 'csv')).rejects.toThrow('column "key" appears twice');
    await expect(read('key,fiscal_code\n', 'csv')).rejects.toThrow('unknown column "fiscal_code"');
    await expect(read('', 'csv')).rejects.toThrow('empty file');
  });
});

describe('NDJSON', () => {
  it('reads objects, skips blank lines, handles BOM and CRLF', async () => {
    const text = '\uFEFF{"key":"AAA","ref":"r1","eservices":["residences"]}\r\n\r\n{"key":"BBB"}\r\n{"key":"CCC","ref":null,"eservices":[]}\n{"key":"DDD","ref":7,"eservices":null}';
    expect(await read(text, 'ndjson', 5)).toEqual([
      { kind: 'record', line: 1, key: 'AAA', ref: 'r1', eservices: ['residences'] },
      { kind: 'record', line: 3, key: 'BBB', ref: undefined, eservices: undefined },
      { kind: 'record', line: 4, key: 'CCC', ref: null, eservices: 'all' },
      { kind: 'record', line: 5, key: 'DDD', ref: '7', eservices: 'all' },
    ]);
  });

  it('reports bad lines by number without quoting them', async () => {
    const text = ['{"key":"RSSMRA80A01H501U"', '["RSSMRA80A01H501U"]', '{"ref":"r3"}', '{"key":12}', '{"key":"RSSMRA80A01H501U","eservices":"x"}', '{"key":"RSSMRA80A01H501U","RSSMRA80A01H501U":1}', '{"key":"RSSMRA80A01H501U","ref":{}}', '{"key":"AAA","colour":"red"}'].join('\n');
    const items = await read(text, 'ndjson');
    expect(items).toEqual([
      { kind: 'problem', line: 1, reason: 'malformed JSON' },
      { kind: 'problem', line: 2, reason: 'not a JSON object' },
      { kind: 'problem', line: 3, reason: 'missing key', ref: 'r3' },
      { kind: 'problem', line: 4, reason: '"key" must be a string' },
      { kind: 'problem', line: 5, reason: '"eservices" must be an array of e-service ids or names' },
      { kind: 'problem', line: 6, reason: 'unknown field (value not shown: it looks like a subject key) (expected key, ref, eservices, tenant)' },
      { kind: 'problem', line: 7, reason: '"ref" must be a string' },
      { kind: 'problem', line: 8, reason: 'unknown field "colour" (expected key, ref, eservices, tenant)' },
    ]);
    expect(JSON.stringify(items)).not.toContain('RSSMRA80A01H501U');
  });
});

describe('plain key lists and format detection', () => {
  it('reads one key per line', async () => {
    expect(lines(await read('\uFEFFAAA\r\n\r\n  BBB \n', 'lines'))).toEqual([
      [1, 'AAA'],
      [3, '  BBB '],
    ]);
  });

  it('detects the format from the extension or --format', () => {
    expect(detectFormat('a.CSV')).toBe('csv');
    expect(detectFormat('a.ndjson')).toBe('ndjson');
    expect(detectFormat('a.jsonl')).toBe('ndjson');
    expect(detectFormat('a.txt')).toBe('lines');
    expect(detectFormat('-')).toBe('csv');
    expect(detectFormat('-', 'ndjson')).toBe('ndjson');
    expect(detectFormat('a.csv', 'ndjson')).toBe('ndjson');
    expect(() => detectFormat('a.xlsx')).toThrow('use --format');
    expect(() => detectFormat('a.csv', 'xml')).toThrow('unknown format "xml"');
  });
});
