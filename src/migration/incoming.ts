/**
 * The destination side of a migration: reserves nothing but checks the name, tells the
 * source where to send state, reassembles the transferred checkpoint and restores it.
 * Which container a migration restored is recorded on disk, so that `finish(id, false)`
 * (a rollback) removes exactly that container, also after an agent restart.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { systemClock, type Clock } from '../core/clock.js';
import { PAGE_SIZE, type Digest, type Manifest } from '../core/chunks.js';
import {
  AlreadyExistsError,
  ErrorCode,
  FailedPreconditionError,
  GodwitError,
  NotFoundError,
  UnavailableError,
} from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { ContainerRuntime } from '../core/runtime.js';
import type { ContainerNetwork } from '../core/network.js';
import type { LazyMemoryReport } from '../core/migration.js';
import { percentile, startCriuPageServer, type CriuPageServer } from '../pages/criu-page-server.js';
import {
  EVERY_LAZY_PAGE,
  LazyPageBroker,
  type PageFetchClient,
  type RemoteRun,
} from '../pages/lazy-page-broker.js';
import { PageFetcher } from '../pages/page-fetch.js';
import {
  layeredLookup,
  readMemoryIndex,
  type HeldPage,
  type ProcessPageIndex,
} from '../memory/memory-index.js';
import {
  checkpointPages,
  manifestFileBytes,
  pagemapEntries,
  type CheckpointPages,
} from '../memory/checkpoint-pages.js';
import { decodeInlineChunks, decodeInlineState, type InlineChunk, type InlineState } from './inline-state.js';
import { readJsonIfExists, writeJsonAtomic } from '../runtime/state-dir.js';
import type { MaterializeOptions } from '../chunks/index.js';
import { collectGarbage } from '../system/gc.js';

/** Memory the source kept back (post-copy, hybrid), as the source describes it in `restore`. */
export interface LazyRestoreRequest {
  /** The source's page source and the migration's token (32 hex digits). */
  source: { host: string; port: number; token: string };
  /**
   * Pages that stayed there: holes in the transferred pages files. Absent: every page the
   * images' pagemaps mark lazy (post-copy, a held dump), read from them here.
   */
  remote?: RemoteRun[];
  /**
   * Hybrid: the source sends verdicts on the remote pages; those it finds unchanged since the
   * pre-copy round `base` (a completed transfer session here) are served from the local store.
   */
  verdicts?: {
    base: string;
    /**
     * Closing passes the source made after `base` (completed transfer sessions here, in order),
     * each holding the pages it found changed: laid over `base`, a later one over an earlier.
     */
    closing?: string[];
  };
  /**
   * Pre-copy with a held final dump: the container runs only once every page is here (the
   * verdicts all in, the changed pages fetched); nothing is fetched after the restore.
   */
  waitForAll?: boolean;
}

/** A lazily restored container being filled. */
interface LazyFill {
  result: Promise<LazyMemoryReport>;
  /** Stops serving at once (rollback). */
  abort(): void;
}

/** What the destination needs from the chunk layer. */
export interface IncomingState {
  /** The manifest of a completed transfer session, or undefined while incomplete. */
  completed(sessionId: string): Promise<Manifest | undefined>;
  /** A chunk of the local store. */
  chunk(digest: Digest): Promise<Buffer>;
  /** Reads a chunk of the local store, `size` bytes, into `out` at `offset` (ChunkStore.readInto). */
  chunkInto?(digest: Digest, out: Buffer, offset: number, size: number): Promise<void>;
  /** Completes session `sessionId` with state that came inside a request (TransferServer.deliver). */
  deliver(sessionId: string, manifest: unknown, chunks: ReadonlyMap<Digest, Buffer>): Promise<void>;
  /** Writes the manifest's tree into `dir` from the local chunk store (`holes` left unwritten). */
  materialize(manifest: Manifest, dir: string, opts?: Pick<MaterializeOptions, 'holes'>): Promise<void>;
  /**
   * Like `materialize`, while the chunks in `missing` are still arriving: reading one waits for
   * it (or fails once `signal` aborts).
   */
  materializeArriving?(
    manifest: Manifest,
    dir: string,
    missing: ReadonlySet<Digest>,
    signal: AbortSignal,
    opts?: Pick<MaterializeOptions, 'holes'>,
  ): Promise<void>;
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
  /** Held while a checkpoint is reassembled and restored, so background work waits. */
  quiet?: { hold(): () => void };
  /** Restore with lazy pages from the reassembled images (default true; falls back to plain). */
  lazyRestore?: boolean;
  /** Whether this host can restore memory lazily (userfaultfd), as `prepare` tells the source. */
  lazyPages?: boolean;
  /** Where checkpoints are reassembled (`<scratch>/<id>/checkpoint`); default `dir`. */
  scratchDir?: string;
  log: Logger;
  clock?: Clock;
}

/**
 * What crosses before the restore: `full`, every page (cold, pre-copy); `lazy`, pages may stay
 * on the source (post-copy, hybrid).
 */
