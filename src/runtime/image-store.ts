/**
 * Local root filesystem images, built from files of the host:
 *
 *   busybox  the host's static busybox (Debian's busybox-static) plus godwit's own static helpers;
 *   redis    the same, plus the host's Redis server (Debian's redis-tools) at /usr/bin/redis-server
 *            and the shared libraries it needs (found with ldd), at the paths ldd names.
 *
 * Images are content-addressed: the directory name is a digest of what went in (every input
 * file's path and bytes), so a rebuilt image never changes under a container that uses the old one.
 */
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize } from 'node:path';
import { ErrorCode, FailedPreconditionError, NotFoundError } from '../core/errors.js';
import { runChecked, runCommand } from '../system/exec.js';

/** Where the host's static busybox is (Debian's busybox-static). */
export const HOST_BUSYBOX = '/bin/busybox';

/**
 * The host's Redis server. Debian 12's redis-tools ships the server binary under this name (the
 * redis-server package only adds a `redis-server` symlink to it and a system service).
 */
export const HOST_REDIS_SERVER = '/usr/bin/redis-check-rdb';

/** Where the redis image installs the server: Redis picks its mode by argv[0]. */
export const REDIS_SERVER_PATH = '/usr/bin/redis-server';

/** Version of the busybox image layout; part of its image id. */
const BUILDER_VERSION = 'busybox-image/1';

/** Version of the redis image layout; part of its image id. */
const REDIS_BUILDER_VERSION = 'redis-image/1';

/** A built image on disk. */
export interface ImageInfo {
  name: string;
  /** Content digest (first 16 hex of sha256) of everything the image was built from. */
  id: string;
  rootfs: string;
}

/** Static helper binaries copied into images at /usr/local/bin, and where the host's other inputs are. */
export interface ImageHelpers {
  /** Absolute host paths of static executables; installed under their base names. */
  binaries: readonly string[];
  /** The host's Redis server binary for the redis image; HOST_REDIS_SERVER by default. */
  redisServer?: string;
}

/** What an image is built from: files hashed into its id, and how to lay them out. */
interface ImagePlan {
  builder: string;
  /** Host files, in hashing order. */
  inputs: string[];
  build: (root: string) => Promise<void>;
}

/** Builds and finds images in `<state>/images/<name>/<id>/rootfs`. */
export class ImageStore {
  /** Image ids by name, with the stat key of the inputs they were computed from. */
  private readonly ids = new Map<string, { key: string; id: string }>();
  /** ldd's answer for a binary, with the stat key of the binary and the libraries it named. */
  private readonly libraries = new Map<string, { key: string; libs: string[] }>();

  constructor(
    private readonly imagesDir: string,
    private readonly helpers: ImageHelpers = { binaries: [] },
  ) {}

  /** The known image names. */
  static readonly NAMES = ['busybox', 'redis'] as const;

