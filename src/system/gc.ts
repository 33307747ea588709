/**
 * A full garbage collection on demand, for the moment right after a migration ends.
 *
 * Why: a migration leaves hundreds of MiB of garbage in an agent (a pre-copy's page copies,
 * receive buffers). Collected whenever V8 decides, that work landed in later migrations'
 * stopped phases; on a testbed every host shares the machine's cores, so one agent's collection
 * also slows another host's CRIU. Collecting when a migration has ended puts it where nothing
 * waits. Uses V8's gc extension, enabled at run time; a no-op if that is unavailable.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gcFn: (() => void) | null | undefined;

/** Runs a full collection now; returns its duration in ms, or undefined when unavailable. */
export function collectGarbage(): number | undefined {
  if (gcFn === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      gcFn = runInNewContext('gc') as () => void;
    } catch {
      gcFn = null;
    }
  }
  if (!gcFn) return undefined;
  const t0 = performance.now();
  gcFn();
  return performance.now() - t0;
}
