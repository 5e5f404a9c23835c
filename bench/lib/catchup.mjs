import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { progress, runCli, runNode, sleep } from './proc.mjs';
import { expectedMatches, signalChunks } from './data.mjs';
import { round, UNLIMITED_RATE } from './fixture.mjs';

const LIMIT_CLIENT = path.join(import.meta.dirname, 'fetch-limit.mjs');
const DURABLE_CLIENT = path.join(import.meta.dirname, 'durable-limit.mjs');
const PACED_RATE = { limit: 25, intervalMs: 1000 };

async function deposit(fixture, eservice, count) {
  let matches = 0;
  for (const { signals, matchesSoFar } of signalChunks({ count, subjects: fixture.subjects, seed: eservice.seed })) {
    const answer = await fixture.sim.call('POST', '/_sim/deposit', { eserviceId: eservice.id, signals });
    if (answer.count !== signals.length) throw new Error(`simulator stored ${answer.count} of ${signals.length} signals`);
    matches = matchesSoFar;
  }
  return matches;
}

function syncOnce(fixture, eservice, extra = [], configFile = fixture.configFile) {
  return runCli(['--config', configFile, ...extra, 'sync', '--once', '--eservice', eservice.id, '--json']);
}

function copyDatabase(from, to) {
  for (const suffix of ['', '-wal']) {
    if (fs.existsSync(from + suffix)) fs.copyFileSync(from + suffix, to + suffix);
  }
}

function removeDatabase(file) {
  for (const suffix of ['', '-wal', '-shm', '.lock', '.lock.json', '.lock-journal']) fs.rmSync(file + suffix, { force: true });
}

function outcomeOf(run, eservice) {
  const outcome = JSON.parse(run.stdout).eservices.find((e) => e.eserviceId === eservice.id);
  if (!outcome?.ok) throw new Error(`sync --once of ${eservice.name} failed: ${run.stdout}`);
  return outcome;
}

function outboxSignalEvents(fixture, eservice) {
  const db = new Database(fixture.dbFile, { readonly: true });
  try {
    return db.prepare("SELECT count(*) AS n FROM outbox WHERE kind = 'signal' AND eservice_id = ?").get(eservice.id).n;
  } finally {
    db.close();
  }
}

/**
 * Catch-up: `sync --once` (a child process) pulls N signals from the simulator (another process)
 * and writes the matched 1% to the outbox. The limit is a fetch-only client over one keep-alive
 * connection pulling the same pages; it runs before and after the engine and its better run
 * counts (warm-up and noise then favour the limit, never the engine). Both are timed as whole
 * processes (start, voucher, pulls, exit).
 */
