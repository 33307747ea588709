/**
 * ContainerRuntime over runc, with CRIU for checkpoint/restore.
 *
 * Each container is started by `godwit-shim`, which holds its stdio as anonymous pipes
 * (CRIU can dump and restore those; host files it cannot) and appends its output to
 * `output.log`. Root filesystems are overlays: the image is the lower layer and the
 * container's changes live in `upper/`, which is what a checkpoint carries along.
 */
import { spawn } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';
import { containerProcesses } from '../memory/process-memory.js';
import { PsCmd, encodePageServerIov } from '../pages/page-server-iov.js';
import { currentSpawner } from '../system/spawner.js';
import { cgroupHasChildren, freezeCgroup } from './freezer.js';
import { access, mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { systemClock, type Clock } from '../core/clock.js';
import {
  AlreadyExistsError,
  ErrorCode,
  FailedPreconditionError,
  GodwitError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  errorMessage,
} from '../core/errors.js';
import { nullLogger, type Logger } from '../core/logger.js';
import type { AddressAllocator, ContainerNetwork, NetworkLock, NetworkProvider } from '../core/network.js';
import {
  CHECKPOINT_FILES,
  ContainerStatus,
  type CheckpointOptions,
  type CheckpointResult,
  type ContainerInfo,
  type ContainerRuntime,
  type ExecResult,
  type HeldCheckpoint,
  type RestoreOptions,
  type RestoreResult,
  type RunSpec,
} from '../core/runtime.js';
import { criuLogPathFromRunc, criuVersionFromLog, decisiveLines, parseRuncStderr } from '../criu/log.js';
import { lastLines, runCommand, type CommandResult } from '../system/exec.js';
import type { ImageStore } from './image-store.js';
import { buildOciConfig, cgroupsPathFor } from './oci-config.js';
import {
  CHECKPOINT_FORMAT,
  parseCheckpointManifest,
  parseContainerRecord,
  statusFromRunc,
  type CheckpointManifest,
  type ContainerRecord,
} from './records.js';
import type { StateDir } from './state-dir.js';
import { readJsonIfExists, validateName, writeJsonAtomic } from './state-dir.js';
import { createLinkLockGate } from './link-lock-gate.js';

/** Executables the runtime drives. */
export interface RuncTools {
  runc: string;
  /** CRIU (≥ 4.2) or a wrapper that runs it (CRIU's lazy-pages daemon, run by godwit). */
  criu: string;
  /**
   * Given to runc as `--criu` (default `criu`): godwit's CRIU front (native/godwit-criu.c), which
   * answers runc's version and feature questions without starting CRIU.
   */
  criuFront?: string;
  /** The godwit-shim binary (native/godwit-shim.c). */
  shim: string;
}

/** Dependencies of a RuncRuntime. */
export interface RuncRuntimeOptions {
  state: StateDir;
  tools: RuncTools;
  images: ImageStore;
  clock?: Clock;
  log?: Logger;
  /**
   * The host's service network, if it has one. Containers then get a network namespace
   * with their own IP and MAC (allocated when the spec has none), which checkpoints carry.
   */
  network?: NetworkProvider & AddressAllocator;
}

/** Files of a checkpoint directory. */
export { CHECKPOINT_FILES } from '../core/runtime.js';

/** Longest a held checkpoint may wait to be released or resumed (a post-copy fill on a slow link). */
const HELD_CHECKPOINT_TIMEOUT_MS = 60 * 60_000;
/** Longest CRIU may take to dump everything but the memory. */
const HELD_READY_TIMEOUT_MS = 60_000;

/** Where `runc restore` writes the restored init's pid, in the restore's work directory. */
const RESTORE_PID_FILE = 'restore.pid';

/**
 * How long a frozen container stays on the network before the `link` lock cuts it off, ms
 * (GODWIT_LINK_LOCK_GRACE_MS): at least the round trip of its clients (the edge profile's is
 * 20 ms). CRIU's own lock came ~28 ms after the freeze (runc and CRIU starting).
 */
const LINK_LOCK_GRACE_MS = 25;

function linkLockGraceMs(): number {
  const v = Number(process.env['GODWIT_LINK_LOCK_GRACE_MS']);
  return Number.isFinite(v) && v >= 0 ? v : LINK_LOCK_GRACE_MS;
}

/** The `link` lock of one dump (RuncRuntime.dumpLinkLock). */
interface DumpLinkLock {
  readonly script: string | undefined;
  readonly gated: boolean;
  start(frozen: boolean, isolate: boolean): void;
  settle(): Promise<unknown>;
}

/** A port on 127.0.0.1 that nothing listens on right now. */
async function freeLoopbackPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((res, rej) => {
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => res());
  });
  const a = srv.address();
  await new Promise<void>((res) => srv.close(() => res()));
  if (a === null || typeof a === 'string') throw new InternalError(ErrorCode.Internal, 'no loopback port');
  return a.port;
}

/** A connection to host:port, or undefined when nothing accepts there (yet). */
function connectOnce(host: string, port: number): Promise<Socket | undefined> {
  return new Promise((res) => {
    const s = connect({ host, port });
    s.once('connect', () => res(s));
    s.once('error', () => {
      s.destroy();
      res(undefined);
    });
  });
}

/** How long runc and CRIU may take for one call before godwit gives up. */
const RUNC_TIMEOUT_MS = 120_000;
/** Longest a lazy-pages daemon may take to fill a restored container's memory. */
const LAZY_FILL_TIMEOUT_MS = 600_000;

async function pathExists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** ContainerRuntime implemented with runc and CRIU on one godwit host. */
export class RuncRuntime implements ContainerRuntime {
  private readonly state: StateDir;
  private readonly tools: RuncTools;
  /** What runc runs as CRIU. */
  private readonly runcCriu: string;
  /** Lazily restored containers whose memory is still being filled, by name. */
  private readonly lazyFills = new Map<string, Promise<{ ok: boolean; fillMs: number }>>();
  /** The end of a restored container's `link` lock, still under way (awaited before its next dump). */
  private readonly unlocking = new Map<string, Promise<void>>();
  private readonly images: ImageStore;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly network: (NetworkProvider & AddressAllocator) | undefined;

  constructor(opts: RuncRuntimeOptions) {
    this.state = opts.state;
    this.tools = opts.tools;
    this.runcCriu = opts.tools.criuFront ?? opts.tools.criu;
    this.images = opts.images;
    this.clock = opts.clock ?? systemClock;
    this.log = opts.log ?? nullLogger;
    this.network = opts.network;
  }

