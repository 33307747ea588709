/**
 * Layout of a godwit host's state directory. One state directory is one godwit host:
 * its containers, images, runc root and logs. Several can live on one machine and
 * never see each other's containers.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, realpath, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';

/** The default state directory, overridable with --state-dir or GODWIT_STATE_DIR. */
export function defaultStateDir(): string {
  return process.env['GODWIT_STATE_DIR'] ?? '/var/lib/godwit';
}

/** Container names: what runc, cgroups and file names all accept. */
export const CONTAINER_NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

/** Throws InvalidName unless `name` is a valid container name. */
export function validateName(name: string): void {
  if (!CONTAINER_NAME.test(name)) {
    throw new InvalidArgumentError(ErrorCode.InvalidName, `invalid container name ${JSON.stringify(name)}`, {
      hint: 'use 1-63 characters: lower-case letters, digits, and . _ - (not first)',
    });
  }
}

/** Paths inside one state directory. Creating it is `open`'s job; the getters only compute. */
export class StateDir {
  private constructor(
    /** Absolute, resolved path of the state directory. */
    readonly root: string,
    /** Short id of this host: the first 12 hex digits of sha256(root). */
    readonly hostId: string,
  ) {}

  /** Creates the directory tree if needed and returns the layout. */
  static async open(dir: string): Promise<StateDir> {
    const abs = resolve(dir);
    await mkdir(abs, { recursive: true, mode: 0o711 });
    const root = await realpath(abs);
    const hostId = createHash('sha256').update(root).digest('hex').slice(0, 12);
    const sd = new StateDir(root, hostId);
    for (const d of [sd.runcRoot, sd.containersDir, sd.imagesDir, sd.logsDir]) {
      await mkdir(d, { recursive: true, mode: 0o700 });
    }
    return sd;
  }

  get runcRoot(): string {
    return join(this.root, 'runc');
  }
  get containersDir(): string {
    return join(this.root, 'containers');
  }
  get imagesDir(): string {
    return join(this.root, 'images');
  }
  get logsDir(): string {
    return join(this.root, 'logs');
  }
  containerDir(name: string): string {
    return join(this.containersDir, name);
  }
  containerRecord(name: string): string {
    return join(this.containerDir(name), 'container.json');
  }
  bundleDir(name: string): string {
    return join(this.containerDir(name), 'bundle');
  }
  rootfsMount(name: string): string {
    return join(this.bundleDir(name), 'rootfs');
  }
  upperDir(name: string): string {
    return join(this.containerDir(name), 'upper');
  }
  overlayWorkDir(name: string): string {
    return join(this.containerDir(name), 'overlay-work');
  }
  outputLog(name: string): string {
    return join(this.containerDir(name), 'output.log');
  }
  exitFile(name: string): string {
    return join(this.containerDir(name), 'exit');
  }
  /** CRIU configuration file runc passes to CRIU for this container (annotation org.criu.config). */
  criuConfig(name: string): string {
    return join(this.containerDir(name), 'criu.conf');
  }
  runcLog(name: string): string {
    return join(this.containerDir(name), 'runc.log');
  }
}

/** Writes JSON atomically (temp file + rename), so a crash never leaves half a record. */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  // A temp name per write: two writes of one file at once (a migration report saved by two
  // phases) must not rename each other's temp file away (ENOENT). The last rename wins.
  const tmp = `${path}.tmp-${process.pid}-${++tmpSeq}`;
  try {
    await writeFile(tmp, JSON.stringify(value, null, 2) + '\n', { mode: 0o600 });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
}

let tmpSeq = 0;

/** Reads a JSON file, or returns undefined when it does not exist. Other errors propagate. */
export async function readJsonIfExists(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as unknown;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
