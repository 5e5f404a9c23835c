import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { ExecSinkConfig, FileSinkConfig } from '../src/config/types.js';
import type { ResyncEvent } from '../src/events.js';
import { Metrics } from '../src/metrics.js';
import { DeliveryService } from '../src/sinks/delivery.js';
import { FileSink } from '../src/sinks/file.js';
import { StdoutSink } from '../src/sinks/stdout.js';
import { OutboxStore } from '../src/store/outbox.js';
import { SinkPositionStore } from '../src/store/sink-positions.js';
import { tempDir } from './helpers/fs.js';
import { ES_A, ES_B, SUBJECT_KEY, appendSignals, captureLogger, openTestDb, waitUntil } from './delivery-fixtures.js';

const fast = { pollIntervalMs: 50, retryBaseMs: 10, retryMaxMs: 50 };
const fileSink = (p: string, name = 'file'): FileSinkConfig => ({ type: 'file', name, eservices: [], path: p });
const readLines = (p: string): string[] => fs.readFileSync(p, 'utf8').split('\n').filter((l) => l !== '');
const payloads = (db: ReturnType<typeof openTestDb>): string[] => new OutboxStore(db).all().map((r) => r.payload);

describe('file sink', () => {
  it('appends one stored payload per line, file mode 0600', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1, 2, 3]);
    appendSignals(db, ES_B, [9]);
    const out = path.join(dir, 'events.ndjson');
    fs.writeFileSync(out, ''); // an existing file is appended to, not replaced
    fs.chmodSync(out, 0o600);
    const service = new DeliveryService({ db, batchSize: 2, sinks: [fileSink(out)], ...fast });
    const result = await service.drain();
    await service.stop(0);
    expect(result).toEqual({ complete: true, sinks: [{ name: 'file', delivered: 4, pending: 0, state: 'active', error: null }] });
    expect(readLines(out)).toEqual(payloads(db));
    expect(fs.statSync(out).mode & 0o777).toBe(0o600);
    db.close();
  });

  it('a missing directory fails the batch without advancing; once it exists, delivery resumes', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1, 2]);
    const out = path.join(dir, 'spool', 'events.ndjson');
    const logs = captureLogger();
    const service = new DeliveryService({ db, batchSize: 10, sinks: [fileSink(out)], logger: logs.logger, ...fast });
    service.start();
    await waitUntil(() => service.status()[0]!.lastError !== null, 'the first failure');
    const failing = service.status()[0]!;
    expect(failing).toMatchObject({ state: 'active', position: 0, pending: 2 });
    expect(failing.lastError).toContain(`cannot append to ${out}: ENOENT`);
    fs.mkdirSync(path.dirname(out));
    await waitUntil(() => service.pending('file') === 0, 'delivery once the directory exists');
    await service.stop(1000);
    expect(readLines(out)).toEqual(payloads(db));
    expect(service.status()[0]).toMatchObject({ position: 2, lastError: null, delivered: 2 });
    expect(logs.text()).not.toContain(SUBJECT_KEY);
    db.close();
  });

  it.skipIf(!fs.existsSync('/dev/full'))('a full device (ENOSPC) fails the batch and keeps the position', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1]);
    const metrics = new Metrics();
    const service = new DeliveryService({ db, batchSize: 10, sinks: [fileSink('/dev/full')], metrics, drainAttempts: 2, ...fast });
    const result = await service.drain();
    await service.stop(0);
    expect(result.complete).toBe(false);
    expect(result.sinks[0]).toMatchObject({ delivered: 0, pending: 1, state: 'active' });
    expect(result.sinks[0]!.error).toContain('ENOSPC');
    expect(new SinkPositionStore(db).get('file').position).toBe(0);
    expect((await metrics.sinkFailures.get()).values[0]!.value).toBe(2);
    db.close();
  });

  it.skipIf(process.getuid?.() === 0)('a read-only directory fails the batch (EACCES); made writable, delivery resumes', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1]);
    const spool = path.join(dir, 'ro');
    fs.mkdirSync(spool, { mode: 0o500 });
    const out = path.join(spool, 'events.ndjson');
    const service = new DeliveryService({ db, batchSize: 10, sinks: [fileSink(out)], drainAttempts: 1, ...fast });
    const refused = await service.drain();
    expect(refused.sinks[0]!.error).toContain('EACCES');
    fs.chmodSync(spool, 0o700);
    const fresh = new DeliveryService({ db, batchSize: 10, sinks: [fileSink(out)], ...fast });
    expect((await fresh.drain()).complete).toBe(true);
    await Promise.all([service.stop(0), fresh.stop(0)]);
    expect(readLines(out)).toHaveLength(1);
    db.close();
  });

  it('reopen() after a logrotate-style rename writes to a new file at the path', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    const out = path.join(dir, 'events.ndjson');
    // Polling effectively off: only notify() wakes the loop, so the test drives each step.
    const service = new DeliveryService({ db, batchSize: 10, sinks: [fileSink(out)], ...fast, pollIntervalMs: 3_600_000 });
    service.start();
    const first = appendSignals(db, ES_A, [1, 2]);
    service.notify();
    await waitUntil(() => service.pending('file') === 0 && fs.existsSync(out) && readLines(out).length === 2, 'the first batch');
    fs.renameSync(out, `${out}.1`);
    service.reopen();
    const second = appendSignals(db, ES_A, [3]);
    service.notify();
    await waitUntil(() => fs.existsSync(out) && readLines(out).length === 1, 'the second batch in the new file');
    await service.stop(1000);
    expect(readLines(`${out}.1`).map((l) => (JSON.parse(l) as { id: string }).id)).toEqual(first);
    expect(readLines(out).map((l) => (JSON.parse(l) as { id: string }).id)).toEqual(second);
    db.close();
  });

  it('a reopen() that arrives while a batch is being written applies to the next batch', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    const [one, two] = [appendSignals(db, ES_A, [1]), appendSignals(db, ES_A, [2])];
    const rows = new OutboxStore(db).all();
    const out = path.join(dir, 'events.ndjson');
    const sink = new FileSink({ config: fileSink(out) });
    const signal = new AbortController().signal;
    const first = sink.deliver(rows.slice(0, 1), signal);
    sink.reopen(); // SIGHUP while the first batch is opening and writing the file
    await first;
    fs.renameSync(out, `${out}.1`);
    await sink.deliver(rows.slice(1), signal);
    await sink.close();
    expect(readLines(`${out}.1`).map((l) => (JSON.parse(l) as { id: string }).id)).toEqual(one);
    expect(readLines(out).map((l) => (JSON.parse(l) as { id: string }).id)).toEqual(two);
    db.close();
  });
});

