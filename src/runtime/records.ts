/**
 * The on-disk records of containers and checkpoints, with validation: a record or a
 * checkpoint directory may come from another host or be damaged, so nothing read
 * from disk is trusted before it has been checked here.
 */
import type { ContainerNetwork, NetworkLock } from '../core/network.js';
import { ContainerStatus, type RunSpec } from '../core/runtime.js';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';

/** What godwit keeps about a container in `containers/<name>/container.json`. */
export interface ContainerRecord {
  version: 1;
  spec: RunSpec;
  imageId: string;
  /** Overlay lower directory (the image rootfs). */
  lowerDir: string;
  createdAt: string;
  restoredFrom?: string;
  checkpointedTo?: string;
}

/** Format tag of checkpoint directories written by this version. */
export const CHECKPOINT_FORMAT = 'godwit-checkpoint/1';

/** `checkpoint.json` in a checkpoint directory. */
export interface CheckpointManifest {
  format: typeof CHECKPOINT_FORMAT;
  spec: RunSpec;
  imageId: string;
  sourceHostId: string;
  createdAt: string;
  criuVersion?: string;
  leftRunning: boolean;
  tcpEstablished: boolean;
  /**
   * How the network was locked for the TCP connections (core/network.ts): CRIU records it in
   * its images and its restore keeps to it. Absent (older checkpoints): `criu`.
   */
  networkLock?: NetworkLock;
  lazyPages: boolean;
  /** Whether `rootfs.tar` holds the container's root filesystem changes. */
  hasRootfsDiff: boolean;
  /**
   * `ignored`: CRIU left cgroups alone (`manage-cgroups=ignore`: the container had none of its
   * own), and so must its restore. Absent: CRIU dumped them.
   */
  cgroups?: 'ignored';
}

/** Checks a value read from disk as a RunSpec; throws InvalidArgument naming the bad field. */
export function parseRunSpec(v: unknown, where: string): RunSpec {
  const o = asObject(v, where);
  const args = o['args'];
  if (!Array.isArray(args) || args.length === 0 || !args.every((a) => typeof a === 'string')) {
    throw bad(`${where}.args must be a non-empty list of strings`);
  }
  const env = asObject(o['env'] ?? {}, `${where}.env`);
  for (const [k, val] of Object.entries(env)) {
    if (typeof val !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(k))
      throw bad(`${where}.env.${k} is invalid`);
  }
  const spec: RunSpec = {
    name: str(o['name'], `${where}.name`),
    image: str(o['image'], `${where}.image`),
    args: args as string[],
    env: env as Record<string, string>,
  };
  const mem = o['memoryLimitBytes'];
  if (mem !== undefined) {
    if (typeof mem !== 'number' || !Number.isSafeInteger(mem) || mem <= 0)
      throw bad(`${where}.memoryLimitBytes`);
    spec.memoryLimitBytes = mem;
  }
  for (const key of ['cwd', 'netnsPath', 'hostname'] as const) {
    const val = o[key];
    if (val !== undefined) spec[key] = str(val, `${where}.${key}`);
  }
  if (o['network'] !== undefined) spec.network = parseContainerNetwork(o['network'], `${where}.network`);
  return spec;
}

/** Checks a service-network identity: dotted IPv4, prefix 1..32, locally administered MAC. */
export function parseContainerNetwork(v: unknown, where: string): ContainerNetwork {
  const o = asObject(v, where);
  const ip = str(o['ip'], `${where}.ip`);
  if (!isIPv4(ip)) throw bad(`${where}.ip must be a dotted IPv4 address`);
  const prefixLength = o['prefixLength'];
  if (
    typeof prefixLength !== 'number' ||
    !Number.isInteger(prefixLength) ||
    prefixLength < 1 ||
    prefixLength > 32
  ) {
    throw bad(`${where}.prefixLength must be an integer 1..32`);
  }
  const mac = str(o['mac'], `${where}.mac`).toLowerCase();
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(mac)) throw bad(`${where}.mac must look like 02:42:0a:4e:00:0a`);
  const net: ContainerNetwork = { ip, prefixLength, mac };
  if (o['gateway'] !== undefined) {
    const gw = str(o['gateway'], `${where}.gateway`);
    if (!isIPv4(gw)) throw bad(`${where}.gateway must be a dotted IPv4 address`);
    net.gateway = gw;
  }
  return net;
}

