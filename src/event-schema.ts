import * as z from 'zod';
import type { OutboxEvent, ResyncEvent, SignalEvent } from './events.js';

/**
 * The event contract (src/events.ts) as data: one zod shape per event type, from which
 * `signalhub-sync events schema` publishes a JSON Schema (draft 2020-12) and against which the
 * test suite checks every event it produces.
 *
 * Compatibility rule: fields and event types are added, never renamed, removed or given another
 * meaning. An addition raises the minor version (1.0 → 1.1); anything else would be a 2.0 and
 * is not done. Receivers therefore ignore fields and event types they do not know: the
 * published schema allows additional properties, and lists event types in `oneOf`.
 *
 * To extend: add the field to the interface in src/events.ts and to its shape below (optional
 * fields with `.optional()`), raise EVENT_SCHEMA_VERSION's minor. A new event type gets a shape
 * and an entry in EVENT_SHAPES. The type checks at the end fail the build when the two disagree.
 */
export const EVENT_SCHEMA_VERSION = '1.2.0';

const isoTime = () => z.iso.datetime({ offset: true });
const uuidLike = () => z.string().min(1).describe('Signal Hub e-service id (uuid).');

const signalShape = {
  id: z
    .string()
    .min(1)
    .describe('"<eserviceId>:<signalId>" for the consumer\'s own subject, "<eserviceId>:<signalId>:tenant:<tenant>" for a delegator\'s (since 1.2.0): stable across redeliveries; de-duplicate on it.'),
  type: z.literal('signal'),
  eserviceId: uuidLike(),
  eserviceName: z.string().describe('The e-service\'s name in the configuration.'),
  signalId: z.number().int().nonnegative().describe('The hub\'s signalId; events of one e-service come in signalId order.'),
  signalType: z.string().min(1).describe('CREATE, UPDATE or DELETE today; a type a later Signal Hub adds is delivered as sent (since 1.1.0): treat an unknown type as a change of the subject.'),
  objectType: z.string().describe('As the producer wrote it.'),
  objectId: z.string().describe('The pseudonym as the producer sent it.'),
  subjectRef: z.string().nullable().describe('The subject\'s local reference from the subject import (never the fiscal code).'),
  subjectKey: z.string().optional().describe('The subject key (fiscal code): only with events.include_subject_key = true.'),
  epoch: z.number().int().describe('Local id of the seed epoch the signal was matched under.'),
  receivedAt: isoTime().describe('When the signal was received from the hub.'),
  backfilled: z.literal(true).optional().describe('Present when a subject added later matched a signal kept for back-matching.'),
  tenant: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/)
    .optional()
    .describe('Since 1.2.0: the delegator whose subject matched (a delegate acting for several tenants); absent for the consumer\'s own subject. One signal yields one event per tenant whose subject matched.'),
};

const resyncShape = {
  id: z.string().min(1).describe('"<eserviceId>:resync:<reportId>".'),
  type: z.literal('resync-required'),
  eserviceId: uuidLike(),
  eserviceName: z.string(),
  reportId: z.number().int().positive().describe('The resync report ("signalhub-sync resync list").'),
  fromSignalId: z.number().int().nonnegative().describe('First signalId (inclusive) whose subjects may have changed unseen.'),
  toSignalId: z.number().int().nonnegative().describe('Last signalId (inclusive).'),
  reason: z.enum(['retention-gap', 'seed-unchanged', 'seed-history-missing', 'seed-from-later-epoch', 'backlog-predates-seed', 'late-seedupdate']),
  detail: z.string(),
  createdAt: isoTime(),
};

/** Every event type and its fields. */
export const EVENT_SHAPES = {
  signal: signalShape,
  'resync-required': resyncShape,
} as const;

export type EventType = keyof typeof EVENT_SHAPES;

const DESCRIPTIONS: Record<EventType, string> = {
  signal: 'A change signal of a local subject (or, with include_subject_key, its key).',
  'resync-required': 'Signals in a range may concern local subjects but could not be matched: re-read those subjects at the source.',
};

/** Strict validators: an event with a field the contract does not name is refused (the suite uses these). */
export const strictEventSchemas = {
  signal: z.strictObject(signalShape),
  'resync-required': z.strictObject(resyncShape),
} as const;

/** Checks a stored or received event against the contract; the message names the field. */
export function checkEvent(value: unknown): { ok: true; type: EventType } | { ok: false; error: string } {
  const type = (value as { type?: unknown } | null)?.type;
  if (typeof type !== 'string' || !(type in strictEventSchemas)) return { ok: false, error: `unknown event type ${JSON.stringify(type)}` };
  const result = strictEventSchemas[type as EventType].safeParse(value);
  return result.success ? { ok: true, type: type as EventType } : { ok: false, error: z.prettifyError(result.error) };
}

type JsonSchema = Record<string, unknown>;

/** The published JSON Schema: `oneOf` the event types, each allowing fields added later. */
export function eventJsonSchema(): JsonSchema {
  const defs: Record<string, JsonSchema> = {};
  for (const [type, shape] of Object.entries(EVENT_SHAPES) as [EventType, (typeof EVENT_SHAPES)[EventType]][]) {
    const { $schema: _ignored, ...schema } = z.toJSONSchema(z.looseObject(shape), { target: 'draft-2020-12', io: 'output' }) as JsonSchema;
    defs[type] = { title: type, description: DESCRIPTIONS[type], ...schema };
  }
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: `urn:signalhub-sync:events:${EVENT_SCHEMA_VERSION}`,
    title: 'signalhub-sync change events',
    description:
      'One JSON object per event, as delivered to every sink. Compatibility: fields and event types are added (minor version), never renamed or removed; ignore what you do not know. De-duplicate on "id".',
    version: EVENT_SCHEMA_VERSION,
    oneOf: Object.keys(defs).map((type) => ({ $ref: `#/$defs/${type}` })),
    $defs: defs,
  };
}

// The contract and the TypeScript types must not drift apart: these fail to compile if they do.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const signalAgrees: Same<z.infer<(typeof strictEventSchemas)['signal']>, SignalEvent> = true;
const resyncAgrees: Same<z.infer<(typeof strictEventSchemas)['resync-required']>, ResyncEvent> = true;
const everyTypeHasAShape: Same<EventType, OutboxEvent['type']> = true;
void [signalAgrees, resyncAgrees, everyTypeHasAShape];
