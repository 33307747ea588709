/** What every CLI command is given: resolved global options and lazily built services. */
import { join } from 'node:path';
import { AgentClient } from '../agent/client.js';
import { resolveAgentAddress } from '../agent/target.js';
import type { Logger } from '../core/logger.js';
import type { AddressAllocator, NetworkProvider } from '../core/network.js';
import type { ContainerRuntime } from '../core/runtime.js';
import { openLocalRuntime } from '../runtime/local-runtime.js';
import type { RuncRuntime } from '../runtime/runc-runtime.js';
import { StateDir, defaultStateDir } from '../runtime/state-dir.js';
import { JsonFileLogger } from '../system/file-logger.js';
import { defaultToolsDir, loadTools, type Tools } from '../system/tools.js';

/** Global options, after defaults and environment variables are applied. */
export interface GlobalOptions {
  stateDir: string;
  toolsDir: string;
  debug: boolean;
  /** `--host`: talk to that agent (socket path, ADDR:PORT or testbed host name) instead of runc here. */
  host?: string;
}

/** What container commands work with. */
export interface Services {
  /** The local RuncRuntime, or an AgentClient when `--host` is given. */
  runtime: ContainerRuntime;
}

/** The godwit host in `--state-dir` on this machine. */
export interface LocalHost {
  state: StateDir;
  tools: Tools;
}

/** Services for one CLI invocation. Nothing touches the disk until first used. */
export class CliContext {
  private services_?: Promise<Services>;
  private localHost_?: Promise<LocalHost>;

  constructor(readonly options: GlobalOptions) {}

  /** Resolves global options from commander's parsed values. */
  static fromFlags(flags: {
    stateDir?: string;
    toolsDir?: string;
    debug?: boolean;
    host?: string;
  }): CliContext {
    return new CliContext({
      stateDir: flags.stateDir ?? defaultStateDir(),
      toolsDir: flags.toolsDir ?? defaultToolsDir(),
      debug: Boolean(flags.debug) || process.env['GODWIT_DEBUG'] === '1',
      ...(flags.host === undefined ? {} : { host: flags.host }),
    });
  }

  /**
   * The container runtime commands act on: with `--host`, an AgentClient (fails with
   * HostNotFound for an unknown testbed host); otherwise the local runtime, which fails with
   * ToolMissing (hint: godwit setup) when tools are absent.
   */
  async services(): Promise<Services> {
    this.services_ ??= (async () => {
      if (this.options.host !== undefined) {
        return { runtime: new AgentClient(await resolveAgentAddress(this.options.host)) };
      }
      const { state } = await this.localHost();
      return {
        runtime: await this.localRuntime({
          log: new JsonFileLogger(join(state.logsDir, 'godwit.log'), { pid: process.pid }),
        }),
      };
    })();
    return this.services_;
  }

  /** The local godwit host (state directory and tools), whatever `--host` says. */
  async localHost(): Promise<LocalHost> {
    this.localHost_ ??= (async () => {
      const tools = await loadTools(this.options.toolsDir);
      const state = await StateDir.open(this.options.stateDir);
      return { state, tools };
    })();
    return this.localHost_;
  }

  /** A new RuncRuntime on the local host, logging to `log`, with the host's service network if given. */
  async localRuntime(opts: {
    log: Logger;
    network?: NetworkProvider & AddressAllocator;
  }): Promise<RuncRuntime> {
    const { state, tools } = await this.localHost();
    return openLocalRuntime(state, tools, opts);
  }
}

/** Prints either the human text or the JSON document, never both. */
export function emit(json: boolean, human: () => string, doc: () => unknown): void {
  if (json) process.stdout.write(JSON.stringify(doc(), null, 2) + '\n');
  else {
    const text = human();
    if (text) process.stdout.write(text.endsWith('\n') ? text : text + '\n');
  }
}
