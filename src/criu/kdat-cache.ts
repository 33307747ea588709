/**
 * CRIU's kernel-feature cache. Every CRIU run first probes the kernel (`kerndat`: ~25 ms here,
 * including running iptables three times) unless it can load `/run/criu.kdat`, which CRIU only
 * writes when /run is a tmpfs. On machines whose /run is not (this one: ext4), every dump,
 * restore and lazy-pages daemon of a migration's stopped phase paid the probes again.
 *
 * So godwit makes the cache itself: `criu check` in a private mount namespace whose /run is a
 * fresh tmpfs writes it there; it is copied to godwit's tmpfs (/dev/shm, gone at reboot) and
 * /run/criu.kdat becomes a symlink to it, which CRIU loads like its own. The copy is keyed by
 * CRIU version, kernel release and boot id, and made again when any of them changes. Where /run
 * is a tmpfs, CRIU keeps its cache itself and nothing is done. A regular file at /run/criu.kdat
 * (someone else's) is never replaced.
 */
import { lstat, mkdir, readFile, readlink, rename, rm, statfs, symlink, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import { runCommand } from '../system/exec.js';

const TMPFS_MAGIC = 0x01021994;
/** Where CRIU looks for its cache (compiled into CRIU). */
export const CRIU_KDAT_PATH = '/run/criu.kdat';

/** What `ensureKdatCache` found or did. */
export type KdatCacheState =
  | { state: 'native' }
  | { state: 'linked'; file: string; made: boolean; ms: number }
  | { state: 'unavailable'; reason: string };

/** Makes CRIU's kernel-feature cache loadable (see the module comment). Never throws. */
export async function ensureKdatCache(o: {
  criu: string;
  criuVersion: string;
  /** godwit's tmpfs directory for it. Default /dev/shm/godwit. */
  dir?: string;
  /** Where CRIU looks (tests). */
  linkPath?: string;
  /** The directory whose file system decides (tests). Default /run. */
  runDir?: string;
}): Promise<KdatCacheState> {
  const t0 = performance.now();
  const linkPath = o.linkPath ?? CRIU_KDAT_PATH;
  const dir = o.dir ?? '/dev/shm/godwit';
  try {
    if ((await statfs(o.runDir ?? '/run')).type === TMPFS_MAGIC) return { state: 'native' };
    const file = join(dir, 'criu.kdat');
    const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
    const key = `${o.criuVersion} ${release()} ${bootId}\n`;
    const existing = await lstat(linkPath).catch(() => undefined);
    if (existing && !existing.isSymbolicLink())
      return { state: 'unavailable', reason: `${linkPath} is a file` };
    let made = false;
    const fresh =
      (await readFile(`${file}.key`, 'utf8').catch(() => '')) === key &&
      (await lstat(file).catch(() => undefined))?.isFile() === true;
    if (!fresh) {
      await mkdir(dir, { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      const res = await runCommand('unshare', [
        '--mount',
        'sh',
        '-c',
        'mount -t tmpfs godwit-kdat /run && "$0" check >/dev/null 2>&1; cp /run/criu.kdat "$1"',
        o.criu,
        tmp,
      ]);
      if (res.code !== 0) {
        await rm(tmp, { force: true });
        return {
          state: 'unavailable',
          reason: `criu check wrote no cache: ${res.stderr.trim().slice(0, 200)}`,
        };
      }
      await rename(tmp, file);
      await writeFile(`${file}.key`, key);
      made = true;
    }
    if (!existing || (await readlink(linkPath).catch(() => '')) !== file) {
      const tmpLink = `${linkPath}.godwit-${process.pid}`;
      await rm(tmpLink, { force: true });
      await symlink(file, tmpLink);
      await rename(tmpLink, linkPath);
    }
    return { state: 'linked', file, made, ms: Math.round(performance.now() - t0) };
  } catch (err) {
    return { state: 'unavailable', reason: err instanceof Error ? err.message : String(err) };
  }
}