/** True for a dotted-quad IPv4 address. */
export function isIPv4(s: string): boolean {
  const parts = s.split('.');
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
}

/** Validates a container record read from disk. */
export function parseContainerRecord(v: unknown, where: string): ContainerRecord {
  const o = asObject(v, where);
  if (o['version'] !== 1) throw bad(`${where}: unsupported record version ${String(o['version'])}`);
  const rec: ContainerRecord = {
    version: 1,
    spec: parseRunSpec(o['spec'], `${where}.spec`),
    imageId: str(o['imageId'], `${where}.imageId`),
    lowerDir: str(o['lowerDir'], `${where}.lowerDir`),
    createdAt: str(o['createdAt'], `${where}.createdAt`),
  };
  if (o['restoredFrom'] !== undefined) rec.restoredFrom = str(o['restoredFrom'], `${where}.restoredFrom`);
  if (o['checkpointedTo'] !== undefined)
    rec.checkpointedTo = str(o['checkpointedTo'], `${where}.checkpointedTo`);
  return rec;
}

/** Validates `checkpoint.json`. */
export function parseCheckpointManifest(v: unknown, where: string): CheckpointManifest {
  const o = asObject(v, where);
  if (o['format'] !== CHECKPOINT_FORMAT) {
    throw bad(`${where}: format is ${JSON.stringify(o['format'])}, expected ${CHECKPOINT_FORMAT}`);
  }
  const m: CheckpointManifest = {
    format: CHECKPOINT_FORMAT,
    spec: parseRunSpec(o['spec'], `${where}.spec`),
    imageId: str(o['imageId'], `${where}.imageId`),
    sourceHostId: str(o['sourceHostId'], `${where}.sourceHostId`),
    createdAt: str(o['createdAt'], `${where}.createdAt`),
    leftRunning: bool(o['leftRunning'], `${where}.leftRunning`),
    tcpEstablished: bool(o['tcpEstablished'], `${where}.tcpEstablished`),
    lazyPages: bool(o['lazyPages'], `${where}.lazyPages`),
    hasRootfsDiff: bool(o['hasRootfsDiff'], `${where}.hasRootfsDiff`),
  };
  if (o['criuVersion'] !== undefined) m.criuVersion = str(o['criuVersion'], `${where}.criuVersion`);
  if (o['cgroups'] !== undefined) {
    if (o['cgroups'] !== 'ignored') throw bad(`${where}.cgroups must be "ignored"`);
    m.cgroups = 'ignored';
  }
  const lock = o['networkLock'];
  if (lock !== undefined) {
    if (lock !== 'criu' && lock !== 'link') throw bad(`${where}.networkLock must be "criu" or "link"`);
    m.networkLock = lock;
  }
  return m;
}

/** Maps runc's status words to godwit's. */
export function statusFromRunc(status: string): ContainerStatus {
  switch (status) {
    case 'created':
      return ContainerStatus.Created;
    case 'running':
      return ContainerStatus.Running;
    case 'paused':
      return ContainerStatus.Paused;
    default:
      return ContainerStatus.Stopped;
  }
}

function asObject(v: unknown, where: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${where} must be an object`);
  return v as Record<string, unknown>;
}
function str(v: unknown, where: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > 4096)
    throw bad(`${where} must be a non-empty string`);
  return v;
}
function bool(v: unknown, where: string): boolean {
  if (typeof v !== 'boolean') throw bad(`${where} must be true or false`);
  return v;
}
function bad(message: string): InvalidArgumentError {
  return new InvalidArgumentError(ErrorCode.InvalidState, message);
}
