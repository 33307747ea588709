/**
 * Reassembling a checkpoint while its last chunks are still on the way. The destination knows
 * the whole manifest at OFFER time and already holds most chunks (a pre-copy's rounds, or an
 * earlier trip), so it writes the checkpoint files then, waiting only where a chunk has not yet
 * arrived: reassembly overlaps the transfer instead of following it on the downtime path.
 */
import type { ChunkStore, Digest, Manifest } from '../core/chunks.js';
import { abortedError } from '../transfer/errors.js';

/** A ChunkStore that tells waiters when a chunk has been put. */
export class ArrivalStore implements ChunkStore {
  private readonly waiters = new Map<Digest, (() => void)[]>();

  constructor(readonly inner: ChunkStore) {}

  has(d: Digest): Promise<boolean> {
    return this.inner.has(d);
  }
  missing(ds: readonly Digest[]): Promise<Digest[]> {
    return this.inner.missing(ds);
  }
  get(d: Digest): Promise<Buffer> {
    return this.inner.get(d);
  }
  peek(d: Digest): Buffer | undefined {
    return this.inner.peek?.(d);
  }
  async put(d: Digest, data: Buffer): Promise<void> {
    await this.inner.put(d, data);
    const w = this.waiters.get(d);
    if (w) {
      this.waiters.delete(d);
      for (const f of w) f();
    }
  }
  retain(name: string, m: Manifest): Promise<void> {
    return this.inner.retain(name, m);
  }
  release(name: string): Promise<void> {
    return this.inner.release(name);
  }
  gc(): Promise<{ chunks: number; bytes: number }> {
    return this.inner.gc();
  }
  usage(): Promise<{ chunks: number; bytes: number }> {
    return this.inner.usage();
  }

  /** Resolves once `d` has been put through this store (call only for chunks known to be coming). */
  arrival(d: Digest, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(abortedError(signal.reason));
    return new Promise((resolve, reject) => {
      const list = this.waiters.get(d) ?? [];
      const done = (): void => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = (): void => {
        const l = this.waiters.get(d);
        if (l) {
          const i = l.indexOf(done);
          if (i >= 0) l.splice(i, 1);
          if (l.length === 0) this.waiters.delete(d);
        }
        reject(abortedError(signal.reason));
      };
      list.push(done);
      this.waiters.set(d, list);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * A read view for reassembling `missing` chunks as they arrive: `get` of one of them waits
   * for its arrival (or `signal`), everything else reads through.
   */
  awaiting(missing: ReadonlySet<Digest>, signal: AbortSignal): ChunkStore {
    const pending = new Set(missing);
    const get = async (d: Digest): Promise<Buffer> => {
      if (pending.has(d) && this.inner.peek?.(d) === undefined) {
        // Wait first, then look: a chunk put while `has` runs still wakes the waiter.
        const arrived = this.arrival(d, signal);
        arrived.catch(() => undefined);
        if (!(await this.inner.has(d))) await arrived;
      }
      pending.delete(d);
      return this.inner.get(d);
    };
    return {
      has: (d) => this.has(d),
      missing: (ds) => this.missing(ds),
      get,
      peek: (d) => (pending.has(d) ? undefined : this.peek(d)),
      put: (d, data) => this.put(d, data),
      retain: (n, m) => this.retain(n, m),
      release: (n) => this.release(n),
      gc: () => this.gc(),
      usage: () => this.usage(),
    };
  }
}