  /**
   * Returns the image, building it first when the current inputs have no image yet.
   * Safe against concurrent builders: the build goes to a temp dir renamed into place.
   * The id is recomputed from the inputs' bytes whenever any input's stat (inode, size, times) changed.
   */
  async ensure(name: string): Promise<ImageInfo> {
    const plan = await this.plan(name);
    const id = await this.imageId(name, plan);
    const dir = join(this.imagesDir, name, id);
    const rootfs = join(dir, 'rootfs');
    if (await exists(join(dir, 'image.json'))) return { name, id, rootfs };

    const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
    await rm(tmp, { recursive: true, force: true });
    try {
      await plan.build(join(tmp, 'rootfs'));
      await writeFile(
        join(tmp, 'image.json'),
        JSON.stringify(
          { name, id, builder: plan.builder, builtAt: new Date().toISOString(), inputs: plan.inputs },
          null,
          2,
        ),
      );
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
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

  private async plan(name: string): Promise<ImagePlan> {
    const helpers = this.helpers.binaries;
    if (name === 'busybox') {
      return {
        builder: BUILDER_VERSION,
        inputs: [HOST_BUSYBOX, ...helpers],
        build: (root) => buildBusyboxRootfs(root, helpers),
      };
    }
    if (name === 'redis') {
      const server = this.helpers.redisServer ?? HOST_REDIS_SERVER;
      if (!(await exists(server))) {
        throw new FailedPreconditionError(
          ErrorCode.ToolMissing,
          `${server} is missing: image redis is built from the host's Redis server (Debian's redis-tools)`,
          { hint: 'apt-get install redis-tools, or run `godwit setup`' },
        );
      }
      const libs = await this.sharedLibraries(server);
      return {
        builder: REDIS_BUILDER_VERSION,
        inputs: [HOST_BUSYBOX, ...helpers, server, ...libs],
        build: async (root) => {
          await buildBusyboxRootfs(root, helpers);
          await install(server, join(root, REDIS_SERVER_PATH));
          for (const lib of libs) await install(lib, join(root, lib));
        },
      };
    }
    throw new NotFoundError(ErrorCode.ImageNotFound, `unknown image ${JSON.stringify(name)}`, {
      hint: `available images: ${ImageStore.NAMES.join(', ')}`,
    });
  }

  /** sha256 over the builder version and every input's path and bytes (first 16 hex). */
  private async imageId(name: string, plan: ImagePlan): Promise<string> {
    const key = `${plan.builder}\n${await statKey(plan.inputs, name)}`;
    const cached = this.ids.get(name);
    if (cached?.key === key) return cached.id;
    const hash = createHash('sha256').update(plan.builder);
    for (const file of plan.inputs) hash.update(file).update(await readInput(file, name));
    const id = hash.digest('hex').slice(0, 16);
    this.ids.set(name, { key, id });
    return id;
  }

  /** The shared libraries `binary` loads (ldd), the dynamic loader included; sorted absolute paths. */
  private async sharedLibraries(binary: string): Promise<string[]> {
    const cached = this.libraries.get(binary);
    if (cached && cached.key === (await statKey([binary, ...cached.libs], 'redis'))) return cached.libs;
    const res = await runCommand('ldd', [binary]);
    const output = `${res.stdout}\n${res.stderr}`;
    let libs: string[];
    if (res.code !== 0) {
      if (!/not a dynamic executable/.test(output)) {
        throw new FailedPreconditionError(
          ErrorCode.ToolMissing,
          `ldd ${binary} failed (exit ${res.code}): ${output.trim().split('\n').slice(-3).join(' | ')}`,
          { hint: "ldd comes with Debian's libc-bin; run `godwit setup`" },
        );
      }
      libs = [];
    } else libs = parseLddOutput(output, binary);
    this.libraries.set(binary, { key: await statKey([binary, ...libs], 'redis'), libs });
    return libs;
  }
}

/**
 * The library paths in ldd's output (`name => /path (0x…)`, `/path (0x…)` for the loader), sorted and
 * without duplicates; the vDSO and `statically linked` are skipped. Throws ToolMissing when a library
 * is `not found` or a path is not absolute and normal (it is joined under an image's root).
 */
export function parseLddOutput(text: string, binary = 'the binary'): string[] {
  const libs = new Set<string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const missing = /^(\S+) => not found$/.exec(line);
    if (missing) {
      throw new FailedPreconditionError(
        ErrorCode.ToolMissing,
        `${binary} needs ${missing[1] ?? '?'}, which is not installed`,
        { hint: 'reinstall the package of the binary (apt-get install --reinstall), or run `godwit setup`' },
      );
    }
    const m = /^(?:\S+ => )?(\/\S+) \(0x[0-9a-fA-F]+\)$/.exec(line);
    if (!m) continue;
    const path = m[1] ?? '';
    if (!isAbsolute(path) || normalize(path) !== path || path.split('/').includes('..')) {
      throw new FailedPreconditionError(
        ErrorCode.ToolMissing,
        `ldd named a strange library path ${JSON.stringify(path)}`,
      );
    }
    libs.add(path);
  }
  return [...libs].sort();
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

/** Copies a host file to `dest` (following symlinks), mode 0755, creating its directory. */
async function install(src: string, dest: string): Promise<void> {
  await mkdir(dirname(dest), { recursive: true, mode: 0o755 });
  await copyFile(src, dest);
  await chmod(dest, 0o755);
}

/** One line per input of what identifies its current version; ToolMissing when one is missing. */
async function statKey(files: readonly string[], image: string): Promise<string> {
  const lines: string[] = [];
  for (const file of files) {
    try {
      const st = await stat(file, { bigint: true });
      lines.push(`${file} ${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`);
    } catch {
      throw missingInput(file, image);
    }
  }
  return lines.join('\n');
}

async function readInput(file: string, image: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch {
    throw missingInput(file, image);
  }
}

function missingInput(file: string, image: string): FailedPreconditionError {
  return new FailedPreconditionError(
    ErrorCode.ToolMissing,
    `${file} is missing; cannot build image ${image}`,
    {
      hint: 'run `godwit setup`',
    },
  );
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
