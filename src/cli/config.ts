import type { Command } from 'commander';
import { action, configPath, globalOptions } from './common.js';
import { loadConfig } from '../config/load.js';
import { summarizeConfig } from '../config/summary.js';
import { configJsonSchema } from '../config/schema-json.js';

export function registerConfig(program: Command): void {
  const config = program.command('config').description('Check the configuration file or print its schema');

  config
    .command('check')
    .description('Validate the config file (keys, URLs, key files) and print a summary; exit 78 listing every problem if invalid')
    .action(
      action(async (_opts: unknown, cmd: Command) => {
        const loaded = await loadConfig(configPath(globalOptions(cmd)));
        process.stdout.write(summarizeConfig(loaded));
      }),
    );

  config
    .command('schema')
    .description('Print the JSON Schema of the TOML config file')
    .action(
      action(async () => {
        process.stdout.write(`${JSON.stringify(configJsonSchema(), null, 2)}\n`);
      }),
    );
}
