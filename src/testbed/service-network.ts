/**
 * The testbed's service network: each container gets its own network namespace
 * (`<testbed>-c-<key>`) with an `eth0` whose peer is a port of br-svc in the switch namespace,
 * and keeps its address wherever it runs. Addresses are leased with one file per IP in the
 * lease directory (created with O_EXCL, holding the container key), shared by every host.
 *
 * Usable from any process in the machine's main mount namespace, whatever its network
 * namespace (hosts' agents included, when started by `testbed up`, which uses nsenter rather than
 * `ip netns exec` — see system.ts).
 */
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AlreadyExistsError,
  ErrorCode,
  FailedPreconditionError,
  errorMessage,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
} from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { nullLogger } from '../core/logger.js';
import type { AddressAllocator, ContainerNetwork, NetworkLock, NetworkProvider } from '../core/network.js';
import type { ServiceNetworkInfo } from '../core/testbed.js';
import { runCommand } from '../system/exec.js';
import { isExecutable } from '../system/tools.js';
import {
  addNetns,
  deleteNetns,
  ip,
  ipBatch,
  linkNames,
  netnsExists,
  netnsPath,
  runInNetns,
} from './system.js';
import { readTestbedFile } from './testbed-file.js';
import { CONTAINER_KEY, containerNetns, containerPort } from './topology.js';

/** The busybox whose arping announces a container's address. */
const BUSYBOX = '/bin/busybox';

/** Options of ServiceNetwork. */
export interface ServiceNetworkOptions {
  log?: Logger;
}

/** The service network of one testbed, as a NetworkProvider and AddressAllocator. */
export class ServiceNetwork implements NetworkProvider, AddressAllocator {
  private readonly log: Logger;
  private readonly first: number;
  private readonly last: number;
  private readonly subnet: number;
  private readonly mask: number;
  /** Namespaces attached ahead of a restore by this process: key → identity and lock. */
  private readonly prestaged = new Map<string, string>();

  constructor(
    /** The testbed's name (prefix of the containers' namespaces). */
    readonly testbedName: string,
    readonly info: ServiceNetworkInfo,
    opts: ServiceNetworkOptions = {},
  ) {
    this.log = opts.log ?? nullLogger;
    const first = ipToInt(info.firstIp);
    const last = ipToInt(info.lastIp);
    const subnet = ipToInt(info.subnet);
    if (
      first === undefined ||
      last === undefined ||
      subnet === undefined ||
      info.prefixLength < 8 ||
      info.prefixLength > 30
    ) {
      throw new InvalidArgumentError(
        ErrorCode.InvalidFlag,
        `invalid service network ${JSON.stringify(info)}`,
      );
    }
    this.mask = info.prefixLength === 0 ? 0 : (~0 << (32 - info.prefixLength)) >>> 0;
    if ((first & this.mask) >>> 0 !== subnet || (last & this.mask) >>> 0 !== subnet || first > last) {
      throw new InvalidArgumentError(ErrorCode.InvalidFlag, `service network range outside ${info.subnet}`);
    }
    this.first = first;
    this.last = last;
    this.subnet = subnet;
  }

  /** Name of container `key`'s network namespace. */
  netnsName(key: string): string {
    return containerNetns(this.testbedName, key);
  }

  /** Lowest free address in [firstIp, lastIp] and the MAC derived from it; nothing is reserved. */
  async allocate(): Promise<ContainerNetwork> {
    const held = new Set((await this.leases()).keys());
    for (let n = this.first; n <= this.last; n++) {
      const ipText = intToIp(n);
      if (!held.has(ipText))
        return { ip: ipText, prefixLength: this.info.prefixLength, mac: macForIp(ipText) };
    }
    throw new UnavailableError(
      ErrorCode.AddressesExhausted,
      `no free address on the service network (${this.info.firstIp}–${this.info.lastIp})`,
      { hint: 'remove containers you no longer need' },
    );
  }

