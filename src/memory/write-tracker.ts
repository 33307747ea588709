/**
 * Exact write tracking for pre-copy on kernels without soft-dirty: the kernel tells which pages
 * a container's processes wrote, including pages written with the bytes they already held
 * (invisible to a byte comparison). It drives godwit-wptrack (native/godwit-wptrack.c): each
 * process is made to create a userfaultfd, its private regions are registered for
 * asynchronous write-protect (UFFD_FEATURE_WP_ASYNC: a write only clears the page's
 * protection, the process never waits), and PAGEMAP_SCAN reports and re-protects the pages
 * written since the previous collect.
 *
 * Contract: after `collect()` resolves, a page for which `tracked(vpid, page)` is true and that
 * no collect since time T reported was not written since T, T being the start of the first of
 * those collects (or the tracker's start). `tracked` turns false for good when the page's region
 * is lost (unmapped, remapped), its process was not tracked, or the helper failed: such pages
 * must be treated as written. `close()` ends tracking (the kernel drops the protections).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface, type Interface } from 'node:readline';
import type { Clock } from '../core/clock.js';
import { ErrorCode, FailedPreconditionError, InternalError } from '../core/errors.js';
import type { ContainerProcess } from './process-memory.js';

/** What one collect found. */
export interface WrittenPages {
  /** Per process (virtual pid), the pages written since the previous collect, ascending. */
  written: Map<number, number[]>;
  /** Pages in all. */
  pages: number;
  /** Regions lost in this collect (their pages now count as written, always). */
  lostRegions: number;
  /** The helper's scan, and the whole call (ms). */
  scanMs: number;
  ms: number;
}

/** Options of `WriteTracker.start`. */
export interface WriteTrackerOptions {
  /** The godwit-wptrack binary. */
  bin: string;
  processes: readonly ContainerProcess[];
  clock: Clock;
  /** Bound on the start (injection, registration, first protection). Default 10 s. */
  timeoutMs?: number;
}

/** A region: pages [start, end). */
interface Region {
  start: number;
  end: number;
}

/** Whether `page` lies in one of `regions` (sorted, disjoint). */
function inRegions(regions: readonly Region[], page: number): boolean {
  let lo = 0;
  let hi = regions.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = regions[mid] as Region;
    if (page < r.start) hi = mid - 1;
    else if (page >= r.end) lo = mid + 1;
    else return true;
  }
  return false;
}