/** A receiving command: fails with `firstExit` on its first run, then appends stdin to `out`. */
function writeReceiverScript(dir: string): string {
  const script = path.join(dir, 'receiver.mjs');
  fs.writeFileSync(
    script,
    `import fs from 'node:fs';
const [state, out, firstExit, sleepMs] = process.argv.slice(2);
const runs = fs.existsSync(state) ? Number(fs.readFileSync(state, 'utf8')) : 0;
fs.writeFileSync(state, String(runs + 1));
let input = '';
process.stdin.setEncoding('utf8').on('data', (d) => (input += d)).on('end', () => {
  setTimeout(() => {
    if (runs === 0 && firstExit !== '0') process.exit(Number(firstExit));
    fs.appendFileSync(out, input);
    process.exit(0);
  }, Number(sleepMs));
});
`,
  );
  return script;
}

describe('exec sink', () => {
  const execSink = (dir: string, firstExit: number, opts: { sleepMs?: number; timeoutMs?: number } = {}): { config: ExecSinkConfig; out: string; state: string } => {
    const out = path.join(dir, 'received.ndjson');
    const state = path.join(dir, 'runs');
    const script = writeReceiverScript(dir);
    return { out, state, config: { type: 'exec', name: 'cmd', eservices: [], command: [process.execPath, script, state, out, String(firstExit), String(opts.sleepMs ?? 0)], timeoutMs: opts.timeoutMs ?? 20_000 } };
  };

  it('a command that exits 1 and then 0 gets the batch again and confirms it', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1, 2, 3]);
    const { config, out, state } = execSink(dir, 1);
    const metrics = new Metrics();
    const service = new DeliveryService({ db, batchSize: 10, sinks: [config], metrics, ...fast });
    service.start();
    await waitUntil(() => service.pending('cmd') === 0, 'the retried batch');
    await service.stop(1000);
    expect(fs.readFileSync(state, 'utf8')).toBe('2');
    expect(readLines(out)).toEqual(payloads(db));
    expect(service.status()[0]).toMatchObject({ state: 'active', position: 3, lastError: null });
    expect((await metrics.sinkFailures.get()).values[0]!.value).toBe(1);
    db.close();
  });

  it('exit 65 (EX_DATAERR) stops the sink instead of re-running forever', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1]);
    const { config, state } = execSink(dir, 65);
    const service = new DeliveryService({ db, batchSize: 10, sinks: [config], ...fast });
    const result = await service.drain();
    await service.stop(0);
    expect(result.sinks[0]).toMatchObject({ state: 'stopped', delivered: 0, pending: 1 });
    expect(result.sinks[0]!.error).toContain('exited with 65');
    expect(fs.readFileSync(state, 'utf8')).toBe('1');
    db.close();
  });

  it('a command that outlives its timeout is killed and the batch is not confirmed', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1]);
    const { config, out } = execSink(dir, 0, { sleepMs: 30_000, timeoutMs: 300 });
    const service = new DeliveryService({ db, batchSize: 10, sinks: [config], drainAttempts: 1, ...fast });
    const result = await service.drain();
    await service.stop(0);
    expect(result.sinks[0]!.error).toContain('did not finish within 300 ms');
    expect(result.sinks[0]!.pending).toBe(1);
    expect(fs.existsSync(out)).toBe(false);
    db.close();
  });

  it('a command that cannot be started fails the batch (retried, not stopped)', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1]);
    const config: ExecSinkConfig = { type: 'exec', name: 'cmd', eservices: [], command: [path.join(dir, 'missing-program')], timeoutMs: 5_000 };
    const service = new DeliveryService({ db, batchSize: 10, sinks: [config], drainAttempts: 1, ...fast });
    const result = await service.drain();
    await service.stop(0);
    expect(result.sinks[0]).toMatchObject({ state: 'active', pending: 1 });
    expect(result.sinks[0]!.error).toContain('ENOENT');
    db.close();
  });
});

