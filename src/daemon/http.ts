import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AppError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';

/** What /readyz reports: not ready while any reason is listed. */
export interface Readiness {
  ready: boolean;
  /** One line per problem, e.g. `eservice 3f0c… not synced for 912 s (expected within 420 s)`. */
  reasons: string[];
}

export interface HealthServerOptions {
  host: string;
  /** 0 = any free port (tests). */
  port: number;
  readiness: () => Readiness | Promise<Readiness>;
  metrics?: Metrics;
  logger?: Logger;
}

/**
 * The operator's HTTP endpoint: /healthz (process alive), /readyz (every e-service synced on
 * time, no sink stopped), /metrics (Prometheus text). Read-only: GET and HEAD only. Meant for
 * loopback; it carries e-service ids and sink names, never personal data.
 */
export class HealthServer {
  private readonly server: http.Server;
  private readonly options: HealthServerOptions;
  private readonly logger: Logger;

  constructor(options: HealthServerOptions) {
    this.options = options;
    this.logger = options.logger ?? silentLogger;
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.logger.error({ err: { message: (err as Error).message }, path: req.url }, 'health endpoint failed');
        if (!res.headersSent) reply(req, res, 500, 'text/plain; charset=utf-8', 'internal error\n');
        else res.destroy();
      });
    });
    // A scraper that keeps connections open must not hold up shutdown for long.
    this.server.keepAliveTimeout = 5_000;
  }

  start(): Promise<{ url: string }> {
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new AppError('CONFIG_INVALID', `http: cannot listen on ${this.options.host}:${this.options.port} (http.listen): ${err.code ?? err.message}`, { cause: err }));
      };
      this.server.once('error', onError);
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', onError);
        const address = this.server.address() as AddressInfo;
        const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
        const url = `http://${host}:${address.port}`;
        this.logger.info({ url }, 'health and metrics endpoint listening');
        resolve({ url });
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return reply(req, res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    }
    const path = (req.url ?? '/').split('?')[0];
    switch (path) {
      case '/healthz':
        return reply(req, res, 200, 'text/plain; charset=utf-8', 'ok\n');
      case '/readyz': {
        const readiness = await this.safeReadiness();
        return reply(req, res, readiness.ready ? 200 : 503, 'application/json', `${JSON.stringify(readiness)}\n`);
      }
      case '/metrics': {
        const metrics = this.options.metrics;
        if (!metrics) return reply(req, res, 404, 'text/plain; charset=utf-8', 'metrics are not enabled\n');
        return reply(req, res, 200, metrics.registry.contentType, await metrics.registry.metrics());
      }
      default:
        return reply(req, res, 404, 'text/plain; charset=utf-8', 'not found: try /healthz, /readyz or /metrics\n');
    }
  }

  private async safeReadiness(): Promise<Readiness> {
    try {
      return await this.options.readiness();
    } catch (err) {
      return { ready: false, reasons: [`readiness check failed: ${(err as Error).message}`] };
    }
  }
}

function reply(req: http.IncomingMessage, res: http.ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(req.method === 'HEAD' ? undefined : body);
}