  /**
   * Leases `net.ip` for `key`, creates `<testbed>-c-<key>` with eth0 (net.mac, net.ip) on br-svc,
   * and sends a gratuitous ARP. Returns the namespace's path. Idempotent for the same key and
   * identity; AddressInUse when another key holds the IP; InvalidState when `key` holds another.
   */
  async attach(
    key: string,
    net: ContainerNetwork,
    opts: { lock?: NetworkLock; prestage?: boolean; reclaim?: boolean; build?: boolean } = {},
  ): Promise<string> {
    this.validate(key, net);
    const want = `${JSON.stringify(net)} lock=${opts.lock ?? 'none'}`;
    const ns = this.netnsName(key);
    if (opts.build) {
      // Nothing shared: no lease, not on the bridge (the source may still hold the address).
      if (await netnsExists(ns)) await this.removeNetns(key);
      try {
        await this.build(key, ns, net, opts.lock);
      } catch (err) {
        await this.removeNetns(key).catch(() => undefined);
        throw err;
      }
      this.prestaged.set(key, `${want} built`);
      return netnsPath(ns);
    }
    const prior = this.prestaged.get(key);
    if (!opts.prestage && prior === want) {
      // Built by this process for this restore moments ago (and announced): take it as it is.
      this.prestaged.delete(key);
      if (await netnsExists(ns)) return netnsPath(ns);
    }
    this.prestaged.delete(key);
    // Built ahead (`build`): only its connection to the network is left.
    const builtAhead = prior === `${want} built` && (await netnsExists(ns));
    const leases = await this.leases();
    for (const [leasedIp, holder] of leases) {
      if (holder === key && leasedIp !== net.ip) {
        throw new FailedPreconditionError(
          ErrorCode.InvalidState,
          `container ${key} is already attached to the service network as ${leasedIp}`,
          { hint: `detach it before attaching it as ${net.ip}` },
        );
      }
    }
    if (opts.reclaim) await this.reclaim(key, net.ip);
    const createdLease = await this.lease(key, net.ip);
    try {
      if (builtAhead) {
        await this.connect(key, ns, net);
        if (opts.prestage) this.prestaged.set(key, want);
        return netnsPath(ns);
      }
      if (await netnsExists(ns)) {
        if (!opts.lock && (await this.matches(ns, net))) {
          await this.announce(ns, net.ip);
          return netnsPath(ns);
        }
        // Left half-built (or with another MAC) by an earlier attempt: build it again.
        await this.removeNetns(key);
      }
      await this.create(key, ns, net, opts.lock);
      if (opts.prestage) this.prestaged.set(key, want);
      return netnsPath(ns);
    } catch (err) {
      await this.removeNetns(key).catch(() => undefined);
      if (createdLease) await rm(join(this.info.leaseDir, net.ip), { force: true });
      throw err;
    }
  }

  /** Frees `ipText` when a key other than `key` holds it: that key's namespace and lease go. */
  private async reclaim(key: string, ipText: string): Promise<void> {
    const holder = (await this.leases()).get(ipText);
    if (holder === undefined || holder === key || !CONTAINER_KEY.test(holder)) return;
    await this.removeNetns(holder);
    await rm(join(this.info.leaseDir, ipText), { force: true });
    this.prestaged.delete(holder);
    this.log.warn('service network: address reclaimed', { ip: ipText, from: holder, for: key });
  }

  /** Removes `key`'s namespace (and so its veth) and releases its lease. Idempotent. */
  async detach(key: string): Promise<void> {
    if (!CONTAINER_KEY.test(key)) throw invalidKey(key);
    this.prestaged.delete(key);
    await this.removeNetns(key);
    for (const [leasedIp, holder] of await this.leases()) {
      if (holder === key) await rm(join(this.info.leaseDir, leasedIp), { force: true });
    }
    this.log.info('service network: detached', { key });
  }

  /**
   * Takes `key`'s namespace off the bridge (its port down) and releases its lease, keeping the
   * namespace: a container held frozen there no longer owns the address another host restores.
   */
  async isolate(key: string): Promise<void> {
    if (!CONTAINER_KEY.test(key)) throw invalidKey(key);
    await ip(['-n', this.info.bridgeNetns, 'link', 'set', containerPort(key), 'down']);
    for (const [leasedIp, holder] of await this.leases()) {
      if (holder === key) await rm(join(this.info.leaseDir, leasedIp), { force: true });
    }
    this.log.info('service network: isolated', { key });
  }

