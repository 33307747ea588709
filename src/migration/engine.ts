/**
 * The source side of a migration. One MigrationEngine per agent; each migration runs in
 * the background as a sequence of named phases and is observable through `get(id)`.
 *
 * Contract (cold): prepare → checkpoint → snapshot → transfer → restore → COMMIT → cleanup.
 * Before commit, a failure resumes the source (restore from its own local checkpoint) and
 * cleans the destination; after commit the destination owns the container and failures
 * only warn. The container never runs on two hosts: the source is frozen and dumped
 * before the destination restores, and the source resumes only when the destination has
 * confirmed it holds no copy. When that cannot be confirmed (destination unreachable after
 * it was asked to restore), the migration ends `failed` with the state kept in the local
 * checkpoint, and the report says how to restore it: never two copies, never lost.
 *
 * Pre-copy runs rounds before the checkpoint. Its final dump is held where both hosts can
 * (the memory stays in the frozen processes; the destination fetches the pages changed since
 * the last round and restores only once it holds every page); post-copy and hybrid restore
 * first and fetch after. A held dump's frozen processes go after the fill phase (after
 * commit), once the destination's memory is all in place.
 */
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { systemClock, type Clock } from '../core/clock.js';
import { PAGE_SIZE, type ChunkStore, type Manifest, type ManifestStats } from '../core/chunks.js';
import type { SnapshotOptions, SnapshotTimings } from '../chunks/index.js';
import {
  ErrorCode,
  FailedPreconditionError,
  GodwitError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  errorMessage,
} from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import {
  MigrationPhase,
  type MigrationReport,
  type FinalDump,
  type MigrationStrategy,
  type PhaseRecord,
} from '../core/migration.js';
import { DEFAULT_CONVERGENCE_LIMITS, DEFAULT_MAX_DOWNTIME_MS, DEFAULT_MAX_ROUNDS } from '../memory/index.js';
import {
  CHECKPOINT_FILES,
  ContainerStatus,
  type ContainerRuntime,
  type HeldCheckpoint,
} from '../core/runtime.js';
import { readJsonIfExists, writeJsonAtomic } from '../runtime/state-dir.js';
import { formatBytes } from '../cli/format.js';
import type { MigrationPeer } from './peer.js';
import { collectGarbage } from '../system/gc.js';
import { PhaseRecorder } from './phase-recorder.js';
import { MAX_CLOSING_PASSES, runPrecopyRounds, type PrecopyResult } from './precopy.js';
import { planLazyPages } from './lazy-plan.js';
import { readPagesLayouts } from '../memory/criu-pagemap.js';
import { scanVerdicts, type VerdictScanResult } from './verdict-scan.js';
import {
  encodeInlineState,
  splitInlineState,
  type InlineState,
  type InlineStatePart,
} from './inline-state.js';
import { startPageSource, type PageSource } from '../pages/page-fetch.js';
import type { RemoteRun } from '../pages/lazy-page-broker.js';

/** Transfer outcome the engine accounts for. */
export interface MoveStats {
  logicalBytes: number;
  zeroBytes: number;
  dedupBytes: number;
  rawBytesSent: number;
  wireBytes: number;
  durationMs: number;
  reconnects: number;
  chunksWanted?: number;
  uniqueChunks?: number;
}

/** How state moves: snapshot a directory into chunks, send a manifest to a transfer endpoint. */
export interface StateMover {
  /** The host's chunk store (what `snapshot` writes and `send` reads by default). */
  readonly store: ChunkStore;
  snapshot(
    dir: string,
    label: string,
    opts?: {
      knownPages?: SnapshotOptions['knownPages'];
      holes?: SnapshotOptions['holes'];
      exclude?: SnapshotOptions['exclude'];
    },
  ): Promise<{ manifest: Manifest; stats: ManifestStats; timings?: SnapshotTimings }>;
  send(opts: {
    host: string;
    port: number;
    sessionId: string;
    manifest: Manifest;
    /** A manifest the receiver holds as session `name`: offer a delta against it. */
    base?: { name: string; manifest: Manifest };
    /** Where chunk bytes come from instead of the mover's own store. */
    source?: ChunkStore;
    onProgress?: (done: number, total: number) => void;
  }): Promise<MoveStats>;
  /** Keeps the manifest's chunks for later trips (reusable state). */
  keep(name: string, manifest: Manifest): Promise<void>;
  /** Forgets chunks held only for a migration that did not commit. */
  drop?(manifest: Manifest): void;
}

/**
 * Up to this many pages of memory (384 MiB), a hybrid source judges the pages not written during
 * the rounds once the destination has restored: that pass is short (~0.2 s at 256 MiB), and the
 * restore has the machine's CPU meanwhile (measured at 64 MiB: the destination's restore 88–101 ms
 * instead of 114–201 ms). Above, the pass starts at once: it takes ~0.7 s at 1 GiB, and the
 * restored service fetches from the source every page it touches that is not judged yet (1 GiB,
 * 4 moves each on the edge link: client downtime 452, 466, 474 and 1009 ms started at once; 516,
 * 702, 737 and 1232 ms deferred).
 */
const DEFER_SECOND_VERDICT_PASS_PAGES = 98_304;

/** A closing pass that finds this few pages changed is the last (precopy.ts). */
const CLOSING_ENOUGH_PAGES = 32;

/** Failures a test can ask for (only when the engine allows fault injection). */
export interface FaultPlan {
  /** Fail when pre-copy round N is about to start. */
  failRound?: number;
  /** Fail when this phase is about to start. */
  failPhase?: MigrationPhase;
  /** Post-copy, hybrid: the source's page source drops its connections after serving this many pages. */
  dropPagesAfter?: number;
  /**
   * Hybrid: the source's page source sends no verdicts (the destination fetches only what faults
   * ask for), then dies right after commit, with pages still missing there.
   */
  dropSourceAtCommit?: boolean;
}

