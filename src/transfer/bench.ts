/**
 * Benchmarks of the sync protocol on loopback: codec speed and ratio on 64 KiB chunks of
 * seeded page content, and `sendManifest` against a plain TCP copy of the same tree, with
 * the CPU each side spends per GB. The receiver runs in a child process (bench-main.ts
 * `--receiver`) so that `process.cpuUsage()` separates the sender's CPU from the receiver's.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import type { Manifest } from '../core/chunks.js';
import { nullLogger } from '../core/logger.js';
import { manifestStats, MemoryChunkStore } from '../chunks/index.js';
import { sendManifest } from './client.js';
import { ChunkCompressor, decompressChunk, type CodecName } from './codec.js';
import { mixedPages, PAGE_KINDS, type PageKind } from './mixed-content.js';
import { startTransferServer, type TransferServer } from './server.js';
import { buildManifest, type TestFile } from './testing.js';

const MiB = 1024 * 1024;
const CHUNK = 65536;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

function seconds(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

// ---- codecs ----

/** One row of the codec table: GB/s of raw bytes. */
export interface CodecBenchRow {
  content: PageKind | 'mixed';
  codec: string;
  compressGBps: number;
  decompressGBps: number;
  ratio: number;
}

interface CodecUnderTest {
  name: string;
  compress: (raw: Buffer) => { codec: number; data: Buffer };
  decompress: (codec: number, data: Buffer, rawSize: number) => Buffer;
}

function codecsUnderTest(): CodecUnderTest[] {
  const ours = (codec: CodecName, level?: number): CodecUnderTest => {
    const c = new ChunkCompressor(codec, level);
    return {
      name: codec === 'zstd' ? `zstd ${c.level}` : codec,
      compress: (raw) => c.compress(raw),
      decompress: (codec, data, rawSize) => decompressChunk(codec, data, rawSize),
    };
  };
  return [
    ours('zstd', -1),
    ours('zstd', 1),
    ours('zstd', 3),
    ours('lz4'),
    {
      name: 'deflate 1',
      compress: (raw) => ({ codec: 99, data: deflateRawSync(raw, { level: 1 }) }),
      decompress: (_c, data, rawSize) => inflateRawSync(data, { maxOutputLength: rawSize }),
    },
  ];
}

/** Compression speed and ratio per codec on `mib` MiB of 64 KiB chunks per content kind; median of `reps`. */
export function benchCodecs(
  opts: { mib?: number; reps?: number; contents?: (PageKind | 'mixed')[] } = {},
): CodecBenchRow[] {
  const mib = opts.mib ?? 64;
  const reps = opts.reps ?? 3;
  const rows: CodecBenchRow[] = [];
  for (const content of opts.contents ?? ['mixed', ...PAGE_KINDS]) {
    const data = mixedPages(mib * MiB, 42, content);
    const chunks: Buffer[] = [];
    for (let o = 0; o < data.length; o += CHUNK) chunks.push(data.subarray(o, o + CHUNK));
    for (const c of codecsUnderTest()) {
      const comp: number[] = [];
      const decomp: number[] = [];
      let ratio = 1;
      for (let rep = 0; rep < reps; rep++) {
        let t0 = process.hrtime.bigint();
        const enc = chunks.map((raw) => c.compress(raw));
        comp.push(data.length / seconds(t0) / 1e9);
        t0 = process.hrtime.bigint();
        for (const e of enc) c.decompress(e.codec, e.data, CHUNK);
        decomp.push(data.length / seconds(t0) / 1e9);
        ratio = data.length / enc.reduce((n, e) => n + e.data.length, 0);
      }
      rows.push({
        content,
        codec: c.name,
        compressGBps: median(comp),
        decompressGBps: median(decomp),
        ratio,
      });
    }
  }
  return rows;
}

// ---- transfer vs plain TCP ----

