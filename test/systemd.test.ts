import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers/fs.js';
import { ROOT } from './helpers/cli.js';

const run = promisify(execFile);
const UNIT_DIR = path.join(ROOT, 'systemd');
const UNITS = ['signalhub-sync.service', 'signalhub-sync-catchup.service', 'signalhub-sync-catchup.timer'];
const SERVICES = UNITS.filter((u) => u.endsWith('.service'));
const INSTALLED_BINARY = '/usr/bin/signalhub-sync';

const hasSystemdAnalyze = fs.existsSync('/usr/bin/systemd-analyze') || fs.existsSync('/bin/systemd-analyze');

interface Outcome {
  code: number;
  output: string;
}

async function analyze(args: string[], cwd: string): Promise<Outcome> {
  try {
    const { stdout, stderr } = await run('systemd-analyze', args, { cwd, env: { ...process.env, SYSTEMD_PAGER: '', SYSTEMD_COLORS: '0' } });
    return { code: 0, output: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, output: (e.stdout ?? '') + (e.stderr ?? '') };
  }
}

/**
 * verify checks that ExecStart= names an executable, and the package is not installed on the
 * test machine: copy the units unchanged except for that path, pointed at a stub.
 */
function stagedUnits(binary: 'stub' | 'missing'): string {
  const dir = tempDir('shs-units-');
  const target = path.join(dir, binary === 'stub' ? 'signalhub-sync' : 'not-installed-signalhub-sync');
  if (binary === 'stub') fs.writeFileSync(target, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  for (const unit of UNITS) {
    const text = fs.readFileSync(path.join(UNIT_DIR, unit), 'utf8');
    fs.writeFileSync(path.join(dir, unit), text.split(INSTALLED_BINARY).join(target));
  }
  return dir;
}

async function exposureOf(dir: string, unit: string): Promise<number> {
  const result = await analyze(['security', '--offline=yes', '--no-pager', `./${unit}`], dir);
  const match = /Overall exposure level for \S+: (\d+(?:\.\d+)?)/.exec(result.output);
  if (!match) throw new Error(`no exposure level in the output of systemd-analyze security:\n${result.output}`);
  return Number(match[1]);
}

function directives(unit: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const raw of fs.readFileSync(path.join(UNIT_DIR, unit), 'utf8').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith('[')) continue;
    const eq = line.indexOf('=');
    const key = line.slice(0, eq);
    map.set(key, [...(map.get(key) ?? []), line.slice(eq + 1)]);
  }
  return map;
}

describe.skipIf(!hasSystemdAnalyze)('systemd units', () => {
  it('pass systemd-analyze verify with no message about our units', async () => {
    const dir = stagedUnits('stub');
    const result = await analyze(['verify', '--man=no', ...UNITS.map((u) => `./${u}`)], dir);
    expect(result.output.split('\n').filter((l) => l.includes('signalhub-sync'))).toEqual([]);
    expect(result.code).toBe(0);
  });

  it('verify would catch a broken unit (the check is not vacuous)', async () => {
    const dir = stagedUnits('missing');
    const result = await analyze(['verify', '--man=no', './signalhub-sync.service'], dir);
    expect(result.code).not.toBe(0);
    expect(result.output).toContain('not-installed-signalhub-sync');
  });

  it.each(SERVICES)('%s has an exposure level of 2.0 or lower in systemd-analyze security --offline', async (unit) => {
    expect(await exposureOf(UNIT_DIR, unit)).toBeLessThanOrEqual(2.0);
  });

  it('the exposure parser reads a high level for an unhardened unit', async () => {
    const dir = tempDir('shs-units-');
    fs.writeFileSync(path.join(dir, 'plain.service'), '[Service]\nExecStart=/bin/true\n');
    expect(await exposureOf(dir, 'plain.service')).toBeGreaterThan(2.0);
  });
});

describe('signalhub-sync.service settings the daemon relies on', () => {
  const service = directives('signalhub-sync.service');

  it('is a notify service whose helper process may notify, with a watchdog', () => {
    expect(service.get('Type')).toEqual(['notify']);
    expect(service.get('NotifyAccess')).toEqual(['all']);
    expect(Number.parseInt(service.get('WatchdogSec')?.[0] ?? '', 10)).toBeGreaterThan(0);
    expect(service.get('ExecReload')).toEqual(['/bin/kill -HUP $MAINPID']);
  });

  it('gives systemd more time to stop than the daemon gives itself (20 s default)', () => {
    expect(Number.parseInt(service.get('TimeoutStopSec')?.[0] ?? '', 10)).toBeGreaterThan(20);
  });

  it('never denies W+X memory (V8 needs it) in any unit', () => {
    for (const unit of SERVICES) expect(directives(unit).get('MemoryDenyWriteExecute') ?? [], unit).not.toContain('yes');
  });

  it('keeps the database in the state directory and runs as the static user the package\'s sysusers.d file creates', () => {
    expect(service.get('StateDirectory')).toEqual(['signalhub-sync']);
    expect(service.get('Environment')).toContain('SIGNALHUB_SYNC_CONFIG=/etc/signalhub-sync/config.toml');
    // One user for the daemon and for `sudo -u signalhub-sync signalhub-sync ...` (README "Who runs what").
    for (const unit of SERVICES) {
      const d = directives(unit);
      expect(d.get('User'), unit).toEqual(['signalhub-sync']);
      expect(d.get('DynamicUser') ?? [], unit).toEqual([]);
    }
    const sysusers = fs.readFileSync(path.join(ROOT, 'packaging/sysusers.conf'), 'utf8');
    expect(sysusers).toMatch(/^u signalhub-sync - /m);
    const tmpfiles = fs.readFileSync(path.join(ROOT, 'packaging/tmpfiles.conf'), 'utf8');
    expect(tmpfiles).toMatch(/^d \/var\/lib\/signalhub-sync\s+0700 signalhub-sync signalhub-sync /m);
    expect(tmpfiles).toMatch(/^d \/etc\/signalhub-sync\/keys\s+0700 signalhub-sync signalhub-sync /m);
  });

  it('the catch-up service runs one sync pass as a oneshot, started by the timer', () => {
    const catchup = directives('signalhub-sync-catchup.service');
    expect(catchup.get('Type')).toEqual(['oneshot']);
    expect(catchup.get('ExecStart')).toEqual([`${INSTALLED_BINARY} sync --once`]);
    const timer = directives('signalhub-sync-catchup.timer');
    expect(timer.get('Persistent')).toEqual(['true']);
    expect(timer.get('OnCalendar')?.length).toBe(1);
  });
});
