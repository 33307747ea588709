/** `godwit agent`: runs the per-host daemon until SIGTERM or SIGINT. */
import { lazyPagesSupported } from '../../criu/features.js';
import { ensureKdatCache } from '../../criu/kdat-cache.js';
import { ensurePipeMaxSize } from '../../criu/pipe-size.js';
import { watchEventLoop } from '../../system/loop-watch.js';
import { basename, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { startAgent } from '../../agent/server.js';
import { JsonStreamLogger, teeLogger } from '../../agent/stream-logger.js';
import { formatAgentAddress } from '../../agent/client.js';
import { parseHostPort } from '../../agent/target.js';
import { ErrorCode, FailedPreconditionError, InvalidArgumentError, errorMessage } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { AddressAllocator, NetworkProvider } from '../../core/network.js';
import { startMigrationService } from '../../migration/service.js';
import { useSpawner } from '../../system/spawner.js';
import { JsonFileLogger } from '../../system/file-logger.js';
import type { CliContext } from '../context.js';
import { exitCodeFor } from '../exit-codes.js';

/** Hooks the agent command is built with. */
export interface AgentCommandOptions {
  /**
   * Opens the service network described by FILE (`godwit agent --service-network FILE`);
   * the agent's runtime then gives containers addresses on it. Without this hook the flag
   * is refused with NoServiceNetwork.
   */
  makeNetwork?: (path: string) => Promise<NetworkProvider & AddressAllocator>;
}

/** Name of the agent's socket in the state directory, unless --socket says otherwise. */
export const AGENT_SOCKET = 'agent.sock';

/** After shutdown, how long work still pending (e.g. a runc call whose request was cut) may keep the process alive. */
const EXIT_AFTER_CLOSE_MS = 10_000;

/** Registers `agent`. */
export function registerAgentCommand(
  program: Command,
  ctx: () => CliContext,
  setExit: (code: number) => void,
  options: AgentCommandOptions = {},
): void {
  program
    .command('agent')
    .description(
      "run this host's agent: serves its containers over a JSON API on a unix socket (and TCP) until SIGTERM",
    )
    .option('--socket <path>', `unix socket to serve on (default <state-dir>/${AGENT_SOCKET})`)
    .option(
      '--listen <addr:port>',
      'also serve on TCP, e.g. 10.77.0.1:7070 (unauthenticated: host network only)',
    )
    .option(
      '--service-network <file>',
      "description of the host's service network; containers get addresses on it",
    )
    .option(
      '--transfer-port <port>',
      'port of the state transfer server on the --listen address (default: its port + 1)',
    )
    .option('--label <name>', "this host's name in migration reports (default: the state directory's name)")
    .option('--json-logs', 'also write the structured log to stderr')
    .option(
      '--keep-pipe-max-size',
      "leave /proc/sys/fs/pipe-max-size as it is (by default raised to 4 MiB: CRIU's page pipes, a shorter dump)",
    )
    .action(
      async (o: {
        socket?: string;
        listen?: string;
        serviceNetwork?: string;
        transferPort?: string;
        label?: string;
        jsonLogs?: boolean;
        keepPipeMaxSize?: boolean;
      }) => {
        if (ctx().options.host !== undefined) {
          throw new InvalidArgumentError(ErrorCode.InvalidFlag, '--host does not apply to godwit agent', {
            hint: 'the agent serves the host of --state-dir; use --socket and --listen to say where',
          });
        }
        const listen = o.listen === undefined ? undefined : parseHostPort(o.listen);
        if (o.listen !== undefined && listen === undefined) {
          throw new InvalidArgumentError(ErrorCode.InvalidFlag, `--listen ${o.listen}: expected ADDR:PORT`, {
            hint: 'e.g. --listen 127.0.0.1:7070 or --listen [::1]:7070',
          });
        }
        // Commands are spawned from a small helper started now, while this process is small:
        // forking from an agent that holds chunks in memory costs up to tens of ms per command.
        useSpawner();
        const { state, tools } = await ctx().localHost();
        const fileLog = new JsonFileLogger(join(state.logsDir, 'agent.log'), { pid: process.pid });
        const log: Logger = o.jsonLogs
          ? teeLogger(fileLog, new JsonStreamLogger(process.stderr, { pid: process.pid }))
          : fileLog;

        let network: (NetworkProvider & AddressAllocator) | undefined;
        if (o.serviceNetwork !== undefined) {
          if (!options.makeNetwork) {
            throw new FailedPreconditionError(
              ErrorCode.NoServiceNetwork,
              '--service-network is not supported by this build of godwit',
            );
          }
          network = await options.makeNetwork(resolve(o.serviceNetwork));
        }
        const runtime = await ctx().localRuntime({
          log: log.child({ component: 'runtime' }),
          ...(network === undefined ? {} : { network }),
        });
        // Default: the agent's port + 1; an ephemeral agent port (0) gets an ephemeral one too.
        const defaultTransferPort = listen ? (listen.port === 0 ? 0 : listen.port + 1) : undefined;
        const transferPort = o.transferPort === undefined ? defaultTransferPort : Number(o.transferPort);
        if (
          transferPort !== undefined &&
          (!Number.isInteger(transferPort) || transferPort < 0 || transferPort > 65_535)
        ) {
          throw new InvalidArgumentError(
            ErrorCode.InvalidFlag,
            `--transfer-port ${o.transferPort}: expected 0..65535`,
          );
        }
        // Incoming migrations need a TCP endpoint for the transfer server: only with --listen.
        // Post-copy and hybrid need userfaultfd here; without it they fall back to pre-copy.
        const lazy = await lazyPagesSupported(tools.criu);
        if (!lazy.ok) log.warn('lazy memory migration unavailable here', { reason: lazy.reason });
        const migration = await startMigrationService({
          runtime,
          lazyPages: lazy.ok,
          writeTracker: tools.wptrack,
          stateRoot: state.root,
          hostLabel: o.label ?? basename(state.root),
          ...(listen && transferPort !== undefined
            ? { transferListen: { host: listen.host, port: transferPort } }
            : {}),
          log,
        });
        // CRIU's kernel probes, once per boot instead of in every dump and restore (~25 ms each).
        log.info('criu kernel-feature cache', {
          ...(await ensureKdatCache({ criu: tools.criu, criuVersion: tools.criuVersion })),
        });
        // Larger page pipes: CRIU's dump of 1 GiB ready ~100 ms sooner (criu/pipe-size.ts).
        const pipes = await ensurePipeMaxSize({ raise: o.keepPipeMaxSize !== true });
        if (pipes.state === 'left') log.warn('pipe-max-size below what CRIU can use', { ...pipes });
        else log.info('pipe-max-size', { ...pipes });
        // Stalls of the agent's event loop show in its log (they lengthen a migration's stop).
        watchEventLoop(log.child({ component: 'agent' }), {
          thresholdMs: Number(process.env['GODWIT_LOOP_WATCH_MS'] ?? 100) || 100,
        });
        const handle = await startAgent({
          routes: migration.routes,
          runtime,
          socketPath: resolve(o.socket ?? join(state.root, AGENT_SOCKET)),
          ...(listen === undefined ? {} : { listen }),
          log,
          version: program.version() ?? '0.0.0',
          hostId: state.hostId,
        });
        process.stdout.write(
          `agent listening on ${handle.socketPath}` +
            (handle.tcp ? ` and ${formatAgentAddress(handle.tcp)}` : '') +
            '\n' +
            (migration.transfer ? `state transfers on ${formatAgentAddress(migration.transfer)}\n` : ''),
        );

        await new Promise<void>((done) => {
          let signals = 0;
          const onSignal = (signal: NodeJS.Signals): void => {
            signals++;
            log.info('signal received', { signal });
            if (signals > 1) {
              void handle.close({ graceMs: 0 });
              return;
            }
            handle
              .close()
              .then(() => migration.close())
              .catch((err: unknown) => {
                log.error('shutdown failed', { err: errorMessage(err) });
                setExit(exitCodeFor(err));
              })
              .finally(() => {
                process.off('SIGTERM', onSignal);
                process.off('SIGINT', onSignal);
                done();
              });
          };
          process.on('SIGTERM', onSignal);
          process.on('SIGINT', onSignal);
        });
        // Requests cut at the end of the grace period may still have a runc call running;
        // do not let one hold the process forever. Containers are unaffected either way.
        setTimeout(() => {
          log.warn('work still pending after shutdown; exiting anyway');
          process.exit();
        }, EXIT_AFTER_CLOSE_MS).unref();
      },
    );
}
