/**
 * Bringing a testbed up, down, and reporting on it. See topology.ts for the layout and
 * shaping.ts for how links are shaped.
 *
 * `testbedUp` writes testbed.json before it creates anything (state `creating`) and removes
 * everything again when a step fails. `testbedDown` is idempotent and works without
 * testbed.json: everything it removes is found from the testbed's name — namespaces by prefix,
 * processes by the namespace they are in, state directories by their marker file and by the
 * agents' `--state-dir`, cgroups by the hosts' ids, mounts by path.
 */
import { scratchDirFor } from '../migration/scratch.js';
import { createHash } from 'node:crypto';
import { existsSync, realpathSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import {
  AlreadyExistsError,
  ErrorCode,
  FailedPreconditionError,
  InvalidArgumentError,
  errorMessage,
} from '../core/errors.js';
import type { LinkSpec, TestbedHost } from '../core/testbed.js';
import { defaultToolsDir } from '../system/tools.js';
import { runCommand, which } from '../system/exec.js';
import { healthz, startAgent } from './agents.js';
import { ensureLinkd, startLinkd } from './linkd.js';
import { formatLinkSpec, validateLinkSpec } from './profiles.js';
import { htbCommands, linkdArgs } from './shaping.js';
import {
  addNetns,
  cgroupDirs,
  deleteNetns,
  ip,
  isAlive,
  listNetns,
  mountsUnder,
  netnsId,
  processArgv,
  processesInCgroups,
  processesInNetns,
  processNetnsId,
  removeCgroups,
  runInNetns,
  signalAll,
  tc,
  unmountAll,
  waitGone,
} from './system.js';
import {
  readTestbed,
  removeTestbedFile,
  testbedDir,
  testbedFile,
  writeTestbed,
  type TestbedRecord,
} from './testbed-file.js';
import {
  AGENT_PORT,
  BASE_DIR_MARKER,
  CLIENT_PORT,
  DEFAULT_TESTBED_NAME,
  HOST_NETWORK,
  MAX_HOSTS,
  SERVICE_BRIDGE,
  SERVICE_NETWORK,
  clientNetns,
  defaultBaseStateDir,
  hostAddress,
  hostName,
  hostNetns,
  netnsPrefix,
  pairKey,
  runDir,
  switchNetns,
  validateBaseStateDir,
  validateTestbedName,
} from './topology.js';

/** File in the run directory naming the base state directory. */
const BASE_DIR_FILE = 'base-state-dir';

/** Options of testbedUp. */
export interface TestbedUpOptions {
  /** Default `gw`. */
  name?: string;
  /** Number of hosts, 1..16. */
  hosts: number;
  /** Link between every pair of hosts. */
  link: LinkSpec;
  /** Overrides per pair (`h1-h2`, either order), applied in both directions. */
  pairLinks?: Record<string, LinkSpec>;
  /** Also create the client namespace on the service network. */
  client: boolean;
  /** Parent of the hosts' state directories; default /var/lib/godwit/testbed/<name>. */
  baseStateDir?: string;
  /** Start an agent per host and wait for its /healthz. */
  startAgents: boolean;
  /** Path of the project's bin/godwit.js (the agents' entry point). */
  godwitBin: string;
  /** Progress lines. */
  log?: (line: string) => void;
  /** Directory of testbed.json; default testbedDir(). */
  dir?: string;
  /** Tools directory (godwit-linkd is built into <toolsDir>/testbed); default defaultToolsDir(). */
  toolsDir?: string;
}

/**
 * Creates the testbed's namespaces, links, shaping and (optionally) agents, and writes
 * testbed.json. Fails with TestbedExists when a testbed is recorded in the directory or parts of
 * this one exist; on any other failure removes what it created and rethrows.
 */
export async function testbedUp(opts: TestbedUpOptions): Promise<TestbedRecord> {
  const name = validateTestbedName(opts.name ?? DEFAULT_TESTBED_NAME);
  if (!Number.isInteger(opts.hosts) || opts.hosts < 1 || opts.hosts > MAX_HOSTS) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidFlag,
      `--hosts ${opts.hosts}: expected a whole number from 1 to ${MAX_HOSTS}`,
    );
  }
  const hosts = opts.hosts;
  const link = validateLinkSpec(opts.link);
  const pairLinks: Record<string, LinkSpec> = {};
  for (const [k, v] of Object.entries(opts.pairLinks ?? {})) {
    pairLinks[pairKey(k, hosts)] = validateLinkSpec(v, `link of ${k}`);
  }
  const dir = resolve(opts.dir ?? testbedDir());
  const baseStateDir = validateBaseStateDir(resolve(opts.baseStateDir ?? defaultBaseStateDir(name)));
  const toolsDir = opts.toolsDir ?? defaultToolsDir();
  const log = opts.log ?? (() => undefined);
  requireRoot();
  await requireTools();
  await requireAbsent(name, dir, baseStateDir);

  const rd = runDir(dir, name);
  const record = describe(name, hosts, link, pairLinks, opts.client, baseStateDir, rd);
  try {
    await rm(rd, { recursive: true, force: true });
    await mkdir(record.serviceNetwork.leaseDir, { recursive: true, mode: 0o755 });
    // A breadcrumb beside the leases, so `down` finds a custom base even without testbed.json.
    await writeFile(join(rd, BASE_DIR_FILE), baseStateDir + '\n');
    await writeTestbed(record, dir);
    await mkdir(baseStateDir, { recursive: true, mode: 0o755 });
    await writeFile(join(baseStateDir, BASE_DIR_MARKER), name + '\n');
    for (const host of record.hosts) await mkdir(host.stateDir, { recursive: true, mode: 0o711 });
    const linkd = hosts > 1 ? await ensureLinkd(toolsDir, log) : undefined;

    const sw = record.switchNetns;
    log(`switch namespace ${sw}: service bridge ${SERVICE_BRIDGE}`);
    await addNetns(sw);
    await disableIpv6(sw);
    await ip(['-n', sw, 'link', 'add', SERVICE_BRIDGE, 'type', 'bridge']);
    await ip(['-n', sw, 'link', 'set', SERVICE_BRIDGE, 'up']);

    for (const [i, host] of record.hosts.entries()) {
      const cidr = `${host.address}/${HOST_NETWORK.prefixLength}`;
      log(`host ${host.name}: namespace ${host.netns}, ${cidr}`);
      await addPort(sw, host.name, host.netns, cidr);
      for (const args of htbCommands(host.netns, i + 1, hosts, link, pairLinks)) await tc(args);
    }
    if (record.client) {
      const cidr = `${record.client.address}/${SERVICE_NETWORK.prefixLength}`;
      log(`client: namespace ${record.client.netns}, ${cidr}`);
      await addPort(sw, CLIENT_PORT, record.client.netns, cidr);
      await ip(['-n', sw, 'link', 'set', CLIENT_PORT, 'master', SERVICE_BRIDGE]);
    }
    if (linkd !== undefined) {
      const logFile = join(rd, 'linkd.log');
      const pid = await startLinkd(linkd, sw, linkdArgs(hosts, link, pairLinks), logFile);
      record.linkd = { pid, binary: linkd, log: logFile };
      log(`host network: godwit-linkd (pid ${pid}), ${describeLinks(record)}`);
      await checkHostNetwork(record);
    }

    await writeTestbed(record, dir);

    if (opts.startAgents) {
      const env = { ...process.env, GODWIT_TOOLS_DIR: toolsDir, GODWIT_TESTBED_DIR: dir };
      // allSettled: no agent may still be starting while a failure tears the testbed down.
      const results = await Promise.allSettled(
        record.hosts.map(async (host) => {
          host.agentPid = await startAgent(host, {
            godwitBin: opts.godwitBin,
            testbedFile: testbedFile(dir),
            env,
          });
          log(`agent ${host.name}: pid ${host.agentPid}, ${host.address}:${host.port}, ${host.socket}`);
        }),
      );
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    }
    record.state = 'ready';
    await writeTestbed(record, dir);
    log(`testbed ${name} is up (${testbedFile(dir)})`);
    return record;
  } catch (err) {
    log(`failed: ${errorMessage(err)}; removing testbed ${name}`);
    await testbedDown({ name, dir }).catch(() => undefined);
    throw err;
  }
}

