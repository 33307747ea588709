import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MANIFEST_VERSION, type ChunkRef, type Digest, type Manifest } from '../core/chunks.js';
import type { Clock } from '../core/clock.js';
import { ErrorCode } from '../core/errors.js';
import { digestOf, encodeManifestDelta, manifestDigests, MemoryChunkStore } from '../chunks/index.js';
import { sendManifest } from './client.js';
import { encodeJsonFrame, encodeOffer, FrameType } from './frames.js';
import { PROTOCOL_VERSION } from './messages.js';
import { completedManifest, type TransferServerOptions } from './server.js';
import { hasCode, RawClient, startTestReceiver } from './testing.js';

/** A clock that never moves on its own: completion markers get a fixed date. */
const FIXED_NOW = Date.UTC(2024, 0, 2, 3, 4, 5);
function fixedClock(): Clock {
  let t = 0;
  return {
    now: () => FIXED_NOW,
    monotonic: () => ++t,
    sleep: async () => undefined,
  };
}

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'godwit-transfer-server-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function receiver(opts: Partial<TransferServerOptions> = {}): ReturnType<typeof startTestReceiver> {
  return startTestReceiver(dir, { clock: fixedClock(), ...opts });
}

/** A distinct, deterministic chunk of `size` bytes. */
function chunk(seed: number, size = 4096): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (seed * 131 + i * 7 + (i >> 8)) & 0xff;
  return b;
}

/**
 * A manifest of one file per element of `files`, each made of the given chunks in order (a
 * chunk may appear more than once), plus a directory, a zero run and an inline file that
 * carry no chunks. Returns the chunks by digest, as a sender would deliver them.
 */
function manifestOf(
  files: readonly (readonly Buffer[])[],
  label = 'deliver-test',
): { manifest: Manifest; chunks: Map<Digest, Buffer> } {
  const chunks = new Map<Digest, Buffer>();
  const entries: Manifest['entries'] = [{ type: 'dir', path: 'd', mode: 0o755 }];
  files.forEach((pieces, i) => {
    const refs: ChunkRef[] = [];
    let size = 0;
    for (const p of pieces) {
      const digest = digestOf(p);
      chunks.set(digest, p);
      refs.push({ digest, size: p.length });
      size += p.length;
    }
    refs.push({ zero: 8192 });
    size += 8192;
    entries.push({ type: 'file', path: `d/f${i}`, mode: 0o644, size, chunks: refs });
  });
  entries.push({ type: 'file', path: 'd/small', mode: 0o600, size: 5, inline: 'aGVsbG8=' });
  return {
    manifest: { version: MANIFEST_VERSION, label, createdAt: new Date(0).toISOString(), entries },
    chunks,
  };
}

