import type { Command } from 'commander';
import { backupDatabase } from '../store/backup.js';
import { action, loadCliConfig } from './common.js';

export function registerBackup(program: Command): void {
  const db = program.command('db').description('Database maintenance');
  db.command('backup')
    .description('copy the database to PATH while the daemon runs (consistent snapshot, mode 0600, integrity-checked)')
    .argument('<path>', 'the new backup file (must not exist)')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      '\nThe copy holds fiscal codes and seeds: it is created 0600 and never overwrites a file.\n' +
        'Restore: see README "Backup and restore". Exit codes: 0 done; 64 PATH exists; 66 no database; 74 I/O error or a failed integrity check.',
    )
    .action(
      action(async (target: string, opts: { json?: boolean }, cmd: Command) => {
        // Only reads the database: root keeps its identity, so the copy is root's where root put it.
        const config = await loadCliConfig(cmd, { asDatabaseOwner: false });
        const result = await backupDatabase(config.database, target);
        process.stdout.write(opts.json ? `${JSON.stringify({ source: config.database, ...result, integrity: 'ok' })}\n` : `backup: ${config.database} -> ${result.file} (${result.bytes} bytes, ${result.pages} pages, integrity ok)\n`);
      }),
    );
}
