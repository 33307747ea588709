/**
 * The `link` lock in CRIU's own order. godwit cuts a dumped container off at its bridge port
 * (core/network.ts `NetworkLock`), a grace after the freeze so that requests already on their way
 * still land in the frozen sockets. Done before runc starts, that grace and the port's `ip`
 * command are spent while nothing else happens: runc and CRIU could be starting meanwhile.
 *
 * They can, because CRIU itself says when the lock must hold: it runs its `network-lock` action
 * scripts after it has seized the tasks and before it takes a single socket. The gate is such a
 * script: it waits on a FIFO until godwit writes `locked` (CRIU goes on) or anything else (the
 * script fails, and with it the dump: the container was never touched and runs on). If godwit
 * goes away without a word, the FIFO's writer closes and the script fails too.
 *
 * Contract: every gate is opened or failed exactly once (a second call is ignored), and closed
 * after runc has returned or CRIU is past the lock (ready); closing an unsettled gate fails it.
 * The script stays: CRIU runs it for every later action too (status-ready, post-dump, …) as long
 * as it runs, and fails the dump where it cannot; it goes with the dump's work directory.
 */
import { constants } from 'node:fs';
import { open, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { runCommand } from '../system/exec.js';

/** A gate for one dump; see the module comment. */
export interface LinkLockGate {
  /** The action script to name in CRIU's configuration (`action-script PATH`). */
  readonly script: string;
  /** The lock holds: CRIU may take the sockets. */
  open(): Promise<void>;
  /** The lock failed: CRIU fails the dump. */
  fail(): Promise<void>;
  /** Fails the gate if unsettled, then removes its FIFO (not the script). Idempotent. */
  close(): Promise<void>;
}

/** Files of a gate in a dump's work directory. */
export const LINK_LOCK_FILES = { script: 'link-lock.sh', fifo: 'link-lock.fifo' } as const;

/** What the gate writes for "go on". */
const LOCKED = 'locked';

/** The script CRIU runs for every action; only `network-lock` waits. */
export function linkLockScript(fifo: string): string {
  return [
    '#!/bin/sh',
    '# godwit: CRIU takes no socket before the link lock holds (runtime/link-lock-gate.ts).',
    '[ "$CRTOOLS_SCRIPT_ACTION" = network-lock ] || exit 0',
    `IFS= read -r verdict < ${shellQuote(fifo)} || exit 1`,
    `[ "$verdict" = ${LOCKED} ]`,
    '',
  ].join('\n');
}

/**
 * A gate in `workDir`, or undefined where one cannot be made (a path CRIU's configuration cannot
 * carry, no mkfifo): the caller then locks before it starts runc.
 */
export async function createLinkLockGate(workDir: string): Promise<LinkLockGate | undefined> {
  const script = join(workDir, LINK_LOCK_FILES.script);
  const fifo = join(workDir, LINK_LOCK_FILES.fifo);
  // CRIU's configuration splits on white space and reads quotes: keep to paths it takes as they are.
  if (/[\s"'\\]/.test(script)) return undefined;
  await rm(fifo, { force: true });
  const made = await runCommand('mkfifo', ['-m', '600', fifo], { timeoutMs: 5000 }).catch(() => undefined);
  if (made?.code !== 0) return undefined;
  let fh: FileHandle;
  try {
    // Read and write: opening does not wait for the script, and what is written stays in the
    // FIFO until the script reads it (or this end closes).
    fh = await open(fifo, constants.O_RDWR | constants.O_NONBLOCK);
    await writeFile(script, linkLockScript(fifo), { mode: 0o700 });
  } catch {
    await rm(fifo, { force: true });
    await rm(script, { force: true });
    return undefined;
  }
  let settled = false;
  let closed = false;
  const settle = async (word: string): Promise<void> => {
    if (settled || closed) return;
    settled = true;
    await fh.write(`${word}\n`).catch(() => undefined);
  };
  return {
    script,
    open: () => settle(LOCKED),
    fail: () => settle('failed'),
    close: async () => {
      if (closed) return;
      await settle('failed');
      closed = true;
      await fh.close().catch(() => undefined);
      await rm(fifo, { force: true });
    },
  };
}

/** `s` in single quotes for sh. */
function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
