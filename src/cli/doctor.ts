import type { Command } from 'commander';
import { ConfigError, EXIT } from '../errors.js';
import { formatDoctorReport, runDoctor, type DoctorReport } from '../daemon/doctor.js';
import { action, loadCliConfig } from './common.js';

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('Preflight that changes nothing: key files, clock, M2M voucher, hub /status, a size=1 pull per e-service, e-service vouchers and crypto info, database, sinks')
    .option('--json', 'print the checks as JSON (for monitoring)')
    .addHelpText(
      'after',
      '\nTalks to PDND, the hub and each producer as the daemon would; moves no cursor, stores and delivers nothing.\n' +
        'One line per check: ✓ passed, ✗ failed (with the fix), - not run because an earlier check failed.\n' +
        'Exit codes: 0 all passed; by the first failure: 69 a party unreachable or failing, 77 a refusal (key, purpose, agreement, file permissions), 78 configuration (file, environment mismatch, clock).',
    )
    .action(
      action(async (opts: { json?: boolean }, cmd: Command) => {
        let report: DoctorReport;
        try {
          // doctor calls PDND like run and sync: it opens the keys (README "Who runs what").
          report = await runDoctor(await loadCliConfig(cmd, { needsSecrets: true }));
        } catch (err) {
          // An unusable file is a failed check like the others: monitoring gets JSON either way.
          if (!(err instanceof ConfigError)) throw err;
          const fix = err.problems.map((p) => `${p.path || '(root)'}: ${p.message}`).join('; ');
          report = { ok: false, exitCode: EXIT.CONFIG, checks: [{ check: 'configuration', ok: false, detail: `${String(err.details?.file ?? 'config file')} is not valid`, fix, kind: 'config' }] };
        }
        process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatDoctorReport(report));
        return report.exitCode;
      }),
    );
}
