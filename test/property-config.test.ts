import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { parse as parseToml, stringify as stringifyToml } from 'smol-toml';
import { beforeEach, describe, expect, it } from 'vitest';
import type { Config } from '../src/config/types.js';
import { loadConfig, parseConfigText } from '../src/config/load.js';
import { ConfigError, EXIT } from '../src/errors.js';
import { configDir, productionToml } from './config-helpers.js';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { propertyParameters, propertyTimeoutMs, yieldToEventLoop } from './helpers/property.js';

/**
 * The bad-input corpus for config files (issue 8): a valid production config, mutated by
 * fast-check (wrong types, out-of-range numbers, bad URLs, missing and unknown keys, deep
 * nesting, syntax garbage, random Unicode), fed to the real loader. Each document is either a
 * Config that keeps the schema's invariants, or a ConfigError whose every problem names a key
 * path that exists in the document (or file:line:column for a syntax error). Nothing else.
 */

type Doc = Record<string, unknown>;
type Segment = string | number;

// ---- key paths: the loader's format `eservices[1].purpose_id`, `hub."odd key"` ----

function parsePath(text: string): Segment[] {
  const segments: Segment[] = [];
  const pattern = /(?:^|\.)(?:("(?:[^"\\]|\\.)*")|([A-Za-z0-9_-]+))|\[(\d+)\]/gy;
  let match: RegExpExecArray | null;
  let at = 0;
  while ((match = pattern.exec(text)) !== null) {
    at = pattern.lastIndex;
    if (match[3] !== undefined) segments.push(Number(match[3]));
    else segments.push(match[1] !== undefined ? (JSON.parse(match[1]) as string) : match[2]!);
  }
  if (at !== text.length) throw new Error(`not a key path: ${JSON.stringify(text)}`);
  return segments;
}

function resolve(doc: unknown, segments: Segment[]): unknown {
  let current = doc;
  for (const s of segments) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<string | number, unknown>)[s];
  }
  return current;
}

/** Sets a value, creating the tables on its way that an earlier mutation removed. */
function setAt(doc: Doc, segments: Segment[], value: unknown): void {
  let parent = doc as Record<string | number, unknown>;
  for (const s of segments.slice(0, -1)) parent = (parent[s] ??= {}) as Record<string | number, unknown>;
  parent[segments.at(-1)!] = value;
}

function deleteAt(doc: Doc, segments: Segment[]): void {
  const parent = resolve(doc, segments.slice(0, -1)) as Record<string | number, unknown> | undefined;
  if (parent !== undefined) delete parent[segments.at(-1)!];
}

// ---- mutations, each with what the schema must say about it ----

/** `expect`: null = the document stays valid; a path = a problem must name it (or a key below it). */
interface Mutation {
  label: string;
  /** The key path it touches. */
  key: string;
  apply(doc: Doc): void;
  expect: string | null;
}

/** A TOML value of any type; `isValid` says whether the key's rules accept it. */
type ValueRule = (value: unknown) => boolean;
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const intIn = (min: number, max: number): ValueRule => (v) => isInt(v) && v >= min && v <= max;
const numIn = (min: number, max: number, exclusiveMin = false): ValueRule => (v) => isNum(v) && (exclusiveMin ? v > min : v >= min) && v <= max;

const SCALAR_KEYS: Array<[string, ValueRule]> = [
  ['hub.page_size', intIn(1, 100)],
  ['hub.poll_jitter', numIn(0, 0.5)],
  ['hub.max_retries', intIn(0, Number.MAX_SAFE_INTEGER)],
  ['hub.poll_interval_seconds', numIn(0, Infinity, true)],
  ['daemon.concurrency', intIn(1, 64)],
  ['pdnd.assertion_ttl_seconds', intIn(1, 3600)],
  ['outbox.keep_days', intIn(0, Number.MAX_SAFE_INTEGER)],
  ['crypto.rotation_wait_seconds', numIn(0, Infinity)],
  ['subjects.validate', (v) => typeof v === 'boolean'],
  ['events.include_subject_key', (v) => typeof v === 'boolean'],
  ['log.level', (v) => typeof v === 'string' && ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(v)],
  ['eservices[0].name', (v) => typeof v === 'string' && v.length > 0 && !v.includes('${')],
  ['pdnd.m2m.key_id', (v) => typeof v === 'string' && v.length > 0 && !v.includes('${')],
];

const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ min: -5, max: 200 }),
  fc.constantFrom(0, 1, 64, 65, 100, 101, 3600, 3601, 0.5, 0.51, -0.0001, 1.5, 1e300),
  fc.double({ noNaN: true, noDefaultInfinity: true, min: -1000, max: 1000 }),
  fc.boolean(),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.constantFrom('info', 'debug', 'INFO', '', 'verbose'),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.constant({}),
  fc.constant({ nested: { deeper: 1 } }),
);

