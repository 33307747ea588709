/** Starting a testbed host's agent and checking its health over the unix socket. */
import { request } from 'node:http';
import { join } from 'node:path';
import { ErrorCode, UnavailableError } from '../core/errors.js';
import type { TestbedHost } from '../core/testbed.js';
import { isAlive, sleep, spawnInNetns, tailFile } from './system.js';

/** How long `testbed up` waits for an agent's /healthz. */
export const AGENT_START_TIMEOUT_MS = 15_000;

/** Options of startAgent. */
export interface StartAgentOptions {
  /** Path of bin/godwit.js. */
  godwitBin: string;
  /** testbed.json, passed as --service-network. */
  testbedFile: string;
  /** Environment of the agent (GODWIT_TOOLS_DIR, GODWIT_TESTBED_DIR). */
  env: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/** Where an agent's stdout and stderr go. */
export function agentOutFile(host: TestbedHost): string {
  return join(host.stateDir, 'agent.out');
}

/**
 * Starts the agent of `host` detached in its namespace:
 * `node GODWIT --state-dir DIR agent --socket SOCK --listen ADDR:PORT --service-network FILE`,
 * output to <stateDir>/agent.out; waits until GET /healthz on its socket answers 200. Returns the
 * PID. Throws AgentStartFailed (quoting agent.out) when it exits or does not get healthy in time.
 */
export async function startAgent(host: TestbedHost, opts: StartAgentOptions): Promise<number> {
  const out = agentOutFile(host);
  const pid = await spawnInNetns(
    host.netns,
    process.execPath,
    [
      opts.godwitBin,
      '--state-dir',
      host.stateDir,
      'agent',
      '--socket',
      host.socket,
      '--listen',
      `${host.address}:${host.port}`,
      '--service-network',
      opts.testbedFile,
    ],
    { outFile: out, env: opts.env },
  );
  const timeoutMs = opts.timeoutMs ?? AGENT_START_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await healthz(host.socket, 1_000)) === 200) return pid;
    if (!(await isAlive(pid))) {
      throw new UnavailableError(ErrorCode.AgentStartFailed, `the agent of ${host.name} exited at start`, {
        details: await tailFile(out, 8),
        hint: `see ${out}`,
      });
    }
    if (Date.now() > deadline) {
      throw new UnavailableError(
        ErrorCode.AgentStartFailed,
        `the agent of ${host.name} did not answer /healthz within ${timeoutMs} ms`,
        { details: await tailFile(out, 8), hint: `see ${out}` },
      );
    }
    await sleep(100);
  }
}

/** HTTP status of GET /healthz on a unix socket, or undefined when nothing answers in time. */
export function healthz(socketPath: string, timeoutMs: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/healthz', method: 'GET', timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
    req.end();
  });
}