/** A running godwit-wptrack over a container's processes; see the module comment. */
export class WriteTracker {
  private readonly byProcess = new Map<number, Region[]>();
  private readonly vpidOf = new Map<number, number>();
  private broken: string | undefined;
  private pending: ((line: string) => void) | undefined;
  private closed = false;
  /** Processes that could not be tracked, and why (`pid N: what failed`). */
  readonly untracked: string[] = [];

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    private readonly lines: Interface,
    private readonly clock: Clock,
    processes: readonly ContainerProcess[],
  ) {
    for (const p of processes) this.vpidOf.set(p.pid, p.vpid);
    lines.on('line', (l) => this.pending?.(l));
    // A helper that exited closes its stdin: its exit says why, not the write that failed.
    child.stdin.on('error', () => undefined);
    child.on('exit', (code, signal) => {
      if (!this.closed) this.fail(`godwit-wptrack exited (${signal ?? `code ${code}`})`);
    });
  }

  /**
   * Starts tracking `processes`. Throws WriteTrackingUnavailable, saying why, when not one of
   * them can be tracked (no such kernel feature, ptrace refused, the helper missing).
   */
  static async start(o: WriteTrackerOptions): Promise<WriteTracker> {
    if (o.processes.length === 0) {
      throw new FailedPreconditionError(ErrorCode.WriteTrackingUnavailable, 'no processes to track');
    }
    const child = spawn(
      o.bin,
      o.processes.map((p) => String(p.pid)),
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const lines = createInterface({ input: child.stdout });
    const t = new WriteTracker(child, lines, o.clock, o.processes);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    const spawnError = new Promise<never>((_, reject) =>
      child.once('error', (err) =>
        reject(
          new FailedPreconditionError(
            ErrorCode.WriteTrackingUnavailable,
            `cannot run ${o.bin}: ${err.message}`,
            { cause: err },
          ),
        ),
      ),
    );
    try {
      const tracked = new Set<number>();
      await Promise.race([
        spawnError,
        t.until('ready', o.timeoutMs ?? 10_000, (line) => {
          const [kind, pid, a, b] = line.split(' ');
          const vpid = t.vpidOf.get(Number(pid));
          if (vpid === undefined) return;
          if (kind === 'track') {
            const start = Number(a);
            const list = t.byProcess.get(vpid) ?? [];
            list.push({ start, end: start + Number(b) });
            t.byProcess.set(vpid, list);
            tracked.add(vpid);
          } else if (kind === 'fail') {
            t.untracked.push(`pid ${pid}: ${line.split(' ').slice(3).join(' ')} failed (errno ${a})`);
          }
        }),
      ]);
      if (tracked.size === 0) {
        throw new FailedPreconditionError(
          ErrorCode.WriteTrackingUnavailable,
          `no process could be tracked: ${t.untracked.join('; ') || stderr.trim() || 'no regions'}`,
        );
      }
      for (const list of t.byProcess.values()) list.sort((x, y) => x.start - y.start);
      return t;
    } catch (err) {
      await t.close();
      throw err;
    }
  }

  /** Whether writes to `page` of process `vpid` are known (see the module comment). */
  tracked(vpid: number, page: number): boolean {
    if (this.broken !== undefined) return false;
    const r = this.byProcess.get(vpid);
    return r !== undefined && inRegions(r, page);
  }

  /** The tracked regions of process `vpid` (pages [start, end), sorted); none after a failure. */
  regions(vpid: number): readonly Region[] {
    return this.broken === undefined ? (this.byProcess.get(vpid) ?? []) : [];
  }

  /** Why tracking stopped, if it did. */
  get failure(): string | undefined {
    return this.broken;
  }

  /**
   * The pages written since the previous collect, protected again. After a failure of the
   * helper, rejects (and `tracked` is false for every page from then on).
   */
  async collect(): Promise<WrittenPages> {
    if (this.broken !== undefined) throw this.brokenError();
    const t0 = this.clock.monotonic();
    const written = new Map<number, number[]>();
    let pages = 0;
    let lostRegions = 0;
    let scanMs = 0;
    this.child.stdin.write('collect\n');
    await this.until('done', 30_000, (line) => {
      const sp = line.split(' ');
      const kind = sp[0];
      if (kind === 'done') {
        scanMs = Number(sp[1]) / 1000;
        return;
      }
      const vpid = this.vpidOf.get(Number(sp[1]));
      if (vpid === undefined) return;
      const start = Number(sp[2]);
      const n = Number(sp[3]);
      if (kind === 'w') {
        let list = written.get(vpid);
        if (list === undefined) written.set(vpid, (list = []));
        for (let k = 0; k < n; k++) list.push(start + k);
        pages += n;
      } else if (kind === 'lost') {
        lostRegions++;
        const list = this.byProcess.get(vpid);
        if (list)
          this.byProcess.set(
            vpid,
            list.filter((r) => r.start !== start),
          );
      }
    });
    return { written, pages, lostRegions, scanMs, ms: this.clock.monotonic() - t0 };
  }

  /** Ends tracking: the helper closes its descriptors and exits (the kernel unregisters the regions). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const exited = new Promise<void>((r) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) r();
      else this.child.once('exit', () => r());
    });
    if (!this.child.stdin.destroyed) this.child.stdin.end('close\n');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
    this.lines.close();
  }

  private fail(why: string): void {
    this.broken ??= why;
    this.pending?.('');
  }

  private brokenError(): InternalError {
    return new InternalError(ErrorCode.WriteTrackingUnavailable, `write tracking failed: ${this.broken}`);
  }

  /** Feeds lines to `onLine` until one starts with `word` (fed too); rejects on failure or timeout. */
  private until(word: string, timeoutMs: number, onLine: (line: string) => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(`no "${word}" from godwit-wptrack within ${timeoutMs} ms`);
      }, timeoutMs);
      this.pending = (line) => {
        if (this.broken !== undefined) {
          clearTimeout(timer);
          this.pending = undefined;
          reject(
            new FailedPreconditionError(
              ErrorCode.WriteTrackingUnavailable,
              `write tracking failed: ${this.broken}`,
            ),
          );
          return;
        }
        onLine(line);
        if (line === word || line.startsWith(`${word} `)) {
          clearTimeout(timer);
          this.pending = undefined;
          resolve();
        }
      };
    });
  }
}
