import type { ContainerNetwork } from './network.js';

/**
 * The container runtime contract. Implementations (runc today) live in `src/runtime/`.
 * Names are godwit's container names; an implementation maps them to its own ids.
 */

/** Lifecycle states a container can be in, as godwit reports them. */
export enum ContainerStatus {
  Created = 'created',
  Running = 'running',
  Paused = 'paused',
  /** The process tree has exited (or was killed); the record remains until `remove`. */
  Stopped = 'stopped',
  /** Checkpointed without --leave-running: its state lives in a checkpoint directory. */
  Checkpointed = 'checkpointed',
}

/** What to run. Validated by the runtime: names are `[a-z0-9][a-z0-9_.-]{0,62}`. */
export interface RunSpec {
  name: string;
  /** Image name; `busybox` is built locally from Debian's busybox-static. */
  image: string;
  args: readonly string[];
  env: Readonly<Record<string, string>>;
  /** Memory limit in bytes, if any. */
  memoryLimitBytes?: number;
  /** Working directory inside the container; default `/`. */
  cwd?: string;
  /** Path of an existing network namespace to join (e.g. one made by the testbed); default a new one. */
  netnsPath?: string;
  /** Hostname inside the container; default the name. */
  hostname?: string;
  /**
   * Identity on the service network. The runtime's NetworkProvider creates the namespace
   * (and sets `netnsPath`); a checkpoint carries it, so a restore anywhere keeps IP and MAC.
   */
  network?: ContainerNetwork;
}

/** A container as the runtime sees it now. */
export interface ContainerInfo {
  name: string;
  image: string;
  args: readonly string[];
  status: ContainerStatus;
  /** Host PID of the container's init, when it runs. */
  pid?: number;
  /** ISO time the container was created (or restored). */
  createdAt: string;
  /** Exit code or `signal N` once it has stopped. */
  exit?: string;
  /** Set when the container was made by a restore. */
  restoredFrom?: string;
  /** Set when the container was checkpointed away. */
  checkpointedTo?: string;
  /** Its service-network identity, when it has one. */
  network?: ContainerNetwork;
}

/** Options of a checkpoint. All default to false / unset. */
export interface CheckpointOptions {
  /** Directory to write the checkpoint to; must not exist or be empty. */
  dir: string;
  /** Keep the container running after the dump. */
  leaveRunning?: boolean;
  /** Dump established TCP connections (they are repaired on restore). Default: true when the container has a service-network identity. */
  tcpEstablished?: boolean;
  /**
   * Drop connections the kernel accepted but the process has not (CRIU's skip-in-flight);
   * their clients see a reset or a timeout and retry. Default true: under load there are
   * always some, and without it CRIU refuses to dump ("In-flight connection").
   */
  skipInFlight?: boolean;
  /** Dump memory lazily: pages stay behind for a page server (post-copy). */
  lazyPages?: boolean;
  /** Send pages to a CRIU page server at this address instead of writing them. */
  pageServer?: { address: string; port: number };
  /** Where CRIU writes its logs; default `<dir>/work`. */
  workDir?: string;
}

/** Options of a restore. */
export interface RestoreOptions {
  /** Checkpoint directory written by `checkpoint`. */
  dir: string;
  /** Name of the restored container; must not exist. */
  name: string;
  /**
   * Restore memory lazily: the processes run before their pages are copied in, and a CRIU
   * lazy-pages daemon started by the runtime fills them from the checkpoint's own images
   * (userfaultfd). The container is not checkpointed again before the fill has ended.
   */
  lazyPages?: boolean;
  /**
   * With `lazyPages`: the daemon asks this page server (CRIU's page-server protocol) for the
   * lazy pages instead of reading them from the checkpoint's own images.
   */
  lazyPageServer?: { address: string; port: number };
  /** Network namespace to restore into; default the one recorded in the checkpoint, or a new one. */
  netnsPath?: string;
  /** Restore established TCP connections. */
  tcpEstablished?: boolean;
  /**
   * Take the checkpoint's service-network identity even when another namespace holds it (one a
   * destination prepared for a restore that never came, e.g. its agent died); that namespace is
   * removed. For a rollback before any restore was asked for.
   */
  reclaimNetwork?: boolean;
  workDir?: string;
}

/** Measured outcome of a checkpoint. */
export interface CheckpointResult {
  name: string;
  dir: string;
  /** Wall time of the runtime's checkpoint call, ms. */
  durationMs: number;
  /** Bytes written to `dir` (CRIU images plus root filesystem changes). */
  imageBytes: number;
  /** Bytes of memory pages CRIU wrote. */
  pagesBytes: number;
  leftRunning: boolean;
}

