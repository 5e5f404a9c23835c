import * as z from 'zod';
import { eventJsonSchema } from '../../src/event-schema.js';

/**
 * The event contract as published by `signalhub-sync events schema`, turned back into a
 * validator (zod's fromJSONSchema), for the shared helpers that read outboxes, file sinks and
 * webhook bodies: every event the suite produces is checked against it. The published schema
 * lets receivers ignore additions; here an event field the schema does not list fails too,
 * so that the schema is extended together with the events.
 */
const published = eventJsonSchema();
const validator = z.fromJSONSchema(published);
const defs = published.$defs as Record<string, { properties: Record<string, unknown> }>;

export function expectContractEvent(value: unknown, where: string): void {
  const result = validator.safeParse(value);
  if (!result.success) throw new Error(`${where}: an event does not validate against "events schema":\n${z.prettifyError(result.error)}`);
  const type = (value as { type: string }).type;
  const unlisted = Object.keys(value as object).filter((key) => !(key in defs[type]!.properties));
  if (unlisted.length > 0) throw new Error(`${where}: a ${type} event has fields the published schema does not list: ${unlisted.join(', ')} (add them to src/event-schema.ts)`);
}

/** Every event of a JSON text (one event, an array of them, or NDJSON lines). */
export function expectContractText(text: string, where: string): void {
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const parsed = JSON.parse(line) as unknown;
    for (const event of Array.isArray(parsed) ? parsed : [parsed]) expectContractEvent(event, where);
  }
}
