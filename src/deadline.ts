/** An abort signal for one exchange: it fires at the deadline or when `shutdown` fires. */
export interface ExchangeDeadline {
  readonly signal: AbortSignal;
  /** Whether the deadline (not the shutdown) ended the exchange. */
  readonly expired: boolean;
  /** Clears the timer and the listener on `shutdown`; call when the exchange is over. */
  dispose(): void;
}

/**
 * A controller of our own rather than AbortSignal.any([timeout, shutdown]): on Node 20 the
 * composite stays referenced by the long-lived shutdown signal, one per request.
 */
export function exchangeDeadline(timeoutMs: number, shutdown?: AbortSignal): ExchangeDeadline {
  const controller = new AbortController();
  let expired = false;
  const timer = setTimeout(() => {
    expired = true;
    controller.abort();
  }, timeoutMs);
  const onShutdown = () => controller.abort();
  shutdown?.addEventListener('abort', onShutdown, { once: true });
  if (shutdown?.aborted) controller.abort();
  return {
    signal: controller.signal,
    get expired() {
      return expired;
    },
    dispose: () => {
      clearTimeout(timer);
      shutdown?.removeEventListener('abort', onShutdown);
    },
  };
}
