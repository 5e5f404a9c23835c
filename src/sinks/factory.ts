import type { Writable } from 'node:stream';
import type { SinkConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import { ExecSink } from './exec.js';
import { FileSink } from './file.js';
import type { Sink } from './sink.js';
import { StdoutSink } from './stdout.js';
import { WebhookSink } from './webhook.js';

export interface SinkFactoryOptions {
  logger?: Logger;
  /** Upper bound of events per delivery (outbox.delivery_batch_size). */
  batchSize: number;
  /** Where stdout sinks write (default process.stdout). */
  stdout?: Writable;
  /** Webhook backoff between attempts of one request; tests shorten it. */
  webhookRetryMinDelayMs?: number;
  webhookRetryMaxDelayMs?: number;
}

/** Builds the sink for a config entry. Reads secret and CA files now: a bad path fails startup. */
export function createSink(config: SinkConfig, options: SinkFactoryOptions): Sink {
  switch (config.type) {
    case 'webhook':
      return new WebhookSink({ config, logger: options.logger, retryMinDelayMs: options.webhookRetryMinDelayMs, retryMaxDelayMs: options.webhookRetryMaxDelayMs });
    case 'file':
      return new FileSink({ config, logger: options.logger, maxBatchSize: options.batchSize });
    case 'stdout':
      return new StdoutSink({ config, stream: options.stdout, maxBatchSize: options.batchSize });
    case 'exec':
      return new ExecSink({ config, logger: options.logger, maxBatchSize: options.batchSize });
  }
}