/** Strategies whose final phase leaves memory on the source, fetched after the restore. */
function isLazy(strategy: MigrationStrategy): boolean {
  return strategy === 'postcopy' || strategy === 'hybrid';
}

/** Strategies that run pre-copy rounds. */
function hasRounds(strategy: MigrationStrategy): boolean {
  return strategy === 'precopy' || strategy === 'hybrid';
}

/** What a caller asks for. */
export interface MigrateRequest {
  name: string;
  strategy: MigrationStrategy;
  /** The destination. */
  peer: MigrationPeer;
  /** Pre-copy: bound on the predicted memory-dependent final phase. Default 300 ms. */
  maxDowntimeMs?: number;
  /** Pre-copy: most rounds, round 0 included. Default 8. */
  maxRounds?: number;
  /** Pre-copy: hold back pages predicted to be written again. Default true. */
  predict?: boolean;
  /** Pre-copy: how the final dump takes the memory (FinalDump). Default `held`. */
  finalDump?: FinalDump;
  faults?: FaultPlan;
}

/** Dependencies of the engine. */
export interface MigrationEngineOptions {
  runtime: ContainerRuntime;
  mover: StateMover;
  /** Where migrations keep their files and reports (`<state>/migrations`). */
  dir: string;
  /**
   * Where checkpoint images are written (`<scratch>/<id>/checkpoint`); default `dir`. A tmpfs
   * here makes CRIU's dump and the snapshot of it several times faster (measured: 256 MiB dumped
   * in 0.29 s on tmpfs, 0.67–0.92 s on this machine's ext4).
   */
  scratchDir?: string;
  /** This host's label for reports. */
  hostLabel: string;
  log: Logger;
  clock?: Clock;
  /** Held while a migration runs, so background work (chunk persistence) waits. */
  quiet?: { hold(): () => void };
  /** Accept `faults` in requests (tests; the agent enables it with GODWIT_FAULT_INJECTION=1). */
  allowFaults?: boolean;
  /**
   * The address destinations reach this host at, where post-copy and hybrid serve the pages they
   * keep back (a port is picked per migration). Without it those strategies are refused.
   */
  pageSourceHost?: string;
  /**
   * Post-copy: dump with the memory left in the frozen processes (CRIU `--lazy-pages`), served
   * from there, instead of writing it all out while stopped. Default true when the runtime can.
   */
  holdMemory?: boolean;
  /**
   * Whether this host can dump memory lazily (userfaultfd). Without it, or when the destination
   * cannot restore lazily, post-copy and hybrid fall back to pre-copy (the report says why).
   */
  lazyPages?: boolean;
  /**
   * The write tracker binary (native/godwit-wptrack.c, write-tracker.ts). With it, pre-copy
   * learns from the kernel which pages were written (uffd write-protect), so that pages written
   * with the same bytes count too and the final phase judges only those; without it, or when it
   * cannot track the container (the report's `writeTracking` says why), bytes are compared.
   */
  writeTracker?: string;
}

/** A held dump whose images hold more memory than this left it in them: the report says so. */
const HELD_DUMP_PAGES_WARN_BYTES = 16 * 1024 * 1024;

/** Source-side migration orchestrator. */
export class MigrationEngine {
  private readonly reports = new Map<string, MigrationReport>();
  private readonly running = new Map<string, Promise<MigrationReport>>();
  private readonly clock: Clock;

  constructor(private readonly opts: MigrationEngineOptions) {
    this.clock = opts.clock ?? systemClock;
  }

  /**
   * Starts a migration in the background and returns its id at once. Fails fast (before
   * anything changes) when the container is not running or already migrating.
   */
  async start(req: MigrateRequest): Promise<{ id: string; done: Promise<MigrationReport> }> {
    const info = await this.opts.runtime.inspect(req.name);
    if (info.status !== ContainerStatus.Running) {
      throw new FailedPreconditionError(
        ErrorCode.ContainerNotRunning,
        `${req.name} is ${info.status}, not running`,
      );
    }
    for (const r of this.reports.values()) {
      if (r.name === req.name && r.outcome === 'running') {
        throw new FailedPreconditionError(
          ErrorCode.MigrationInProgress,
          `${req.name} is already migrating (${r.id})`,
        );
      }
    }
    if (isLazy(req.strategy) && this.opts.pageSourceHost === undefined) {
      throw new FailedPreconditionError(
        ErrorCode.NotImplemented,
        `${req.strategy} needs an agent that listens on the link (it serves the pages it keeps back)`,
        { hint: 'start the agent with --listen ADDR:PORT' },
      );
    }
    if (req.faults && !this.opts.allowFaults) {
      throw new InvalidArgumentError(
        ErrorCode.InvalidFlag,
        'fault injection is off on this agent (start it with GODWIT_FAULT_INJECTION=1)',
      );
    }
    const id = `m-${this.clock.now().toString(36)}-${randomBytes(3).toString('hex')}`;
    const report: MigrationReport = {
      id,
      name: req.name,
      strategy: req.strategy,
      from: this.opts.hostLabel,
      to: req.peer.label,
      outcome: 'running',
      startedAt: new Date(this.clock.now()).toISOString(),
      phases: [],
      bytes: { logical: 0, zero: 0, dedup: 0, sent: 0, wire: 0 },
      rounds: [],
      timings: {},
      warnings: [],
    };
    if (hasRounds(req.strategy)) {
      report.options = {
        maxDowntimeMs: req.maxDowntimeMs ?? DEFAULT_MAX_DOWNTIME_MS,
        maxRounds: req.maxRounds ?? DEFAULT_MAX_ROUNDS,
        predict: req.predict ?? true,
        ...(req.strategy === 'precopy' ? { finalDump: req.finalDump ?? 'held' } : {}),
      };
    }
    this.reports.set(id, report);
    const done = this.run(report, req).finally(() => this.running.delete(id));
    this.running.set(id, done);
    return { id, done };
  }

