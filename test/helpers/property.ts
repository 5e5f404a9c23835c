import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Parameters } from 'fast-check';

/**
 * fast-check settings shared by the property suites: a fixed seed and a bounded number of runs
 * in `npm test` so CI is fast and reproducible; `npm run test:soak` (SIGNALHUB_SOAK=1) runs many
 * more cases. FC_SEED replays a failure that a soak run printed.
 */
export function propertyParameters<T>(options: { runs?: number; soakRuns?: number } = {}): Parameters<T> {
  const soak = process.env.SIGNALHUB_SOAK === '1';
  const seed = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : soak ? Date.now() : 20261122;
  return {
    seed,
    numRuns: soak ? (options.soakRuns ?? 2000) : (options.runs ?? 100),
    // The failing input is what helps; the seed lets anyone replay it.
    verbose: 1,
  };
}

/**
 * Lets the event loop turn once. Vitest's worker talks to the main process over the event loop:
 * a property that runs thousands of cases without yielding to it (synchronous code, or async
 * code that only awaits microtasks and synchronous SQLite) starves that channel, and after a
 * minute vitest fails the run with "Timeout calling onTaskUpdate" (the first soak run did).
 * Properties await this once per case.
 */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Vitest timeout for a property test, scaled for soak runs. */
export function propertyTimeoutMs(normalMs: number): number {
  return process.env.SIGNALHUB_SOAK === '1' ? normalMs * 40 : normalMs;
}

/** What a scripted server answers: any status, headers and bytes; `cut` drops the connection mid-body (before any answer for 204/304, which have no body). */
export interface ScriptedAnswer {
  status: number;
  headers?: Record<string, string>;
  body: string | Buffer;
  cut?: boolean;
}

export interface ScriptedServer {
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** Requests served so far. */
  requests(): number;
  close(): Promise<void>;
}

/**
 * A real HTTP server on loopback (port 0) that answers whatever the property generated, so
 * that the real clients parse real bytes off a real socket.
 */
export async function startScriptedServer(answer: (req: IncomingMessage) => ScriptedAnswer): Promise<ScriptedServer> {
  let served = 0;
  const server = createServer((req, res) => {
    served++;
    req.resume();
    const reply = answer(req);
    const body = typeof reply.body === 'string' ? Buffer.from(reply.body, 'utf8') : reply.body;
    if (reply.cut && (reply.status === 204 || reply.status === 304)) {
      // These have no body to cut: Node would hold the status line back until end(), so a "cut"
      // one is a connection dropped before any answer. Done explicitly, not by accident.
      res.destroy();
      return;
    }
    if (reply.cut) {
      // Promise more bytes than are sent, then drop the connection: a body cut in the middle.
      res.writeHead(reply.status, { ...reply.headers, 'content-length': String(body.length + 64) });
      res.write(body.subarray(0, Math.floor(body.length / 2)), () => res.destroy());
      return;
    }
    if (reply.status === 204 || reply.status === 304) {
      // No body and no Content-Length on these: anything else is not HTTP.
      res.writeHead(reply.status, reply.headers);
      res.end();
      return;
    }
    res.writeHead(reply.status, { ...reply.headers, 'content-length': String(body.length) });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests: () => served,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Settles like `work`, or rejects with "hang" after `ms`: a property run that never settles
 * fails as a hang instead of stalling the suite.
 */
export async function bounded<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: ${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, hang]);
  } finally {
    clearTimeout(timer);
  }
}

/** The outcome of a call: its value, or what it threw (anything that is not an AppError fails the property as a crash). */
export async function outcomeOf<T>(work: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  try {
    return { ok: true, value: await work };
  } catch (error) {
    return { ok: false, error };
  }
}
