import type { ConfigProblem } from '../errors.js';

export type KeyPath = ReadonlyArray<string | number | symbol>;

/** `['eservices', 1, 'purpose_id']` → `eservices[1].purpose_id`; keys that are not bare TOML keys are quoted. */
export function formatPath(path: KeyPath): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else {
      const key = String(part);
      const shown = /^[A-Za-z0-9_-]+$/.test(key) ? key : JSON.stringify(key);
      out += out === '' ? shown : `.${shown}`;
    }
  }
  return out;
}

/** Problems in file order of discovery, without repeats. */
export function uniqueProblems(problems: ConfigProblem[]): ConfigProblem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const id = `${p.path}\u0000${p.message}`;
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
}
