/**
 * The godwit CLI. Commands are thin: they parse and validate flags, call one domain
 * function, and format its result. Errors are printed here, in one place, as one line
 * `godwit: …` (plus hint and quoted log lines), with a stack trace only under --debug.
 */
import { Command, CommanderError } from 'commander';
import { isGodwitError } from '../core/errors.js';
import { loadServiceNetwork } from '../testbed/service-network.js';
import { registerAgentCommand } from './commands/agent.js';
import { registerBenchCommand } from './commands/bench.js';
import { registerMigrateCommand } from './commands/migrate.js';
import { registerProbeCommand } from './commands/probe.js';
import { registerTestbedCommands } from './commands/testbed.js';
import { registerContainerCommands } from './commands/containers.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerSystemCommands } from './commands/system.js';
import { CliContext } from './context.js';
import { ExitCode, exitCodeFor } from './exit-codes.js';

/** Runs the CLI on `argv` (without node and script) and returns the exit code. Never calls process.exit. */
export async function main(argv: readonly string[]): Promise<number> {
  let exitCode: number = ExitCode.Ok;
  let context: CliContext | undefined;
  const program = new Command('godwit');
  const ctx = (): CliContext => {
    context ??= CliContext.fromFlags(
      program.opts<{ stateDir?: string; toolsDir?: string; debug?: boolean; host?: string }>(),
    );
    return context;
  };
  const setExit = (code: number): void => {
    exitCode = code;
  };

  program
    .description('godwit: live migration of running Linux containers between hosts (runc + CRIU)')
    .version(await packageVersion(), '-V, --version')
    .option('--state-dir <dir>', 'state directory of this godwit host (env GODWIT_STATE_DIR)', undefined)
    .option('--tools-dir <dir>', 'where godwit keeps CRIU and its helpers (env GODWIT_TOOLS_DIR)', undefined)
    .option('--debug', 'print stack traces on errors')
    .option(
      '--host <host>',
      "act on that host's agent: a socket path, ADDR:PORT, or a testbed host name (default: this machine's runc)",
    )
    .enablePositionalOptions()
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({
      writeErr: (s) => process.stderr.write(s),
      outputError: (s, write) => write(`godwit: ${s.replace(/^error: /, '')}`),
    });

  registerSystemCommands(program, ctx, setExit);
  registerContainerCommands(program, ctx, setExit);
  registerMigrateCommand(program, ctx, setExit);
  registerDemoCommand(program, ctx, setExit);
  registerProbeCommand(program, ctx, setExit);
  registerBenchCommand(program, ctx, setExit);
  registerTestbedCommands(program, ctx, setExit);
  registerAgentCommand(program, ctx, setExit, { makeNetwork: (path) => loadServiceNetwork(path) });
  for (const cmd of program.commands) cmd.exitOverride();

  try {
    await program.parseAsync([...argv], { from: 'user' });
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (
        err.code === 'commander.helpDisplayed' ||
        err.code === 'commander.version' ||
        err.code === 'commander.help'
      ) {
        return ExitCode.Ok;
      }
      return ExitCode.Usage;
    }
    printError(
      err,
      context?.options.debug ?? (argv.includes('--debug') || process.env['GODWIT_DEBUG'] === '1'),
    );
    return exitCodeFor(err);
  }
}

/** Prints an error the way every godwit command does. */
export function printError(err: unknown, debug: boolean): void {
  const lines: string[] = [];
  if (isGodwitError(err)) {
    lines.push(`godwit: ${err.message}`);
    for (const d of err.details) lines.push(`  | ${d}`);
    if (err.hint) lines.push(`  hint: ${err.hint}`);
    if (debug) lines.push(`  code: ${err.code}`, err.stack ?? '');
  } else {
    lines.push(`godwit: internal error: ${err instanceof Error ? err.message : String(err)}`);
    if (debug && err instanceof Error) lines.push(err.stack ?? '');
    else lines.push('  hint: run again with --debug for a stack trace, and report it');
  }
  process.stderr.write(lines.join('\n') + '\n');
}

async function packageVersion(): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  const { projectRoot } = await import('../system/tools.js');
  try {
    const pkg = JSON.parse(await readFile(`${projectRoot()}/package.json`, 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}
