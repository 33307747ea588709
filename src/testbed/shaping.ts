/**
 * How a testbed shapes its host network. Pure: builds the `tc` and `godwit-linkd` arguments.
 *
 * This machine kind's kernel has htb but neither netem nor fq/etf (checked on 6.18: no
 * CONFIG_NET_SCH_NETEM, _FQ, _ETF; no loadable modules), so the work is split:
 *  - rate: an htb root on each host's eth0 with one class per destination host (rate and ceil
 *    = that pair's rate), u32 filters on the destination address; everything else (ARP, other
 *    destinations) goes through htb's direct queue, unshaped;
 *  - delay and loss: godwit-linkd in the switch namespace holds each frame from host I to host J
 *    for the pair's one-way delay and drops it with the pair's loss rate.
 * So a frame is first paced at the pair's rate, then delayed, as on a serial link.
 */
import type { LinkSpec } from '../core/testbed.js';
import { hostAddress, hostName, linkBetween } from './topology.js';

/** The htb burst for a rate: one millisecond of traffic, and at least one 64 KiB GSO frame (plus headers). */
export function htbBurstBytes(rateMbit: number): number {
  return Math.max(70_000, Math.ceil((rateMbit * 1e6) / 8 / 1000));
}

/** tc's spelling of a rate in Mbit/s (kbit below 1 Mbit/s, so fractions survive). */
export function tcRate(rateMbit: number): string {
  return rateMbit >= 1 && Number.isInteger(rateMbit)
    ? `${rateMbit}mbit`
    : `${Math.round(rateMbit * 1000)}kbit`;
}

/**
 * The `tc` argument lists (without `tc`) that shape host `index`'s egress on `dev` in `netns`,
 * one class per other host: classid 1:<peer index in hex>.
 */
export function htbCommands(
  netns: string,
  index: number,
  hosts: number,
  link: LinkSpec,
  pairLinks: Readonly<Record<string, LinkSpec>>,
  dev = 'eth0',
): string[][] {
  const cmds: string[][] = [['-n', netns, 'qdisc', 'replace', 'dev', dev, 'root', 'handle', '1:', 'htb']];
  for (let peer = 1; peer <= hosts; peer++) {
    if (peer === index) continue;
    const l = linkBetween(index, peer, link, pairLinks);
    const classid = `1:${peer.toString(16)}`;
    const rate = tcRate(l.rateMbit);
    const burst = String(htbBurstBytes(l.rateMbit));
    cmds.push(
      ['-n', netns, 'class', 'add', 'dev', dev, 'parent', '1:', 'classid', classid, 'htb'].concat([
        'rate',
        rate,
        'ceil',
        rate,
        'burst',
        burst,
        'cburst',
        burst,
        'quantum',
        '65536',
      ]),
      ['-n', netns, 'qdisc', 'add', 'dev', dev, 'parent', classid, 'pfifo', 'limit', '10000'],
      ['-n', netns, 'filter', 'add', 'dev', dev, 'parent', '1:', 'protocol', 'ip', 'prio', '1'].concat([
        'u32',
        'match',
        'ip',
        'dst',
        `${hostAddress(peer)}/32`,
        'flowid',
        classid,
      ]),
    );
  }
  return cmds;
}

/** godwit-linkd's arguments: one port per host (`h<i>`), one `--link` per ordered pair with a delay or loss. */
export function linkdArgs(
  hosts: number,
  link: LinkSpec,
  pairLinks: Readonly<Record<string, LinkSpec>>,
): string[] {
  const args: string[] = [];
  for (let i = 1; i <= hosts; i++) args.push('--port', hostName(i));
  for (let i = 1; i <= hosts; i++) {
    for (let j = 1; j <= hosts; j++) {
      if (i === j) continue;
      const l = linkBetween(i, j, link, pairLinks);
      if (l.delayMs === 0 && l.lossPct === 0) continue;
      args.push('--link', `${hostName(i)},${hostName(j)},${Math.round(l.delayMs * 1000)},${l.lossPct}`);
    }
  }
  return args;
}