/** The benchmark tree: page images of mixed content, a zero-filled image and small text files. */
export async function benchTree(
  mib: number,
  store: MemoryChunkStore,
): Promise<{ manifest: Manifest; files: TestFile[] }> {
  const unit = mib / 8;
  const files: TestFile[] = [
    { path: 'criu/pages-1.img', data: mixedPages(Math.round(4 * unit) * MiB, 1) },
    { path: 'criu/pages-2.img', data: mixedPages(Math.round(2 * unit) * MiB, 2) },
    { path: 'criu/pages-3.img', data: Buffer.alloc(Math.round(unit) * MiB) },
  ];
  const small = Math.round(unit * 16);
  for (let i = 0; i < small; i++) {
    files.push({
      path: `rootfs/etc/f${i}.conf`,
      data: mixedPages(CHUNK, 1000 + i, i % 2 === 0 ? 'text' : 'heap'),
    });
  }
  const manifest = await buildManifest(store, files, { inlineMax: 4096, label: `bench:${mib}MiB` });
  return { manifest, files };
}

/** Messages between the benchmark and its receiver child. */
type ToChild = { cmd: 'reset' } | { cmd: 'cpu' } | { cmd: 'exit' };
type FromChild =
  { kind: 'ready'; transferPort: number; sinkPort: number } | { kind: 'cpu'; user: number; system: number };

