import fs from 'node:fs';
import type { ClientConfig, Config, EServiceConfig } from '../config/types.js';
import { AppError, EXIT, isAppError, type ErrorCode } from '../errors.js';
import { FORBIDDEN_FIXES, forbiddenReasonOf } from '../hub/errors.js';
import { silentLogger } from '../log.js';
import { httpRequest, NetworkFailure } from '../pdnd/http.js';
import { loadPrivateKey } from '../pdnd/keys.js';
import { TOKEN_REJECTED_HINT } from '../pdnd/token-client.js';
import { VoucherProvider } from '../pdnd/vouchers.js';
import { probeSink } from '../sinks/probe.js';
import { openDatabase, probeWritable } from '../store/db.js';
import { EServiceStore } from '../store/eservices.js';
import { closeRemotes, createRemotes } from '../sync/runtime.js';

/**
 * `signalhub-sync doctor`: a preflight that changes nothing. Every check talks to the real
 * party (PDND, the hub, each producer, the database, each sink) the way the daemon would, and
 * says what to fix. Cursors are read, never written; nothing is delivered; the database gets a
 * write transaction that is rolled back.
 */

/** What kind of failure a check found: it picks the exit code (69, 77, 78). */
export type FailureKind = 'unavailable' | 'noperm' | 'config';

export interface CheckResult {
  /** Short name, e.g. `hub /status`, `crypto info residenze`. */
  check: string;
  /** true passed, false failed, null not run (an earlier check it needs failed). */
  ok: boolean | null;
  detail: string;
  /** What the operator does about a failure. */
  fix?: string;
  kind?: FailureKind;
}

export interface DoctorReport {
  ok: boolean;
  /** 0, or the exit code of the first failure's kind. */
  exitCode: number;
  checks: CheckResult[];
}

export interface DoctorOptions {
  /** Largest accepted difference between this host's clock and the token endpoint's `Date`. Default 30 s. */
  maxClockSkewSeconds?: number;
  /** Epoch ms; tests may move it. */
  now?: () => number;
}

const EXIT_BY_KIND: Record<FailureKind, number> = { unavailable: EXIT.UNAVAILABLE, noperm: EXIT.NOPERM, config: EXIT.CONFIG };

/** Seen in the hub's 401 when the voucher was signed by another PDND environment's key. */
const SIGNING_KEY_MISMATCH = /unable to find a signing key/i;

