import { spawn } from 'node:child_process';
import { silentLogger, type Logger } from '../log.js';

/**
 * systemd readiness, status and watchdog notifications (sd_notify(3)).
 *
 * Node has no unix datagram sockets and we take no native addon, so messages go through the
 * `systemd-notify` binary, which sends them from its own pid: the unit needs `NotifyAccess=all`.
 * Messages are passed as VARIABLE=VALUE assignments rather than flags (`--stopping` does not
 * exist before systemd 253), and without `--no-block`, so systemd-notify waits on a BARRIER=1
 * until the manager has read the message and attributed it to our cgroup before exiting.
 *
 * At most one systemd-notify runs at a time; updates made meanwhile are merged into the next
 * one (a later STATUS= replaces an earlier one), so a busy daemon never piles up processes and
 * never blocks its event loop.
 */
export interface NotifierOptions {
  /** Environment to read NOTIFY_SOCKET from and pass to systemd-notify. Default process.env. */
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /** The systemd-notify executable. Default `systemd-notify` from PATH. */
  binary?: string;
}

export class SystemdNotifier {
  readonly enabled: boolean;
  private readonly env: NodeJS.ProcessEnv;
  private readonly logger: Logger;
  private readonly binary: string;
  /** Assignments waiting for the next systemd-notify run, in first-set order. */
  private readonly pending = new Map<string, string>();
  private inFlight: Promise<void> | undefined;
  private binaryMissing = false;
  private failureLogged = false;

  constructor(options: NotifierOptions = {}) {
    this.env = options.env ?? process.env;
    this.logger = options.logger ?? silentLogger;
    this.binary = options.binary ?? 'systemd-notify';
    this.enabled = Boolean(this.env.NOTIFY_SOCKET);
  }

  ready(): void {
    this.send({ READY: '1' });
  }

  /** One line shown by `systemctl status`; newlines are flattened. */
  status(line: string): void {
    this.send({ STATUS: line.replace(/[\r\n]+/g, ' ').trim() });
  }

  watchdog(): void {
    this.send({ WATCHDOG: '1' });
  }

  stopping(): void {
    this.send({ STOPPING: '1' });
  }

  send(assignments: Record<string, string>): void {
    if (!this.enabled || this.binaryMissing) return;
    for (const [name, value] of Object.entries(assignments)) this.pending.set(name, value);
    if (!this.inFlight) this.inFlight = this.drain();
  }

  /** Resolves once everything sent so far has been handed to systemd (or failed). */
  async flush(): Promise<void> {
    while (this.inFlight) await this.inFlight;
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.size > 0 && !this.binaryMissing) {
        const args = [...this.pending].map(([name, value]) => `${name}=${value}`);
        this.pending.clear();
        await this.run(args);
      }
    } finally {
      this.inFlight = undefined;
    }
  }

  private run(args: string[]): Promise<void> {
    return new Promise((resolve) => {
      let stderr = '';
      const child = spawn(this.binary, args, { env: this.env, stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        if (stderr.length < 1000) stderr += chunk;
      });
      // A spawn that fails emits 'error' and then 'close' with a negative errno as its code:
      // report it once, here, not again as an exit status.
      let spawnFailed = false;
      child.on('error', (err: NodeJS.ErrnoException) => {
        spawnFailed = true;
        if (err.code === 'ENOENT') {
          this.binaryMissing = true;
          this.pending.clear();
          this.logger.warn({ binary: this.binary }, 'NOTIFY_SOCKET is set but systemd-notify was not found: readiness and watchdog notifications are disabled');
        } else {
          this.logFailureOnce(`cannot run ${this.binary}: ${err.message}`);
        }
        resolve();
      });
      child.on('close', (code) => {
        if (!spawnFailed && code !== 0 && code !== null) this.logFailureOnce(`${this.binary} exited with ${code}: ${stderr.trim()}`);
        resolve();
      });
    });
  }

  /** A broken notify socket would otherwise log every 30 s forever. */
  private logFailureOnce(message: string): void {
    if (this.failureLogged) {
      this.logger.debug({ message }, 'systemd notification failed');
      return;
    }
    this.failureLogged = true;
    this.logger.warn({ message }, 'systemd notification failed (further failures are logged at debug level)');
  }
}

let defaultNotifier: SystemdNotifier | undefined;

/** The process-wide notifier, reading NOTIFY_SOCKET from process.env on first use. */
export function processNotifier(logger?: Logger): SystemdNotifier {
  defaultNotifier ??= new SystemdNotifier(logger ? { logger } : {});
  return defaultNotifier;
}

export function notifyReady(): void {
  processNotifier().ready();
}
export function notifyStatus(line: string): void {
  processNotifier().status(line);
}
export function notifyWatchdog(): void {
  processNotifier().watchdog();
}
export function notifyStopping(): void {
  processNotifier().stopping();
}

export interface WatchdogOptions {
  notifier: SystemdNotifier;
  env?: NodeJS.ProcessEnv;
  pid?: number;
  logger?: Logger;
}

/**
 * Sends WATCHDOG=1 at half of WATCHDOG_USEC, but only when the main loop has called `beat()`
 * since the previous ping: a timer alone would keep pinging from a wedged scheduler, and
 * systemd could never restart it.
 */
export class Watchdog {
  /** Ping period in ms, or undefined when systemd asked for no watchdog. */
  readonly intervalMs: number | undefined;
  private readonly notifier: SystemdNotifier;
  private readonly logger: Logger;
  private timer: NodeJS.Timeout | undefined;
  private alive = false;

  constructor(options: WatchdogOptions) {
    const env = options.env ?? process.env;
    this.notifier = options.notifier;
    this.logger = options.logger ?? silentLogger;
    this.intervalMs = watchdogIntervalMs(env, options.pid ?? process.pid);
  }

  get enabled(): boolean {
    return this.intervalMs !== undefined && this.notifier.enabled;
  }

  /** Called by the main loop each time it makes progress (e.g. each scheduler tick). */
  beat(): void {
    this.alive = true;
  }

  start(): void {
    if (!this.enabled || this.timer) return;
    this.logger.debug({ intervalMs: this.intervalMs }, 'systemd watchdog enabled');
    this.timer = setInterval(() => {
      if (!this.alive) {
        this.logger.warn('main loop made no progress since the last watchdog ping: not pinging');
        return;
      }
      this.alive = false;
      this.notifier.watchdog();
    }, this.intervalMs);
    // The watchdog must never be the reason the process stays up.
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** Half of WATCHDOG_USEC in ms, if the watchdog is meant for this process. */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv, pid: number): number | undefined {
  const usec = Number(env.WATCHDOG_USEC);
  if (!env.WATCHDOG_USEC || !Number.isFinite(usec) || usec <= 0) return undefined;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== pid) return undefined;
  return Math.max(1, Math.floor(usec / 2000));
}
