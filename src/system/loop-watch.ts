/**
 * Reports when this process's event loop was blocked: an agent whose loop stalls delays
 * everything it does in a migration's stopped phase (noticing CRIU is ready, answering the
 * restore). A timer ticks every `tickMs`; a tick later than `thresholdMs` is logged with how
 * late it was. Costs one timer; unref'd.
 */
import type { Logger } from '../core/logger.js';

/** Starts watching; returns a function that stops it. */
export function watchEventLoop(
  log: Logger,
  opts: { tickMs?: number; thresholdMs?: number } = {},
): () => void {
  const tick = opts.tickMs ?? 20;
  const threshold = opts.thresholdMs ?? 100;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    const late = now - last - tick;
    last = now;
    if (late >= threshold) log.warn('event loop blocked', { ms: Math.round(late) });
  }, tick);
  timer.unref();
  return () => clearInterval(timer);
}
