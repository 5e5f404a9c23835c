import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';

/** One response the simulator is about to send: built first, so faults can alter it. */
export interface SimResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The problem+json body shape of PDND and Signal Hub errors. */
export interface ProblemBody {
  type: string;
  status: number;
  title: string;
  detail: string;
  correlationId: string;
  errors: { code: string; detail: string }[];
}

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Payload Too Large',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

export function statusTitle(status: number): string {
  return TITLES[status] ?? `HTTP ${status}`;
}

export function problem(status: number, code: string, detail: string, headers: Record<string, string> = {}): SimResponse {
  const body: ProblemBody = {
    type: 'about:blank',
    status,
    title: statusTitle(status),
    detail,
    correlationId: randomUUID(),
    errors: [{ code, detail }],
  };
  return { status, headers: { ...headers, 'content-type': 'application/problem+json' }, body: JSON.stringify(body) };
}

export function json(status: number, value: unknown, headers: Record<string, string> = {}): SimResponse {
  return { status, headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(value) };
}

/** A body already serialized (the pull hot path builds its JSON by hand). */
export function rawJson(status: number, body: string, headers: Record<string, string> = {}): SimResponse {
  return { status, headers: { ...headers, 'content-type': 'application/json' }, body };
}

export function send(res: ServerResponse, response: SimResponse): void {
  const payload = Buffer.from(response.body, 'utf8');
  res.writeHead(response.status, { ...response.headers, 'content-length': String(payload.length) });
  res.end(payload);
}

/** Body limit: bulk deposits over /_sim/deposit can be large, everything else is small. */
export async function readBody(req: IncomingMessage, limitBytes: number): Promise<string | null> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limitBytes) return null;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