  async run(spec: RunSpec): Promise<ContainerInfo> {
    validateName(spec.name);
    if (spec.args.length === 0) {
      throw new InvalidArgumentError(ErrorCode.InvalidFlag, 'no command given', {
        hint: 'godwit run NAME -- CMD…',
      });
    }
    const image = await this.images.ensure(spec.image);
    await this.claimName(spec.name);
    const record: ContainerRecord = {
      version: 1,
      spec: { ...spec },
      imageId: image.id,
      lowerDir: image.rootfs,
      createdAt: new Date(this.clock.now()).toISOString(),
    };
    try {
      if (this.network && spec.netnsPath === undefined) {
        const net = spec.network ?? (await this.network.allocate());
        record.spec.network = net;
        record.spec.netnsPath = await this.network.attach(this.netKey(spec.name), net);
      } else if (spec.network) {
        throw new FailedPreconditionError(
          ErrorCode.NoServiceNetwork,
          `${spec.name} asks for address ${spec.network.ip}, but this host has no service network`,
        );
      }
      await this.prepareBundle(record);
      await writeJsonAtomic(this.state.containerRecord(spec.name), record);
      const res = await this.startWithShim(spec.name, [
        'run',
        '-d',
        '--bundle',
        this.state.bundleDir(spec.name),
        spec.name,
      ]);
      if (!res.ok) {
        throw new UnavailableError(ErrorCode.RuncFailed, `runc could not start ${spec.name}`, {
          details: runcErrorLines(res.output),
        });
      }
      this.log.info('container started', {
        name: spec.name,
        image: spec.image,
        imageId: image.id,
        ip: record.spec.network?.ip,
      });
    } catch (err) {
      await this.destroy(spec.name);
      throw err;
    }
    return this.inspect(spec.name);
  }

  async inspect(name: string): Promise<ContainerInfo> {
    const record = await this.readRecord(name);
    const st = await this.runcState(name);
    return this.toInfo(record, st);
  }

  async list(): Promise<ContainerInfo[]> {
    let names: string[];
    try {
      names = await readdir(this.state.containersDir);
    } catch {
      return [];
    }
    const out: ContainerInfo[] = [];
    for (const name of names.sort()) {
      try {
        out.push(await this.inspect(name));
      } catch (err) {
        // A half-created or foreign directory is not a container; say so in the log only.
        if (!(err instanceof NotFoundError))
          this.log.warn('unreadable container record', { name, err: errorMessage(err) });
      }
    }
    return out;
  }

  async exec(name: string, args: readonly string[], opts: { capture?: boolean } = {}): Promise<ExecResult> {
    await this.requireRunning(name);
    if (args.length === 0) throw new InvalidArgumentError(ErrorCode.InvalidFlag, 'no command given to exec');
    const res = await runCommand(this.tools.runc, ['--root', this.state.runcRoot, 'exec', name, ...args], {
      inherit: !opts.capture,
    });
    return { exitCode: res.code, stdout: res.stdout, stderr: res.stderr };
  }

  async kill(name: string, signal = 'TERM'): Promise<void> {
    await this.requireRunning(name);
    const res = await this.runc(['kill', name, signal]);
    if (res.code !== 0) throw runcFailure(`runc kill ${name} ${signal}`, res);
  }

  async stop(name: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    const info = await this.inspect(name);
    if (!isLive(info.status)) return;
    await this.runc(['kill', name, 'TERM']);
    if (await this.waitStopped(name, opts.timeoutMs ?? 10_000)) return;
    this.log.info('container ignored SIGTERM, killing', { name });
    await this.runc(['kill', name, 'KILL']);
    if (!(await this.waitStopped(name, 10_000))) {
      throw new UnavailableError(ErrorCode.Timeout, `${name} did not stop after SIGKILL`);
    }
  }

  async remove(name: string, opts: { force?: boolean } = {}): Promise<void> {
    const info = await this.inspect(name);
    if (isLive(info.status)) {
      if (!opts.force) {
        throw new FailedPreconditionError(ErrorCode.ContainerRunning, `${name} is ${info.status}`, {
          hint: `stop it first (godwit stop ${name}) or use rm -f`,
        });
      }
      await this.runc(['kill', name, 'KILL']);
      await this.waitStopped(name, 10_000);
    }
    await this.unlocking.get(name);
    await this.destroy(name);
    this.log.info('container removed', { name });
  }

  async prepareRestore(name: string, checkpointJson: Buffer): Promise<void> {
    validateName(name);
    const manifest = parseCheckpointManifest(
      JSON.parse(checkpointJson.toString('utf8')) as unknown,
      CHECKPOINT_FILES.manifest,
    );
    const t0 = this.clock.monotonic();
    // A first restore on this host builds the image: not while the container is stopped.
    await this.images.ensure(manifest.spec.image);
    const net = manifest.spec.network;
    if (!net || !this.network) return;
    await this.network.attach(this.netKey(name), net, { lock: restoreLock(manifest), prestage: true });
    this.log.info('restore prepared: service network attached', {
      name,
      ms: Math.round(this.clock.monotonic() - t0),
    });
  }

  async prepareImage(image: string): Promise<void> {
    const t0 = this.clock.monotonic();
    await this.images.ensure(image);
    this.log.info('restore prepared: image ready', { image, ms: Math.round(this.clock.monotonic() - t0) });
  }

  async prepareNetwork(name: string, net: ContainerNetwork, opts: { locked: boolean }): Promise<void> {
    validateName(name);
    if (!this.network) return;
    const t0 = this.clock.monotonic();
    await this.network.attach(this.netKey(name), net, {
      ...(opts.locked ? { lock: this.linkLock() ? 'link' : 'criu' } : {}),
      build: true,
    });
    this.log.info('restore prepared: service network built', {
      name,
      ms: Math.round(this.clock.monotonic() - t0),
    });
  }

  async cancelRestore(name: string): Promise<void> {
    validateName(name);
    if (await pathExists(this.state.containerDir(name))) return; // a restore made it: not ours to undo
    await this.network?.detach(this.netKey(name));
  }

  lazyFill(name: string): Promise<{ ok: boolean; fillMs: number }> | undefined {
    return this.lazyFills.get(name);
  }

  async logs(name: string): Promise<string> {
    await this.readRecord(name);
    try {
      return await readFile(this.state.outputLog(name), 'utf8');
    } catch {
      return '';
    }
  }

  async checkpoint(name: string, opts: CheckpointOptions): Promise<CheckpointResult> {
    return this.checkpointAs(name, opts, false);
  }