describe('stdout sink', () => {
  it('waits for a slow reader (drain) before confirming, and writes the payloads as NDJSON', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [1, 2, 3]);
    const rows = new OutboxStore(db).all();
    const stream = new PassThrough({ highWaterMark: 16 });
    const sink = new StdoutSink({ config: { type: 'stdout', name: 'out', eservices: [], format: 'ndjson' }, stream });
    let confirmed = false;
    const delivery = sink.deliver(rows, new AbortController().signal).then(() => (confirmed = true));
    await new Promise((r) => setImmediate(r));
    expect(confirmed).toBe(false); // nobody has read yet: the buffer is over its mark
    let text = '';
    stream.setEncoding('utf8').on('data', (d: string) => (text += d));
    await delivery;
    expect(text).toBe(rows.map((r) => `${r.payload}\n`).join(''));
    db.close();
  });

  it('a reader that goes away (EPIPE) fails the stdout sink; the process lives on', async () => {
    const dir = tempDir();
    const script = path.join(dir, 'writer.mjs');
    // Delivers 1 KiB batches to the real process.stdout until one fails, then reports it.
    fs.writeFileSync(
      script,
      `import { StdoutSink } from ${JSON.stringify(pathToFileURL(path.join(import.meta.dirname, '..', 'dist', 'sinks', 'stdout.js')).href)};
const sink = new StdoutSink({ config: { type: 'stdout', name: 'out', eservices: [], format: 'ndjson' } });
const signal = new AbortController().signal;
for (let i = 1; i <= 100_000; i++) {
  const row = { seq: i, eventId: 'e' + i, eserviceId: 'x', signalId: i, kind: 'signal', payload: JSON.stringify({ i, pad: 'x'.repeat(1000) }), createdAt: 0 };
  try {
    await sink.deliver([row], signal);
  } catch (err) {
    process.stderr.write('FAILED ' + err.code + ': ' + err.message + '\\n');
    await sink.close();
    process.exit(0);
  }
  await new Promise((r) => setTimeout(r, 2));
}
process.exit(2);
`,
    );
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    // The reader takes the first chunk, then closes its end of the pipe.
    child.stdout.once('data', () => child.stdout.destroy());
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    expect(stderr).toContain('FAILED SINK_FAILED: sink "out": cannot write to stdout: EPIPE');
    expect(code).toBe(0);
  });

  it('pretty: one short human line per event; resync events stand out; never the subject key', async () => {
    const dir = tempDir();
    const db = openTestDb(dir);
    appendSignals(db, ES_A, [42]);
    const resync: ResyncEvent = {
      id: `${ES_B}:resync:7`, type: 'resync-required', eserviceId: ES_B, eserviceName: 'Tributi', reportId: 7,
      fromSignalId: 10, toSignalId: 20, reason: 'seed-history-missing', detail: 'two seed rotations while away', createdAt: '2024-05-02T08:00:00.000Z',
    };
    new OutboxStore(db).append(resync);
    const stream = new PassThrough();
    let text = '';
    stream.setEncoding('utf8').on('data', (d: string) => (text += d));
    const service = new DeliveryService({ db, batchSize: 10, sinks: [{ type: 'stdout', name: 'out', eservices: [], format: 'pretty' }], sinkOptions: { stdout: stream }, ...fast });
    expect((await service.drain()).complete).toBe(true);
    await service.stop(0);
    expect(text).toBe(
      '2024-05-01T10:00:00.000Z  Anagrafe  UPDATE domicile  ref=PR-42  #42\n' +
        '2024-05-02T08:00:00.000Z  Tributi  RESYNC REQUIRED signals 10..20 (seed-history-missing)\n',
    );
    expect(text).not.toContain(SUBJECT_KEY);
    db.close();
  });
});
