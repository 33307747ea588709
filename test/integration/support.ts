/**
 * Shared setup of integration tests: a throwaway godwit host (state directory) on the
 * real runc + CRIU. Tests need root and `godwit setup`; under CI=true a missing
 * requirement fails the suite instead of skipping it.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { ContainerRuntime } from '../../src/core/runtime.js';
import { countersIn } from '../../src/demo/checkpoint-demo.js';
import type { RuncRuntime } from '../../src/runtime/runc-runtime.js';
import { openLocalRuntime } from '../../src/runtime/local-runtime.js';
import { StateDir } from '../../src/runtime/state-dir.js';
import { defaultToolsDir, loadTools, type Tools } from '../../src/system/tools.js';

/** A temporary godwit host. `dispose` removes every container and the state directory. */
export interface TestHost {
  runtime: RuncRuntime;
  state: StateDir;
  tools: Tools;
  dispose(): Promise<void>;
}

/** Why integration tests cannot run here, or undefined when they can. */
export async function missingRequirement(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'integration tests need root';
  try {
    await loadTools(defaultToolsDir());
    return undefined;
  } catch (err) {
    return `tools are not set up (${err instanceof Error ? err.message : String(err)}); run godwit setup`;
  }
}

/**
 * Skips the test (outside CI) or fails it (CI=true) when the machine cannot run it.
 * Returns false when the test must stop.
 */
export async function requireMachine(t: TestContext): Promise<boolean> {
  const why = await missingRequirement();
  if (why === undefined) return true;
  if (process.env['CI'] === 'true') throw new Error(`cannot run integration tests in CI: ${why}`);
  t.skip(why);
  return false;
}

/** Creates a godwit host in a new temp state directory. */
export async function createTestHost(label = 'it'): Promise<TestHost> {
  const tools = await loadTools(defaultToolsDir());
  const dir = await mkdtemp(join(tmpdir(), `godwit-${label}-`));
  const state = await StateDir.open(dir);
  const runtime = openLocalRuntime(state, tools);
  return {
    runtime,
    state,
    tools,
    async dispose() {
      await removeAll(runtime);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Force-removes every container of a runtime. */
export async function removeAll(runtime: ContainerRuntime): Promise<void> {
  for (const c of await runtime.list()) await runtime.remove(c.name, { force: true }).catch(() => undefined);
}

/** Mount points at or below `dir` in this mount namespace. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(dir + '/'));
}

/** `counter N` values in a log. */
export const counters = countersIn;

/** Waits until a container has printed at least `n` counters; returns them. */
export async function waitCounters(
  runtime: ContainerRuntime,
  name: string,
  n: number,
  timeoutMs = 15_000,
): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const c = counters(await runtime.logs(name));
    if (c.length >= n) return c;
    if (Date.now() > deadline) throw new Error(`${name} printed ${c.length} counters, wanted ${n}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A shell loop that counts in memory, printing `counter N` every 100 ms. */
export const COUNTER_ARGS = [
  '/bin/sh',
  '-c',
  'i=0; while true; do i=$((i+1)); echo "counter $i"; sleep 0.1; done',
];
