import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorLogFields } from '../errors.js';
import { json, problem, readBody, send, statusTitle, type SimResponse } from './http.js';
import type { Fault, SimRoute } from './faults.js';
import type { SimState } from './state.js';
import type { VoucherClaimHubRequires } from './vouchers.js';
import { handleToken } from './token-endpoint.js';
import { handlePull, handlePush, handleStatus } from './hub.js';
import { handleCryptoInfo } from './producer.js';
import { handleAdmin } from './admin.js';

const SMALL_BODY = 1024 * 1024;
const ADMIN_BODY = 256 * 1024 * 1024;

interface Routed {
  route: SimRoute | 'admin';
  eserviceId?: string;
  handle: (body: string) => Promise<SimResponse>;
  /** Token route only: issue the voucher without this claim (fault `voucherLacksClaim`). */
  handleLacking?: (body: string, claim: VoucherClaimHubRequires) => Promise<SimResponse>;
  readsBody: boolean;
}

/** The URL layout of SPEC §3–§6 under one base, as the `simulator` config preset expects. */
function routeOf(state: SimState, req: IncomingMessage, url: URL): Routed | SimResponse {
  const method = req.method ?? 'GET';
  const path = url.pathname;
  const headers = req.headers;
  if (path === '/token.oauth2') {
    return method === 'POST' ? { route: 'token', readsBody: true, handle: (body) => handleToken(state, body, headers), handleLacking: (body, claim) => handleToken(state, body, headers, claim) } : notAllowed(method, path);
  }
  if (path === '/1.0/pull/status') {
    return method === 'GET' ? { route: 'status', readsBody: false, handle: () => handleStatus(state, headers) } : notAllowed(method, path);
  }
  const pull = /^\/1\.0\/pull\/signals\/([^/]+)$/.exec(path);
  if (pull) {
    const eserviceId = decodeURIComponent(pull[1]!);
    return method === 'GET' ? { route: 'pull', eserviceId, readsBody: false, handle: () => handlePull(state, headers, eserviceId, url.searchParams) } : notAllowed(method, path);
  }
  if (path === '/1.0/push/signals') {
    return method === 'POST' ? { route: 'push', readsBody: true, handle: (body) => handlePush(state, headers, body) } : notAllowed(method, path);
  }
  const crypto = /^\/producers\/([^/]+)\/pseudonymization$/.exec(path);
  if (crypto) {
    const eserviceId = decodeURIComponent(crypto[1]!);
    return method === 'GET' ? { route: 'crypto', eserviceId, readsBody: false, handle: () => handleCryptoInfo(state, headers, eserviceId, url.searchParams, path) } : notAllowed(method, path);
  }
  if (path.startsWith('/_sim/')) {
    return { route: 'admin', readsBody: method !== 'GET', handle: (body) => handleAdmin(state, method, path, url.searchParams, body) };
  }
  return problem(404, 'NotFound', `no route ${method} ${path}`);
}

function notAllowed(method: string, path: string): SimResponse {
  return problem(405, 'MethodNotAllowed', `${method} not allowed on ${path}`);
}

export function createSimServer(state: SimState): Server {
  const server = createServer((req, res) => {
    serve(state, req, res).catch((err: unknown) => {
      state.logger.error(errorLogFields(err), 'simulator: request failed');
      if (!res.headersSent) send(res, problem(500, 'InternalError', 'simulator internal error'));
      else res.destroy();
    });
  });
  // Benchmarks keep connections open across thousands of pages.
  server.keepAliveTimeout = 30_000;
  return server;
}

