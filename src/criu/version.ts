/** The oldest CRIU godwit accepts: 3.17 fails `criu check` on new kernels (vDSO), 4.1 cannot dump inet sockets on >= 6.16. */
export const MIN_CRIU_VERSION = '4.2';

/** The dotted version in `criu --version` output ("Version: 4.2.1\nGitID: …"), or undefined when there is none. */
export function parseCriuVersion(output: string): string | undefined {
  const m = /^\s*Version:\s*v?(\d+(?:\.\d+)*)/m.exec(output);
  return m?.[1];
}

/**
 * Compares two dotted versions numerically ("4.10" > "4.2"; missing parts count as 0, so "4.2" == "4.2.0").
 * Anything after the leading digits-and-dots ("-rc1", "+dirty") is ignored. Returns -1, 0 or 1.
 */
export function compareVersions(a: string, b: string): -1 | 0 | 1 {
  const pa = numericParts(a);
  const pb = numericParts(b);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? 0;
    const y = pb[i] ?? 0;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/** True when `version` is at least MIN_CRIU_VERSION. */
export function isSupportedCriuVersion(version: string): boolean {
  return compareVersions(version, MIN_CRIU_VERSION) >= 0;
}

function numericParts(version: string): number[] {
  const m = /^\s*v?(\d+(?:\.\d+)*)/.exec(version);
  return m?.[1] === undefined ? [] : m[1].split('.').map((p) => Number.parseInt(p, 10));
}
