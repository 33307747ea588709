/** Where migrations write checkpoint images. */
import { createHash } from 'node:crypto';
import { statfs } from 'node:fs/promises';
import { join, resolve } from 'node:path';

/**
 * Where a host writes checkpoint images during migrations: `GODWIT_SCRATCH_DIR` when set
 * (`-` for none: the state directory), else a directory on /dev/shm when that is a tmpfs
 * (CRIU dumps 256 MiB in 0.29 s there against 0.67–0.92 s on this machine's ext4; the images
 * live only for the migration, and a failed migration's checkpoint stays there until restored).
 * One directory per state root.
 */
export async function scratchDirFor(stateRoot: string): Promise<string | undefined> {
  const env = process.env['GODWIT_SCRATCH_DIR'];
  const key = createHash('sha256').update(resolve(stateRoot)).digest('hex').slice(0, 12);
  if (env === '-') return undefined;
  if (env) return join(env, key);
  try {
    const st = await statfs('/dev/shm');
    if (st.type !== TMPFS_MAGIC) return undefined;
  } catch {
    return undefined;
  }
  return join('/dev/shm/godwit', key);
}

/** statfs f_type of tmpfs. */
const TMPFS_MAGIC = 0x01021994;