  /** `frozenOk`: the container may already be frozen (paused) by godwit, as a held dump leaves it. */
  private async checkpointAs(
    name: string,
    opts: CheckpointOptions,
    frozenOk: boolean,
  ): Promise<CheckpointResult> {
    const record = await this.readRecord(name);
    if (frozenOk) {
      const info = await this.inspect(name);
      if (info.status !== ContainerStatus.Running && info.status !== ContainerStatus.Paused) {
        throw new FailedPreconditionError(
          ErrorCode.ContainerNotRunning,
          `${name} is ${info.status}, not running`,
        );
      }
    } else await this.requireRunning(name);
    await this.restoreSettled(name);
    const dir = resolve(opts.dir);
    const createdDir = await prepareEmptyDir(dir);
    const criuDir = join(dir, CHECKPOINT_FILES.criuDir);
    const workDir = opts.workDir ? resolve(opts.workDir) : join(dir, CHECKPOINT_FILES.workDir);
    await mkdir(criuDir, { recursive: true });
    await mkdir(workDir, { recursive: true });

    const args = ['checkpoint', '--image-path', criuDir, '--work-path', workDir];
    if (opts.leaveRunning) args.push('--leave-running');
    const tcpEstablished = opts.tcpEstablished ?? record.spec.network !== undefined;
    if (tcpEstablished) args.push('--tcp-established');
    if (opts.lazyPages) args.push('--lazy-pages');
    if (opts.pageServer) args.push('--page-server', `${opts.pageServer.address}:${opts.pageServer.port}`);
    args.push(name);
    const net = record.spec.network;
    const linkLock = tcpEstablished && net !== undefined && this.linkLock();
    const lock = linkLock ? await this.dumpLinkLock(name, workDir) : undefined;

    const ignoreCgroups = !(await cgroupHasChildren(cgroupsPathFor(this.state.hostId, name)));
    await writeFile(
      this.state.criuConfig(name),
      criuConfigText({
        skipInFlight: opts.skipInFlight ?? true,
        skipNetworkLock: linkLock,
        ignoreCgroups,
        ...(lock?.script !== undefined ? { actionScript: lock.script } : {}),
      }),
    );
    const started = this.clock.monotonic();
    // Frozen here, CRIU skips its 100 ms freezer poll (see freezer.ts). Not with --leave-running:
    // CRIU leaves a cgroup it found frozen frozen.
    const frozen = opts.leaveRunning
      ? undefined
      : await freezeCgroup(cgroupsPathFor(this.state.hostId, name));
    // The `link` lock: cut off from before CRIU takes the connections until a restore (or until
    // this dump has failed or left the container running).
    const reconnect = async (): Promise<void> => {
      if (linkLock && net) await this.network?.reconnect?.(this.netKey(name), net);
    };
    const rootfs = frozen ? this.archiveRootfs(name, dir) : undefined;
    rootfs?.catch(() => undefined);
    /**
     * No checkpoint after all: the container keeps running (its network back first) — unless it
     * came frozen (a held dump being kept): then it stays frozen, for its state is the only copy
     * and another may run elsewhere. What this dump wrote goes.
     */
    const undo = async (): Promise<void> => {
      await lock?.settle();
      if (!frozenOk) {
        await reconnect().catch((err: unknown) =>
          this.log.warn('reconnecting after a failed dump failed', { name, err: errorMessage(err) }),
        );
        await frozen?.thaw();
      }
      await rootfs?.catch(() => undefined);
      if (createdDir) await rm(dir, { recursive: true, force: true });
      else {
        await rm(criuDir, { recursive: true, force: true });
        await rm(join(dir, CHECKPOINT_FILES.rootfsDiff), { force: true });
      }
    };
    if (lock) {
      lock.start(frozen !== undefined, false);
      const err = lock.gated ? undefined : await lock.settle();
      if (err !== undefined) {
        await undo();
        throw err;
      }
    }
    const res = await this.runc(args);
    const durationMs = this.clock.monotonic() - started;
    const lockError = await lock?.settle();
    if (res.code === 0 && lockError !== undefined) {
      // CRIU took the sockets without asking the gate (it runs `network-lock` for every dump of
      // a container with its own network namespace): the dump stands, unlocked.
      this.log.warn('the link lock failed after the dump', { name, err: errorMessage(lockError) });
    }
    if (res.code === 0 && opts.leaveRunning) await reconnect();
    const dumpLog = await readFile(join(workDir, 'dump.log'), 'utf8').catch(() => '');
    if (res.code !== 0) {
      await undo();
      const kept = await this.keepLog(`checkpoint-${name}`, dumpLog);
      const why = lockError !== undefined ? `: the link lock failed (${errorMessage(lockError)})` : '';
      throw new UnavailableError(ErrorCode.CriuDumpFailed, `checkpoint of ${name} failed${why}`, {
        details: dumpLog ? decisiveLines(dumpLog) : runcErrorLines(res.stderr),
        hint: kept ? `full CRIU log: ${kept}` : undefined,
      });
    }

    // With the tasks dumped (and, unless left running, gone), the root filesystem changes are stable.
    await this.writeCheckpointFiles(name, record, dir, {
      ignoreCgroups,
      leftRunning: Boolean(opts.leaveRunning),
      tcpEstablished,
      networkLock: linkLock ? 'link' : 'criu',
      lazyPages: Boolean(opts.lazyPages),
      ...(rootfs ? { rootfs } : {}),
      dumpLog,
    });
    if (!opts.leaveRunning) {
      await writeJsonAtomic(this.state.containerRecord(name), { ...record, checkpointedTo: dir });
      // The processes are gone: free the network identity so that a restore (here or on
      // another host) can take it. A rollback restores it from the checkpoint like any restore.
      if (record.spec.network && this.network) await this.network.detach(this.netKey(name));
    }
    const [imageBytes, pagesBytes] = await Promise.all([treeBytes(dir), pagesImageBytes(criuDir)]);
    this.log.info('container checkpointed', { name, dir, durationMs, imageBytes, pagesBytes });
    return { name, dir, durationMs, imageBytes, pagesBytes, leftRunning: Boolean(opts.leaveRunning) };
  }

