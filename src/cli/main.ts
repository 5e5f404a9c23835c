#!/usr/bin/env node
import { Command, Option } from 'commander';
import { createRequire } from 'node:module';
import { registerConfig } from './config.js';
import { registerSubjects } from './subjects.js';
import { registerPseudonym } from './pseudonym.js';
import { registerSync } from './sync.js';
import { registerStatus } from './status.js';
import { registerCursor } from './cursor.js';
import { registerEvents } from './events.js';
import { registerResync } from './resync.js';
import { registerSinks } from './sinks.js';
import { registerRun } from './run.js';
import { registerDemo } from './demo.js';
import { registerSimulator } from './simulator.js';
import { registerDoctor } from './doctor.js';
import { registerBackup } from './backup.js';
import { EXIT } from '../errors.js';

const require = createRequire(import.meta.url);
const { version } = require('../../package.json') as { version: string };

export function buildProgram(): Command {
  const program = new Command('signalhub-sync')
    .description('Keeps a consumer of PDND Signal Hub in sync: pulls signals, matches local subjects, delivers change events.')
    .version(version)
    .option('-c, --config <path>', 'config file (default $SIGNALHUB_SYNC_CONFIG or /etc/signalhub-sync/config.toml)')
    .addOption(new Option('--log-level <level>', 'override the configured log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
    .exitOverride((err) => {
      // commander's own exits (help, version) keep 0; usage errors become EX_USAGE.
      process.exit(err.exitCode === 0 ? 0 : EXIT.USAGE);
    });
  registerRun(program);
  registerSync(program);
  registerStatus(program);
  registerSubjects(program);
  registerEvents(program);
  registerResync(program);
  registerCursor(program);
  registerSinks(program);
  registerBackup(program);
  registerConfig(program);
  registerDoctor(program);
  registerPseudonym(program);
  registerDemo(program);
  registerSimulator(program);
  addUsageHints(program, []);
  return program;
}

/**
 * A usage error prints commander's one-line message and a hint naming the command's help,
 * not the whole help text (which buried the message under 20 lines).
 */
function addUsageHints(command: Command, parents: string[]): void {
  const path = [...parents, command.name()];
  command.showHelpAfterError(`(see "${path.join(' ')} --help")`);
  for (const sub of command.commands) addUsageHints(sub, path);
}

await buildProgram().parseAsync(process.argv);
