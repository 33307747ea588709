/**
 * The shape every baseline migration shares (the tools people use today, measured in the same
 * run as godwit's strategies by `godwit bench`): by hand (runc checkpoint, tar + zstd, plain TCP
 * copy over the shaped link, untar, runc restore), CRIU's own stop-and-copy to a page server on
 * the destination, and Podman's checkpoint/restore migration. Value types only.
 */
import type { AgentClient } from '../agent/client.js';
import type { TestbedHost } from '../core/testbed.js';

/** The baselines, by the name the benchmark's tables use. */
export type BaselineKind = 'byhand' | 'criu-page-server' | 'podman';

/** What a baseline gets: a running container on `from`, started through `agents[0]`. */
export interface BaselineContext {
  from: TestbedHost;
  to: TestbedHost;
  /** Agent clients of `from` and `to`, in that order. */
  agents: readonly [AgentClient, AgentClient];
  /** The container's name on `from`; on success it runs on `to` under the same name. */
  name: string;
  /** Scratch directory for checkpoint images (removed by the caller afterwards). */
  workDir: string;
}

/** One named step of a baseline migration, for the timeline: start offset and length, ms. */
export interface BaselinePhase {
  name: string;
  startMs: number;
  durationMs: number;
}

/** What one baseline migration did. */
export interface BaselineReport {
  kind: BaselineKind;
  /** `committed`: running on `to`; `rolled-back`: running on `from` again after a failure. */
  outcome: 'committed' | 'rolled-back';
  /** Checkpoint start → running on the destination (the runtime's view), ms. */
  downtimeMs: number;
  /** First step's start → last step's end, ms. */
  totalMs: number;
  /** Bytes that crossed the link (payload of the copy's TCP streams). */
  wireBytes: number;
  /** Size of the checkpoint as written (images, before compression). */
  logicalBytes: number;
  phases: BaselinePhase[];
  /** Why it rolled back. */
  error?: { code: string; message: string };
}

/**
 * What the benchmark needs of a host's container runtime to start a workload, check it and clean
 * up: godwit's AgentClient has it; a baseline that runs containers under its own runtime
 * (Podman) provides its own.
 */
export interface ServiceHost {
  /** Starts `spec.name` running `spec.args` from image `spec.image` (busybox, redis) on the service network. */
  run(spec: {
    name: string;
    image: string;
    args: readonly string[];
    env: Readonly<Record<string, string>>;
  }): Promise<{
    network?: { ip: string } | undefined;
  }>;
  /** Everything the container wrote to stdout and stderr. */
  logs(name: string): Promise<string>;
  exec(name: string, args: readonly string[]): Promise<{ exitCode: number }>;
  remove(name: string, opts?: { force?: boolean }): Promise<void>;
}