  async checkpointHeld(name: string, opts: { dir: string }): Promise<HeldCheckpoint> {
    const record = await this.readRecord(name);
    const info = await this.requireRunning(name);
    await this.restoreSettled(name);
    const dir = resolve(opts.dir);
    const createdDir = await prepareEmptyDir(dir);
    const criuDir = join(dir, CHECKPOINT_FILES.criuDir);
    const workDir = join(dir, CHECKPOINT_FILES.workDir);
    await mkdir(criuDir, { recursive: true });
    await mkdir(workDir, { recursive: true });
    const processes = new Map<number, number>();
    if (info.pid !== undefined)
      for (const p of await containerProcesses(info.pid)) processes.set(p.vpid, p.pid);
    const port = await freeLoopbackPort();
    const net = record.spec.network;
    const tcpEstablished = net !== undefined;
    const linkLock = tcpEstablished && this.linkLock();
    const lock = linkLock ? await this.dumpLinkLock(name, workDir) : undefined;
    const args = ['checkpoint', '--image-path', criuDir, '--work-path', workDir];
    if (tcpEstablished) args.push('--tcp-established');
    // CRIU writes everything but the lazy memory, then serves that memory on this port until its
    // one client says how the dump ends; the processes stay frozen (and readable) meanwhile.
    args.push('--lazy-pages', '--page-server', `127.0.0.1:${port}`, name);
    const ignoreCgroups = !(await cgroupHasChildren(cgroupsPathFor(this.state.hostId, name)));
    await writeFile(
      this.state.criuConfig(name),
      criuConfigText({
        skipInFlight: true,
        skipNetworkLock: linkLock,
        ignoreCgroups,
        ...(lock?.script !== undefined ? { actionScript: lock.script } : {}),
      }),
    );
    const started = this.clock.monotonic();
    const frozen = await freezeCgroup(cgroupsPathFor(this.state.hostId, name));
    const rootfs = this.archiveRootfs(name, dir);
    rootfs.catch(() => undefined);
    // With the `link` lock the namespace is cut off (and its address let go) before the dump.
    const isolatedEarly = linkLock && this.network?.isolate !== undefined;
    /** No held checkpoint after all: the container runs again, with its address back. */
    const undo = async (): Promise<void> => {
      await lock?.settle();
      if (linkLock && net) {
        const key = this.netKey(name);
        await (isolatedEarly ? this.network?.rejoin?.(key, net) : this.network?.reconnect?.(key, net))?.catch(
          (err: unknown) =>
            this.log.warn('reconnecting after a failed dump failed', { name, err: errorMessage(err) }),
        );
      }
      await frozen?.thaw();
      await rootfs.catch(() => undefined);
      if (createdDir) await rm(dir, { recursive: true, force: true });
    };
    if (lock) {
      lock.start(true, isolatedEarly);
      const err = lock.gated ? undefined : await lock.settle();
      if (err !== undefined) {
        await undo();
        throw err;
      }
    }
    let exited = false;
    const run = this.runc(args, HELD_CHECKPOINT_TIMEOUT_MS).finally(() => {
      exited = true;
    });
    run.catch(() => undefined);
    const failed = async (why: string): Promise<never> => {
      const dumpLog = await readFile(join(workDir, 'dump.log'), 'utf8').catch(() => '');
      const r = await run.catch((err: unknown) => ({ code: -1, stderr: errorMessage(err), stdout: '' }));
      const lockError = await lock?.settle();
      await undo();
      const kept = await this.keepLog(`checkpoint-${name}`, dumpLog);
      throw new UnavailableError(
        ErrorCode.CriuDumpFailed,
        `checkpoint of ${name} (memory held) failed: ${
          lockError !== undefined ? `the link lock failed (${errorMessage(lockError)})` : why
        }`,
        {
          details: dumpLog ? decisiveLines(dumpLog) : runcErrorLines(r.stderr),
          hint: kept ? `full CRIU log: ${kept}` : undefined,
        },
      );
    };
    // Ready once CRIU's lazy page server accepts us (it takes exactly one client: this one).
    let sock: Socket | undefined;
    for (;;) {
      if (exited) return failed('CRIU ended before it was ready');
      sock = await connectOnce('127.0.0.1', port);
      if (sock) break;
      if (this.clock.monotonic() - started > HELD_READY_TIMEOUT_MS)
        return failed('CRIU did not become ready');
      await this.clock.sleep(2);
    }
    const durationMs = this.clock.monotonic() - started;
    const ctl = sock;
    ctl.on('error', () => undefined);
    /** Anything but PS_IOV_CLOSE fails CRIU's lazy transfer: it lets the processes go, alive. */
    const failTransfer = async (): Promise<void> => {
      ctl.end(encodePageServerIov({ cmd: 0xffff, nrPages: 0, vaddr: 0, dstId: 0 }));
      await run.catch(() => undefined);
    };
    // CRIU is past its network-lock step: the gate opened, so the lock holds (an error here means
    // CRIU never asked, and the lock failed anyway).
    if ((await lock?.settle()) !== undefined) {
      await failTransfer();
      return failed('the link lock failed');
    }
    // Frozen, the root filesystem changes are stable. Meanwhile (both are on the stopped path),
    // the namespace is cut off until resumed: another host may now take the container's address.
    await Promise.all([
      this.writeCheckpointFiles(name, record, dir, {
        ignoreCgroups,
        leftRunning: false,
        tcpEstablished,
        networkLock: linkLock ? 'link' : 'criu',
        rootfs,
        lazyPages: true,
        dumpLog: await readFile(join(workDir, 'dump.log'), 'utf8').catch(() => ''),
      }),
      net && this.network?.isolate && !isolatedEarly ? this.network.isolate(this.netKey(name)) : undefined,
    ]);
    const filesMs = Math.round(this.clock.monotonic() - started - durationMs);
    const [imageBytes, pagesBytes] = await Promise.all([treeBytes(dir), pagesImageBytes(criuDir)]);
    this.log.info('container checkpointed, memory held', {
      name,
      dir,
      durationMs,
      filesMs,
      bytesMs: Math.round(this.clock.monotonic() - started - durationMs) - filesMs,
      imageBytes,
      port,
    });
    const result: CheckpointResult = { name, dir, durationMs, imageBytes, pagesBytes, leftRunning: false };
    let ended = false;
    const once = (): void => {
      if (ended)
        throw new FailedPreconditionError(ErrorCode.InvalidState, `the held checkpoint of ${name} has ended`);
      ended = true;
    };
    return {
      result,
      processes,
      release: async () => {
        once();
        // PS_IOV_CLOSE: the lazy transfer is over; CRIU answers, then waits for us to hang up.
        // (A CRIU that ended already, its dump failed, answers nothing: runc's result says so.)
        if (!exited && !ctl.destroyed) {
          await new Promise<void>((res) => {
            ctl.once('data', () => res());
            ctl.once('close', () => res());
            void run.finally(() => res());
            ctl.write(encodePageServerIov({ cmd: PsCmd.Close, nrPages: 0, vaddr: 0, dstId: 0 }));
          });
        }
        ctl.end();
        const r = await run;
        if (r.code !== 0) this.log.warn('held checkpoint: runc did not end cleanly', { name, code: r.code });
        await writeJsonAtomic(this.state.containerRecord(name), { ...record, checkpointedTo: dir });
        if (net && this.network) await this.network.detach(this.netKey(name));
        this.log.info('held checkpoint released', { name });
      },
      keep: async (keepDir: string) => {
        once();
        // Fail the lazy transfer (the processes stay frozen by the cgroup), then dump them fully:
        // they never run in between, and nothing of them is lost.
        await failTransfer();
        await rm(dir, { recursive: true, force: true });
        const cp = await this.checkpointAs(name, { dir: keepDir }, true);
        this.log.info('held checkpoint kept as a full checkpoint', { name, dir: keepDir });
        return cp;
      },
      resume: async () => {
        once();
        await failTransfer();
        await frozen?.thaw();
        if (net && this.network?.rejoin) await this.network.rejoin(this.netKey(name), net);
        if (createdDir) await rm(dir, { recursive: true, force: true });
        this.log.info('held checkpoint abandoned: container resumed', { name });
      },
    };
  }

