/**
 * Pre-copy rounds: while the container runs, its memory is read through /proc (no soft-dirty
 * bit needed), the pages that changed since the last round are found by comparing their bytes,
 * and the chunks the destination lacks are sent, round after round, until a convergence rule
 * says the final phase will be short. Then the engine freezes and dumps the container; the
 * final snapshot names every page the destination already holds by its digest without hashing
 * it (exact byte comparison against the round's copy), and the final offer is a delta against
 * the last round's manifest, so only the pages written since that round cross while stopped.
 * Before a lazy final phase, closing passes (`closingPass`) send the pages written since the last
 * round as small sessions `ID.cN` the destination lays over it. With a write tracker
 * (write-tracker.ts: the kernel reports every write, also of the bytes a page held), the closing
 * passes read exactly the pages written since they were last read, and after the freeze
 * (`collectAtFreeze`) only those need their bytes judged.
 */
import { join } from 'node:path';
import type { Clock } from '../core/clock.js';
import { PAGE_SIZE, type ChunkStore, type Digest, type Manifest } from '../core/chunks.js';
import type { KnownPage, SnapshotOptions } from '../chunks/index.js';
import { ErrorCode, FailedPreconditionError, errorMessage } from '../core/errors.js';
import type { RoundReport, WriteTrackingReport } from '../core/migration.js';
import type { ContainerRuntime } from '../core/runtime.js';
import {
  DecayedFrequencyPredictor,
  NoPredictor,
  decideNextRound,
  type ConvergenceLimits,
  type Decision,
  type RoundStats,
} from '../memory/index.js';
import { readPagesLayouts, runsWithin } from '../memory/criu-pagemap.js';
import { MemoryMirror } from '../memory/memory-mirror.js';
import { containerProcesses, type ContainerProcess } from '../memory/process-memory.js';
import { WriteTracker } from '../memory/write-tracker.js';
import type { MoveStats, StateMover } from './engine.js';
import type { VerdictMirror } from './verdict-scan.js';

/** What the rounds need from the engine. */
export interface PrecopyContext {
  id: string;
  name: string;
  runtime: ContainerRuntime;
  mover: StateMover;
  transfer: { host: string; port: number };
  limits: ConvergenceLimits;
  predict: boolean;
  clock: Clock;
  /** The write tracker binary (godwit-wptrack); without it, changes are found by comparing bytes. */
  writeTracker?: string;
  /** Called before each round starts (fault injection, progress). */
  beforeRound?: (round: number) => void;
  /** Called after each round with its report. */
  onRound?: (r: RoundReport, d: Decision) => void;
}

/** The rounds' outcome, and what the final phase needs from them. */
export interface PrecopyResult {
  rounds: RoundReport[];
  stopReason: string;
  /** The last round's manifest, as the destination names it (the final offer's base). */
  base: { name: string; manifest: Manifest } | undefined;
  /** Snapshot hook: what the destination already holds for the pages of the final dump. */
  knownPages: (checkpointDir: string) => Promise<NonNullable<SnapshotOptions['knownPages']>>;
  /** Chunk source for the final send: the mirror's pages, then `fallback`. */
  source(fallback: ChunkStore): ChunkStore;
  /** What the destination holds per page (the hybrid final phase's verdicts). */
  mirror: VerdictMirror;
  /** Whether chunk `d` is in the last round's manifest (so the destination holds it). */
  sent(d: Digest): boolean;
  /**
   * One closing pass (`closingPassSession` names its session): the pages written during the
   * rounds are read again and those that changed are sent, right before the freeze, so that
   * the final phase finds fewer changed pages. The mirror adopts them only once the destination
   * holds the session. `sessionId` undefined: nothing had changed, nothing was sent.
   */
  closingPass(pass: number): Promise<ClosingPassReport>;
  /** Whether writes were tracked (and why not); updated by `collectAtFreeze` and `close`. */
  writeTracking: WriteTrackingReport;
  /**
   * With the container frozen: records the pages written since they were last read, so that the
   * mirror's `trackedVerdicts` hold. Tracking that fails here leaves every page to its bytes.
   */
  collectAtFreeze(): Promise<void>;
  /** Ends write tracking (idempotent). */
  close(): Promise<void>;
}

