/**
 * Measures the CPU side of a pre-copy round and of the hybrid verdict scan on one process, no
 * container, no network: how long reading and comparing all memory takes (MemoryMirror.scan),
 * encoding the round's manifest as a delta against the last one (the sender's offer) and
 * expanding and validating it (the receiver's), and judging every page of the stopped process
 * against the last round (scanVerdicts).
 *
 * Usage: node --import tsx src/memory/scan-bench.ts [--mib 1024] [--rounds 4] [--dirty 2]
 *          [--hot-mib 32] [--json]
 * The process is godwit-memload from godwit's tools (`godwit setup`), rewriting --dirty MB/s of a
 * --hot-mib hot set, as in the strategies benchmark. Root is needed to read its memory.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { systemClock } from '../core/clock.js';
import type { Manifest } from '../core/chunks.js';
import { applyManifestDelta, encodeManifestDelta } from '../chunks/manifest-delta.js';
import { parseManifest } from '../chunks/manifest.js';
import { scanVerdicts } from '../migration/verdict-scan.js';
import { defaultToolsDir, toolPaths } from '../system/tools.js';
import { MemoryMirror } from './memory-mirror.js';
import { NoPredictor } from './predictor.js';
import type { PageRun } from './memory-index.js';
import { readProcessPages } from './process-memory.js';
import { PAGE_SIZE } from '../core/chunks.js';

const { values } = parseArgs({
  options: {
    mib: { type: 'string', default: '1024' },
    rounds: { type: 'string', default: '4' },
    dirty: { type: 'string', default: '2' },
    'hot-mib': { type: 'string', default: '32' },
    json: { type: 'boolean', default: false },
  },
});
const mib = Number(values.mib);
const rounds = Number(values.rounds);

const ms = (t0: number): number => Math.round(performance.now() - t0);

async function main(): Promise<void> {
  const memload = toolPaths(defaultToolsDir()).memload;
  const child = spawn(
    memload,
    [
      '--mib',
      String(mib),
      '--interval-ms',
      '100',
      '--verify-interval-ms',
      '0',
      '--pattern',
      'hotset',
      '--hot-mib',
      String(values['hot-mib']),
      '--dirty-mib-per-s',
      String(values.dirty),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const pid = child.pid as number;
  try {
    const lines = createInterface({ input: child.stdout });
    for await (const line of lines) if (line.startsWith('ready ')) break;
    const mirror = new MemoryMirror('bench', new NoPredictor());
    const rows: Record<string, number>[] = [];
    let last: Manifest | undefined;
    for (let r = 0; r <= rounds; r++) {
      const t0 = performance.now();
      const scan = await mirror.scan([{ pid, vpid: 1 }], { holdBack: false });
      const scanMs = ms(t0);
      const row: Record<string, number> = {
        round: r,
        pages: scan.pagesScanned,
        dirty: scan.dirtyPages,
        scanMs,
      };
      if (last) {
        const base = parseManifest(last);
        let t = performance.now();
        const delta = encodeManifestDelta(scan.manifest, base, 'base');
        row['encodeDeltaMs'] = ms(t);
        const wire: unknown = JSON.parse(JSON.stringify(delta));
        t = performance.now();
        parseManifest(applyManifestDelta(wire, base));
        row['expandDeltaMs'] = ms(t);
      }
      last = scan.manifest;
      rows.push(row);
      if (!values.json) console.log(JSON.stringify(row));
    }
    // The final phase: the process stopped, every page judged against the last round.
    process.kill(pid, 'SIGSTOP');
    // The pages a lazy dump would leave in the process: every page the rounds read.
    const lazyRuns: PageRun[] = [];
    await readProcessPages(
      pid,
      (vaddr, data) => {
        const last = lazyRuns[lazyRuns.length - 1];
        if (last && last.vaddr + last.nrPages * PAGE_SIZE === vaddr) last.nrPages += data.length / PAGE_SIZE;
        else lazyRuns.push({ vaddr, nrPages: data.length / PAGE_SIZE });
      },
      { keep: false },
    );
    const t0 = performance.now();
    let verdictRuns = 0;
    const v = await scanVerdicts({
      mirror,
      processes: new Map([[1, pid]]),
      lazyRuns: new Map([[1, lazyRuns]]),
      push: (runs) => {
        verdictRuns += runs.length;
      },
      clock: systemClock,
    });
    const verdicts = { ...v, wallMs: ms(t0), verdictRuns };
    process.kill(pid, 'SIGCONT');
    if (values.json) console.log(JSON.stringify({ mib, rounds: rows, verdicts }, null, 2));
    else console.log(JSON.stringify({ verdicts }));
  } finally {
    child.kill('SIGKILL');
  }
}

await main();