async function serve(state: SimState, req: IncomingMessage, res: ServerResponse): Promise<void> {
  // The simulated parties' clock (tests move it): what `doctor` measures clock skew against.
  res.setHeader('date', new Date(state.now()).toUTCString());
  const url = new URL(req.url ?? '/', 'http://simulator.invalid');
  const routed = routeOf(state, req, url);
  if (!('route' in routed)) {
    req.resume();
    send(res, routed);
    return;
  }
  const body = routed.readsBody ? await readBody(req, routed.route === 'admin' ? ADMIN_BODY : SMALL_BODY) : (req.resume(), '');
  if (body === null) {
    send(res, problem(413, 'PayloadTooLarge', 'request body too large'));
    return;
  }
  if (routed.route === 'admin') {
    send(res, await routed.handle(body));
    return;
  }
  const route = routed.route;
  state.countRequest(route);
  // Before any fault: an assertion sent to a failing token endpoint was still sent (and could leak).
  if (route === 'token') {
    const assertion = new URLSearchParams(body).get('client_assertion');
    if (assertion) state.noteSecret('assertion', assertion);
  }
  const proof = req.headers.dpop;
  if (typeof proof === 'string' && proof !== '') state.noteSecret('proof', proof);
  let fault = state.faults.take(route, routed.eserviceId);
  if (fault?.kind === 'delay') {
    await sleep(fault.ms, undefined, { ref: false });
    if (res.destroyed) return;
    fault = undefined;
  } else if (fault?.kind === 'expireVouchers') {
    state.authority.expireAllIssued();
    state.logger.debug({ route, fault: fault.kind }, 'simulator: fault injected');
    fault = undefined;
  } else if (fault?.kind === 'voucherLacksClaim') {
    state.logger.debug({ route, fault: fault.kind }, 'simulator: fault injected');
    const lacking = routed.handleLacking;
    const response = lacking ? await lacking(body, fault.claim ?? 'nbf') : await routed.handle(body);
    state.countResponse(route, response.status);
    send(res, response);
    return;
  }
  if (fault) {
    const faulted = await applyFault(fault, res, () => routed.handle(body));
    if (faulted !== null) state.countResponse(route, faulted);
    state.logger.debug({ route, fault: fault.kind, status: faulted }, 'simulator: fault injected');
    return;
  }
  const response = await routed.handle(body);
  state.countResponse(route, response.status);
  state.logger.debug({ route, status: response.status }, 'simulator: request');
  send(res, response);
}

/** Sends the faulty answer; returns the status sent, or null when nothing was. */
async function applyFault(fault: Exclude<Fault, { kind: 'delay' | 'expireVouchers' | 'voucherLacksClaim' }>, res: ServerResponse, real: () => Promise<SimResponse>): Promise<number | null> {
  switch (fault.kind) {
    case 'status': {
      const headers = fault.headers ?? {};
      if (fault.problem === false) {
        send(res, { status: fault.status, headers: { 'content-type': 'text/plain', ...headers }, body: statusTitle(fault.status) });
      } else {
        send(res, problem(fault.status, fault.code ?? String(fault.status), fault.detail ?? `simulated ${statusTitle(fault.status)}`, headers));
      }
      return fault.status;
    }
    case 'drop':
      res.socket?.destroy();
      return null;
    case 'truncate': {
      const response = await real();
      const full = Buffer.from(response.body, 'utf8');
      res.writeHead(response.status, { ...response.headers, 'content-length': String(full.length) });
      // Flush half the promised bytes, then cut the connection mid-body.
      res.write(full.subarray(0, Math.floor(full.length / 2)), () => res.destroy());
      return response.status;
    }
    case 'malformed':
      send(res, { status: fault.status ?? 200, headers: { 'content-type': 'application/json' }, body: '<html><body>Service temporarily unavailable</body></html>' });
      return fault.status ?? 200;
    case 'wrongShape':
      send(res, json(fault.status ?? 200, fault.body ?? { unexpected: true }));
      return fault.status ?? 200;
    case 'drip': {
      const response = await real();
      const full = Buffer.from(response.body, 'utf8');
      res.writeHead(response.status, { ...response.headers, 'content-length': String(full.length) });
      res.flushHeaders();
      const step = fault.chunkBytes ?? 16;
      for (let offset = 0; offset < full.length && !res.destroyed; offset += step) {
        await sleep(fault.intervalMs, undefined, { ref: false });
        if (res.destroyed) break;
        res.write(full.subarray(offset, offset + step));
      }
      if (!res.destroyed) res.end();
      return response.status;
    }
  }
}

export function listen(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}
