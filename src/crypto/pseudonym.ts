import crypto, { createHash } from 'node:crypto';
import { AppError } from '../errors.js';
import { resolveAlgorithm, type HashAlgorithm } from './algorithms.js';

// crypto.hash (Node >= 20.12) is a one-shot digest without a Hash object: ~40% faster per subject.
const oneShotHash = (crypto as { hash?: (alg: string, data: string, enc: 'buffer') => Buffer }).hash;

export const ENCODINGS = ['base64', 'base64url', 'hex', 'HEX'] as const;
export type PseudonymEncoding = (typeof ENCODINGS)[number];

/** How a producer turns a subject key into a pseudonym (SPEC §7). */
export interface PseudonymRecipe {
  /** With `${subject}`, `${seed}`, `${algorithm}`. GovWay's default is `${subject}${seed}`. */
  template: string;
  encoding: PseudonymEncoding;
}

export const GOVWAY_RECIPE: PseudonymRecipe = { template: '${subject}${seed}', encoding: 'base64' };

/**
 * A recipe bound to one seed and algorithm: the hot path of reseeding. The template is split
 * once into the constant text around `${subject}`, so hashing a subject is two updates and a
 * digest, with no string building per subject.
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

  pseudonym(subjectKey: string): string {
    return encodeDigest(this.digest(subjectKey), this.recipe.encoding);
  }
}

export function encodeDigest(digest: Buffer, encoding: PseudonymEncoding): string {
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
 */
export function decodeObjectId(objectId: string, encoding: PseudonymEncoding, length: number): Buffer | null {
  const nodeEncoding = encoding === 'HEX' ? 'hex' : encoding;
  const digest = Buffer.from(objectId, nodeEncoding);
  if (digest.length !== length) return null;
  return encodeDigest(digest, encoding) === objectId ? digest : null;
}

/** Output length in bytes of an algorithm, for decodeObjectId. */
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