const wrongValue: fc.Arbitrary<Mutation> = fc.tuple(fc.constantFrom(...SCALAR_KEYS), anyValue).map(([[key, rule], value]) => ({
  label: `${key} = ${JSON.stringify(value)}`,
  key,
  apply: (doc) => setAt(doc, parsePath(key), value),
  expect: rule(value) ? null : key,
}));

/** URLs labelled by hand: https, or plain http only towards loopback (preset production). */
const URLS: Array<[string, boolean]> = [
  ['https://producer.example.it/pseudonymization', true],
  ['https://[2001:db8::1]:8443/p', true],
  ['http://127.0.0.1:8080/p', true],
  ['http://localhost/p', true],
  ['http://[::1]:9000/p', true],
  ['https://producer.example.it:443/p?x=1#f', true],
  ['http://producer.example.it/p', false],
  ['ftp://producer.example.it/p', false],
  ['https://user:secret@producer.example.it/p', false],
  ['producer.example.it/p', false],
  ['', false],
  ['https://', false],
  ['http://128.0.0.1/p', false],
  ['file:///etc/passwd', false],
];
const badUrl: fc.Arbitrary<Mutation> = fc.tuple(fc.constantFrom('eservices[0].crypto_info_url', 'eservices[1].crypto_info_url', 'hub.base_url', 'pdnd.token_url'), fc.constantFrom(...URLS)).map(([key, [url, ok]]) => ({
  label: `${key} = ${url}`,
  key,
  apply: (doc) => setAt(doc, parsePath(key), url),
  expect: ok ? null : key,
}));

const UUIDS: Array<[string, boolean]> = [
  ['11111111-1111-4111-8111-111111111112', true],
  ['AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE', true],
  ['11111111-1111-4111-8111-11111111111', false],
  ['not-a-uuid', false],
  ['', false],
  ['{11111111-1111-4111-8111-111111111112}', false],
];
const badUuid: fc.Arbitrary<Mutation> = fc.tuple(fc.constantFrom('pdnd.m2m.client_id', 'eservices[1].purpose_id', 'pdnd.eservice_client.client_id'), fc.constantFrom(...UUIDS)).map(([key, [value, ok]]) => ({
  label: `${key} = ${value}`,
  key,
  apply: (doc) => setAt(doc, parsePath(key), value),
  expect: ok ? null : key,
}));

const missing: fc.Arbitrary<Mutation> = fc
  .constantFrom('pdnd.m2m.client_id', 'pdnd.m2m.key_id', 'pdnd.m2m.private_key_file', 'pdnd.m2m', 'eservices[0].id', 'eservices[1].purpose_id', 'eservices[0].name', 'eservices[1].crypto_info_url', 'pdnd')
  .map((key) => ({ label: `without ${key}`, key, apply: (doc) => deleteAt(doc, parsePath(key)), expect: key }));

const unknownKey: fc.Arbitrary<Mutation> = fc
  .tuple(fc.constantFrom('', 'hub', 'pdnd', 'pdnd.m2m', 'eservices[0]', 'eservices[1].recipe', 'log'), fc.stringMatching(/^[a-z_]{1,10}$/), anyValue)
  .map(([table, name, value]) => {
    const key = `x_${name}`;
    const full = table === '' ? key : `${table}.${key}`;
    return { label: `unknown ${full}`, key: full, apply: (doc: Doc) => setAt(doc, parsePath(full), value), expect: full };
  });

const deepNesting: fc.Arbitrary<Mutation> = fc.integer({ min: 1, max: 60 }).map((depth) => ({
  label: `x_deep nested ${depth} levels`,
  key: 'x_deep',
  apply: (doc) => {
    let value: Doc = { leaf: 1 };
    for (let i = 0; i < depth; i++) value = { [`level${i}`]: value };
    doc.x_deep = value;
  },
  expect: 'x_deep',
}));

const unicodeValue: fc.Arbitrary<Mutation> = fc.tuple(fc.constantFrom('eservices[0].name', 'eservices[1].name', 'pdnd.m2m.key_id'), fc.string({ unit: 'binary', minLength: 1, maxLength: 30 })).map(([key, value]) => ({
  label: `${key} = random unicode`,
  key,
  apply: (doc) => setAt(doc, parsePath(key), value),
  // Any non-empty text is a fine name or key id, unless it asks for environment expansion.
  expect: value.includes('${') ? key : null,
}));

