/**
 * Tests' godwit-wptrack: built by `buildNative` (as `godwit setup` does) into a temporary tools
 * directory, so the tests need no setup run.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildNative } from '../system/native-build.js';
import { toolPaths } from '../system/tools.js';

/** Builds the write tracker; `cleanup` removes it. */
export async function buildWriteTracker(): Promise<{ path: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'godwit-wptrack-'));
  await buildNative({ toolsDir: dir, log: () => undefined, only: ['wptrack'] });
  return { path: toolPaths(dir).wptrack, cleanup: () => rm(dir, { recursive: true, force: true }) };
}
