import fs from 'node:fs/promises';
import { silentLogger, type Logger } from '../log.js';
import type { FileSinkConfig } from '../config/types.js';
import type { OutboxRow } from '../store/outbox.js';
import { ndjson, sinkFailed, type Sink } from './sink.js';

export interface FileSinkOptions {
  config: FileSinkConfig;
  logger?: Logger;
  /** Events per write+fsync. */
  maxBatchSize?: number;
}

/**
 * Appends NDJSON, one event per line, and fsyncs before confirming. The directory must exist:
 * creating it would silently write onto the wrong filesystem when a volume is not mounted.
 * Every I/O error (ENOSPC, EACCES, EROFS, ENOENT, ...) fails the batch, which the delivery loop
 * offers again after a backoff; a partly written batch is cut off again so that the file never
 * keeps half a line. `reopen()` (SIGHUP after logrotate) makes the next batch go to a fresh
 * file at the configured path.
 */
export class FileSink implements Sink {
  readonly type = 'file';
  readonly name: string;
  readonly maxBatchSize: number;
  private readonly path: string;
  private readonly logger: Logger;
  private handle: fs.FileHandle | undefined;
  private writing = false;
  private reopenPending = false;

  constructor(options: FileSinkOptions) {
    this.name = options.config.name;
    this.path = options.config.path;
    this.maxBatchSize = options.maxBatchSize ?? 1000;
    this.logger = (options.logger ?? silentLogger).child({ sink: this.name });
  }

  async deliver(batch: readonly OutboxRow[], signal: AbortSignal): Promise<void> {
    if (batch.length === 0) return;
    if (signal.aborted) throw sinkFailed(this.name, 'delivery abandoned on shutdown');
    this.writing = true;
    try {
      if (this.reopenPending) await this.closeHandle();
      const handle = await this.open();
      const data = Buffer.from(ndjson(batch), 'utf8');
      const sizeBefore = (await handle.stat()).size;
      try {
        let offset = 0;
        while (offset < data.length) {
          const { bytesWritten } = await handle.write(data, offset, data.length - offset);
          offset += bytesWritten;
        }
        await handle.sync();
      } catch (err) {
        await this.cutBack(handle, sizeBefore);
        throw err;
      }
    } catch (err) {
      // Drop the handle: the next attempt opens the path again (the directory may have been fixed).
      await this.closeHandle();
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw sinkFailed(this.name, `cannot append to ${this.path}: ${code}`, { cause: err, details: { path: this.path } });
    } finally {
      this.writing = false;
    }
  }

  reopen(): void {
    this.reopenPending = true;
    if (!this.writing) void this.closeHandle();
  }

  async close(): Promise<void> {
    await this.closeHandle();
  }

  private async open(): Promise<fs.FileHandle> {
    if (this.handle === undefined) {
      // 0600: events may carry subject keys (events.include_subject_key).
      // reopenPending is not cleared here: a reopen() that arrives while this open is under way
      // must still apply to the next batch (closeHandle clears it).
      this.handle = await fs.open(this.path, 'a', 0o600);
      this.logger.debug({ path: this.path }, 'file sink opened');
      await this.warnIfExposed(this.handle);
    }
    return this.handle;
  }

  /**
   * A file created here is 0600 whatever the umask; one that already existed keeps its mode,
   * which is warned about but not changed: a reader such as a log shipper may have been given
   * access on purpose (e.g. logrotate's "create 0640 user group").
   */
  private async warnIfExposed(handle: fs.FileHandle): Promise<void> {
    const mode = (await handle.stat()).mode & 0o777;
    if ((mode & 0o077) === 0) return;
    this.logger.warn(
      { path: this.path, mode: mode.toString(8).padStart(4, '0') },
      'file sink output is readable by group or others and events may carry personal data: chmod 600 it unless a reader needs access',
    );
  }

  private async closeHandle(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    this.reopenPending = false;
    if (handle !== undefined) await handle.close().catch(() => undefined);
  }

  private async cutBack(handle: fs.FileHandle, size: number): Promise<void> {
    try {
      await handle.truncate(size);
    } catch (err) {
      this.logger.warn({ path: this.path, err: { code: (err as NodeJS.ErrnoException).code } }, 'cannot cut a partly written batch off; the file may end with an incomplete line');
    }
  }
}
