import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { WebhookSinkConfig } from '../src/config/types.js';
import { DeliveryService } from '../src/sinks/delivery.js';
import { ROOT } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { ES_A, appendSignals, openTestDb, startReceiver, type Received } from './delivery-fixtures.js';

type Headers = Record<string, string | string[] | undefined>;
interface Verifier {
  verifyStandardWebhook(secret: string, headers: Headers, body: string, nowSeconds?: number): string;
  verifyXSignature(secret: string, headers: Headers, body: string): void;
}

/** The receiver code exactly as README.md shows it, between its markers, loaded as a module. */
let verifier: Verifier;
beforeAll(async () => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const block = /<!-- webhook-verifier:start -->\n```js\n([\s\S]*?)```\n<!-- webhook-verifier:end -->/.exec(readme);
  expect(block, 'README.md has the verifier between its markers').not.toBeNull();
  const file = path.join(tempDir('shs-verifier-'), 'verifier.mjs');
  fs.writeFileSync(file, block![1]!);
  verifier = (await import(pathToFileURL(file).href)) as Verifier;
});

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function hook(url: string, secretFile: string, signature: WebhookSinkConfig['signature']): WebhookSinkConfig {
  return { type: 'webhook', name: 'hook', eservices: [], url, secretFile, caFile: undefined, batchSize: 1, timeoutMs: 5_000, maxRetries: 2, signature };
}

/** Delivers two real events through the webhook sink to a loopback receiver; returns what it received. */
async function deliverTwo(signature: WebhookSinkConfig['signature'], secretText: string): Promise<Received[]> {
  const dir = tempDir();
  const db = openTestDb(dir);
  appendSignals(db, ES_A, [1, 2]);
  const secretFile = path.join(dir, 'hook.secret');
  fs.writeFileSync(secretFile, secretText, { mode: 0o600 });
  const receiver = await startReceiver(() => ({ status: 204 }));
  cleanups.push(receiver.close);
  const service = new DeliveryService({ db, batchSize: 10, sinks: [hook(receiver.url, secretFile, signature)] });
  const result = await service.drain();
  await service.stop(0);
  db.close();
  expect(result.complete).toBe(true);
  return receiver.requests;
}

describe('Standard Webhooks signatures, checked with the README verifier', () => {
  const secret = `whsec_${randomBytes(32).toString('base64')}`;

  it('real deliveries verify; a replay after the 5-minute window, a re-dated replay and a tampered body are rejected', async () => {
    const [first, second] = await deliverTwo('standard-webhooks', `${secret}\n`);
    expect(first!.headers['x-signature']).toBeUndefined();
    expect(first!.headers['webhook-id']).toBe(first!.headers['idempotency-key']);
    expect(first!.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    const sentAt = Number(first!.headers['webhook-timestamp']);
    expect(Math.abs(sentAt - Date.now() / 1000)).toBeLessThan(60);

    expect(verifier.verifyStandardWebhook(secret, first!.headers, first!.body)).toBe(`${ES_A}:1`);
    expect(verifier.verifyStandardWebhook(secret, second!.headers, second!.body)).toBe(`${ES_A}:2`);

    // The captured request sent again six minutes later: refused.
    expect(() => verifier.verifyStandardWebhook(secret, first!.headers, first!.body, sentAt + 360)).toThrow(/stale/);
    // ... and with its timestamp moved to "now", the signature no longer matches.
    const redated = { ...first!.headers, 'webhook-timestamp': String(sentAt + 360) };
    expect(() => verifier.verifyStandardWebhook(secret, redated, first!.body, sentAt + 360)).toThrow(/bad signature/);
    // Another event's signature on this body, a changed body, another secret: refused.
    expect(() => verifier.verifyStandardWebhook(secret, { ...first!.headers, 'webhook-signature': second!.headers['webhook-signature'] }, first!.body)).toThrow(/bad signature/);
    expect(() => verifier.verifyStandardWebhook(secret, first!.headers, first!.body.replace('UPDATE', 'DELETE'))).toThrow(/bad signature/);
    expect(() => verifier.verifyStandardWebhook(`whsec_${randomBytes(32).toString('base64')}`, first!.headers, first!.body)).toThrow(/bad signature/);
  });

  it('a secret that is not whsec_ + base64 of at least 24 bytes is refused when the sink is built', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    const file = path.join(dir, 'hook.secret');
    for (const bad of ['plain-secret-text-of-some-length', `whsec_${randomBytes(8).toString('base64')}`, 'whsec_not base64!']) {
      fs.writeFileSync(file, bad, { mode: 0o600 });
      expect(() => new DeliveryService({ db, batchSize: 1, sinks: [hook('http://127.0.0.1:9/x', file, 'standard-webhooks')] })).toThrow(/not a Standard Webhooks secret/);
    }
    expect(() => new DeliveryService({ db, batchSize: 1, sinks: [{ ...hook('http://127.0.0.1:9/x', file, 'standard-webhooks'), secretFile: undefined }] })).toThrow(/needs secret_file/);
    db.close();
  });
});

describe('X-Signature (the default), checked with the README verifier', () => {
  it('real deliveries verify with the file content minus its one final newline; other bytes do not', async () => {
    const secret = 'x-signature-secret-value';
    const [first] = await deliverTwo(undefined, `${secret}\r\n`);
    expect(first!.headers['webhook-signature']).toBeUndefined();
    expect(() => verifier.verifyXSignature(secret, first!.headers, first!.body)).not.toThrow();
    expect(() => verifier.verifyXSignature(`${secret}\r\n`, first!.headers, first!.body)).toThrow(/bad signature/);
    expect(() => verifier.verifyXSignature(secret, first!.headers, first!.body.replace('UPDATE', 'DELETE'))).toThrow(/bad signature/);
  });

  it('only one final newline is removed: a second one is part of the secret', async () => {
    const secret = 'x-signature-secret-value';
    const [first] = await deliverTwo('x-signature', `${secret}\n\n`);
    expect(() => verifier.verifyXSignature(`${secret}\n`, first!.headers, first!.body)).not.toThrow();
    expect(() => verifier.verifyXSignature(secret, first!.headers, first!.body)).toThrow(/bad signature/);
  });
});
