/**
 * testbed.json: where it lives, its validation, and atomic writes. Agents and the CLI read it;
 * only `testbed up` and `testbed down` write it.
 */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { ErrorCode, FailedPreconditionError } from '../core/errors.js';
import { TESTBED_FILE } from '../core/testbed.js';
import type { LinkSpec, ServiceNetworkInfo, TestbedHost, TestbedInfo } from '../core/testbed.js';
import { validateLinkSpec } from './profiles.js';
import { TESTBED_NAME } from './topology.js';

/**
 * What testbed.json holds: the core TestbedInfo plus what `down` and `status` need. Readers that
 * only know TestbedInfo ignore the rest.
 */
export interface TestbedRecord extends TestbedInfo {
  /** `creating` from the first write until every part (and agent) is up. */
  state: 'creating' | 'ready';
  /** Parent of the hosts' state directories; removed by `down`. */
  baseStateDir: string;
  /** Run-time files: leases, godwit-linkd's log. Removed by `down`. */
  runDir: string;
  /** Namespace of godwit-linkd and br-svc. */
  switchNetns: string;
  /** The host network's switch process, when running. */
  linkd?: { pid: number; binary: string; log: string };
}

/** The directory holding testbed.json: $GODWIT_TESTBED_DIR, else /run/godwit/testbed. */
export function testbedDir(): string {
  return process.env['GODWIT_TESTBED_DIR'] ?? '/run/godwit/testbed';
}

/** Path of testbed.json in `dir` (default: testbedDir()). */
export function testbedFile(dir: string = testbedDir()): string {
  return join(dir, TESTBED_FILE);
}

/**
 * The testbed described in `dir`'s testbed.json (default: testbedDir()), or undefined when there
 * is none. Throws TestbedCorrupt when the file is not a valid description.
 */
export async function readTestbed(dir: string = testbedDir()): Promise<TestbedRecord | undefined> {
  return readTestbedFile(testbedFile(dir));
}

/** Like readTestbed, for an explicit path of a testbed.json. */
export async function readTestbedFile(path: string): Promise<TestbedRecord | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw corrupt(path, 'not JSON', err);
  }
  return parseTestbedRecord(doc, path);
}

/** Writes testbed.json atomically (temp file + rename) into `dir`. */
export async function writeTestbed(record: TestbedRecord, dir: string = testbedDir()): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const path = testbedFile(dir);
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, JSON.stringify(record, null, 2) + '\n', { mode: 0o644 });
  await rename(tmp, path);
}

/** Removes testbed.json from `dir`. */
export async function removeTestbedFile(dir: string = testbedDir()): Promise<void> {
  await rm(testbedFile(dir), { force: true });
}

