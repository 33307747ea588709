import { readFile } from 'node:fs/promises';
import { release } from 'node:os';
import { gunzipSync } from 'node:zlib';

/** Kernel build options by full name ("CONFIG_USERFAULTFD"): 'y', 'm', 'n' (for "is not set"), or the literal value. */
export type KernelConfig = Map<string, string>;

/**
 * Parses a kernel .config: `CONFIG_X=y` gives 'y', `# CONFIG_X is not set` gives 'n', quoted strings are unquoted.
 * Other lines are ignored. Pure.
 */
export function parseKernelConfig(text: string): KernelConfig {
  const config: KernelConfig = new Map();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const unset = /^#\s*(CONFIG_[A-Za-z0-9_]+) is not set$/.exec(line);
    if (unset?.[1] !== undefined) {
      config.set(unset[1], 'n');
      continue;
    }
    const set = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (set?.[1] === undefined || set[2] === undefined) continue;
    let value = set[2];
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
      value = value.slice(1, -1).replace(/\\(["\\])/g, '$1');
    }
    config.set(set[1], value);
  }
  return config;
}

/** The running kernel's config, from /proc/config.gz or /boot/config-<release>; undefined when neither is readable. */
export async function readKernelConfig(): Promise<KernelConfig | undefined> {
  try {
    return parseKernelConfig(gunzipSync(await readFile('/proc/config.gz')).toString('utf8'));
  } catch {
    // not built with CONFIG_IKCONFIG_PROC; try /boot
  }
  try {
    return parseKernelConfig(await readFile(`/boot/config-${release()}`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** True when the option is built in or a module, false when unset or 'n', undefined when the config does not mention it. */
export function kernelOptionEnabled(config: KernelConfig, name: string): boolean | undefined {
  const value = config.get(name);
  if (value === undefined) return undefined;
  return value === 'y' || value === 'm';
}

/** The running kernel's release as [major, minor] (e.g. "6.18.44-fc" gives [6, 18]); [0, 0] when unparsable. */
export function kernelVersion(rel: string = release()): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  return m?.[1] !== undefined && m[2] !== undefined ? [Number(m[1]), Number(m[2])] : [0, 0];
}
