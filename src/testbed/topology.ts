/**
 * Names and addresses of a testbed's parts, derived from the testbed's name alone, so that
 * `testbed down` can find everything even when testbed.json is gone. Pure.
 *
 *   <name>-sw       switch namespace: godwit-linkd joins the host ports h1…hN (host network,
 *                   10.77.0.0/24); bridge br-svc joins containers and the client (service
 *                   network, 10.78.0.0/24)
 *   <name>-h<i>     host i: eth0 = 10.77.0.<i>/24, peer h<i> in the switch namespace
 *   <name>-client   optional client: eth0 = 10.78.0.254/24, peer `client` on br-svc
 *   <name>-c-<key>  a container's network namespace on the service network
 */
import { createHash } from 'node:crypto';
import { isAbsolute, join, normalize } from 'node:path';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';
import type { LinkSpec } from '../core/testbed.js';

/** The name used when none is given. */
export const DEFAULT_TESTBED_NAME = 'gw';
/** Testbed names: short, and without `-`, so that `<name>-` prefixes never overlap between testbeds. */
export const TESTBED_NAME = /^[a-z][a-z0-9]{0,11}$/;
/** At most this many hosts (one /24, one htb class per peer). */
export const MAX_HOSTS = 16;
/** The agents' TCP port on the host network. */
export const AGENT_PORT = 7070;
/** The host network: host i is 10.77.0.<i>. */
export const HOST_NETWORK = { subnet: '10.77.0.0', prefixLength: 24 } as const;
/** The service network: containers get 10.78.0.10–249, the client 10.78.0.254. */
export const SERVICE_NETWORK = {
  subnet: '10.78.0.0',
  prefixLength: 24,
  firstIp: '10.78.0.10',
  lastIp: '10.78.0.249',
  clientIp: '10.78.0.254',
} as const;
/** Bridge of the service network, in the switch namespace. */
export const SERVICE_BRIDGE = 'br-svc';
/** Name of the client's port on br-svc. */
export const CLIENT_PORT = 'client';
/** Marker file in a testbed's base state directory; `down` removes only directories that carry it. */
export const BASE_DIR_MARKER = '.godwit-testbed';

/** Throws InvalidName unless `name` is a valid testbed name. */
export function validateTestbedName(name: string): string {
  if (!TESTBED_NAME.test(name)) {
    throw new InvalidArgumentError(ErrorCode.InvalidName, `invalid testbed name ${JSON.stringify(name)}`, {
      hint: 'use 1-12 lower-case letters and digits, starting with a letter (no "-")',
    });
  }
  return name;
}

/** Every namespace of testbed `name` starts with this. */
export function netnsPrefix(name: string): string {
  return `${name}-`;
}
export function switchNetns(name: string): string {
  return `${name}-sw`;
}
export function hostNetns(name: string, index: number): string {
  return `${name}-h${index}`;
}
export function clientNetns(name: string): string {
  return `${name}-client`;
}
/** `h<index>`: the host's name, and its port's name in the switch namespace. */
export function hostName(index: number): string {
  return `h${index}`;
}
export function hostAddress(index: number): string {
  return `10.77.0.${index}`;
}

/** Index of host `h<i>` (1-based), or undefined for anything else. */
export function hostIndex(hostNameText: string): number | undefined {
  const m = /^h([1-9]\d?)$/.exec(hostNameText);
  const i = m ? Number(m[1]) : NaN;
  return i >= 1 && i <= MAX_HOSTS ? i : undefined;
}

/** Container keys the service network accepts: what container names and file names allow. */
export const CONTAINER_KEY = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Network namespace of container `key`: `<name>-c-<key>`, or a hash of the key when it is long. */
export function containerNetns(name: string, key: string): string {
  return key.length <= 40 ? `${name}-c-${key}` : `${name}-c-${shortHash(key, 16)}`;
}

/** The container's port on br-svc: `c-` + 12 hex digits of a hash of the key (interface names are ≤ 15). */
export function containerPort(key: string): string {
  return `c-${shortHash(key, 12)}`;
}

/** The default base of the hosts' state directories: /var/lib/godwit/testbed/<name>. */
export function defaultBaseStateDir(name: string): string {
  return join('/var/lib/godwit/testbed', name);
}

/** Directory of a testbed's run-time files (leases, logs) inside the testbed directory. */
export function runDir(testbedDirPath: string, name: string): string {
  return join(testbedDirPath, name);
}

/**
 * Throws InvalidFlag unless `dir` is an absolute path at least two levels deep: `down` removes
 * it recursively, so `/` or `/var` must never get here.
 */
export function validateBaseStateDir(dir: string): string {
  const norm = normalize(dir).replace(/\/+$/, '');
  if (!isAbsolute(norm) || norm.split('/').filter(Boolean).length < 2 || norm.split('/').includes('..')) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidFlag,
      `base state directory ${JSON.stringify(dir)}: expected an absolute path at least two levels deep`,
    );
  }
  return norm;
}

/** `hI-hJ` with the lower index first; throws InvalidFlag for anything that is not a pair of hosts. */
export function pairKey(text: string, hosts: number): string {
  const m = /^h(\d+)-h(\d+)$/.exec(text.trim());
  const a = m ? Number(m[1]) : NaN;
  const b = m ? Number(m[2]) : NaN;
  if (!m || !(a >= 1 && a <= hosts) || !(b >= 1 && b <= hosts) || a === b) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidFlag,
      `host pair ${JSON.stringify(text)}: expected hI-hJ with two different hosts in h1..h${hosts}`,
    );
  }
  return `h${Math.min(a, b)}-h${Math.max(a, b)}`;
}

/** The link between hosts `a` and `b` (1-based): the pair's override, else the default. */
export function linkBetween(
  a: number,
  b: number,
  link: LinkSpec,
  pairLinks: Readonly<Record<string, LinkSpec>>,
): LinkSpec {
  return pairLinks[`h${Math.min(a, b)}-h${Math.max(a, b)}`] ?? link;
}

function shortHash(text: string, hexDigits: number): string {
  return createHash('sha256').update(text).digest('hex').slice(0, hexDigits);
}