const structured = fc.array(fc.oneof(wrongValue, badUrl, badUuid, missing, unknownKey, deepNesting, unicodeValue), { minLength: 1, maxLength: 3 });

/** Garbage applied to the text itself: the outcome cannot be predicted, only its shape. */
const textGarbage = fc.oneof(
  fc.tuple(fc.nat(), fc.string({ unit: 'binary', maxLength: 20 })).map(([at, junk]) => (text: string) => text.slice(0, at % (text.length + 1)) + junk + text.slice(at % (text.length + 1))),
  fc.nat().map((at) => (text: string) => text.slice(0, at % (text.length + 1))),
  fc.constantFrom('[[eservices]\n', '= 1\n', 'hub.page_size = 1\nhub.page_size = 2\n', '[hub]\n', 'x = """\n', 'x = [1, "a"\n', 'a = 1979-05-27T07:32:00Z\n', '\u0000\n', '\uFEFF').map((junk) => (text: string) => `${text}\n${junk}`),
);

// ---- checks ----

function isLoopbackUrl(url: string): boolean {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function checkConfig(config: Config): void {
  expect(path.isAbsolute(config.database)).toBe(true);
  expect(path.isAbsolute(config.pdnd.m2m.privateKeyFile)).toBe(true);
  expect(config.hub.pageSize).toBeGreaterThanOrEqual(1);
  expect(config.hub.pageSize).toBeLessThanOrEqual(100);
  expect(Number.isInteger(config.hub.pageSize)).toBe(true);
  for (const url of [config.pdnd.tokenUrl, config.hub.baseUrl, ...config.eservices.flatMap((e) => (e.cryptoInfoUrl === null ? [] : [e.cryptoInfoUrl]))]) {
    const protocol = new URL(url).protocol;
    expect(protocol === 'https:' || (protocol === 'http:' && isLoopbackUrl(url)), `${url} is neither https nor loopback http`).toBe(true);
  }
  for (const e of config.eservices) expect(path.isAbsolute(e.client.privateKeyFile)).toBe(true);
}

/**
 * Every problem names a key whose parent exists in the document, or a required key that is
 * missing with its table (named so the reader knows what to add, e.g. `hub.base_url` when a
 * truncated file lost `[hub]`); '' only for syntax errors with file:line:column.
 */
function checkProblems(err: ConfigError, document: Doc | undefined): void {
  expect(err.code).toBe('CONFIG_INVALID');
  expect(err.problems.length).toBeGreaterThan(0);
  for (const problem of err.problems) {
    expect(problem.message.trim().length, `empty message at ${problem.path}`).toBeGreaterThan(0);
    if (problem.path === '') {
      expect(problem.message).toMatch(/config\.toml:\d+:\d+: TOML syntax error: \S/);
      continue;
    }
    expect(document, `a key path (${problem.path}) for a document that does not parse`).toBeDefined();
    const segments = parsePath(problem.path);
    if (/^required\b/.test(problem.message)) continue;
    const parent = resolve(document, segments.slice(0, -1));
    expect(parent !== null && typeof parent === 'object', `${problem.path}: its parent is not in the document`).toBe(true);
  }
}

/**
 * Cases per property under SIGNALHUB_SOAK=1, to keep the file within a few minutes: 20000 typed
 * mutations took 95 s on two busy cores; garbage cases are about ten times cheaper.
 */
const SOAK_RUNS = { typed: 10_000, garbage: 20_000 };

describe('config files: generated mutations of a valid production config', () => {
  let dir: string;
  let base: Doc;

  // tempDir() is removed after each test: every test gets its own folder with the key files.
  beforeEach(() => {
    dir = configDir(tempDir('shs-prop-config-'));
    base = parseToml(productionToml()) as Doc;
  });

  const parse = (text: string) => {
    try {
      return { config: parseConfigText(text, { file: path.join(dir, 'config.toml'), env: {} }) };
    } catch (err) {
      if (err instanceof ConfigError) return { error: err };
      throw err; // anything else is a crash
    }
  };

  it('the unmutated document is valid (the properties start from a real config)', () => {
    const outcome = parse(productionToml());
    expect(outcome.error?.message).toBeUndefined();
    checkConfig(outcome.config!);
  });

  it(
    'typed mutations (wrong types, ranges, URLs, UUIDs, missing and unknown keys, deep nesting, Unicode) give a Config with its invariants or a ConfigError naming each mutated key path',
    async () => {
      await fc.assert(
        fc.asyncProperty(structured, async (mutations) => {
          await yieldToEventLoop();
          const doc = structuredClone(base);
          for (const m of mutations) m.apply(doc);
          const text = stringifyToml(doc);
          const outcome = parse(text);
          const expected = mutations.map((m) => m.expect).filter((p): p is string => p !== null);
          // Two mutations of one key (or of a key and its table) interact: only the shape of the outcome is predictable then.
          const related = (a: string, b: string) => a === b || a.startsWith(`${b}.`) || a.startsWith(`${b}[`) || b.startsWith(`${a}.`) || b.startsWith(`${a}[`);
          const predictable = mutations.every((m, i) => mutations.every((n, j) => i === j || !related(m.key, n.key)));
          if (!predictable) {
            if (outcome.config) checkConfig(outcome.config);
            else checkProblems(outcome.error!, parseToml(text) as Doc);
            return;
          }
          if (outcome.config) {
            expect(expected, `accepted although ${mutations.map((m) => m.label).join('; ')}`).toEqual([]);
            checkConfig(outcome.config);
            return;
          }
          const document = parseToml(text) as Doc;
          checkProblems(outcome.error!, document);
          // A mutation that breaks a later one's parent (pdnd removed, then pdnd.m2m.key_id set) names the parent.
          for (const key of expected) {
            const named = outcome.error!.problems.some((p) => p.path === key || p.path.startsWith(`${key}.`) || p.path.startsWith(`${key}[`) || key.startsWith(`${p.path}.`) || key.startsWith(`${p.path}[`));
            expect(named, `no problem names ${key}: ${outcome.error!.message}`).toBe(true);
          }
          expect(expected.length, `rejected a valid document: ${outcome.error!.message}`).toBeGreaterThan(0);
        }),
        propertyParameters({ runs: 400, soakRuns: SOAK_RUNS.typed }),
      );
    },
    propertyTimeoutMs(30_000),
  );

  it(
    'garbage in the TOML text (insertions, truncation, duplicate keys, unclosed strings, NULs) gives a Config or a ConfigError with key paths or file:line:column; never another exception',
    async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(textGarbage, { minLength: 1, maxLength: 3 }), async (garbage) => {
          await yieldToEventLoop();
          const text = garbage.reduce((t, g) => g(t), productionToml());
          const outcome = parse(text);
          if (outcome.config) {
            checkConfig(outcome.config);
            return;
          }
          let document: Doc | undefined;
          try {
            document = parseToml(text.replace(/^\uFEFF/, '')) as Doc;
          } catch {
            document = undefined;
          }
          checkProblems(outcome.error!, document);
        }),
        propertyParameters({ runs: 400, soakRuns: SOAK_RUNS.garbage }),
      );
    },
    propertyTimeoutMs(30_000),
  );

  it('loadConfig reads the same generated files from disk with the same outcome', async () => {
    const samples = fc.sample(structured, { numRuns: 20, seed: propertyParameters().seed ?? 1 });
    for (const mutations of samples) {
      const doc = structuredClone(base);
      for (const m of mutations) m.apply(doc);
      const text = stringifyToml(doc);
      const file = path.join(dir, 'config.toml');
      fs.writeFileSync(file, text, { mode: 0o600 });
      const fromText = parse(text);
      const fromDisk = await loadConfig(file, { env: {} }).then(
        (config) => ({ config, error: undefined }),
        (error: unknown) => {
          if (error instanceof ConfigError) return { config: undefined, error };
          throw error;
        },
      );
      expect(fromDisk.error?.problems).toEqual(fromText.error?.problems);
      expect(fromDisk.config).toEqual(fromText.config);
    }
  });
});

