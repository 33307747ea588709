/**
 * What this machine's CRIU and kernel can do beyond a plain dump and restore, checked once when
 * an agent starts.
 */
import { runCommand } from '../system/exec.js';

/**
 * Whether CRIU can restore memory lazily here (userfaultfd with non-cooperative events, which
 * CRIU's lazy-pages daemon needs), as `criu check --feature uffd-noncoop` says. The environment
 * variable GODWIT_LAZY_PAGES=0 says no (to try the fallbacks).
 */
export async function lazyPagesSupported(criu: string): Promise<{ ok: boolean; reason?: string }> {
  if (process.env['GODWIT_LAZY_PAGES'] === '0') return { ok: false, reason: 'GODWIT_LAZY_PAGES=0' };
  const r = await runCommand(criu, ['check', '--feature', 'uffd-noncoop'], { timeoutMs: 10_000 }).catch(
    (err: unknown) => ({ code: -1, stdout: '', stderr: String(err) }),
  );
  if (r.code === 0) return { ok: true };
  const why = `${r.stdout}\n${r.stderr}`.trim().split('\n').filter(Boolean).pop() ?? `exit ${r.code}`;
  return { ok: false, reason: `criu check --feature uffd-noncoop: ${why}` };
}
