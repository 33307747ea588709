/**
 * The testbed's description as written by `godwit testbed up` and read by the CLI
 * (`--host h1`) and by agents. Value types only.
 */

/** Where the current testbed's description lives: `$GODWIT_TESTBED_DIR/testbed.json`. */
export const TESTBED_FILE = 'testbed.json';

/** A shaped link: rate limit plus netem delay (one way) and loss. */
export interface LinkSpec {
  /** Profile name (`lan`, `edge`, `4g`, `wan`) or `custom`. */
  name: string;
  rateMbit: number;
  /** One-way delay added in each direction, ms; the RTT is about twice this. */
  delayMs: number;
  /** Packet loss in percent, each direction. */
  lossPct: number;
}

/** One godwit host of the testbed. */
export interface TestbedHost {
  name: string;
  /** Network namespace the host (and its agent) lives in. */
  netns: string;
  /** The host's godwit state directory. */
  stateDir: string;
  /** The agent's unix socket (local control). */
  socket: string;
  /** The host's address on the host network (agent-to-agent TCP). */
  address: string;
  /** The agent's TCP port on `address`. */
  port: number;
  /** PID of the agent process, when one was started. */
  agentPid?: number;
}

/** The service network containers attach to; their addresses move with them. */
export interface ServiceNetworkInfo {
  /** Namespace holding the service bridge. */
  bridgeNetns: string;
  bridge: string;
  /** e.g. `10.78.0.0`. */
  subnet: string;
  prefixLength: number;
  /** First and last address handed to containers. */
  firstIp: string;
  lastIp: string;
  /** Directory of address leases (one file per IP), shared by all hosts. */
  leaseDir: string;
}

/** The whole testbed. */
export interface TestbedInfo {
  version: 1;
  name: string;
  createdAt: string;
  /** Default link between hosts and per-pair overrides (`h1-h2`). */
  link: LinkSpec;
  pairLinks: Record<string, LinkSpec>;
  hosts: TestbedHost[];
  client?: { netns: string; address: string };
  serviceNetwork: ServiceNetworkInfo;
}
