import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ChunkStore, Digest, Manifest } from '../core/chunks.js';
import { ErrorCode, GodwitError } from '../core/errors.js';
import { digestOf, manifestDigests, MemoryChunkStore } from '../chunks/index.js';
import { sendManifest, type SendManifestOptions } from './client.js';
import { CodecId } from './codec.js';
import {
  encodeChunk,
  encodeFrame,
  encodeJsonFrame,
  encodeOffer,
  encodeWant,
  FrameDecoder,
  FrameType,
  RECEIVER_ACCEPTS,
  type Frame,
} from './frames.js';
import { PROTOCOL_VERSION } from './messages.js';
import { mixedPages, seededRandom } from './mixed-content.js';
import { completedManifest, type TransferServerOptions } from './server.js';
import { buildManifest, CountingStore, CutProxy, hasCode, RawClient, startTestReceiver } from './testing.js';

const MiB = 1024 * 1024;

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'godwit-transfer-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function receiver(opts: Partial<TransferServerOptions> = {}): ReturnType<typeof startTestReceiver> {
  return startTestReceiver(dir, opts);
}

async function source(
  mib: number,
  seed: number,
): Promise<{ store: MemoryChunkStore; manifest: Manifest; data: Buffer }> {
  const store = new MemoryChunkStore();
  const data = mixedPages(mib * MiB, seed);
  const manifest = await buildManifest(
    store,
    [
      { path: 'criu/pages-1.img', data },
      { path: 'criu/zeros.img', data: Buffer.alloc(MiB) },
      { path: 'etc/small', data: Buffer.from('hello') },
    ],
    { inlineMax: 4096 },
  );
  return { store, manifest, data };
}

function send(
  port: number,
  sessionId: string,
  src: { store: ChunkStore; manifest: Manifest },
  extra: Partial<SendManifestOptions> = {},
) {
  return sendManifest({
    host: '127.0.0.1',
    port,
    sessionId,
    manifest: src.manifest,
    store: src.store,
    retryDelayMs: 10,
    idleTimeoutMs: 10_000,
    ...extra,
  });
}

