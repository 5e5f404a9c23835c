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
parentPort.on('message', (job) => {
  try {
    const { node, outputLength, textParts, normalize } = job.recipe;
    const keys = normalize ? job.keys.map((k) => k.trim().toUpperCase()) : job.keys;
    const out = new Float64Array(keys.length);
    const oneShot = outputLength === undefined && typeof crypto.hash === 'function' && textParts.length === 2;
    for (let i = 0; i < keys.length; i++) {
      let digest;
      if (oneShot) {
        digest = crypto.hash(node, textParts[0] + keys[i] + textParts[1], 'buffer');
      } else {
        const h = outputLength === undefined ? crypto.createHash(node) : crypto.createHash(node, { outputLength });
        h.update(textParts[0], 'utf8');
        for (let j = 1; j < textParts.length; j++) {
          h.update(keys[i], 'utf8');
          h.update(textParts[j], 'utf8');
        }
        digest = h.digest();
      }
      out[i] = digest.readIntBE(0, PREFIX_BYTES);
    }
    parentPort.postMessage({ id: job.id, prefixes: out }, [out.buffer]);
  } catch (err) {
    parentPort.postMessage({ id: job.id, error: String(err && err.message || err) });
  }
});
`;

interface Pending {
  resolve: (prefixes: Float64Array) => void;
  reject: (err: Error) => void;
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
      const worker = new Worker(WORKER_SOURCE, { eval: true });
      const slot: Slot = { worker, pending: new Map() };
      worker.on('message', (msg: { id: number; prefixes?: Float64Array; error?: string }) => {
        const p = slot.pending.get(msg.id);
        if (!p) return;
        slot.pending.delete(msg.id);
        if (msg.error !== undefined) p.reject(new Error(`hash worker failed: ${msg.error}`));
        else p.resolve(msg.prefixes!);
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

  /** Digest prefixes of `keys` under `recipe`, in order, split across the threads. */
  async prefixes(recipe: WorkerRecipe, keys: string[]): Promise<Float64Array> {
    if (this.closed) throw new Error('hash pool closed');
    const parts = Math.min(this.slots.length, Math.max(1, Math.ceil(keys.length / 512)));
    const size = Math.ceil(keys.length / parts);
    const jobs: Promise<Float64Array>[] = [];
    for (let p = 0; p < parts; p++) {
      const slot = this.slots[p]!;
      const id = this.nextId++;
      jobs.push(
        new Promise<Float64Array>((resolve, reject) => {
          slot.pending.set(id, { resolve, reject });
          slot.worker.ref(); // a pending job keeps the process alive until it answers
          slot.worker.postMessage({ id, recipe, keys: keys.slice(p * size, (p + 1) * size) });
        }),
      );
    }
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

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