  async restore(opts: RestoreOptions): Promise<RestoreResult> {
    validateName(opts.name);
    const t0 = this.clock.monotonic();
    const lap: Record<string, number> = {};
    const mark = (k: string): void => void (lap[k] = Math.round(this.clock.monotonic() - t0));
    const dir = resolve(opts.dir);
    const manifest = await readCheckpoint(dir);
    const image = await this.images.ensure(manifest.spec.image);
    if (image.id !== manifest.imageId) {
      this.log.warn('restoring onto a different image build', { want: manifest.imageId, have: image.id });
    }
    const spec: RunSpec = { ...manifest.spec, name: opts.name };
    if (opts.netnsPath !== undefined) spec.netnsPath = opts.netnsPath;
    if (spec.network && opts.netnsPath === undefined && !this.network) {
      throw new FailedPreconditionError(
        ErrorCode.NoServiceNetwork,
        `the checkpoint has service address ${spec.network.ip}, but this host has no service network`,
        {
          hint: 'restore through an agent of the testbed (godwit --host HOST restore …)',
        },
      );
    }
    await this.claimName(opts.name);
    const record: ContainerRecord = {
      version: 1,
      spec,
      imageId: image.id,
      lowerDir: image.rootfs,
      createdAt: new Date(this.clock.now()).toISOString(),
      restoredFrom: dir,
    };
    const workDir = opts.workDir
      ? resolve(opts.workDir)
      : join(this.state.containerDir(opts.name), 'restore-work');
    let unlockLink: ContainerNetwork | undefined;
    let fill: { done: Promise<{ ok: boolean; fillMs: number }> } | undefined;
    /** The lazy-pages daemon, started at once: it comes up (~15–30 ms) while the rest is made. */
    let daemon: Promise<typeof fill> | undefined;
    let runcStarted = false;
    try {
      if (opts.lazyPages) {
        await mkdir(workDir, { recursive: true });
        daemon = this.startLazyPages(
          opts.name,
          join(dir, CHECKPOINT_FILES.criuDir),
          workDir,
          opts.lazyPageServer,
        );
        daemon.catch(() => undefined);
      }
      if (spec.network && this.network && opts.netnsPath === undefined) {
        // Locked like the source's namespace after the dump, so no RST escapes before CRIU
        // has repaired the connections (CRIU removes its lock when the restore is done; the
        // `link` lock ends below, once runc has returned).
        const lock = restoreLock(manifest, opts.tcpEstablished);
        if (lock === 'link' && !this.canLockLink()) {
          throw new FailedPreconditionError(
            ErrorCode.InvalidState,
            `${opts.name}'s checkpoint was dumped with its network locked at the link, which this host's network cannot do`,
            { hint: 'restore it on a host of the same service network' },
          );
        }
        record.spec.netnsPath = await this.network.attach(this.netKey(opts.name), spec.network, {
          ...(lock ? { lock } : {}),
          ...(opts.reclaimNetwork ? { reclaim: true } : {}),
        });
        if (lock === 'link') unlockLink = spec.network;
      }
      mark('networkMs');
      await mkdir(this.state.upperDir(opts.name), { recursive: true });
      if (manifest.hasRootfsDiff) {
        await runChecked([
          'tar',
          '--xattrs',
          '--xattrs-include=trusted.*',
          '-C',
          this.state.upperDir(opts.name),
          '-xf',
          join(dir, CHECKPOINT_FILES.rootfsDiff),
        ]);
      }
      mark('rootfsMs');
      await this.prepareBundle(record);
      // Dumped without cgroups: restored without. (Restored in CRIU's default mode, the next dump
      // found a process of that restore still in the container's cgroup and failed: "Unseizable
      // non-zombie", in the 20 back-and-forth moves of test/integration/hybrid-migration.)
      if (manifest.cgroups === 'ignored') {
        await writeFile(
          this.state.criuConfig(opts.name),
          criuConfigText({ skipInFlight: false, ignoreCgroups: true }),
        );
      }
      mark('bundleMs');
      await writeJsonAtomic(this.state.containerRecord(opts.name), record);
      await mkdir(workDir, { recursive: true });
      const args = [
        'restore',
        '-d',
        '--image-path',
        join(dir, CHECKPOINT_FILES.criuDir),
        '--work-path',
        workDir,
        '--pid-file',
        join(workDir, RESTORE_PID_FILE),
      ];
      if (opts.tcpEstablished ?? manifest.tcpEstablished) args.push('--tcp-established');
      if (opts.lazyPages) args.push('--lazy-pages');
      args.push('--bundle', this.state.bundleDir(opts.name), opts.name);

      const started = this.clock.monotonic();
      // Lazy: a CRIU lazy-pages daemon serves the memory from the checkpoint's own images after
      // the processes run again (userfaultfd); the restore returns without copying it.
      fill = await daemon;
      mark('lazyDaemonMs');
      runcStarted = true;
      const res = await this.startWithShim(opts.name, args);
      mark('runcMs');
      // The `link` lock ends once CRIU has repaired the connections (runc has returned). Packets
      // already pass (the namespace is on the network): nothing waits for it but the next dump.
      if (res.ok && unlockLink && this.network?.reconnect) {
        const name = opts.name;
        const unlocked = this.network
          .reconnect(this.netKey(name), unlockLink)
          .catch((err: unknown) =>
            this.log.warn('unlocking the network failed', { name, err: errorMessage(err) }),
          )
          .finally(() => {
            if (this.unlocking.get(name) === unlocked) this.unlocking.delete(name);
          });
        this.unlocking.set(name, unlocked);
      }
      if (fill) {
        if (res.ok) this.lazyFills.set(opts.name, fill.done);
        else await fill.done;
      }
      const durationMs = this.clock.monotonic() - started;
      if (!res.ok) {
        const logPath = criuLogPathFromRunc(res.output) ?? join(workDir, 'restore.log');
        const restoreLog = await readFile(logPath, 'utf8').catch(() => '');
        const kept = await this.keepLog(`restore-${opts.name}`, restoreLog || res.output);
        throw new UnavailableError(
          ErrorCode.CriuRestoreFailed,
          `restore of ${opts.name} from ${dir} failed`,
          {
            details: restoreLog ? decisiveLines(restoreLog) : runcErrorLines(res.output),
            hint: kept ? `full log: ${kept}` : undefined,
          },
        );
      }
      // The pid runc wrote, alive: running (a `runc state` would cost another runc start here).
      let pid = await readPidFile(join(workDir, RESTORE_PID_FILE));
      if (pid === undefined || !(await pathExists(`/proc/${pid}`))) {
        const info = await this.inspect(opts.name);
        if (info.status !== ContainerStatus.Running || info.pid === undefined) {
          throw new UnavailableError(
            ErrorCode.CriuRestoreFailed,
            `${opts.name} is ${info.status} right after restore`,
          );
        }
        pid = info.pid;
      }
      this.log.info('container restored', { name: opts.name, from: dir, durationMs, ...lap });
      return { name: opts.name, pid, durationMs };
    } catch (err) {
      // A daemon no restore came to: a connection that says nothing ends it.
      const d = fill ?? (await daemon?.catch(() => undefined));
      if (d && !runcStarted) {
        await new Promise<void>((res) => {
          const sk = connect(join(workDir, 'lazy-pages.socket'), () => sk.end());
          sk.on('close', () => res());
          sk.on('error', () => res());
        });
        await d.done;
      }
      await this.destroy(opts.name);
      throw err;
    }
  }

  // ---- internals ----

  /**
   * Whether this host locks a dumped container's network at its link (core/network.ts): when its
   * network can, unless GODWIT_NETWORK_LOCK=criu asks for CRIU's iptables lock.
   */
  private linkLock(): boolean {
    return this.canLockLink() && process.env['GODWIT_NETWORK_LOCK'] !== 'criu';
  }

  /** Whether this host's network can lock at the link (and so restore a checkpoint that did). */
  private canLockLink(): boolean {
    return this.network?.disconnect !== undefined && this.network.reconnect !== undefined;
  }

