/**
 * The stateful service the demo, the benchmarks and the migration tests move: godwit-memload
 * holding `mib` MiB (30 % zero, 30 % repeated, 40 % random pages) and rewriting `dirtyMBps` of a
 * `hotMiB` hot set every 100 ms, serving the probe's counter protocol on `port`. It verifies its
 * own memory only when asked (`verifyMemory`), not on a timer.
 */

/** Where godwit ships memload inside its containers. */
export const MEMLOAD_IN_CONTAINER = '/usr/local/bin/godwit-memload';

/** The small stateful web service (godwit-counterd: `counter N` from memory) on `port`. */
export function counterdServiceArgs(port = 8080): string[] {
  return ['/usr/local/bin/godwit-counterd', '--port', String(port)];
}

/**
 * The service's content mix, % of pages: zero, repeated (one shared image), random. A rewrite
 * gives a page fresh content of its own kind, so only the random pages' rewrites change their
 * content: content-based dirty tracking sees RANDOM_PCT % of the writes, and sees them
 * incompressible.
 */
export const MEMLOAD_MIX = { zeroPct: 30, repeatedPct: 30, randomPct: 40 } as const;

/** The command line of that service. `seed` picks its memory content (default memload's own). */
export function memloadServiceArgs(o: {
  mib: number;
  dirtyMBps: number;
  hotMiB: number;
  seed?: number;
  port?: number;
  /** Where the writes land: the hot set (default) or all of the memory. */
  pattern?: 'hotset' | 'uniform';
}): string[] {
  return [
    MEMLOAD_IN_CONTAINER,
    ...(o.seed !== undefined ? ['--seed', String(o.seed)] : []),
    ...[
      '--mib',
      String(o.mib),
      '--mix',
      `${MEMLOAD_MIX.zeroPct}:${MEMLOAD_MIX.repeatedPct}:${MEMLOAD_MIX.randomPct}`,
      '--pattern',
      o.pattern ?? 'hotset',
    ],
    ...['--hot-mib', String(o.hotMiB), '--dirty-mib-per-s', String(o.dirtyMBps), '--interval-ms', '100'],
    ...['--verify-interval-ms', '0', '--port', String(o.port ?? 8080)],
  ];
}
