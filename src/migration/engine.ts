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
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { systemClock, type Clock } from '../core/clock.js';
import type { Manifest, ManifestStats } from '../core/chunks.js';
import {
  ErrorCode,
  FailedPreconditionError,
  GodwitError,
  NotFoundError,
  errorMessage,
} from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { MigrationPhase, type MigrationReport, type MigrationStrategy } from '../core/migration.js';
import { ContainerStatus, type ContainerRuntime } from '../core/runtime.js';
import { readJsonIfExists, writeJsonAtomic } from '../runtime/state-dir.js';
import type { MigrationPeer } from './peer.js';
import { PhaseRecorder } from './phase-recorder.js';

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
  snapshot(dir: string, label: string): Promise<{ manifest: Manifest; stats: ManifestStats }>;
  send(opts: {
    host: string;
    port: number;
    sessionId: string;
    manifest: Manifest;
    onProgress?: (done: number, total: number) => void;
  }): Promise<MoveStats>;
  /** Keeps the manifest's chunks for later trips (reusable state). */
  keep(name: string, manifest: Manifest): Promise<void>;
  /** Forgets chunks held only for a migration that did not commit. */
  drop?(manifest: Manifest): void;
}

/** What a caller asks for. */
export interface MigrateRequest {
  name: string;
  strategy: MigrationStrategy;
  /** The destination. */
  peer: MigrationPeer;
}