async function assertHasAll(store: ChunkStore, manifest: Manifest): Promise<void> {
  const digests = manifestDigests(manifest);
  assert.deepEqual(await store.missing(digests), []);
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('transfer end to end on 127.0.0.1', () => {
  it('sends a manifest, records it, and a second send sends no chunks (dedup)', async () => {
    const r = await receiver();
    try {
      const src = await source(4, 1);
      const progress: number[] = [];
      const st = await send(r.server.port, 'm-1', src, { onProgress: (p) => progress.push(p.bytesDone) });
      assert.equal(st.chunksWanted, st.uniqueChunks);
      assert.equal(st.chunksSent, st.uniqueChunks);
      assert.equal(st.rawBytesSent, st.uniqueChunkBytes);
      assert.ok(st.zeroBytes >= MiB, 'the zero file is a zero run');
      assert.equal(st.inlineBytes, 5);
      assert.equal(st.logicalBytes, 5 * MiB + 5);
      assert.ok(
        st.rawBytesSent <= st.logicalBytes - st.zeroBytes - st.inlineBytes,
        'zero runs are never sent',
      );
      assert.ok(st.compressionRatio > 1.5, `compression ratio ${st.compressionRatio}`);
      assert.ok(st.wireBytes < st.rawBytesSent, 'wire bytes include framing but are compressed');
      assert.equal(st.reconnects, 0);
      assert.equal(st.streams, 1);
      assert.equal(progress.at(-1), st.rawBytesSent);
      await assertHasAll(r.mem, src.manifest);

      const got = await completedManifest(r.dataDir, 'm-1');
      assert.deepEqual(got, src.manifest);
      await stat(join(r.dataDir, 'm-1', 'complete'));
      assert.deepEqual(await r.mem.retentions(), ['session:m-1']);
      assert.equal(await completedManifest(r.dataDir, 'm-unknown'), undefined);
      await assert.rejects(completedManifest(r.dataDir, '../etc'), hasCode(ErrorCode.InvalidName));

      // Same manifest again, new session: the receiver has every chunk.
      const again = await send(r.server.port, 'm-2', src);
      assert.equal(again.chunksWanted, 0);
      assert.equal(again.chunksAlreadyThere, again.uniqueChunks);
      assert.equal(again.dedupBytes, again.uniqueChunkBytes);
      assert.equal(again.rawBytesSent, 0);
      assert.equal(again.chunksSent, 0);
      assert.ok(again.wireBytes < 64 * 1024, `only control frames cross (${again.wireBytes} bytes)`);
      assert.deepEqual(await completedManifest(r.dataDir, 'm-2'), src.manifest);
      for (const n of r.store.puts.values()) assert.equal(n, 1, 'no chunk was stored twice');

      // Same session again (e.g. the sender restarted): nothing to send, still complete.
      const same = await send(r.server.port, 'm-1', src);
      assert.equal(same.chunksWanted, 0);
    } finally {
      await r.server.close();
    }
  });

  it('partial overlap: only the chunks the receiver lacks cross', async () => {
    const r = await receiver();
    try {
      const a = await source(2, 2);
      await send(r.server.port, 'a', a);
      // b shares a's first MiB and adds 1 MiB of new pages
      const bData = Buffer.concat([a.data.subarray(0, MiB), mixedPages(MiB, 99)]);
      const bStore = new MemoryChunkStore();
      const b = { store: bStore, manifest: await buildManifest(bStore, [{ path: 'b.img', data: bData }]) };
      const newDigests = new Set(
        manifestDigests(b.manifest).filter((d) => !manifestDigests(a.manifest).includes(d)),
      );
      const st = await send(r.server.port, 'b', b, { codec: 'lz4' });
      assert.equal(st.chunksWanted, newDigests.size);
      assert.equal(st.chunksAlreadyThere, st.uniqueChunks - newDigests.size);
      assert.ok(st.chunksAlreadyThere > 0);
      assert.ok(st.dedupBytes > 0);
      assert.equal(st.codec, 'lz4');
      await assertHasAll(r.mem, b.manifest);
    } finally {
      await r.server.close();
    }
  });

  it('parallel streams share the work and deliver everything', async () => {
    const r = await receiver();
    try {
      const src = await source(24, 3);
      const st = await send(r.server.port, 'par', src, { streams: 4, codec: 'none' });
      assert.equal(st.streams, 4);
      assert.equal(st.compressionRatio, 1);
      assert.equal(st.chunksSent, st.uniqueChunks);
      await assertHasAll(r.mem, src.manifest);
      assert.deepEqual(await completedManifest(r.dataDir, 'par'), src.manifest);
      // small transfers do not open more streams than they can use
      const tiny = await source(1, 33);
      const st2 = await send(r.server.port, 'tiny', tiny, { streams: 4 });
      assert.equal(st2.streams, 1);
    } finally {
      await r.server.close();
    }
  });

  it('resumes after a connection cut without resending verified chunks', async () => {
    const r = await receiver();
    // Cut the first connection after ~3 MiB and the second after ~2 MiB more.
    const cutPoints = [3 * MiB, 2 * MiB];
    const proxy = new CutProxy({ host: '127.0.0.1', port: r.server.port }, (i) => cutPoints[i]);
    const port = await proxy.start();
    try {
      const src = await source(16, 4);
      const st = await send(port, 'cut', src, { codec: 'none', readAheadBytes: MiB });
      assert.equal(proxy.cuts, 2);
      assert.equal(st.reconnects, 2);
      await assertHasAll(r.mem, src.manifest);
      assert.deepEqual(await completedManifest(r.dataDir, 'cut'), src.manifest);
      for (const [d, n] of r.store.puts) assert.equal(n, 1, `${d} stored once`);
      const info = r.server.sessions().find((s) => s.sessionId === 'cut');
      assert.equal(info?.duplicates, 0, 'no verified chunk crossed twice');
      assert.equal(info?.complete, true);
      // Chunks resent are only those cut off in flight: at most what fits in the cut's buffers.
      const resent = st.chunksSent - st.chunksWanted;
      assert.ok(resent >= 1 && resent <= 2 * 40, `resent ${resent}`);
    } finally {
      await proxy.close();
      await r.server.close();
    }
  });

  it('parallel streams resume too', async () => {
    const r = await receiver();
    const proxy = new CutProxy({ host: '127.0.0.1', port: r.server.port }, (i) =>
      i === 2 ? MiB : undefined,
    );
    const port = await proxy.start();
    try {
      const src = await source(16, 5);
      const st = await send(port, 'cut4', src, { streams: 3, codec: 'none' });
      assert.ok(st.reconnects >= 1);
      await assertHasAll(r.mem, src.manifest);
      for (const n of r.store.puts.values()) assert.equal(n, 1);
    } finally {
      await proxy.close();
      await r.server.close();
    }
  });

  it('reads ahead only a bounded amount while the receiver does not read', async () => {
    const src = await source(64, 10);
    const digests = manifestDigests(src.manifest);
    // A receiver that wants everything, then stops reading.
    const stalled = createServer((s) => {
      const dec = new FrameDecoder(RECEIVER_ACCEPTS);
      s.on('error', () => undefined);
      s.on('data', (b: Buffer) => {
        for (const f of dec.push(b)) {
          if (f.type === FrameType.Hello) {
            s.write(
              encodeJsonFrame(FrameType.HelloOk, {
                protocol: PROTOCOL_VERSION,
                sessionId: f.hello.sessionId,
                resumeToken: '0123456789abcdef0123456789abcdef',
                maxChunkSize: 1 << 24,
                maxOfferBytes: 1 << 26,
              }),
            );
          } else if (f.type === FrameType.Offer) {
            for (const w of encodeWant(digests)) s.write(w);
            s.pause();
            return;
          }
        }
      });
    });
    await new Promise<void>((r) => stalled.listen(0, '127.0.0.1', () => r()));
    const reading = new CountingStore(src.store);
    let gets = 0;
    reading.get = (d) => {
      gets++;
      return src.store.get(d);
    };
    const ac = new AbortController();
    const p = send(
      (stalled.address() as AddressInfo).port,
      'stalled',
      { store: reading, manifest: src.manifest },
      {
        signal: ac.signal,
        codec: 'none',
        readAheadBytes: MiB,
      },
    );
    await new Promise((r) => setTimeout(r, 1500));
    // read-ahead (16) + our write buffer (16) + the kernel's loopback buffers: far below 1040 chunks
    assert.ok(gets < 400, `${gets} of ${digests.length} chunks read while the receiver stalls`);
    ac.abort();
    await assert.rejects(p, hasCode(ErrorCode.TransferAborted));
    stalled.close();
    for (const s of [stalled]) s.unref();
  });

  it('gives up with TransferFailed when retries are exhausted', async () => {
    const src = await source(1, 6);
    const port = await freePort();
    const t0 = Date.now();
    await assert.rejects(send(port, 'nobody', src, { retries: 2 }), (err: unknown) => {
      assert.ok(err instanceof GodwitError);
      assert.equal(err.code, ErrorCode.TransferFailed);
      assert.match(err.message, /3 attempts/);
      return true;
    });
    assert.ok(Date.now() - t0 < 5000);

    // A link that always dies right after the offer makes no progress either.
    const r = await receiver();
    const proxy = new CutProxy({ host: '127.0.0.1', port: r.server.port }, () => 200);
    const pport = await proxy.start();
    try {
      await assert.rejects(send(pport, 'flaky', src, { retries: 1 }), hasCode(ErrorCode.TransferFailed));
      assert.equal(proxy.connections, 2);
    } finally {
      await proxy.close();
      await r.server.close();
    }
  });

  it('stops with TransferAborted when the signal fires', async () => {
    const r = await receiver();
    try {
      const src = await source(8, 7);
      const ac = new AbortController();
      // Abort from inside the transfer: after the source has handed out 20 chunks.
      const reading = new CountingStore(src.store);
      let gets = 0;
      reading.get = (d) => {
        if (++gets === 20) ac.abort();
        return src.store.get(d);
      };
      const p = send(
        r.server.port,
        'abort',
        { store: reading, manifest: src.manifest },
        { signal: ac.signal, codec: 'none' },
      );
      await assert.rejects(p, hasCode(ErrorCode.TransferAborted));
      const pre = new AbortController();
      pre.abort();
      await assert.rejects(
        send(r.server.port, 'abort2', src, { signal: pre.signal }),
        hasCode(ErrorCode.TransferAborted),
      );
    } finally {
      await r.server.close();
    }
  });

  it('enforces the receiver limits on OFFER and chunk size', async () => {
    const src = await source(1, 8);
    const small = await receiver({ maxOfferBytes: 256 });
    try {
      await assert.rejects(send(small.server.port, 'big-offer', src), hasCode(ErrorCode.TransferTooLarge));
    } finally {
      await small.server.close();
    }
    const r = await receiver({ maxChunkSize: 32 * 1024 });
    try {
      await assert.rejects(send(r.server.port, 'big-chunk', src), hasCode(ErrorCode.TransferTooLarge));
      // A hostile sender that ignores the limit gets ERROR before the server buffers the frame.
      const c = await RawClient.connect(r.server.port);
      c.write(
        encodeJsonFrame(FrameType.Hello, {
          protocol: PROTOCOL_VERSION,
          role: 'sender',
          sessionId: 'raw',
          stream: 0,
          streams: 1,
        }),
      );
      const header = Buffer.alloc(5);
      header.writeUInt32BE(200 * MiB, 0);
      header.writeUInt8(FrameType.Offer, 4);
      c.write(header);
      const err = (await c.waitFor((f) => f.type === FrameType.Error)) as Extract<
        Frame,
        { type: FrameType.Error }
      >;
      assert.equal(err.error.code, ErrorCode.TransferTooLarge);
      await c.waitClosed();
    } finally {
      await r.server.close();
    }
  });
});

describe('transfer receiver against hostile senders', () => {
  let r: Awaited<ReturnType<typeof receiver>>;
  before(async () => {
    r = await receiver({ idleTimeoutMs: 2000 });
  });
  after(async () => {
    await r.server.close();
  });

  const good = Buffer.alloc(4096, 1);
  const goodDigest = digestOf(good);
  const m: Manifest = {
    version: 1,
    label: 'hostile',
    createdAt: new Date(0).toISOString(),
    entries: [
      { type: 'file', path: 'f', mode: 0o644, size: 4096, chunks: [{ digest: goodDigest, size: 4096 }] },
    ],
  };

  async function storeWith(data: Buffer): Promise<MemoryChunkStore> {
    const s = new MemoryChunkStore();
    await s.put(digestOf(data), data);
    return s;
  }

  async function session(id: string): Promise<RawClient> {
    const c = await RawClient.connect(r.server.port);
    c.write(
      encodeJsonFrame(FrameType.Hello, {
        protocol: PROTOCOL_VERSION,
        role: 'sender',
        sessionId: id,
        stream: 0,
        streams: 1,
      }),
    );
    c.write(encodeOffer(Buffer.from(JSON.stringify(m))));
    await c.waitFor((f) => f.type === FrameType.Want);
    return c;
  }

  async function refused(c: RawClient, code: string): Promise<void> {
    const f = (await c.waitFor((x) => x.type === FrameType.Error)) as Extract<
      Frame,
      { type: FrameType.Error }
    >;
    assert.equal(f.error.code, code);
    await c.waitClosed();
  }

  it('rejects a chunk that does not match its digest and stores nothing', async () => {
    const c = await session('h-mismatch');
    c.write(encodeChunk(goodDigest, CodecId.none, 4096, Buffer.alloc(4096, 2)));
    await refused(c, ErrorCode.ChunkDigestMismatch);
    assert.equal((await r.mem.usage()).chunks, 0);
    assert.equal(r.store.puts.size, 0);
    assert.equal(r.server.sessions().find((s) => s.sessionId === 'h-mismatch')?.rejected, 1);
    assert.equal(await completedManifest(r.dataDir, 'h-mismatch'), undefined);
  });

  it('rejects compressed bombs, chunks outside the manifest and wrong sizes', async () => {
    let c = await session('h-bomb');
    const lz = Buffer.alloc(64);
    lz.writeUInt32LE(0xfffffff0, 0);
    c.write(encodeChunk(goodDigest, CodecId.lz4, 4096, lz));
    await refused(c, ErrorCode.DecompressFailed);

    c = await session('h-stranger');
    const other = Buffer.alloc(4096, 3);
    c.write(encodeChunk(digestOf(other), CodecId.none, 4096, other));
    await refused(c, ErrorCode.TransferProtocol);

    c = await session('h-size');
    c.write(encodeChunk(goodDigest, CodecId.none, 4095, good.subarray(1)));
    await refused(c, ErrorCode.TransferProtocol);
    assert.equal((await r.mem.usage()).chunks, 0);
  });

  it('answers garbage, frames out of order and bad HELLOs with ERROR and a close', async () => {
    let c = await RawClient.connect(r.server.port);
    c.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await refused(c, ErrorCode.TransferProtocol);

    c = await RawClient.connect(r.server.port);
    c.write(encodeJsonFrame(FrameType.End, { chunks: 0, rawBytes: 0 }));
    await refused(c, ErrorCode.TransferProtocol);

    c = await RawClient.connect(r.server.port);
    c.write(
      encodeFrame(
        FrameType.Hello,
        Buffer.from('{"protocol":1,"role":"sender","sessionId":"../../etc","stream":0,"streams":1}'),
      ),
    );
    await refused(c, ErrorCode.TransferProtocol);

    c = await RawClient.connect(r.server.port);
    c.write(
      encodeJsonFrame(FrameType.Hello, {
        protocol: 9,
        role: 'sender',
        sessionId: 'v9',
        stream: 0,
        streams: 1,
      }),
    );
    await refused(c, ErrorCode.TransferProtocol);

    c = await RawClient.connect(r.server.port);
    c.write(
      encodeJsonFrame(FrameType.Hello, {
        protocol: PROTOCOL_VERSION,
        role: 'sender',
        sessionId: 'early',
        stream: 0,
        streams: 1,
      }),
    );
    c.write(encodeChunk(goodDigest, CodecId.none, 4096, good));
    await refused(c, ErrorCode.TransferProtocol);

    // wrong resume token for a live session
    const owner = await session('h-owned');
    c = await RawClient.connect(r.server.port);
    c.write(
      encodeJsonFrame(FrameType.Hello, {
        protocol: PROTOCOL_VERSION,
        role: 'sender',
        sessionId: 'h-owned',
        stream: 0,
        streams: 1,
        resumeToken: 'ffffffffffffffffffffffffffffffff',
      }),
    );
    await refused(c, ErrorCode.TransferSessionConflict);
    owner.destroy();

    // a different manifest for a session that already has one
    const c2 = await session('h-other');
    const m2 = { ...m, label: 'other' };
    const helloOk = (await c2.waitFor((f) => f.type === FrameType.HelloOk)) as Extract<
      Frame,
      { type: FrameType.HelloOk }
    >;
    c2.destroy();
    c = await RawClient.connect(r.server.port);
    c.write(
      encodeJsonFrame(FrameType.Hello, {
        protocol: PROTOCOL_VERSION,
        role: 'sender',
        sessionId: 'h-other',
        stream: 0,
        streams: 1,
        resumeToken: helloOk.ok.resumeToken,
      }),
    );
    c.write(encodeOffer(Buffer.from(JSON.stringify(m2))));
    await refused(c, ErrorCode.TransferSessionConflict);
  });

  it('fuzz: mutated and random streams over live connections never crash or hang the receiver', async () => {
    const fz = await receiver({ idleTimeoutMs: 300 });
    try {
      const rnd = seededRandom(77);
      const valid = (id: string): Buffer =>
        Buffer.concat([
          encodeJsonFrame(FrameType.Hello, {
            protocol: PROTOCOL_VERSION,
            role: 'sender',
            sessionId: id,
            stream: 0,
            streams: 1,
          }),
          encodeOffer(Buffer.from(JSON.stringify(m))),
          encodeChunk(goodDigest, CodecId.none, 4096, good),
          encodeJsonFrame(FrameType.End, { chunks: 1, rawBytes: 4096 }),
        ]);
      const outcomes = { error: 0, done: 0, silent: 0 };
      const started = Date.now();
      for (let i = 0; i < 60; i++) {
        let data: Buffer;
        if (i === 59) {
          data = valid('fz-last'); // unmutated, and half-closed at once: still answered
        } else if (i % 4 === 3) {
          data = Buffer.alloc(1 + (rnd() % 2000));
          for (let k = 0; k < data.length; k++) data[k] = rnd() & 255;
        } else {
          data = valid(`fz-${i}`);
          for (let k = 1 + (rnd() % 4); k > 0; k--) data[rnd() % data.length] = rnd() & 255;
          if (i % 4 === 2) data = data.subarray(0, rnd() % data.length);
        }
        const c = await RawClient.connect(fz.server.port);
        c.write(data);
        c.end();
        await c.waitClosed(3000);
        if (c.frames.some((f) => f.type === FrameType.Error)) outcomes.error++;
        else if (c.frames.some((f) => f.type === FrameType.Done)) outcomes.done++;
        else outcomes.silent++;
      }
      assert.ok(outcomes.error > 30 && outcomes.done >= 1, JSON.stringify(outcomes));
      assert.ok(Date.now() - started < 30_000);
      // Whatever was stored was verified.
      for (const d of r.store.puts.keys()) assert.equal(d, goodDigest);
      const st = await send(fz.server.port, 'fz-good', { store: await storeWith(good), manifest: m });
      assert.ok(st.chunksWanted <= 1);
      assert.deepEqual(await completedManifest(fz.dataDir, 'fz-good'), m);
    } finally {
      await fz.server.close();
    }
  });

  it('closes idle and truncated connections, and still serves a good sender afterwards', async () => {
    const idle = await RawClient.connect(r.server.port);
    idle.write(Buffer.from([0, 0])); // half a header, then silence
    await idle.waitClosed(5000);

    const c = await session('h-good');
    c.write(encodeChunk(goodDigest, CodecId.none, 4096, good));
    c.write(encodeJsonFrame(FrameType.End, { chunks: 1, rawBytes: 4096 }));
    const done = (await c.waitFor((f) => f.type === FrameType.Done)) as Extract<
      Frame,
      { type: FrameType.Done }
    >;
    assert.equal(done.done.complete, true);
    assert.equal(done.done.chunks, 1);
    c.end();
    assert.deepEqual(await completedManifest(r.dataDir, 'h-good'), m);
    const text = await readFile(join(r.dataDir, 'h-good', 'manifest.json'), 'utf8');
    assert.deepEqual(JSON.parse(text), m);
    const digests: Digest[] = [goodDigest];
    assert.deepEqual(await r.mem.missing(digests), []);
  });
});
