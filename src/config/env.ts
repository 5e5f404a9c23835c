import type { ConfigProblem } from '../errors.js';
import { formatPath, type KeyPath } from './problems.js';

/**
 * `${VAR}` expansion in the string values of the parsed TOML document.
 *
 * The rule, kept deliberately small so that it never surprises:
 * - `${NAME}` with NAME matching `[A-Z_][A-Z0-9_]*` is replaced by the environment variable;
 *   an unset variable is a problem at that key path (an empty one expands to "").
 * - `$${` is a literal `${`.
 * - any other `${...}` is a problem: a lower-case name is almost always a typo of a variable,
 *   and silently keeping it would turn into a wrong path or URL at run time.
 * - `eservices[i].recipe.template` is never expanded: its `${subject}`, `${seed}` and
 *   `${algorithm}` are the pseudonym recipe's placeholders (SPEC §7), not variables.
 * - keys are never expanded, and values are not re-typed: `"${N}"` stays a string.
 */
export function expandEnvironment(document: unknown, env: NodeJS.ProcessEnv): { value: unknown; problems: ConfigProblem[] } {
  const problems: ConfigProblem[] = [];
  const value = walk(document, [], env, problems);
  return { value, problems };
}

const REFERENCE = /\$\$\{|\$\{([^}]*)\}/g;
const VARIABLE_NAME = /^[A-Z_][A-Z0-9_]*$/;

function walk(value: unknown, path: KeyPath, env: NodeJS.ProcessEnv, problems: ConfigProblem[]): unknown {
  if (typeof value === 'string') {
    return isRecipeTemplate(path) ? value : expandString(value, path, env, problems);
  }
  if (Array.isArray(value)) return value.map((item, i) => walk(item, [...path, i], env, problems));
  if (isPlainObject(value)) {
    const out: Record<string, unknown> = {};
    for (const [key, child] of Object.entries(value)) out[key] = walk(child, [...path, key], env, problems);
    return out;
  }
  return value;
}

function expandString(text: string, path: KeyPath, env: NodeJS.ProcessEnv, problems: ConfigProblem[]): string {
  return text.replace(REFERENCE, (match, name: string | undefined) => {
    if (name === undefined) return '${';
    if (!VARIABLE_NAME.test(name)) {
      problems.push({
        path: formatPath(path),
        message: `"\${${name.slice(0, 40)}}" is not an environment variable reference (names match [A-Z_][A-Z0-9_]*; write $\${ for a literal \${)`,
      });
      return match;
    }
    const resolved = env[name];
    if (resolved === undefined) {
      problems.push({ path: formatPath(path), message: `environment variable ${name} is not set` });
      return match;
    }
    return resolved;
  });
}

function isRecipeTemplate(path: KeyPath): boolean {
  return path.length === 4 && path[0] === 'eservices' && path[2] === 'recipe' && path[3] === 'template';
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}
