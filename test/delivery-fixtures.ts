import http from 'node:http';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { createLogger, type Logger } from '../src/log.js';
import { openDatabase, type Db } from '../src/store/db.js';
import { OutboxStore } from '../src/store/outbox.js';
import type { SignalEvent } from '../src/events.js';
import { expectContractText } from './helpers/event-contract.js';

/** Shared by the sink and delivery tests: a real DB, real events, a real HTTP receiver. */

export const ES_A = '11111111-1111-4111-8111-111111111111';
export const ES_B = '22222222-2222-4222-8222-222222222222';
/** A fiscal code in event payloads (include_subject_key): must never reach a log line. */
export const SUBJECT_KEY = 'RSSMRA80A01H501Z';

export function openTestDb(dir: string, name = 'state.db'): Db {
  return openDatabase(path.join(dir, name));
}

export function signalEvent(eserviceId: string, signalId: number): SignalEvent {
  return {
    id: `${eserviceId}:${signalId}`,
    type: 'signal',
    eserviceId,
    eserviceName: eserviceId === ES_A ? 'Anagrafe' : 'Tributi',
    signalId,
    signalType: 'UPDATE',
    objectType: 'domicile',
    objectId: `pseudo-${signalId}`,
    subjectRef: `PR-${signalId}`,
    subjectKey: SUBJECT_KEY,
    epoch: 1,
    receivedAt: '2024-05-01T10:00:00.000Z',
  };
}

/** Appends signal events; returns their ids in outbox order. */
export function appendSignals(db: Db, eserviceId: string, signalIds: number[], now = Date.now()): string[] {
  const outbox = new OutboxStore(db);
  return signalIds.map((id) => {
    const event = signalEvent(eserviceId, id);
    outbox.append(event, now);
    return event.id;
  });
}

/** Appends events of A and B interleaved: A1, B1, A2, B2, ... */
export function appendInterleaved(db: Db, perEService: number): string[] {
  const ids: string[] = [];
  for (let i = 1; i <= perEService; i++) {
    ids.push(...appendSignals(db, ES_A, [i * 10]));
    ids.push(...appendSignals(db, ES_B, [i * 7]));
  }
  return ids;
}

export interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  /** Status the receiver answered, or 0 if it dropped the connection / never answered. */
  status: number;
  at: number;
}

export type Reply = { status: number; headers?: Record<string, string>; delayMs?: number } | 'drop' | 'hang';

/** A loopback HTTP server; `reply` decides each answer. Records every request. */
export async function startReceiver(reply: (req: Received, index: number) => Reply): Promise<{ url: string; requests: Received[]; close: () => Promise<void> }> {
  const requests: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const received: Received = { headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), status: 0, at: Date.now() };
      // Whatever a webhook sink posts is events of the published contract.
      expectContractText(received.body, 'webhook body');
      const index = requests.length;
      requests.push(received);
      const answer = reply(received, index);
      if (answer === 'drop') return req.socket.destroy();
      if (answer === 'hang') return;
      const send = (): void => {
        if (res.destroyed || req.socket.destroyed) return;
        received.status = answer.status;
        res.writeHead(answer.status, { 'content-type': 'application/json', ...(answer.headers ?? {}) });
        res.end('{}');
      };
      if (answer.delayMs) setTimeout(send, answer.delayMs);
      else send();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/events`,
    requests,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export { seededRandom } from './helpers/random.js';

export async function waitUntil(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A real pino logger writing into memory, to assert what reaches log lines. */
export function captureLogger(): { logger: Logger; text: () => string } {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString('utf8');
      cb();
    },
  });
  return { logger: createLogger({ level: 'trace', destination: stream }), text: () => text };
}
