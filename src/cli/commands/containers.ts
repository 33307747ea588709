/** Container commands: run, ps, exec, stop, rm, logs, checkpoint, restore. Thin: parse, call, format. */
import type { Command } from 'commander';
import { ErrorCode, InvalidArgumentError } from '../../core/errors.js';
import type { ContainerInfo, RunSpec } from '../../core/runtime.js';
import { parseMemorySize } from '../../runtime/oci-config.js';
import type { CliContext } from '../context.js';
import { emit } from '../context.js';
import { formatBytes, formatMs, table, truncate } from '../format.js';

type Ctx = () => CliContext;

/** Registers the container commands on `program`. `ctx` yields the invocation's context. */
export function registerContainerCommands(program: Command, ctx: Ctx, setExit: (code: number) => void): void {
  program
    .command('run')
    .description('create and start a container')
    .argument('<name>', 'container name')
    .argument('<cmd...>', 'command to run, after --')
    .option('--image <image>', 'root filesystem image', 'busybox')
    .option('-e, --env <K=V>', 'set an environment variable (repeatable)', collect, [])
    .option('--memory <limit>', 'memory limit, e.g. 256m or 1g')
    .option('--json', 'print the container as JSON')
    .action(
      async (
        name: string,
        cmd: string[],
        o: { image: string; env: string[]; memory?: string; json?: boolean },
      ) => {
        const spec: RunSpec = { name, image: o.image, args: cmd, env: parseEnv(o.env) };
        if (o.memory !== undefined) {
          const bytes = parseMemorySize(o.memory);
          if (bytes === undefined) {
            throw new InvalidArgumentError(ErrorCode.InvalidFlag, `--memory ${o.memory}: not a size`, {
              hint: 'use e.g. 256m, 1g or a number of bytes',
            });
          }
          spec.memoryLimitBytes = bytes;
        }
        const { runtime } = await ctx().services();
        const info = await runtime.run(spec);
        emit(
          Boolean(o.json),
          () => `${info.name} ${info.status} (pid ${info.pid ?? '-'})`,
          () => info,
        );
      },
    );

  program
    .command('ps')
    .description('list the containers of this host')
    .option('--json', 'print a JSON array')
    .action(async (o: { json?: boolean }) => {
      const { runtime } = await ctx().services();
      const list = await runtime.list();
      emit(
        Boolean(o.json),
        () => psTable(list),
        () => list,
      );
    });

  program
    .command('exec')
    .description('run a command inside a running container; exits with its exit code')
    .argument('<name>', 'container name')
    .argument('<cmd...>', 'command to run, after --')
    .action(async (name: string, cmd: string[]) => {
      const { runtime } = await ctx().services();
      const res = await runtime.exec(name, cmd);
      setExit(res.exitCode);
    });

  program
    .command('stop')
    .description('stop a container: SIGTERM, then SIGKILL after the timeout')
    .argument('<name>', 'container name')
    .option('-t, --timeout <seconds>', 'seconds to wait before SIGKILL', '10')
    .action(async (name: string, o: { timeout: string }) => {
      const seconds = Number(o.timeout);
      if (!Number.isFinite(seconds) || seconds < 0) {
        throw new InvalidArgumentError(
          ErrorCode.InvalidFlag,
          `--timeout ${o.timeout}: not a number of seconds`,
        );
      }
      const { runtime } = await ctx().services();
      await runtime.stop(name, { timeoutMs: seconds * 1000 });
      console.log(`${name} stopped`);
    });

  program
    .command('rm')
    .description('remove a stopped container and its files')
    .argument('<names...>', 'container names')
    .option('-f, --force', 'kill it first if it is running')
    .action(async (names: string[], o: { force?: boolean }) => {
      const { runtime } = await ctx().services();
      for (const name of names) {
        await runtime.remove(name, { force: Boolean(o.force) });
        console.log(`${name} removed`);
      }
    });

  program
    .command('logs')
    .description('print what a container has written to stdout and stderr')
    .argument('<name>', 'container name')
    .option('-n, --tail <lines>', 'only the last N lines')
    .action(async (name: string, o: { tail?: string }) => {
      const { runtime } = await ctx().services();
      let text = await runtime.logs(name);
      if (o.tail !== undefined) {
        const n = Number(o.tail);
        if (!Number.isInteger(n) || n < 0)
          throw new InvalidArgumentError(ErrorCode.InvalidFlag, `--tail ${o.tail}`);
        text = text.split('\n').filter(Boolean).slice(-n).join('\n') + (n > 0 ? '\n' : '');
      }
      process.stdout.write(text);
    });

  program
    .command('checkpoint')
    .description('checkpoint a running container into a directory (CRIU images + root filesystem changes)')
    .argument('<name>', 'container name')
    .requiredOption('--to <dir>', 'new or empty directory to write the checkpoint to')
    .option('--leave-running', 'keep the container running after the checkpoint')
    .option('--tcp-established', 'checkpoint established TCP connections')
    .option('--json', 'print the result as JSON')
    .action(
      async (
        name: string,
        o: { to: string; leaveRunning?: boolean; tcpEstablished?: boolean; json?: boolean },
      ) => {
        const { runtime } = await ctx().services();
        const res = await runtime.checkpoint(name, {
          dir: o.to,
          leaveRunning: Boolean(o.leaveRunning),
          tcpEstablished: Boolean(o.tcpEstablished),
        });
        emit(
          Boolean(o.json),
          () =>
            `checkpointed ${name} to ${res.dir} in ${formatMs(res.durationMs)}: ${formatBytes(res.imageBytes)} ` +
            `(${formatBytes(res.pagesBytes)} of memory pages)${res.leftRunning ? '; still running' : ''}`,
          () => res,
        );
      },
    );

  program
    .command('restore')
    .description('restore a checkpoint directory as a new container')
    .argument('<dir>', 'checkpoint directory written by godwit checkpoint')
    .requiredOption('--name <name>', 'name of the restored container')
    .option('--json', 'print the result as JSON')
    .action(async (dir: string, o: { name: string; json?: boolean }) => {
      const { runtime } = await ctx().services();
      const res = await runtime.restore({ dir, name: o.name });
      emit(
        Boolean(o.json),
        () => `restored ${res.name} (pid ${res.pid}) in ${formatMs(res.durationMs)}`,
        () => res,
      );
    });
}

function psTable(list: readonly ContainerInfo[]): string {
  if (list.length === 0) return 'no containers';
  return table(
    ['NAME', 'STATUS', 'PID', 'IP', 'IMAGE', 'CREATED', 'COMMAND'],
    list.map((c) => [
      c.name,
      c.status + (c.exit !== undefined && c.status === 'stopped' ? ` (${c.exit})` : ''),
      c.pid === undefined ? '-' : String(c.pid),
      c.network?.ip ?? '-',
      c.image,
      c.createdAt.replace('T', ' ').slice(0, 19),
      truncate(c.args.join(' '), 40),
    ]),
  );
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Parses repeated `K=V` flags; throws InvalidFlag on a malformed one. */
export function parseEnv(pairs: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    const key = eq > 0 ? pair.slice(0, eq) : '';
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      throw new InvalidArgumentError(ErrorCode.InvalidFlag, `--env ${pair}: expected KEY=VALUE`);
    }
    env[key] = pair.slice(eq + 1);
  }
  return env;
}
