/**
 * Podman's own checkpoint/restore migration as a benchmark baseline, in the same testbed as
 * godwit's strategies. Podman has no notion of the testbed's hosts, so a PodmanBed gives it two
 * stores on this machine, store A standing for h1 and store B for h2 (each its own root, runroot
 * and tmpdir under the bed's directory), and runs the containers itself: they live on the
 * testbed's service network exactly like godwit's (a netns per container from ServiceNetwork, with
 * a leased IP and MAC; `podman run --network ns:…`), so the client namespace probes them alike.
 *
 * A move is what an operator does with Podman between two hosts: `podman container checkpoint
 * --tcp-established --export F --compress zstd` in A (the container stops), F over one plain TCP
 * connection from h1's address to h2's (inside their netns, so it crosses the shaped link), the
 * container's netns recreated with the same IP and MAC under CRIU's network lock, `podman
 * container restore --tcp-established --import F` in B.
 *
 * Podman keeps its defaults except what it needs to run here at all (all in PODMAN_CONTAINERS_CONF
 * and the environment of every podman command):
 *  - godwit's CRIU (≥ 4.2; the wrapper of the tools directory) first in PATH as `criu`: Debian 12's
 *    CRIU 3.17 fails on this kernel, and without one in PATH Podman says "checkpoint/restore
 *    requires at least CRIU 31100";
 *  - runc (crun refuses this machine's hybrid cgroups), cgroupfs, the events log to a file;
 *  - default ulimits within this machine's hard limits (Podman's defaults for root exceed them:
 *    runc then fails with "error setting rlimit type 7: operation not permitted");
 *  - file locks in each store's tmpdir instead of the one shared-memory segment every store on a
 *    machine shares: two stores on one machine stand for two hosts, and a store's first start
 *    frees every lock of that segment, the other store's included;
 *  - the image made from godwit's image rootfs with `podman import` into A and moved to B with
 *    `podman save` / `podman load` (no registry here);
 *  - the destination netns recreated locked (CRIU_LOCK_RULES), as godwit does: unlocked, the new
 *    namespace answers the client's retransmissions with RSTs before the restore (4 of 8 runs);
 *  - CRIU's skip-in-flight, through runc's documented CRIU configuration file (the container's
 *    `org.criu.config` annotation; Podman 4.3 has no flag for it; godwit's agents set it too):
 *    without it a dump fails ("inet: In-flight connection (l)") whenever a client's connection
 *    sits in the listener's accept queue, about one move in four under the probe.
 * Podman's own choices stay: zstd compression of the archive (its default), the container stopped
 * by the checkpoint and killed after the dump, no pre-copy, the archive written whole before it is
 * copied and copied whole before the restore starts.
 */
import { randomInt } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  AlreadyExistsError,
  ErrorCode,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  errorMessage,
  isGodwitError,
} from '../core/errors.js';
import type { ContainerNetwork } from '../core/network.js';
import type { ServiceNetworkInfo, TestbedHost } from '../core/testbed.js';
import { openLocalImages } from '../runtime/local-runtime.js';
import { StateDir } from '../runtime/state-dir.js';
import { runChecked, runCommand, which, type CommandResult } from '../system/exec.js';
import { loadTools, type Tools } from '../system/tools.js';
import { ServiceNetwork } from '../testbed/service-network.js';
import type { BaselineReport, ServiceHost } from './baseline.js';
import { errorLines } from '../criu/log.js';
import { BaselineSteps } from './baseline-steps.js';
import { streamOverLink } from './link-stream.js';

/** Oldest Podman major version whose checkpoint --export / restore --import this baseline uses. */
export const PODMAN_MIN_MAJOR = 4;

/** Longest an ordinary podman command (run, logs, exec, rm, import…) may take, ms. */
const PODMAN_TIMEOUT_MS = 120_000;
/** Longest a checkpoint or a restore may take (a few hundred MiB), ms. */
const CHECKPOINT_TIMEOUT_MS = 5 * 60_000;
/** Tries at a free service address when another process takes the one allocated meanwhile. */
const ATTACH_ATTEMPTS = 5;

