import fs from 'node:fs';
import path from 'node:path';
import * as z from 'zod';
import { afterEach, describe, expect, it } from 'vitest';
import { checkEvent, EVENT_SCHEMA_VERSION } from '../src/event-schema.js';
import { runCli } from './helpers/cli.js';
import { expectContractEvent } from './helpers/event-contract.js';
import { tempDir } from './helpers/fs.js';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { outboxEventIds } from './run-helpers.js';

const ES = '71111111-1111-4111-8111-111111111111';

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

describe('the event contract (events schema)', () => {
  it('is printed without a configuration, versioned, one definition per event type, open to additions', async () => {
    const r = await runCli(['events', 'schema'], { env: { SIGNALHUB_SYNC_CONFIG: '/nonexistent/config.toml' } });
    expect(r.code, r.stderr).toBe(0);
    const schema = JSON.parse(r.stdout);
    expect(schema).toMatchObject({ $schema: 'https://json-schema.org/draft/2020-12/schema', version: EVENT_SCHEMA_VERSION, $id: `urn:signalhub-sync:events:${EVENT_SCHEMA_VERSION}` });
    expect(Object.keys(schema.$defs)).toEqual(['signal', 'resync-required']);
    expect(schema.description).toContain('never renamed or removed');
    for (const def of Object.values(schema.$defs) as { additionalProperties?: unknown; required: string[] }[]) {
      expect(def.additionalProperties).not.toBe(false);
      expect(def.required).toContain('id');
    }
  });

  it('every event a real run produces (matches, back-matches, a resync report) validates against the printed schema', async () => {
    const dir = tempDir('shs-contract-');
    world = await createWorld({
      dir,
      eservices: [{ id: ES, name: 'residenze', includeSignalId: true }],
      toml: '[crypto]\nrotation_wait_seconds = 0.5\n\n[events]\ninclude_subject_key = true\n\n[[sinks]]\nname = "archive"\ntype = "file"\npath = "events.ndjson"\n',
    });
    const cli = (...args: string[]) => runCli(['--config', world!.configFile, ...args]);
    const [mario, luigi, late] = [fiscalCode(81), fiscalCode(82), fiscalCode(83)];
    fs.writeFileSync(path.join(dir, 'subjects.csv'), `key,ref\n${mario},mario\n${luigi},\n`);
    expect((await cli('subjects', 'import', path.join(dir, 'subjects.csv'))).code).toBe(0);
    expect((await cli('sync', '--once')).code).toBe(0);
    world.sim.depositForSubject(ES, mario, 'CREATE', 'domicile');
    world.sim.depositForSubject(ES, luigi, 'UPDATE', 'domicile'); // no ref: subjectRef null
    world.sim.rotateSeed(ES);
    world.sim.depositForSubject(ES, mario, 'UPDATE', 'domicile');
    world.sim.rotateSeed(ES);
    world.sim.depositForSubject(ES, mario, 'UPDATE', 'residence');
    world.sim.depositForSubject(ES, late, 'DELETE', 'domicile'); // not a subject yet: back-matched later
    expect((await cli('sync', '--once')).code).toBe(0);
    fs.writeFileSync(path.join(dir, 'late.csv'), `key,ref\n${late},late\n`);
    expect((await cli('subjects', 'import', path.join(dir, 'late.csv'))).code).toBe(0);
    expect((await cli('sync', '--once')).code).toBe(0);

    const listed = await cli('events', 'list', '--json');
    const events = listed.stdout.trim().split('\n').map((l) => { const { seq: _seq, ...event } = JSON.parse(l); return event; });
    expect(new Set(events.map((e) => e.type))).toEqual(new Set(['signal', 'resync-required']));
    expect(events.some((e) => e.backfilled === true)).toBe(true);
    expect(events.some((e) => e.type === 'signal' && e.subjectRef === null)).toBe(true);
    expect(events.some((e) => typeof e.subjectKey === 'string')).toBe(true);

    const printed = z.fromJSONSchema(JSON.parse((await runCli(['events', 'schema'])).stdout));
    for (const event of events) expect(printed.safeParse(event).success, JSON.stringify(event.id)).toBe(true);
    const delivered = fs.readFileSync(path.join(dir, 'events.ndjson'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(delivered).toHaveLength(events.length);
    for (const event of delivered) expect(printed.safeParse(event).success).toBe(true);
    expect(outboxEventIds(world)).toHaveLength(events.length); // the shared helper checks each one too
  });

  it('a renamed, missing or mistyped field fails the check, naming it', () => {
    const good = { id: `${ES}:1`, type: 'signal', eserviceId: ES, eserviceName: 'residenze', signalId: 1, signalType: 'UPDATE', objectType: 'domicile', objectId: 'p', subjectRef: 'r', epoch: 1, receivedAt: '2026-11-30T10:00:00.000Z' };
    expect(checkEvent(good)).toEqual({ ok: true, type: 'signal' });
    expect(() => expectContractEvent(good, 'test')).not.toThrow();
    const { subjectRef, ...renamed } = good;
    expect(() => expectContractEvent({ ...renamed, subjectReference: subjectRef }, 'test')).toThrow(/does not validate/);
    expect(checkEvent({ ...good, signalId: '1' })).toMatchObject({ ok: false, error: expect.stringContaining('signalId') });
    expect(checkEvent({ ...good, type: 'other' })).toMatchObject({ ok: false, error: 'unknown event type "other"' });
  });
});
