import type * as z from 'zod';
import type { ConfigProblem } from '../errors.js';
import { formatPath, type KeyPath } from './problems.js';
import { isPlainObject } from './env.js';

/**
 * Turns zod issues into problems worded for someone editing a TOML file: `required`,
 * `unknown key`, `must be one of ...`, with TOML type names. Values are never echoed: a
 * misplaced secret must not end up in an error message.
 */
export function problemsFromIssues(issues: readonly z.core.$ZodIssue[], document: unknown, knownKeys: (path: KeyPath) => string[]): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      const allowed = knownKeys(issue.path);
      for (const key of issue.keys) {
        const suggestion = closestKey(key, allowed);
        problems.push({ path: formatPath([...issue.path, key]), message: `unknown key${suggestion ? ` (did you mean "${suggestion}"?)` : ''}` });
      }
      continue;
    }
    problems.push({ path: formatPath(issue.path), message: issueMessage(issue, valueAt(document, issue.path)) });
  }
  return problems;
}

function issueMessage(issue: z.core.$ZodIssue, value: unknown): string {
  switch (issue.code) {
    case 'invalid_type':
      if (value === undefined) return 'required';
      if (issue.expected === 'int') return 'must be an integer';
      return `expected ${article(tomlTypeName(issue.expected))}, got ${article(describeValue(value))}`;
    case 'invalid_value':
      return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_union': {
      const options = (issue as { options?: unknown[] }).options;
      if (Array.isArray(options)) {
        const list = options.map((v) => JSON.stringify(v)).join(', ');
        return value === undefined ? `required (one of ${list})` : `must be one of ${list}`;
      }
      return value === undefined ? 'required' : `expected a string, a number or a boolean, got ${article(describeValue(value))}`;
    }
    case 'too_small':
      if (issue.origin === 'string' && Number(issue.minimum) === 1) return 'must not be empty';
      if (issue.origin === 'array') return `must have at least ${Number(issue.minimum)} item${Number(issue.minimum) === 1 ? '' : 's'}`;
      return `must be ${issue.inclusive === false ? '>' : '>='} ${Number(issue.minimum)}`;
    case 'too_big':
      if (issue.origin === 'array') return `must have at most ${Number(issue.maximum)} items`;
      return `must be ${issue.inclusive === false ? '<' : '<='} ${Number(issue.maximum)}`;
    default:
      return issue.message;
  }
}

function tomlTypeName(zodType: string): string {
  return zodType === 'object' || zodType === 'record' ? 'table' : zodType;
}

function describeValue(value: unknown): string {
  if (Array.isArray(value)) return 'array';
  if (isPlainObject(value)) return 'table';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'float';
  if (typeof value === 'bigint') return 'integer';
  if (value instanceof Date) return 'date';
  if (typeof value === 'object' && value !== null) return 'date';
  return typeof value;
}

function article(word: string): string {
  return /^[aeiou]/.test(word) ? `an ${word}` : `a ${word}`;
}

export function valueAt(document: unknown, path: KeyPath): unknown {
  let current: unknown = document;
  for (const part of path) {
    if (Array.isArray(current) && typeof part === 'number') current = current[part];
    else if (isPlainObject(current) && typeof part === 'string') current = current[part];
    else return undefined;
  }
  return current;
}

/** The allowed key a typo most likely meant: same letters ignoring case and separators, or edit distance ≤ 2. */
export function closestKey(key: string, allowed: string[]): string | undefined {
  const squash = (s: string) => s.toLowerCase().replace(/[-_\s]/g, '');
  let best: { key: string; distance: number } | undefined;
  for (const candidate of allowed) {
    // Allowed elsewhere (another sink type) but not here: a hint would mislead.
    if (candidate === key) continue;
    const distance = squash(candidate) === squash(key) ? 0 : editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (distance <= 2 && (!best || distance < best.distance)) best = { key: candidate, distance };
  }
  return best?.key;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}
