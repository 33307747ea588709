import { ErrorCode, FailedPreconditionError, UnavailableError } from '../core/errors.js';
import { lastLines, runCommand, which } from './exec.js';

/** Waits this long for another apt/dpkg process to release its lock instead of failing at once. */
const DPKG_LOCK_TIMEOUT_S = 300;
const APT_UPDATE_TIMEOUT_MS = 10 * 60_000;
const APT_INSTALL_TIMEOUT_MS = 30 * 60_000;

/** True when a dpkg `${Status}` string says the package is installed ("install ok installed", "hold ok installed"). Pure. */
export function isInstalledStatus(status: string): boolean {
  return status.trim().split(/\s+/)[2] === 'installed';
}

/** The subset of `names` that dpkg does not report as installed, in the given order. Throws ToolMissing without dpkg. */
export async function missingPackages(names: readonly string[]): Promise<string[]> {
  const results = await Promise.all(
    names.map(async (name) => {
      const res = await runCommand('dpkg-query', ['-W', '-f=${Status}', name]);
      return res.code === 0 && isInstalledStatus(res.stdout) ? undefined : name;
    }),
  );
  return results.filter((n): n is string => n !== undefined);
}

/** What ensurePackages did. */
export interface EnsurePackagesResult {
  /** Packages that were missing and are now installed (empty when nothing had to be done). */
  installed: string[];
}

/**
 * Installs whichever of `names` are missing with apt-get (non-interactive, no recommends); does nothing when all are
 * present. `apt-get update` may fail (e.g. an unreachable third-party repository) and is only logged; the install
 * must succeed. Throws FailedPrecondition without apt-get, Unavailable when the install fails.
 */
export async function ensurePackages(
  names: readonly string[],
  log: (line: string) => void,
): Promise<EnsurePackagesResult> {
  const missing = await missingPackages(names);
  if (missing.length === 0) return { installed: [] };
  if ((await which('apt-get')) === undefined) {
    throw new FailedPreconditionError(
      ErrorCode.ToolMissing,
      `apt-get not found; cannot install ${missing.join(', ')}`,
      {
        hint: `install ${missing.join(' ')} with this system's package manager`,
      },
    );
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const lockOpt = ['-o', `DPkg::Lock::Timeout=${DPKG_LOCK_TIMEOUT_S}`];
  log(`setup: installing ${missing.join(', ')} (apt-get)…`);
  const update = await runCommand('apt-get', [...lockOpt, 'update'], {
    env,
    timeoutMs: APT_UPDATE_TIMEOUT_MS,
  });
  if (update.code !== 0) {
    const errs = (update.stderr + update.stdout).split('\n').filter((l) => /^(E|W|Err):/.test(l.trim()));
    log(
      `setup: apt-get update exited with ${update.code}; going on (${lastLines(errs.join('\n'), 1)[0] ?? 'no detail'})`,
    );
  }
  const install = await runCommand(
    'apt-get',
    [...lockOpt, 'install', '-y', '--no-install-recommends', ...missing],
    { env, timeoutMs: APT_INSTALL_TIMEOUT_MS },
  );
  if (install.code !== 0) {
    throw new UnavailableError(
      ErrorCode.CommandFailed,
      `apt-get install ${missing.join(' ')} failed (exit ${install.code})`,
      {
        details: lastLines(install.stderr || install.stdout, 6),
        hint: `check the apt sources and network, then run: apt-get install -y ${missing.join(' ')}`,
      },
    );
  }
  const still = await missingPackages(missing);
  if (still.length > 0) {
    throw new UnavailableError(
      ErrorCode.CommandFailed,
      `apt-get install finished but ${still.join(', ')} still missing`,
      {
        hint: `run: apt-get install -y ${still.join(' ')}`,
      },
    );
  }
  return { installed: missing };
}