  /** A migration's report (live while it runs); reads finished ones from disk after a restart. */
  async get(id: string): Promise<MigrationReport> {
    const live = this.reports.get(id);
    if (live) return live;
    const raw = await readJsonIfExists(join(this.opts.dir, id, 'report.json')).catch(() => undefined);
    if (raw === undefined || typeof raw !== 'object' || raw === null) {
      throw new NotFoundError(ErrorCode.MigrationNotFound, `no migration ${id} on this host`);
    }
    return raw as MigrationReport;
  }

  /** Migrations this agent has run since it started, newest first. */
  list(): MigrationReport[] {
    return [...this.reports.values()].reverse();
  }

  /**
   * Settles migrations a previous agent left running (it was killed mid-way). Before the
   * restore phase started, the destination cannot run the container: the source is resumed
   * from the migration's checkpoint (or was never stopped). After commit, the source's leftovers
   * are removed. In between, the destination may run it, so nothing is resumed and the report
   * says how to restore the kept checkpoint. Returns the reports it settled.
   */
  async recover(): Promise<MigrationReport[]> {
    const { runtime, log } = this.opts;
    const settled: MigrationReport[] = [];
    let ids: string[];
    try {
      ids = (await readdir(this.opts.dir)).filter((d) => d.startsWith('m-'));
    } catch {
      return settled;
    }
    for (const id of ids) {
      const path = join(this.opts.dir, id, 'report.json');
      const raw = await readJsonIfExists(path).catch(() => undefined);
      if (typeof raw !== 'object' || raw === null) continue;
      const report = raw as MigrationReport;
      if (report.outcome !== 'running' || typeof report.name !== 'string' || !Array.isArray(report.phases))
        continue;
      const checkpointDir = report.checkpointDir ?? join(this.opts.dir, id, 'checkpoint');
      const info = await runtime.inspect(report.name).catch(() => undefined);
      const note = 'the agent stopped during this migration; settled when it restarted';
      try {
        if (report.committed) {
          if (info && info.status === ContainerStatus.Checkpointed)
            await runtime.remove(report.name, { force: true });
          await removeCheckpoint(checkpointDir, join(this.opts.dir, id));
          report.outcome = 'committed';
        } else if (!report.phases.some((p) => p.phase === MigrationPhase.Restore)) {
          if (info?.status === ContainerStatus.Checkpointed && info.checkpointedTo === checkpointDir) {
            await runtime.remove(report.name, { force: true });
            await runtime.restore({ dir: checkpointDir, name: report.name });
            await removeCheckpoint(checkpointDir, join(this.opts.dir, id));
          }
          report.outcome = 'rolled-back';
        } else {
          report.outcome = 'failed';
          report.warnings.push(
            `the destination may run it: the state is kept in ${checkpointDir} ` +
              `(check ${report.to}, then: godwit restore ${checkpointDir} --name ${report.name})`,
          );
        }
        report.warnings.push(note);
      } catch (err) {
        report.outcome = 'failed';
        report.warnings.push(`${note}, but: ${errorMessage(err)}; the state is kept in ${checkpointDir}`);
      }
      delete report.progress;
      await writeJsonAtomic(path, report);
      log.warn('migration settled after restart', { id, name: report.name, outcome: report.outcome });
      settled.push(report);
    }
    return settled;
  }

  /** Waits for every running migration (graceful shutdown). */
  async drain(): Promise<void> {
    await Promise.allSettled(this.running.values());
  }

