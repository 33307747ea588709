/**
 * CRIU's page pipes. Every dump, lazy or not, has the frozen tasks' parasite vmsplice each
 * present page into pipes (a lazy dump's page server serves from them; a full dump writes them
 * out): one parasite round trip per pipe, and each pipe is grown step by step with
 * F_SETPIPE_SZ. CRIU grows a pipe up to the smaller of `/proc/sys/fs/pipe-max-size` and 1024
 * pages (its own cap). At the kernel's default 1 MiB, a 1 GiB container takes 1,027 pipes; at
 * 4 MiB, 258. Measured here on a 1 GiB memload, CRIU's lazy dump was ready in 217–281 ms at
 * 1 MiB (10 dumps) and in 134–153 ms at 4 MiB or more: the container's stop, shorter by ~100 ms.
 *
 * So the agent raises the limit to 4 MiB where it is lower (never lowers it). The limit only
 * bounds what unprivileged processes may ask for one pipe; their total stays bounded by
 * `pipe-user-pages-soft`/`-hard`.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { errorMessage } from '../core/errors.js';

/** CRIU's own largest page pipe: 1024 pages of 4 KiB. */
export const CRIU_PIPE_BYTES = 4 * 1024 * 1024;

export const PIPE_MAX_SIZE_PATH = '/proc/sys/fs/pipe-max-size';

/** What `ensurePipeMaxSize` found or did. */
export type PipeMaxSizeState =
  | { state: 'enough'; bytes: number }
  | { state: 'raised'; from: number; bytes: number }
  | { state: 'left'; bytes?: number; reason: string };

/**
 * Raises the system's pipe size limit to `CRIU_PIPE_BYTES` where it is lower (see the module
 * comment). `raise: false` only reports. Never throws. `path` is for tests.
 */
export async function ensurePipeMaxSize(
  o: { raise?: boolean; path?: string } = {},
): Promise<PipeMaxSizeState> {
  const path = o.path ?? PIPE_MAX_SIZE_PATH;
  let bytes: number;
  try {
    bytes = Number((await readFile(path, 'utf8')).trim());
    if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Error(`unexpected content of ${path}`);
  } catch (err) {
    return { state: 'left', reason: errorMessage(err) };
  }
  if (bytes >= CRIU_PIPE_BYTES) return { state: 'enough', bytes };
  if (o.raise === false) {
    return {
      state: 'left',
      bytes,
      reason: 'not raised (--keep-pipe-max-size): CRIU dumps make more, smaller pipes',
    };
  }
  try {
    await writeFile(path, String(CRIU_PIPE_BYTES));
  } catch (err) {
    return { state: 'left', bytes, reason: `cannot raise it: ${errorMessage(err)}` };
  }
  return { state: 'raised', from: bytes, bytes: CRIU_PIPE_BYTES };
}