async function sessionFiles(dataDir: string, id: string): Promise<string[]> {
  try {
    return (await readdir(join(dataDir, id))).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

describe('TransferServer.deliver', () => {
  it('completes the session with a manifest and all its chunks, recorded on disk and in the store', async () => {
    const r = await receiver();
    try {
      const a = chunk(1);
      const b = chunk(2, 1000);
      const c = chunk(3, 12288);
      // `a` is referenced twice: delivered (and stored) once.
      const { manifest, chunks } = manifestOf([[a, b, a], [c]]);
      assert.equal(chunks.size, 3);

      await r.server.deliver('s-ok', manifest, chunks);

      assert.deepEqual(await r.server.completed('s-ok'), manifest);
      assert.deepEqual(await completedManifest(r.dataDir, 's-ok'), manifest);
      for (const [d, data] of chunks) {
        assert.ok((await r.mem.get(d)).equals(data), `store holds ${d}`);
        assert.equal(r.store.puts.get(d), 1, 'each delivered chunk is put once');
      }
      assert.deepEqual(await r.mem.missing(manifestDigests(manifest)), []);
      assert.deepEqual(await r.mem.usage(), { chunks: 3, bytes: a.length + b.length + c.length });
      // Recorded like a session that crossed the wire: retained, manifest + marker on disk.
      assert.deepEqual(await r.mem.retentions(), ['session:s-ok']);
      assert.deepEqual(await sessionFiles(r.dataDir, 's-ok'), ['complete', 'manifest.json']);
      const marker = JSON.parse(await readFile(join(r.dataDir, 's-ok', 'complete'), 'utf8')) as {
        offerDigest: string;
        completedAt: string;
      };
      assert.match(marker.offerDigest, /^[0-9a-f]{64}$/);
      assert.equal(marker.completedAt, new Date(FIXED_NOW).toISOString());
      const info = r.server.sessions().find((s) => s.sessionId === 's-ok');
      assert.ok(info);
      assert.equal(info.complete, true);
      assert.equal(info.offered, true);
      assert.equal(info.missing, 0);
      assert.equal(info.chunksReceived, 3);
      assert.equal(info.rawBytesReceived, a.length + b.length + c.length);
      assert.equal(info.rejected, 0);

      // Dropped from memory, the session is still complete from its record on disk.
      r.server.forget('s-ok');
      assert.equal(
        r.server.sessions().some((s) => s.sessionId === 's-ok'),
        false,
      );
      assert.deepEqual(await r.server.completed('s-ok'), manifest);

      // Delivering the same manifest again is harmless (also after forget).
      await r.server.deliver('s-ok', manifest, chunks);
      assert.deepEqual(await r.server.completed('s-ok'), manifest);
    } finally {
      await r.server.close();
    }
  });

  it('needs no chunk the store already holds', async () => {
    const r = await receiver();
    try {
      const a = chunk(10);
      const { manifest } = manifestOf([[a]]);
      await r.mem.put(digestOf(a), a);

      await r.server.deliver('s-known', manifest, new Map());

      assert.deepEqual(await r.server.completed('s-known'), manifest);
      assert.deepEqual(await completedManifest(r.dataDir, 's-known'), manifest);
      assert.equal(r.store.puts.size, 0, 'nothing was written');
      const info = r.server.sessions().find((s) => s.sessionId === 's-known');
      assert.equal(info?.complete, true);
      assert.equal(info?.chunksReceived, 0);
      assert.equal(info?.rawBytesReceived, 0);
    } finally {
      await r.server.close();
    }
  });

  it('rejects a chunk whose bytes do not match its digest and leaves the session incomplete', async () => {
    const r = await receiver();
    try {
      const a = chunk(20);
      const b = chunk(21);
      const { manifest, chunks } = manifestOf([[a, b]]);
      const forged = new Map(chunks);
      forged.set(digestOf(b), chunk(22));

      await assert.rejects(
        r.server.deliver('s-bad', manifest, forged),
        hasCode(ErrorCode.ChunkDigestMismatch),
      );

      assert.equal(await r.mem.has(digestOf(b)), false, 'the forged chunk is not stored');
      assert.equal(await r.server.completed('s-bad'), undefined);
      assert.equal(await completedManifest(r.dataDir, 's-bad'), undefined);
      assert.deepEqual(await sessionFiles(r.dataDir, 's-bad'), []);
      assert.deepEqual(await r.mem.retentions(), []);
      assert.equal(
        r.server.sessions().some((s) => s.sessionId === 's-bad' && s.complete),
        false,
      );

      // The failed attempt does not hold the session: the right bytes complete it.
      await r.server.deliver('s-bad', manifest, chunks);
      assert.deepEqual(await r.server.completed('s-bad'), manifest);
    } finally {
      await r.server.close();
    }
  });

  it('rejects with TransferIncomplete when a chunk is neither delivered nor stored', async () => {
    const r = await receiver();
    try {
      const a = chunk(30);
      const b = chunk(31);
      const { manifest } = manifestOf([[a], [b]]);
      const onlyA = new Map([[digestOf(a), a]]);

      await assert.rejects(
        r.server.deliver('s-short', manifest, onlyA),
        hasCode(ErrorCode.TransferIncomplete),
      );

      assert.equal(await r.server.completed('s-short'), undefined);
      assert.equal(await completedManifest(r.dataDir, 's-short'), undefined);
      assert.deepEqual(await sessionFiles(r.dataDir, 's-short'), []);
      assert.equal(
        r.server.sessions().some((s) => s.sessionId === 's-short' && s.complete),
        false,
      );

      // What was delivered was verified and kept: the rest completes it.
      assert.equal(await r.mem.has(digestOf(a)), true);
      await r.server.deliver('s-short', manifest, new Map([[digestOf(b), b]]));
      assert.deepEqual(await r.server.completed('s-short'), manifest);
    } finally {
      await r.server.close();
    }
  });

  it('rejects another manifest for a session that completed (in memory and from its record)', async () => {
    const r = await receiver();
    try {
      const first = manifestOf([[chunk(40)]], 'first');
      const second = manifestOf([[chunk(41)]], 'second');
      await r.server.deliver('s-done', first.manifest, first.chunks);

      await assert.rejects(
        r.server.deliver('s-done', second.manifest, second.chunks),
        hasCode(ErrorCode.TransferSessionConflict),
      );
      assert.deepEqual(await r.server.completed('s-done'), first.manifest);

      // Not in memory any more: the completion marker on disk still decides.
      r.server.forget('s-done');
      await assert.rejects(
        r.server.deliver('s-done', second.manifest, second.chunks),
        hasCode(ErrorCode.TransferSessionConflict),
      );
      assert.deepEqual(await r.server.completed('s-done'), first.manifest);
      assert.deepEqual(await completedManifest(r.dataDir, 's-done'), first.manifest);
      assert.deepEqual(await r.mem.retentions(), ['session:s-done']);
    } finally {
      await r.server.close();
    }
  });

  it('rejects another manifest for a session offered one over the wire', async () => {
    const r = await receiver();
    const offered = manifestOf([[chunk(50)]], 'offered');
    const other = manifestOf([[chunk(51)]], 'other');
    const c = await RawClient.connect(r.server.port);
    try {
      c.write(
        encodeJsonFrame(FrameType.Hello, {
          protocol: PROTOCOL_VERSION,
          role: 'sender',
          sessionId: 's-wire',
          stream: 0,
          streams: 1,
        }),
      );
      c.write(encodeOffer(Buffer.from(JSON.stringify(offered.manifest))));
      await c.waitFor((f) => f.type === FrameType.Want);

      await assert.rejects(
        r.server.deliver('s-wire', other.manifest, other.chunks),
        hasCode(ErrorCode.TransferSessionConflict),
      );
      assert.equal(await r.server.completed('s-wire'), undefined);
      assert.equal(await r.mem.has(digestOf(chunk(51))), false, 'nothing of the refused delivery is stored');

      // The manifest it was offered can be delivered.
      await r.server.deliver('s-wire', offered.manifest, offered.chunks);
      assert.deepEqual(await r.server.completed('s-wire'), offered.manifest);
    } finally {
      c.destroy();
      await r.server.close();
    }
  });

  it('records the session exactly as the wire does: the same manifest is compatible both ways', async () => {
    const r = await receiver();
    try {
      const src = new MemoryChunkStore();
      const one = manifestOf([[chunk(60), chunk(61)]], 'one');
      const two = manifestOf([[chunk(62)]], 'two');
      for (const m of [one, two]) for (const [d, data] of m.chunks) await src.put(d, data);

      // Delivered, then offered over the wire: nothing is wanted.
      await r.server.deliver('s-one', one.manifest, one.chunks);
      const st = await sendManifest({
        host: '127.0.0.1',
        port: r.server.port,
        sessionId: 's-one',
        manifest: one.manifest,
        store: src,
        retryDelayMs: 10,
        idleTimeoutMs: 10_000,
      });
      assert.equal(st.chunksWanted, 0);
      assert.equal(st.chunksSent, 0);

      // Sent over the wire, then delivered: the completion markers agree.
      await sendManifest({
        host: '127.0.0.1',
        port: r.server.port,
        sessionId: 's-two',
        manifest: two.manifest,
        store: src,
        retryDelayMs: 10,
        idleTimeoutMs: 10_000,
      });
      assert.deepEqual(await r.server.completed('s-two'), two.manifest);
      const putsBefore = r.store.puts.size;
      r.server.forget('s-two');
      await r.server.deliver('s-two', two.manifest, new Map());
      assert.equal(r.store.puts.size, putsBefore);
      await assert.rejects(
        r.server.deliver('s-two', one.manifest, new Map()),
        hasCode(ErrorCode.TransferSessionConflict),
      );
    } finally {
      await r.server.close();
    }
  });

  it('rejects an invalid session id or manifest before storing anything', async () => {
    const r = await receiver();
    try {
      const { manifest, chunks } = manifestOf([[chunk(70)]]);
      for (const id of ['', '.hidden', '..', '../escape', 'a/b', 'sp ace', 'x'.repeat(129)]) {
        await assert.rejects(r.server.deliver(id, manifest, chunks), hasCode(ErrorCode.InvalidName), id);
      }
      const bad = { ...manifest, version: 99 } as unknown as Manifest;
      await assert.rejects(r.server.deliver('s-ok-id', bad, chunks), hasCode(ErrorCode.ManifestInvalid));
      const escaping: Manifest = {
        ...manifest,
        entries: [{ type: 'file', path: '../x', mode: 0o644, size: 0, chunks: [] }],
      };
      await assert.rejects(r.server.deliver('s-ok-id', escaping, chunks), hasCode(ErrorCode.ManifestInvalid));

      assert.deepEqual(await readdir(r.dataDir), []);
      assert.equal(r.store.puts.size, 0);
      assert.deepEqual(r.server.sessions(), []);
      await assert.rejects(completedManifest(r.dataDir, '../escape'), hasCode(ErrorCode.InvalidName));
    } finally {
      await r.server.close();
    }
  });

  it('rejects chunks the manifest does not list or lists with another size, storing nothing', async () => {
    const r = await receiver({ maxSessions: 1 });
    try {
      const a = chunk(40);
      const { manifest, chunks } = manifestOf([[a]]);
      const stray = chunk(41);
      await assert.rejects(
        r.server.deliver('s-stray', manifest, new Map([...chunks, [digestOf(stray), stray]])),
        hasCode(ErrorCode.ManifestInvalid),
      );
      const lying = structuredClone(manifest);
      const f = lying.entries.find((e) => e.type === 'file' && e.chunks !== undefined);
      if (f?.type === 'file' && f.chunks?.[0] && 'digest' in f.chunks[0]) {
        f.chunks[0].size = 200;
        f.size += 200 - a.length;
      }
      await assert.rejects(r.server.deliver('s-lying', lying, chunks), hasCode(ErrorCode.ManifestInvalid));
      assert.equal(r.store.puts.size, 0, 'nothing was written');
      // Within its session limit: a second delivered session evicts the first (complete) one.
      await r.server.deliver('s-one', manifest, chunks);
      await r.server.deliver('s-two', manifestOf([[a]], 'other').manifest, new Map());
      assert.deepEqual(
        r.server.sessions().map((x) => [x.sessionId, x.chunks]),
        [['s-two', 1]],
      );
    } finally {
      await r.server.close();
    }
  });

  it('expands a delta against a session completed here; an unknown base is refused', async () => {
    const r = await receiver();
    try {
      const [a, b, c] = [chunk(50), chunk(51), chunk(52)];
      const base = manifestOf([[a, b]], 'base');
      await r.server.deliver('s-base', base.manifest, base.chunks);
      const next = manifestOf([[a, c]], 'next');
      const delta = JSON.parse(
        JSON.stringify(encodeManifestDelta(next.manifest, base.manifest, 's-base')),
      ) as unknown;
      await r.server.deliver('s-next', delta, new Map([[digestOf(c), c]]));
      assert.deepEqual(await r.server.completed('s-next'), next.manifest);
      const orphan = JSON.parse(
        JSON.stringify(encodeManifestDelta(next.manifest, base.manifest, 's-gone')),
      ) as unknown;
      await assert.rejects(
        r.server.deliver('s-orphan', orphan, new Map()),
        hasCode(ErrorCode.ManifestBaseNotFound),
      );
    } finally {
      await r.server.close();
    }
  });
});