/** Dependencies of the engine. */
export interface MigrationEngineOptions {
  runtime: ContainerRuntime;
  mover: StateMover;
  /** Where migrations keep their files and reports (`<state>/migrations`). */
  dir: string;
  /** This host's label for reports. */
  hostLabel: string;
  log: Logger;
  clock?: Clock;
}

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
      warnings: [],
    };
    this.reports.set(id, report);
    const done = this.runCold(report, req.peer).finally(() => this.running.delete(id));
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
      const checkpointDir = join(this.opts.dir, id, 'checkpoint');
      const info = await runtime.inspect(report.name).catch(() => undefined);
      const note = 'the agent stopped during this migration; settled when it restarted';
      try {
        if (report.committed) {
          if (info && info.status === ContainerStatus.Checkpointed)
            await runtime.remove(report.name, { force: true });
          await rm(checkpointDir, { recursive: true, force: true });
          report.outcome = 'committed';
        } else if (!report.phases.some((p) => p.phase === MigrationPhase.Restore)) {
          if (info?.status === ContainerStatus.Checkpointed && info.checkpointedTo === checkpointDir) {
            await runtime.remove(report.name, { force: true });
            await runtime.restore({ dir: checkpointDir, name: report.name });
            await rm(checkpointDir, { recursive: true, force: true });
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

  private async runCold(report: MigrationReport, peer: MigrationPeer): Promise<MigrationReport> {
    const { runtime, mover, log } = this.opts;
    const rec = new PhaseRecorder(this.clock);
    report.phases = rec.phases;
    const name = report.name;
    const workDir = join(this.opts.dir, report.id);
    const checkpointDir = join(workDir, 'checkpoint');
    const save = (): Promise<void> =>
      writeJsonAtomic(join(workDir, 'report.json'), report).catch((err: unknown) =>
        log.warn('cannot save migration report', { id: report.id, err: errorMessage(err) }),
      );
    const enter = (phase: MigrationPhase) => () => {
      report.progress = { phase };
      void save();
    };
    await mkdir(workDir, { recursive: true });
    let checkpointed = false;
    let restoreAsked = false;
    let downtimeStart = 0;
    let manifest: Manifest | undefined;
    log.info('migration started', { id: report.id, name, to: peer.label, strategy: report.strategy });

    try {
      const prep = await rec.run(
        MigrationPhase.Prepare,
        () => peer.prepare(report.id, name),
        enter(MigrationPhase.Prepare),
      );

      // The service stops here.
      downtimeStart = rec.now();
      await rec.run(
        MigrationPhase.Checkpoint,
        async (r) => {
          const cp = await runtime.checkpoint(name, { dir: checkpointDir });
          checkpointed = true;
          r.detail = {
            checkpointMs: Math.round(cp.durationMs),
            imageBytes: cp.imageBytes,
            pagesBytes: cp.pagesBytes,
          };
        },
        enter(MigrationPhase.Checkpoint),
      );

      const snap = await rec.run(
        MigrationPhase.Snapshot,
        async (r) => {
          const s = await mover.snapshot(checkpointDir, `checkpoint:${name}`);
          r.detail = {
            files: s.stats.files,
            logicalBytes: s.stats.logicalBytes,
            uniqueChunks: s.stats.uniqueChunks,
          };
          return s;
        },
        enter(MigrationPhase.Snapshot),
      );
      manifest = snap.manifest;

      await rec.run(
        MigrationPhase.Transfer,
        async (r) => {
          const started = this.clock.monotonic();
          const st = await mover.send({
            host: prep.transfer.host,
            port: prep.transfer.port,
            sessionId: report.id,
            manifest: snap.manifest,
            onProgress: (done, total) => {
              const secs = (this.clock.monotonic() - started) / 1000;
              report.progress = {
                phase: MigrationPhase.Transfer,
                bytesDone: done,
                bytesTotal: total,
                ...(secs > 0 ? { rateBps: Math.round(done / secs) } : {}),
              };
            },
          });
          report.bytes = {
            logical: st.logicalBytes,
            zero: st.zeroBytes,
            dedup: st.dedupBytes,
            sent: st.rawBytesSent,
            wire: st.wireBytes,
          };
          if (st.wireBytes > 0) report.compressionRatio = round2(st.rawBytesSent / st.wireBytes);
          if (st.rawBytesSent > 0) report.dedupRatio = round2(st.logicalBytes / st.rawBytesSent);
          if (st.durationMs > 0) report.rateBps = Math.round(st.wireBytes / (st.durationMs / 1000));
          r.detail = { ...st };
        },
        enter(MigrationPhase.Transfer),
      );

      await rec.run(
        MigrationPhase.Restore,
        async (r) => {
          restoreAsked = true;
          const res = await peer.restore(report.id, name);
          r.detail = {
            pid: res.pid,
            restoreMs: Math.round(res.restoreMs),
            materializeMs: Math.round(res.materializeMs),
          };
        },
        enter(MigrationPhase.Restore),
      );
      report.downtimeMs = round1(rec.now() - downtimeStart);

      // ---- Restored on the destination: the point of no return. From here on the ----
      // ---- destination owns the container; nothing below may resume the source.    ----
      await rec
        .run(
          MigrationPhase.Commit,
          async () => {
            report.committed = true;
            await save();
            await runtime.remove(name, { force: true });
          },
          enter(MigrationPhase.Commit),
        )
        .catch((err: unknown) =>
          report.warnings.push(`commit: cannot remove the source record: ${errorMessage(err)}`),
        );

      await rec
        .run(
          MigrationPhase.Cleanup,
          async () => {
            if (manifest) await mover.keep(`container:${name}`, manifest);
            await rm(checkpointDir, { recursive: true, force: true });
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
      await this.rollback(report, rec, peer, { checkpointed, restoreAsked, checkpointDir });
    } finally {
      if (report.committed) report.outcome = 'committed';
      report.totalMs = rec.now();
      delete report.progress;
      await save();
      log.info('migration ended', {
        id: report.id,
        name,
        outcome: report.outcome,
        downtimeMs: report.downtimeMs,
      });
    }
    return report;
  }

  /** Resumes the source after a failure before commit, unless the destination may hold a copy. */
  private async rollback(
    report: MigrationReport,
    rec: PhaseRecorder,
    peer: MigrationPeer,
    s: { checkpointed: boolean; restoreAsked: boolean; checkpointDir: string },
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
          report.outcome = 'failed';
          report.warnings.push(
            `the destination could not confirm it holds no copy; the state is kept in ${s.checkpointDir} ` +
              `(check ${peer.label}, then: godwit restore ${s.checkpointDir} --name ${report.name})`,
          );
          return;
        }
        // 2. Resume the source from its own checkpoint.
        await runtime.remove(report.name, { force: true }).catch(() => undefined);
        const rs = await runtime.restore({ dir: s.checkpointDir, name: report.name });
        r.detail = { ...r.detail, restoreMs: Math.round(rs.durationMs) };
        report.outcome = 'rolled-back';
        await rm(s.checkpointDir, { recursive: true, force: true });
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

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}
function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