  /**
   * The `link` lock of one dump in `workDir`: `script` (a gate, link-lock-gate.ts) goes in CRIU's
   * configuration, `start` begins the lock at the freeze (lockLink), and CRIU waits at its
   * network-lock step until the lock holds (the gate opens) or fails (the gate fails the dump).
   * Without a gate (`gated` false) the dump waits for `settle` before it starts runc. `settle`
   * closes the gate and resolves with the lock's error, or undefined; call it only once CRIU is
   * past the gate (runc has returned or the held dump is ready) or was never started. Idempotent.
   */
  private async dumpLinkLock(name: string, workDir: string): Promise<DumpLinkLock> {
    const gate = await createLinkLockGate(workDir);
    let locking: Promise<void> | undefined;
    return {
      script: gate?.script,
      gated: gate !== undefined,
      start: (frozen, isolate) => {
        locking = this.lockLink(name, frozen, isolate).then(
          () => gate?.open(),
          async (err: unknown) => {
            await gate?.fail();
            throw err;
          },
        );
        locking.catch(() => undefined);
      },
      settle: async () => {
        await gate?.close();
        return locking?.then(
          () => undefined,
          (err: unknown) => err,
        );
      },
    };
  }

  /**
   * The `link` lock at a dump, before CRIU takes the connections. A container just frozen first
   * gets LINK_LOCK_GRACE_MS: requests already on their way to it still land in its sockets (its
   * kernel acknowledges them), so their clients are answered as soon as it runs again instead of
   * at their next retransmission (≥ 200 ms later, then doubling). `isolate`: its address is let go
   * too (a held dump: another host may take it; `rejoin` takes it back).
   */
  private async lockLink(name: string, frozen: boolean, isolate = false): Promise<void> {
    if (frozen) await this.clock.sleep(linkLockGraceMs());
    if (isolate) await this.network?.isolate?.(this.netKey(name));
    else await this.network?.disconnect?.(this.netKey(name));
  }

  /**
   * Waits until the restore of `name` is entirely over: its lazily restored memory filled and its
   * `link` lock ended. A container is not checkpointed again before.
   */
  private async restoreSettled(name: string): Promise<void> {
    await this.lazyFills.get(name);
    this.lazyFills.delete(name);
    await this.unlocking.get(name);
  }

  /** Key of a container's network namespace: unique per host and name. */
  private netKey(name: string): string {
    return `${this.state.hostId.slice(0, 6)}-${name}`;
  }