export async function benchCatchup(fixture, { signals }) {
  const eservice = fixture.eservices.catchup;
  progress(`depositing ${signals} signals (1% of them about stored subjects) and ${fixture.eservices.paced.signals} for the paced phase`);
  const expected = await deposit(fixture, eservice, signals);
  await deposit(fixture, fixture.eservices.paced, fixture.eservices.paced.signals);
  if (expected !== expectedMatches(signals)) throw new Error('bench: match accounting is off');
  await fixture.sim.setRateLimit(UNLIMITED_RATE);
  // The same starting point for the variant without the signal log (subjects.backfill = false).
  const variantDb = path.join(fixture.dir, 'variant.db');
  const variantConfig = path.join(fixture.dir, 'config-no-signal-log.toml');
  copyDatabase(fixture.dbFile, variantDb);
  fixture.writeConfig(variantConfig, { database: 'variant.db', extraToml: '[subjects]\nbackfill = false\n' });

  // The minimal durable consumer starts from the same database state, on its own copy.
  const durableDb = path.join(fixture.dir, 'durable.db');
  const startDb = path.join(fixture.dir, 'start.db');
  copyDatabase(fixture.dbFile, startDb);
  const durableRuns = [];
  const durableRun = async () => {
    copyDatabase(startDb, durableDb);
    try {
      const run = await runNode([DURABLE_CLIENT, fixture.configFile, durableDb, eservice.id, '100']);
      const r = JSON.parse(run.stdout);
      if (r.signals !== signals || r.matches !== expected) throw new Error(`durable limit: ${r.signals} signals, ${r.matches} matches`);
      return { signalsPerSec: r.signals / run.seconds, seconds: run.seconds };
    } finally {
      removeDatabase(durableDb);
    }
  };
  progress('catch-up limit: minimal durable consumer (run 1)');
  durableRuns.push(await durableRun());
  progress(`  ${durableRuns[0].signalsPerSec.toFixed(0)} signals/s`);
  const limitRuns = [];
  progress('catch-up limit: fetch-only client, one keep-alive connection (run 1)');
  limitRuns.push(await limitRun(fixture, eservice, signals));
  progress(`  ${limitRuns[0].signalsPerSec.toFixed(0)} signals/s; sync --once (engine)`);
  const before = await fixture.sim.stats();
  const run = await syncOnce(fixture, eservice);
  const after = await fixture.sim.stats();
  const outcome = outcomeOf(run, eservice);
  const signalsPerSec = outcome.signals / run.seconds;
  progress(`  ${outcome.signals} signals, ${outcome.matches} matches in ${run.seconds.toFixed(1)} s = ${signalsPerSec.toFixed(0)} signals/s`);
  progress('  the same without the signal log (subjects.backfill = false), on a copy of the database');
  let variant;
  try {
    const variantRun = await syncOnce(fixture, eservice, [], variantConfig);
    const variantOutcome = outcomeOf(variantRun, eservice);
    if (variantOutcome.signals !== signals || variantOutcome.matches !== expected) throw new Error(`catch-up without signal log: ${variantOutcome.signals} signals, ${variantOutcome.matches} matches`);
    variant = { seconds: variantRun.seconds, signalsPerSec: variantOutcome.signals / variantRun.seconds };
  } finally {
    removeDatabase(variantDb);
  }
  progress(`  ${variant.signalsPerSec.toFixed(0)} signals/s without the signal log; minimal durable consumer run 2`);
  durableRuns.push(await durableRun());
  const durableSignalsPerSec = Math.max(...durableRuns.map((r) => r.signalsPerSec));
  progress(`  durable ${durableRuns.map((r) => r.signalsPerSec.toFixed(0)).join(', ')} signals/s; fetch-only limit run 2`);
  limitRuns.push(await limitRun(fixture, eservice, signals));
  const limitSignalsPerSec = Math.max(...limitRuns.map((r) => r.signalsPerSec));
  progress(`  limit ${limitRuns.map((r) => r.signalsPerSec.toFixed(0)).join(', ')} signals/s; sync --once (engine) run 2, on a copy of the starting database`);
  // The engine gets two runs as the limits do (a loaded machine otherwise penalizes it alone).
  const secondDb = path.join(fixture.dir, 'engine-2.db');
  const secondConfig = path.join(fixture.dir, 'config-engine-2.toml');
  copyDatabase(startDb, secondDb);
  fixture.writeConfig(secondConfig, { database: 'engine-2.db' });
  let second;
  try {
    const secondRun = await syncOnce(fixture, eservice, [], secondConfig);
    const secondOutcome = outcomeOf(secondRun, eservice);
    if (secondOutcome.signals !== signals || secondOutcome.matches !== expected) throw new Error(`catch-up run 2: ${secondOutcome.signals} signals, ${secondOutcome.matches} matches`);
    second = { seconds: secondRun.seconds, signalsPerSec: secondOutcome.signals / secondRun.seconds };
  } finally {
    removeDatabase(secondDb);
    removeDatabase(startDb);
  }
  const engineRuns = [{ seconds: run.seconds, signalsPerSec }, second];
  const best = engineRuns.reduce((a, b) => (b.signalsPerSec > a.signalsPerSec ? b : a));
  progress(`  engine ${engineRuns.map((r) => r.signalsPerSec.toFixed(0)).join(', ')} signals/s`);

  const events = outboxSignalEvents(fixture, eservice);
  if (outcome.signals !== signals || outcome.matches !== expected || events !== expected || !outcome.caughtUp) {
    throw new Error(`catch-up result wrong: ${outcome.signals}/${signals} signals, ${outcome.matches}/${expected} matches, ${events} outbox events`);
  }
  return {
    limit: 'minimal durable consumer (bench/lib/durable-limit.mjs): per page parse, decode, the same pseudonym lookup, outbox insert, signal log and cursor update in one transaction, same PRAGMAs; best of two runs',
    durableLimitSignalsPerSec: Math.round(durableSignalsPerSec),
    durableRunsSignalsPerSec: durableRuns.map((r) => Math.round(r.signalsPerSec)),
    durableRatio: round(best.signalsPerSec / durableSignalsPerSec, 2),
    durableTarget: { minRatio: 0.9 },
    fetchOnlyNote: 'limitSignalsPerSec / ratio: the fetch-only client (no durable work), kept for comparison with earlier runs; a diagnostic with no target (issue 13 replaced its 0.5 target by durableRatio >= 0.9: the fetch-only client does none of the durable work)',
    signals,
    seconds: round(best.seconds),
    signalsPerSec: Math.round(best.signalsPerSec),
    engineRunsSignalsPerSec: engineRuns.map((r) => Math.round(r.signalsPerSec)),
    engineNote: 'best of two sync --once runs from the same starting database, as each limit is the best of two',
    limitSignalsPerSec: Math.round(limitSignalsPerSec),
    limitRunsSignalsPerSec: limitRuns.map((r) => Math.round(r.signalsPerSec)),
    ratio: round(best.signalsPerSec / limitSignalsPerSec, 2),
    withoutSignalLog: { signalsPerSec: Math.round(variant.signalsPerSec), ratio: round(variant.signalsPerSec / limitSignalsPerSec, 2), note: 'subjects.backfill = false: no signal_log rows (no back-matching of subjects added later)' },
    pages: outcome.pages,
    requests: (after.requests.pull ?? 0) - (before.requests.pull ?? 0),
    matches: outcome.matches,
    verified: { expectedMatches: expected, outboxEvents: events },
  };
}