export const FINAL_PHASES = ['full', 'lazy'] as const;
export type FinalPhase = (typeof FINAL_PHASES)[number];

interface IncomingRecord {
  id: string;
  name: string;
  /** Set once the restore succeeded: this migration created container `name`. */
  restored?: boolean;
  /** As the source said at `prepare`; absent: `lazy`. */
  finalPhase?: FinalPhase;
}

/** Runs of missing pages a lost lazy restore lists in its report (the log has them all). */
const MISSING_RUNS_REPORTED = 32;

/** How long an early reassembly may wait for its chunks. */
const PREBUILD_TIMEOUT_MS = 15 * 60_000;

/**
 * A full final phase's checkpoint with fewer lazy pages than this is reassembled whole: writing
 * them costs less than a page server.
 */
const STORE_PAGES_MIN = 1024;

/** How long a restore waits for the parts of its state that come in requests of their own. */
const STATE_PARTS_WAIT_MS = 10_000;

/** A reassembly started when the final transfer was offered. */
interface Prebuild {
  manifest: Manifest;
  /** `pages`: the lazy pages were left out of the pages files, to be served from the store. */
  done: Promise<{ ok: boolean; ms: number; pages?: CheckpointPages }>;
  abort: AbortController;
}

/** Destination-side handling of incoming migrations. */
export class IncomingMigrations {
  private readonly clock: Clock;
  private readonly prebuilds = new Map<string, Prebuild>();
  /** Restores in progress: `finish` waits for them before it decides what to remove. */
  private readonly restoring = new Map<string, Promise<unknown>>();
  /** Migrations finished here since the agent started: a late restore must not run. */
  private readonly finished = new Set<string>();
  /** Restores prepared ahead (their network), by migration: the restore waits for it. */
  private readonly prepared = new Map<string, Promise<void>>();
  /** Migrations whose restore has had its head start (prestage) asked for. */
  private readonly prestaged = new Set<string>();
  /** Parts of restore requests' states that came in requests of their own, by migration. */
  private readonly stateParts = new Map<
    string,
    { chunks: Map<Digest, Buffer>; count: number; wake?: () => void }
  >();
  /** Post-copy fills in progress or ended, by migration. */
  private readonly fills = new Map<string, LazyFill>();
  /** The last round's pages, indexed once per migration (heldPagesOf). */
  private readonly heldAhead = new Map<
    string,
    { base: string; index: Promise<Map<number, ProcessPageIndex>> }
  >();

  constructor(private readonly opts: IncomingOptions) {
    this.clock = opts.clock ?? systemClock;
  }

  /** Checks that `name` is free here and returns where to send state. */
  async prepare(
    id: string,
    name: string,
    network?: { net: ContainerNetwork; locked: boolean },
    image?: string,
    finalPhase?: FinalPhase,
  ): Promise<{ transfer: { host: string; port: number }; lazyPages: boolean }> {
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
    await this.saveRecord({ id, name, ...(finalPhase ? { finalPhase } : {}) });
    // The container's network namespace is built now, off the network, and its image made ready,
    // while the source runs: the restore's head start (prestage) then only connects it.
    const runtime = this.opts.runtime;
    const build = runtime.prepareNetwork;
    const ready = runtime.prepareImage;
    if ((network && build) || (image !== undefined && ready)) {
      this.prepared.set(
        id,
        Promise.all([
          network && build
            ? build.call(runtime, name, network.net, { locked: network.locked }).catch((err: unknown) => {
                this.opts.log.warn('cannot build the network ahead', { id, name, err: String(err) });
              })
            : undefined,
          image !== undefined && ready
            ? ready.call(runtime, image).catch((err: unknown) => {
                this.opts.log.warn('cannot make the image ready ahead', { id, image, err: String(err) });
              })
            : undefined,
        ]).then(() => undefined),
      );
    }
    this.opts.log.info('incoming migration prepared', { id, name });
    return { transfer: this.opts.transfer, lazyPages: this.opts.lazyPages !== false };
  }

  /**
   * The transfer of migration `id`'s checkpoint was offered: start reassembling it now, while
   * the `missing` chunks arrive (restore then waits for this instead of starting over). Only for
   * a prepared migration, once; failures here are not errors (restore reassembles again).
   */
  offered(id: string, manifest: Manifest, missing: readonly Digest[]): void {
    const materializeArriving = this.opts.state.materializeArriving;
    if (!materializeArriving || this.prebuilds.has(id)) return;
    const abort = new AbortController();
    // A source that vanished without finishing leaves no reassembly waiting forever.
    setTimeout(() => abort.abort(new Error('early reassembly timed out')), PREBUILD_TIMEOUT_MS).unref();
    const dir = this.checkpointDir(id);
    const done = (async (): Promise<{ ok: boolean; ms: number; pages?: CheckpointPages }> => {
      const record = await this.record(id).catch(() => undefined);
      if (!record || record.restored) return { ok: false, ms: 0 };
      this.prepareRestore(id, record.name, manifest);
      const t0 = this.clock.monotonic();
      const arriving = new Set(missing);
      const pages = await this.storedPages(id, record, manifest, arriving);
      // The memory will be served from the store, but which pages are lazy is not known yet:
      // the restore writes the rest (small) once everything is here.
      if (pages === 'later') return { ok: false, ms: 0 };
      await rm(dir, { recursive: true, force: true });
      await materializeArriving.call(
        this.opts.state,
        manifest,
        dir,
        arriving,
        abort.signal,
        pages ? { holes: pages.holes } : undefined,
      );
      return { ok: true, ms: this.clock.monotonic() - t0, ...(pages ? { pages } : {}) };
    })().catch((err: unknown) => {
      if (!abort.signal.aborted) this.opts.log.warn('early reassembly failed', { id, err: String(err) });
      return { ok: false, ms: 0 };
    });
    this.prebuilds.set(id, { manifest, done, abort });
  }

