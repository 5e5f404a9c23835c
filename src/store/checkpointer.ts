import { createRequire } from 'node:module';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Db } from './db.js';

/**
 * WAL checkpoints on a worker thread, for long write-heavy work (a subject import): SQLite's
 * automatic checkpoint copies the WAL into the database and syncs both inside the COMMIT that
 * crosses 1000 pages, on the event loop; at 3 M imported rows that was a quarter of the write
 * time. While it runs, the connection's automatic checkpoint is off and a second connection on
 * a worker checkpoints (PASSIVE: it never blocks the writer) every few milliseconds.
 *
 * The worker is plain CommonJS evaluated from a string, as in src/sync/hash-pool.ts: it runs the
 * same from dist/ or from the sources under a TypeScript loader.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { fileMustExist: true });
const checkpoint = () => db.pragma('wal_checkpoint(PASSIVE)');
let timer;
const tick = () => {
  try {
    checkpoint();
    timer = setTimeout(tick, workerData.everyMs);
  } catch (err) {
    parentPort.postMessage({ error: String((err && err.message) || err) });
  }
};
tick();
parentPort.on('message', (msg) => {
  if (msg !== 'stop') return;
  clearTimeout(timer);
  try {
    checkpoint();
  } finally {
    db.close();
    parentPort.postMessage({ stopped: true });
  }
});
`;

const driver = createRequire(import.meta.url).resolve('better-sqlite3');

/**
 * Per connection: how many checkpointers run and the automatic checkpoint setting from before
 * the first. Two long jobs on one connection (an import and a reseed) may overlap: the setting
 * comes back when the last of them stops, never the "off" one of a job still running.
 */
const active = new WeakMap<Db, { count: number; autoBefore: number }>();

export class BackgroundCheckpointer {
  private readonly worker: Worker;
  private done: Promise<void>;
  private restored = false;

  /** Starts checkpointing `db` off the event loop; undefined when it is not a WAL database file. */
  static start(db: Db, everyMs = 5): BackgroundCheckpointer | undefined {
    if (db.memory || db.readonly || db.name === '' || String(db.pragma('journal_mode', { simple: true })).toLowerCase() !== 'wal') return undefined;
    return new BackgroundCheckpointer(db, everyMs);
  }

  private constructor(
    private readonly db: Db,
    everyMs: number,
  ) {
    const shared = active.get(db);
    if (shared) shared.count++;
    else active.set(db, { count: 1, autoBefore: db.pragma('wal_autocheckpoint', { simple: true }) as number });
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { driver, file: path.resolve(db.name), everyMs } });
    this.worker.unref();
    db.pragma('wal_autocheckpoint = 0');
    this.done = new Promise<void>((resolve) => {
      // Whatever ends the worker (stopped, failed to open, crashed), the connection checkpoints
      // by itself again: at worst as it did before.
      const finish = () => {
        this.restore();
        resolve();
      };
      this.worker.on('message', (msg: { stopped?: boolean; error?: string }) => {
        if (msg.stopped || msg.error !== undefined) finish();
      });
      this.worker.on('error', finish);
      this.worker.on('exit', finish);
    });
  }

  /** A last checkpoint on the worker, then the connection's own automatic checkpoint again. */
  async stop(): Promise<void> {
    this.worker.postMessage('stop');
    await this.done;
    await this.worker.terminate();
  }

  private restore(): void {
    if (this.restored) return;
    this.restored = true;
    const shared = active.get(this.db);
    if (!shared || --shared.count > 0) return;
    active.delete(this.db);
    if (this.db.open) this.db.pragma(`wal_autocheckpoint = ${shared.autoBefore}`);
  }
}
