/** `godwit migrate`: moves a running container to another host through the source host's agent. */
import type { Command } from 'commander';
import { AgentClient } from '../../agent/client.js';
import { parseHostPort, resolveAgentAddress } from '../../agent/target.js';
import { migrateThrough, type MigrationRequest } from '../../migration/client.js';
import { FINAL_DUMPS, MIGRATION_STRATEGIES } from '../../core/migration.js';
import { DEFAULT_MAX_DOWNTIME_MS, DEFAULT_MAX_ROUNDS } from '../../memory/index.js';
import { ErrorCode, InvalidArgumentError, NotFoundError } from '../../core/errors.js';
import { formatMigrationReport, formatProgress, newProgressLines } from '../../migration/format.js';
import { readTestbed } from '../../testbed/testbed-file.js';
import type { CliContext } from '../context.js';
import { emit } from '../context.js';
import { ExitCode } from '../exit-codes.js';

/** Registers `migrate`. */
export function registerMigrateCommand(
  program: Command,
  ctx: () => CliContext,
  setExit: (code: number) => void,
): void {
  program
    .command('migrate')
    .description(
      'move a running container to another host\n' +
        '  cold:    stop, copy what the destination lacks, restore\n' +
        '  precopy: copy memory in rounds while it runs, then stop briefly for the rest\n' +
        '  postcopy: stop briefly, run on the destination at once, fetch memory after (on faults and in the background)\n' +
        '  hybrid:  pre-copy rounds, then a stop that moves no memory: the destination serves the pages unchanged since the last round from its own store, fetches the rest',
    )
    .argument('<name>', 'container name')
    .requiredOption('--to <host>', 'destination: a testbed host name or the agent ADDR:PORT')
    .option('--strategy <strategy>', `migration strategy: ${MIGRATION_STRATEGIES.join('|')}`, 'cold')
    .option(
      '--max-downtime <ms>',
      `precopy, hybrid: stop the rounds once the memory left for the stopped phase is predicted to cross in this time (default ${DEFAULT_MAX_DOWNTIME_MS})`,
    )
    .option(
      '--max-rounds <n>',
      `precopy, hybrid: most rounds, the first full copy included (default ${DEFAULT_MAX_ROUNDS})`,
    )
    .option(
      '--predict <on|off>',
      'precopy, hybrid: hold back pages predicted to be written again (default on)',
    )
    .option(
      '--final-dump <held|full>',
      'precopy: held (default) leaves the memory in the frozen processes, sends only the pages changed since the last round and restores once the destination holds every page; full has CRIU write every page (the classic stop-and-copy of the dump)',
    )
    .option('--json', 'print the report as JSON')
    .action(async (name: string, o: MigrateFlags) => {
      const req = parseMigrateFlags(o);
      const to = await resolveDestination(o.to);
      const source = await resolveSource(ctx(), name);
      const client = new AgentClient(source.address);
      try {
        const tty = !o.json && process.stdout.isTTY;
        const t0 = Date.now();
        const printed = { rounds: 0, closing: 0 };
        const report = await migrateThrough(
          client,
          { name, to, ...req },
          {
            onReport: (r) => {
              if (!tty) return;
              // One line per finished round and closing pass, then the live progress line.
              for (const line of newProgressLines(r, printed)) process.stdout.write(`\r\x1b[2K${line}\n`);
              process.stdout.write(`\r\x1b[2K${formatProgress(r.progress, Date.now() - t0)}`);
            },
          },
        );
        if (tty) process.stdout.write('\r\x1b[2K');
        emit(
          Boolean(o.json),
          () => formatMigrationReport(report),
          () => report,
        );
        if (report.outcome === 'rolled-back') setExit(ExitCode.Negative);
        else if (report.outcome === 'failed') setExit(ExitCode.Unavailable);
      } finally {
        client.close();
      }
    });
}