/** Options of testbedDown. */
export interface TestbedDownOptions {
  /** Default: the recorded testbed's name, else `gw`. */
  name?: string;
  dir?: string;
  log?: (line: string) => void;
}

/** What testbedDown removed, and anything it could not. */
export interface TestbedDownReport {
  name: string;
  /** Whether testbed.json described this testbed. */
  recorded: boolean;
  namespaces: string[];
  killedPids: number[];
  containers: string[];
  cgroups: string[];
  mounts: string[];
  dirs: string[];
  /** What is still there (empty on success). */
  leftovers: string[];
}

/** A testbed of two hosts with agents and a client, as the demo and the benchmarks use it. */
export interface PairTestbed {
  record: TestbedRecord;
  hosts: readonly [TestbedHost, TestbedHost];
  /** The client's network namespace. */
  clientNetns: string;
}

/**
 * Brings up testbed `name` in `dir`: hosts h1 and h2 with agents running `godwitBin`, their
 * state under `dir/hosts`, joined by `link`, and a client. Tear it down with testbedDown.
 */
export async function pairTestbedUp(opts: {
  name: string;
  link: LinkSpec;
  godwitBin: string;
  dir: string;
  log?: (line: string) => void;
}): Promise<PairTestbed> {
  const record = await testbedUp({
    name: opts.name,
    hosts: 2,
    link: opts.link,
    client: true,
    startAgents: true,
    godwitBin: opts.godwitBin,
    dir: opts.dir,
    baseStateDir: join(opts.dir, 'hosts'),
    ...(opts.log ? { log: opts.log } : {}),
  });
  const [h1, h2] = record.hosts;
  if (!h1 || !h2 || !record.client) throw new Error('the testbed came up without two hosts and a client');
  return { record, hosts: [h1, h2], clientNetns: record.client.netns };
}

