import os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { WorkerRecipe } from '../crypto/pseudonym.js';
import { PREFIX_BYTES } from '../store/pseudonyms.js';

/**
 * Hashing of subject keys on worker threads, so that a reseed uses every core and the event
 * loop stays free (ARCHITECTURE invariant 8): a 60 KB seed with SHAKE256 costs ≈100 µs a subject.
 *
 * The worker is plain CommonJS evaluated from a string: it runs the same whether the daemon runs
 * from dist/ or its sources run under a TypeScript loader (tests), with no file to locate. It
 * computes exactly PseudonymHasher.digest (src/crypto/pseudonym.ts) and returns only the digest
 * prefixes the pseudonym index stores (src/store/pseudonyms.ts).
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const crypto = require('node:crypto');
const PREFIX_BYTES = ${PREFIX_BYTES};
// The prefix is read from the digest's base64 text: its first 8 characters are exactly the
// first 6 bytes, and a string digest costs a third of a Buffer one (no Buffer to allocate).
const B64 = new Int8Array(128).fill(-1);
'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.split('').forEach((c, i) => { B64[c.charCodeAt(0)] = i; });
function prefixOfBase64(t) {
  const high = (B64[t.charCodeAt(0)] << 18) | (B64[t.charCodeAt(1)] << 12) | (B64[t.charCodeAt(2)] << 6) | B64[t.charCodeAt(3)];
  const low = (B64[t.charCodeAt(4)] << 18) | (B64[t.charCodeAt(5)] << 12) | (B64[t.charCodeAt(6)] << 6) | B64[t.charCodeAt(7)];
  const unsigned = high * 16777216 + low;
  return unsigned >= 140737488355328 ? unsigned - 281474976710656 : unsigned;
}
function prefixerOf(recipe) {
  const { node, outputLength, textParts, normalize } = recipe;
  if (PREFIX_BYTES !== 6) throw new Error('the base64 prefix reads 6 bytes');
  const oneShot = outputLength === undefined && typeof crypto.hash === 'function' && textParts.length === 2;
  const before = textParts[0];
  const after = textParts[1];
  return (raw) => {
    const key = normalize ? raw.trim().toUpperCase() : raw;
    if (oneShot) return prefixOfBase64(crypto.hash(node, before + key + after, 'base64'));
    const h = outputLength === undefined ? crypto.createHash(node) : crypto.createHash(node, { outputLength });
    h.update(textParts[0], 'utf8');
    for (let j = 1; j < textParts.length; j++) {
      h.update(key, 'utf8');
      h.update(textParts[j], 'utf8');
    }
    return prefixOfBase64(h.digest('base64'));
  };
}
parentPort.on('message', (job) => {
  try {
    const prefixOf = prefixerOf(job.recipe);
    if (job.keys) {
      const out = new Float64Array(job.keys.length);
      for (let i = 0; i < job.keys.length; i++) out[i] = prefixOf(job.keys[i]);
      parentPort.postMessage({ id: job.id, prefixes: out }, [out.buffer]);
      return;
    }
    // A packed page: "id US key RS id US key ..." (US = \\x1f, RS = \\x1e), as the store reads it.
    const records = job.packed.split('\\x1e');
    if (records.length !== job.count) {
      parentPort.postMessage({ id: job.id, unpackable: true });
      return;
    }
    const prefixes = new Float64Array(records.length);
    const ids = new Float64Array(records.length);
    for (let i = 0; i < records.length; i++) {
      const r = records[i];
      const at = r.indexOf('\\x1f');
      ids[i] = Number(r.slice(0, at));
      prefixes[i] = prefixOf(r.slice(at + 1));
    }
    parentPort.postMessage({ id: job.id, prefixes, ids }, [prefixes.buffer, ids.buffer]);
  } catch (err) {
    parentPort.postMessage({ id: job.id, error: String(err && err.message || err) });
  }
});
`;

interface WorkerAnswer {
  id: number;
  prefixes?: Float64Array;
  ids?: Float64Array;
  unpackable?: boolean;
  error?: string;
}

interface Pending {
  resolve: (answer: WorkerAnswer) => void;
  reject: (err: Error) => void;
}

/** A page of subjects as the store packs it (SubjectStore.packedKeysForEService). */
export interface PackedPage {
  count: number;
  packed: string;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
}

/** Threads a pool uses by default: every core (the main thread mostly waits on them or on SQLite). */
export function defaultHashThreads(): number {
  return Math.max(1, typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length);
}

export class HashPool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private closed = false;

  constructor(readonly threads = defaultHashThreads()) {
    for (let i = 0; i < threads; i++) {
      // A small young generation: a worker's garbage is short-lived strings, and the default
      // (48 MB an isolate) kept ~70 MB resident for two threads during a 10 M fill.
      const worker = new Worker(WORKER_SOURCE, { eval: true, resourceLimits: { maxYoungGenerationSizeMb: 8 } });
      const slot: Slot = { worker, pending: new Map() };
      worker.on('message', (msg: WorkerAnswer) => {
        const p = slot.pending.get(msg.id);
        if (!p) return;
        slot.pending.delete(msg.id);
        if (msg.error !== undefined) p.reject(new Error(`hash worker failed: ${msg.error}`));
        else p.resolve(msg);
        if (slot.pending.size === 0) worker.unref();
      });
      const failAll = (err: Error) => {
        for (const p of slot.pending.values()) p.reject(err);
        slot.pending.clear();
      };
      worker.on('error', failAll);
      worker.on('exit', (code) => failAll(new Error(`hash worker exited (code ${code})`)));
      worker.unref();
      this.slots.push(slot);
    }
  }

  private send(slot: Slot, job: object): Promise<WorkerAnswer> {
    if (this.closed) return Promise.reject(new Error('hash pool closed'));
    const id = this.nextId++;
    return new Promise<WorkerAnswer>((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      slot.worker.ref(); // a pending job keeps the process alive until it answers
      slot.worker.postMessage({ id, ...job });
    });
  }

  /** Digest prefixes of `keys` under `recipe`, in order, split across the threads. */
  async prefixes(recipe: WorkerRecipe, keys: string[]): Promise<Float64Array> {
    const parts = Math.min(this.slots.length, Math.max(1, Math.ceil(keys.length / 512)));
    const size = Math.ceil(keys.length / parts);
    const jobs: Promise<Float64Array>[] = [];
    for (let p = 0; p < parts; p++) jobs.push(this.send(this.slots[p]!, { recipe, keys: keys.slice(p * size, (p + 1) * size) }).then((a) => a.prefixes!));
    const results = await Promise.all(jobs);
    if (results.length === 1) return results[0]!;
    const out = new Float64Array(keys.length);
    let at = 0;
    for (const r of results) {
      out.set(r, at);
      at += r.length;
    }
    return out;
  }

  /**
   * A whole packed page hashed on the least busy thread (pages in flight keep every thread
   * busy, and the main thread never splits the keys). Undefined when the page cannot be
   * unpacked (a key holding the separator): the caller reads it again as rows.
   */
  async packedPrefixes(recipe: WorkerRecipe, page: PackedPage): Promise<{ prefixes: Float64Array; ids: Float64Array } | undefined> {
    const slot = this.slots.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    const answer = await this.send(slot, { recipe, packed: page.packed, count: page.count });
    return answer.unpackable ? undefined : { prefixes: answer.prefixes!, ids: answer.ids! };
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
