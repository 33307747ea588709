import { ErrorCode, UnavailableError } from './errors.js';

/** Source of time. Inject it so that tests and the simulator can run on virtual time. */
export interface Clock {
  /** Wall-clock milliseconds since the epoch. */
  now(): number;
  /** Monotonic milliseconds with sub-millisecond precision; only differences are meaningful. */
  monotonic(): number;
  /** Resolves after `ms` milliseconds of this clock's time. */
  sleep(ms: number): Promise<void>;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/**
 * Polls `check` until it returns a value other than undefined, or throws when `timeoutMs`
 * has passed. `check` errors propagate at once.
 */
export async function retryUntil<T>(
  check: () => Promise<T | undefined> | T | undefined,
  opts: { timeoutMs: number; intervalMs?: number; clock?: Clock; what: string },
): Promise<T> {
  const clock = opts.clock ?? systemClock;
  const deadline = clock.monotonic() + opts.timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (clock.monotonic() >= deadline) {
      throw new UnavailableError(
        ErrorCode.Timeout,
        `timed out after ${opts.timeoutMs} ms waiting for ${opts.what}`,
      );
    }
    await clock.sleep(opts.intervalMs ?? 50);
  }
}