interface MigrateFlags {
  to: string;
  strategy: string;
  maxDowntime?: string;
  maxRounds?: string;
  predict?: string;
  finalDump?: string;
  json?: boolean;
}

function flagInt(flag: string, v: string | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min || n > max) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidFlag,
      `${flag} ${v}: expected an integer in ${min}..${max}`,
    );
  }
  return n;
}

/** Validates the strategy flags; round flags are refused with a strategy without rounds. */
export function parseMigrateFlags(o: MigrateFlags): Omit<MigrationRequest, 'name' | 'to'> {
  const strategy = MIGRATION_STRATEGIES.find((s) => s === o.strategy);
  if (strategy === undefined) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidFlag,
      `--strategy ${o.strategy}: expected one of ${MIGRATION_STRATEGIES.join(', ')}`,
    );
  }
  if (o.predict !== undefined && o.predict !== 'on' && o.predict !== 'off') {
    throw new InvalidArgumentError(ErrorCode.InvalidFlag, `--predict ${o.predict}: expected on or off`);
  }
  const maxDowntimeMs = flagInt('--max-downtime', o.maxDowntime, 1, 3_600_000);
  const maxRounds = flagInt('--max-rounds', o.maxRounds, 1, 1000);
  if (
    strategy !== 'precopy' &&
    strategy !== 'hybrid' &&
    (maxDowntimeMs ?? maxRounds ?? o.predict) !== undefined
  ) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidFlag,
      '--max-downtime, --max-rounds and --predict apply to --strategy precopy and hybrid',
    );
  }
  const finalDump = FINAL_DUMPS.find((d) => d === o.finalDump);
  if (o.finalDump !== undefined && finalDump === undefined) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidFlag,
      `--final-dump ${o.finalDump}: expected one of ${FINAL_DUMPS.join(', ')}`,
    );
  }
  if (finalDump !== undefined && strategy !== 'precopy') {
    throw new InvalidArgumentError(ErrorCode.InvalidFlag, '--final-dump applies to --strategy precopy');
  }
  return {
    strategy,
    ...(finalDump !== undefined ? { finalDump } : {}),
    ...(maxDowntimeMs !== undefined ? { maxDowntimeMs } : {}),
    ...(maxRounds !== undefined ? { maxRounds } : {}),
    ...(o.predict !== undefined ? { predict: o.predict === 'on' } : {}),
  };
}

/** `--to`: a testbed host (its agent's TCP address) or ADDR:PORT. */
async function resolveDestination(to: string): Promise<{ host: string; port: number; label: string }> {
  const hp = parseHostPort(to);
  if (hp) return { ...hp, label: to };
  const tb = await readTestbed();
  const host = tb?.hosts.find((h) => h.name === to);
  if (!host) {
    throw new NotFoundError(ErrorCode.HostNotFound, `no destination host named ${to}`, {
      hint: tb
        ? `known hosts: ${tb.hosts.map((h) => h.name).join(', ')}`
        : 'give ADDR:PORT of the destination agent',
    });
  }
  return { host: host.address, port: host.port, label: host.name };
}

/** The source agent: `--host`, or the testbed host that runs the container. */
async function resolveSource(
  ctx: CliContext,
  name: string,
): Promise<{ address: Awaited<ReturnType<typeof resolveAgentAddress>> }> {
  if (ctx.options.host !== undefined) return { address: await resolveAgentAddress(ctx.options.host) };
  const tb = await readTestbed();
  for (const h of tb?.hosts ?? []) {
    const client = new AgentClient({ socketPath: h.socket });
    try {
      const info = await client.inspect(name);
      if (info.status === 'running') return { address: { socketPath: h.socket } };
    } catch {
      // not there
    } finally {
      client.close();
    }
  }
  throw new NotFoundError(
    ErrorCode.ContainerNotFound,
    `no running container named ${name} on any testbed host`,
    {
      hint: 'say where it runs with --host',
    },
  );
}
