/** What every CLI command is given: resolved global options and lazily built services. */
import { join } from 'node:path';
import type { ContainerRuntime } from '../core/runtime.js';
import { ImageStore } from '../runtime/image-store.js';
import { RuncRuntime } from '../runtime/runc-runtime.js';
import { StateDir, defaultStateDir } from '../runtime/state-dir.js';
import { JsonFileLogger } from '../system/file-logger.js';
import { defaultToolsDir, loadTools, type Tools } from '../system/tools.js';

/** Global options, after defaults and environment variables are applied. */
export interface GlobalOptions {
  stateDir: string;
  toolsDir: string;
  debug: boolean;
}

/** Services for one CLI invocation. Nothing touches the disk until first used. */
export class CliContext {
  private runtime?: Promise<{ runtime: ContainerRuntime; state: StateDir; tools: Tools }>;

  constructor(readonly options: GlobalOptions) {}

  /** Resolves global options from commander's parsed values. */
  static fromFlags(flags: { stateDir?: string; toolsDir?: string; debug?: boolean }): CliContext {
    return new CliContext({
      stateDir: flags.stateDir ?? defaultStateDir(),
      toolsDir: flags.toolsDir ?? defaultToolsDir(),
      debug: Boolean(flags.debug) || process.env['GODWIT_DEBUG'] === '1',
    });
  }

  /** The container runtime of this host; fails with ToolMissing (hint: godwit setup) when tools are absent. */
  async services(): Promise<{ runtime: ContainerRuntime; state: StateDir; tools: Tools }> {
    this.runtime ??= (async () => {
      const tools = await loadTools(this.options.toolsDir);
      const state = await StateDir.open(this.options.stateDir);
      const log = new JsonFileLogger(join(state.logsDir, 'godwit.log'), { pid: process.pid });
      const images = new ImageStore(state.imagesDir, { binaries: [tools.memload] });
      const runtime = new RuncRuntime({ state, tools, images, log });
      return { runtime, state, tools };
    })();
    return this.runtime;
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