export async function runDoctor(config: Config, options: DoctorOptions = {}): Promise<DoctorReport> {
  const checks: CheckResult[] = [];
  const pass = (check: string, detail: string) => checks.push({ check, ok: true, detail });
  const fail = (check: string, detail: string, fix: string, kind: FailureKind) => checks.push({ check, ok: false, detail, fix, kind });
  const skip = (check: string, detail: string) => checks.push({ check, ok: null, detail });

  // A preflight answers within seconds: few retries, short waits.
  const quick: Config = { ...config, hub: { ...config.hub, maxRetries: 1, maxRetryDelayMs: 1000, maxRateLimitWaitMs: 5000 } };
  const remotes = createRemotes(quick, { logger: silentLogger });
  try {
    checkKeyFiles(config, pass, fail);
    await checkDpopKey(config, remotes.vouchers, pass, fail);
    await checkClock(config, options, pass, fail);

    // M2M voucher, then each key of the client separately when it has two.
    let m2mOk = false;
    try {
      const voucher = await remotes.vouchers.m2m();
      m2mOk = true;
      pass('M2M voucher', `obtained for client ${config.pdnd.m2m.clientId} from ${origin(config.pdnd.tokenUrl)} (valid ${Math.round((voucher.expiresAt - Date.now()) / 1000)} s)`);
    } catch (err) {
      failRemote(fail, 'M2M voucher', err);
    }
    await checkBothKeys(config, config.pdnd.m2m, 'M2M', undefined, pass, fail);

    let hubOk = false;
    if (!m2mOk) skip('hub /status', 'not checked: no M2M voucher');
    else {
      try {
        await remotes.hub.status();
        hubOk = true;
        pass('hub /status', `${config.hub.baseUrl}/status answered OK with the M2M voucher`);
      } catch (err) {
        failHub(fail, 'hub /status', err, config);
      }
    }

    const cursors = readCursors(config);
    for (const es of config.eservices) {
      const name = `pull ${es.name}`;
      if (!hubOk) {
        skip(name, 'not checked: the hub is not reachable with the M2M voucher');
        continue;
      }
      const cursor = cursors.get(es.id) ?? 0;
      try {
        const page = await remotes.hub.pull(es.id, cursor, 1);
        pass(name, `size=1 from cursor ${cursor}: HTTP ${page.status}, ${page.signals.length === 0 ? 'nothing new' : `next signal ${page.signals[0]!.signalId}`} (cursor not moved)`);
      } catch (err) {
        failHub(fail, name, err, config);
      }
    }

    const voucherChecked = new Map<string, boolean>();
    const clientsChecked = new Set<string>();
    for (const es of config.eservices) {
      const key = JSON.stringify([es.client.clientId, es.purposeId, es.voucherType, es.audit ?? null]);
      let voucherOk = voucherChecked.get(key);
      const how = [es.voucherType === 'dpop' ? 'DPoP' : 'Bearer', ...(es.audit ? ['audit'] : [])].join(' + ');
      if (voucherOk === undefined) {
        try {
          await remotes.vouchers.eservice(es);
          voucherOk = true;
          pass(`e-service voucher ${es.name}`, `purpose ${es.purposeId}, client ${es.client.clientId}, ${how}`);
        } catch (err) {
          voucherOk = false;
          failRemote(fail, `e-service voucher ${es.name}`, err);
        }
        voucherChecked.set(key, voucherOk);
        if (!clientsChecked.has(es.client.clientId)) {
          clientsChecked.add(es.client.clientId);
          await checkBothKeys(config, es.client, `e-service client ${es.client.clientId}`, es, pass, fail);
        }
      }
      if (!voucherOk) {
        skip(`crypto info ${es.name}`, 'not checked: no e-service voucher');
        continue;
      }
      try {
        const info = await remotes.crypto.fetch(es);
        pass(`crypto info ${es.name}`, `${info.cryptoHashFunction}, seed fingerprint ${info.fingerprint}${info.signalId !== undefined ? `, introduced at signal ${info.signalId}` : ''} (${how})`);
      } catch (err) {
        failRemote(fail, `crypto info ${es.name}`, err);
      }
    }

    const db = probeWritable(config.database);
    if (db.ok) pass('database', `${config.database} ${db.exists ? 'is writable (a write transaction was begun and rolled back)' : 'will be created: its folder is writable'}`);
    else if (db.denied) fail('database', `${config.database} ${db.reason}`, 'give the service user write access to the database file and its folder (StateDirectory= under systemd)', 'noperm');
    else fail('database', `${config.database}: ${db.reason}`, 'another process keeps a write transaction open; retry, or look for a stuck process', 'unavailable');

    for (const sink of config.sinks) {
      const probe = await probeSink(sink);
      if (probe.ok) pass(`sink ${sink.name}`, `${sink.type}: ${probe.detail}`);
      else fail(`sink ${sink.name}`, `${sink.type}: ${probe.detail}`, probe.fix, probe.problem === 'unreachable' ? 'unavailable' : probe.problem === 'denied' ? 'noperm' : 'config');
    }
  } finally {
    await closeRemotes(remotes);
  }
  const firstFailure = checks.find((c) => c.ok === false);
  return { ok: firstFailure === undefined, exitCode: firstFailure ? EXIT_BY_KIND[firstFailure.kind!] : EXIT.OK, checks };
}

type Pass = (check: string, detail: string) => void;
type Fail = (check: string, detail: string, fix: string, kind: FailureKind) => void;

/** Every PDND key file of the config, each read as the daemon reads it. */
function checkKeyFiles(config: Config, pass: Pass, fail: Fail): void {
  const files = new Map<string, string>();
  const note = (client: ClientConfig, label: string) => {
    files.set(client.privateKeyFile, `${label} key ${client.keyId}`);
    if (client.nextKey) files.set(client.nextKey.privateKeyFile, `${label} next key ${client.nextKey.keyId}`);
  };
  note(config.pdnd.m2m, 'M2M');
  for (const es of config.eservices) note(es.client, `e-service client ${es.client.clientId}`);
  for (const [file, label] of files) {
    try {
      loadPrivateKey(file);
      pass('key file', `${file} (${label}): RSA private key`);
    } catch (err) {
      fail('key file', `${file} (${label}): ${isAppError(err) ? err.message : 'unreadable'}`, 'point private_key_file at the PEM private key of that kid, readable by the service user only (mode 0600)', 'config');
    }
  }
}

