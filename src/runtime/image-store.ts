/**
 * Local root filesystem images. For now there is one, `busybox`, built from the host's
 * static busybox (Debian's busybox-static) plus godwit's own static helpers. Images are
 * content-addressed: the directory name is a digest of what went in, so a rebuilt image
 * never changes under a container that uses the old one.
 */
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ErrorCode, FailedPreconditionError, NotFoundError } from '../core/errors.js';
import { runChecked } from '../system/exec.js';

/** Where the host's static busybox is (Debian's busybox-static). */
export const HOST_BUSYBOX = '/bin/busybox';

/** Version of the image layout; part of every image id. */
const BUILDER_VERSION = 'busybox-image/1';

/** A built image on disk. */
export interface ImageInfo {
  name: string;
  /** Content digest (first 16 hex of sha256) of everything the image was built from. */
  id: string;
  rootfs: string;
}

/** Static helper binaries copied into images at /usr/local/bin. */
export interface ImageHelpers {
  /** Absolute host paths of static executables; installed under their base names. */
  binaries: readonly string[];
}

/** Builds and finds images in `<state>/images/<name>/<id>/rootfs`. */
export class ImageStore {
  constructor(
    private readonly imagesDir: string,
    private readonly helpers: ImageHelpers = { binaries: [] },
  ) {}

  /** The known image names. */
  static readonly NAMES = ['busybox'] as const;

  /**
   * Returns the image, building it first when the current inputs have no image yet.
   * Safe against concurrent builders: the build goes to a temp dir renamed into place.
   */
  async ensure(name: string): Promise<ImageInfo> {
    if (name !== 'busybox') {
      throw new NotFoundError(ErrorCode.ImageNotFound, `unknown image ${JSON.stringify(name)}`, {
        hint: `available images: ${ImageStore.NAMES.join(', ')}`,
      });
    }
    const inputs = [HOST_BUSYBOX, ...this.helpers.binaries];
    const hash = createHash('sha256').update(BUILDER_VERSION);
    for (const file of inputs) {
      let data: Buffer;
      try {
        data = await readFile(file);
      } catch {
        throw new FailedPreconditionError(
          ErrorCode.ToolMissing,
          `${file} is missing; cannot build image ${name}`,
          {
            hint: 'run `godwit setup`',
          },
        );
      }
      hash.update(file).update(data);
    }
    const id = hash.digest('hex').slice(0, 16);
    const dir = join(this.imagesDir, name, id);
    const rootfs = join(dir, 'rootfs');
    if (await exists(join(dir, 'image.json'))) return { name, id, rootfs };

    const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
    await rm(tmp, { recursive: true, force: true });
    const tmpRoot = join(tmp, 'rootfs');
    await buildBusyboxRootfs(tmpRoot, this.helpers.binaries);
    await writeFile(
      join(tmp, 'image.json'),
      JSON.stringify(
        { name, id, builder: BUILDER_VERSION, builtAt: new Date().toISOString(), inputs },
        null,
        2,
      ),
    );
    await mkdir(dirname(dir), { recursive: true });
    try {
      await rename(tmp, dir);
    } catch (err) {
      // Another builder won the race; its image is identical.
      await rm(tmp, { recursive: true, force: true });
      if (!(await exists(join(dir, 'image.json')))) throw err;
    }
    return { name, id, rootfs };
  }
}

async function buildBusyboxRootfs(root: string, helpers: readonly string[]): Promise<void> {
  for (const d of [
    'bin',
    'sbin',
    'usr/bin',
    'usr/sbin',
    'usr/local/bin',
    'etc',
    'root',
    'tmp',
    'var/tmp',
    'proc',
    'sys',
    'dev',
    'run',
    'home',
  ]) {
    await mkdir(join(root, d), { recursive: true, mode: 0o755 });
  }
  await chmod(join(root, 'tmp'), 0o1777);
  await chmod(join(root, 'var/tmp'), 0o1777);
  await copyFile(HOST_BUSYBOX, join(root, 'bin/busybox'));
  await chmod(join(root, 'bin/busybox'), 0o755);
  const list = await runChecked(HOST_BUSYBOX, ['--list-full']);
  for (const applet of list.stdout.split('\n').map((l) => l.trim())) {
    if (!applet || applet === 'bin/busybox' || applet.includes('..')) continue;
    const target = join(root, applet);
    if (await exists(target)) continue;
    await mkdir(dirname(target), { recursive: true });
    await symlink('/bin/busybox', target);
  }
  for (const bin of helpers) {
    const dest = join(root, 'usr/local/bin', bin.split('/').pop() ?? 'helper');
    await copyFile(bin, dest);
    await chmod(dest, 0o755);
  }
  await writeFile(
    join(root, 'etc/passwd'),
    'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n',
  );
  await writeFile(join(root, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  await writeFile(join(root, 'etc/hosts'), '127.0.0.1\tlocalhost\n::1\tlocalhost\n');
  await writeFile(join(root, 'etc/resolv.conf'), '');
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
