#!/usr/bin/env node
/**
 * signalhub-sync benchmarks: each hot path measured next to its limit, measured in the same run
 * on the same machine (see bench/README.md). Progress goes to stderr; stdout gets the table, or
 * with --json exactly one JSON object.
 *
 *   npm run bench [-- --json] [--scale] [--subjects N] [--signals N] [--paced-seconds S] [--keep]
 *
 * --scale runs 10 M subjects (unless --subjects says otherwise): expect tens of minutes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { progress } from './lib/proc.mjs';
import { createFixture } from './lib/fixture.mjs';
import { benchReseed } from './lib/reseed.mjs';
import { benchCatchup, benchPaced } from './lib/catchup.mjs';
import { benchFootprint } from './lib/footprint.mjs';
import { formatTable } from './lib/report.mjs';

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    subjects: { type: 'string', default: '1000000' },
    signals: { type: 'string', default: '1000000' },
    'paced-seconds': { type: 'string', default: '30' },
    'footprint-seconds': { type: 'string', default: '5' },
    keep: { type: 'boolean', default: false },
    scale: { type: 'boolean', default: false },
    dir: { type: 'string' },
  },
});

function count(name, min) {
  const text = values[name].replaceAll('_', '').replaceAll(',', '');
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min) {
    process.stderr.write(`--${name} must be an integer >= ${min}, got "${values[name]}"\n`);
    process.exit(64);
  }
  return n;
}

// --scale: the figures the issue targets at 10 M subjects (reseed and import stalls, seconds, RSS).
if (values.scale && !process.argv.some((a) => a.startsWith('--subjects'))) values.subjects = '10000000';
const options = {
  scale: values.scale,
  subjects: count('subjects', 100),
  signals: count('signals', 100),
  pacedSeconds: count('paced-seconds', 1),
  footprintSeconds: count('footprint-seconds', 0),
};

function machine() {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    model: cpus[0]?.model.trim() ?? 'unknown',
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    totalMemGb: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    loadAvg1AtStart: Math.round(os.loadavg()[0] * 100) / 100,
  };
}

const started = Date.now();
const result = { options, machine: machine() };
const dir = values.dir ? path.resolve(values.dir) : fs.mkdtempSync(path.join(os.tmpdir(), 'shs-bench-'));
fs.mkdirSync(dir, { recursive: true });
progress(`working in ${dir}: ${options.subjects} subjects, ${options.signals} signals`);
const fixture = await createFixture({ dir, subjects: options.subjects, pacedSignals: Math.round(options.pacedSeconds * 25) * 100 });
try {
  result.setup = fixture.setup;
  result.import = fixture.import;
  result.reseed = await benchReseed(fixture);
  result.catchup = await benchCatchup(fixture, { signals: options.signals });
  result.paced = await benchPaced(fixture);
  result.footprint = await benchFootprint(fixture, { settleSeconds: options.footprintSeconds });
  result.db = { bytesPerPseudonym: result.footprint.bytesPerPseudonym, reseedTableBytesPerPseudonym: result.reseed.bytesPerPseudonym, targetMaxBytesPerPseudonym: 24 };
} finally {
  await fixture.close();
  if (!values.keep && !values.dir) fs.rmSync(dir, { recursive: true, force: true });
}
result.machine.loadAvg1AtEnd = Math.round(os.loadavg()[0] * 100) / 100;
result.totalSeconds = Math.round((Date.now() - started) / 100) / 10;
progress(`done in ${result.totalSeconds} s`);
process.stdout.write(values.json ? `${JSON.stringify(result)}\n` : formatTable(result));
