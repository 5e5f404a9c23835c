import { Option, type Command } from 'commander';
import fs from 'node:fs';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { AppError, isAppError } from '../errors.js';
import { supportedAlgorithms } from '../crypto/algorithms.js';
import { ENCODINGS, GOVWAY_RECIPE, PseudonymHasher, normalizeSubjectKey, type PseudonymEncoding } from '../crypto/pseudonym.js';
import { action } from './common.js';

interface PseudonymOptions {
  algorithm?: string;
  seedFile?: string;
  template: string;
  encoding: PseudonymEncoding;
}

/**
 * `signalhub-sync pseudonym`: lets an operator check a producer's recipe by hand. The seed comes
 * from a file, never from argv (argv is visible in `ps` and shell history). Needs no config.
 * Exit codes: 64 for a bad --algorithm, --encoding or --template; 66 if the seed file is
 * missing; 65 if it is empty. With `--encoding identity` (SPEC §8b) it prints the normalized keys,
 * which is what such a producer sends: no seed, no algorithm.
 */
export function registerPseudonym(program: Command): void {
  program
    .command('pseudonym')
    .description('Compute pseudonyms of subject keys read from stdin (one per line), printing one pseudonym per line in the same order')
    .option('--algorithm <name>', `cryptoHashFunction as the producer spells it (${supportedAlgorithms().join(', ')}; any case, - or _ variants); required unless --encoding identity`)
    .option('--seed-file <path>', 'file holding the seed exactly as received (one trailing newline is ignored); required unless --encoding identity')
    .option('--template <template>', 'pseudonym template with ${subject}, ${seed}, ${algorithm}', GOVWAY_RECIPE.template)
    .addOption(new Option('--encoding <encoding>', 'output encoding; identity: the objectId is the key in clear').choices([...ENCODINGS]).default(GOVWAY_RECIPE.encoding))
    .addHelpText(
      'after',
      '\nEmpty input lines give empty output lines. With --encoding identity the output is the normalized key (trimmed, upper-cased).\nExit status: 0 ok, 64 bad option, 65 empty seed file, 66 seed file not found.',
    )
    .action(action(async (opts: PseudonymOptions) => run(opts)));
}

async function run(opts: PseudonymOptions): Promise<void> {
  const identity = opts.encoding === 'identity';
  if (identity && (opts.algorithm !== undefined || opts.seedFile !== undefined)) {
    throw new AppError('USAGE', '--encoding identity uses no seed and no algorithm: drop --algorithm and --seed-file');
  }
  if (!identity && opts.algorithm === undefined) throw new AppError('USAGE', "required option '--algorithm <name>' not specified");
  if (!identity && opts.seedFile === undefined) throw new AppError('USAGE', "required option '--seed-file <path>' not specified");
  const seed = identity ? '' : readSeedFile(opts.seedFile!);
  let hasher: PseudonymHasher;
  try {
    hasher = new PseudonymHasher({ template: opts.template, encoding: opts.encoding }, seed, opts.algorithm ?? '');
  } catch (err) {
    // Here the algorithm and template are command-line arguments: a usage error, not a config one.
    if (isAppError(err)) throw new AppError('USAGE', err.message.replace(/^unsupported cryptoHashFunction/, 'unsupported --algorithm'));
    throw err;
  }

  const out = process.stdout;
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  let buffer = '';
  for await (const line of lines) {
    const key = normalizeSubjectKey(line);
    buffer += (key === '' ? '' : hasher.pseudonym(key)) + '\n';
    if (buffer.length >= 64 * 1024) {
      if (!out.write(buffer)) await once(out, 'drain');
      buffer = '';
    }
  }
  if (buffer !== '' && !out.write(buffer)) await once(out, 'drain');
}

/** The seed as the producer sent it: only one trailing `\n` or `\r\n` (an editor's) is dropped. */
export function readSeedFile(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new AppError(code === 'ENOENT' ? 'INPUT_NOT_FOUND' : 'INPUT_INVALID', `cannot read --seed-file ${file} (${code ?? 'read error'})`);
  }
  const seed = text.endsWith('\r\n') ? text.slice(0, -2) : text.endsWith('\n') ? text.slice(0, -1) : text;
  if (seed === '') throw new AppError('INPUT_INVALID', `--seed-file ${file} is empty`);
  return seed;
}