/**
 * A checkpoint whose memory stayed in the container's processes (CRIU `--lazy-pages`): CRIU
 * wrote everything but the lazily restorable memory and holds the processes frozen until told
 * how the dump ends. Exactly one of `release` and `resume` is called.
 */
export interface HeldCheckpoint {
  result: CheckpointResult;
  /** Virtual pid → host pid of the frozen processes: their memory holds what the images lack. */
  processes: ReadonlyMap<number, number>;
  /** Ends the dump: the processes are killed; the container is checkpointed (its memory is gone). */
  release(): Promise<void>;
  /** Abandons the dump: the processes run on where they are, network and all. */
  resume(): Promise<void>;
  /**
   * Abandons the lazy dump and writes a full checkpoint into `dir` instead, without letting the
   * processes run in between (their state is kept, as after a plain checkpoint). If that dump
   * fails, the container stays frozen (never resumed: another copy may run elsewhere).
   */
  keep(dir: string): Promise<CheckpointResult>;
}

/** Measured outcome of a restore. */
export interface RestoreResult {
  name: string;
  pid: number;
  /** Wall time from the restore call to the container running, ms. */
  durationMs: number;
}

/** Result of `exec`: exit code and captured output (when captured). */
export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs, inspects, checkpoints and restores containers on one host (one state directory). */
export interface ContainerRuntime {
  /** Creates and starts a container. Fails with ContainerExists if the name is taken. */
  run(spec: RunSpec): Promise<ContainerInfo>;
  /** One container; fails with ContainerNotFound. */
  inspect(name: string): Promise<ContainerInfo>;
  /** All containers of this host, sorted by name. */
  list(): Promise<ContainerInfo[]>;
  /** Runs a command inside a running container. `capture` collects output instead of inheriting stdio. */
  exec(name: string, args: readonly string[], opts?: { capture?: boolean }): Promise<ExecResult>;
  /** Sends a signal to the container's init; default SIGTERM. */
  kill(name: string, signal?: string): Promise<void>;
  /** Stops the container: SIGTERM, then SIGKILL after `timeoutMs`. Idempotent on a stopped container. */
  stop(name: string, opts?: { timeoutMs?: number }): Promise<void>;
  /** Removes a stopped container and everything it holds (mounts, bundle). `force` kills it first. */
  remove(name: string, opts?: { force?: boolean }): Promise<void>;
  /** Checkpoints a running container into `opts.dir`. On failure the container keeps running. */
  checkpoint(name: string, opts: CheckpointOptions): Promise<CheckpointResult>;
  /**
   * Optional: checkpoints a running container into `opts.dir` leaving its lazily restorable
   * memory in the frozen processes (a page source reads it from there). The service network
   * identity is let go at once (another host may take it); `resume` takes it back.
   */
  checkpointHeld?(name: string, opts: { dir: string }): Promise<HeldCheckpoint>;
  /** Restores a checkpoint as a new container. On failure nothing is left behind. */
  restore(opts: RestoreOptions): Promise<RestoreResult>;
  /**
   * Optional head start for a restore of checkpoint `checkpointJson` (its `checkpoint.json`) as
   * `name`, while the rest of the checkpoint is still arriving: sets up what does not depend on
   * the images (the service-network namespace, locked until the restore). Best effort: on failure
   * the restore does it again. `cancelRestore` undoes it when the restore will not come.
   */
  prepareRestore?(name: string, checkpointJson: Buffer): Promise<void>;
  /**
   * Optional, earlier still: builds what a restore of `name` with network identity `net` needs
   * that touches nothing shared (its namespace, locked, off the network), while the source still
   * runs with that address. `prepareRestore` or the restore then only connects it.
   */
  prepareNetwork?(name: string, net: ContainerNetwork, opts: { locked: boolean }): Promise<void>;
  /**
   * Optional, as early: makes image `image` ready here (built, or its id checked against its
   * inputs), which a first restore of it on this host would otherwise do while the container is
   * stopped. Best effort: the restore does it again.
   */
  prepareImage?(image: string): Promise<void>;
  cancelRestore?(name: string): Promise<void>;
  /**
   * For a container restored with lazy pages: settles when its lazy-pages daemon has ended
   * (`ok`: every page is in place), `fillMs` after the restore started. Undefined otherwise.
   */
  lazyFill?(name: string): Promise<{ ok: boolean; fillMs: number }> | undefined;
  /** Everything the container has written to stdout and stderr so far. */
  logs(name: string): Promise<string>;
}

/**
 * The layout of a checkpoint directory: the manifest godwit writes, CRIU's images, CRIU's work
 * directory (its logs; never moved to another host) and the root filesystem changes.
 */
export const CHECKPOINT_FILES = {
  manifest: 'checkpoint.json',
  criuDir: 'criu',
  workDir: 'work',
  rootfsDiff: 'rootfs.tar',
} as const;