  /**
   * Undoes `isolate` (a rollback): takes the address back (from a namespace another host prepared
   * for it, if any), brings the port up, announces the address.
   */
  async rejoin(key: string, net: ContainerNetwork): Promise<void> {
    this.validate(key, net);
    // Only a rollback rejoins: a namespace another host prepared for the address is not in use.
    await this.reclaim(key, net.ip);
    await this.lease(key, net.ip);
    await ip(['-n', this.info.bridgeNetns, 'link', 'set', containerPort(key), 'up']);
    await this.announce(this.netnsName(key), net.ip);
    this.log.info('service network: rejoined', { key, ip: net.ip });
  }

  /** The leases: IP → container key. */
  async leases(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    let names: string[];
    try {
      names = await readdir(this.info.leaseDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
      throw err;
    }
    for (const name of names) {
      if (ipToInt(name) === undefined) continue;
      const holder = await readFile(join(this.info.leaseDir, name), 'utf8').catch(() => undefined);
      if (holder !== undefined) out.set(name, holder.trim());
    }
    return out;
  }

  /** Takes the lease of `ip` for `key`; returns false when `key` already held it. */
  private async lease(key: string, ipText: string): Promise<boolean> {
    await mkdir(this.info.leaseDir, { recursive: true, mode: 0o755 });
    const path = join(this.info.leaseDir, ipText);
    try {
      await writeFile(path, key + '\n', { flag: 'wx', mode: 0o644 });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = (await readFile(path, 'utf8').catch(() => '')).trim();
    if (holder === key) return false;
    throw new AlreadyExistsError(
      ErrorCode.AddressInUse,
      `${ipText} is already attached to container ${holder || '(unknown)'}`,
      { hint: 'allocate another address, or detach the other container' },
    );
  }

  private async create(key: string, ns: string, net: ContainerNetwork, lock?: NetworkLock): Promise<void> {
    await this.build(key, ns, net, lock);
    await this.connect(key, ns, net);
    this.log.info('service network: attached', { key, netns: ns, ip: net.ip, mac: net.mac, lock });
  }

  /**
   * The namespace, its veth (bridge side down, off the bridge), MAC, address and lock rules
   * (CRIU's or the `link` lock's) if asked for; eth0 up.
   */
  private async build(key: string, ns: string, net: ContainerNetwork, lock?: NetworkLock): Promise<void> {
    const sw = this.info.bridgeNetns;
    if (!(await netnsExists(sw))) {
      throw new NotFoundError(
        ErrorCode.TestbedNotFound,
        `the service network's namespace ${sw} does not exist`,
        {
          hint: 'bring the testbed up: godwit testbed up',
        },
      );
    }
    const port = containerPort(key);
    await addNetns(ns);
    await ip(['-n', sw, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    // The lock goes in before the interface comes up, so not one packet is answered unlocked.
    if (lock) await iptablesRestore(ns, lock === 'criu' ? CRIU_LOCK_RULES : LINK_LOCK_RULES, 'lock');
    await ipBatch(ns, [
      ['link', 'set', 'eth0', 'address', net.mac],
      ['addr', 'add', `${net.ip}/${net.prefixLength}`, 'dev', 'eth0'],
      ['link', 'set', 'eth0', 'up'],
    ]);
  }

  /** Puts a built namespace on the network: its route, its bridge port up, a gratuitous ARP. */
  private async connect(key: string, ns: string, net: ContainerNetwork): Promise<void> {
    if (net.gateway !== undefined) await ip(['-n', ns, 'route', 'add', 'default', 'via', net.gateway]);
    await ip([
      '-n',
      this.info.bridgeNetns,
      'link',
      'set',
      containerPort(key),
      'master',
      this.info.bridge,
      'up',
    ]);
    // Not waited for: packets already pass (the bridge floods to a MAC it does not know yet).
    void this.announce(ns, net.ip);
  }

  /**
   * The `link` lock at a dump: `key`'s bridge port down. Not one packet passes either way, and the
   * bridge forgets the MAC addresses it learnt there. Address, lease and namespace stay.
   */
  async disconnect(key: string): Promise<void> {
    if (!CONTAINER_KEY.test(key)) throw invalidKey(key);
    await ip(['-n', this.info.bridgeNetns, 'link', 'set', containerPort(key), 'down']);
  }

  /**
   * Ends the `link` lock: the bridge port up, then (not waited for) the namespace's lock rules
   * removed and its address announced. Those rules only keep the namespace from resetting
   * connections it has no socket for yet; once the restore has made the sockets, they stop
   * nothing, so their removal (an iptables-restore, ~30 ms) need not hold anything up.
   */
  async reconnect(key: string, net: ContainerNetwork): Promise<void> {
    this.validate(key, net);
    const ns = this.netnsName(key);
    await ip(['-n', this.info.bridgeNetns, 'link', 'set', containerPort(key), 'up']);
    void (async () => {
      const rules = await runCommand('ip', ['netns', 'exec', ns, 'iptables', '-S', 'OUTPUT'], {
        timeoutMs: 10_000,
      });
      if (rules.stdout.includes(LINK_LOCK_CHAIN)) await iptablesRestore(ns, LINK_UNLOCK_RULES, 'unlock');
      await this.announce(ns, net.ip);
    })().catch((err: unknown) =>
      this.log.warn('service network: unlocking failed', { key, err: errorMessage(err) }),
    );
  }

  /** Gratuitous ARP, so the bridge and neighbours learn where the address lives now. Never throws. */
  private async announce(ns: string, ipText: string): Promise<void> {
    if (!(await isExecutable(BUSYBOX))) {
      this.log.warn('service network: no busybox, skipping the gratuitous ARP', { netns: ns });
      return;
    }
    const res = await runInNetns(
      ns,
      BUSYBOX,
      ['arping', '-U', '-c', '1', '-I', 'eth0', ipText],
      10_000,
    ).catch((err: unknown) => ({ code: -1, stderr: errorMessage(err) }));
    if (res.code !== 0)
      this.log.warn('service network: arping failed', { netns: ns, stderr: res.stderr.trim() });
  }

  /** True when `ns` has eth0 up with exactly `net`'s MAC and address. */
  private async matches(ns: string, net: ContainerNetwork): Promise<boolean> {
    const res = await ip(['-n', ns, '-o', 'addr', 'show', 'dev', 'eth0']).catch(() => undefined);
    const link = await ip(['-n', ns, '-o', 'link', 'show', 'dev', 'eth0']).catch(() => undefined);
    if (!res || !link) return false;
    return (
      res.stdout.includes(` ${net.ip}/${net.prefixLength} `) &&
      link.stdout.toLowerCase().includes(`link/ether ${net.mac.toLowerCase()} `) &&
      /[<,]UP[,>]/.test(link.stdout)
    );
  }

  private async removeNetns(key: string): Promise<void> {
    const port = containerPort(key);
    // Deleting the bridge side removes the pair, even while a process keeps the namespace alive.
    if ((await linkNames(this.info.bridgeNetns)).includes(port)) {
      await ip(['-n', this.info.bridgeNetns, 'link', 'del', port]).catch(() => undefined);
    }
    await deleteNetns(this.netnsName(key));
  }

  private validate(key: string, net: ContainerNetwork): void {
    if (!CONTAINER_KEY.test(key)) throw invalidKey(key);
    const n = ipToInt(net.ip);
    if (n === undefined || n < this.first || n > this.last) {
      throw new InvalidArgumentError(
        ErrorCode.InvalidFlag,
        `${net.ip}: not a service address (${this.info.firstIp}–${this.info.lastIp})`,
      );
    }
    if (net.prefixLength !== this.info.prefixLength) {
      throw new InvalidArgumentError(
        ErrorCode.InvalidFlag,
        `prefix length ${net.prefixLength}: the service network is /${this.info.prefixLength}`,
      );
    }
    if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(net.mac) || (parseInt(net.mac.slice(0, 2), 16) & 1) === 1) {
      throw new InvalidArgumentError(ErrorCode.InvalidFlag, `${net.mac}: not a unicast MAC address`);
    }
    if (net.gateway !== undefined) {
      const g = ipToInt(net.gateway);
      if (g === undefined || (g & this.mask) >>> 0 !== this.subnet) {
        throw new InvalidArgumentError(
          ErrorCode.InvalidFlag,
          `gateway ${net.gateway}: not on ${this.info.subnet}`,
        );
      }
    }
  }
}

/** The service network of the testbed described by a testbed.json. Throws TestbedNotFound when it is missing. */
export async function loadServiceNetwork(
  testbedJsonPath: string,
  opts: ServiceNetworkOptions = {},
): Promise<ServiceNetwork> {
  const tb = await readTestbedFile(testbedJsonPath);
  if (!tb) {
    throw new NotFoundError(ErrorCode.TestbedNotFound, `no testbed: ${testbedJsonPath} does not exist`, {
      hint: 'bring one up: godwit testbed up',
    });
  }
  return new ServiceNetwork(tb.name, tb.serviceNetwork, opts);
}

/** The MAC of a service address: `02:42:` and the four octets in hex (10.78.0.10 → 02:42:0a:4e:00:0a). */
export function macForIp(ipText: string): string {
  const parts = ipText.split('.').map((p) => Number(p).toString(16).padStart(2, '0'));
  return ['02', '42', ...parts].join(':');
}

/** A dotted IPv4 address as an unsigned 32-bit number, or undefined. */
export function ipToInt(text: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return undefined;
  const o = m.slice(1).map(Number);
  if (o.some((x) => x > 255)) return undefined;
  return ((o[0]! << 24) | (o[1]! << 16) | (o[2]! << 8) | o[3]!) >>> 0;
}

/** An unsigned 32-bit number as a dotted IPv4 address. */
export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function invalidKey(key: string): InvalidArgumentError {
  return new InvalidArgumentError(ErrorCode.InvalidName, `invalid container key ${JSON.stringify(key)}`, {
    hint: 'use letters, digits, and . _ - (not first), up to 128 characters',
  });
}

/**
 * CRIU's network lock (criu/net.c, iptables variant; SOCCR_MARK 0xC114 marks CRIU's own
 * repair packets). CRIU's restore with --tcp-established removes exactly this chain.
 */
export const CRIU_LOCK_RULES =
  '*filter\n:CRIU - [0:0]\n-I INPUT -j CRIU\n-I OUTPUT -j CRIU\n-A CRIU -m mark --mark 0xC114 -j ACCEPT\n-A CRIU -j DROP\nCOMMIT\n';

/** The chain of the `link` lock's rules in a namespace a restore is bound for. */
const LINK_LOCK_CHAIN = 'GODWIT_LOCK';

/**
 * The `link` lock in a namespace a restore is bound for: it is on the network (so the restored
 * sockets' first packets, sent as CRIU ends their repair, reach the client at once), but nothing
 * it sends could end a connection: no reset (the kernel's answer to a segment for a socket not
 * yet restored) and no ICMP unreachable.
 */
export const LINK_LOCK_RULES =
  `*filter\n:${LINK_LOCK_CHAIN} - [0:0]\n-I OUTPUT -j ${LINK_LOCK_CHAIN}\n` +
  `-A ${LINK_LOCK_CHAIN} -p tcp --tcp-flags RST RST -j DROP\n` +
  `-A ${LINK_LOCK_CHAIN} -p icmp --icmp-type destination-unreachable -j DROP\nCOMMIT\n`;

const LINK_UNLOCK_RULES = `*filter\n-D OUTPUT -j ${LINK_LOCK_CHAIN}\n-F ${LINK_LOCK_CHAIN}\n-X ${LINK_LOCK_CHAIN}\nCOMMIT\n`;

/** Applies `rules` in namespace `ns` with the iptables-restore CRIU uses (from PATH). */
async function iptablesRestore(ns: string, rules: string, what: 'lock' | 'unlock'): Promise<void> {
  const res = await runCommand('ip', ['netns', 'exec', ns, 'iptables-restore', '--noflush'], {
    input: rules,
    timeoutMs: 10_000,
  });
  if (res.code !== 0) {
    throw new UnavailableError(
      ErrorCode.CommandFailed,
      `cannot ${what} the network of ${ns} (iptables-restore exited ${res.code})`,
      {
        details: res.stderr.trim().split('\n').slice(-3),
        hint: 'godwit setup installs iptables',
      },
    );
  }
}
