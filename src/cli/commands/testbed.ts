/** `godwit testbed up|down|status`: the emulated edge testbed. Thin: parse, call, format. */
import { join } from 'node:path';
import type { Command } from 'commander';
import { ErrorCode, InvalidArgumentError } from '../../core/errors.js';
import type { LinkSpec } from '../../core/testbed.js';
import { projectRoot } from '../../system/tools.js';
import { formatLinkSpec, parseLinkSpec } from '../../testbed/profiles.js';
import {
  describeLinks,
  testbedDown,
  testbedStatus,
  testbedUp,
  type TestbedDownReport,
  type TestbedStatus,
} from '../../testbed/testbed.js';
import type { TestbedRecord } from '../../testbed/testbed-file.js';
import { DEFAULT_TESTBED_NAME, MAX_HOSTS } from '../../testbed/topology.js';
import type { CliContext } from '../context.js';
import { emit } from '../context.js';
import { table } from '../format.js';

/** Registers `testbed up`, `testbed down` and `testbed status`. */
export function registerTestbedCommands(
  program: Command,
  ctx: () => CliContext,
  setExit: (code: number) => void,
): void {
  const testbed = program
    .command('testbed')
    .description('emulated edge testbed: hosts in network namespaces joined by shaped links');

  testbed
    .command('up')
    .description('create the testbed: hosts, shaped links, service network, agents')
    .option('--name <name>', 'testbed name (prefix of its namespaces)', DEFAULT_TESTBED_NAME)
    .option('--hosts <n>', `number of hosts (1-${MAX_HOSTS})`, '2')
    .option('--link <link>', 'link between hosts: lan, edge, 4g, wan or RATE,DELAY[,LOSS]', 'lan')
    .option('--pair <hI-hJ=LINK>', 'link of one pair of hosts, both directions (repeatable)', collect, [])
    .option('--client', 'add a client namespace on the service network (10.78.0.254)')
    .option('--no-agents', 'do not start the agents')
    .option('--json', 'print the testbed as JSON (progress goes to stderr)')
    .action(
      async (o: {
        name: string;
        hosts: string;
        link: string;
        pair: string[];
        client?: boolean;
        agents: boolean;
        json?: boolean;
      }) => {
        const hosts = Number(o.hosts);
        if (!Number.isInteger(hosts) || hosts < 1 || hosts > MAX_HOSTS) {
          throw new InvalidArgumentError(
            ErrorCode.InvalidFlag,
            `--hosts ${o.hosts}: expected a whole number from 1 to ${MAX_HOSTS}`,
          );
        }
        const record = await testbedUp({
          name: o.name,
          hosts,
          link: parseLinkSpec(o.link),
          pairLinks: parsePairs(o.pair),
          client: Boolean(o.client),
          startAgents: o.agents,
          godwitBin: join(projectRoot(), 'bin', 'godwit.js'),
          toolsDir: ctx().options.toolsDir,
          log: progress(Boolean(o.json)),
        });
        emit(
          Boolean(o.json),
          () => formatTestbed(record),
          () => record,
        );
      },
    );

  testbed
    .command('down')
    .description('remove the testbed and everything in it (idempotent; works without testbed.json)')
    .option('--name <name>', 'testbed name (default: the recorded one, else gw)')
    .option('--json', 'print what was removed as JSON (progress goes to stderr)')
    .action(async (o: { name?: string; json?: boolean }) => {
      const report = await testbedDown({ name: o.name, log: progress(Boolean(o.json)) });
      emit(
        Boolean(o.json),
        () => formatDown(report),
        () => report,
      );
      if (report.leftovers.length > 0) setExit(1);
    });

  testbed
    .command('status')
    .description('show the recorded testbed and whether its hosts and agents are alive')
    .option('--json', 'print the status as JSON')
    .action(async (o: { json?: boolean }) => {
      const status = await testbedStatus();
      emit(
        Boolean(o.json),
        () => formatStatus(status),
        () => status,
      );
      if (!status.testbed) setExit(1);
    });
}

/** Parses repeated `hI-hJ=LINK` flags (the pair itself is checked against --hosts by testbedUp). */
export function parsePairs(values: readonly string[]): Record<string, LinkSpec> {
  const pairs: Record<string, LinkSpec> = {};
  for (const v of values) {
    const eq = v.indexOf('=');
    if (eq <= 0) throw new InvalidArgumentError(ErrorCode.InvalidFlag, `--pair ${v}: expected hI-hJ=LINK`);
    pairs[v.slice(0, eq).trim()] = parseLinkSpec(v.slice(eq + 1));
  }
  return pairs;
}

function progress(json: boolean): (line: string) => void {
  return (line) => (json ? process.stderr : process.stdout).write(line + '\n');
}

function formatTestbed(tb: TestbedRecord): string {
  const rows = tb.hosts.map((h) => [
    h.name,
    h.netns,
    `${h.address}:${h.port}`,
    h.agentPid === undefined ? '-' : String(h.agentPid),
    h.socket,
  ]);
  const lines = [table(['HOST', 'NETNS', 'ADDRESS', 'AGENT', 'SOCKET'], rows), describeLinks(tb)];
  if (tb.client) lines.push(`client ${tb.client.netns} ${tb.client.address}`);
  const sn = tb.serviceNetwork;
  lines.push(
    `service network ${sn.subnet}/${sn.prefixLength} (${sn.firstIp}-${sn.lastIp}) on ${sn.bridge} in ${sn.bridgeNetns}`,
  );
  return lines.join('\n');
}

function formatDown(r: TestbedDownReport): string {
  const parts = [
    `${r.namespaces.length} namespace(s)`,
    `${r.killedPids.length} process(es)`,
    `${r.containers.length} container(s)`,
    `${r.mounts.length} mount(s)`,
    `${r.dirs.length} dir(s)`,
  ];
  const head = `testbed ${r.name}: removed ${parts.join(', ')}`;
  return r.leftovers.length === 0 ? head : `${head}\nleft behind: ${r.leftovers.join(', ')}`;
}

function formatStatus(s: TestbedStatus): string {
  if (!s.testbed) return s.error ? `no usable testbed: ${s.error}` : `no testbed (${s.file})`;
  const tb = s.testbed;
  const rows = s.hosts.map((h) => [
    h.name,
    h.netnsPresent ? h.netns : `${h.netns} (missing)`,
    `${h.address}:${h.port}`,
    h.agentPid === undefined ? '-' : `${h.agentPid}${h.agentAlive ? '' : ' (dead)'}`,
    h.agentHealthy ? 'healthy' : '-',
  ]);
  const lines = [
    `testbed ${tb.name} (${tb.state}, created ${tb.createdAt}) ${s.file}`,
    table(['HOST', 'NETNS', 'ADDRESS', 'AGENT', 'HEALTH'], rows),
    `links ${formatLinkSpec(tb.link)}` +
      Object.entries(tb.pairLinks)
        .map(([k, l]) => `; ${k} ${formatLinkSpec(l)}`)
        .join(''),
    `switch ${tb.switchNetns}: ${s.switchPresent ? 'present' : 'missing'}` +
      (s.linkd ? `, godwit-linkd ${s.linkd.pid} ${s.linkd.alive ? 'running' : 'dead'}` : ''),
  ];
  if (tb.client)
    lines.push(`client ${tb.client.netns} ${tb.client.address}: ${s.clientPresent ? 'present' : 'missing'}`);
  lines.push(
    s.leases.length === 0
      ? 'service network: no containers attached'
      : `service network: ${s.leases.map((l) => `${l.ip}=${l.key}`).join(', ')}`,
  );
  return lines.join('\n');
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