/**
 * Removes testbed `name` completely: agents, containers, every process in its namespaces,
 * cgroups, mounts, namespaces (and with them every veth), leases, state and run directories and
 * testbed.json. Idempotent; works from testbed.json or, when that is missing or stale, from the
 * name alone.
 */
export async function testbedDown(opts: TestbedDownOptions = {}): Promise<TestbedDownReport> {
  requireRoot();
  const dir = resolve(opts.dir ?? testbedDir());
  const log = opts.log ?? (() => undefined);
  let recorded: TestbedRecord | undefined;
  let recordedName: string | undefined;
  let corrupt = false;
  try {
    recorded = await readTestbed(dir);
    recordedName = recorded?.name;
  } catch {
    corrupt = true;
    recordedName = await looseName(testbedFile(dir));
  }
  const name = validateTestbedName(opts.name ?? recordedName ?? DEFAULT_TESTBED_NAME);
  const mine = recorded?.name === name ? recorded : undefined;
  const prefix = netnsPrefix(name);
  const report: TestbedDownReport = {
    name,
    recorded: mine !== undefined,
    namespaces: [],
    killedPids: [],
    containers: [],
    cgroups: [],
    mounts: [],
    dirs: [],
    leftovers: [],
  };

  // What belongs to the testbed: namespaces by prefix (and as recorded), their processes.
  const nsNames = new Set((await listNetns()).filter((n) => n.startsWith(prefix)));
  if (mine) {
    for (const n of [mine.switchNetns, mine.client?.netns, ...mine.hosts.map((h) => h.netns)]) {
      if (n?.startsWith(prefix)) nsNames.add(n);
    }
  }
  const nsIds = new Set<string>();
  for (const n of nsNames) {
    const id = await netnsId(n);
    if (id) nsIds.add(id);
  }

  // State directories: as recorded, the default, and the agents' --state-dir; only with our marker.
  const rd = runDir(dir, name);
  const candidates = new Set<string>([defaultBaseStateDir(name)]);
  const breadcrumb = (await readFile(join(rd, BASE_DIR_FILE), 'utf8').catch(() => '')).trim();
  if (breadcrumb.startsWith('/')) candidates.add(breadcrumb);
  const stateDirs = new Set<string>();
  if (mine) {
    candidates.add(mine.baseStateDir);
    for (const h of mine.hosts) stateDirs.add(h.stateDir);
  }
  for (const pid of await processesInNetns(nsIds)) {
    const argv = (await processArgv(pid)) ?? [];
    const i = argv.indexOf('--state-dir');
    const sd = i >= 0 ? argv[i + 1] : undefined;
    if (sd) {
      stateDirs.add(resolve(sd));
      candidates.add(dirname(resolve(sd)));
    }
  }
  const bases: string[] = [];
  for (const b of candidates) {
    if ((await markerName(b)) === name) {
      bases.push(b);
      for (const e of await readdir(b, { withFileTypes: true }).catch(() => [])) {
        if (e.isDirectory()) stateDirs.add(join(b, e.name));
      }
    }
  }
  // Only state directories inside one of this testbed's bases are ours to clean.
  const ownStateDirs = [...stateDirs].filter((sd) => bases.some((b) => sd.startsWith(b + '/')));
  const hostIds = ownStateDirs.map(hostIdOf);

  // 1. Agents: a chance to exit cleanly, then everything in the namespaces is killed below.
  const agentPids: number[] = [];
  for (const h of mine?.hosts ?? []) {
    const id = h.agentPid === undefined ? undefined : await processNetnsId(h.agentPid);
    if (h.agentPid !== undefined && id !== undefined && nsIds.has(id)) agentPids.push(h.agentPid);
  }
  if (agentPids.length > 0) {
    log(`stopping agents ${agentPids.join(', ')}`);
    signalAll(agentPids, 'SIGTERM');
    report.killedPids.push(...agentPids);
    await waitGone(agentPids, 2_000);
  }

  // 2. Containers, through runc.
  const runc = await which('runc');
  for (const sd of ownStateDirs) {
    const root = join(sd, 'runc');
    if (!runc || !existsSync(root)) continue;
    const list = await runCommand(runc, ['--root', root, 'list', '--format', 'json'], { timeoutMs: 15_000 });
    for (const id of runcIds(list.stdout)) {
      log(`removing container ${id} (${sd})`);
      await runCommand(runc, ['--root', root, 'delete', '--force', id], { timeoutMs: 30_000 });
      report.containers.push(id);
    }
  }

  // 3. Every remaining process in the namespaces or the hosts' cgroups.
  const cgroups = await cgroupDirs(hostIds);
  for (let round = 0; round < 5; round++) {
    const pids = [...new Set([...(await processesInNetns(nsIds)), ...(await processesInCgroups(cgroups))])];
    if (pids.length === 0) break;
    log(`killing ${pids.length} process(es): ${pids.join(', ')}`);
    signalAll(pids, 'SIGKILL');
    report.killedPids.push(...pids);
    await waitGone(pids, 3_000);
  }
  report.cgroups = cgroups;
  report.leftovers.push(...(await removeCgroups(cgroups)).map((d) => `cgroup ${d}`));

  // 4. Mounts under the state and run directories, then the namespaces (and so every veth).
  const mountRoots = [...bases, ...ownStateDirs, rd];
  report.mounts = await unmountAll(await mountsUnder(mountRoots));
  const order = [...nsNames].sort((a, b) => rank(a, name) - rank(b, name) || a.localeCompare(b));
  for (const n of order) {
    log(`deleting namespace ${n}`);
    await deleteNetns(n);
    report.namespaces.push(n);
  }

  // 5. Directories (the hosts' checkpoint scratch directories too) and the record.
  for (const sd of ownStateDirs) {
    const scratch = await scratchDirFor(sd);
    if (scratch !== undefined && existsSync(scratch)) {
      await rm(scratch, { recursive: true, force: true });
      report.dirs.push(scratch);
    }
  }
  for (const d of [...bases, rd]) {
    if (existsSync(d)) {
      await rm(d, { recursive: true, force: true });
      report.dirs.push(d);
    }
  }
  if (mine || (corrupt && (recordedName === undefined || recordedName === name)))
    await removeTestbedFile(dir);

  // What is left.
  report.leftovers.push(...(await listNetns()).filter((n) => n.startsWith(prefix)).map((n) => `netns ${n}`));
  report.leftovers.push(...(await mountsUnder(mountRoots)).map((m) => `mount ${m}`));
  for (const d of [...bases, rd]) if (existsSync(d)) report.leftovers.push(`dir ${d}`);
  log(
    report.leftovers.length === 0
      ? `testbed ${name} is down`
      : `testbed ${name}: could not remove ${report.leftovers.join(', ')}`,
  );
  return report;
}

