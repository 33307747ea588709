/**
 * The agent's HTTP API, version 1: paths, request bodies and response bodies, each with
 * its schema. The server validates requests with these, the client validates responses.
 */
import { isIP } from 'node:net';
import type { ContainerNetwork } from '../core/network.js';
import { ContainerStatus } from '../core/runtime.js';
import { validateName } from '../runtime/state-dir.js';
import {
  absolutePath,
  array,
  boolean,
  integer,
  number,
  object,
  oneOf,
  optional,
  refine,
  string,
  stringMap,
  type Infer,
  type Schema,
} from './schema.js';

/** Version segment of every API path except `/healthz`. */
export const API_VERSION = 'v1';

/** Largest request body the agent reads, in bytes; larger ones get 413. */
export const MAX_BODY_BYTES = 1024 * 1024;

/** Paths of the API. */
export const ApiPath = {
  health: '/healthz',
  containers: `/${API_VERSION}/containers`,
  container: (name: string) => `/${API_VERSION}/containers/${encodeURIComponent(name)}`,
  exec: (name: string) => `/${API_VERSION}/containers/${encodeURIComponent(name)}/exec`,
  kill: (name: string) => `/${API_VERSION}/containers/${encodeURIComponent(name)}/kill`,
  stop: (name: string) => `/${API_VERSION}/containers/${encodeURIComponent(name)}/stop`,
  logs: (name: string) => `/${API_VERSION}/containers/${encodeURIComponent(name)}/logs`,
  checkpoint: (name: string) => `/${API_VERSION}/containers/${encodeURIComponent(name)}/checkpoint`,
  restore: `/${API_VERSION}/restore`,
  /** Reserved for the migration API; answers 501 for now. */
  migrations: `/${API_VERSION}/migrations`,
} as const;

/** A container name, checked with the runtime's own rule (so errors match the local CLI). */
export const containerName: Schema<string> = refine(
  string({ maxLength: 1024, expected: 'a container name' }),
  (name) => validateName(name),
);

const ipv4 = string({
  maxLength: 15,
  expected: 'a dotted IPv4 address',
  check: (s) => (isIP(s) === 4 ? undefined : `expected a dotted IPv4 address, got ${JSON.stringify(s)}`),
});

/** A service-network identity, with the runtime's rules (prefix 1..32, MAC `xx:…:xx`). */
export const containerNetwork: Schema<ContainerNetwork> = object({
  ip: ipv4,
  prefixLength: integer(1, 32),
  mac: string({
    pattern: /^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/,
    expected: 'a MAC address like 02:42:0a:4e:00:0a',
  }),
  gateway: optional(ipv4),
});

const argv = array(string({ maxLength: 131_072 }), { minItems: 1, maxItems: 4096 });

/** Body of `POST /v1/containers`: a RunSpec. `env` defaults to `{}`. */
/** An image name (`busybox`, `redis`, …). */
export const imageName = string({
  minLength: 1,
  maxLength: 128,
  pattern: /^[a-z0-9][a-z0-9_.\-/:]*$/,
  expected: 'an image name',
});

export const runRequest = object({
  name: containerName,
  image: imageName,
  args: argv,
  env: optional(
    stringMap(/^[A-Za-z_][A-Za-z0-9_]*$/, string({ maxLength: 131_072 }), {
      keyExpected: 'a variable name ([A-Za-z_][A-Za-z0-9_]*)',
    }),
  ),
  memoryLimitBytes: optional(integer(1, Number.MAX_SAFE_INTEGER)),
  cwd: optional(absolutePath()),
  hostname: optional(
    string({
      minLength: 1,
      maxLength: 64,
      pattern: /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/,
      expected: 'a host name',
    }),
  ),
  netnsPath: optional(absolutePath()),
  network: optional(containerNetwork),
});
export type RunRequest = Infer<typeof runRequest>;