  /** Creates the container directory exclusively; the name is ours once this returns. */
  private async claimName(name: string): Promise<void> {
    try {
      await mkdir(this.state.containerDir(name), { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new AlreadyExistsError(ErrorCode.ContainerExists, `a container named ${name} already exists`, {
          hint: `choose another name or remove it: godwit rm -f ${name}`,
        });
      }
      throw err;
    }
  }

  /** Mounts the overlay root filesystem and writes config.json. */
  private async prepareBundle(record: ContainerRecord): Promise<void> {
    const name = record.spec.name;
    const rootfs = this.state.rootfsMount(name);
    await mkdir(this.state.upperDir(name), { recursive: true });
    await mkdir(this.state.overlayWorkDir(name), { recursive: true });
    await mkdir(rootfs, { recursive: true });
    if (!(await isMountPoint(rootfs))) {
      const opts = `lowerdir=${record.lowerDir},upperdir=${this.state.upperDir(name)},workdir=${this.state.overlayWorkDir(name)}`;
      await runChecked(['mount', '-t', 'overlay', 'overlay', '-o', opts, rootfs]);
    }
    // runc hands this file to CRIU on checkpoint and restore; `checkpoint` writes the options
    // that runc has no flag for (skip-in-flight). It must exist before runc reads the config.
    await writeFile(this.state.criuConfig(name), '', { flag: 'a' });
    const config = buildOciConfig(record.spec, {
      hostId: this.state.hostId,
      annotations: { 'org.criu.config': this.state.criuConfig(name) },
    });
    await writeFile(join(this.state.bundleDir(name), 'config.json'), JSON.stringify(config, null, 2));
  }

  /**
   * Starts `criu lazy-pages` on a checkpoint's images, its socket in `workDir` (where the lazy
   * restore looks for it). Resolves once the daemon listens, with a promise of its end (it exits
   * when every page is in place); throws when it does not come up.
   */
  private async startLazyPages(
    name: string,
    criuDir: string,
    workDir: string,
    pageServer?: { address: string; port: number },
  ): Promise<{ done: Promise<{ ok: boolean; fillMs: number }> }> {
    const socket = join(workDir, 'lazy-pages.socket');
    await rm(socket, { force: true });
    const t0 = this.clock.monotonic();
    let exitedEarly = false;
    const run = runCommand(
      this.tools.criu,
      [
        'lazy-pages',
        '--images-dir',
        criuDir,
        '--work-dir',
        workDir,
        '--log-file',
        'lazy-pages.log',
        '-v2',
        ...(pageServer
          ? ['--page-server', '--address', pageServer.address, '--port', String(pageServer.port)]
          : []),
      ],
      { timeoutMs: LAZY_FILL_TIMEOUT_MS },
    ).finally(() => {
      exitedEarly = true;
    });
    for (let waited = 0; !(await pathExists(socket)); waited++) {
      if (exitedEarly || waited > 3000) {
        const r = await run.catch((err: unknown) => ({ code: -1, stderr: errorMessage(err) }));
        throw new UnavailableError(ErrorCode.CriuRestoreFailed, `criu lazy-pages did not start for ${name}`, {
          details: [`exit ${r.code}`, ...lastLines(r.stderr, 3)],
          hint: `see ${join(workDir, 'lazy-pages.log')}`,
        });
      }
      await this.clock.sleep(1);
    }
    const done = run.then(
      (r) => {
        const fillMs = Math.round(this.clock.monotonic() - t0);
        if (r.code === 0) this.log.info('lazy pages filled', { name, fillMs });
        else
          this.log.warn('criu lazy-pages failed', {
            name,
            code: r.code,
            log: join(workDir, 'lazy-pages.log'),
          });
        return { ok: r.code === 0, fillMs };
      },
      (err: unknown) => {
        this.log.warn('criu lazy-pages failed', { name, err: errorMessage(err) });
        return { ok: false, fillMs: Math.round(this.clock.monotonic() - t0) };
      },
    );
    return { done };
  }

  /** Removes everything of a container: runc state, mount, directory. Never throws for what is already gone. */
  private async destroy(name: string): Promise<void> {
    await this.runc(['delete', '--force', name]).catch(() => undefined);
    // detach is idempotent and only touches this container's namespace and lease.
    await this.network
      ?.detach(this.netKey(name))
      .catch((err: unknown) => this.log.warn('network detach failed', { name, err: errorMessage(err) }));
    const rootfs = this.state.rootfsMount(name);
    if (await isMountPoint(rootfs)) {
      const res = await runCommand('umount', [rootfs]);
      if (res.code !== 0) await runCommand('umount', ['-l', rootfs]);
    }
    // The shim may still be writing its last log lines here as the container dies: retried
    // on ENOTEMPTY (seen once in eight create/checkpoint/restore/remove cycles).
    await rm(this.state.containerDir(name), { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  }

  private async readRecord(name: string): Promise<ContainerRecord> {
    validateName(name);
    const path = this.state.containerRecord(name);
    const raw = await readJsonIfExists(path);
    if (raw === undefined) {
      throw new NotFoundError(ErrorCode.ContainerNotFound, `no container named ${name}`, {
        hint: 'godwit ps lists the containers of this host',
      });
    }
    return parseContainerRecord(raw, path);
  }

  private async requireRunning(name: string): Promise<ContainerInfo> {
    const info = await this.inspect(name);
    if (info.status !== ContainerStatus.Running) {
      throw new FailedPreconditionError(
        ErrorCode.ContainerNotRunning,
        `${name} is ${info.status}, not running`,
      );
    }
    return info;
  }

  private async runcState(name: string): Promise<{ status: string; pid: number } | undefined> {
    const res = await this.runc(['state', name]);
    if (res.code !== 0) return undefined;
    try {
      const st = JSON.parse(res.stdout) as { status?: unknown; pid?: unknown };
      if (typeof st.status !== 'string') return undefined;
      return { status: st.status, pid: typeof st.pid === 'number' ? st.pid : 0 };
    } catch {
      throw new InternalError(ErrorCode.Internal, `runc state ${name} printed invalid JSON`);
    }
  }

  private async toInfo(
    record: ContainerRecord,
    st: { status: string; pid: number } | undefined,
  ): Promise<ContainerInfo> {
    const name = record.spec.name;
    let status: ContainerStatus;
    if (st) status = statusFromRunc(st.status);
    else if (record.checkpointedTo) status = ContainerStatus.Checkpointed;
    else status = ContainerStatus.Stopped;
    const info: ContainerInfo = {
      name,
      image: record.spec.image,
      args: record.spec.args,
      status,
      createdAt: record.createdAt,
    };
    if (st && isLive(status) && st.pid > 0) info.pid = st.pid;
    if (!isLive(status)) {
      const exit = await readFile(this.state.exitFile(name), 'utf8').catch(() => undefined);
      if (exit !== undefined) info.exit = exit.trim();
    }
    if (record.restoredFrom) info.restoredFrom = record.restoredFrom;
    if (record.checkpointedTo) info.checkpointedTo = record.checkpointedTo;
    if (record.spec.network) info.network = record.spec.network;
    return info;
  }

  private async waitStopped(name: string, timeoutMs: number): Promise<boolean> {
    const deadline = this.clock.monotonic() + timeoutMs;
    while (this.clock.monotonic() < deadline) {
      const st = await this.runcState(name);
      if (!st || !isLive(statusFromRunc(st.status))) return true;
      await this.clock.sleep(50);
    }
    return false;
  }

  private runc(args: readonly string[], timeoutMs = RUNC_TIMEOUT_MS): Promise<CommandResult> {
    return runCommand(this.tools.runc, ['--root', this.state.runcRoot, '--criu', this.runcCriu, ...args], {
      timeoutMs,
    });
  }

  /**
   * Archives the container's root filesystem changes into `dir` (rootfs.tar). Stable once its
   * processes are frozen: a frozen container's archive is made while CRIU dumps it, off the
   * stopped path's critical chain.
   */
  private async archiveRootfs(name: string, dir: string): Promise<void> {
    await runChecked([
      'tar',
      '--xattrs',
      '--xattrs-include=trusted.*',
      '-C',
      this.state.upperDir(name),
      '-cf',
      join(dir, CHECKPOINT_FILES.rootfsDiff),
      '.',
    ]);
  }

  /**
   * Writes what a checkpoint holds besides CRIU's images: the root filesystem changes (stable
   * once the tasks are dumped or frozen) and `checkpoint.json`, with the CRIU version `dumpLog`
   * names.
   */
  private async writeCheckpointFiles(
    name: string,
    record: ContainerRecord,
    dir: string,
    o: {
      leftRunning: boolean;
      tcpEstablished: boolean;
      networkLock: NetworkLock;
      lazyPages: boolean;
      dumpLog: string;
      /** CRIU left cgroups alone (criuConfigText `ignoreCgroups`). */
      ignoreCgroups: boolean;
      /** The root filesystem archive, begun earlier (`archiveRootfs`, while CRIU dumped). */
      rootfs?: Promise<void>;
    },
  ): Promise<void> {
    await (o.rootfs ?? this.archiveRootfs(name, dir));
    const manifest: CheckpointManifest = {
      format: CHECKPOINT_FORMAT,
      spec: record.spec,
      imageId: record.imageId,
      sourceHostId: this.state.hostId,
      createdAt: new Date(this.clock.now()).toISOString(),
      leftRunning: o.leftRunning,
      tcpEstablished: o.tcpEstablished,
      ...(o.tcpEstablished ? { networkLock: o.networkLock } : {}),
      lazyPages: o.lazyPages,
      hasRootfsDiff: true,
      ...(o.ignoreCgroups ? { cgroups: 'ignored' as const } : {}),
    };
    const criuVersion = criuVersionFromLog(o.dumpLog);
    if (criuVersion) manifest.criuVersion = criuVersion;
    await writeJsonAtomic(join(dir, CHECKPOINT_FILES.manifest), manifest);
  }

  /**
   * Runs `runc ARGS` under a new godwit-shim, which stays behind as the container's parent.
   * Resolves once runc has returned; `output` is the container log (where runc's own
   * stderr went), for error reporting.
   */
  private async startWithShim(
    name: string,
    runcArgs: readonly string[],
  ): Promise<{ ok: boolean; output: string }> {
    await rm(this.state.exitFile(name), { force: true });
    const argv = [
      this.state.outputLog(name),
      this.state.exitFile(name),
      '--',
      this.tools.runc,
      '--root',
      this.state.runcRoot,
      '--criu',
      this.runcCriu,
      ...runcArgs,
    ];
    const helper = currentSpawner();
    const status = helper
      ? await helper
          .run({ file: this.tools.shim, args: argv, detached: true, timeoutMs: RUNC_TIMEOUT_MS })
          .then((r) => {
            if (r.spawnError) {
              throw new FailedPreconditionError(
                ErrorCode.ToolMissing,
                `cannot run ${this.tools.shim}: ${r.spawnError.message}`,
                { hint: 'run `godwit setup`' },
              );
            }
            if (r.stderr.trim()) this.log.warn('shim stderr', { name, stderr: r.stderr.trim() });
            return r.stdout.trim();
          })
      : await this.spawnShim(name, argv);
    const ok = /^ok 0$/m.test(status);
    const output = ok ? '' : await readFile(this.state.outputLog(name), 'utf8').catch(() => status);
    return { ok, output };
  }

  /** Starts the shim from this process; resolves with what it reported once it closed its stdout. */
  private spawnShim(name: string, argv: string[]): Promise<string> {
    return new Promise<string>((resolvePromise, reject) => {
      const child = spawn(this.tools.shim, argv, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      let out = '';
      let err = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), RUNC_TIMEOUT_MS);
      child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
      child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(
          new FailedPreconditionError(ErrorCode.ToolMissing, `cannot run ${this.tools.shim}: ${e.message}`, {
            hint: 'run `godwit setup`',
          }),
        );
      });
      // 'close' waits for the daemonised shim to close the stdout it reports on.
      child.on('close', () => {
        clearTimeout(timer);
        if (err.trim()) this.log.warn('shim stderr', { name, stderr: err.trim() });
        resolvePromise(out.trim());
      });
      child.unref();
    });
  }

