import fs from 'node:fs';
import { Option, type Command } from 'commander';
import { z } from 'zod';
import { AppError } from '../errors.js';
import { startSimulator } from '../simulator/index.js';
import { eserviceSchema } from '../simulator/admin.js';
import { action, cliLogger } from './common.js';

interface SimulatorCliOptions {
  port: string;
  host: string;
  rateLimit: string;
  rateIntervalMs: string;
  timeWindowMs: string;
  voucherTtl: string;
  assertionAudience?: string;
  m2mAudience?: string;
  eservice: string[];
  seedSignals: string;
  setup?: string;
}

const setupSchema = z.object({
  clients: z
    .array(
      z.object({
        clientId: z.string().min(1),
        kind: z.enum(['m2m', 'eservice']),
        keyId: z.string().min(1),
        /** PEM text, or a path in publicKeyFile. */
        publicKey: z.string().min(1).optional(),
        publicKeyFile: z.string().min(1).optional(),
        organizationId: z.string().min(1),
        purposes: z.array(z.union([z.string().min(1), z.object({ id: z.string().min(1), eserviceId: z.string().min(1) })])).optional(),
      }),
    )
    .default([]),
  eservices: z.array(eserviceSchema).default([]),
});

/**
 * `signalhub-sync simulator`: the local PDND + Signal Hub + producer simulator as a standalone
 * process, for benchmarks and manual trials. Prints one JSON line with its URLs on stdout once
 * listening; further setup can go through its `/_sim/*` control API.
 */
export function registerSimulator(program: Command): void {
  program
    .command('simulator')
    .description('run a local simulator of the PDND token endpoint, Signal Hub and producers (for tests, demos and benchmarks)')
    .option('--port <n>', 'port to listen on (0 = any free port; the simulator preset expects 8787)', '8787')
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--rate-limit <n>', 'requests per interval per organization', '1000')
    .option('--rate-interval-ms <ms>', 'rate-limit interval', '1000')
    .option('--time-window-ms <ms>', 'hide signals younger than this (production: 10000)', '0')
    .option('--voucher-ttl <seconds>', 'expires_in of issued vouchers', '600')
    .option('--assertion-audience <aud>', 'aud expected in client assertions')
    .option('--m2m-audience <aud>', 'aud of M2M vouchers')
    .addOption(new Option('--eservice <id>', 'create an e-service with default settings (repeatable)').argParser((v: string, prev: string[]) => [...prev, v]).default([]))
    .option('--seed-signals <n>', 'deposit N synthetic signals into every e-service at start', '0')
    .option('--setup <file>', 'JSON file with {clients:[...], eservices:[...]} to register at start')
    .action(
      action(async (opts: SimulatorCliOptions, cmd: Command) => {
        const logger = cliLogger(cmd);
        const setup = opts.setup ? readSetup(opts.setup) : { clients: [], eservices: [] };
        const sim = await startSimulator({
          port: integer(opts.port, '--port', 0, 65535),
          host: opts.host,
          rateLimit: { limit: integer(opts.rateLimit, '--rate-limit', 1), intervalMs: integer(opts.rateIntervalMs, '--rate-interval-ms', 1) },
          timeWindowMs: integer(opts.timeWindowMs, '--time-window-ms', 0),
          voucherTtlSeconds: integer(opts.voucherTtl, '--voucher-ttl', 1),
          ...(opts.assertionAudience ? { assertionAudience: opts.assertionAudience } : {}),
          ...(opts.m2mAudience ? { m2mAudience: opts.m2mAudience } : {}),
          logger,
        });
        try {
          for (const c of setup.clients) {
            const publicKey = c.publicKey ?? (c.publicKeyFile ? readFile(c.publicKeyFile, 'setup publicKeyFile') : undefined);
            if (!publicKey) throw new AppError('INPUT_INVALID', `${opts.setup}: client ${c.clientId} needs publicKey or publicKeyFile`);
            sim.registerClient({ ...c, publicKey });
          }
          for (const e of setup.eservices) sim.addEService(e);
          for (const id of opts.eservice) sim.addEService({ id });
          const seedSignals = integer(opts.seedSignals, '--seed-signals', 0);
          const eserviceIds = [...setup.eservices.map((e) => e.id), ...opts.eservice];
          if (seedSignals > 0 && eserviceIds.length === 0) throw new AppError('USAGE', '--seed-signals needs at least one e-service (--eservice or --setup)');
          if (seedSignals > 0) for (const id of eserviceIds) sim.generateSignals(id, seedSignals);
        } catch (err) {
          await sim.close();
          throw err;
        }
        process.stdout.write(`${JSON.stringify({ url: sim.url, tokenUrl: sim.tokenUrl, pullBaseUrl: sim.pullBaseUrl, assertionAudience: sim.assertionAudience, m2mAudience: sim.m2mAudience, pid: process.pid })}\n`);
        logger.info({ url: sim.url }, 'simulator listening');
        await new Promise<void>((resolve) => {
          const stop = () => resolve();
          process.once('SIGTERM', stop);
          process.once('SIGINT', stop);
        });
        await sim.close();
        logger.info('simulator stopped');
      }),
    );
}

function integer(text: string, option: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(n) || n < min || n > max) throw new AppError('USAGE', `${option} must be an integer between ${min} and ${max}, got "${text.slice(0, 20)}"`);
  return n;
}

function readFile(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new AppError('INPUT_NOT_FOUND', `${what}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

function readSetup(file: string): z.infer<typeof setupSchema> {
  let value: unknown;
  try {
    value = JSON.parse(readFile(file, '--setup'));
  } catch (err) {
    if (err instanceof AppError) throw err;
    throw new AppError('INPUT_INVALID', `${file}: not JSON`);
  }
  const parsed = setupSchema.safeParse(value);
  if (!parsed.success) throw new AppError('INPUT_INVALID', `${file}: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  return parsed.data;
}