/**
 * containers.conf of every store (see the module comment for why each line is there). The
 * ulimits are those of the recipe that was verified here (nofile 1024 like a login shell's soft
 * limit; nproc well below the machine's 96365).
 */
export const PODMAN_CONTAINERS_CONF = `[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
lock_type = "file"
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
`;

/**
 * Why Podman's path cannot run here, or undefined when it can: podman ≥ 4 installed, godwit's
 * tools (the CRIU wrapper) set up, root, and `podman info` working on a throwaway store with the
 * bed's settings (else the error podman printed).
 */
export async function podmanUnavailable(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'podman: the baseline runs as root (like the testbed)';
  if ((await which('podman')) === undefined) {
    return 'podman: not installed (apt-get install podman, or godwit setup)';
  }
  const version = await runCommand('podman', ['--version'], { timeoutMs: 30_000 }).catch((err: unknown) =>
    errorMessage(err),
  );
  if (typeof version === 'string') return `podman --version: ${version}`;
  const v = /version (\d+)\.(\d+)(?:\.(\d+))?/.exec(version.stdout);
  if (version.code !== 0 || !v) {
    return `podman --version failed: ${podmanError(version) || `exit status ${version.code}`}`;
  }
  if (Number(v[1]) < PODMAN_MIN_MAJOR) {
    return `podman ${v[0].slice('version '.length)}: version ${PODMAN_MIN_MAJOR} or later needed (checkpoint --export / restore --import with --tcp-established)`;
  }
  let tools: Tools;
  try {
    tools = await loadTools();
  } catch (err) {
    return `godwit's CRIU wrapper is not usable: ${errorMessage(err)} (run godwit setup)`;
  }
  const dir = await mkdtemp(join(tmpdir(), 'godwit-podman-check-'));
  try {
    const env = await writeConfig(dir, tools);
    const store = await PodmanStore.create('check', join(dir, 'store'), newTag(), env);
    try {
      const res = await store.run(['info'], 60_000);
      if (res.code !== 0) return `podman info failed: ${podmanError(res) || `exit status ${res.code}`}`;
      return undefined;
    } finally {
      await store.dispose();
    }
  } catch (err) {
    return `podman info failed: ${errorMessage(err)}`;
  } finally {
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** What openPodmanBed needs of the testbed: its name, two hosts and the service network. */
export interface PodmanBedOptions {
  testbed: {
    name: string;
    hosts: readonly [TestbedHost, TestbedHost] | readonly TestbedHost[];
    serviceNetwork: ServiceNetworkInfo;
  };
  /** The bed makes its own directory in here (stores, archives, the CRIU wrapper); close removes it. */
  workDir: string;
}

/** Fault injection for tests: fail on purpose right before that step of a move. */
export type PodmanFault = 'copy' | 'restore';

/** Two Podman stores standing for a testbed's h1 and h2, and Podman's migration between them. */
export interface PodmanBed {
  /** Store A "on h1" and store B "on h2": start / logs / exec / remove containers under podman. */
  readonly hosts: readonly [ServiceHost, ServiceHost];
  /**
   * Moves container `name` from store A to store B: checkpoint --export (tcp-established), the
   * archive over the shaped link h1 → h2 (plain TCP between the hosts' addresses inside their
   * netns), its netns recreated locked with the same IP and MAC, restore --import in B. Phases:
   * checkpoint, copy, restore (the netns included), then cleanup (A's record removed) or rollback.
   * Rolls back (restore in A) on a failure before B runs it: outcome 'rolled-back', with the
   * error. Throws, with the container still running in A, when the checkpoint fails; throws when
   * the rollback fails (the archive is kept; the error's hint names it).
   */
  migrate(name: string, opts?: { failBefore?: PodmanFault }): Promise<BaselineReport>;
  /** Removes every container, image and store of the bed, their namespaces and leases. Idempotent. */
  close(): Promise<void>;
}

/** Opens a bed on `opts.testbed` (h1 → store A, h2 → store B). Throws ToolMissing when podmanUnavailable says why. */
export async function openPodmanBed(opts: PodmanBedOptions): Promise<PodmanBed> {
  const why = await podmanUnavailable();
  if (why !== undefined) {
    throw new FailedPreconditionError(ErrorCode.ToolMissing, why, {
      hint: 'apt-get install podman, and run godwit setup',
    });
  }
  const [h1, h2] = opts.testbed.hosts;
  if (!h1 || !h2) {
    throw new InvalidArgumentError(ErrorCode.InvalidFlag, 'a podman bed needs a testbed with two hosts');
  }
  const tools = await loadTools();
  await mkdir(opts.workDir, { recursive: true });
  const dir = await mkdtemp(join(resolve(opts.workDir), 'podman-'));
  const tag = newTag();
  const stores: PodmanStore[] = [];
  try {
    const env = await writeConfig(dir, tools);
    const network = new ServiceNetwork(opts.testbed.name, opts.testbed.serviceNetwork);
    stores.push(await PodmanStore.create('A', join(dir, 'store-a'), tag, env));
    stores.push(await PodmanStore.create('B', join(dir, 'store-b'), tag, env));
    return new Bed(dir, tag, tools, network, [h1, h2], stores as [PodmanStore, PodmanStore]);
  } catch (err) {
    for (const s of stores) await s.dispose().catch(() => undefined);
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
}

// ---- the bed ----

/** A container the bed started: its service-network key and identity, and the store that runs it. */
interface BedContainer {
  key: string;
  net: ContainerNetwork;
  store: 0 | 1;
}

/** Names podman accepts that are also service-network keys. */
const CONTAINER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

class Bed implements PodmanBed {
  readonly hosts: readonly [ServiceHost, ServiceHost];
  private readonly containers = new Map<string, BedContainer>();
  /** Every service-network key this bed attached (close detaches them all). */
  private readonly keys = new Set<string>();
  /** Image name → its tag, present in both stores. */
  private readonly images = new Map<string, Promise<string>>();
  private closed = false;
  /** close() has removed everything. */
  private cleanedUp = false;

  constructor(
    private readonly dir: string,
    /** Unique per bed: prefix of its service-network keys (short: keys ≤ 40 keep readable netns names). */
    private readonly tag: string,
    private readonly tools: Tools,
    private readonly network: ServiceNetwork,
    /** h1 and h2: store A stands for the first, B for the second. */
    private readonly testbedHosts: readonly [TestbedHost, TestbedHost],
    private readonly stores: readonly [PodmanStore, PodmanStore],
  ) {
    this.hosts = [this.serviceHost(0), this.serviceHost(1)];
  }

  private serviceHost(i: 0 | 1): ServiceHost {
    return {
      run: (spec) => this.run(i, spec),
      logs: (name) => this.logs(i, name),
      exec: (name, args) => this.exec(i, name, args),
      remove: (name, o) => this.remove(i, name, o),
    };
  }

  private async run(
    i: 0 | 1,
    spec: { name: string; image: string; args: readonly string[]; env: Readonly<Record<string, string>> },
  ): Promise<{ network: { ip: string } }> {
    this.open();
    const { name } = spec;
    if (!CONTAINER_NAME.test(name)) {
      throw new InvalidArgumentError(
        ErrorCode.InvalidName,
        `invalid container name ${JSON.stringify(name)}`,
        {
          hint: 'use letters, digits, and . _ - (not first), up to 64 characters',
        },
      );
    }
    if (this.containers.has(name)) {
      throw new AlreadyExistsError(ErrorCode.ContainerExists, `podman: container ${name} exists in this bed`);
    }
    if (spec.args.length === 0) {
      throw new InvalidArgumentError(ErrorCode.InvalidFlag, `podman: ${name}: no command to run`);
    }
    const key = `${this.tag}-${name}`;
    // Claimed before anything slow, so that a second run of the name fails at once.
    const claim: BedContainer = { key, net: { ip: '', prefixLength: 0, mac: '' }, store: i };
    this.containers.set(name, claim);
    try {
      const image = await this.image(spec.image);
      const { net, path } = await this.attach(key);
      claim.net = net;
      const store = this.stores[i];
      const res = await store.run([
        'run',
        '-d',
        '--name',
        name,
        '--network',
        `ns:${path}`,
        '--annotation',
        `org.criu.config=${join(this.dir, CRIU_CONFIG_FILE)}`,
        ...Object.entries(spec.env).flatMap(([k, v]) => ['--env', `${k}=${v}`]),
        image,
        ...spec.args,
      ]);
      if (res.code !== 0) {
        await store.run(['rm', '-f', '-t', '0', name]).catch(() => undefined);
        throw podmanFailure(ErrorCode.RuncFailed, `podman run ${name} in store ${store.label}`, res);
      }
      return { network: { ip: net.ip } };
    } catch (err) {
      this.containers.delete(name);
      await this.network.detach(key).catch(() => undefined);
      throw err;
    }
  }

  /** A free service address, leased to `key`, and its namespace. */
  private async attach(key: string): Promise<{ net: ContainerNetwork; path: string }> {
    this.keys.add(key);
    for (let attempt = 1; ; attempt++) {
      const net = await this.network.allocate();
      try {
        return { net, path: await this.network.attach(key, net) };
      } catch (err) {
        // Taken by another process between allocate and attach: the next free one.
        if (!(isGodwitError(err) && err.code === ErrorCode.AddressInUse) || attempt >= ATTACH_ATTEMPTS)
          throw err;
      }
    }
  }

  /** The image `name` (busybox, redis) in both stores: godwit's rootfs of h1, imported into A, saved and loaded into B. */
  private image(name: string): Promise<string> {
    let p = this.images.get(name);
    if (!p) {
      p = this.importImage(name);
      this.images.set(name, p);
      p.catch(() => this.images.delete(name));
    }
    return p;
  }

  private async importImage(name: string): Promise<string> {
    const [a, b] = this.stores;
    const host = this.testbedHosts[0];
    const images = openLocalImages((await StateDir.open(host.stateDir)).imagesDir, this.tools);
    const info = await images.ensure(name);
    const ref = `localhost/godwit-${info.name}:${info.id}`;
    const work = join(this.dir, 'images');
    await mkdir(work, { recursive: true });
    const rootfsTar = join(work, `${info.name}-${info.id}.rootfs.tar`);
    const saved = join(work, `${info.name}-${info.id}.image.tar`);
    try {
      await runChecked('tar', ['-C', info.rootfs, '--numeric-owner', '-cf', rootfsTar, '.'], {
        timeoutMs: PODMAN_TIMEOUT_MS,
      });
      await a.checked(['import', '--quiet', rootfsTar, ref], `podman import of image ${name} into store A`);
      await a.checked(['save', '--quiet', '-o', saved, ref], `podman save of image ${name} from store A`);
      await b.checked(['load', '--quiet', '-i', saved], `podman load of image ${name} into store B`);
      return ref;
    } finally {
      await rm(rootfsTar, { force: true });
      await rm(saved, { force: true });
    }
  }

  private async logs(i: 0 | 1, name: string): Promise<string> {
    const res = await this.stores[i].run(['logs', name]);
    if (res.code !== 0)
      throw podmanFailure(ErrorCode.CommandFailed, `podman logs ${name}`, res, this.stores[i]);
    // The container's stdout, then its stderr (`podman logs` splits them).
    return res.stdout + res.stderr;
  }

  private async exec(i: 0 | 1, name: string, args: readonly string[]): Promise<{ exitCode: number }> {
    const res = await this.stores[i].run(['exec', name, ...args]);
    // 125: podman's own failure (the command never ran); 126/127 and the rest: the command's.
    if (res.code === 125)
      throw podmanFailure(ErrorCode.CommandFailed, `podman exec in ${name}`, res, this.stores[i]);
    return { exitCode: res.code };
  }

  private async remove(i: 0 | 1, name: string, opts?: { force?: boolean }): Promise<void> {
    const store = this.stores[i];
    const res = await store.run(['rm', ...(opts?.force ? ['-f', '-t', '0'] : []), name]);
    if (res.code !== 0) throw podmanFailure(ErrorCode.CommandFailed, `podman rm ${name}`, res, store);
    const c = this.containers.get(name);
    // Its address goes with the store that ran it (the other may hold a checkpointed record).
    if (c && c.store === i) {
      this.containers.delete(name);
      await this.network.detach(c.key);
    }
  }

  async migrate(name: string, opts: { failBefore?: PodmanFault } = {}): Promise<BaselineReport> {
    this.open();
    const c = this.containers.get(name);
    if (!c) throw new NotFoundError(ErrorCode.ContainerNotFound, `podman: no container ${name} in this bed`);
    if (c.store !== 0) {
      throw new FailedPreconditionError(ErrorCode.InvalidState, `podman: ${name} runs in store B already`);
    }
    const [a, b] = this.stores;
    const [from, to] = this.testbedHosts;
    const src = join(this.dir, 'archives', 'a', `${name}.tar.zst`);
    const dst = join(this.dir, 'archives', 'b', `${name}.tar.zst`);
    await mkdir(join(this.dir, 'archives', 'a'), { recursive: true });
    await mkdir(join(this.dir, 'archives', 'b'), { recursive: true });
    await rm(src, { force: true });
    await rm(dst, { force: true });
    const run = new BaselineSteps('podman');
    try {
      await run.step('checkpoint', () =>
        a.checked(
          ['container', 'checkpoint', '--tcp-established', '--export', src, '--compress', 'zstd', name],
          `podman checkpoint of ${name} in store A`,
          CHECKPOINT_TIMEOUT_MS,
          ErrorCode.CriuDumpFailed,
        ),
      );
    } catch (err) {
      await rm(src, { force: true });
      const criu = await a.criuErrors(name, 'dump.log');
      const state = await a.state(name).catch(() => undefined);
      throw new UnavailableError(
        ErrorCode.CriuDumpFailed,
        `podman: the checkpoint of ${name} in store A failed: ${criu[0] ?? errorMessage(err)}`,
        {
          cause: err,
          details: [...criu, ...(isGodwitError(err) ? err.details : [])],
          hint: `${name} is ${state ?? 'in an unknown state'} in store A`,
        },
      );
    }
    run.logicalBytes = (await stat(src)).size;
    let netnsMoved = false;
    try {
      if (opts.failBefore === 'copy') throw injected('copy');
      run.wireBytes = await run.step('copy', () => copyOverLink(from, to, src, dst));
      await run.step('restore', async () => {
        // "Host B" has no namespace of the container: it is made anew, same IP and MAC, locked.
        netnsMoved = true;
        await this.network.detach(c.key);
        await this.network.attach(c.key, c.net, { lock: 'criu' });
        if (opts.failBefore === 'restore') throw injected('restore');
        await b
          .checked(
            ['container', 'restore', '--tcp-established', '--import', dst],
            `podman restore of ${name} in store B`,
            CHECKPOINT_TIMEOUT_MS,
            ErrorCode.CriuRestoreFailed,
          )
          .catch(async (err: unknown) => {
            throw await withCriuErrors(err, b, name, 'restore.log');
          });
      });
    } catch (err) {
      return this.rollBack(run, name, c, err, netnsMoved, src, dst);
    }
    return this.commit(run, name, c, src, dst);
  }

  /** B runs it: A's checkpointed record goes (a failure there changes nothing). */
  private async commit(
    run: BaselineSteps,
    name: string,
    c: BedContainer,
    src: string,
    dst: string,
  ): Promise<BaselineReport> {
    c.store = 1;
    const downtimeMs = run.sinceCheckpoint();
    await run
      .step('cleanup', () =>
        this.stores[0].checked(['rm', '-f', '-t', '0', name], `podman rm ${name} in store A`),
      )
      .catch(() => undefined);
    run.logicalBytes = (await archiveContentBytes(dst)) ?? run.logicalBytes;
    await rm(src, { force: true });
    await rm(dst, { force: true });
    return run.report('committed', downtimeMs);
  }

  /**
   * `err` happened after the checkpoint. Unless B runs the container after all (then it is
   * committed), B's leftovers go and A restores it from its own checkpoint, in its namespace
   * (made again, locked, when the move had begun to recreate it).
   */
  private async rollBack(
    run: BaselineSteps,
    name: string,
    c: BedContainer,
    err: unknown,
    netnsMoved: boolean,
    src: string,
    dst: string,
  ): Promise<BaselineReport> {
    const [a, b] = this.stores;
    let there: string | undefined;
    try {
      there = await b.state(name);
    } catch (e) {
      throw new UnavailableError(
        ErrorCode.CommandFailed,
        `podman: ${errorMessage(err)}; and store B cannot say whether it runs ${name} (${errorMessage(e)}): not restoring it in store A, so that it never runs twice`,
        { cause: err, hint: `inspect ${name} in store B; its archive is ${src}` },
      );
    }
    if (there === 'running') return this.commit(run, name, c, src, dst);
    if (there !== undefined) await b.run(['rm', '-f', '-t', '0', name]).catch(() => undefined);
    try {
      await run.step('rollback', async () => {
        if (netnsMoved) await this.network.attach(c.key, c.net, { lock: 'criu' });
        await a
          .checked(
            ['container', 'restore', '--tcp-established', name],
            `podman restore of ${name} in store A`,
            CHECKPOINT_TIMEOUT_MS,
            ErrorCode.CriuRestoreFailed,
          )
          .catch(async (err: unknown) => {
            throw await withCriuErrors(err, a, name, 'restore.log');
          });
      });
    } catch (rollbackErr) {
      throw new UnavailableError(
        ErrorCode.CriuRestoreFailed,
        `podman: ${errorMessage(err)}; and the rollback in store A failed: ${errorMessage(rollbackErr)}`,
        {
          cause: rollbackErr,
          details: isGodwitError(rollbackErr) ? rollbackErr.details : [],
          hint: `its archive is ${src}: podman container restore --import it before the bed is closed`,
        },
      );
    }
    const downtimeMs = run.sinceCheckpoint();
    run.logicalBytes = (await archiveContentBytes(src)) ?? run.logicalBytes;
    await rm(src, { force: true });
    await rm(dst, { force: true });
    return run.rolledBack(err, downtimeMs);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.cleanedUp) return;
    const errors: unknown[] = [];
    const attempt = async (work: () => Promise<unknown>): Promise<void> => {
      try {
        await work();
      } catch (err) {
        errors.push(err);
      }
    };
    for (const store of this.stores) {
      await attempt(() =>
        store.checked(['rm', '--all', '--force', '--time', '0'], `podman rm --all in store ${store.label}`),
      );
      await attempt(() =>
        store.checked(['rmi', '--all', '--force'], `podman rmi --all in store ${store.label}`),
      );
    }
    for (const store of this.stores) await attempt(() => store.dispose());
    for (const key of this.keys) await attempt(() => this.network.detach(key));
    this.keys.clear();
    this.containers.clear();
    this.images.clear();
    await attempt(() => unmountUnder(this.dir));
    await attempt(() => rm(this.dir, { recursive: true, force: true }));
    this.cleanedUp = errors.length === 0;
    if (errors.length > 0) {
      throw new UnavailableError(
        ErrorCode.CommandFailed,
        `podman bed ${this.dir}: cleanup incomplete: ${errors.map(errorMessage).join('; ')}`,
        { cause: errors[0] },
      );
    }
  }

  private open(): void {
    if (this.closed) throw new FailedPreconditionError(ErrorCode.InvalidState, 'podman: the bed is closed');
  }
}

/** `err` (a failed podman restore) with CRIU's error lines from the container's `log` quoted. */
async function withCriuErrors(err: unknown, store: PodmanStore, name: string, log: string): Promise<unknown> {
  const criu = await store.criuErrors(name, log);
  if (criu.length === 0 || !isGodwitError(err)) return err;
  return new UnavailableError(err.code, `${errorMessage(err)}: ${criu[0]}`, {
    cause: err,
    details: [...criu, ...err.details],
  });
}

function injected(step: PodmanFault): InternalError {
  return new InternalError(ErrorCode.FaultInjected, `podman: fault injected before the ${step}`);
}

// ---- one store ----

/**
 * One Podman store: its root, runroot and tmpdir under `dir`, the bed's configuration. Podman
 * refuses a runroot path longer than 50 characters (conmon's socket paths live there), so podman
 * is given a short link to it, RUNROOT_LINK_DIR/godwit-TAG-LABEL.
 */
class PodmanStore {
  private constructor(
    readonly label: string,
    private readonly dir: string,
    private readonly runrootLink: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  static async create(label: string, dir: string, tag: string, env: NodeJS.ProcessEnv): Promise<PodmanStore> {
    await mkdir(join(dir, 'run'), { recursive: true });
    await mkdir(join(dir, 'tmp'), { recursive: true });
    const link = join(RUNROOT_LINK_DIR, `godwit-${tag}-${label.toLowerCase()}`);
    await symlink(join(dir, 'run'), link);
    return new PodmanStore(label, dir, link, env);
  }

  /** Removes the runroot's link (the store's files go with the bed's directory). */
  async dispose(): Promise<void> {
    await rm(this.runrootLink, { force: true });
  }

  /** `podman ARGS` on this store; never throws for a non-zero exit. */
  async run(args: readonly string[], timeoutMs = PODMAN_TIMEOUT_MS): Promise<CommandResult> {
    const tmp = join(this.dir, 'tmp');
    return runCommand(
      'podman',
      [
        '--root',
        join(this.dir, 'root'),
        '--runroot',
        this.runrootLink,
        '--tmpdir',
        tmp,
        '--storage-driver',
        'overlay',
        ...args,
      ],
      { env: { ...this.env, TMPDIR: tmp }, timeoutMs },
    );
  }

  /** Like `run`, but a non-zero exit throws (`code`, podman's error quoted; ContainerNotFound when it says so). */
  async checked(
    args: readonly string[],
    what: string,
    timeoutMs = PODMAN_TIMEOUT_MS,
    code: string = ErrorCode.CommandFailed,
  ): Promise<CommandResult> {
    const res = await this.run(args, timeoutMs);
    if (res.code !== 0) throw podmanFailure(code, what, res, this);
    return res;
  }

  /** The container's state (running, exited, created…), or undefined when the store has no such container. */
  async state(name: string): Promise<string | undefined> {
    const res = await this.run(['container', 'inspect', '--format', '{{.State.Status}}', name]);
    if (res.code === 0) return res.stdout.trim();
    if (NO_SUCH_CONTAINER.test(res.stderr)) return undefined;
    throw podmanFailure(ErrorCode.CommandFailed, `podman inspect ${name} in store ${this.label}`, res);
  }

  /**
   * The error lines of CRIU's `log` (dump.log, restore.log) in the container's directory, without
   * their time stamps; empty when there is none (Podman removes it after a success).
   */
  async criuErrors(name: string, log: string): Promise<string[]> {
    const res = await this.run(['container', 'inspect', '--format', '{{.StaticDir}}', name]).catch(
      () => undefined,
    );
    const dir = res?.code === 0 ? res.stdout.trim() : '';
    if (!dir) return [];
    return errorLines(await readFile(join(dir, log), 'utf8').catch(() => ''));
  }
}

/** The CRIU configuration runc hands to CRIU for the bed's containers (annotation org.criu.config). */
const CRIU_CONFIG_FILE = 'criu.conf';
/** Its text: one option per line, CRIU's format (see the module comment). */
export const PODMAN_CRIU_CONFIG = 'skip-in-flight\n';

/** Where the stores' short runroot links go (tmpfs, like every runroot). */
const RUNROOT_LINK_DIR = '/run';

/** A short random tag (5 base-36 digits) naming a bed's runroot links and service-network keys. */
function newTag(): string {
  return `pm${randomInt(36 ** 4, 36 ** 5).toString(36)}`;
}

/** Writes the bed's containers.conf and CRIU wrapper directory into `dir`; returns podman's environment. */
async function writeConfig(dir: string, tools: Tools): Promise<NodeJS.ProcessEnv> {
  const bin = join(dir, 'bin');
  await mkdir(bin, { recursive: true });
  await symlink(tools.criu, join(bin, 'criu'));
  const conf = join(dir, 'containers.conf');
  await writeFile(conf, PODMAN_CONTAINERS_CONF);
  await writeFile(join(dir, CRIU_CONFIG_FILE), PODMAN_CRIU_CONFIG);
  return {
    ...process.env,
    PATH: `${bin}:${process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`,
    CONTAINERS_CONF: conf,
  };
}

const NO_SUCH_CONTAINER = /no such container/i;

/** Podman's own error lines (`Error: …`), else the last lines it printed. */
function podmanErrorLines(res: CommandResult): string[] {
  const lines = (res.stderr || res.stdout)
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const errors = lines.filter((l) => /^Error:/.test(l));
  return (errors.length > 0 ? errors : lines).slice(-6);
}

function podmanError(res: CommandResult): string {
  const lines = podmanErrorLines(res);
  return lines[lines.length - 1] ?? '';
}

function podmanFailure(code: string, what: string, res: CommandResult, store?: PodmanStore): Error {
  const msg = `${what} failed: ${podmanError(res) || `exit status ${res.code}`}`;
  if (NO_SUCH_CONTAINER.test(res.stderr)) {
    return new NotFoundError(ErrorCode.ContainerNotFound, msg, {
      ...(store ? { hint: `store ${store.label} has no such container` } : {}),
    });
  }
  return new UnavailableError(code, msg, { details: podmanErrorLines(res) });
}

// ---- one move's bookkeeping ----

/**
 * The bytes the archive holds before compression: the sum of its members' sizes (`tar --zstd
 * -tv`), or undefined when tar cannot list it.
 */
async function archiveContentBytes(archive: string): Promise<number | undefined> {
  const res = await runCommand('tar', ['--zstd', '-tvf', archive], { timeoutMs: PODMAN_TIMEOUT_MS }).catch(
    () => undefined,
  );
  if (!res || res.code !== 0) return undefined;
  let sum = 0;
  for (const line of res.stdout.split('\n')) {
    const m = /^\S+\s+\S+\s+(\d+)\s/.exec(line);
    if (m) sum += Number(m[1]);
  }
  return sum > 0 ? sum : undefined;
}

// ---- the copy over the shaped link ----

/**
 * Copies file `src` to `dst` over the link from `from` to `to` (streamOverLink: one TCP
 * connection between the hosts' addresses, each end in its host's network namespace). Resolves
 * with the bytes on the wire, once the sender and the receiver counted the file's size.
 */
async function copyOverLink(from: TestbedHost, to: TestbedHost, src: string, dst: string): Promise<number> {
  const { bytes } = await streamOverLink(from, to, {
    source: 'cat -- "$1"',
    sourceArgs: [src],
    sink: 'cat > "$1"',
    sinkArgs: [dst],
    what: `the copy of ${src}`,
    expectBytes: (await stat(src)).size,
  });
  return bytes;
}

// ---- cleanup ----

/** Unmounts (lazily) every mount at or below `dir`, deepest first. */
async function unmountUnder(dir: string): Promise<void> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const points = info
    .split('\n')
    .map((l) => (l.split(' ')[4] ?? '').replace(/\\040/g, ' '))
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((x, y) => y.length - x.length);
  for (const p of points) await runChecked('umount', ['-l', p], { timeoutMs: 30_000 });
}