describe('config check through the CLI', () => {
  const cases: Array<[string, (doc: Doc) => void, string]> = [
    ['page_size out of range', (doc) => ((doc.hub = { page_size: 101 }), undefined), 'hub.page_size'],
    ['plain http producer URL', (doc) => setAt(doc, parsePath('eservices[1].crypto_info_url'), 'http://producer.example.it/p'), 'eservices[1].crypto_info_url'],
    ['unknown nested key', (doc) => setAt(doc, parsePath('pdnd.m2m.x_secret'), 'value'), 'pdnd.m2m.x_secret'],
  ];

  it(
    'config check exits 78 and names the key path on stderr for generated-style bad configs',
    async () => {
      for (const [, mutate, key] of cases) {
        const dir = configDir(tempDir('shs-prop-config-cli-'));
        const doc = parseToml(productionToml()) as Doc;
        mutate(doc);
        const file = path.join(dir, 'config.toml');
        fs.writeFileSync(file, stringifyToml(doc), { mode: 0o600 });
        const result = await runCli(['--config', file, 'config', 'check'], { timeoutMs: 30_000 });
        expect(result.code, result.stderr).toBe(EXIT.CONFIG);
        expect(result.stderr).toContain(key);
      }
    },
    propertyTimeoutMs(60_000),
  );
});