  /**
   * The lazy pages of a full final phase's checkpoint, to be served from the local chunk store at
   * the restore instead of first written into the pages files. Undefined where they cannot be: a
   * lazy final phase, no lazy restore here, too few pages. `later`: a pagemap image is among the
   * chunks still `arriving` (a large one, at 1 GiB), so this cannot be told yet.
   */
  private async storedPages(
    id: string,
    record: IncomingRecord,
    manifest: Manifest,
    arriving?: ReadonlySet<Digest>,
  ): Promise<CheckpointPages | 'later' | undefined> {
    if (record.finalPhase !== 'full' || this.opts.lazyRestore === false) return undefined;
    if (arriving && arriving.size > 0) {
      for (const { entry } of pagemapEntries(manifest)) {
        if ((entry.chunks ?? []).some((c) => 'digest' in c && arriving.has(c.digest))) return 'later';
      }
    }
    const pages = await checkpointPages(manifest, (d) => this.opts.state.chunk(d)).catch((err: unknown) => {
      this.opts.log.warn('cannot serve the memory from the store: reassembling it', { id, err: String(err) });
      return undefined;
    });
    return pages && pages.pages >= STORE_PAGES_MIN ? pages : undefined;
  }

  /**
   * Gives the runtime its head start on restoring `name` (its network) from the checkpoint's
   * `checkpoint.json`, carried inline in the offered manifest. Best effort, in the background.
   */
  private prepareRestore(id: string, name: string, manifest: Manifest): void {
    const e = manifest.entries.find((x) => x.type === 'file' && x.path === 'checkpoint.json');
    if (!e || e.type !== 'file' || e.inline === undefined) return;
    this.prepareRestoreFrom(id, name, Buffer.from(e.inline, 'base64'));
  }

  /**
   * The source sends the checkpoint's `checkpoint.json` as soon as its dump is done, so that the
   * restore's head start (its network) overlaps the snapshot and transfer. Best effort.
   */
  async prestage(id: string, checkpointJson: Buffer): Promise<void> {
    const record = await this.record(id);
    if (record.restored || this.finished.has(id) || this.restoring.has(id)) return;
    this.prepareRestoreFrom(id, record.name, checkpointJson);
  }

  private prepareRestoreFrom(id: string, name: string, json: Buffer): void {
    const prepare = this.opts.runtime.prepareRestore;
    if (!prepare || this.prestaged.has(id)) return;
    this.prestaged.add(id);
    // After the network built at `prepare`, if any.
    const before = this.prepared.get(id) ?? Promise.resolve();
    this.prepared.set(
      id,
      before.then(() =>
        prepare.call(this.opts.runtime, name, json).catch((err: unknown) => {
          this.opts.log.warn('cannot prepare the restore ahead', { id, name, err: String(err) });
        }),
      ),
    );
  }

  /**
   * A part of migration `id`'s final state (inline-state.ts `splitInlineState`), sent beside its
   * restore request: its chunks are kept for that restore, which may come before or after.
   */
  statePart(id: string, chunks: readonly InlineChunk[]): void {
    if (this.finished.has(id)) return;
    const p = this.partsOf(id);
    decodeInlineChunks(chunks, p.chunks);
    p.count += 1;
    p.wake?.();
  }

  /** What has come of `id`'s state parts so far (made empty at the first look). */
  private partsOf(id: string): { chunks: Map<Digest, Buffer>; count: number; wake?: () => void } {
    let p = this.stateParts.get(id);
    if (!p) this.stateParts.set(id, (p = { chunks: new Map(), count: 0 }));
    return p;
  }

