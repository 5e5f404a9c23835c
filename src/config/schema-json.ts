import * as z from 'zod';
import { buildFileSchema } from './schema.js';
import type { KeyPath } from './problems.js';

type JsonSchema = Record<string, unknown>;

let cached: JsonSchema | undefined;

/** JSON Schema (draft 2020-12) of the TOML config file, as written by hand: input side, defaults shown. */
export function configJsonSchema(): JsonSchema {
  cached ??= {
    ...(z.toJSONSchema(buildFileSchema(null), { io: 'input', target: 'draft-2020-12', unrepresentable: 'any' }) as JsonSchema),
    title: 'signalhub-sync configuration (TOML)',
  };
  return cached;
}

/** Keys allowed in the table at `path` (union over sink types), for "did you mean" hints. */
export function knownKeysAt(path: KeyPath): string[] {
  let nodes: JsonSchema[] = [configJsonSchema()];
  for (const part of path) {
    nodes = nodes.flatMap(alternatives).flatMap((node) => {
      const next = typeof part === 'number' ? node.items : (node.properties as Record<string, unknown> | undefined)?.[String(part)];
      return isSchema(next) ? [next] : [];
    });
  }
  const keys = new Set<string>();
  for (const node of nodes.flatMap(alternatives)) {
    for (const key of Object.keys((node.properties as Record<string, unknown> | undefined) ?? {})) keys.add(key);
  }
  return [...keys];
}

function alternatives(node: JsonSchema): JsonSchema[] {
  const options = (node.oneOf ?? node.anyOf) as unknown;
  return Array.isArray(options) ? options.filter(isSchema).flatMap(alternatives) : [node];
}

function isSchema(value: unknown): value is JsonSchema {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
