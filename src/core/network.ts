/**
 * Container networking contract. A container's network identity (IP and MAC on the
 * service network) belongs to the container, not to the host: the destination of a
 * migration recreates it, so clients keep talking to the same address.
 */

/** The network identity of a container on the service network. */
export interface ContainerNetwork {
  /** IPv4 address on the service network, e.g. `10.78.0.10`. */
  ip: string;
  /** Prefix length of the service subnet, e.g. 24. */
  prefixLength: number;
  /** MAC address of the container's interface, `02:…` (locally administered). */
  mac: string;
  /** Default gateway inside the container, if any. */
  gateway?: string;
}

/**
 * How a namespace whose TCP connections are between hosts is kept from ending them (with a reset)
 * from the dump until the restore has repaired them.
 * - `criu`: CRIU's own lock, iptables rules dropping every packet, which it adds at the dump and
 *   removes at the restore (an iptables-restore and a failing ip6tables-restore: ~80 ms of every
 *   restore on this machine);
 * - `link`: CRIU is told `network-lock skip`. The source's link goes down (`disconnect`) before
 *   the dump. The destination's namespace is on the network before the restore, with one rule
 *   dropping the resets and ICMP unreachables it would send before its sockets exist, and
 *   `reconnect` removes it after the restore, off the stopped path.
 */
export type NetworkLock = 'criu' | 'link';

/**
 * Creates and removes the network namespaces containers run in. Implemented by the
 * testbed's service network (veth into a bridge) and, later, by real deployments.
 */
export interface NetworkProvider {
  /**
   * Creates a network namespace for container `key` with `net`'s address and MAC, its
   * interface up, and announces the address (gratuitous ARP). Returns the namespace's
   * path (e.g. `/run/netns/NAME`) for runc's config. Idempotent for the same key and
   * identity; fails with AlreadyExists if another key holds the IP.
   *
   * With `lock`, the namespace is created locked, as the source's namespace is after a dump with
   * established TCP connections: until the restore unlocks it, the kernel answers nothing, so no
   * RST reaches a client whose connection is about to be restored. `criu`: under CRIU's iptables
   * lock (its `CRIU` chain dropping everything but CRIU's own marked packets), which CRIU's
   * restore removes; `link`: on the network, dropping only the resets and ICMP unreachables it
   * sends, until `reconnect` after the restore.
   * `prestage`: made ahead of a restore; the next attach of the same key, identity and lock
   * takes it as it is (without re-checking or rebuilding it). `reclaim`: when another key holds
   * the address, its namespace is removed and the address taken.
   *
   * `build`: only the part that touches nothing shared, made long before a restore (while the
   * source still runs with the address): the namespace with its interface, address, MAC and
   * lock, not on the network and without the address's lease. The next attach of the same key,
   * identity and lock only connects it (lease, route, bridge port, announcement).
   */
  attach(
    key: string,
    net: ContainerNetwork,
    opts?: { lock?: NetworkLock; prestage?: boolean; reclaim?: boolean; build?: boolean },
  ): Promise<string>;
  /** Removes the namespace of `key` and its interfaces. Idempotent. */
  detach(key: string): Promise<void>;
  /**
   * Optional: cuts `key`'s namespace off the network and lets its identity go (another namespace
   * may attach it), leaving the namespace and its processes as they are; `rejoin` undoes it.
   */
  isolate?(key: string): Promise<void>;
  rejoin?(key: string, net: ContainerNetwork): Promise<void>;
  /**
   * Optional, with `reconnect`: the `link` lock. Takes `key`'s link down (no packet in or out;
   * the network forgets where its address was), keeping its namespace, address and lease.
   * Idempotent.
   */
  disconnect?(key: string): Promise<void>;
  /**
   * Ends the `link` lock (after a restore, or a dump that failed or left the container running):
   * brings `key`'s link up again, removes its namespace's lock rules and announces its address.
   * Resolves once packets pass; the rules' removal and the announcement may follow.
   */
  reconnect?(key: string, net: ContainerNetwork): Promise<void>;
}

/** Hands out network identities on a service network. */
export interface AddressAllocator {
  /** A free identity (lowest free IP, MAC derived from it); not reserved until `attach`. */
  allocate(): Promise<ContainerNetwork>;
}