  /** The chunks of `n` parts of `id`'s state, once they are all here; fails after STATE_PARTS_WAIT_MS. */
  private async stateChunks(id: string, n: number): Promise<Map<Digest, Buffer>> {
    const parts = this.partsOf(id);
    const deadline = this.clock.monotonic() + STATE_PARTS_WAIT_MS;
    while (parts.count < n) {
      const left = deadline - this.clock.monotonic();
      if (left <= 0) {
        throw new FailedPreconditionError(
          ErrorCode.TransferIncomplete,
          `only ${parts.count} of the ${n} parts of migration ${id}'s state that come apart from its restore request arrived`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        parts.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    this.stateParts.delete(id);
    return parts.chunks;
  }

  /** Reassembles the checkpoint from the completed transfer and restores it as `name`. */
  async restore(
    id: string,
    name: string,
    lazy?: LazyRestoreRequest,
    inline?: InlineState,
  ): Promise<{ name: string; pid: number; restoreMs: number; materializeMs: number }> {
    const tIn = this.clock.monotonic();
    const record = await this.record(id);
    if (record.name !== name) {
      throw new FailedPreconditionError(
        ErrorCode.InvalidState,
        `migration ${id} was prepared for ${record.name}, not ${name}`,
      );
    }
    if (inline) {
      // The state came with the request: recorded as the migration's transfer session.
      const { manifest, chunks } = decodeInlineState(inline);
      if (inline.parts !== undefined) {
        for (const [d, data] of await this.stateChunks(id, inline.parts)) chunks.set(d, data);
      }
      await this.opts.state.deliver(id, manifest, chunks);
      this.opts.log.info('state delivered with the restore request', {
        id,
        chunks: chunks.size,
        ...(inline.parts !== undefined ? { parts: inline.parts + 1 } : {}),
        ms: Math.round(this.clock.monotonic() - tIn),
      });
    }
    const manifest = await this.opts.state.completed(id);
    if (!manifest) {
      throw new FailedPreconditionError(
        ErrorCode.TransferIncomplete,
        `the transfer of migration ${id} is not complete`,
      );
    }
    if (this.finished.has(id) || this.restoring.has(id)) {
      throw new FailedPreconditionError(
        ErrorCode.InvalidState,
        `migration ${id} is ${this.finished.has(id) ? 'already finished' : 'being restored'} here`,
      );
    }
    const release = this.opts.quiet?.hold() ?? ((): void => undefined);
    const run = this.reassembleAndRestore(id, name, record, manifest, tIn, lazy);
    this.restoring.set(
      id,
      run.catch(() => undefined),
    );
    try {
      return await run;
    } finally {
      this.restoring.delete(id);
      release();
    }
  }

  private async reassembleAndRestore(
    id: string,
    name: string,
    record: IncomingRecord,
    manifest: Manifest,
    tIn: number,
    remote?: LazyRestoreRequest,
  ): Promise<{ name: string; pid: number; restoreMs: number; materializeMs: number }> {
    const dir = this.checkpointDir(id);
    const t0 = this.clock.monotonic();
    // Reassembled already, while the last chunks arrived? Then only the wait counts here.
    const pre = this.prebuilds.get(id);
    const early = pre && pre.manifest === manifest ? await pre.done : undefined;
    let pages = early?.pages;
    if (!early?.ok || (remote && pages)) {
      pre?.abort.abort();
      await pre?.done;
      const stored = remote ? undefined : await this.storedPages(id, record, manifest);
      pages = stored === 'later' ? undefined : stored;
      await rm(dir, { recursive: true, force: true });
      await this.opts.state.materialize(manifest, dir, pages ? { holes: pages.holes } : undefined);
    }
    this.prebuilds.delete(id);
    const materializeMs = this.clock.monotonic() - t0;
    await this.prepared.get(id);
    this.prepared.delete(id);
    // The source may have given up meanwhile (finish): then nothing may start here.
    if (this.finished.has(id)) {
      throw new FailedPreconditionError(
        ErrorCode.InvalidState,
        `migration ${id} was finished during its restore`,
      );
    }
    if (remote) return this.restoreRemoteLazy(id, name, record, dir, remote, materializeMs, tIn);
    if (pages) {
      const res = await this.restoreFromStore(id, name, record, dir, pages).catch((err: unknown) => {
        this.opts.log.warn('restore from the store failed: reassembling the memory', {
          id,
          name,
          err: String(err),
        });
        return undefined;
      });
      if (res) return { ...res, materializeMs };
      await rm(dir, { recursive: true, force: true });
      await this.opts.state.materialize(manifest, dir);
    }
    const t1 = this.clock.monotonic();
    // Lazily: the container runs again before its memory is copied in; CRIU's lazy-pages daemon
    // fills it from the reassembled images right after (256 MiB: restore 0.20 s instead of 0.32–0.45 s,
    // filled 0.1 s later). If that fails, a plain restore.
    let lazy = this.opts.lazyRestore ?? true;
    const res = await this.opts.runtime
      .restore({ dir, name, lazyPages: lazy })
      .catch(async (err: unknown) => {
        if (!lazy) throw err;
        this.opts.log.warn('lazy restore failed, restoring plainly', { id, name, err: String(err) });
        lazy = false;
        return this.opts.runtime.restore({ dir, name });
      });
    const restoreMs = this.clock.monotonic() - t1;
    await this.saveRecord({ ...record, restored: true });
    this.opts.log.info('incoming migration restored', {
      id,
      name,
      pid: res.pid,
      restoreMs,
      lazy,
      runtimeRestoreMs: res.durationMs,
      materializeMs,
      earlyReassemblyMs: early?.ok ? Math.round(early.ms) : undefined,
      lookupMs: t0 - tIn,
    });
    return { name, pid: res.pid, restoreMs, materializeMs };
  }

  /**
   * Restores with the memory that stayed on the source served by godwit: CRIU's lazy-pages daemon
   * asks godwit's page server, which reads the local images and fetches the remote pages from the
   * source (on faults first, and in the background). No plain fallback: the images have holes.
   */
  private async restoreRemoteLazy(
    id: string,
    name: string,
    record: IncomingRecord,
    dir: string,
    req: LazyRestoreRequest,
    materializeMs: number,
    tIn: number,
  ): Promise<{ name: string; pid: number; restoreMs: number; materializeMs: number }> {
    const { log } = this.opts;
    const t1 = this.clock.monotonic();
    // From the request's handling to here: its state stored, the checkpoint laid out, the
    // network prepared ahead awaited.
    const beforeMs = Math.round(t1 - tIn);
    const lap: Record<string, number> = {};
    const mark = (k: string): void => void (lap[k] = Math.round(this.clock.monotonic() - t1));
    // The connection to the source opens while the container is restored (one round trip off
    // the stopped phase); CRIU asks for no page before the restore is done.
    const connecting = PageFetcher.connect({
      host: req.source.host,
      port: req.source.port,
      token: Buffer.from(req.source.token, 'hex'),
    });
    connecting.catch(() => undefined);
    let fetcher: PageFetcher | undefined;
    let broker: LazyPageBroker | undefined;
    let server: CriuPageServer | undefined;
    let restored = false;
    /** The restore, when started before the broker was ready (its outcome, once settled). */
    let restoring: ReturnType<IncomingMigrations['restoreServedBy']> | undefined;
    let brokerIs!: (b: LazyPageBroker) => void;
    let brokerFailed!: (err: unknown) => void;
    const brokerReady = new Promise<LazyPageBroker>((res, rej) => {
      brokerIs = res;
      brokerFailed = rej;
    });
    brokerReady.catch(() => undefined);
    // Hybrid: which content this host holds for each page, from the last pre-copy round and the
    // closing passes. The round is read at `quiesce` while the source still ran, else at the first
    // page asked for (the restore's own faults, or once the container runs).
    const verdicts = req.verdicts;
    let held: ReturnType<IncomingMigrations['heldPagesOf']> | undefined;
    const heldPages = (): NonNullable<typeof held> => {
      if (!held) {
        const v = verdicts as NonNullable<typeof verdicts>;
        held = this.heldPagesOf(id, v.base, v.closing ?? []);
        held.catch((err: unknown) =>
          log.warn('no local copy of the pre-copied pages: every page comes from the source', {
            id,
            err: String(err),
          }),
        );
      }
      return held;
    };
    try {
      // The page server listens and the restore starts at once (CRIU's lazy-pages daemon asks for
      // no page before the restore hands it the processes' memory, ~60 ms on): the broker is
      // made meanwhile (10–20 ms at 1 GiB), while the daemon, the root filesystem and the bundle
      // are. Not when every page must come first (waitForAll).
      if (!req.waitForAll) {
        server = await startCriuPageServer({
          provider: { read: (...a) => brokerReady.then((b) => b.read(...a)) },
          log,
          clock: this.clock,
        });
        mark('serverMs');
        restoring = this.restoreServedBy(server, dir, name);
        restoring.catch(() => undefined);
      }
      broker = await LazyPageBroker.open({
        criuDir: join(dir, 'criu'),
        remote: req.remote ?? EVERY_LAZY_PAGE,
        fetcher: deferredFetcher(connecting),
        clock: this.clock,
        log,
        ...brokerTuning(),
        ...(verdicts
          ? {
              local: (vpid, vaddr, n) =>
                heldPages().then(
                  (h) => h(vpid, vaddr, n),
                  () => undefined,
                ),
            }
          : {}),
      });
      if (verdicts) {
        const b = broker;
        void connecting.then(
          (f) =>
            f.onVerdicts((v) => {
              if (v === 'end') b.verdictsEnd();
              else b.verdicts(v);
            }),
          () => undefined,
        );
      }
      mark('brokerMs');
      // Hybrid: pages judged changed are fetched as their verdicts come, from now on. The link is
      // idle while the container is stopped, and the source judges first the pages written during
      // the rounds: those the restore itself (rseq, the stack) and the service's first steps touch,
      // each of which would otherwise cost a round trip to the source at its fault. A few hundred
      // pages, off a CPU the restore needs. (Post-copy's fill, every page, waits for the restore.)
      if (verdicts || req.waitForAll) broker.start();
      brokerIs(broker);
      if (req.waitForAll) {
        // The restored container may not depend on the source: every page comes first.
        await broker.complete;
        mark('allPagesMs');
        server = await startCriuPageServer({ provider: broker, log, clock: this.clock });
        mark('serverMs');
        restoring = this.restoreServedBy(server, dir, name);
      }
      const res = await (restoring as NonNullable<typeof restoring>);
      restored = true;
      mark('runtimeMs');
      fetcher = await connecting;
      const restoreMs = this.clock.monotonic() - t1;
      // Post-copy's background fill starts once the container runs: not competing with the
      // restore for CPU.
      if (verdicts) void heldPages().catch(() => undefined);
      else if (!req.waitForAll) broker.start();
      await this.saveRecord({ ...record, restored: true });
      this.fills.set(id, this.trackFill(id, name, fetcher, broker, server as CriuPageServer));
      log.info('incoming migration restored lazily', {
        id,
        name,
        pid: res.pid,
        restoreMs,
        beforeMs,
        materializeMs: Math.round(materializeMs),
        ...lap,
        runtimeRestoreMs: Math.round(res.durationMs),
        remotePages: broker.stats().pagesRemote,
      });
      return { name, pid: res.pid, restoreMs, materializeMs };
    } catch (err) {
      // A restore started before the broker failed: its pages are refused, so it fails too, or
      // it ran: either way it is over before anything is undone.
      brokerFailed(err);
      if (!restored && restoring) {
        server?.abort('restore failed');
        restored = await restoring.then(
          () => true,
          () => false,
        );
      }
      // A container restored without its source must not run on: nothing would fill its memory.
      await this.undoLazyRestore(name, restored, server, broker, async () =>
        (fetcher ?? (await connecting.catch(() => undefined)))?.close(),
      );
      throw err;
    }
  }

  /** Restores `name` from `dir`, CRIU's lazy-pages daemon asking `server` for the lazy pages. */
  private restoreServedBy(
    server: CriuPageServer,
    dir: string,
    name: string,
  ): ReturnType<ContainerRuntime['restore']> {
    return this.opts.runtime.restore({
      dir,
      name,
      lazyPages: true,
      lazyPageServer: { address: server.address, port: server.port },
    });
  }

  /**
   * Undoes a lazy restore that failed: the container if it was `restored` (it must not run with
   * nobody to fill its memory), the page server, the source connection (`closeSource`), the broker.
   */
  private async undoLazyRestore(
    name: string,
    restored: boolean,
    server: CriuPageServer | undefined,
    broker: LazyPageBroker | undefined,
    closeSource?: () => Promise<void>,
  ): Promise<void> {
    if (restored) await this.opts.runtime.remove(name, { force: true }).catch(() => undefined);
    server?.abort('restore failed');
    await server?.close().catch(() => undefined);
    await closeSource?.();
    await broker?.close();
  }

  /**
   * Restores a full final phase's checkpoint with its lazy pages served from the local chunk
   * store (the pages files have holes there): CRIU's lazy-pages daemon asks godwit's page server,
   * every page already here. Throws, with no container left, if the restore fails.
   */
  private async restoreFromStore(
    id: string,
    name: string,
    record: IncomingRecord,
    dir: string,
    pages: CheckpointPages,
  ): Promise<{ name: string; pid: number; restoreMs: number }> {
    const { log } = this.opts;
    const t1 = this.clock.monotonic();
    let broker: LazyPageBroker | undefined;
    let server: CriuPageServer | undefined;
    let restored = false;
    try {
      broker = await LazyPageBroker.open({
        criuDir: join(dir, 'criu'),
        remote: pages.runs,
        fetcher: NO_SOURCE,
        clock: this.clock,
        log,
        local: (vpid, vaddr, n) => pages.read(vpid, vaddr, n),
      });
      broker.verdicts(pages.runs.map((r) => ({ ...r, known: true })));
      broker.verdictsEnd();
      server = await startCriuPageServer({ provider: broker, log, clock: this.clock });
      const res = await this.restoreServedBy(server, dir, name);
      restored = true;
      const restoreMs = this.clock.monotonic() - t1;
      await this.saveRecord({ ...record, restored: true });
      this.fills.set(id, this.trackFill(id, name, undefined, broker, server));
      log.info('incoming migration restored, its memory served from the store', {
        id,
        name,
        pid: res.pid,
        restoreMs,
        runtimeRestoreMs: Math.round(res.durationMs),
        pages: pages.pages,
      });
      return { name, pid: res.pid, restoreMs };
    } catch (err) {
      await this.undoLazyRestore(name, restored, server, broker);
      throw err;
    }
  }

  /**
   * What this host holds for each page of migration `id`: the completed pre-copy round `base`
   * (indexed once, at `quiesce` or at the restore's first need), overlaid with the closing
   * passes `closing` (small; a later one over an earlier). If any of them cannot be read, none
   * is used (an overlay missing would serve a page's older content).
   */
  private heldPagesOf(
    id: string,
    base: string,
    closing: readonly string[] = [],
  ): Promise<(vpid: number, vaddr: number, n: number) => Promise<Buffer | undefined>> {
    let ahead = this.heldAhead.get(id);
    if (ahead?.base !== base) {
      const index = this.memoryIndexOf(base);
      index.catch(() => undefined);
      ahead = { base, index };
      this.heldAhead.set(id, ahead);
    }
    const baseIndex = ahead.index;
    const held = (async () => {
      const layers = [
        ...(await Promise.all(closing.map((c) => this.memoryIndexOf(c)))).reverse(),
        await baseIndex,
      ];
      const { state } = this.opts;
      const lookup = layeredLookup(layers);
      const into =
        state.chunkInto?.bind(state) ??
        (async (d: Digest, out: Buffer, offset: number): Promise<void> => {
          (await state.chunk(d)).copy(out, offset);
        });
      // The pages of one request are read side by side, each straight into the answer (a fill
      // reads every page of the container, 262,144 at 1 GiB). Read one after another, each into
      // a buffer of its own, they set the fill's pace: 1.82–1.91 s at 256 MiB against 1.40 s.
      return async (vpid: number, vaddr: number, n: number): Promise<Buffer | undefined> => {
        const digests: HeldPage[] = [];
        for (let i = 0; i < n; i++) {
          const h = lookup(vpid, vaddr + i * PAGE_SIZE);
          if (h === undefined) return undefined;
          digests.push(h);
        }
        const out = Buffer.allocUnsafe(n * PAGE_SIZE);
        await Promise.all(
          digests.map((h, i) =>
            h === 'zero'
              ? out.fill(0, i * PAGE_SIZE, (i + 1) * PAGE_SIZE)
              : into(h, out, i * PAGE_SIZE, PAGE_SIZE),
          ),
        );
        return out;
      };
    })();
    held.catch(() => undefined);
    return held;
  }

  /** The page index of the completed session `sessionId` here (a round, or a closing pass). */
  private async memoryIndexOf(sessionId: string): Promise<Map<number, ProcessPageIndex>> {
    const { state } = this.opts;
    const manifest = await state.completed(sessionId);
    if (!manifest)
      throw new NotFoundError(ErrorCode.ManifestBaseNotFound, `no completed session ${sessionId} here`);
    return readMemoryIndex(manifest, (e) => manifestFileBytes(e, (d) => state.chunk(d)));
  }

  /**
   * Follows a lazily restored container until every page is in place. If the source is lost
   * first, the container is killed before the daemon can give up on its pages (a process must
   * never run on with memory missing), and the report says how many pages were lost.
   */
  private trackFill(
    id: string,
    name: string,
    fetcher: PageFetcher | undefined,
    broker: LazyPageBroker,
    server: CriuPageServer,
  ): LazyFill {
    const { runtime, log } = this.opts;
    const t0 = this.clock.monotonic();
    const since = (): number => Math.round(this.clock.monotonic() - t0);
    const daemon = (runtime.lazyFill?.(name) ?? Promise.resolve({ ok: true, fillMs: 0 })).then((r) => ({
      ...r,
      at: since(),
    }));
    const result = (async (): Promise<LazyMemoryReport> => {
      const source = await broker.complete.then(
        () => ({ ok: true as const, at: since() }),
        (err: unknown) => ({ ok: false as const, at: since(), err }),
      );
      let outcome: LazyMemoryReport['outcome'] = 'filled';
      let error: string | undefined;
      if (source.ok) {
        // Nothing is left on the source: let it go.
        fetcher?.close();
      } else {
        outcome = 'lost';
        const missing = broker.stats().pagesMissing;
        error = `the source was lost with ${missing} pages not yet here: ${String(source.err)}`;
        log.error('lazy restore lost its source: stopping the container', {
          id,
          name,
          missing,
          missingRuns: broker.missingRuns().map((r) => `${r.vpid}:0x${r.vaddr.toString(16)}+${r.nrPages}`),
        });
        await runtime
          .kill(name, 'SIGKILL')
          .catch((err: unknown) => log.warn('cannot kill', { name, err: String(err) }));
        server.abort('the source was lost');
      }
      const d = await daemon;
      await server.close().catch(() => undefined);
      await broker.close();
      const st = broker.stats();
      const ps = server.stats();
      const waits = ps.faultLatenciesMs;
      const report: LazyMemoryReport = {
        outcome,
        pagesRemote: st.pagesRemote,
        pagesOnDemand: st.pagesOnDemand,
        pagesPushed: st.pagesPushed,
        pagesLocal: st.pagesServedLocal,
        pagesServed: st.pagesServed,
        ...(st.verdictRuns > 0 || st.verdictsEndMs !== undefined
          ? {
              pagesFromStore: st.pagesFromStore,
              ...(st.verdictsEndMs !== undefined ? { verdictsMs: st.verdictsEndMs } : {}),
            }
          : {}),
        faults: ps.faultRequests,
        faultWaitMs: {
          p50: round1(percentile(waits, 50) ?? 0),
          p99: round1(percentile(waits, 99) ?? 0),
          max: round1(waits.length ? Math.max(...waits) : 0),
        },
        bytesWire: fetcher?.bytesWire ?? 0,
        ...(source.ok
          ? { sourceWindowMs: source.at }
          : { missingPages: st.pagesMissing, missingRuns: broker.missingRuns(MISSING_RUNS_REPORTED) }),
        ...(outcome === 'filled' && d.ok ? { degradationWindowMs: Math.max(d.at, source.at) } : {}),
        ...(error ? { error } : !d.ok ? { error: 'the lazy-pages daemon failed (see its log)' } : {}),
      };
      log.info('lazy restore ended', { id, name, ...report, requests: ps.requests, daemonMs: d.at });
      return report;
    })();
    result.catch(() => undefined);
    return {
      result,
      abort: () => {
        server.abort('migration aborted');
        fetcher?.close();
      },
    };
  }

  /**
   * The source is about to stop the container: a full garbage collection now (measured: V8
   * collecting the pre-copy rounds' garbage during the source's dump made the dump 2–3× slower,
   * all hosts sharing the machine's cores). Returns how long it took.
   */
  async quiesce(id: string, base?: string): Promise<{ gcMs?: number }> {
    await this.record(id);
    // The pages a lazy final phase will serve from here: indexed now, while the source still
    // runs, rather than at the restored process's first fault.
    if (base !== undefined) await this.heldPagesOf(id, base).catch(() => undefined);
    const gcMs = collectGarbage();
    return gcMs === undefined ? {} : { gcMs: Math.round(gcMs) };
  }

  /** The fill of a lazily restored migration: resolves when it has ended (every page here, or lost). */
  async fill(id: string): Promise<LazyMemoryReport> {
    const f = this.fills.get(id);
    if (!f)
      throw new NotFoundError(ErrorCode.MigrationNotFound, `no lazy restore of migration ${id} on this host`);
    return f.result;
  }

  /**
   * Ends a migration here. `committed`: keep the container, drop temp files, keep the chunks
   * for later trips. Not committed (rollback): also remove the container if this migration
   * restored it. Idempotent; an unknown id is fine (nothing to do).
   */
  async finish(id: string, committed: boolean): Promise<{ removedContainer: boolean }> {
    this.finished.add(id);
    this.stateParts.delete(id);
    const pre = this.prebuilds.get(id);
    if (pre) {
      pre.abort.abort();
      await pre.done;
      this.prebuilds.delete(id);
    }
    // A restore still running decides whether there is a container to remove: wait for it.
    await this.restoring.get(id);
    const fill = this.fills.get(id);
    if (fill) {
      if (!committed) fill.abort();
      await fill.result.catch(() => undefined);
      this.fills.delete(id);
    }
    const record = await this.record(id).catch(() => undefined);
    this.prestaged.delete(id);
    this.heldAhead.delete(id);
    const prepared = this.prepared.get(id);
    if (prepared) {
      await prepared;
      this.prepared.delete(id);
      if (record && !record.restored)
        await this.opts.runtime.cancelRestore?.(record.name).catch(() => undefined);
    }
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
    const gcMs = collectGarbage();
    this.opts.log.info('incoming migration finished', {
      id,
      committed,
      removedContainer,
      gcMs: gcMs === undefined ? undefined : Math.round(gcMs),
    });
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

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}

/** The page source of a restore whose every page is here: asking it is a bug, and fails. */
const NO_SOURCE: PageFetchClient = {
  fetch: () =>
    Promise.reject(
      new UnavailableError(
        ErrorCode.PageSourceLost,
        'a page is missing from the local store, and there is no source',
      ),
    ),
  onFailed: () => undefined,
};

/** A PageFetchClient over a connection still being opened: calls wait for it. */
function deferredFetcher(connecting: Promise<PageFetcher>): PageFetchClient {
  let ready: PageFetcher | undefined;
  void connecting.then(
    (f) => (ready = f),
    () => undefined,
  );
  return {
    fetch: async (vpid, vaddr, n) => (await connecting).fetch(vpid, vaddr, n),
    onFailed: (fn) =>
      void connecting.then(
        (f) => f.onFailed(fn),
        (err: unknown) =>
          fn(err instanceof GodwitError ? err : new UnavailableError(ErrorCode.PageSourceLost, String(err))),
      ),
    get bytesWire() {
      return ready?.bytesWire;
    },
  };
}

/**
 * Tuning of the page broker from the environment (for measurements): GODWIT_FAULT_AROUND_PAGES,
 * GODWIT_FILL_WINDOW_KIB, GODWIT_FILL_BATCH_PAGES. Unset: the broker's defaults.
 */
function brokerTuning(): { faultAroundPages?: number; windowBytes?: number; batchPages?: number } {
  const num = (k: string): number | undefined => {
    const v = Number(process.env[k]);
    return Number.isInteger(v) && v > 0 ? v : undefined;
  };
  const around = num('GODWIT_FAULT_AROUND_PAGES');
  const window = num('GODWIT_FILL_WINDOW_KIB');
  const batch = num('GODWIT_FILL_BATCH_PAGES');
  return {
    ...(around ? { faultAroundPages: around } : {}),
    ...(window ? { windowBytes: window * 1024 } : {}),
    ...(batch ? { batchPages: batch } : {}),
  };
}
