/**
 * `npm run bench:transfer -- [--mib 256] [--reps 3] [--codecs-only | --no-codecs] [--json]`
 * Prints codec speed and ratio on 64 KiB chunks, then sendManifest against a plain TCP copy
 * of a mixed-content tree on loopback, with CPU seconds per GB for sender and receiver.
 */
import { Command, InvalidArgumentError as CommanderArgumentError } from 'commander';
import {
  benchCodecs,
  benchTransfer,
  runReceiverChild,
  type CodecBenchRow,
  type TransferBenchRow,
} from './bench.js';

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new CommanderArgumentError('must be a positive integer');
  return n;
}

function table(headers: string[], rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? c.toFixed(2) : c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}

async function main(): Promise<void> {
  const program = new Command('bench:transfer')
    .option('--mib <n>', 'size of the tree sent', positiveInt, 256)
    .option('--reps <n>', 'repetitions per variant (median)', positiveInt, 3)
    .option('--codecs-only', 'only the codec table')
    .option('--no-codecs', 'skip the codec table')
    .option('--json', 'print one JSON document')
    .parse();
  const o = program.opts<{
    mib: number;
    reps: number;
    codecsOnly?: boolean;
    codecs: boolean;
    json?: boolean;
  }>();
  const out: { codecs?: CodecBenchRow[]; transfer?: TransferBenchRow[]; tree?: unknown } = {};
  if (o.codecs) {
    out.codecs = benchCodecs({ reps: o.reps });
    if (!o.json) {
      console.log('Codecs, one thread, 64 KiB chunks, 64 MiB per content kind (GB/s of raw bytes, median):');
      console.log(
        table(
          ['content', 'codec', 'compress GB/s', 'decompress GB/s', 'ratio'],
          out.codecs.map((r) => [r.content, r.codec, r.compressGBps, r.decompressGBps, r.ratio]),
        ),
      );
      console.log();
    }
  }
  if (!o.codecsOnly) {
    const { rows, tree } = await benchTransfer({ mib: o.mib, reps: o.reps });
    out.transfer = rows;
    out.tree = tree;
    if (!o.json) {
      console.log(
        `Loopback, ${o.mib} MiB tree (${(tree.logicalBytes / 1e6).toFixed(0)} MB logical, ${(tree.zeroBytes / 1e6).toFixed(0)} MB zero runs, ` +
          `${tree.uniqueChunks} unique chunks); receiver in a child process; median of ${o.reps}:`,
      );
      console.log(
        table(
          [
            'variant',
            'seconds',
            'logical MB/s',
            'wire MB',
            'sender CPU s/GB',
            'receiver CPU s/GB',
            'est. s @1Gbit',
            'est. s @100Mbit',
          ],
          rows.map((r) => [
            r.variant,
            r.seconds,
            r.logicalMBps,
            r.wireMB,
            r.senderCpuSPerGB,
            r.receiverCpuSPerGB,
            r.est1GbitS,
            r.est100MbitS,
          ]),
        ),
      );
      console.log('(s/GB per GB of logical tree; estimates = max(busier side CPU, wire bytes / link rate))');
    }
  }
  if (o.json) console.log(JSON.stringify(out, null, 2));
}

if (process.argv.includes('--receiver')) {
  await runReceiverChild();
} else {
  await main();
}
