import { createHash } from 'node:crypto';

/**
 * How a webhook URL appears in logs, error messages (and so the database's last-error field and
 * /readyz reasons) and `config` summaries. Slack, Teams and most "incoming webhook" services
 * put the credential in the path (`/services/T000/B000/XXXX`), so only the scheme and host are
 * shown, with a fingerprint of the path and query that tells two URLs apart without revealing
 * either: `https://hooks.example.it/[path 1a2b3c4d]`. A URL without path or query is shown
 * whole. Credentials in the URL (user:password@) are never shown.
 */
export function displayWebhookUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return '(invalid url)';
  }
  const rest = `${url.pathname === '/' ? '' : url.pathname}${url.search}`;
  if (rest === '') return `${url.origin}/`;
  return `${url.origin}/[path ${createHash('sha256').update(rest, 'utf8').digest('hex').slice(0, 8)}]`;
}
