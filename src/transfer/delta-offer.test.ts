import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MANIFEST_VERSION, PAGE_SIZE, type Manifest } from '../core/chunks.js';
import { ErrorCode } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { digestOf, encodeManifestDelta, manifestDigests, MemoryChunkStore } from '../chunks/index.js';
import { sendManifest, type SendManifestOptions, type TransferStats } from './client.js';
import { encodeJsonFrame, encodeOffer, FrameType, type Frame } from './frames.js';
import { PROTOCOL_VERSION } from './messages.js';
import { startTransferServer, type TransferServer } from './server.js';
import { buildManifest, CountingStore, RawClient } from './testing.js';

interface LogEntry {
  level: 'info' | 'warn' | 'error';
  msg: string;
  fields: Record<string, unknown>;
}

/** A logger that keeps every entry (with its children's fields merged in). */
function recordingLogger(entries: LogEntry[], base: Record<string, unknown> = {}): Logger {
  const at =
    (level: LogEntry['level']) =>
    (msg: string, fields: Record<string, unknown> = {}): void => {
      entries.push({ level, msg, fields: { ...base, ...fields } });
    };
  return {
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (fields) => recordingLogger(entries, { ...base, ...fields }),
  };
}

/** Pages that compress well but are all distinct: page i starts with i and is filled with 1 + i mod 251. */
function memoryImage(pages: number, changed: ReadonlySet<number> = new Set(), salt = 'v2'): Buffer {
  const data = Buffer.alloc(pages * PAGE_SIZE);
  for (let i = 0; i < pages; i++) {
    const p = data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
    p.fill(1 + (i % 251));
    p.writeUInt32BE(i, 0);
    if (changed.has(i)) p.write(salt, 4);
  }
  return data;
}

const PAGES = 4096;
const CHANGED = new Set([7, 1000, 1001, 2048, 4000]);

let dir: string;
let server: TransferServer;
let recv: CountingStore;
let recvMem: MemoryChunkStore;
const serverLog: LogEntry[] = [];
const src = new MemoryChunkStore();
let first: Manifest;
let second: Manifest;
let baseStats: TransferStats;

function send(
  sessionId: string,
  manifest: Manifest,
  extra: Partial<SendManifestOptions> = {},
): Promise<TransferStats> {
  return sendManifest({
    host: '127.0.0.1',
    port: server.port,
    sessionId,
    manifest,
    store: src,
    retryDelayMs: 10,
    retries: 2,
    idleTimeoutMs: 10_000,
    ...extra,
  });
}

/** The server's 'transfer offer' log entries of a session. */
function offers(sessionId: string): LogEntry[] {
  return serverLog.filter((e) => e.msg === 'transfer offer' && e.fields['sessionId'] === sessionId);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'godwit-delta-offer-'));
  recvMem = new MemoryChunkStore();
  recv = new CountingStore(recvMem);
  server = await startTransferServer({
    store: recv,
    listen: { host: '127.0.0.1', port: 0 },
    dataDir: join(dir, 'recv'),
    log: recordingLogger(serverLog),
    idleTimeoutMs: 10_000,
  });
  const files = (data: Buffer) => [
    { path: 'memory/1', data },
    { path: 'etc/hostname', data: Buffer.from('web-1\n') },
  ];
  first = await buildManifest(src, files(memoryImage(PAGES)), {
    chunkSize: PAGE_SIZE,
    inlineMax: 64,
    label: 'round-0',
  });
  second = await buildManifest(src, files(memoryImage(PAGES, CHANGED)), {
    chunkSize: PAGE_SIZE,
    inlineMax: 64,
    label: 'round-1',
  });
  // Everything else shared; the second manifest has exactly CHANGED.size new chunks.
  const known = new Set(manifestDigests(first));
  assert.equal(manifestDigests(second).filter((d) => !known.has(d)).length, CHANGED.size);
  // The base every delta below names: the first manifest, completed as session s.r0.
  baseStats = await send('s.r0', first);
});