async function checkDpopKey(config: Config, vouchers: VoucherProvider, pass: Pass, fail: Fail): Promise<void> {
  if (!config.eservices.some((es) => es.voucherType === 'dpop')) return;
  try {
    const key = await vouchers.dpop();
    pass('DPoP key', `${config.pdnd.dpopKeyFile ?? 'generated in memory'}: ${key.alg}, thumbprint ${key.thumbprint.slice(0, 12)}…`);
  } catch (err) {
    fail('DPoP key', isAppError(err) ? err.message : 'cannot be used', 'pdnd.dpop_key_file must be an unencrypted PEM RSA or EC P-256 private key (or remove it: a key pair is then generated at start)', 'config');
  }
}

/** The token endpoint's `Date` against this host's clock: assertions carry iat and exp. */
async function checkClock(config: Config, options: DoctorOptions, pass: Pass, fail: Fail): Promise<void> {
  const now = options.now ?? Date.now;
  const maxSkew = options.maxClockSkewSeconds ?? 30;
  const before = now();
  let answer;
  try {
    answer = await httpRequest(config.pdnd.tokenUrl, { method: 'GET', headers: { accept: 'application/json' }, timeoutMs: config.pdnd.requestTimeoutMs, maxBodyBytes: 4096 });
  } catch (err) {
    fail('clock', `${origin(config.pdnd.tokenUrl)}: ${err instanceof NetworkFailure ? err.message : 'no answer'}`, 'check pdnd.token_url (or preset), DNS, the proxy and the firewall towards PDND', 'unavailable');
    return;
  }
  const date = answer.headers.date;
  const serverMs = typeof date === 'string' ? Date.parse(date) : NaN;
  if (Number.isNaN(serverMs)) {
    pass('clock', `${origin(config.pdnd.tokenUrl)} sent no Date header: skew not measured`);
    return;
  }
  // The Date header has 1 s resolution and was stamped somewhere during the exchange.
  const localMs = (before + now()) / 2;
  const skew = Math.round((localMs - serverMs) / 1000);
  if (Math.abs(skew) > maxSkew) {
    fail('clock', `this host is ${Math.abs(skew)} s ${skew > 0 ? 'ahead of' : 'behind'} ${origin(config.pdnd.tokenUrl)} (more than ${maxSkew} s)`, 'synchronize the clock (chrony or systemd-timesyncd): PDND refuses client assertions whose iat or exp are off', 'config');
  } else {
    pass('clock', `within ${Math.max(1, Math.abs(skew))} s of ${origin(config.pdnd.tokenUrl)}`);
  }
}

/** With next_key_id, each key of the client is tried on its own: both must be registered during a rotation. */
async function checkBothKeys(config: Config, client: ClientConfig, label: string, eservice: EServiceConfig | undefined, pass: Pass, fail: Fail): Promise<void> {
  if (!client.nextKey) return;
  const keys: [string, ClientConfig][] = [
    ['key_id', { clientId: client.clientId, keyId: client.keyId, privateKeyFile: client.privateKeyFile }],
    ['next_key_id', { clientId: client.clientId, keyId: client.nextKey.keyId, privateKeyFile: client.nextKey.privateKeyFile }],
  ];
  for (const [which, single] of keys) {
    const provider = new VoucherProvider({ pdnd: { ...config.pdnd, m2m: single }, logger: silentLogger, retry: { retries: 1, minTimeoutMs: 200, maxTimeoutMs: 1000 } });
    const name = `${label} ${which} ${single.keyId}`;
    try {
      if (eservice) await provider.eservice({ ...eservice, client: single });
      else await provider.m2m();
      pass(name, 'accepted by PDND');
    } catch (err) {
      if (isAppError(err) && err.code === 'TOKEN_REJECTED') {
        fail(
          name,
          `refused by PDND${err.correlationId ? ` (correlationId ${err.correlationId})` : ''}`,
          which === 'key_id'
            ? 'the first key is no longer registered: make next_key_id/next_private_key_file the key_id/private_key_file, then send SIGHUP'
            : 'the second key is not registered on the client yet: upload its public key in the PDND back office before removing the first',
          'noperm',
        );
      } else failRemote(fail, name, err);
    }
  }
}

