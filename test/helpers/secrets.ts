import { createHash, createPrivateKey, type KeyObject } from 'node:crypto';
import type { Simulator } from '../../src/simulator/index.js';

/**
 * The secrets-and-personal-data harness (ARCHITECTURE invariant 5): collects every secret a
 * test's fixtures hold, in every form it could leak in, and scans captured output for them.
 * A failure names the kind, the form, the offset and a fingerprint of the secret, never the
 * secret itself: the failure message ends up in CI logs too.
 */
export type SecretKind = 'private-key' | 'seed' | 'voucher' | 'client-assertion' | 'dpop-proof' | 'webhook-secret' | 'subject-key' | 'token';

export interface Leak {
  kind: SecretKind;
  /** How it was written: `pem`, `pem-line-3`, `der-hex`, `jwk-d`, `jwt`, `jwt-signature`, `upper`, ... */
  form: string;
  /** Which fixture (e.g. `eservice 2111…`, `subject 7`). */
  label: string;
  /** Where the stream was captured (e.g. `sync --once stderr`). */
  where: string;
  offset: number;
  line: number;
  /** First 8 hex of SHA-256 of the leaked text, to tell leaks apart without revealing them. */
  fingerprint: string;
  /** Up to 60 characters before the leak, with every known secret and any long base64/hex run masked. */
  before: string;
}

interface Needle {
  kind: SecretKind;
  form: string;
  label: string;
  text: string;
}

/** Shorter needles would match by chance (and a realistic secret is never this short). */
const MIN_NEEDLE_LENGTH = 8;
/** PEM body lines shorter than this (the last one) are not distinctive enough to look for on their own. */
const MIN_PEM_LINE_LENGTH = 16;

export class SecretSet {
  private readonly needles = new Map<string, Needle>();

  get size(): number {
    return this.needles.size;
  }

  /** Kinds and forms held, for tests that check the harness covers each one. */
  forms(): { kind: SecretKind; form: string; label: string }[] {
    return [...this.needles.values()].map(({ kind, form, label }) => ({ kind, form, label }));
  }

