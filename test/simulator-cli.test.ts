import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { fetch } from 'undici';
import { SignJWT } from 'jose';
import { runCli, spawnCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { testKey } from './helpers/keys.js';

// `signalhub-sync simulator` as benchmarks use it: a separate process, configured by a setup
// file and its control API, announcing its URL as one JSON line on stdout.

const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

interface Announcement {
  url: string;
  tokenUrl: string;
  pullBaseUrl: string;
  assertionAudience: string;
  m2mAudience: string;
  pid: number;
}

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buffered += d;
      const nl = buffered.indexOf('\n');
      if (nl >= 0) resolve(buffered.slice(0, nl));
    });
    child.once('exit', (code) => reject(new Error(`simulator exited with ${code} before announcing: ${stderr}`)));
  });
}

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode);
    else child.once('exit', (code) => resolve(code));
  });
}

describe('signalhub-sync simulator', () => {
  it('starts from a setup file, announces its URLs on stdout, serves pulls and its control API, and stops on SIGTERM', async () => {
    const dir = tempDir();
    const setupFile = path.join(dir, 'setup.json');
    const publicKeyFile = path.join(dir, 'client.pub.pem');
    fs.writeFileSync(publicKeyFile, testKey().publicKey.export({ type: 'spki', format: 'pem' }));
    fs.writeFileSync(
      setupFile,
      JSON.stringify({
        clients: [{ clientId: 'cli-m2m', kind: 'm2m', keyId: 'kid-cli', publicKeyFile, organizationId: 'org-cli' }],
        eservices: [{ id: 'es-setup', historyDepth: 2 }],
      }),
    );
    const child = spawnCli(['simulator', '--port', '0', '--setup', setupFile, '--eservice', 'es-flag', '--seed-signals', '250', '--rate-limit', '5', '--log-level', 'warn']);
    children.push(child);
    const announced = JSON.parse(await firstLine(child)) as Announcement;
    expect(announced.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(announced.tokenUrl).toBe(`${announced.url}/token.oauth2`);
    expect(announced.pullBaseUrl).toBe(`${announced.url}/1.0/pull`);
    expect(announced.pid).toBe(child.pid);

    const now = Math.floor(Date.now() / 1000);
    const assertion = await new SignJWT({ jti: randomUUID() })
      .setProtectedHeader({ alg: 'RS256', kid: 'kid-cli', typ: 'JWT' })
      .setIssuer('cli-m2m')
      .setSubject('cli-m2m')
      .setAudience(announced.assertionAudience)
      .setIssuedAt(now)
      .setExpirationTime(now + 120)
      .sign(testKey().privateKey);
    const token = await fetch(announced.tokenUrl, {
      method: 'POST',
      body: new URLSearchParams({ client_id: 'cli-m2m', client_assertion: assertion, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', grant_type: 'client_credentials' }),
    });
    expect(token.status).toBe(200);
    const voucher = ((await token.json()) as { access_token: string }).access_token;
    const auth = { authorization: `Bearer ${voucher}` };

    for (const es of ['es-setup', 'es-flag']) {
      const last = await fetch(`${announced.pullBaseUrl}/signals/${es}?signalId=200&size=100`, { headers: auth });
      expect(last.status).toBe(200);
      const body = (await last.json()) as { signals: { signalId: number; eserviceId: string }[]; lastSignalId: number };
      expect(body.signals).toHaveLength(50);
      expect(body.lastSignalId).toBe(250);
      expect(body.signals[0]!.eserviceId).toBe(es);
    }
    const first = await fetch(`${announced.pullBaseUrl}/signals/es-flag?size=100`, { headers: auth });
    expect(first.status).toBe(206);
    expect(first.headers.get('x-rate-limit-limit')).toBe('5');
    await first.arrayBuffer();

    const fault = await fetch(`${announced.url}/_sim/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ route: 'status', fault: { kind: 'status', status: 503, times: 1 } }) });
    expect(fault.status).toBe(200);
    const status = await fetch(`${announced.pullBaseUrl}/status`, { headers: auth });
    expect(status.status).toBe(503);
    await status.arrayBuffer();
    const stats = (await (await fetch(`${announced.url}/_sim/stats`)).json()) as { responses: Record<string, Record<string, number>> };
    expect(stats.responses.pull).toEqual({ '200': 2, '206': 1 });
    expect(stats.responses.status).toEqual({ '503': 1 });

    child.kill('SIGTERM');
    expect(await exited(child)).toBe(0);
  });

  it('refuses bad options with a usage exit code', async () => {
    const noEservice = await runCli(['simulator', '--port', '0', '--seed-signals', '10']);
    expect(noEservice.code).toBe(64);
    expect(noEservice.stderr).toContain('--seed-signals needs at least one e-service');
    const badPort = await runCli(['simulator', '--port', 'eighty']);
    expect(badPort.code).toBe(64);
    expect(badPort.stderr).toContain('--port');
  });

  it('reports an invalid setup file by name and field', async () => {
    const dir = tempDir();
    const setupFile = path.join(dir, 'setup.json');
    fs.writeFileSync(setupFile, JSON.stringify({ eservices: [{ id: 'x', historyDepth: 0 }] }));
    const r = await runCli(['simulator', '--port', '0', '--setup', setupFile]);
    expect(r.code).toBe(65);
    expect(r.stderr).toContain(setupFile);
    expect(r.stderr).toContain('eservices.0.historyDepth');
  });
});