  private async run(report: MigrationReport, req: MigrateRequest): Promise<MigrationReport> {
    const { runtime, mover, log } = this.opts;
    const peer = req.peer;
    const fault = (phase: MigrationPhase): void => {
      if (req.faults?.failPhase === phase) {
        throw new InternalError(ErrorCode.FaultInjected, `fault injected before the ${phase} phase`);
      }
    };
    const rec = new PhaseRecorder(this.clock);
    report.phases = rec.phases;
    const name = report.name;
    const workDir = join(this.opts.dir, report.id);
    const checkpointDir = join(this.opts.scratchDir ?? this.opts.dir, report.id, 'checkpoint');
    report.checkpointDir = checkpointDir;
    const save = (): Promise<void> =>
      writeJsonAtomic(join(workDir, 'report.json'), report).catch((err: unknown) =>
        log.warn('cannot save migration report', { id: report.id, err: errorMessage(err) }),
      );
    // A held dump whose destination did not get every page: its state is written out in full
    // here (the processes never run again), where the report says it is.
    const keepHeld = async (): Promise<void> => {
      const h = held;
      if (!h) return;
      held = undefined;
      scanAbort.abort();
      await verdictScan?.catch(() => undefined);
      await pageSource?.close();
      pageSource = undefined;
      await h
        .keep(checkpointDir)
        .catch((err: unknown) =>
          report.warnings.push(`could not keep the held state as a checkpoint: ${errorMessage(err)}`),
        );
    };
    /** Live progress of a phase moving bytes since `t0` (monotonic ms). */
    const progress = (phase: MigrationPhase, t0: number, done: number, total: number): void => {
      const secs = (this.clock.monotonic() - t0) / 1000;
      report.progress = {
        phase,
        bytesDone: done,
        bytesTotal: total,
        ...(secs > 0 ? { rateBps: Math.round(done / secs) } : {}),
      };
    };
    const enter = (phase: MigrationPhase) => () => {
      report.progress = { phase };
      void save();
    };
    await mkdir(workDir, { recursive: true });
    const release = this.opts.quiet?.hold() ?? ((): void => undefined);
    let checkpointed = false;
    let restoreAsked = false;
    let downtimeStart = 0;
    let manifest: Manifest | undefined;
    let precopy: PrecopyResult | undefined;
    let pageSource: PageSource | undefined;
    let held: HeldCheckpoint | undefined;
    let remote: RemoteRun[] | undefined;
    /** The remote runs are every lazy page of the images: the destination reads them there. */
    let remoteIsEveryLazyPage = false;
    let memoryLost = false;
    const pageToken = randomBytes(16);
    let verdictScan: Promise<VerdictScanResult> | undefined;
    let startVerdictScan: ((secondPassAfter?: Promise<unknown>) => void) | undefined;
    const scanAbort = new AbortController();
    /** Opens the verdict scan's audit of write tracking (after the destination's fill). */
    let openAudit: () => void = () => undefined;
    const auditOpen = new Promise<void>((r) => (openAudit = r));
    let inline: InlineState | undefined;
    /** The held dump's pages files, read once for the lazy plan and the verdict scan. */
    let heldLayouts: ReturnType<typeof readPagesLayouts> | undefined;
    /** Parts of `inline` sent beside the restore request (each in one flight of its connection). */
    let inlineParts: InlineStatePart[] = [];
    log.info('migration started', { id: report.id, name, to: peer.label, strategy: report.strategy });

    try {
      const prep = await rec.run(
        MigrationPhase.Prepare,
        async () => {
          fault(MigrationPhase.Prepare);
          // The destination builds the container's network namespace and makes its image ready
          // while this one still runs.
          const info = await runtime.inspect(name);
          const net = info.network;
          return peer.prepare(
            report.id,
            name,
            net ? { net, locked: true } : undefined,
            info.image,
            isLazy(req.strategy) ? 'lazy' : 'full',
          );
        },
        enter(MigrationPhase.Prepare),
      );
      // No userfaultfd on either side: no lazy final phase; pre-copy is the closest.
      if (isLazy(req.strategy) && (this.opts.lazyPages === false || prep.lazyPages === false)) {
        const reason =
          this.opts.lazyPages === false
            ? `${this.opts.hostLabel} cannot dump memory lazily (no userfaultfd)`
            : `${peer.label} cannot restore memory lazily (no userfaultfd)`;
        report.fallback = { from: req.strategy, to: 'precopy', reason };
        report.warnings.push(`${req.strategy} fell back to precopy: ${reason}`);
        log.warn('strategy fell back', { id: report.id, from: req.strategy, to: 'precopy', reason });
        req = { ...req, strategy: 'precopy' };
        report.strategy = 'precopy';
      }

      // Pre-copy's final dump leaves the memory in the frozen processes when both hosts can
      // (userfaultfd): then only what changed since the last round crosses while stopped.
      const wantsHeld = req.strategy === 'precopy' && (req.finalDump ?? 'held') === 'held';
      const canHold =
        this.opts.lazyPages !== false &&
        prep.lazyPages !== false &&
        this.opts.holdMemory !== false &&
        this.opts.pageSourceHost !== undefined &&
        runtime.checkpointHeld !== undefined;
      const heldFinal = wantsHeld && canHold;
      if (wantsHeld && !heldFinal && report.options) {
        report.options.finalDump = 'full';
        const why =
          prep.lazyPages === false
            ? `${peer.label} cannot restore memory lazily (no userfaultfd)`
            : this.opts.pageSourceHost === undefined
              ? `${this.opts.hostLabel}'s agent does not listen on the link (start it with --listen)`
              : `${this.opts.hostLabel} cannot hold a dump's memory (no userfaultfd)`;
        report.warnings.push(`the final dump writes every page: ${why}`);
      }
      /** The final dump leaves the memory in the frozen processes (post-copy, hybrid, held pre-copy). */
      const leavesMemory = isLazy(req.strategy) || heldFinal;

      if (hasRounds(req.strategy)) {
        const opts = report.options ?? {};
        const roundsStart = rec.now();
        let roundRec: PhaseRecord | undefined;
        precopy = await runPrecopyRounds({
          id: report.id,
          name,
          runtime,
          mover,
          transfer: prep.transfer,
          limits: {
            ...DEFAULT_CONVERGENCE_LIMITS,
            maxDowntimeMs: opts.maxDowntimeMs ?? DEFAULT_MAX_DOWNTIME_MS,
            maxRounds: opts.maxRounds ?? DEFAULT_MAX_ROUNDS,
          },
          predict: opts.predict ?? true,
          clock: this.clock,
          // Tracking serves the closing passes and the verdicts of a final phase that leaves the
          // memory in place; a full final dump compares every page's bytes anyway.
          ...(leavesMemory && this.opts.writeTracker ? { writeTracker: this.opts.writeTracker } : {}),
          beforeRound: (n) => {
            if (req.faults?.failRound === n) {
              throw new InternalError(ErrorCode.FaultInjected, `fault injected before pre-copy round ${n}`);
            }
            roundRec = { phase: MigrationPhase.Round, startMs: rec.now(), detail: { round: n } };
            rec.phases.push(roundRec);
            report.progress = { phase: MigrationPhase.Round, round: n };
            void save();
          },
          onRound: (r, d) => {
            if (roundRec) {
              roundRec.endMs = rec.now();
              roundRec.durationMs = round1(roundRec.endMs - roundRec.startMs);
              roundRec.detail = { ...r, pendingBytes: d.pendingBytes };
            }
            report.rounds.push(r);
            addBytes(report, r.bytesSent, r.bytesWire);
          },
        }).catch((err: unknown) => {
          if (roundRec && roundRec.endMs === undefined) {
            roundRec.endMs = rec.now();
            roundRec.durationMs = round1(roundRec.endMs - roundRec.startMs);
            roundRec.error = errorMessage(err);
          }
          throw err;
        });
        report.stopReason = precopy.stopReason;
        if (leavesMemory) report.writeTracking = precopy.writeTracking;
        report.timings.roundsMs = round1(rec.now() - roundsStart);
      } else {
        report.stopReason = 'cold';
      }

      // The rounds left hundreds of MiB of garbage (page copies): collected now, while the
      // container still runs, not by V8 during the dump (which it slows, sharing the cores).
      // The destination does the same (all hosts of a testbed share the machine's cores).
      if (precopy) {
        const gcMs = collectGarbage();
        if (gcMs !== undefined) report.timings.gcBeforeStopMs = Math.round(gcMs);
        // A lazy final phase serves the last round's pages at the destination: it reads their
        // index now, not while the container is stopped.
        const base = leavesMemory ? precopy.base?.name : undefined;
        await peer
          .quiesce?.(report.id, base)
          .catch((err: unknown) =>
            log.warn('destination could not quiesce', { id: report.id, err: errorMessage(err) }),
          );
      }
      // A lazy final phase fetches after the freeze what changed since the last round: every page
      // written since the rounds last read it, a second or more before now at 1 GiB (a round reads
      // all memory). Closing passes read again the pages written during the rounds (all memory
      // when small) and send what changed, until few change or they stop shrinking.
      const closing: string[] = [];
      if (precopy && leavesMemory) {
        const t0 = rec.now();
        let prev: number | undefined;
        for (let pass = 1; pass <= MAX_CLOSING_PASSES; pass++) {
          const p: PhaseRecord = {
            phase: MigrationPhase.Round,
            startMs: rec.now(),
            detail: { closing: pass },
          };
          rec.phases.push(p);
          const c = await precopy.closingPass(pass).catch((err: unknown) => {
            p.error = errorMessage(err);
            return undefined;
          });
          p.endMs = rec.now();
          p.durationMs = round1(p.endMs - p.startMs);
          if (!c) {
            // Nothing adopted from it: the final phase judges against what the destination holds.
            log.warn('closing pass failed; the final phase fetches what it would have sent', {
              id: report.id,
              pass,
              err: p.error,
            });
            break;
          }
          const { pass: _pass, sessionId, ...rest } = c;
          p.detail = { closing: pass, ...rest };
          if (sessionId) closing.push(sessionId);
          addBytes(report, c.bytesSent, c.bytesWire);
          if (c.changedPages <= CLOSING_ENOUGH_PAGES || (prev !== undefined && c.changedPages > prev * 0.7))
            break;
          prev = c.changedPages;
        }
        report.timings.closingMs = round1(rec.now() - t0);
        // The copies stay as they are until the freeze: the verdicts then need no walk over them.
        if (precopy.mirror.tracking === true) precopy.mirror.prepareVerdicts?.();
      }

      // The service stops here.
      fault(MigrationPhase.Checkpoint);
      downtimeStart = rec.now();
      await rec.run(
        MigrationPhase.Checkpoint,
        async (r) => {
          // Post-copy, hybrid, held pre-copy: the memory stays in the frozen processes; nothing
          // of it is written now.
          const hold = leavesMemory && this.opts.holdMemory !== false && runtime.checkpointHeld;
          if (hold) held = await hold.call(runtime, name, { dir: checkpointDir });
          const cp = held ? held.result : await runtime.checkpoint(name, { dir: checkpointDir });
          checkpointed = true;
          r.detail = {
            ...(held ? { held: true } : {}),
            checkpointMs: Math.round(cp.durationMs),
            imageBytes: cp.imageBytes,
            pagesBytes: cp.pagesBytes,
          };
          report.timings.checkpointMs = Math.round(cp.durationMs);
          if (held && cp.pagesBytes > HELD_DUMP_PAGES_WARN_BYTES) {
            // Seen once in ~45 held dumps of this CRIU (1 GiB, "Pagemap generated: 262144 pages
            // (0 lazy)"): the memory went into the images after all, and crosses while stopped.
            report.warnings.push(
              `CRIU wrote ${formatBytes(cp.pagesBytes)} of memory into the held dump's images instead of leaving it in the processes: the final phase moves it while the container is stopped (see the dump log)`,
            );
          }
        },
        enter(MigrationPhase.Checkpoint),
      );
      if (held) {
        // The pages CRIU left in the frozen processes are served from here from now on.
        const h = held;
        pageSource = await startPageSource({
          host: this.opts.pageSourceHost as string,
          criuDir: join(checkpointDir, 'criu'),
          token: pageToken,
          log,
          processes: h.processes,
          ...(req.faults?.dropPagesAfter !== undefined ? { dropAfterPages: req.faults.dropPagesAfter } : {}),
          ...(req.faults?.dropSourceAtCommit ? { withholdVerdicts: true } : {}),
        });
        // Hybrid: every such page is judged against the last round (verdict-scan.ts) once the
        // restore is asked for: while the destination restores, this host has nothing else to do
        // (started earlier, the scan's CPU lengthened the snapshot and the stop with it).
        if (precopy?.base) {
          const source = pageSource;
          const mirror = precopy.mirror;
          const pre = precopy;
          const layouts = (heldLayouts ??= readPagesLayouts(join(checkpointDir, 'criu')));
          startVerdictScan = (after) => {
            // The frozen processes' last writes, before any verdict.
            verdictScan = Promise.all([layouts, pre.collectAtFreeze()]).then(([ls]) => {
              // Tracked (still, after that collect): the second pass only audits the tracker,
              // once the destination's fill is over. Else it judges, after `after`.
              const secondPassAfter = mirror.tracking === true ? auditOpen : after;
              return scanVerdicts({
                mirror,
                processes: h.processes,
                lazyRuns: new Map(ls.map((l) => [l.vpid, l.lazyRuns])),
                push: (runs) => source.pushVerdicts(runs),
                clock: this.clock,
                signal: scanAbort.signal,
                ...(secondPassAfter ? { secondPassAfter } : {}),
              });
            });
            verdictScan.catch((err: unknown) =>
              log.warn('verdict scan failed: the destination fetches the pages', {
                id: report.id,
                err: errorMessage(err),
              }),
            );
          };
        }
      }
      // The destination may start preparing the restore (its network) while the state travels.
      if (peer.prestage) {
        const prestage = peer.prestage.bind(peer);
        void readFile(join(checkpointDir, 'checkpoint.json'))
          .then((json) => prestage(report.id, json))
          .catch((err: unknown) => log.warn('prestage failed', { id: report.id, err: errorMessage(err) }));
      }

      const snap = await rec.run(
        MigrationPhase.Snapshot,
        async (r) => {
          fault(MigrationPhase.Snapshot);
          const snapStart = this.clock.monotonic();
          let knownPages = precopy ? await precopy.knownPages(checkpointDir) : undefined;
          // Post-copy, hybrid: lazy pages the destination lacks stay here (holes in the snapshot).
          const plan = leavesMemory
            ? await planLazyPages(checkpointDir, knownPages, {
                held: held !== undefined,
                ...(heldLayouts ? { layouts: heldLayouts } : {}),
              })
            : undefined;
          const planMs = Math.round(this.clock.monotonic() - snapStart);
          if (plan) knownPages = plan.hook;
          const s = await mover.snapshot(checkpointDir, `checkpoint:${name}`, {
            // CRIU's work directory (its logs: 0.3–0.9 MB at -v4) stays here.
            exclude: (rel) => rel === CHECKPOINT_FILES.workDir,
            ...(knownPages ? { knownPages } : {}),
            ...(plan?.holes ? { holes: plan.holes } : {}),
          });
          report.timings.snapshotMs = Math.round(this.clock.monotonic() - snapStart);
          remote = plan?.remote();
          remoteIsEveryLazyPage = plan?.everyLazyPage ?? false;
          r.detail = {
            ...(remote ? { remotePages: remote.reduce((n, x) => n + x.nrPages, 0), planMs } : {}),
            files: s.stats.files,
            logicalBytes: s.stats.logicalBytes,
            uniqueChunks: s.stats.uniqueChunks,
            ...(s.timings ? { timings: s.timings } : {}),
          };
          return s;
        },
        enter(MigrationPhase.Snapshot),
      );
      manifest = snap.manifest;

      await rec.run(
        MigrationPhase.Transfer,
        async (r) => {
          fault(MigrationPhase.Transfer);
          const started = this.clock.monotonic();
          if (held) {
            // No memory in it: small enough to go with the restore request (no transfer session
            // and its round trips). (Pre-copy's final state is small too, but its restore must
            // first reassemble all memory, which the transfer session's early start overlaps.)
            // The whole manifest (a few dozen files): a delta against the last round would cost
            // both ends a walk over every page reference of it (~40 ms each at 1 GiB).
            const source = precopy ? precopy.source(mover.store) : mover.store;
            const known = (d: string): boolean => precopy?.sent(d) ?? false;
            const enc = await encodeInlineState(snap.manifest, known, source);
            if (enc) {
              const split = peer.statePart ? splitInlineState(enc.state) : { head: enc.state, parts: [] };
              inline = split.head;
              inlineParts = split.parts;
              addBytes(report, enc.rawBytes, enc.wireBytes);
              report.bytes.logical = snap.stats.logicalBytes;
              report.timings.finalTransferMs = Math.round(this.clock.monotonic() - started);
              r.detail = {
                inline: true,
                chunks: enc.state.chunks.length,
                ...(inlineParts.length > 0 ? { requests: inlineParts.length + 1 } : {}),
                manifestBytes: enc.state.manifest.length,
                rawBytes: enc.rawBytes,
                wireBytes: enc.wireBytes,
              };
              return;
            }
          }
          const st = await mover.send({
            host: prep.transfer.host,
            port: prep.transfer.port,
            sessionId: report.id,
            manifest: snap.manifest,
            ...(precopy?.base ? { base: precopy.base } : {}),
            ...(precopy ? { source: precopy.source(mover.store) } : {}),
            onProgress: (done, total) => progress(MigrationPhase.Transfer, started, done, total),
          });
          addBytes(report, st.rawBytesSent, st.wireBytes);
          report.bytes.logical = st.logicalBytes;
          report.bytes.zero = st.zeroBytes;
          report.bytes.dedup = st.dedupBytes;
          const b = report.bytes;
          if (b.wire > 0) report.compressionRatio = round2(b.sent / b.wire);
          if (b.sent > 0) report.dedupRatio = round2(b.logical / b.sent);
          if (st.durationMs > 0) report.rateBps = Math.round(st.wireBytes / (st.durationMs / 1000));
          report.timings.finalTransferMs = Math.round(st.durationMs);
          r.detail = { ...st };
        },
        enter(MigrationPhase.Transfer),
      );

      await rec.run(
        MigrationPhase.Restore,
        async (r) => {
          fault(MigrationPhase.Restore);
          let lazy: Parameters<MigrationPeer['restore']>[2];
          if (remote) {
            pageSource ??= await startPageSource({
              host: this.opts.pageSourceHost as string,
              criuDir: join(checkpointDir, 'criu'),
              token: pageToken,
              log,
              ...(req.faults?.dropPagesAfter !== undefined
                ? { dropAfterPages: req.faults.dropPagesAfter }
                : {}),
              ...(req.faults?.dropSourceAtCommit ? { withholdVerdicts: true } : {}),
            });
            lazy = {
              source: { host: pageSource.address, port: pageSource.port, token: pageToken.toString('hex') },
              ...(remoteIsEveryLazyPage ? {} : { remote }),
              ...(startVerdictScan && precopy?.base
                ? { verdicts: { base: precopy.base.name, ...(closing.length ? { closing } : {}) } }
                : {}),
              ...(heldFinal ? { waitForAll: true } : {}),
            };
          }
          restoreAsked = true;
          const restoring = peer.restore(report.id, name, lazy, inline);
          // The rest of the state, alongside: a part that never arrives fails the restore (after
          // the destination waited 10 s for it), before the point of no return.
          for (const part of inlineParts) {
            peer.statePart?.(report.id, part).catch((err: unknown) =>
              log.warn('a part of the final state did not reach the destination', {
                id: report.id,
                err: errorMessage(err),
              }),
            );
          }
          // Hybrid, small memory: the pages not written during the rounds are judged once the
          // container runs (a pre-copy destination waits for every verdict before it restores).
          const defer = !heldFinal && (precopy?.mirror.pages ?? Infinity) <= DEFER_SECOND_VERDICT_PASS_PAGES;
          startVerdictScan?.(defer ? restoring : undefined);
          const res = await restoring;
          r.detail = {
            pid: res.pid,
            restoreMs: Math.round(res.restoreMs),
            materializeMs: Math.round(res.materializeMs),
          };
          report.timings.restoreMs = Math.round(res.restoreMs);
          report.timings.materializeMs = Math.round(res.materializeMs);
        },
        enter(MigrationPhase.Restore),
      );
      report.downtimeMs = round1(rec.now() - downtimeStart);

      release();
      // ---- Restored on the destination: the point of no return. From here on the ----
      // ---- destination owns the container; nothing below may resume the source.    ----
      await rec
        .run(
          MigrationPhase.Commit,
          async () => {
            report.committed = true;
            await save();
            // A held dump's processes still serve the destination's pages: removed after the fill.
            if (!held) await runtime.remove(name, { force: true });
          },
          enter(MigrationPhase.Commit),
        )
        .catch((err: unknown) =>
          report.warnings.push(`commit: cannot remove the source record: ${errorMessage(err)}`),
        );

      if (req.faults?.dropSourceAtCommit) pageSource?.drop();
      if (pageSource) {
        // The container runs on the destination; it fetches what stayed here until none is left.
        const source = pageSource;
        await rec
          .run(
            MigrationPhase.Fill,
            async (r) => {
              // Progress: the remote pages the destination has fetched so far.
              const totalBytes = (remote ?? []).reduce((n, x) => n + x.nrPages, 0) * PAGE_SIZE;
              const t0 = this.clock.monotonic();
              const ticker = setInterval(
                () => progress(MigrationPhase.Fill, t0, source.stats().bytesRaw, totalBytes),
                500,
              );
              ticker.unref();
              const lazy = await peer
                .fill(report.id)
                .finally(() => clearInterval(ticker))
                .catch(async (err: unknown) => {
                  // Whether the destination still runs it is unknown: keep the state here, stopped.
                  memoryLost = true;
                  await keepHeld();
                  throw err;
                });
              report.lazy = lazy;
              openAudit();
              const scan = await verdictScan?.catch(() => undefined);
              if (scan) {
                report.timings.verdictScanMs = scan.ms;
                report.timings.verdictFirstPassMs = scan.firstPassMs;
                if (scan.audited !== undefined && report.writeTracking) {
                  report.writeTracking.audited = scan.audited;
                  report.writeTracking.auditMismatches = scan.auditMismatches ?? 0;
                  if (scan.auditMismatches) {
                    log.error('write tracking missed writes', { id: report.id, pages: scan.auditMismatches });
                    report.warnings.push(
                      `write tracking judged ${scan.auditMismatches} pages unchanged whose bytes had changed`,
                    );
                  }
                }
              }
              const st = source.stats();
              addBytes(report, st.bytesRaw, st.bytesWire);
              r.detail = { ...lazy, ...(scan ? { verdictScan: scan } : {}) };
              if (lazy.outcome === 'lost') {
                memoryLost = true;
                await keepHeld();
                report.error = {
                  code: ErrorCode.MemoryLost,
                  message: `${report.to} lost the source before ${lazy.missingPages ?? '?'} pages arrived: the container was stopped there`,
                };
                report.warnings.push(
                  `the container was stopped on ${report.to} (memory incomplete); this host keeps the checkpoint it was moved from in ${checkpointDir} ` +
                    `(an older state: godwit restore ${checkpointDir} --name ${name})`,
                );
              }
            },
            enter(MigrationPhase.Fill),
          )
          .catch((err: unknown) => report.warnings.push(`fill: ${errorMessage(err)}`));
        await source.close();
        pageSource = undefined;
        // Every page arrived: the frozen source processes may go.
        if (held && !memoryLost) {
          await held.release().catch((err: unknown) => report.warnings.push(`release: ${errorMessage(err)}`));
          await runtime
            .remove(name, { force: true })
            .catch((err: unknown) =>
              report.warnings.push(`cannot remove the source record: ${errorMessage(err)}`),
            );
        }
        held = undefined;
      }

      await rec
        .run(
          MigrationPhase.Cleanup,
          async () => {
            if (memoryLost) {
              await peer.finish(report.id, true);
              return;
            }
            if (manifest) await mover.keep(`container:${name}`, manifest);
            // CRIU's dump log stays with the report: the stopped phase's timeline, for diagnosis.
            await copyFile(join(checkpointDir, 'work', 'dump.log'), join(workDir, 'dump.log')).catch(
              () => undefined,
            );
            await removeCheckpoint(checkpointDir, workDir);
            await peer.finish(report.id, true);
          },
          enter(MigrationPhase.Cleanup),
        )
        .catch((err: unknown) => report.warnings.push(`cleanup: ${errorMessage(err)}`));
    } catch (err) {
      report.error = {
        code: err instanceof GodwitError ? err.code : ErrorCode.Internal,
        message: errorMessage(err),
      };
      log.warn('migration failed before commit', { id: report.id, name, err: errorMessage(err) });
      if (manifest) mover.drop?.(manifest);
      scanAbort.abort();
      await verdictScan?.catch(() => undefined);
      await pageSource?.close();
      pageSource = undefined;
      await this.rollback(report, rec, peer, { checkpointed, restoreAsked, checkpointDir, held });
      held = undefined;
    } finally {
      release();
      if (report.committed) report.outcome = memoryLost ? 'failed' : 'committed';
      report.totalMs = rec.now();
      delete report.progress;
      await precopy
        ?.close()
        .catch((err: unknown) =>
          log.warn('cannot stop write tracking', { id: report.id, err: errorMessage(err) }),
        );
      await save();
      precopy = undefined;
      manifest = undefined;
      // Now, not in the next migration's stopped phase (see collectGarbage).
      const gcMs = collectGarbage();
      log.info('migration ended', {
        id: report.id,
        name,
        outcome: report.outcome,
        downtimeMs: report.downtimeMs,
        gcMs: gcMs === undefined ? undefined : Math.round(gcMs),
      });
    }
    return report;
  }

