import { createHash, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AppError } from '../errors.js';

/**
 * Reads a PEM RSA private key (PKCS#8 or PKCS#1, unencrypted). Failures name the file and
 * what is wrong with it, never its content.
 */
export function readRsaPrivateKey(file: string): KeyObject {
  const problem = rsaPrivateKeyProblem(file);
  if (typeof problem === 'string') throw new AppError('CONFIG_INVALID', `${file}: ${problem}`, { details: { file } });
  return problem;
}

/** The key, or a one-line description of why `file` is not a usable RSA private key. */
export function rsaPrivateKeyProblem(file: string): KeyObject | string {
  let pem: Buffer;
  try {
    pem = fs.readFileSync(file);
  } catch (err) {
    return fileErrorMessage(err, file);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    // The parser's message can quote the input: do not pass it on.
    return 'not an unencrypted PEM private key (PKCS#8 "BEGIN PRIVATE KEY" or PKCS#1 "BEGIN RSA PRIVATE KEY")';
  } finally {
    pem.fill(0);
  }
  if (key.asymmetricKeyType !== 'rsa') return `is a ${key.asymmetricKeyType ?? 'non-RSA'} key: PDND client assertions are RS256 and need an RSA key`;
  return key;
}

/**
 * Why a configured secret *path* is in fact the secret itself (a PEM pasted into
 * `private_key_file`), or null. Checked before the path is resolved: every file message
 * quotes the path, and this one must not be quoted.
 */
export function inlineSecretProblem(value: string): string | null {
  if (value.includes('-----BEGIN') || /[\r\n]/.test(value)) {
    return 'holds what looks like the secret itself, not a file path (value not shown): put it in a file readable only by the service (mode 0600) and give that file\'s path';
  }
  return null;
}

/**
 * Why a configured secret file that does not exist may be the secret itself pasted on one line
 * (a webhook secret, a token), or null. Every file message quotes the path, so such a value
 * would reach logs; a name with a folder or an extension, a short name, or an existing file is
 * taken for what it says.
 */
export function missingSecretNameProblem(value: string, file: string): string | null {
  if (value.includes('/') || /\.[A-Za-z0-9]{1,8}$/.test(value) || value.length < 20 || fs.existsSync(file)) return null;
  return `no such file in ${path.dirname(file)}, and its ${value.length}-character name (not shown) does not look like a file name: if the value is the secret itself, put it in a file readable only by the service (mode 0600) and give that file's path`;
}

/** Why a secret file that is used as-is (HMAC secret, CA bundle) cannot be read, or null. */
export function readableFileProblem(file: string): string | null {
  try {
    const stat = fs.statSync(file);
    if (!stat.isFile()) return 'is not a regular file';
    fs.accessSync(file, fs.constants.R_OK);
    if (stat.size === 0) return 'is empty';
    return null;
  } catch (err) {
    return fileErrorMessage(err, file);
  }
}

/**
 * Why a secret file (private key, HMAC secret) may be read by users other than its owner, or
 * null. Any group or other bit counts (a group-writable key can be swapped as well as read),
 * with one exception: systemd writes a LoadCredential= file 0400 owned by root and grants the
 * service user read access with a POSIX ACL, and `stat` shows the ACL mask in the group bits,
 * so a credential directly in $CREDENTIALS_DIRECTORY reads 0440 although no group can read it.
 * A file that cannot be stat'ed, or is not a file, is not judged here: the readability check reports it.
 */
export function secretFileModeProblem(file: string, credentialsDirectory: string | undefined): string | null {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    return null;
  }
  if (!stat.isFile()) return null;
  const mode = stat.mode & 0o777;
  const isCredential = credentialsDirectory !== undefined && credentialsDirectory !== '' && path.dirname(file) === path.resolve(credentialsDirectory);
  if ((mode & (isCredential ? 0o037 : 0o077)) === 0) return null;
  return (
    `${file} is readable by group or others (mode ${formatMode(mode)}): run "chmod 600 ${file}" ` +
    `(and "chown" it to the user the daemon runs as), or, if access by a group is intended, set [security] allow_readable_secrets = true`
  );
}

export function formatMode(mode: number): string {
  return (mode & 0o777).toString(8).padStart(4, '0');
}

/** Identifies a client key without revealing it: first 16 hex of SHA-256 of the DER SPKI public key. */
export function publicKeyFingerprint(key: KeyObject): string {
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('hex').slice(0, 16);
}

function fileErrorMessage(err: unknown, file: string): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return `file not found: ${file}`;
  if (code === 'EACCES' || code === 'EPERM') return `file not readable (permission denied): ${file}`;
  if (code === 'EISDIR') return `is a directory, not a file: ${file}`;
  return `cannot read ${file} (${code ?? 'error'})`;
}

export type DpopAlgorithm = 'RS256' | 'ES256';

/**
 * The key and algorithm of a DPoP key file, or why it cannot be one: unreadable, not a PEM
 * private key, or neither RSA nor EC P-256. Shared with the config check.
 */
export function dpopKeyProblem(file: string): { key: KeyObject; alg: DpopAlgorithm } | string {
  let pem: Buffer;
  try {
    pem = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'file not found' : `cannot be read (${code ?? 'read error'})`;
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    // The parser's message can quote the input: do not pass it on.
    return 'not an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)';
  } finally {
    pem.fill(0);
  }
  if (key.asymmetricKeyType === 'rsa') return { key, alg: 'RS256' };
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return { key, alg: 'ES256' };
  return `is a ${key.asymmetricKeyType ?? 'non-asymmetric'}${key.asymmetricKeyDetails?.namedCurve ? ` ${key.asymmetricKeyDetails.namedCurve}` : ''} key; DPoP needs RSA (RS256) or EC P-256 (ES256)`;
}

