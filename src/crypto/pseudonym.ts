import crypto, { createHash } from 'node:crypto';
import { AppError } from '../errors.js';
import { resolveAlgorithm, type HashAlgorithm } from './algorithms.js';

// crypto.hash (Node >= 20.12) is a one-shot digest without a Hash object: ~40% faster per subject.
const oneShotHash = (crypto as { hash?: (alg: string, data: string, enc: 'buffer') => Buffer }).hash;

/** Encodings of a hashed pseudonym's digest (SPEC §7). */
export const DIGEST_ENCODINGS = ['base64', 'base64url', 'hex', 'HEX'] as const;
export type DigestEncoding = (typeof DIGEST_ENCODINGS)[number];

/**
 * Every recipe encoding: the digest encodings, and `identity` for e-services whose objectId is
 * the subject key in clear (SPEC §8b: non-personal data, legal persons).
 */
export const ENCODINGS = [...DIGEST_ENCODINGS, 'identity'] as const;
export type PseudonymEncoding = (typeof ENCODINGS)[number];

/**
 * The hash an identity recipe stores per subject and per objectId (store it as the epoch's
 * algorithm). Going through a hash, not the key itself, keeps the pseudonym index's keys of one
 * fixed length and keeps a second copy of every fiscal code out of the database.
 */
export const IDENTITY_ALGORITHM = 'SHA-256';
const IDENTITY_DIGEST_LENGTH = 32;

/** How a producer turns a subject key into a pseudonym (SPEC §7). */
export interface PseudonymRecipe {
  /** With `${subject}`, `${seed}`, `${algorithm}`. GovWay's default is `${subject}${seed}`. Ignored by `identity`. */
  template: string;
  encoding: PseudonymEncoding;
}

const identityDigest = (key: string): Buffer => createHash('sha256').update(normalizeSubjectKey(key), 'utf8').digest();

export const GOVWAY_RECIPE: PseudonymRecipe = { template: '${subject}${seed}', encoding: 'base64' };

/**
 * A recipe bound to one seed and algorithm: the hot path of reseeding. The template is split
 * once into the constant text around `${subject}`, so hashing a subject is two updates and a
 * digest, with no string building per subject.
 *
 * With the `identity` encoding, seed, algorithm and template are ignored: the digest is
 * IDENTITY_ALGORITHM of the normalized key (what decodeObjectId gives for the same key in clear)
 * and the pseudonym is the normalized key itself.
 */
export class PseudonymHasher {
  readonly algorithm: HashAlgorithm;
  /** The constant text between `${subject}` slots, expanded (string for the one-shot path). */
  private readonly textParts: string[];
  private readonly parts: Buffer[];

  constructor(
    readonly recipe: PseudonymRecipe,
    seed: string,
    /** cryptoHashFunction exactly as the producer sent it: `${algorithm}` expands to it. */
    algorithmName: string,
  ) {
    if (recipe.encoding === 'identity') {
      this.algorithm = resolveAlgorithm(IDENTITY_ALGORITHM);
      this.textParts = [];
      this.parts = [];
      return;
    }
    this.algorithm = resolveAlgorithm(algorithmName);
    if (!recipe.template.includes('${subject}')) {
      throw new AppError('CONFIG_INVALID', 'pseudonym template must contain ${subject}');
    }
    // One pass with a replacer function: the seed is used exactly as received, so neither a `$&`
    // or `$$` in it (special in replacement strings) nor a `${algorithm}` in it may be expanded.
    this.textParts = recipe.template
      .split('${subject}')
      .map((part) => part.replace(/\$\{(seed|algorithm)\}/g, (_placeholder, name: string) => (name === 'seed' ? seed : algorithmName)));
    this.parts = this.textParts.map((part) => Buffer.from(part, 'utf8'));
  }

