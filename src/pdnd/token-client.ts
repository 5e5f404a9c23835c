import pRetry from 'p-retry';
import type { Dispatcher } from 'undici';
import { AppError, isAppError, retryLogFields } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { CLIENT_ASSERTION_TYPE } from './assertion.js';
import { DPOP_HEADER, requestedDpopNonce } from './dpop.js';
import { DEFAULT_RETRY, NetworkFailure, httpRequest, type HttpAnswer, isTransient, parseJsonObject, parseProblem, pRetryOptions, transient, type RetryPolicy } from './http.js';

export const TOKEN_REJECTED_HINT =
  'check client_id, kid, private key, audience and purposeId; the PDND back office has a client-assertion debugging tool';

export interface TokenResponse {
  accessToken: string;
  tokenType: 'Bearer' | 'DPoP';
  /** Seconds. */
  expiresIn: number;
}

export interface TokenRequestOptions {
  tokenUrl: string;
  timeoutMs: number;
  clientId: string;
  /** Called once per attempt, so that every retry carries a fresh assertion (new jti, iat). */
  assertion: () => Promise<string>;
  /**
   * Set for a DPoP voucher (SPEC §4b): builds the `DPoP` proof of one token request (a fresh one
   * per attempt), with the server's nonce when it asked for one. The answer must then be
   * `token_type: DPoP`.
   */
  dpopProof?: (nonce: string | undefined) => Promise<string>;
  retry?: RetryPolicy;
  logger?: Logger;
  dispatcher?: Dispatcher;
}

/**
 * POSTs a client-credentials request to the PDND token endpoint (SPEC §4). 429, 5xx, timeouts
 * and network errors are retried with backoff; a 400/401/403 is final (TOKEN_REJECTED): PDND
 * answers it for a wrong client, key, kid, audience or purpose, which retrying cannot fix.
 * Neither the assertion nor the access token ever enters a message or a log line.
 */
export async function requestToken(options: TokenRequestOptions): Promise<TokenResponse> {
  const logger = options.logger ?? silentLogger;
  const policy = options.retry ?? DEFAULT_RETRY;
  return pRetry(() => attempt(options), {
    ...pRetryOptions(policy),
    shouldRetry: (err) => isTransient(err),
    onFailedAttempt: (err) => {
      if (err.retriesLeft > 0 && isTransient(err) && isAppError(err)) {
        logger.warn({ clientId: options.clientId, ...retryLogFields(err, err.attemptNumber, err.retriesLeft) }, 'token request failed, retrying');
      }
    },
  });
}

async function attempt(options: TokenRequestOptions): Promise<TokenResponse> {
  const where = `PDND token endpoint ${withoutQuery(options.tokenUrl)}`;
  let answer = await post(options, where, undefined);
  if (options.dpopProof) {
    // RFC 9449 §8: a server may demand a nonce; the request is repeated once with it.
    const nonce = requestedDpopNonce(answer.status, answer.headers, answer.text);
    if (nonce !== undefined) answer = await post(options, where, nonce);
  }
  const { status } = answer;
  if (status === 200) return parseTokenResponse(answer.text, where, options.clientId, options.dpopProof ? 'DPoP' : 'Bearer');

  const problem = parseProblem(answer.text);
  const common = { status, correlationId: problem.correlationId, problemCodes: problem.codes };
  if (status === 400 || status === 401 || status === 403) {
    throw new AppError('TOKEN_REJECTED', `${where} rejected the client assertion of client ${options.clientId} (HTTP ${status}${problem.correlationId ? `, correlationId ${problem.correlationId}` : ''}): ${TOKEN_REJECTED_HINT}`, {
      ...common,
      retryable: false,
      details: { clientId: options.clientId },
    });
  }
  const isServerSide = status === 429 || status >= 500;
  const failure = new AppError('TOKEN_UNAVAILABLE', `${where} answered HTTP ${status}${problem.correlationId ? ` (correlationId ${problem.correlationId})` : ''}${isServerSide ? '' : '; check pdnd.token_url'}`, {
    ...common,
    retryable: true,
    details: { clientId: options.clientId },
  });
  throw isServerSide ? transient(failure) : failure;
}

async function post(options: TokenRequestOptions, where: string, nonce: string | undefined): Promise<HttpAnswer> {
  const form = new URLSearchParams({
    client_id: options.clientId,
    client_assertion: await options.assertion(),
    client_assertion_type: CLIENT_ASSERTION_TYPE,
    grant_type: 'client_credentials',
  });
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  if (options.dpopProof) headers[DPOP_HEADER] = await options.dpopProof(nonce);
  try {
    return await httpRequest(options.tokenUrl, {
      method: 'POST',
      headers,
      body: form.toString(),
      timeoutMs: options.timeoutMs,
      maxBodyBytes: 64 * 1024,
      dispatcher: options.dispatcher,
    });
  } catch (err) {
    if (err instanceof NetworkFailure) {
      const unavailable = new AppError('TOKEN_UNAVAILABLE', `${where}: ${err.message}`, { retryable: true, cause: err, details: { clientId: options.clientId } });
      // A refused certificate is refused again at once: only the operator can fix it.
      throw err.certificate ? unavailable : transient(unavailable);
    }
    throw err;
  }
}

function parseTokenResponse(text: string, where: string, clientId: string, expected: 'Bearer' | 'DPoP'): TokenResponse {
  const bad = (what: string): AppError =>
    new AppError('TOKEN_UNAVAILABLE', `${where} answered 200 with an unusable body: ${what}`, { status: 200, retryable: true, details: { clientId } });
  const { access_token, token_type, expires_in } = parseJsonObject(text, bad);
  if (typeof access_token !== 'string' || access_token.length === 0) throw bad('access_token is missing or not a non-empty string');
  if (/\s/.test(access_token)) throw bad('access_token contains whitespace');
  if (typeof token_type !== 'string' || token_type.toLowerCase() !== expected.toLowerCase()) {
    // A Bearer answer to a DPoP request means the key binding was ignored: such a voucher would be refused by the producer.
    throw new AppError('TOKEN_UNAVAILABLE', `${where} answered 200 with token_type ${typeof token_type === 'string' ? JSON.stringify(token_type.slice(0, 16)) : 'missing'}, expected "${expected}"${expected === 'DPoP' ? ': the authorization server did not bind the voucher to the DPoP key' : ''}`, {
      status: 200,
      retryable: false,
      details: { clientId },
    });
  }
  if (typeof expires_in !== 'number' || !Number.isSafeInteger(expires_in) || expires_in <= 0) throw bad('expires_in is not a positive integer');
  return { accessToken: access_token, tokenType: expected, expiresIn: expires_in };
}

/** Origin and path: a query string may carry a token, and messages end up in logs. */
function withoutQuery(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.origin}${parsed.pathname}${parsed.search ? '?…' : ''}`;
  } catch {
    return '(invalid url)';
  }
}
