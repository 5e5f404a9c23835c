import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import type { SinkConfig } from '../config/types.js';

/** What a preflight found about one sink; `denied` marks a permission problem, `missing` a configuration one. */
export type SinkProbe = { ok: true; detail: string } | { ok: false; detail: string; fix: string; problem: 'unreachable' | 'denied' | 'missing' };

/**
 * Whether a sink could receive events, without sending any (`doctor`): a TCP connection (a TLS
 * handshake with the configured CA for https) to a webhook's host, a writable file or folder
 * for a file sink, an executable program for exec. Nothing is written and nothing is run.
 */
export async function probeSink(sink: SinkConfig, timeoutMs = 5000): Promise<SinkProbe> {
  switch (sink.type) {
    case 'stdout':
      return { ok: true, detail: 'standard output' };
    case 'file':
      return probeFile(sink.path);
    case 'exec':
      return probeProgram(sink.command[0]!);
    case 'webhook':
      return probeWebhook(sink.url, sink.caFile, Math.min(timeoutMs, sink.timeoutMs));
  }
}

function probeFile(file: string): SinkProbe {
  const target = fs.existsSync(file) ? file : nearestExisting(path.dirname(file));
  try {
    fs.accessSync(target, fs.constants.W_OK);
    return { ok: true, detail: target === file ? `${file} is writable` : `${target} is writable (${file} will be created)` };
  } catch (err) {
    return { ok: false, detail: `${target} is not writable (${(err as NodeJS.ErrnoException).code ?? 'error'})`, fix: `give the service user write access to ${target}, or change the sink's path`, problem: 'denied' };
  }
}

function nearestExisting(dir: string): string {
  let current = path.resolve(dir);
  while (!fs.existsSync(current) && path.dirname(current) !== current) current = path.dirname(current);
  return current;
}

/** A program given with a folder is checked as is; a bare name is looked up in PATH, as spawn does. */
function probeProgram(program: string): SinkProbe {
  const candidates = program.includes('/') ? [program] : (process.env.PATH ?? '').split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, program));
  for (const candidate of candidates) {
    try {
      if (!fs.statSync(candidate).isFile()) continue;
      fs.accessSync(candidate, fs.constants.X_OK);
      return { ok: true, detail: `${candidate} is executable` };
    } catch {
      // next candidate
    }
  }
  if (program.includes('/') && fs.existsSync(program)) return { ok: false, detail: `${program} is not an executable file`, fix: `chmod +x ${program}, or fix the sink's command`, problem: 'denied' };
  return { ok: false, detail: `${program} not found${program.includes('/') ? '' : ' in PATH'}`, fix: 'install the program or give its absolute path in the sink\'s command', problem: 'missing' };
}

async function probeWebhook(url: string, caFile: string | undefined, timeoutMs: number): Promise<SinkProbe> {
  const parsed = new URL(url);
  const secure = parsed.protocol === 'https:';
  const port = Number(parsed.port || (secure ? 443 : 80));
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  const where = `${parsed.protocol}//${parsed.host}`;
  let ca: Buffer | undefined;
  if (caFile !== undefined) {
    try {
      ca = fs.readFileSync(caFile);
    } catch (err) {
      return { ok: false, detail: `ca_file ${caFile} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`, fix: 'fix ca_file', problem: 'missing' };
    }
  }
  return new Promise<SinkProbe>((resolve) => {
    const socket = secure
      ? tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, ...(ca ? { ca } : {}) })
      : net.connect({ host, port });
    const done = (result: SinkProbe) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done({ ok: false, detail: `${where}: no connection within ${timeoutMs} ms`, fix: 'check that the receiver is up and that a firewall lets this host reach it', problem: 'unreachable' }), timeoutMs);
    socket.once(secure ? 'secureConnect' : 'connect', () => done({ ok: true, detail: `${where} accepts ${secure ? 'TLS ' : ''}connections` }));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? 'error';
      const certificate = /CERT|^UNABLE_TO_|HOSTNAME|SELF_SIGNED/.test(code);
      done({
        ok: false,
        detail: `${where}: ${certificate ? 'certificate refused' : 'cannot connect'} (${code})`,
        fix: certificate ? 'a private CA goes in the sink\'s ca_file (or NODE_EXTRA_CA_CERTS)' : 'check the URL, that the receiver is up and that a firewall lets this host reach it',
        problem: 'unreachable',
      });
    });
  });
}
