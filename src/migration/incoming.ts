/**
 * The destination side of a migration: reserves nothing but checks the name, tells the
 * source where to send state, reassembles the transferred checkpoint and restores it.
 * Which container a migration restored is recorded on disk, so that `finish(id, false)`
 * (a rollback) removes exactly that container, also after an agent restart.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { systemClock, type Clock } from '../core/clock.js';
import type { Manifest } from '../core/chunks.js';
import { AlreadyExistsError, ErrorCode, FailedPreconditionError, NotFoundError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { ContainerRuntime } from '../core/runtime.js';
import { readJsonIfExists, writeJsonAtomic } from '../runtime/state-dir.js';

/** What the destination needs from the chunk layer. */
export interface IncomingState {
  /** The manifest of a completed transfer session, or undefined while incomplete. */
  completed(sessionId: string): Promise<Manifest | undefined>;
  /** Writes the manifest's tree into `dir` from the local chunk store. */
  materialize(manifest: Manifest, dir: string): Promise<void>;
  /** Keeps a manifest's chunks (reusable state) under `name`; drops the session's own hold. */
  keep(name: string, manifest: Manifest, sessionId: string): Promise<void>;
  /** Drops what a session holds (after an aborted migration). */
  discard(sessionId: string): Promise<void>;
}

/** Dependencies of IncomingMigrations. */
export interface IncomingOptions {
  runtime: ContainerRuntime;
  state: IncomingState;
  /** The transfer server's endpoint, as the source must dial it. */
  transfer: { host: string; port: number };
  /** Working directory (`<state>/migrations/incoming`). */
  dir: string;
  /** Where checkpoints are reassembled (`<scratch>/<id>/checkpoint`); default `dir`. */
  scratchDir?: string;
  log: Logger;
  clock?: Clock;
}

interface IncomingRecord {
  id: string;
  name: string;
  /** Set once the restore succeeded: this migration created container `name`. */
  restored?: boolean;
}

/** Destination-side handling of incoming migrations. */
export class IncomingMigrations {
  private readonly clock: Clock;

  constructor(private readonly opts: IncomingOptions) {
    this.clock = opts.clock ?? systemClock;
  }

  /** Checks that `name` is free here and returns where to send state. */
  async prepare(id: string, name: string): Promise<{ transfer: { host: string; port: number } }> {
    const exists = await this.opts.runtime.inspect(name).then(
      () => true,
      (err: unknown) => {
        if (err instanceof NotFoundError) return false;
        throw err;
      },
    );
    if (exists) {
      throw new AlreadyExistsError(
        ErrorCode.ContainerExists,
        `the destination already has a container named ${name}`,
        {
          hint: `remove it there first, or migrate to another host`,
        },
      );
    }
    await mkdir(join(this.opts.dir, id), { recursive: true });
    await this.saveRecord({ id, name });
    this.opts.log.info('incoming migration prepared', { id, name });
    return { transfer: this.opts.transfer };
  }

  /** Reassembles the checkpoint from the completed transfer and restores it as `name`. */
  async restore(
    id: string,
    name: string,
  ): Promise<{ name: string; pid: number; restoreMs: number; materializeMs: number }> {
    const tIn = this.clock.monotonic();
    const record = await this.record(id);
    if (record.name !== name) {
      throw new FailedPreconditionError(
        ErrorCode.InvalidState,
        `migration ${id} was prepared for ${record.name}, not ${name}`,
      );
    }
    const manifest = await this.opts.state.completed(id);
    if (!manifest) {
      throw new FailedPreconditionError(
        ErrorCode.TransferIncomplete,
        `the transfer of migration ${id} is not complete`,
      );
    }
    const dir = this.checkpointDir(id);
    await rm(dir, { recursive: true, force: true });
    const t0 = this.clock.monotonic();
    await this.opts.state.materialize(manifest, dir);
    const materializeMs = this.clock.monotonic() - t0;
    const t1 = this.clock.monotonic();
    const res = await this.opts.runtime.restore({ dir, name });
    const restoreMs = this.clock.monotonic() - t1;
    await this.saveRecord({ ...record, restored: true });
    this.opts.log.info('incoming migration restored', {
      id,
      name,
      pid: res.pid,
      restoreMs,
      runtimeRestoreMs: res.durationMs,
      materializeMs,
      lookupMs: t0 - tIn,
    });
    return { name, pid: res.pid, restoreMs, materializeMs };
  }

  /**
   * Ends a migration here. `committed`: keep the container, drop temp files, keep the chunks
   * for later trips. Not committed (rollback): also remove the container if this migration
   * restored it. Idempotent; an unknown id is fine (nothing to do).
   */
  async finish(id: string, committed: boolean): Promise<{ removedContainer: boolean }> {
    const record = await this.record(id).catch(() => undefined);
    let removedContainer = false;
    if (record && !committed && record.restored) {
      await this.opts.runtime.remove(record.name, { force: true }).catch((err: unknown) => {
        if (!(err instanceof NotFoundError)) throw err;
      });
      removedContainer = true;
    }
    if (record && committed) {
      const manifest = await this.opts.state.completed(id);
      if (manifest) await this.opts.state.keep(`container:${record.name}`, manifest, id);
    } else {
      await this.opts.state.discard(id);
    }
    await rm(join(this.opts.dir, id), { recursive: true, force: true });
    if (this.opts.scratchDir) await rm(join(this.opts.scratchDir, id), { recursive: true, force: true });
    this.opts.log.info('incoming migration finished', { id, committed, removedContainer });
    return { removedContainer };
  }

  private checkpointDir(id: string): string {
    return join(this.opts.scratchDir ?? this.opts.dir, id, 'checkpoint');
  }

  private async record(id: string): Promise<IncomingRecord> {
    const raw = await readJsonIfExists(join(this.opts.dir, id, 'incoming.json'));
    if (typeof raw !== 'object' || raw === null || typeof (raw as IncomingRecord).name !== 'string') {
      throw new NotFoundError(ErrorCode.MigrationNotFound, `no incoming migration ${id} on this host`);
    }
    return raw as IncomingRecord;
  }

  private async saveRecord(r: IncomingRecord): Promise<void> {
    await writeJsonAtomic(join(this.opts.dir, r.id, 'incoming.json'), r);
  }
}