/** One host as testbedStatus sees it. */
export interface TestbedHostStatus {
  name: string;
  netns: string;
  address: string;
  port: number;
  socket: string;
  netnsPresent: boolean;
  agentPid?: number;
  agentAlive: boolean;
  /** GET /healthz on the agent's socket answered 200. */
  agentHealthy: boolean;
}

/** What testbedStatus reports. */
export interface TestbedStatus {
  file: string;
  /** The recorded testbed, when testbed.json exists and is valid. */
  testbed?: TestbedRecord;
  /** Why testbed.json could not be read. */
  error?: string;
  hosts: TestbedHostStatus[];
  switchPresent: boolean;
  clientPresent?: boolean;
  linkd?: { pid: number; alive: boolean };
  /** Service addresses held, by container key. */
  leases: { ip: string; key: string }[];
}

/** The recorded testbed and whether its parts are alive. Never throws for a missing or broken testbed. */
export async function testbedStatus(opts: { dir?: string } = {}): Promise<TestbedStatus> {
  const dir = resolve(opts.dir ?? testbedDir());
  let tb: TestbedRecord | undefined;
  let error: string | undefined;
  try {
    tb = await readTestbed(dir);
  } catch (err) {
    error = errorMessage(err);
  }
  const status: TestbedStatus = {
    file: testbedFile(dir),
    ...(tb ? { testbed: tb } : {}),
    ...(error ? { error } : {}),
    hosts: [],
    switchPresent: false,
    leases: [],
  };
  if (!tb) return status;
  const present = new Set(await listNetns());
  status.switchPresent = present.has(tb.switchNetns) && (await netnsId(tb.switchNetns)) !== undefined;
  if (tb.client) status.clientPresent = (await netnsId(tb.client.netns)) !== undefined;
  if (tb.linkd) status.linkd = { pid: tb.linkd.pid, alive: await isAlive(tb.linkd.pid) };
  status.hosts = await Promise.all(
    tb.hosts.map(async (h): Promise<TestbedHostStatus> => {
      const alive = h.agentPid !== undefined && (await isAlive(h.agentPid));
      return {
        name: h.name,
        netns: h.netns,
        address: h.address,
        port: h.port,
        socket: h.socket,
        netnsPresent: (await netnsId(h.netns)) !== undefined,
        ...(h.agentPid === undefined ? {} : { agentPid: h.agentPid }),
        agentAlive: alive,
        agentHealthy: alive && (await healthz(h.socket, 1_000)) === 200,
      };
    }),
  );
  for (const ip of await readdir(tb.serviceNetwork.leaseDir).catch(() => [] as string[])) {
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(ip)) continue;
    const key = await readFile(join(tb.serviceNetwork.leaseDir, ip), 'utf8').catch(() => '');
    status.leases.push({ ip, key: key.trim() });
  }
  return status;
}

