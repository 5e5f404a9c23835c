import { generateKeyPairSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { progress, runCli, runNode, startCliWithBanner, stopChild } from './proc.mjs';
import { writeSubjectsCsv } from './data.mjs';

const ORG = 'org-bench';
const M2M_CLIENT = 'b0b0b0b0-0000-4000-8000-000000000001';
const ES_CLIENT = 'b0b0b0b0-0000-4000-8000-000000000002';

/** The e-service the catch-up (unlimited hub) pulls, and the one the paced catch-up (25 req/s) pulls. */
const CATCHUP = { id: 'b0b0b0b0-0000-4000-8000-0000000000e1', name: 'bench-catchup', purposeId: 'b0b0b0b0-0000-4000-8000-0000000000f1' };
const PACED = { id: 'b0b0b0b0-0000-4000-8000-0000000000e2', name: 'bench-paced', purposeId: 'b0b0b0b0-0000-4000-8000-0000000000f2' };

/** Effectively unlimited: the catch-up measures the consumer, not the hub's budget. */
export const UNLIMITED_RATE = { limit: 100_000_000, intervalMs: 1000 };

/**
 * The world every phase shares: a simulator in its own process (the `simulator` CLI command), a
 * consumer config pointing at it, and a database holding N subjects with the initial seed epoch
 * of both e-services already computed (as on a consumer that has been running).
 */
export async function createFixture({ dir, subjects, pacedSignals }) {
  const setup = {};
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const privatePem = privateKey.export({ type: 'pkcs8', format: 'pem' });
  const publicPem = publicKey.export({ type: 'spki', format: 'pem' });
  for (const name of ['m2m.pem', 'eservice.pem']) fs.writeFileSync(path.join(dir, name), privatePem, { mode: 0o600 });

  const eservices = {
    catchup: { ...CATCHUP, seed: randomBytes(16).toString('base64') },
    paced: { ...PACED, seed: randomBytes(16).toString('base64'), signals: pacedSignals },
  };
  const setupFile = path.join(dir, 'simulator-setup.json');
  fs.writeFileSync(
    setupFile,
    JSON.stringify({
      clients: [
        { clientId: M2M_CLIENT, kind: 'm2m', keyId: 'kid-m2m', publicKey: publicPem, organizationId: ORG },
        {
          clientId: ES_CLIENT,
          kind: 'eservice',
          keyId: 'kid-es',
          publicKey: publicPem,
          organizationId: ORG,
          purposes: Object.values(eservices).map((e) => ({ id: e.purposeId, eserviceId: e.id })),
        },
      ],
      eservices: Object.values(eservices).map((e) => ({ id: e.id, seed: e.seed })),
    }),
  );
  progress('starting the simulator (separate process)');
  const { child: simChild, banner } = await startCliWithBanner([
    '--log-level', 'warn',
    'simulator', '--port', '0',
    '--rate-limit', String(UNLIMITED_RATE.limit), '--rate-interval-ms', String(UNLIMITED_RATE.intervalMs),
    '--setup', setupFile,
  ]);
  const sim = {
    url: banner.url,
    pid: banner.pid,
    async call(method, route, body) {
      const response = await fetch(`${banner.url}${route}`, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      if (!response.ok) throw new Error(`simulator ${method} ${route}: ${response.status} ${text.slice(0, 300)}`);
      return JSON.parse(text);
    },
    stats() {
      return this.call('GET', '/_sim/stats');
    },
    setRateLimit(rateLimit) {
      return this.call('POST', '/_sim/settings', { rateLimit });
    },
  };

  const configFile = path.join(dir, 'config.toml');
  const dbFile = path.join(dir, 'state.db');
  const writeConfig = (file, { database = 'state.db', extraToml = '' } = {}) => fs.writeFileSync(file, configToml(banner.url, Object.values(eservices), database, extraToml));
  writeConfig(configFile);

  progress(`writing ${subjects} subjects (fiscal codes) to CSV`);
  const csv = path.join(dir, 'subjects.csv');
  await writeSubjectsCsv(csv, subjects);
  progress('importing them (the code of "subjects import", in its own process, event loop watched)');
  const imported = await runNode([path.join(import.meta.dirname, 'import-child.mjs'), configFile, csv]);
  const report = JSON.parse(imported.stdout);
  if (report.imported !== subjects) throw new Error(`subjects import stored ${report.imported} of ${subjects}`);
  setup.subjectsImportSeconds = round(report.seconds);
  const importFigures = { subjects, seconds: round(report.seconds), stallMs: report.stallMs, peakRssMb: round(report.peakRssMb, 1), targets: { maxSecondsAt10M: 150, maxStallMs: 250, maxPeakRssMb: 250 } };
  progress(`  ${subjects} subjects in ${report.seconds.toFixed(1)} s, longest stall ${report.stallMs} ms, peak RSS ${report.peakRssMb.toFixed(0)} MB`);
  fs.rmSync(csv);

  progress('first "sync --once" (no signals yet): the initial seed epoch of each e-service');
  const prime = await runCli(['--config', configFile, 'sync', '--once', '--json']);
  const primed = JSON.parse(prime.stdout);
  if (!primed.eservices.every((e) => e.ok)) throw new Error(`initial sync failed: ${prime.stdout}`);
  setup.initialSyncSeconds = round(prime.seconds);
  setup.initialSyncNote = 'sync --once of 2 e-services with no signals: each opens its first epoch (pseudonyms are computed lazily)';
  progress('filling the first epochs (ensureFilled), so that the catch-up phases time matching only');
  const filled = JSON.parse((await runNode([path.join(import.meta.dirname, 'reseed-child.mjs'), 'prime', dbFile])).stdout);
  setup.initialFillSeconds = round(filled.seconds);

  return {
    dir,
    configFile,
    import: importFigures,
    dbFile,
    subjects,
    sim,
    eservices,
    setup,
    /** Writes another config for the same world (e.g. another database, other settings). */
    writeConfig,
    async close() {
      await stopChild(simChild);
    },
  };
}

function configToml(simulatorUrl, eservices, database, extraToml) {
  return `preset = "simulator"
simulator_url = "${simulatorUrl}"
database = "${database}"

[log]
level = "warn"

[pdnd.m2m]
client_id = "${M2M_CLIENT}"
key_id = "kid-m2m"
private_key_file = "m2m.pem"

[pdnd.eservice_client]
client_id = "${ES_CLIENT}"
key_id = "kid-es"
private_key_file = "eservice.pem"

[hub]
page_size = 100
poll_interval_seconds = 3600
poll_jitter = 0

${extraToml}

${eservices.map((e) => `[[eservices]]\nid = "${e.id}"\nname = "${e.name}"\npurpose_id = "${e.purposeId}"\n`).join('\n')}`;
}

export const round = (x, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;