/** Runs in the child: a transfer server on a fresh in-memory store and a TCP sink, driven over IPC. */
export async function runReceiverChild(): Promise<void> {
  const send = (m: FromChild): void => {
    process.send?.(m);
  };
  let server: TransferServer | undefined;
  const dataDir = join(tmpdir(), `godwit-transfer-bench-${process.pid}`);
  const start = async (): Promise<number> => {
    await server?.close();
    server = await startTransferServer({
      store: new MemoryChunkStore(),
      listen: { host: '127.0.0.1', port: 0 },
      dataDir,
      log: nullLogger,
    });
    return server.port;
  };
  const sink: Server = createServer((s: Socket) => {
    s.on('data', () => undefined);
    s.on('end', () => s.end());
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', () => r()));
  const sinkPort = (sink.address() as AddressInfo).port;
  send({ kind: 'ready', transferPort: await start(), sinkPort });
  process.on('disconnect', () => process.exit(0));
  process.on('message', (m: ToChild) => {
    void (async () => {
      if (m.cmd === 'reset') send({ kind: 'ready', transferPort: await start(), sinkPort });
      else if (m.cmd === 'cpu') send({ kind: 'cpu', ...process.cpuUsage() });
      else {
        await server?.close();
        sink.close();
        await rm(dataDir, { recursive: true, force: true });
        process.exit(0);
      }
    })();
  });
}

class ReceiverChild {
  private constructor(
    private readonly child: ChildProcess,
    public ports: { transferPort: number; sinkPort: number },
  ) {}

  static async start(): Promise<ReceiverChild> {
    const script = fileURLToPath(new URL('./bench-main.ts', import.meta.url));
    const child = fork(script, ['--receiver'], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const ready = await ReceiverChild.reply(child, 'ready');
    return new ReceiverChild(child, ready as { transferPort: number; sinkPort: number });
  }

  private static reply(child: ChildProcess, kind: FromChild['kind']): Promise<FromChild> {
    return new Promise((resolve, reject) => {
      const onMsg = (m: FromChild): void => {
        if (m.kind !== kind) return;
        child.off('message', onMsg);
        child.off('exit', onExit);
        resolve(m);
      };
      const onExit = (code: number | null): void => reject(new Error(`bench receiver exited (${code})`));
      child.on('message', onMsg);
      child.once('exit', onExit);
    });
  }

  async reset(): Promise<void> {
    const p = ReceiverChild.reply(this.child, 'ready');
    this.child.send({ cmd: 'reset' } satisfies ToChild);
    this.ports = (await p) as { transferPort: number; sinkPort: number };
  }

  async cpuSeconds(): Promise<number> {
    const p = ReceiverChild.reply(this.child, 'cpu');
    this.child.send({ cmd: 'cpu' } satisfies ToChild);
    const m = (await p) as { user: number; system: number };
    return (m.user + m.system) / 1e6;
  }

  stop(): void {
    this.child.send({ cmd: 'exit' } satisfies ToChild);
  }
}

function ownCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Writes every file's bytes over one TCP connection to the sink, with backpressure; resolves when it closed. */
async function plainCopy(port: number, files: readonly TestFile[]): Promise<number> {
  const socket = connect({ host: '127.0.0.1', port });
  await new Promise<void>((r) => socket.once('connect', () => r()));
  for (const f of files) {
    for (let o = 0; o < f.data.length; o += MiB) {
      if (!socket.write(f.data.subarray(o, o + MiB)))
        await new Promise<void>((r) => socket.once('drain', () => r()));
    }
  }
  await new Promise<void>((r) => {
    socket.once('close', () => r());
    socket.end();
  });
  return socket.bytesWritten;
}

/** One row of the transfer table. */
export interface TransferBenchRow {
  variant: string;
  seconds: number;
  /** Tree bytes (logical) per second, MB = 10^6 bytes. */
  logicalMBps: number;
  wireMB: number;
  senderCpuSPerGB: number;
  receiverCpuSPerGB: number;
  /** Estimated seconds on a 1 Gbit/s and a 100 Mbit/s link: CPU of the busier side or the wire, whichever is longer. */
  est1GbitS: number;
  est100MbitS: number;
}

/** Variants to run: a codec (or the plain TCP copy) and a stream count. */
export interface TransferVariant {
  codec: CodecName | 'tcp';
  level?: number;
  streams?: number;
}

export const DEFAULT_VARIANTS: TransferVariant[] = [
  { codec: 'tcp' },
  { codec: 'zstd', level: 1, streams: 1 },
  { codec: 'zstd', level: 1, streams: 2 },
  { codec: 'zstd', level: 1, streams: 4 },
  { codec: 'zstd', level: 3, streams: 1 },
  { codec: 'lz4', streams: 1 },
  { codec: 'none', streams: 1 },
];

/** sendManifest of a `mib` MiB tree against a plain TCP copy, each variant `reps` times (median). */
export async function benchTransfer(opts: {
  mib: number;
  reps: number;
  variants?: TransferVariant[];
  onRow?: (row: TransferBenchRow) => void;
}): Promise<{ rows: TransferBenchRow[]; tree: ReturnType<typeof manifestStats> }> {
  const store = new MemoryChunkStore();
  const { manifest, files } = await benchTree(opts.mib, store);
  const tree = manifestStats(manifest);
  const gb = tree.logicalBytes / 1e9;
  const child = await ReceiverChild.start();
  const rows: TransferBenchRow[] = [];
  let session = 0;
  try {
    for (const v of opts.variants ?? DEFAULT_VARIANTS) {
      const samples: { s: number; wire: number; send: number; recv: number }[] = [];
      for (let rep = 0; rep < opts.reps; rep++) {
        await child.reset();
        const c0 = ownCpuSeconds();
        const r0 = await child.cpuSeconds();
        const t0 = process.hrtime.bigint();
        let wire: number;
        if (v.codec === 'tcp') {
          wire = await plainCopy(child.ports.sinkPort, files);
        } else {
          const st = await sendManifest({
            host: '127.0.0.1',
            port: child.ports.transferPort,
            sessionId: `bench-${session++}`,
            manifest,
            store,
            codec: v.codec,
            ...(v.level === undefined ? {} : { level: v.level }),
            streams: v.streams ?? 1,
          });
          wire = st.wireBytes;
        }
        const s = seconds(t0);
        samples.push({ s, wire, send: ownCpuSeconds() - c0, recv: (await child.cpuSeconds()) - r0 });
      }
      const s = median(samples.map((x) => x.s));
      const wire = median(samples.map((x) => x.wire));
      const send = median(samples.map((x) => x.send));
      const recv = median(samples.map((x) => x.recv));
      const cpuBound = Math.max(send, recv);
      const row: TransferBenchRow = {
        variant:
          v.codec === 'tcp'
            ? 'plain TCP copy'
            : `sendManifest ${v.codec}${v.codec === 'zstd' ? ` ${v.level ?? 1}` : ''} ×${v.streams ?? 1}`,
        seconds: s,
        logicalMBps: tree.logicalBytes / 1e6 / s,
        wireMB: wire / 1e6,
        senderCpuSPerGB: send / gb,
        receiverCpuSPerGB: recv / gb,
        est1GbitS: Math.max(cpuBound, wire / 125e6),
        est100MbitS: Math.max(cpuBound, wire / 12.5e6),
      };
      rows.push(row);
      opts.onRow?.(row);
    }
  } finally {
    child.stop();
  }
  return { rows, tree };
}