/** What one closing pass did. */
export interface ClosingPassReport {
  pass: number;
  /** The pass's transfer session, when it sent one (the destination holds it). */
  sessionId?: string;
  /** Whether the pass read all memory (else the pages written during the rounds). */
  readAll: boolean;
  pagesScanned: number;
  changedPages: number;
  bytesSent: number;
  bytesWire: number;
  scanMs: number;
  transferMs: number;
}

/**
 * Up to this many pages (384 MiB), a closing pass reads all memory: ~0.1 s or less here, and it
 * finds the pages first written after the rounds, which a read of the pages written during the
 * rounds misses (at 64 MiB two rounds had seen 7 % of memload's hot set written; the freeze then
 * found 200 pages changed instead of 30). Above it, the pages written during the rounds only.
 */
const CLOSING_READS_ALL_PAGES = 98_304;

/** At most this many closing passes (each re-reads what the previous one found changing). */
export const MAX_CLOSING_PASSES = 4;

/** The transfer session of closing pass `pass` of migration `id` (`ID.cN`, beside the rounds' `ID.rN`). */
export function closingPassSession(id: string, pass: number): string {
  return `${id}.c${pass}`;
}

/** The container's processes; ContainerNotRunning (`${name} stopped <when>`) if it is not running. */
async function runningProcesses(ctx: PrecopyContext, when: string): Promise<ContainerProcess[]> {
  const info = await ctx.runtime.inspect(ctx.name);
  if (info.pid === undefined) {
    throw new FailedPreconditionError(ErrorCode.ContainerNotRunning, `${ctx.name} stopped ${when}`);
  }
  return containerProcesses(info.pid);
}

/** Sends `manifest` to the destination as session `sessionId` (a delta against `base`), timed. */
async function send(
  ctx: PrecopyContext,
  sessionId: string,
  manifest: Manifest,
  source: ChunkStore,
  base?: PrecopyResult['base'],
): Promise<{ st: MoveStats; transferMs: number }> {
  const t0 = ctx.clock.monotonic();
  const st = await ctx.mover.send({
    host: ctx.transfer.host,
    port: ctx.transfer.port,
    sessionId,
    manifest,
    ...(base ? { base } : {}),
    source,
  });
  return { st, transferMs: ctx.clock.monotonic() - t0 };
}

/**
 * Starts tracking the container's writes for `mirror` when the context names a tracker. Never
 * throws: without tracking (or once it fails), the report says why and bytes are compared.
 */
async function trackWrites(
  ctx: PrecopyContext,
  mirror: MemoryMirror,
): Promise<{
  tracking: WriteTrackingReport;
  /** Marks in the mirror the pages written since the last collect; their number, or undefined. */
  collect(): Promise<number | undefined>;
  close(): Promise<void>;
}> {
  const tracking: WriteTrackingReport = { tracked: false, reason: 'no write tracker on this host' };
  let tracker: WriteTracker | undefined;
  if (ctx.writeTracker) {
    try {
      tracker = await WriteTracker.start({
        bin: ctx.writeTracker,
        processes: await runningProcesses(ctx, 'before pre-copy'),
        clock: ctx.clock,
      });
      mirror.trackWith(tracker);
      tracking.tracked = true;
      delete tracking.reason;
      if (tracker.untracked.length > 0) tracking.reason = `not tracked: ${tracker.untracked.join('; ')}`;
    } catch (err) {
      tracking.reason = errorMessage(err);
    }
  }
  const t = tracker;
  return {
    tracking,
    collect: async () => {
      if (!t || t.failure !== undefined) return undefined;
      try {
        const w = await t.collect();
        mirror.markWritten(w.written);
        return w.pages;
      } catch (err) {
        tracking.reason = errorMessage(err);
        return undefined;
      }
    },
    close: async () => {
      await t?.close();
    },
  };
}