after(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

describe('delta OFFER against a completed session', () => {
  it('sends only the new chunks and a small offer, and records exactly the second manifest', async () => {
    assert.equal(baseStats.chunksWanted, baseStats.uniqueChunks);
    assert.equal(baseStats.uniqueChunks, PAGES);
    assert.deepEqual(await server.completed('s.r0'), first);

    const putsBefore = recv.puts.size;
    const clientLog: LogEntry[] = [];
    const st = await send('s', second, {
      base: { name: 's.r0', manifest: first },
      log: recordingLogger(clientLog),
    });
    assert.deepEqual(await server.completed('s'), second);
    assert.equal(st.chunksWanted, CHANGED.size);
    assert.equal(st.chunksSent, CHANGED.size);
    assert.equal(st.chunksAlreadyThere, st.uniqueChunks - CHANGED.size);
    assert.equal(recv.puts.size - putsBefore, CHANGED.size);
    assert.deepEqual(await recvMem.missing(manifestDigests(second)), []);
    assert.equal(
      clientLog.find((e) => e.msg.includes('lacks the delta base')),
      undefined,
      'no fallback to the whole manifest',
    );

    // The same manifest, whole, to a fresh session: no chunks to send, just the offer.
    const full = await send('s-full', second);
    assert.equal(full.chunksWanted, 0);
    assert.deepEqual(await server.completed('s-full'), second);

    const [deltaOffer] = offers('s');
    const [fullOffer] = offers('s-full');
    assert.equal(offers('s').length, 1);
    const deltaBytes = deltaOffer?.fields['offerBytes'] as number;
    const fullBytes = fullOffer?.fields['offerBytes'] as number;
    assert.ok(deltaBytes > 0 && fullBytes > 0);
    assert.ok(deltaBytes * 50 < fullBytes, `delta offer ${deltaBytes} B, whole offer ${fullBytes} B`);
    assert.equal(deltaOffer?.fields['want'], CHANGED.size);
    // Even with the changed chunks, the delta transfer puts fewer bytes on the wire than the
    // whole offer alone.
    assert.ok(
      st.wireBytes * 2 < full.wireBytes,
      `delta ${st.wireBytes} B, whole ${full.wireBytes} B on the wire`,
    );
  });

  it('falls back to the whole manifest when the receiver lacks the base', async () => {
    for (const [sessionId, baseName] of [
      ['fb-1', 'never-sent'],
      ['fb-2', '.not-a-session-id'],
      ['fb-3', 'x'.repeat(300)],
    ] as const) {
      const clientLog: LogEntry[] = [];
      const st = await send(sessionId, second, {
        base: { name: baseName, manifest: first },
        log: recordingLogger(clientLog),
      });
      assert.deepEqual(await server.completed(sessionId), second, sessionId);
      assert.equal(st.reconnects, 0, 'the fallback is not a retry');
      assert.ok(
        clientLog.some((e) => e.level === 'warn' && e.msg.includes('lacks the delta base')),
        `${sessionId}: the client logged the fallback`,
      );
      const o = offers(sessionId);
      assert.equal(o.length, 1, 'only the whole manifest is accepted as an offer');
    }
  });

  it('falls back when the base session was offered but never completed', async () => {
    // 'half' is offered a manifest with a chunk the receiver lacks, which never arrives.
    const lonely = Buffer.alloc(PAGE_SIZE, 0xab);
    const half: Manifest = {
      version: MANIFEST_VERSION,
      label: 'half',
      createdAt: new Date(0).toISOString(),
      entries: [
        {
          type: 'file',
          path: 'f',
          mode: 0o600,
          size: PAGE_SIZE,
          chunks: [{ digest: digestOf(lonely), size: PAGE_SIZE }],
        },
      ],
    };
    const c = await RawClient.connect(server.port);
    try {
      c.write(
        encodeJsonFrame(FrameType.Hello, {
          protocol: PROTOCOL_VERSION,
          role: 'sender',
          sessionId: 'half',
          stream: 0,
          streams: 1,
        }),
      );
      c.write(encodeOffer(Buffer.from(JSON.stringify(half))));
      const want = (await c.waitFor((f) => f.type === FrameType.Want)) as Extract<
        Frame,
        { type: FrameType.Want }
      >;
      assert.deepEqual(want.digests, [digestOf(lonely)]);
    } finally {
      c.destroy();
    }
    assert.equal(await server.completed('half'), undefined);
    assert.equal(server.sessions().find((x) => x.sessionId === 'half')?.offered, true);

    const clientLog: LogEntry[] = [];
    const st = await send('fb-half', second, {
      base: { name: 'half', manifest: half },
      log: recordingLogger(clientLog),
    });
    assert.equal(st.chunksWanted, 0);
    assert.deepEqual(await server.completed('fb-half'), second);
    assert.ok(clientLog.some((e) => e.msg.includes('lacks the delta base')));
  });
});

describe('malformed delta OFFERs', () => {
  async function offerRaw(sessionId: string, offer: unknown): Promise<RawClient> {
    const c = await RawClient.connect(server.port);
    c.write(
      encodeJsonFrame(FrameType.Hello, {
        protocol: PROTOCOL_VERSION,
        role: 'sender',
        sessionId,
        stream: 0,
        streams: 1,
      }),
    );
    c.write(encodeOffer(Buffer.from(JSON.stringify(offer))));
    return c;
  }

  async function refused(c: RawClient, code: string, pattern: RegExp): Promise<void> {
    const f = (await c.waitFor((x) => x.type === FrameType.Error)) as Extract<
      Frame,
      { type: FrameType.Error }
    >;
    assert.equal(f.error.code, code, f.error.message);
    assert.match(f.error.message, pattern);
    assert.equal(
      c.frames.find((x) => x.type === FrameType.Want),
      undefined,
      'no WANT for a bad offer',
    );
    await c.waitClosed();
  }

  /** A valid delta of `second` against 's.r0' to mutate. */
  function validDelta(): { entries: { delta?: unknown[] }[] } & Record<string, unknown> {
    return JSON.parse(JSON.stringify(encodeManifestDelta(second, first, 's.r0'))) as {
      entries: { delta?: unknown[] }[];
    } & Record<string, unknown>;
  }

  function memoryEntry(d: { entries: { delta?: unknown[] }[] }): { delta?: unknown[] } {
    const e = d.entries.find((x) => Array.isArray(x.delta) && x.delta.length > 0);
    assert.ok(e);
    return e;
  }

  it('refuses copies outside the base, bad counts and non-array deltas, and keeps serving', async () => {
    assert.ok(await server.completed('s.r0'), 'the base session exists');
    const outside = /copy outside the base \(4096 references\)/;
    const mutations: [string, RegExp, (d: ReturnType<typeof validDelta>) => void][] = [
      ['outside', outside, (d) => memoryEntry(d).delta?.push([PAGES, 1])],
      ['past-end', outside, (d) => memoryEntry(d).delta?.splice(0, 1, [PAGES - 1, 5])],
      ['negative', outside, (d) => memoryEntry(d).delta?.splice(0, 1, [-1, 1])],
      ['zero-count', outside, (d) => memoryEntry(d).delta?.splice(0, 1, [0, 0])],
      ['fraction', outside, (d) => memoryEntry(d).delta?.splice(0, 1, [0, 0.5])],
      [
        'not-array',
        /delta must be an array/,
        (d) => (memoryEntry(d).delta = { 0: [0, 1] } as unknown as unknown[]),
      ],
      ['no-entries', /entries must be an array/, (d) => (d['entries'] = 'none' as unknown as [])],
      // Expands fine but does not cover the file's size: parseManifest refuses it.
      ['short', /cover \d+ bytes, not the file size/, (d) => memoryEntry(d).delta?.splice(0, 1, [0, 1])],
    ];
    for (const [name, pattern, mutate] of mutations) {
      const d = validDelta();
      mutate(d);
      const c = await offerRaw(`bad-${name}`, d);
      await refused(c, ErrorCode.ManifestInvalid, pattern);
      assert.equal(await server.completed(`bad-${name}`), undefined);
    }
    // A delta naming no base session this receiver has: ManifestBaseNotFound (the client's cue to fall back).
    const nobase = validDelta();
    nobase['base'] = 'no-such-session';
    await refused(await offerRaw('bad-nobase', nobase), ErrorCode.ManifestBaseNotFound, /no-such-session/);

    // The server is still up and serves the next sessions, delta and whole.
    const st = await send('after-bad', second, { base: { name: 's.r0', manifest: first } });
    assert.equal(st.chunksWanted, 0);
    assert.deepEqual(await server.completed('after-bad'), second);
    // The session id of a refused offer can be used again with a good offer.
    await send('bad-outside', second, { base: { name: 's.r0', manifest: first } });
    assert.deepEqual(await server.completed('bad-outside'), second);
  });
});