  /** Raw hash bytes for a normalized subject key. */
  digest(subjectKey: string): Buffer {
    if (this.recipe.encoding === 'identity') return identityDigest(subjectKey);
    const { node, outputLength } = this.algorithm;
    if (outputLength === undefined && oneShotHash !== undefined && this.parts.length === 2) {
      return oneShotHash(node, this.textParts[0]! + subjectKey + this.textParts[1]!, 'buffer');
    }
    const h = outputLength === undefined ? createHash(node) : createHash(node, { outputLength });
    h.update(this.parts[0]!);
    for (let i = 1; i < this.parts.length; i++) {
      h.update(subjectKey, 'utf8');
      h.update(this.parts[i]!);
    }
    return h.digest();
  }

  /**
   * What a worker thread needs to compute the same digests (src/sync/hash-pool.ts). Holds the
   * seed: never log it.
   */
  workerRecipe(): WorkerRecipe {
    // identity: IDENTITY_ALGORITHM of the normalized key, nothing around it (see digest()).
    if (this.recipe.encoding === 'identity') return { node: this.algorithm.node, textParts: ['', ''], normalize: true };
    return { node: this.algorithm.node, ...(this.algorithm.outputLength !== undefined ? { outputLength: this.algorithm.outputLength } : {}), textParts: [...this.textParts] };
  }

  pseudonym(subjectKey: string): string {
    return this.objectIdOf(subjectKey, this.digest(subjectKey));
  }

  /** The objectId the producer sends for a subject whose digest is already at hand. */
  objectIdOf(subjectKey: string, digest: Buffer): string {
    return this.recipe.encoding === 'identity' ? normalizeSubjectKey(subjectKey) : encodeDigest(digest, this.recipe.encoding);
  }
}

/** A hasher's recipe as plain data (it crosses to worker threads). Secret: holds the seed. */
export interface WorkerRecipe {
  node: string;
  outputLength?: number;
  /** The constant text around the `${subject}` slots, seed and algorithm expanded. */
  textParts: string[];
  /** Normalize the key first (normalizeSubjectKey): the identity recipe's digest does. */
  normalize?: boolean;
}

export function encodeDigest(digest: Buffer, encoding: DigestEncoding): string {
  switch (encoding) {
    case 'base64':
      return digest.toString('base64');
    case 'base64url':
      return digest.toString('base64url');
    case 'hex':
      return digest.toString('hex');
    case 'HEX':
      return digest.toString('hex').toUpperCase();
  }
}

/**
 * The digest an objectId stands for under `encoding`, or null when the objectId is not a
 * canonical encoding of `length` bytes (then it cannot be any subject's pseudonym). Node's
 * decoders are lenient, so the result is re-encoded and compared to rule out near-misses.
 * Under `identity` the objectId is a key in clear: its digest is IDENTITY_ALGORITHM of the
 * normalized key (null when it is blank or `length` is not that hash's length).
 */
export function decodeObjectId(objectId: string, encoding: PseudonymEncoding, length: number): Buffer | null {
  if (encoding === 'identity') {
    if (normalizeSubjectKey(objectId) === '' || length !== IDENTITY_DIGEST_LENGTH) return null;
    return identityDigest(objectId);
  }
  const nodeEncoding = encoding === 'HEX' ? 'hex' : encoding;
  const digest = Buffer.from(objectId, nodeEncoding);
  if (digest.length !== length) return null;
  return encodeDigest(digest, encoding) === objectId ? digest : null;
}

/** Output length in bytes of an algorithm, for decodeObjectId (IDENTITY_ALGORITHM: 32). */
export function digestLength(algorithmName: string): number {
  const alg = resolveAlgorithm(algorithmName);
  if (alg.outputLength !== undefined) return alg.outputLength;
  return createHash(alg.node).digest().length;
}

/** Identifies a seed in logs and status without revealing it: first 8 hex of SHA-256(seed). */
export function seedFingerprint(seed: string): string {
  return createHash('sha256').update(seed, 'utf8').digest('hex').slice(0, 8);
}

/** SPEC §7: subject keys are trimmed and upper-cased before hashing. */
export function normalizeSubjectKey(key: string): string {
  return key.trim().toUpperCase();
}