  /**
   * A private key: PEM (PKCS#8 and PKCS#1), each base64 line of the PEM body, the DER (PKCS#8
   * and PKCS#1) in base64/base64url/hex, and the JWK private members d, p, q, dp, dq, qi.
   */
  addPrivateKey(key: KeyObject | string, label = 'private key'): this {
    const object = typeof key === 'string' ? createPrivateKey(key) : key;
    const pems = [object.export({ type: 'pkcs8', format: 'pem' }).toString(), ...(object.asymmetricKeyType === 'rsa' ? [object.export({ type: 'pkcs1', format: 'pem' }).toString()] : [])];
    if (typeof key === 'string') pems.push(key);
    for (const [i, pem] of pems.entries()) {
      const tag = i === 0 ? 'pkcs8' : i === 1 ? 'pkcs1' : 'given';
      this.add('private-key', `pem-${tag}`, label, pem.trim());
      const body = pem.split(/\r?\n/).filter((l) => l !== '' && !l.startsWith('-----'));
      body.forEach((line, n) => {
        if (line.length >= MIN_PEM_LINE_LENGTH) this.add('private-key', `pem-${tag}-line-${n + 1}`, label, line);
      });
    }
    const ders: [string, Buffer][] = [['pkcs8', object.export({ type: 'pkcs8', format: 'der' })]];
    if (object.asymmetricKeyType === 'rsa') ders.push(['pkcs1', object.export({ type: 'pkcs1', format: 'der' })]);
    for (const [tag, der] of ders) {
      this.add('private-key', `der-${tag}-base64`, label, der.toString('base64'));
      this.add('private-key', `der-${tag}-base64url`, label, der.toString('base64url'));
      this.add('private-key', `der-${tag}-hex`, label, der.toString('hex'));
      this.add('private-key', `der-${tag}-HEX`, label, der.toString('hex').toUpperCase());
    }
    const jwk = object.export({ format: 'jwk' }) as Record<string, unknown>;
    for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi']) {
      const value = jwk[member];
      if (typeof value === 'string') this.add('private-key', `jwk-${member}`, label, value);
    }
    return this;
  }

  /**
   * A producer's seed as received, plus the encodings it could be re-encoded into: hex and
   * base64 of its UTF-8 bytes, and, when it is itself base64 or hex, its decoded bytes in the
   * other encodings.
   */
  addSeed(seed: string, label = 'seed'): this {
    this.add('seed', 'raw', label, seed);
    const utf8 = Buffer.from(seed, 'utf8');
    this.add('seed', 'utf8-hex', label, utf8.toString('hex'));
    this.add('seed', 'utf8-base64', label, utf8.toString('base64'));
    this.add('seed', 'utf8-base64url', label, utf8.toString('base64url'));
    if (/^[A-Za-z0-9+/]+={0,2}$/.test(seed) && seed.length % 4 === 0) {
      const bytes = Buffer.from(seed, 'base64');
      this.addBytes('seed', 'base64-decoded', label, bytes);
    }
    if (/^[0-9a-fA-F]+$/.test(seed) && seed.length % 2 === 0) this.addBytes('seed', 'hex-decoded', label, Buffer.from(seed, 'hex'));
    return this;
  }

  /** A voucher (access token): the whole JWT and its signature segment. */
  addVoucher(jwt: string, label = 'voucher'): this {
    return this.addJwt('voucher', jwt, label);
  }

  /** A client assertion (or an audit JWS): the whole JWT and its signature segment. */
  addClientAssertion(jwt: string, label = 'client assertion'): this {
    return this.addJwt('client-assertion', jwt, label);
  }

  /** A DPoP proof (SPEC §4b): the whole JWT and its signature segment. */
  addDpopProof(jwt: string, label = 'DPoP proof'): this {
    return this.addJwt('dpop-proof', jwt, label);
  }

  /** A webhook HMAC secret: as written, and its UTF-8 bytes in hex and base64. */
  addWebhookSecret(secret: string, label = 'webhook secret'): this {
    this.add('webhook-secret', 'raw', label, secret);
    this.addBytes('webhook-secret', 'utf8', label, Buffer.from(secret, 'utf8'));
    return this;
  }

  /** A subject key (fiscal code): upper and lower case, as normalization may produce either. */
  addSubjectKey(key: string, label = 'subject key'): this {
    this.add('subject-key', 'upper', label, key.trim().toUpperCase());
    this.add('subject-key', 'lower', label, key.trim().toLowerCase());
    return this;
  }

  /** Any other credential (a token in a URL's query string, a password in a URL), as written. */
  addToken(token: string, label = 'token'): this {
    this.add('token', 'raw', label, token);
    return this;
  }

  /** Everything the simulator handed out or received so far: vouchers, assertions, DPoP proofs, every seed of each e-service. */
  addFromSimulator(sim: Simulator, eserviceIds: readonly string[]): this {
    sim.issuedVouchers().forEach((v, i) => this.addVoucher(v, `simulator voucher ${i + 1}`));
    sim.receivedAssertions().forEach((a, i) => this.addClientAssertion(a, `simulator assertion ${i + 1}`));
    sim.receivedDpopProofs().forEach((p, i) => this.addDpopProof(p, `simulator DPoP proof ${i + 1}`));
    for (const id of eserviceIds) sim.seedHistory(id).forEach((s, i) => this.addSeed(s, `seed ${i + 1} of ${id.slice(0, 8)}`));
    return this;
  }

  /** Every occurrence of every secret in `text`. */
  scan(text: string, where = 'output'): Leak[] {
    const found: { needle: Needle; start: number; end: number }[] = [];
    for (const needle of this.needles.values()) {
      for (let at = text.indexOf(needle.text); at !== -1; at = text.indexOf(needle.text, at + 1)) found.push({ needle, start: at, end: at + needle.text.length });
    }
    found.sort((a, b) => a.start - b.start);
    return found.map(({ needle, start }) => ({
      kind: needle.kind,
      form: needle.form,
      label: needle.label,
      where,
      offset: start,
      line: countLines(text, start),
      fingerprint: fingerprint(needle.text),
      before: maskedWindow(text, Math.max(0, start - 60), start, found),
    }));
  }

  /** Throws a description of every leak found in the named streams (kinds, offsets, fingerprints only). */
  assertClean(streams: Record<string, string>): void {
    const leaks = Object.entries(streams).flatMap(([where, text]) => this.scan(text, where));
    if (leaks.length > 0) throw new Error(`secrets leaked (${leaks.length}):\n${leaks.map(describeLeak).join('\n')}`);
  }

  private addJwt(kind: SecretKind, jwt: string, label: string): this {
    const parts = jwt.split('.');
    if (parts.length !== 3) throw new Error(`SecretSet: ${label} is not a compact JWS`);
    this.add(kind, 'jwt', label, jwt);
    this.add(kind, 'jwt-signature', label, parts[2]!);
    return this;
  }

  private addBytes(kind: SecretKind, prefix: string, label: string, bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.add(kind, `${prefix}-hex`, label, bytes.toString('hex'));
    this.add(kind, `${prefix}-base64`, label, bytes.toString('base64'));
    this.add(kind, `${prefix}-base64url`, label, bytes.toString('base64url'));
  }

  private add(kind: SecretKind, form: string, label: string, text: string): void {
    if (text.length < MIN_NEEDLE_LENGTH) throw new Error(`SecretSet: ${kind} ${label} (${form}) is shorter than ${MIN_NEEDLE_LENGTH} characters: too short to scan for without false alarms`);
    if (!this.needles.has(text)) this.needles.set(text, { kind, form, label, text });
  }
}

export function describeLeak(leak: Leak): string {
  return `  ${leak.where}: ${leak.kind} (${leak.form}, ${leak.label}) at offset ${leak.offset}, line ${leak.line}, fingerprint ${leak.fingerprint}; preceded by "${leak.before}"`;
}

function fingerprint(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex').slice(0, 8);
}

function countLines(text: string, offset: number): number {
  let line = 1;
  for (let i = text.indexOf('\n'); i !== -1 && i < offset; i = text.indexOf('\n', i + 1)) line++;
  return line;
}

/** text[from, to) with every character that belongs to a found secret replaced by one `«kind»` per secret. */
function maskedWindow(text: string, from: number, to: number, found: readonly { needle: Needle; start: number; end: number }[]): string {
  let out = '';
  let i = from;
  while (i < to) {
    const covering = found.find((f) => f.start <= i && i < f.end);
    if (covering) {
      out += `«${covering.needle.kind}»`;
      i = covering.end;
    } else {
      out += text[i];
      i++;
    }
  }
  // A secret altered on its way out (a path normalized, a line cut) is no needle any more:
  // long base64/hex runs are masked too, so the report cannot quote what is left of it.
  return out.replace(/[A-Za-z0-9+/=_]{20,}/g, '«…»').replace(/\n/g, '\\n');
}