/** Validates a parsed testbed.json; throws TestbedCorrupt naming the first bad field. */
export function parseTestbedRecord(doc: unknown, source = 'testbed.json'): TestbedRecord {
  const bad = (field: string): FailedPreconditionError => corrupt(source, `bad or missing ${field}`);
  const o = obj(doc);
  if (!o || o['version'] !== 1) throw bad('version');
  const name = o['name'];
  if (typeof name !== 'string' || !TESTBED_NAME.test(name)) throw bad('name');
  if (typeof o['createdAt'] !== 'string') throw bad('createdAt');
  const state = o['state'] ?? 'ready';
  if (state !== 'creating' && state !== 'ready') throw bad('state');
  const link = linkSpec(o['link'], () => bad('link'));
  const pairsIn = obj(o['pairLinks']);
  if (!pairsIn) throw bad('pairLinks');
  const pairLinks: Record<string, LinkSpec> = {};
  for (const [k, v] of Object.entries(pairsIn)) {
    if (!/^h\d+-h\d+$/.test(k)) throw bad(`pairLinks.${k}`);
    pairLinks[k] = linkSpec(v, () => bad(`pairLinks.${k}`));
  }
  const hostsIn = o['hosts'];
  if (!Array.isArray(hostsIn) || hostsIn.length === 0) throw bad('hosts');
  const hosts = hostsIn.map((h: unknown, i): TestbedHost => {
    const ho = obj(h);
    const f = (k: string): string => {
      const v = ho?.[k];
      if (typeof v !== 'string' || v.length === 0) throw bad(`hosts[${i}].${k}`);
      return v;
    };
    const port = ho?.['port'];
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw bad(`hosts[${i}].port`);
    }
    const host: TestbedHost = {
      name: f('name'),
      netns: f('netns'),
      stateDir: f('stateDir'),
      socket: f('socket'),
      address: f('address'),
      port,
    };
    if (!isAbsolute(host.stateDir) || !isAbsolute(host.socket)) throw bad(`hosts[${i}].stateDir`);
    const pid = ho?.['agentPid'];
    if (pid !== undefined) {
      if (typeof pid !== 'number' || !Number.isInteger(pid) || pid < 1) throw bad(`hosts[${i}].agentPid`);
      host.agentPid = pid;
    }
    return host;
  });
  let client: TestbedInfo['client'];
  if (o['client'] !== undefined) {
    const c = obj(o['client']);
    if (!c || typeof c['netns'] !== 'string' || typeof c['address'] !== 'string') throw bad('client');
    client = { netns: c['netns'], address: c['address'] };
  }
  const serviceNetwork = parseServiceNetworkInfo(o['serviceNetwork'], () => bad('serviceNetwork'));
  const str = (k: string): string => {
    const v = o[k];
    if (typeof v !== 'string' || v.length === 0) throw bad(k);
    return v;
  };
  const record: TestbedRecord = {
    version: 1,
    name,
    createdAt: o['createdAt'],
    state,
    link,
    pairLinks,
    hosts,
    ...(client ? { client } : {}),
    serviceNetwork,
    baseStateDir: str('baseStateDir'),
    runDir: str('runDir'),
    switchNetns: str('switchNetns'),
  };
  if (!isAbsolute(record.baseStateDir) || !isAbsolute(record.runDir)) throw bad('baseStateDir');
  if (o['linkd'] !== undefined) {
    const l = obj(o['linkd']);
    const pid = l?.['pid'];
    if (!l || typeof pid !== 'number' || !Number.isInteger(pid) || pid < 1) throw bad('linkd');
    if (typeof l['binary'] !== 'string' || typeof l['log'] !== 'string') throw bad('linkd');
    record.linkd = { pid, binary: l['binary'], log: l['log'] };
  }
  return record;
}

function parseServiceNetworkInfo(v: unknown, bad: () => Error): ServiceNetworkInfo {
  const o = obj(v);
  if (!o) throw bad();
  const s = (k: string): string => {
    const x = o[k];
    if (typeof x !== 'string' || x.length === 0) throw bad();
    return x;
  };
  const prefixLength = o['prefixLength'];
  if (typeof prefixLength !== 'number' || !Number.isInteger(prefixLength) || prefixLength < 8) throw bad();
  const info: ServiceNetworkInfo = {
    bridgeNetns: s('bridgeNetns'),
    bridge: s('bridge'),
    subnet: s('subnet'),
    prefixLength,
    firstIp: s('firstIp'),
    lastIp: s('lastIp'),
    leaseDir: s('leaseDir'),
  };
  if (!isAbsolute(info.leaseDir)) throw bad();
  return info;
}

function linkSpec(v: unknown, bad: () => Error): LinkSpec {
  const o = obj(v);
  if (!o) throw bad();
  const spec = { name: o['name'], rateMbit: o['rateMbit'], delayMs: o['delayMs'], lossPct: o['lossPct'] };
  if (
    typeof spec.name !== 'string' ||
    typeof spec.rateMbit !== 'number' ||
    typeof spec.delayMs !== 'number' ||
    typeof spec.lossPct !== 'number'
  ) {
    throw bad();
  }
  try {
    return validateLinkSpec(spec as LinkSpec);
  } catch {
    throw bad();
  }
}

function obj(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}

function corrupt(path: string, why: string, cause?: unknown): FailedPreconditionError {
  return new FailedPreconditionError(ErrorCode.TestbedCorrupt, `${path}: ${why}`, {
    cause,
    hint: 'remove the testbed with `godwit testbed down --name NAME`',
  });
}
