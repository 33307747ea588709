/**
 * Generation of the OCI runtime `config.json` that runc reads. godwit writes it
 * itself from a RunSpec; no `runc spec` template is used at run time.
 */
import type { RunSpec } from '../core/runtime.js';

/** The subset of the OCI runtime spec godwit writes (runtime-spec 1.0.2). */
export interface OciConfig {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: Record<'bounding' | 'effective' | 'permitted' | 'ambient', string[]>;
    rlimits: { type: string; hard: number; soft: number }[];
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: { destination: string; type: string; source: string; options?: string[] }[];
  annotations: Record<string, string>;
  linux: {
    cgroupsPath: string;
    resources: {
      devices: { allow: boolean; access: string; type?: string; major?: number; minor?: number }[];
      memory?: { limit: number };
    };
    namespaces: { type: string; path?: string }[];
    maskedPaths: string[];
    readonlyPaths: string[];
  };
}

/** Environment every container gets unless the spec overrides it. */
export const DEFAULT_ENV: Readonly<Record<string, string>> = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
};

/** The capability set of an unprivileged-looking container (Docker's default set). */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/** Character devices a container may use (null, zero, full, random, urandom, tty, ptmx). */
const ALLOWED_DEVICES: readonly [number, number][] = [
  [1, 3],
  [1, 5],
  [1, 7],
  [1, 8],
  [1, 9],
  [5, 0],
  [5, 2],
  [136, -1],
];

/** Where the container's cgroup lives, unique per host (state directory) and container. */
export function cgroupsPathFor(hostId: string, name: string): string {
  return `/godwit/${hostId}/${name}`;
}

/** Inputs of `buildOciConfig` beyond the RunSpec. */
export interface OciConfigContext {
  /** Short id of the godwit host (derived from its state directory), used in the cgroup path. */
  hostId: string;
  /** Annotations recorded in the config (godwit's own metadata). */
  annotations?: Record<string, string>;
}

/**
 * Builds the runc config for a spec. Pure: same input, same output.
 * The root filesystem is `rootfs` beside config.json, writable (an overlay godwit mounts).
 */
export function buildOciConfig(spec: RunSpec, ctx: OciConfigContext): OciConfig {
  const env = { ...DEFAULT_ENV, ...spec.env };
  const namespaces: { type: string; path?: string }[] = [
    { type: 'pid' },
    spec.netnsPath === undefined ? { type: 'network' } : { type: 'network', path: spec.netnsPath },
    { type: 'ipc' },
    { type: 'uts' },
    { type: 'mount' },
  ];
  const caps = [...DEFAULT_CAPABILITIES];
  const config: OciConfig = {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: [...spec.args],
      env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      cwd: spec.cwd ?? '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps, ambient: [] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: 'rootfs', readonly: false },
    hostname: spec.hostname ?? spec.name,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      {
        destination: '/dev',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
      },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
      },
      {
        destination: '/dev/shm',
        type: 'tmpfs',
        source: 'shm',
        options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
      },
      {
        destination: '/dev/mqueue',
        type: 'mqueue',
        source: 'mqueue',
        options: ['nosuid', 'noexec', 'nodev'],
      },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    ],
    annotations: { 'org.godwit.name': spec.name, 'org.godwit.image': spec.image, ...ctx.annotations },
    linux: {
      cgroupsPath: cgroupsPathFor(ctx.hostId, spec.name),
      resources: {
        devices: [
          { allow: false, access: 'rwm' },
          ...ALLOWED_DEVICES.map(([major, minor]) => ({
            allow: true,
            access: 'rwm',
            type: 'c',
            major,
            minor,
          })),
        ],
        ...(spec.memoryLimitBytes === undefined ? {} : { memory: { limit: spec.memoryLimitBytes } }),
      },
      namespaces,
      maskedPaths: [
        '/proc/acpi',
        '/proc/asound',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/sys/firmware',
        '/proc/scsi',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
  // A minor of -1 means "any minor" in the OCI spec's device cgroup rules; runc wants it omitted.
  for (const d of config.linux.resources.devices) if (d.minor === -1) delete d.minor;
  return config;
}

/** Parses a memory size such as `256m`, `1g`, `512MiB` or `1048576` into bytes. */
export function parseMemorySize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(text.trim());
  if (!m) return undefined;
  const unit = (m[2] ?? '').toLowerCase();
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[unit] ?? 1;
  const bytes = Math.round(Number(m[1]) * mult);
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
}
