/** `godwit migrate`: moves a running container to another host through the source host's agent. */
import type { Command } from 'commander';
import { AgentClient } from '../../agent/client.js';
import { parseHostPort, resolveAgentAddress } from '../../agent/target.js';
import { migrateThrough } from '../../migration/client.js';
import { ErrorCode, InvalidArgumentError, NotFoundError } from '../../core/errors.js';
import { formatMigrationReport, formatProgress } from '../../migration/format.js';
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
      'move a running container to another host (cold: stop, copy what the destination lacks, restore)',
    )
    .argument('<name>', 'container name')
    .requiredOption('--to <host>', 'destination: a testbed host name or the agent ADDR:PORT')
    .option('--strategy <strategy>', 'migration strategy: cold', 'cold')
    .option('--json', 'print the report as JSON')
    .action(async (name: string, o: { to: string; strategy: string; json?: boolean }) => {
      if (o.strategy !== 'cold') {
        throw new InvalidArgumentError(
          ErrorCode.InvalidFlag,
          `--strategy ${o.strategy}: this version supports cold`,
        );
      }
      const to = await resolveDestination(o.to);
      const source = await resolveSource(ctx(), name);
      const client = new AgentClient(source.address);
      try {
        const tty = !o.json && process.stdout.isTTY;
        const t0 = Date.now();
        const report = await migrateThrough(
          client,
          { name, to, strategy: 'cold' },
          {
            onReport: (r) => {
              if (tty) process.stdout.write(`\r\x1b[2K${formatProgress(r.progress, Date.now() - t0)}`);
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
