import { AppError } from '../errors.js';

/** Node's name for a hash and, for XOFs, the output length in bytes. */
export interface HashAlgorithm {
  /** Canonical name, e.g. `SHA-256`. */
  canonical: string;
  node: string;
  outputLength?: number;
}

const CANONICAL: Record<string, HashAlgorithm> = {
  SHA256: { canonical: 'SHA-256', node: 'sha256' },
  SHA384: { canonical: 'SHA-384', node: 'sha384' },
  SHA512: { canonical: 'SHA-512', node: 'sha512' },
  SHA512256: { canonical: 'SHA-512/256', node: 'sha512-256' },
  SHA3256: { canonical: 'SHA3-256', node: 'sha3-256' },
  SHA3384: { canonical: 'SHA3-384', node: 'sha3-384' },
  SHA3512: { canonical: 'SHA3-512', node: 'sha3-512' },
  SHAKE128: { canonical: 'SHAKE128', node: 'shake128', outputLength: 32 },
  SHAKE256: { canonical: 'SHAKE256', node: 'shake256', outputLength: 64 },
};

/**
 * Resolves any spelling of SPEC §6 (`sha256`, `SHA-256`, `SHA256`, `SHA-512/256`, `SHA512_256`,
 * `SHA3-256`, `sha3_256`, `SHAKE128`, ...) in any case. Throws UNSUPPORTED_ALGORITHM otherwise.
 */
export function resolveAlgorithm(name: string): HashAlgorithm {
  const key = name.trim().toUpperCase().replace(/[-_/ ]/g, '');
  const found = CANONICAL[key];
  if (!found) {
    throw new AppError('UNSUPPORTED_ALGORITHM', `unsupported cryptoHashFunction ${quoteAlgorithmName(name)}: expected one of ${Object.values(CANONICAL).map((a) => a.canonical).join(', ')}`);
  }
  return found;
}

/** Short word-like names (`MD5`, `SHA-1`, `sha3_224`) only: a producer that swaps fields sends its seed here. */
const ALGORITHM_LIKE = /^[A-Za-z][A-Za-z0-9]{0,9}(?:[-_/ ][A-Za-z0-9]{1,6}){0,2}$/;

function quoteAlgorithmName(name: string): string {
  return ALGORITHM_LIKE.test(name.trim()) ? `"${name.trim()}"` : `(a ${name.length}-character value, not shown: it does not look like an algorithm name)`;
}

export function supportedAlgorithms(): string[] {
  return Object.values(CANONICAL).map((a) => a.canonical);
}
