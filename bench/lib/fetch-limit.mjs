/**
 * The catch-up limit: a fetch-only client pulling the same pages as `sync --once` (same e-service,
 * same page size, an M2M voucher of the same client) over ONE keep-alive connection, one request
 * at a time, parsing each page only for its lastSignalId and discarding it.
 *
 *   node fetch-limit.mjs <config.toml> <eserviceId> [pageSize]
 *
 * Prints one JSON line: {signals, pages, seconds, signalsPerSec}.
 */
import { Pool } from 'undici';
import { loadConfig } from '../../dist/config/load.js';
import { VoucherProvider } from '../../dist/pdnd/vouchers.js';

const [configFile, eserviceId, sizeText = '100'] = process.argv.slice(2);
const config = await loadConfig(configFile);
const voucher = (await new VoucherProvider({ pdnd: config.pdnd }).m2m()).token;
const base = new URL(config.hub.baseUrl);
const pool = new Pool(base.origin, { connections: 1, pipelining: 1, keepAliveTimeout: 30_000 });
const prefix = `${base.pathname.replace(/\/+$/, '')}/signals/${encodeURIComponent(eserviceId)}?size=${sizeText}&signalId=`;
const headers = { authorization: `Bearer ${voucher}`, accept: 'application/json' };

let cursor = 0;
let signals = 0;
let pages = 0;
const started = process.hrtime.bigint();
for (;;) {
  const response = await pool.request({ method: 'GET', path: prefix + cursor, headers });
  const text = await response.body.text();
  if (response.statusCode !== 200 && response.statusCode !== 206) {
    throw new Error(`pull answered ${response.statusCode}: ${text.slice(0, 300)}`);
  }
  const page = JSON.parse(text);
  pages++;
  signals += page.signals.length;
  if (page.lastSignalId !== null) cursor = page.lastSignalId;
  if (response.statusCode === 200 || page.signals.length === 0) break;
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
await pool.close();
process.stdout.write(`${JSON.stringify({ signals, pages, seconds, signalsPerSec: signals / seconds })}\n`);
