import { afterEach, describe, expect, it } from 'vitest';
import { createWorld, fiscalCode, type World } from './helpers/world.js';
import { httpGet, metricValue, outboxEventIds, startRun, storeSubjects } from './run-helpers.js';

const ES = '51111111-1111-4111-8111-111111111111';
const SUBJECTS = 200_000;
// A genuinely slow hash, no test-only knob: SHAKE256 over a 1,000-byte seed that the recipe
// repeats eight times (8 KB hashed per subject). Every piece is a configuration users can have.
const SEED = `slow-${'x'.repeat(995)}`;
const TEMPLATE = '${subject}' + '${seed}'.repeat(8);

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

describe('a long reseed never stops the world (ARCHITECTURE invariant 8)', () => {
  it('/healthz and /metrics answer while the pseudonyms of 200k subjects are computed on a slow hash, and the progress gauge moves', async () => {
    world = await createWorld({
      eservices: [{ id: ES, name: 'residenze', seed: SEED, cryptoHashFunction: 'SHAKE256', recipe: { template: TEMPLATE, encoding: 'base64' }, toml: `[eservices.recipe]\ntemplate = "${TEMPLATE}"\n` }],
      toml: '[hub]\npoll_interval_seconds = 1\n\n[http]\nenabled = true\nlisten = "127.0.0.1:0"\n',
    });
    storeSubjects(world, Array.from({ length: SUBJECTS }, (_, i) => ({ key: fiscalCode(i), ref: `r-${i}` })));
    const target = fiscalCode(SUBJECTS - 7);
    const signalId = world.sim.depositForSubject(ES, target, 'UPDATE', 'residence');

    const daemon = startRun(world);
    const url = (await daemon.waitForLog((l) => l.msg === 'health and metrics endpoint listening', 'the HTTP endpoint')).url as string;
    await daemon.waitForLog((l) => l.msg === 'computing the pseudonyms of a seed epoch', 'the reseed to start', 60_000);

    // Poll both endpoints until the event is in the outbox. Fractions strictly between 0 and 1
    // can only be read while the fill is running: each proves the loop answered mid-reseed.
    const healthDuringFill: number[] = [];
    const fractions: number[] = [];
    await daemon.until(async () => {
      const metrics = await httpGet(`${url}/metrics`);
      const fraction = metricValue(metrics.body, 'signalhub_reseed_progress', { eservice: ES });
      const health = await httpGet(`${url}/healthz`);
      if (fraction !== undefined) {
        fractions.push(fraction);
        if (fraction > 0 && fraction < 1) healthDuringFill.push(health.status);
      }
      return outboxEventIds(world!).includes(`${ES}:${signalId}`);
    }, 'the event of the slow-hashed subject', 180_000);

    expect(healthDuringFill.length, `fractions seen: ${fractions.join(', ')}`).toBeGreaterThanOrEqual(3);
    expect(new Set(healthDuringFill)).toEqual(new Set([200]));
    const mid = fractions.filter((f) => f > 0 && f < 1);
    expect(new Set(mid).size, 'the gauge moves during the fill').toBeGreaterThanOrEqual(2);
    expect(fractions.at(-1)).toBe(1);
    // stderr may trail the database: wait for the line rather than read what arrived so far.
    await daemon.waitForLog((l) => l.msg === 'seed epoch ready', 'the reseed to finish');
    const ready = daemon.logs().filter((l) => l.msg === 'seed epoch ready');
    expect(ready.map((l) => l.pseudonyms), JSON.stringify(daemon.logs().filter((l) => /seed|reseed/.test(l.msg)))).toEqual([SUBJECTS]);
  }, 300_000);
});