/** `lan (1000 Mbit/s, 0.5 ms one way)` plus the pair overrides. */
export function describeLinks(tb: Pick<TestbedRecord, 'link' | 'pairLinks'>): string {
  const pairs = Object.entries(tb.pairLinks).map(([k, l]) => `${k} ${formatLinkSpec(l)}`);
  return [`links ${formatLinkSpec(tb.link)}`, ...pairs].join('; ');
}

function describe(
  name: string,
  hosts: number,
  link: LinkSpec,
  pairLinks: Record<string, LinkSpec>,
  client: boolean,
  baseStateDir: string,
  rd: string,
): TestbedRecord {
  const hostList: TestbedHost[] = [];
  for (let i = 1; i <= hosts; i++) {
    const stateDir = join(baseStateDir, hostName(i));
    hostList.push({
      name: hostName(i),
      netns: hostNetns(name, i),
      stateDir,
      socket: join(stateDir, 'agent.sock'),
      address: hostAddress(i),
      port: AGENT_PORT,
    });
  }
  return {
    version: 1,
    name,
    createdAt: new Date().toISOString(),
    state: 'creating',
    link,
    pairLinks,
    hosts: hostList,
    ...(client ? { client: { netns: clientNetns(name), address: SERVICE_NETWORK.clientIp } } : {}),
    serviceNetwork: {
      bridgeNetns: switchNetns(name),
      bridge: SERVICE_BRIDGE,
      subnet: SERVICE_NETWORK.subnet,
      prefixLength: SERVICE_NETWORK.prefixLength,
      firstIp: SERVICE_NETWORK.firstIp,
      lastIp: SERVICE_NETWORK.lastIp,
      leaseDir: join(rd, 'leases'),
    },
    baseStateDir,
    runDir: rd,
    switchNetns: switchNetns(name),
  };
}