  /** Resumes the source after a failure before commit, unless the destination may hold a copy. */
  private async rollback(
    report: MigrationReport,
    rec: PhaseRecorder,
    peer: MigrationPeer,
    s: {
      checkpointed: boolean;
      restoreAsked: boolean;
      checkpointDir: string;
      held?: HeldCheckpoint | undefined;
    },
  ): Promise<void> {
    const { runtime } = this.opts;
    await rec
      .run(MigrationPhase.Rollback, async (r) => {
        // 1. Make sure the destination holds no copy (it removes one this migration restored).
        let destinationClean = false;
        for (let attempt = 0; attempt < 3 && !destinationClean; attempt++) {
          try {
            const res = await peer.finish(report.id, false);
            destinationClean = true;
            r.detail = { ...r.detail, destinationRemovedContainer: res.removedContainer };
          } catch (err) {
            r.detail = { ...r.detail, destinationError: errorMessage(err) };
            await this.clock.sleep(300 * (attempt + 1));
          }
        }
        if (!s.checkpointed) {
          // The checkpoint never completed, so the container never stopped.
          report.outcome = 'rolled-back';
          return;
        }
        if (!destinationClean && s.restoreAsked) {
          // The destination may be running it: resuming here could make two copies.
          if (s.held) await s.held.keep(s.checkpointDir);
          report.outcome = 'failed';
          report.warnings.push(
            `the destination could not confirm it holds no copy; the state is kept in ${s.checkpointDir} ` +
              `(check ${peer.label}, then: godwit restore ${s.checkpointDir} --name ${report.name})`,
          );
          return;
        }
        // 2. Resume the source: a held dump lets its frozen processes go on; otherwise restore.
        if (s.held) {
          await s.held.resume();
          report.outcome = 'rolled-back';
          r.detail = { ...r.detail, resumedHeld: true };
          return;
        }
        await runtime.remove(report.name, { force: true }).catch(() => undefined);
        // No restore was asked for: an address the destination prepared ahead is not in use there.
        const rs = await runtime.restore({
          dir: s.checkpointDir,
          name: report.name,
          ...(s.restoreAsked ? {} : { reclaimNetwork: true }),
        });
        r.detail = { ...r.detail, restoreMs: Math.round(rs.durationMs) };
        report.outcome = 'rolled-back';
        await removeCheckpoint(s.checkpointDir, join(this.opts.dir, report.id));
      })
      .catch((err: unknown) => {
        report.outcome = 'failed';
        report.warnings.push(
          `rollback failed: ${errorMessage(err)}; the state is kept in ${s.checkpointDir} ` +
            `(godwit restore ${s.checkpointDir} --name ${report.name})`,
        );
      });
  }
}

/** Removes a checkpoint, and its scratch parent when that is not the migration's own directory. */
async function removeCheckpoint(checkpointDir: string, workDir: string): Promise<void> {
  await rm(checkpointDir, { recursive: true, force: true });
  if (dirname(checkpointDir) !== workDir) await rm(dirname(checkpointDir), { recursive: true, force: true });
}

/** Adds one transfer's sent (uncompressed) and wire bytes to the report's totals. */
function addBytes(report: MigrationReport, sent: number, wire: number): void {
  report.bytes.sent += sent;
  report.bytes.wire += wire;
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}
function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
