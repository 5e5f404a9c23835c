import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { AppError } from '../src/errors.js';
import { buildClientAssertion, CLIENT_ASSERTION_TYPE } from '../src/pdnd/assertion.js';
import { requestToken, TOKEN_REJECTED_HINT } from '../src/pdnd/token-client.js';
import { tempDir } from './helpers/fs.js';
import { FAST_RETRY, client } from './pdnd-fixtures.js';

/** Token endpoints the simulator cannot play: each test scripts its answers. */
type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;
const servers: { close: () => void }[] = [];
afterEach(() => {
  while (servers.length) servers.pop()!.close();
});

async function tokenServer(handler: Handler): Promise<{ url: string; bodies: string[] }> {
  const bodies: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (d: string) => (body += d));
    req.on('end', () => {
      bodies.push(body);
      handler(req, body, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  servers.push({
    close: () => {
      server.close();
      server.closeAllConnections();
    },
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/token.oauth2`, bodies };
}

function answer(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  res.writeHead(status, { 'content-type': type }).end(typeof body === 'string' ? body : JSON.stringify(body));
}

function options(url: string, extra: Partial<Parameters<typeof requestToken>[0]> = {}): Parameters<typeof requestToken>[0] {
  const c = client(tempDir('shs-token-'), 'client-1', 'kid-1');
  return {
    tokenUrl: url,
    timeoutMs: 2000,
    clientId: c.clientId,
    assertion: () => buildClientAssertion({ client: c, audience: 'auth.interop.pagopa.it/client-assertion', ttlSeconds: 60 }),
    retry: FAST_RETRY,
    ...extra,
  };
}

const OK = { access_token: 'header.payload.signature', token_type: 'Bearer', expires_in: 600 };

describe('requestToken', () => {
  it('POSTs exactly the four form fields, form-encoded', async () => {
    let contentType: string | undefined;
    const srv = await tokenServer((req, _body, res) => {
      contentType = req.headers['content-type'];
      answer(res, 200, OK);
    });
    const token = await requestToken(options(srv.url));
    expect(token).toEqual({ accessToken: OK.access_token, tokenType: 'Bearer', expiresIn: 600 });
    expect(contentType).toBe('application/x-www-form-urlencoded');
    const form = new URLSearchParams(srv.bodies[0]);
    expect([...form.keys()].sort()).toEqual(['client_assertion', 'client_assertion_type', 'client_id', 'grant_type']);
    expect(form.get('client_id')).toBe('client-1');
    expect(form.get('grant_type')).toBe('client_credentials');
    expect(form.get('client_assertion_type')).toBe(CLIENT_ASSERTION_TYPE);
    expect(decodeJwt(form.get('client_assertion')!).iss).toBe('client-1');
  });

  it('every retry carries a fresh assertion (new jti)', async () => {
    let n = 0;
    const srv = await tokenServer((_req, _body, res) => (++n < 3 ? answer(res, 502, 'bad gateway', 'text/html') : answer(res, 200, OK)));
    await requestToken(options(srv.url));
    const jtis = srv.bodies.map((b) => decodeJwt(new URLSearchParams(b).get('client_assertion')!).jti);
    expect(jtis).toHaveLength(3);
    expect(new Set(jtis).size).toBe(3);
  });

  it('400 without a problem body is still TOKEN_REJECTED, with the hint, not retried', async () => {
    const srv = await tokenServer((_req, _body, res) => answer(res, 400, 'Bad Request', 'text/plain'));
    const err = (await requestToken(options(srv.url)).catch((e: unknown) => e)) as AppError;
    expect(err.code).toBe('TOKEN_REJECTED');
    expect(err.status).toBe(400);
    expect(err.correlationId).toBeUndefined();
    expect(err.message).toContain(TOKEN_REJECTED_HINT);
    expect(srv.bodies).toHaveLength(1);
  });

  it('400 with a PDND problem body keeps its correlationId and codes', async () => {
    const srv = await tokenServer((_req, _body, res) =>
      answer(res, 400, { type: 'about:blank', status: 400, title: 'Bad Request', detail: 'Unable to generate a token', correlationId: 'b7c1e0a4-1f5e-4e55-9d2a-3c3e2f0f6a11', errors: [{ code: '015-0008', detail: 'x' }] }, 'application/problem+json'),
    );
    const err = (await requestToken(options(srv.url)).catch((e: unknown) => e)) as AppError;
    expect(err).toMatchObject({ code: 'TOKEN_REJECTED', correlationId: 'b7c1e0a4-1f5e-4e55-9d2a-3c3e2f0f6a11', problemCodes: ['015-0008'] });
    expect(err.message).toContain('b7c1e0a4-1f5e-4e55-9d2a-3c3e2f0f6a11');
  });

  it('a 404 (wrong token URL) is not retried and points at pdnd.token_url', async () => {
    const srv = await tokenServer((_req, _body, res) => answer(res, 404, 'not found', 'text/plain'));
    const err = (await requestToken(options(srv.url)).catch((e: unknown) => e)) as AppError;
    expect(err.code).toBe('TOKEN_UNAVAILABLE');
    expect(err.message).toContain('pdnd.token_url');
    expect(srv.bodies).toHaveLength(1);
  });

  it.each([
    ['not JSON', '<html>ok</html>', 'not JSON'],
    ['an array', [], 'not a JSON object'],
    ['no access_token', { token_type: 'Bearer', expires_in: 600 }, 'access_token'],
    ['empty access_token', { ...OK, access_token: '' }, 'access_token'],
    ['another token_type', { ...OK, token_type: 'mac' }, 'token_type'],
    ['expires_in as a string', { ...OK, expires_in: '600' }, 'expires_in'],
    ['expires_in zero', { ...OK, expires_in: 0 }, 'expires_in'],
    ['expires_in fractional', { ...OK, expires_in: 1.5 }, 'expires_in'],
  ])('a 200 with %s is TOKEN_UNAVAILABLE naming the problem, never echoing the body', async (_name, body, what) => {
    const srv = await tokenServer((_req, _body, res) => answer(res, 200, body));
    const err = (await requestToken(options(srv.url)).catch((e: unknown) => e)) as AppError;
    expect(err.code).toBe('TOKEN_UNAVAILABLE');
    expect(err.message).toContain(what);
    expect(err.message).not.toContain('header.payload.signature');
    expect(srv.bodies).toHaveLength(1);
  });

  it('a token endpoint that never answers times out, is retried, then TOKEN_UNAVAILABLE', async () => {
    const srv = await tokenServer(() => {
      /* never answers */
    });
    const err = (await requestToken(options(srv.url, { timeoutMs: 150, retry: { retries: 1, minTimeoutMs: 5, maxTimeoutMs: 10 } })).catch((e: unknown) => e)) as AppError;
    expect(err.code).toBe('TOKEN_UNAVAILABLE');
    expect(err.message).toContain('timed out after 150 ms');
    expect(srv.bodies).toHaveLength(2);
  });

  it('connection refused is TOKEN_UNAVAILABLE after retries', async () => {
    const srv = await tokenServer((_req, _body, res) => answer(res, 200, OK));
    const url = srv.url;
    servers.pop()!.close();
    const err = (await requestToken(options(url)).catch((e: unknown) => e)) as AppError;
    expect(err.code).toBe('TOKEN_UNAVAILABLE');
    expect(err.retryable).toBe(true);
    expect(err.message).toContain('network error');
  });
});