async function requireAbsent(name: string, dir: string, baseStateDir: string): Promise<void> {
  let recordedName: string | undefined;
  try {
    recordedName = (await readTestbed(dir))?.name;
  } catch {
    recordedName = (await looseName(testbedFile(dir))) ?? '?';
  }
  if (recordedName !== undefined) {
    throw new AlreadyExistsError(
      ErrorCode.TestbedExists,
      `testbed ${recordedName} is already up (${testbedFile(dir)})`,
      { hint: `remove it first: godwit testbed down --name ${recordedName}` },
    );
  }
  const parts = (await listNetns()).filter((n) => n.startsWith(netnsPrefix(name)));
  if (parts.length > 0) {
    throw new AlreadyExistsError(
      ErrorCode.TestbedExists,
      `namespaces of testbed ${name} exist: ${parts.join(', ')}`,
      { hint: `remove them: godwit testbed down --name ${name}` },
    );
  }
  const leftovers = await readdir(baseStateDir).catch(() => [] as string[]);
  if (leftovers.length > 0) {
    throw new AlreadyExistsError(ErrorCode.TestbedExists, `${baseStateDir} exists and is not empty`, {
      hint:
        (await markerName(baseStateDir)) === name
          ? `remove it: godwit testbed down --name ${name}`
          : 'choose another base state directory or remove it',
    });
  }
}

/** Pings every other host from h1 (and back, through ARP), so a broken switch fails `up`. */
async function checkHostNetwork(record: TestbedRecord): Promise<void> {
  const [first, ...others] = record.hosts;
  if (!first) return;
  await Promise.all(
    others.map(async (h) => {
      const res = await runInNetns(
        first.netns,
        'busybox',
        ['ping', '-c', '3', '-i', '0.2', '-W', '5', h.address],
        20_000,
      );
      if (res.code !== 0) {
        throw new FailedPreconditionError(
          ErrorCode.CommandFailed,
          `${first.name} cannot reach ${h.name} (${h.address}) on the host network`,
          { details: (res.stdout + res.stderr).split('\n').filter(Boolean).slice(-3) },
        );
      }
    }),
  );
}

/** A new namespace `netns` whose eth0 has `cidr` and is joined to `port` (up) in the switch namespace. */
async function addPort(sw: string, port: string, netns: string, cidr: string): Promise<void> {
  await addNetns(netns);
  await ip(['-n', sw, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
  await ip(['-n', sw, 'link', 'set', port, 'up']);
  await ip(['-n', netns, 'addr', 'add', cidr, 'dev', 'eth0']);
  await ip(['-n', netns, 'link', 'set', 'eth0', 'up']);
}

async function disableIpv6(netns: string): Promise<void> {
  await runInNetns(netns, 'sysctl', [
    '-qw',
    'net.ipv6.conf.all.disable_ipv6=1',
    'net.ipv6.conf.default.disable_ipv6=1',
  ]);
}

/** The testbed name in a base directory's marker, if any. */
async function markerName(base: string): Promise<string | undefined> {
  const text = await readFile(join(base, BASE_DIR_MARKER), 'utf8').catch(() => undefined);
  return text?.trim() || undefined;
}

/** The `name` field of a testbed.json that does not validate, if it has one. */
async function looseName(path: string): Promise<string | undefined> {
  try {
    const doc = JSON.parse(await readFile(path, 'utf8')) as { name?: unknown };
    return typeof doc.name === 'string' ? doc.name : undefined;
  } catch {
    return undefined;
  }
}

/** The host id StateDir derives from a state directory (sha256 of its real path), used in cgroup paths. */
function hostIdOf(stateDir: string): string {
  let root = resolve(stateDir);
  try {
    root = realpathSync(root);
  } catch {
    // gone: its path is its real path
  }
  return createHash('sha256').update(root).digest('hex').slice(0, 12);
}

/** Container ids in `runc list --format json` output. */
function runcIds(stdout: string): string[] {
  try {
    const list = JSON.parse(stdout) as unknown;
    if (!Array.isArray(list)) return [];
    return list
      .map((c: unknown) => (typeof c === 'object' && c !== null ? (c as { id?: unknown }).id : undefined))
      .filter((id): id is string => typeof id === 'string');
  } catch {
    return [];
  }
}

/** Deletion order: containers' namespaces, then hosts and client, the switch last. */
function rank(ns: string, name: string): number {
  if (ns.startsWith(`${name}-c-`)) return 0;
  if (ns === switchNetns(name)) return 2;
  return 1;
}

async function requireTools(): Promise<void> {
  for (const tool of ['ip', 'tc', 'nsenter', 'busybox']) {
    if ((await which(tool)) === undefined) {
      throw new FailedPreconditionError(ErrorCode.ToolMissing, `${tool}: command not found`, {
        hint: 'run `godwit setup` to install what godwit needs (iproute2, util-linux, busybox-static)',
      });
    }
  }
}

function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new FailedPreconditionError(ErrorCode.NotRoot, 'the testbed needs root (network namespaces, tc)', {
      hint: 'run it as root',
    });
  }
}