  /** Copies a log to `<state>/logs/` so it survives the cleanup of a failed operation. */
  private async keepLog(prefix: string, text: string): Promise<string | undefined> {
    if (!text) return undefined;
    const path = join(
      this.state.logsDir,
      `${prefix}-${new Date(this.clock.now()).toISOString().replace(/[:.]/g, '-')}.log`,
    );
    try {
      await writeFile(path, text);
      return path;
    } catch {
      return undefined;
    }
  }
}

/**
 * The per-container CRIU configuration: one option per line, CRIU's format; it overrides what
 * runc asks for. `skipNetworkLock`: godwit locks the network itself (the `link` lock); CRIU
 * records that in its images, and its restore then leaves the network alone too.
 */
export function criuConfigText(opts: {
  skipInFlight: boolean;
  skipNetworkLock?: boolean;
  /** An action script (link-lock-gate.ts); a path without white space or quotes. */
  actionScript?: string;
  /** The container has no cgroups of its own (cgroupHasChildren): CRIU leaves cgroups alone. */
  ignoreCgroups?: boolean;
}): string {
  const lines: string[] = [];
  // An option with an optional argument takes it after `=` (with a space, CRIU drops it).
  if (opts.ignoreCgroups) lines.push('manage-cgroups=ignore');
  if (opts.skipInFlight) lines.push('skip-in-flight');
  if (opts.skipNetworkLock) lines.push('network-lock skip');
  if (opts.actionScript !== undefined) lines.push(`action-script ${opts.actionScript}`);
  return lines.map((l) => `${l}\n`).join('');
}

/** The pid in a pid file runc wrote, or undefined when it is missing or not a pid. */
async function readPidFile(path: string): Promise<number | undefined> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/**
 * The lock a restore of `manifest` must find its namespace in: none without TCP connections to
 * restore (`tcpEstablished` overrides the checkpoint's), else the one the dump used.
 */
function restoreLock(manifest: CheckpointManifest, tcpEstablished?: boolean): NetworkLock | undefined {
  return (tcpEstablished ?? manifest.tcpEstablished) ? (manifest.networkLock ?? 'criu') : undefined;
}

/** True for states in which processes exist. */
function isLive(status: ContainerStatus): boolean {
  return (
    status === ContainerStatus.Running ||
    status === ContainerStatus.Paused ||
    status === ContainerStatus.Created
  );
}

/** Reads and validates a checkpoint directory; NotFound / CheckpointCorrupt with the reason. */
export async function readCheckpoint(dir: string): Promise<CheckpointManifest> {
  try {
    const st = await stat(dir);
    if (!st.isDirectory()) throw new Error('not a directory');
  } catch {
    throw new NotFoundError(ErrorCode.CheckpointNotFound, `no checkpoint directory at ${dir}`);
  }
  const manifestPath = join(dir, CHECKPOINT_FILES.manifest);
  let manifest: CheckpointManifest;
  try {
    const raw = await readJsonIfExists(manifestPath);
    if (raw === undefined) throw new Error(`${CHECKPOINT_FILES.manifest} is missing`);
    manifest = parseCheckpointManifest(raw, CHECKPOINT_FILES.manifest);
  } catch (err) {
    throw new InvalidArgumentError(
      ErrorCode.CheckpointCorrupt,
      `${dir} is not a usable checkpoint: ${errorMessage(err)}`,
    );
  }
  for (const f of [
    join(CHECKPOINT_FILES.criuDir, 'inventory.img'),
    join(CHECKPOINT_FILES.criuDir, 'descriptors.json'),
  ]) {
    if (!(await fileExists(join(dir, f)))) {
      throw new InvalidArgumentError(
        ErrorCode.CheckpointCorrupt,
        `${dir} is not a usable checkpoint: ${f} is missing`,
      );
    }
  }
  if (manifest.hasRootfsDiff && !(await fileExists(join(dir, CHECKPOINT_FILES.rootfsDiff)))) {
    throw new InvalidArgumentError(
      ErrorCode.CheckpointCorrupt,
      `${dir} is not a usable checkpoint: ${CHECKPOINT_FILES.rootfsDiff} is missing`,
    );
  }
  return manifest;
}

/** Creates `dir`, or accepts it when empty. Returns whether it was created. */
async function prepareEmptyDir(dir: string): Promise<boolean> {
  try {
    const entries = await readdir(dir);
    if (entries.length > 0) {
      throw new AlreadyExistsError(ErrorCode.CheckpointExists, `${dir} is not empty`, {
        hint: 'checkpoint into a new or empty directory',
      });
    }
    return false;
  } catch (err) {
    if (err instanceof GodwitError) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(dir, { recursive: true });
    return true;
  }
}

async function runChecked(argv: readonly string[]): Promise<void> {
  const [file, ...args] = argv;
  if (file === undefined) throw new InternalError(ErrorCode.Internal, 'empty command');
  const res = await runCommand(file, args, { timeoutMs: RUNC_TIMEOUT_MS });
  if (res.code !== 0) {
    throw new UnavailableError(ErrorCode.CommandFailed, `${argv.join(' ')} failed (exit ${res.code})`, {
      details: lastLines(res.stderr || res.stdout, 5),
    });
  }
}

function runcFailure(what: string, res: CommandResult): UnavailableError {
  return new UnavailableError(ErrorCode.RuncFailed, `${what} failed (exit ${res.code})`, {
    details: runcErrorLines(res.stderr),
  });
}

/** The error messages in runc's output, one per line. */
function runcErrorLines(text: string): string[] {
  const lines = parseRuncStderr(text).filter(
    (l) => l.level === 'error' || l.level === 'fatal' || l.level === 'unknown',
  );
  return lines.slice(-5).map((l) => l.msg.split('\n')[0] ?? l.msg);
}

/** True when `path` is a mount point in this mount namespace. */
export async function isMountPoint(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const target = resolve(path);
  return info.split('\n').some((line) => unescapeMount(line.split(' ')[4] ?? '') === target);
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

async function fileExists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** Total bytes of the regular files below `dir`. */
export async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += await treeBytes(p);
    else if (e.isFile()) total += (await stat(p)).size;
  }
  return total;
}

async function pagesImageBytes(criuDir: string): Promise<number> {
  let total = 0;
  for (const f of await readdir(criuDir)) {
    if (/^pages-\d+\.img$/.test(f)) total += (await stat(join(criuDir, f))).size;
  }
  return total;
}