/** Body of `POST /v1/containers/:name/exec`. The output is always captured. */
export const execRequest = object({ args: argv });
export type ExecRequest = Infer<typeof execRequest>;

/** Body of `POST /v1/containers/:name/kill`; default signal TERM. */
export const killRequest = object({
  signal: optional(
    string({
      maxLength: 16,
      pattern: /^((SIG)?[A-Z][A-Z0-9]*([+-][0-9]+)?|[1-9][0-9]?)$/,
      expected: 'a signal name or number (TERM, SIGKILL, 9)',
    }),
  ),
});
export type KillRequest = Infer<typeof killRequest>;

/** Body of `POST /v1/containers/:name/stop`. */
export const stopRequest = object({ timeoutMs: optional(integer(0, 3_600_000)) });
export type StopRequest = Infer<typeof stopRequest>;

/** Body of `POST /v1/containers/:name/checkpoint`: CheckpointOptions with absolute paths. */
export const checkpointRequest = object({
  dir: absolutePath(),
  leaveRunning: optional(boolean()),
  tcpEstablished: optional(boolean()),
  skipInFlight: optional(boolean()),
  lazyPages: optional(boolean()),
  pageServer: optional(
    object({
      address: string({ minLength: 1, maxLength: 253, pattern: /^[A-Za-z0-9.:-]+$/, expected: 'an address' }),
      port: integer(1, 65_535),
    }),
  ),
  workDir: optional(absolutePath()),
});
export type CheckpointRequest = Infer<typeof checkpointRequest>;

/** Body of `POST /v1/restore`: RestoreOptions with absolute paths. */
export const restoreRequest = object({
  dir: absolutePath(),
  name: containerName,
  netnsPath: optional(absolutePath()),
  tcpEstablished: optional(boolean()),
  lazyPages: optional(boolean()),
  workDir: optional(absolutePath()),
});
export type RestoreRequest = Infer<typeof restoreRequest>;

// ---- responses (validated by the client; unknown fields from a newer agent are kept) ----

const keep = { unknownFields: 'keep' } as const;
const text = string({ maxLength: Number.MAX_SAFE_INTEGER });

/** `GET /healthz`. */
export const healthResponse = object(
  {
    ok: boolean(),
    version: text,
    api: text,
    pid: optional(integer(1, Number.MAX_SAFE_INTEGER)),
    hostId: optional(text),
  },
  keep,
);
/** What `GET /healthz` reports. */
export type AgentHealth = Infer<typeof healthResponse>;

/** A ContainerInfo as the agent sends it. */
export const containerInfoResponse = object(
  {
    name: text,
    image: text,
    args: array(text, { maxItems: Number.MAX_SAFE_INTEGER }),
    status: oneOf(Object.values(ContainerStatus)),
    pid: optional(integer(0, Number.MAX_SAFE_INTEGER)),
    createdAt: text,
    exit: optional(text),
    restoredFrom: optional(text),
    checkpointedTo: optional(text),
    network: optional(containerNetwork),
  },
  keep,
);

/** `GET /v1/containers`. */
export const listResponse = object(
  { containers: array(containerInfoResponse, { maxItems: 1_000_000 }) },
  keep,
);

/** `POST /v1/containers/:name/exec`. */
export const execResponse = object(
  { exitCode: integer(-1_000_000, 1_000_000), stdout: text, stderr: text },
  keep,
);

/** `POST /v1/containers/:name/checkpoint`. */
export const checkpointResponse = object(
  {
    name: text,
    dir: text,
    durationMs: number(0, Number.MAX_VALUE),
    imageBytes: integer(0, Number.MAX_SAFE_INTEGER),
    pagesBytes: integer(0, Number.MAX_SAFE_INTEGER),
    leftRunning: boolean(),
  },
  keep,
);

/** `POST /v1/restore`. */
export const restoreResponse = object(
  { name: text, pid: integer(0, Number.MAX_SAFE_INTEGER), durationMs: number(0, Number.MAX_VALUE) },
  keep,
);
