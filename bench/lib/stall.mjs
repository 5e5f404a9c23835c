/**
 * The longest event-loop stall while some work runs: a 10 ms timer notes the largest gap
 * between its ticks (minus the interval). What /healthz, /metrics and the watchdog would see.
 */
export function stallMonitor(intervalMs = 10) {
  let last = performance.now();
  let worst = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last - intervalMs);
    last = now;
  }, intervalMs);
  return {
    /** Stops the timer; the longest stall in ms (the tail up to now included). */
    stop() {
      clearInterval(timer);
      const tail = performance.now() - last - intervalMs;
      return Math.round(Math.max(worst, tail, 0));
    },
  };
}