/** Runs pre-copy rounds until a convergence rule stops them. */
export async function runPrecopyRounds(ctx: PrecopyContext): Promise<PrecopyResult> {
  const mirror = new MemoryMirror(
    `memory:${ctx.name}`,
    ctx.predict ? new DecayedFrequencyPredictor() : new NoPredictor(),
    ctx.clock,
  );
  const rounds: RoundReport[] = [];
  const history: RoundStats[] = [];
  let base: PrecopyResult['base'];
  const t0 = ctx.clock.monotonic();
  let stopReason = '';
  let flush = false;
  const { tracking, collect, close } = await trackWrites(ctx, mirror);
  try {
    for (let n = 0; ; n++) {
      ctx.beforeRound?.(n);
      const started = ctx.clock.monotonic();
      const processes = await runningProcesses(ctx, `during pre-copy (round ${n})`);
      if (n > 0) await collect();
      const scan = await mirror.scan(processes, { holdBack: !flush });
      const sessionId = `${ctx.id}.r${n}`;
      const { st, transferMs } = await send(ctx, sessionId, scan.manifest, mirror.chunkSource(), base);
      base = { name: sessionId, manifest: scan.manifest };
      const durationMs = ctx.clock.monotonic() - started;
      const considered = scan.dirtyPages + scan.unsentPages;
      history.push({
        round: n,
        durationMs,
        dirtyPages: considered,
        heldBackPages: scan.heldBackPages,
        sentBytes: st.rawBytesSent,
        wireBytes: st.wireBytes,
      });
      const d = decideNextRound(history, ctx.limits, { elapsedMs: ctx.clock.monotonic() - t0 });
      const r: RoundReport = {
        round: n,
        pagesScanned: scan.pagesScanned,
        dirtyPages: scan.dirtyPages,
        heldBackPages: scan.heldBackPages,
        bytesLogical: st.logicalBytes,
        bytesSent: st.rawBytesSent,
        bytesWire: st.wireBytes,
        scanMs: scan.scanMs,
        transferMs: Math.round(transferMs),
        durationMs: Math.round(durationMs),
        predictedFinalMs: Math.round(d.predictedFinalMs),
        ...(flush ? { flush: true } : {}),
      };
      rounds.push(r);
      ctx.onRound?.(r, d);
      if (flush) break;
      if (!d.proceed) {
        stopReason = d.reason ?? 'stopped';
        // Pages held back on a prediction are sent in one more round rather than while stopped:
        // prediction may save bytes, never add downtime.
        if (scan.heldBackPages > 0 && d.reason !== 'max-total-time') {
          flush = true;
          continue;
        }
        break;
      }
    }
  } catch (err) {
    await close();
    throw err;
  }
  return {
    rounds,
    stopReason,
    base,
    knownPages: async (checkpointDir) => {
      const layouts = await readPagesLayouts(join(checkpointDir, 'criu'));
      const byFile = new Map(layouts.map((l) => [`criu/${l.file}`, l]));
      return (rel, offset, data) => {
        const l = byFile.get(rel);
        if (l === undefined) return undefined;
        const out: KnownPage[] = new Array<KnownPage>(data.length / PAGE_SIZE);
        // Each run maps file bytes to one contiguous address range.
        for (const { from, to, vaddr } of runsWithin(l.runs, offset, data.length)) {
          const got = mirror.knownPages(l.vpid, vaddr, data.subarray(from - offset, to - offset));
          got.forEach((k, i) => (out[(from - offset) / PAGE_SIZE + i] = k));
        }
        return out;
      };
    },
    source: (fallback) => mirror.chunkSource(fallback),
    mirror,
    sent: (d) => mirror.holds(d),
    closingPass: async (pass) => {
      const processes = await runningProcesses(ctx, `before the final phase (closing pass ${pass})`);
      await collect();
      const all = !mirror.tracking && mirror.pages <= CLOSING_READS_ALL_PAGES;
      const scan = await mirror.closingScan(processes, pass, { all });
      const r: ClosingPassReport = {
        pass,
        readAll: all,
        pagesScanned: scan.pagesScanned,
        changedPages: scan.changed.length,
        bytesSent: 0,
        bytesWire: 0,
        scanMs: scan.scanMs,
        transferMs: 0,
      };
      if (scan.changed.length === 0) {
        mirror.adopt(scan);
        return r;
      }
      const sessionId = closingPassSession(ctx.id, pass);
      const { st, transferMs } = await send(ctx, sessionId, scan.manifest, scan.source);
      mirror.adopt(scan);
      return {
        ...r,
        sessionId,
        bytesSent: st.rawBytesSent,
        bytesWire: st.wireBytes,
        transferMs: Math.round(transferMs),
      };
    },
    writeTracking: tracking,
    collectAtFreeze: async () => {
      const c0 = ctx.clock.monotonic();
      const pages = await collect();
      if (pages !== undefined) {
        tracking.pagesAtFreeze = pages;
        tracking.collectMs = Math.round((ctx.clock.monotonic() - c0) * 10) / 10;
      }
    },
    close,
  };
}
