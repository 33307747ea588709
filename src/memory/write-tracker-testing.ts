/**
 * Tests' godwit-wptrack: compiled from native/godwit-wptrack.c into a temporary directory
 * (gcc, as `godwit setup` does), so the tests need no setup run.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runChecked } from '../system/exec.js';
import { nativeDir } from '../system/tools.js';

/** Compiles the write tracker; `cleanup` removes it. */
export async function buildWriteTracker(): Promise<{ path: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'godwit-wptrack-'));
  const path = join(dir, 'godwit-wptrack');
  await runChecked('gcc', ['-O2', '-Wall', '-o', path, join(nativeDir(), 'godwit-wptrack.c')]);
  return { path, cleanup: () => rm(dir, { recursive: true, force: true }) };
}