const FIX_BY_CODE: Partial<Record<ErrorCode, [string, FailureKind]>> = {
  TOKEN_REJECTED: [TOKEN_REJECTED_HINT, 'noperm'],
  TOKEN_UNAVAILABLE: ['check pdnd.token_url (or preset), DNS, the proxy and the firewall towards PDND; a private CA goes in NODE_EXTRA_CA_CERTS', 'unavailable'],
  CRYPTO_UNAUTHORIZED: ['in the PDND back office the purpose must be ACTIVE with an ACTIVE agreement on this e-service; check voucher_type (bearer or dpop) and the audit settings the producer documents', 'noperm'],
  CRYPTO_NOT_FOUND: ['check crypto_info_url against the producer\'s documentation; a producer that has published no crypto info yet must do so', 'config'],
  CRYPTO_UNAVAILABLE: ['the producer\'s endpoint did not answer usefully: check crypto_info_url, the network towards the producer, or ask the producer', 'unavailable'],
  CRYPTO_BAD_RESPONSE: ['the producer\'s answer is not crypto info: check crypto_info_url against its documentation', 'config'],
  UNSUPPORTED_ALGORITHM: ['the producer uses a hash function signalhub-sync does not know: report it', 'unavailable'],
  HUB_UNAUTHORIZED: ['the hub refuses the M2M voucher: check the "API Interop" client of [pdnd.m2m] and that token endpoint and hub are the same environment', 'noperm'],
  HUB_FORBIDDEN: ['in the PDND back office: an ACTIVE agreement and purpose on this e-service (or the delegation), and Signal Hub enabled on it by the producer; a bare 403 is a firewall', 'noperm'],
  HUB_BAD_REQUEST: ['check hub.base_url (or preset)', 'config'],
};

function failRemote(fail: Fail, check: string, err: unknown): void {
  if (!isAppError(err)) {
    fail(check, 'unexpected failure', 'report it with the log at debug level', 'unavailable');
    return;
  }
  const [generic, kind] = FIX_BY_CODE[err.code] ?? ['check the network and retry; the daemon would retry this with backoff', 'unavailable'];
  // A hub 403 was classified from its problem body (src/hub/errors.ts): the step for that cause.
  const fix = err.code === 'HUB_FORBIDDEN' ? FORBIDDEN_FIXES[forbiddenReasonOf(err.message)] : generic;
  fail(check, `${err.code}: ${err.message}`, fix, kind);
}

function failHub(fail: Fail, check: string, err: unknown, config: Config): void {
  if (isAppError(err) && err.status === 401 && SIGNING_KEY_MISMATCH.test(err.message)) {
    fail(
      check,
      `the hub does not know the key that signed the M2M voucher (HTTP 401 "Unable to find a signing key"${err.correlationId ? `, correlationId ${err.correlationId}` : ''})`,
      `environment mismatch: the voucher comes from ${origin(config.pdnd.tokenUrl)} but the hub is ${origin(config.hub.baseUrl)}; a UAT voucher against production (or the reverse) is refused: use one preset (production or uat) for both, and that environment's client and key`,
      'config',
    );
    return;
  }
  failRemote(fail, check, err);
}

/** The stored cursor of each e-service, read-only; a database not created yet means 0 everywhere. */
function readCursors(config: Config): Map<string, number> {
  const cursors = new Map<string, number>();
  if (!fs.existsSync(config.database)) return cursors;
  try {
    const db = openDatabase(config.database, { readonly: true });
    try {
      const store = new EServiceStore(db);
      for (const es of config.eservices) {
        const row = store.get(es.id);
        if (row) cursors.set(es.id, row.cursor);
      }
    } finally {
      db.close();
    }
  } catch (err) {
    // Not migrated yet or unreadable: the database check says what is wrong with it.
    if (!(err instanceof AppError)) throw err;
  }
  return cursors;
}

function origin(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.origin}${parsed.pathname}`;
  } catch {
    return '(invalid url)';
  }
}

/** One line per check: ✓ / ✗ / - , the name, what was found and, for a failure, the fix. */
export function formatDoctorReport(report: DoctorReport): string {
  const lines = report.checks.map((c) => {
    const mark = c.ok === true ? '✓' : c.ok === false ? '✗' : '-';
    return `${mark} ${c.check}: ${c.detail}${c.fix ? ` — fix: ${c.fix}` : ''}`;
  });
  const failed = report.checks.filter((c) => c.ok === false).length;
  lines.push(report.ok ? `all ${report.checks.length} checks passed` : `${failed} of ${report.checks.length} checks failed (exit ${report.exitCode})`);
  return `${lines.join('\n')}\n`;
}
