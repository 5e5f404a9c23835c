import type { Logger } from '../log.js';

/**
 * Progress of long CLI work (subject import, --replace): a live line on a terminal (rows, rate,
 * ETA), a log line every few seconds otherwise. Counts only: never a key or a ref.
 */
export interface ProgressSample {
  /** What is counted, e.g. "rows read" or "removed". */
  what: string;
  rows: number;
  /** 0..1 of the whole, when known (e.g. bytes of the input file read): gives the ETA. */
  fraction?: number;
}

export interface ProgressLine {
  update(sample: ProgressSample): void;
  /** Clears the live line (the command then prints its summary). */
  done(): void;
}

export function progressLine(opts: { label: string; stream: NodeJS.WriteStream; logger: Logger; quiet?: boolean; logEveryMs?: number; now?: () => number }): ProgressLine {
  const now = opts.now ?? Date.now;
  const tty = opts.stream.isTTY === true && !opts.quiet;
  const every = tty ? 200 : (opts.logEveryMs ?? 5_000);
  const started = now();
  let last = started;
  let shown = false;
  const format = (s: ProgressSample, t: number) => {
    const seconds = Math.max(0.001, (t - started) / 1000);
    const rate = s.rows / seconds;
    const eta = s.fraction !== undefined && s.fraction > 0.01 ? Math.round((seconds * (1 - s.fraction)) / s.fraction) : undefined;
    return { rate: Math.round(rate), eta };
  };
  return {
    update(sample) {
      const t = now();
      if (t - last < every) return;
      last = t;
      const { rate, eta } = format(sample, t);
      if (tty) {
        const etaText = eta === undefined ? '' : `, ETA ${eta >= 60 ? `${Math.floor(eta / 60)} min ${eta % 60} s` : `${eta} s`}`;
        opts.stream.write(`\r\x1b[2K${opts.label}: ${sample.rows.toLocaleString('en-US')} ${sample.what}, ${rate.toLocaleString('en-US')}/s${etaText}`);
        shown = true;
      } else if (!opts.quiet) {
        opts.logger.info({ what: sample.what, rows: sample.rows, rowsPerSecond: rate, etaSeconds: eta }, `${opts.label} in progress`);
      }
    },
    done() {
      if (shown) opts.stream.write('\r\x1b[2K');
      shown = false;
    },
  };
}
