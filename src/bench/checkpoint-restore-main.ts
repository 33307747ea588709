/**
 * `npm run bench:cr -- [--reps N] [--mib M,...] [--out FILE]`: local checkpoint/restore
 * timings (median of N) on a throwaway godwit host, written as JSON to FILE and as a
 * table to stdout.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { formatBytes, formatMs, table } from '../cli/format.js';
import { openLocalRuntime } from '../runtime/local-runtime.js';
import { StateDir } from '../runtime/state-dir.js';
import { defaultToolsDir, loadTools } from '../system/tools.js';
import { benchCheckpointRestore } from './checkpoint-restore.js';

const { values } = parseArgs({
  options: {
    reps: { type: 'string', default: '5' },
    mib: { type: 'string', default: '0,256' },
    out: { type: 'string' },
  },
});
const reps = Number(values.reps);
const mibs = (values.mib ?? '0').split(',').map(Number);
const tools = await loadTools(defaultToolsDir());
const dir = await mkdtemp(join(tmpdir(), 'godwit-bench-'));
try {
  const state = await StateDir.open(dir);
  const runtime = openLocalRuntime(state, tools);
  const results = await benchCheckpointRestore(runtime, {
    reps,
    memoryMiB: mibs,
    onRep: (r, i) =>
      process.stderr.write(
        `${r.workload} ${r.memoryMiB} MiB #${i + 1}: checkpoint ${formatMs(r.checkpointMs)}, restore ${formatMs(r.restoreMs)}\n`,
      ),
  });
  const doc = {
    machine: { kernel: (await import('node:os')).release(), criu: tools.criuVersion },
    reps,
    results,
  };
  if (values.out) await writeFile(values.out, JSON.stringify(doc, null, 2) + '\n');
  console.log(
    table(
      ['WORKLOAD', 'MEMORY', 'CHECKPOINT median (min-max)', 'RESTORE median (min-max)', 'IMAGE', 'CONTINUED'],
      results.map((r) => [
        r.workload,
        r.memoryMiB ? `${r.memoryMiB} MiB` : '-',
        `${formatMs(r.checkpointMs.median)} (${formatMs(r.checkpointMs.min)}-${formatMs(r.checkpointMs.max)})`,
        `${formatMs(r.restoreMs.median)} (${formatMs(r.restoreMs.min)}-${formatMs(r.restoreMs.max)})`,
        formatBytes(r.imageBytes.median),
        r.allContinued ? 'yes' : 'NO',
      ]),
    ),
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
