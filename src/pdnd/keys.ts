import { createPrivateKey, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import { AppError } from '../errors.js';

const cache = new Map<string, KeyObject>();

/**
 * The RSA private key of a PDND client, read once per file and kept in memory: signing a
 * client assertion must not touch the disk each time. PKCS#8 and PKCS#1 PEM are accepted.
 * Errors name the file only; the key material never enters a message.
 */
export function loadPrivateKey(file: string): KeyObject {
  const cached = cache.get(file);
  if (cached) return cached;
  let pem: Buffer;
  try {
    pem = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new AppError(code === 'ENOENT' ? 'INPUT_NOT_FOUND' : 'INPUT_INVALID', `cannot read private key file ${file} (${code ?? 'read error'})`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    // The cause is deliberately dropped: OpenSSL messages may quote decoded bytes.
    throw new AppError('INPUT_INVALID', `private key file ${file} is not a PEM private key (PKCS#8 or PKCS#1)`);
  } finally {
    pem.fill(0);
  }
  if (key.asymmetricKeyType !== 'rsa') {
    throw new AppError('INPUT_INVALID', `private key file ${file} holds a ${key.asymmetricKeyType ?? 'non-asymmetric'} key; PDND client assertions need RSA (RS256)`);
  }
  cache.set(file, key);
  return key;
}

/** Forgets the keys read so far (SIGHUP: an operator may have replaced a key file in place). */
export function forgetPrivateKeys(): void {
  cache.clear();
}