async function limitRun(fixture, eservice, signals) {
  const run = await runNode([LIMIT_CLIENT, fixture.configFile, eservice.id, '100']);
  const result = JSON.parse(run.stdout);
  if (result.signals !== signals) throw new Error(`limit client saw ${result.signals} of ${signals} signals`);
  return { signalsPerSec: result.signals / run.seconds, loopSignalsPerSec: result.signalsPerSec, seconds: run.seconds };
}

/**
 * Paced catch-up: the simulator limited to 25 requests/s per organization (production's limit);
 * `sync --once` should use nearly all of it and never be refused. The rate is taken from the
 * client's own page log (debug): pages after the first, over the time between first and last.
 */
export async function benchPaced(fixture) {
  const eservice = fixture.eservices.paced;
  await fixture.sim.setRateLimit(PACED_RATE);
  // The hub's fixed window may still hold the previous phase's requests: let it roll over, so the
  // new process starts, as a real one would, in a window it has not been refused in yet.
  await sleep(PACED_RATE.intervalMs * 1.5);
  const before = await fixture.sim.stats();
  progress(`paced catch-up: ${eservice.signals} signals at ${PACED_RATE.limit} requests/s`);
  const run = await syncOnce(fixture, eservice, ['--log-level', 'debug']);
  const after = await fixture.sim.stats();
  await fixture.sim.setRateLimit(UNLIMITED_RATE);
  const outcome = outcomeOf(run, eservice);
  const times = run.stderr
    .split('\n')
    .filter((line) => line.includes('"hub page"'))
    .map((line) => Date.parse(JSON.parse(line).time));
  if (times.length < 3) throw new Error(`paced: only ${times.length} page log lines`);
  const requestsPerSec = (times.length - 1) / ((times.at(-1) - times[0]) / 1000);
  const responses429 = after.responses429 - before.responses429;
  const requests = (after.requests.pull ?? 0) - (before.requests.pull ?? 0);
  progress(`  ${times.length} pages, ${requestsPerSec.toFixed(2)} requests/s, ${responses429} 429s`);
  if (outcome.signals !== eservice.signals) throw new Error(`paced: ${outcome.signals} of ${eservice.signals} signals`);
  return {
    signals: eservice.signals,
    requests,
    requestsPerSec: round(requestsPerSec, 2),
    limitRequestsPerSec: PACED_RATE.limit,
    ratio: round(requestsPerSec / PACED_RATE.limit, 3),
    responses429,
    target: { minRatio: 0.9, responses429: 0 },
    seconds: round(run.seconds),
  };
}
