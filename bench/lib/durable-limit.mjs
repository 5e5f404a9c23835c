/**
 * The catch-up limit with durable work: a minimal consumer that pulls the same pages as
 * `sync --once` over ONE keep-alive connection and, per page, in one transaction on a copy of
 * the consumer database opened with the daemon's PRAGMAs (openDatabase): parses the page,
 * decodes each objectId, looks the page's objectIds up in the same pseudonym table with the same
 * statement (one per page: prefixes -> candidates, full digest recomputed), inserts the matched events into the outbox,
 * writes the signal log and moves the cursor. No retries, no rotations, no resync bookkeeping,
 * no metrics or logging: what any consumer that loses nothing must at least do.
 *
 *   node durable-limit.mjs <config.toml> <database copy> <eserviceId> [pageSize]
 *
 * Prints one JSON line: {signals, matches, pages, seconds, signalsPerSec}.
 */
import { Pool } from 'undici';
import { loadConfig } from '../../dist/config/load.js';
import { VoucherProvider } from '../../dist/pdnd/vouchers.js';
import { openDatabase } from '../../dist/store/db.js';
import { PseudonymHasher, decodeObjectId } from '../../dist/crypto/pseudonym.js';
import { digestPrefix } from '../../dist/store/pseudonyms.js';

const [configFile, dbFile, eserviceId, sizeText = '100'] = process.argv.slice(2);
const config = await loadConfig(configFile);
const es = config.eservices.find((e) => e.id === eserviceId);
const db = openDatabase(dbFile);
const row = db.prepare('SELECT id, cursor FROM eservices WHERE eservice_id = ?').get(eserviceId);
const epoch = db.prepare("SELECT * FROM epochs WHERE eservice = ? AND fill_state = 'ready' AND retired_at IS NULL ORDER BY start_signal_id DESC LIMIT 1").get(row.id);
if (!epoch) throw new Error('no ready epoch in the database copy');
const hasher = new PseudonymHasher({ template: epoch.template, encoding: epoch.encoding }, epoch.seed, epoch.algorithm);
const lookup = db.prepare(`SELECT p.prefix, s.id, s.key, s.ref FROM pseudonyms_${epoch.id} p JOIN subjects s ON s.id = p.subject_id WHERE p.prefix IN (SELECT value FROM json_each(?))`);
const outbox = db.prepare("INSERT OR IGNORE INTO outbox (event_id, eservice_id, signal_id, kind, payload, created_at) VALUES (?, ?, ?, 'signal', ?, ?)");
const log = db.prepare('INSERT OR IGNORE INTO signal_log (eservice, signal_id, epoch, unmatched, signal_type, object_type, object_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
const advance = db.prepare('UPDATE eservices SET cursor = ?, high_water = MAX(high_water, ?), last_pull_at = ? WHERE id = ?');

const voucher = (await new VoucherProvider({ pdnd: config.pdnd }).m2m()).token;
const base = new URL(config.hub.baseUrl);
const pool = new Pool(base.origin, { connections: 1, pipelining: 1, keepAliveTimeout: 30_000 });
const prefix = `${base.pathname.replace(/\/+$/, '')}/signals/${encodeURIComponent(eserviceId)}?size=${sizeText}&signalId=`;
const headers = { authorization: `Bearer ${voucher}`, accept: 'application/json' };

const writePage = db.transaction((page, now) => {
  let matches = 0;
  let max = 0;
  const digests = page.signals.map((s) => decodeObjectId(s.objectId, epoch.encoding, 32));
  const candidates = new Map();
  for (const c of lookup.all(JSON.stringify(digests.filter((d) => d !== null).map((d) => digestPrefix(d))))) {
    const list = candidates.get(c.prefix);
    if (list) list.push(c);
    else candidates.set(c.prefix, [c]);
  }
  for (const [i, s] of page.signals.entries()) {
    max = Math.max(max, s.signalId);
    const digest = digests[i];
    let subject;
    if (digest) for (const c of candidates.get(digestPrefix(digest)) ?? []) if (hasher.digest(c.key).equals(digest)) subject = c;
    if (subject) {
      matches++;
      const event = { id: `${eserviceId}:${s.signalId}`, type: 'signal', eserviceId, eserviceName: es.name, signalId: s.signalId, signalType: s.signalType, objectType: s.objectType, objectId: s.objectId, subjectRef: subject.ref, epoch: epoch.id, receivedAt: new Date(now).toISOString() };
      outbox.run(event.id, eserviceId, s.signalId, JSON.stringify(event), now);
    }
    log.run(row.id, s.signalId, epoch.id, subject ? 0 : 1, s.signalType, s.objectType, s.objectId, now);
  }
  advance.run(max, max, now, row.id);
  return matches;
});

let cursor = row.cursor;
let signals = 0;
let matches = 0;
let pages = 0;
const started = process.hrtime.bigint();
for (;;) {
  const response = await pool.request({ method: 'GET', path: prefix + cursor, headers });
  const text = await response.body.text();
  if (response.statusCode !== 200 && response.statusCode !== 206) throw new Error(`pull answered ${response.statusCode}: ${text.slice(0, 300)}`);
  const page = JSON.parse(text);
  pages++;
  signals += page.signals.length;
  if (page.signals.length > 0) matches += writePage(page, Date.now());
  if (page.lastSignalId !== null) cursor = page.lastSignalId;
  if (response.statusCode === 200 || page.signals.length === 0) break;
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
await pool.close();
db.close();
process.stdout.write(`${JSON.stringify({ signals, matches, pages, seconds, signalsPerSec: signals / seconds })}\n`);
