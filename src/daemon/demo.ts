import { generateKeyPair, randomInt, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/types.js';
import { AppError } from '../errors.js';
import type { Logger } from '../log.js';
import { startSimulator, type Simulator } from '../simulator/index.js';
import { openDatabase } from '../store/db.js';
import { WriterLock } from '../store/lock.js';
import { fiscalCodeCheckChar } from '../subjects/fiscal-code.js';
import { importSubjects, subjectIndexOptions } from '../subjects/import.js';

/** The preset the demo runs with, shipped in the package's config/ folder. */
export const DEMO_CONFIG_FILE = fileURLToPath(new URL('../../config/demo.toml', import.meta.url));

const DEMO_ORGANIZATION = 'demo-consumer-organization';

/** The first 15 characters of made-up fiscal codes; the check character is computed. */
const SUBJECT_STEMS = [
  'RSSMRA80A01H501', 'BNCLCU75B42F205', 'VRDGPP62C15L219', 'GLLFNC90D50G273', 'NRINNA85E41A662',
  'FRRSFN70H12D612', 'CLMPLA68L55C351', 'RCCGLI93M08F839', 'MRNLRA88P62H501', 'CSTCHR79R47F205',
  'GRCMTT91S03L736', 'LMBSRA83T58A944', 'PLLDVD77A19B354', 'SNTLSS95B63H224', 'DLCNDR66C22E506',
  'MNCFRC89D44G702', 'BRBPTR72E30I452', 'CRSVLR94H51L378', 'TSTMRC81L09D969', 'FNTGNN74M60C933',
];

export interface DemoSubject {
  /** A valid fiscal code (personal data in real life: never printed, not even in the demo). */
  key: string;
  /** The local reference the events carry. */
  ref: string;
}

/** The demo's local subjects: about twenty valid fiscal codes with their local references. */
export const DEMO_SUBJECTS: readonly DemoSubject[] = SUBJECT_STEMS.map((stem, i) => ({
  key: stem + fiscalCodeCheckChar(stem),
  ref: `PRATICA-${String(i + 1).padStart(3, '0')}`,
}));

export interface DemoWorld {
  /** Where the database and the generated keys live. */
  dir: string;
  /** Whether `dir` was created here (and is removed by close()). */
  temporary: boolean;
  sim: Simulator;
  config: Config;
  configFile: string;
  subjects: readonly DemoSubject[];
  /** Stops the simulator; removes the directory if it was temporary. */
  close(): Promise<void>;
}

/**
 * Everything the daemon needs to run without PDND: client keys generated into `dir`, the
 * simulator on a free loopback port with the clients, purposes and e-services of
 * config/demo.toml registered, and the demo subjects imported through the real import path.
 */
export async function createDemoWorld(options: { dir?: string; logger: Logger; env?: NodeJS.ProcessEnv }): Promise<DemoWorld> {
  const env = options.env ?? process.env;
  const temporary = options.dir === undefined;
  const dir = options.dir !== undefined ? path.resolve(options.dir) : fs.mkdtempSync(path.join(os.tmpdir(), 'signalhub-sync-demo-'));
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  let sim: Simulator | undefined;
  try {
    const [m2mKey, eserviceKey] = await Promise.all([writeKeyPair(path.join(dir, 'm2m.pem')), writeKeyPair(path.join(dir, 'eservice.pem'))]);
    sim = await startSimulator({ logger: options.logger });
    env.SIGNALHUB_SYNC_DEMO_DIR = dir;
    env.SIGNALHUB_SYNC_SIMULATOR_URL = sim.url;
    const config = await loadConfig(DEMO_CONFIG_FILE, { env });
    registerInSimulator(sim, config, { 'm2m.pem': m2mKey, 'eservice.pem': eserviceKey });
    await importDemoSubjects(config);
    const started = sim;
    return {
      dir,
      temporary,
      sim: started,
      config,
      configFile: DEMO_CONFIG_FILE,
      subjects: DEMO_SUBJECTS,
      close: async () => {
        await started.close();
        if (temporary) fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await sim?.close();
    if (temporary) fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function writeKeyPair(file: string): Promise<KeyObject> {
  const { privateKey, publicKey } = await promisify(generateKeyPair)('rsa', { modulusLength: 2048 });
  fs.writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return publicKey;
}

/** The simulator learns the consumer's clients, purposes and e-services from the loaded config; keys by file name. */
function registerInSimulator(sim: Simulator, config: Config, publicKeys: Record<string, KeyObject>): void {
  const publicKeyOf = (file: string): KeyObject => {
    const key = publicKeys[path.basename(file)];
    if (!key) throw new AppError('CONFIG_INVALID', `demo: ${file} is not one of the keys the demo generates (m2m.pem, eservice.pem)`);
    return key;
  };
  const m2m = config.pdnd.m2m;
  sim.registerClient({ clientId: m2m.clientId, kind: 'm2m', keyId: m2m.keyId, publicKey: publicKeyOf(m2m.privateKeyFile), organizationId: DEMO_ORGANIZATION });
  const byClient = new Map<string, Config['eservices']>();
  for (const es of config.eservices) byClient.set(es.client.clientId, [...(byClient.get(es.client.clientId) ?? []), es]);
  for (const eservices of byClient.values()) {
    const client = eservices[0]!.client;
    sim.registerClient({
      clientId: client.clientId,
      kind: 'eservice',
      keyId: client.keyId,
      publicKey: publicKeyOf(client.privateKeyFile),
      organizationId: DEMO_ORGANIZATION,
      purposes: eservices.map((es) => ({ id: es.purposeId, eserviceId: es.id })),
    });
  }
  // Producers that say which SEEDUPDATE introduced their seed (GovWay's option), so the demo
  // shows clean, known seed epochs.
  for (const es of config.eservices) sim.addEService({ id: es.id, recipe: es.recipe, includeSignalId: true });
}

async function importDemoSubjects(config: Config): Promise<void> {
  const lock = WriterLock.acquire(config.database, 'demo setup');
  try {
    const db = openDatabase(config.database);
    try {
      const csv = ['key,ref', ...DEMO_SUBJECTS.map((s) => `${s.key},${s.ref}`)].join('\n');
      const report = await importSubjects(db, Readable.from([csv]), {
        format: 'csv',
        source: 'demo subjects',
        eservices: config.eservices.map((e) => ({ id: e.id, name: e.name })),
        validate: config.subjects.validate,
        index: subjectIndexOptions(config),
      });
      if (report.rejectedCount > 0) throw new AppError('INTERNAL', `demo subjects rejected: ${report.rejected.map((r) => `line ${r.line}: ${r.reason}`).join('; ')}`);
    } finally {
      db.close();
    }
  } finally {
    lock.release();
  }
}

/** What a newcomer reads first. */
export function demoBanner(world: DemoWorld, options: { rotateAfterSeconds: number }): string {
  const names = world.config.eservices.map((e) => `"${e.name}" (${e.recipe.encoding} pseudonyms)`).join(' and ');
  const first = world.config.eservices[0]?.name ?? 'the first e-service';
  const refs = `${world.subjects[0]?.ref ?? ''}..${world.subjects[world.subjects.length - 1]?.ref ?? ''}`;
  return [
    '',
    'signalhub-sync demo: no PDND credentials needed',
    '',
    `  A simulated PDND + Signal Hub runs at ${world.sim.url} with two producer e-services,`,
    `  ${names}.`,
    `  This consumer follows both and has ${world.subjects.length} local subjects (fiscal codes, never shown), ${refs}.`,
    '',
    '  "producer" lines: a producer deposits a signal about someone, ours or not.',
    '  Lines starting with a time: signalhub-sync pulled the signal, matched its pseudonym against',
    `  its own subjects' pseudonyms and delivered a change event (poll every ${world.config.hub.pollIntervalSeconds} s).`,
    `  After about ${options.rotateAfterSeconds} s "${first}" rotates its seed (SEEDUPDATE): signalhub-sync fetches`,
    '  the new seed, recomputes the pseudonyms, and matching goes on.',
    '',
    `  State (database, generated keys): ${world.dir}${world.temporary ? ' (removed at exit)' : ''}`,
    '  Stop with Ctrl-C.',
    '',
    '',
  ].join('\n');
}

export interface FeederOptions {
  sim: Simulator;
  config: Config;
  subjects: readonly DemoSubject[];
  /** Where narration lines go (the terminal). */
  print: (line: string) => void;
  /** Pause between deposits: uniformly within [min, max] ms. Default 500..1000. */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** First SEEDUPDATE, on the first e-service. Default 12 s. */
  rotateAfterMs?: number;
  /** Later SEEDUPDATEs, alternating e-services. Default 45 s. */
  rotateEveryMs?: number;
  /** Share of deposits about one of our subjects. Default 0.5. */
  matchShare?: number;
}

export interface FeederStats {
  deposited: number;
  ours: number;
  rotations: number;
}

export interface Feeder {
  stop(): void;
  stats(): FeederStats;
}

const OBJECT_TYPES = ['residenza', 'carta-identita', 'domicilio-digitale'];

/**
 * Plays the producers: deposits a signal every half second to a second, alternating
 * e-services, about one of our subjects or about someone else, and rotates seeds now and then.
 */
export function startFeeder(options: FeederOptions): Feeder {
  const eservices = options.config.eservices;
  if (eservices.length === 0) throw new AppError('CONFIG_INVALID', 'demo: the configuration has no e-services to feed');
  const minDelay = options.minDelayMs ?? 500;
  const maxDelay = Math.max(minDelay, options.maxDelayMs ?? 1000);
  const rotateEvery = options.rotateEveryMs ?? 45_000;
  const stats: FeederStats = { deposited: 0, ours: 0, rotations: 0 };
  const width = Math.max(...eservices.map((e) => e.name.length));
  let turn = 0;
  const justRotated = new Set<string>();
  let nextRotation = Date.now() + (options.rotateAfterMs ?? 12_000);
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  const say = (es: (typeof eservices)[number], text: string): void => options.print(`  producer  ${es.name.padEnd(width)}  ${text}`);

  const step = (): void => {
    if (Date.now() >= nextRotation) {
      const es = eservices[stats.rotations % eservices.length]!;
      const id = options.sim.rotateSeed(es.id);
      stats.rotations++;
      justRotated.add(es.id);
      nextRotation = Date.now() + rotateEvery;
      say(es, `#${id} SEEDUPDATE: new seed from here on; signalhub-sync must fetch it and recompute the pseudonyms`);
      return;
    }
    const es = eservices[turn++ % eservices.length]!;
    const objectType = OBJECT_TYPES[eservices.indexOf(es) % OBJECT_TYPES.length]!;
    const signalType = pick(['UPDATE', 'UPDATE', 'UPDATE', 'CREATE', 'DELETE']);
    // The first signal after a rotation is always one of ours: the newcomer sees matching go on.
    const ours = justRotated.delete(es.id) || Math.random() < (options.matchShare ?? 0.5);
    const subject = ours ? pick(options.subjects) : undefined;
    const id = options.sim.depositForSubject(es.id, subject?.key ?? someoneElse(), signalType, objectType);
    stats.deposited++;
    if (ours) stats.ours++;
    say(es, `#${id} ${signalType} ${objectType} about ${subject ? `one of ours (${subject.ref})` : 'someone else'}`);
  };

  const schedule = (): void => {
    if (stopped) return;
    timer = setTimeout(() => {
      step();
      schedule();
    }, minDelay + Math.random() * (maxDelay - minDelay));
  };
  schedule();
  return {
    stop: () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
    stats: () => ({ ...stats }),
  };
}

function pick<T>(items: readonly T[]): T {
  return items[randomInt(items.length)]!;
}

/** A valid fiscal code of a random person who is not among our subjects. */
function someoneElse(): string {
  const letters = 'BCDFGHLMNPRSTVZ';
  const letter = (): string => letters[randomInt(letters.length)]!;
  const digits = (n: number, max: number): string => String(randomInt(max)).padStart(n, '0');
  const stem = `${letter()}${letter()}${letter()}${letter()}${letter()}${letter()}${digits(2, 100)}${'ABCDEHLMPRST'[randomInt(12)]}${String(1 + randomInt(28)).padStart(2, '0')}H501`;
  const key = stem + fiscalCodeCheckChar(stem);
  return DEMO_SUBJECTS.some((s) => s.key === key) ? someoneElse() : key;
}
