import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { testKey } from './helpers/keys.js';
import { configDir, ES1, M2M_CLIENT, productionToml, PURPOSE1, writeConfig } from './config-helpers.js';

/** Only what the test sets: no inherited $SIGNALHUB_SYNC_CONFIG or $CREDENTIALS_DIRECTORY. */
const cleanEnv = { SIGNALHUB_SYNC_CONFIG: undefined, CREDENTIALS_DIRECTORY: undefined, STATE_DIRECTORY: undefined };

describe('signalhub-sync config check', () => {
  it('prints a summary and exits 0 on a valid file, showing no key or secret content', async () => {
    const dir = configDir(tempDir());
    const hmac = 'webhook-hmac-secret-3e8f1a';
    fs.writeFileSync(path.join(dir, 'hmac'), hmac, { mode: 0o600 });
    const file = writeConfig(dir, productionToml('[[sinks]]\nname = "crm"\ntype = "webhook"\nurl = "https://crm.example.it/hook"\nsecret_file = "hmac"\n'));
    const result = await runCli(['--config', file, 'config', 'check'], { env: cleanEnv });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('preset                production');
    expect(result.stdout).toContain(`client id ${M2M_CLIENT}, key id kid-m2m, key fingerprint `);
    expect(result.stdout).toMatch(/key fingerprint [0-9a-f]{16}\n/);
    expect(result.stdout).toContain(`residences ${ES1}`);
    expect(result.stdout).toContain(`purpose ${PURPOSE1}`);
    expect(result.stdout).toMatch(/crm: webhook https:\/\/crm\.example\.it\/\[path [0-9a-f]{8}\] \(signed with/);
    const output = result.stdout + result.stderr;
    expect(output).not.toContain(hmac);
    expect(output).not.toContain('PRIVATE KEY');
    for (const line of testKey().privatePem.split('\n').slice(1, -2)) expect(output).not.toContain(line);
  });

  it('finds the file through $SIGNALHUB_SYNC_CONFIG', async () => {
    const dir = configDir(tempDir());
    const file = writeConfig(dir, productionToml());
    const result = await runCli(['config', 'check'], { env: { ...cleanEnv, SIGNALHUB_SYNC_CONFIG: file } });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`config                ${file}`);
  });

  it('lists every problem with its key path on stderr and exits 78, without key content', async () => {
    const dir = configDir(tempDir());
    const keyLike = 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDsecretish';
    fs.writeFileSync(path.join(dir, 'eservice.pem'), `-----BEGIN PRIVATE KEY-----\n${keyLike}\n-----END PRIVATE KEY-----\n`, { mode: 0o600 });
    const text = productionToml('[hub]\npage_size = 1000\n[outbx]\nkeep_days = 1\n')
      .replace(`purpose_id = "${PURPOSE1}"\n`, '')
      .replace('database = "state/shs.db"', 'database = "${SHS_TEST_UNSET_VAR}/db"');
    const file = writeConfig(dir, text);
    const result = await runCli(['--config', file, 'config', 'check'], { env: cleanEnv });
    expect(result.code).toBe(78);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain(`invalid configuration ${file}: 5 problems:`);
    for (const line of [
      'database: environment variable SHS_TEST_UNSET_VAR is not set',
      'pdnd.eservice_client.private_key_file: not an unencrypted PEM private key',
      'eservices[0].purpose_id: required',
      'hub.page_size: must be <= 100',
      'outbx: unknown key (did you mean "outbox"?)',
    ]) {
      expect(result.stderr).toContain(`  ${line}`);
    }
    expect(result.stderr).not.toContain(keyLike);
  });

  it('a TOML syntax error exits 78 naming file:line:column', async () => {
    const dir = tempDir();
    const file = writeConfig(dir, 'preset = "production"\n[pdnd\n');
    const result = await runCli(['--config', file, 'config', 'check'], { env: cleanEnv });
    expect(result.code).toBe(78);
    expect(result.stderr).toMatch(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2:\\d+: TOML syntax error`));
  });

  it('a missing config file exits 78 naming the path', async () => {
    const dir = tempDir();
    const result = await runCli(['--config', path.join(dir, 'absent.toml'), 'config', 'check'], { env: cleanEnv });
    expect(result.code).toBe(78);
    expect(result.stderr).toContain('CONFIG_NOT_FOUND');
    expect(result.stderr).toContain(path.join(dir, 'absent.toml'));
  });
});

describe('signalhub-sync config schema', () => {
  it('prints the JSON Schema of the TOML file, strict and with defaults', async () => {
    const result = await runCli(['config', 'schema'], { env: cleanEnv });
    expect(result.code).toBe(0);
    const schema = JSON.parse(result.stdout) as {
      $schema: string;
      additionalProperties: boolean;
      required: string[];
      properties: Record<string, { properties?: Record<string, { default?: unknown; maximum?: number }>; additionalProperties?: boolean }>;
    };
    expect(schema.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
    expect(schema.additionalProperties).toBe(false);
    expect(schema.required).toEqual(['pdnd']);
    expect(Object.keys(schema.properties)).toEqual(
      expect.arrayContaining(['preset', 'database', 'log', 'pdnd', 'hub', 'crypto', 'subjects', 'events', 'outbox', 'http', 'daemon', 'eservices', 'sinks']),
    );
    expect(schema.properties.hub!.additionalProperties).toBe(false);
    expect(schema.properties.hub!.properties!.page_size).toMatchObject({ default: 100, maximum: 100 });
  });
});
