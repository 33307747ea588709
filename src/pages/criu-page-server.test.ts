import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { afterEach, describe, it } from 'node:test';
import { PAGE_SIZE } from '../core/chunks.js';
import type { Clock } from '../core/clock.js';
import { ErrorCode } from '../core/errors.js';
import { nullLogger } from '../core/logger.js';
import {
  percentile,
  startCriuPageServer,
  type CriuPageServer,
  type CriuPageServerOptions,
  type LazyPageProvider,
} from './criu-page-server.js';
import {
  PS_IOV_SIZE,
  PsCmd,
  decodePageServerIov,
  encodePageServerIov,
  encodePsCmd,
  type PageServerIov,
} from './page-server-iov.js';

const ANSWER_CMD = encodePsCmd(PsCmd.AddF, 4);
const tick = (ms = 20) => new Promise((r) => setTimeout(r, ms));

/** A page whose bytes say which process and address it is. */
function pageOf(vpid: number, vaddr: number): Buffer {
  const b = Buffer.alloc(PAGE_SIZE, (vaddr / PAGE_SIZE) & 0xff);
  b.writeUInt32LE(vpid, 0);
  b.writeUInt32LE(vaddr / PAGE_SIZE, 4);
  return b;
}

function pagesOf(vpid: number, vaddr: number, n: number): Buffer {
  return Buffer.concat(Array.from({ length: n }, (_, i) => pageOf(vpid, vaddr + i * PAGE_SIZE)));
}

function get(vpid: number, vaddr: number, nrPages: number): Buffer {
  return encodePageServerIov({ cmd: PsCmd.Get, nrPages, vaddr, dstId: vpid });
}

function header(cmd: number, nrPages = 0, vaddr = 0, dstId = 0): Buffer {
  return encodePageServerIov({ cmd, nrPages, vaddr, dstId });
}

interface Call {
  vpid: number;
  vaddr: number;
  nrPages: number;
  fault: boolean;
  resolve(b: Buffer): void;
  reject(e: unknown): void;
}

/** A provider whose reads the test settles by hand (or at once with `auto`). */
class ManualProvider implements LazyPageProvider {
  readonly calls: Call[] = [];
  auto = false;
  read(vpid: number, vaddr: number, nrPages: number, hint: { fault: boolean }): Promise<Buffer> {
    if (this.auto) return Promise.resolve(pagesOf(vpid, vaddr, nrPages));
    return new Promise((resolve, reject) =>
      this.calls.push({ vpid, vaddr, nrPages, fault: hint.fault, resolve, reject }),
    );
  }
  async waitCalls(n: number): Promise<Call[]> {
    for (let i = 0; i < 200 && this.calls.length < n; i++) await tick(5);
    assert.equal(this.calls.length, n, `provider got ${this.calls.length} reads, wanted ${n}`);
    return this.calls;
  }
}

class FakeClock implements Clock {
  t = 1000;
  now = () => this.t;
  monotonic = () => this.t;
  sleep = () => Promise.resolve();
}

/** The lazy-pages side: raw bytes over real TCP. */
class FakeClient {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  ended = false;
  readonly closed: Promise<void>;
  received = 0;

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.received += d.length;
      this.buf = Buffer.concat([this.buf, d]);
      this.wake?.();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.ended = true;
        this.wake?.();
        resolve();
      }),
    );
  }

  static async connect(port: number): Promise<FakeClient> {
    const socket = connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new FakeClient(socket);
  }

  send(...bufs: Buffer[]): void {
    for (const b of bufs) this.socket.write(b);
  }

  /** Exactly n bytes; rejects if the connection closes first. */
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.ended) throw new Error(`connection closed with ${this.buf.length}/${n} bytes`);
      await new Promise<void>((r) => (this.wake = r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  async answer(): Promise<{ iov: PageServerIov; data: Buffer }> {
    const iov = decodePageServerIov(await this.read(PS_IOV_SIZE));
    assert.ok(typeof iov !== 'string', String(iov));
    return { iov, data: await this.read(iov.nrPages * PAGE_SIZE) };
  }

  pending(): number {
    return this.buf.length;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

describe('page server iov', () => {
  it('is 32 bytes: u32 cmd, 4 bytes padding, u64 nr_pages, vaddr, dst_id', () => {
    const b = encodePageServerIov({
      cmd: encodePsCmd(PsCmd.AddF, 4),
      nrPages: 3,
      vaddr: 0x7f0000001000,
      dstId: 42,
    });
    assert.equal(b.length, 32);
    assert.equal(b.readUInt32LE(0), 0x40006);
    assert.equal(b.readUInt32LE(4), 0);
    assert.equal(b.readBigUInt64LE(8), 3n);
    assert.equal(b.readBigUInt64LE(16), 0x7f0000001000n);
    assert.equal(b.readBigUInt64LE(24), 42n);
    assert.deepEqual(decodePageServerIov(b), { cmd: 0x40006, nrPages: 3, vaddr: 0x7f0000001000, dstId: 42 });
    b.writeBigUInt64LE(1n << 60n, 16);
    assert.match(String(decodePageServerIov(b)), /vaddr .* out of range/);
  });
});

describe('percentile', () => {
  it('takes the nearest rank', () => {
    assert.equal(percentile([], 50), undefined);
    assert.equal(percentile([5], 99), 5);
    const v = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5];
    assert.equal(percentile(v, 50), 5);
    assert.equal(percentile(v, 90), 9);
    assert.equal(percentile(v, 99), 10);
    assert.equal(percentile(v, 0), 1);
    assert.throws(() => percentile(v, 101), RangeError);
  });
});

describe('startCriuPageServer', () => {
  const servers: CriuPageServer[] = [];
  const clients: FakeClient[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) c.destroy();
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });

  async function setup(
    opts: Partial<CriuPageServerOptions> = {},
  ): Promise<{ server: CriuPageServer; provider: ManualProvider; client: FakeClient; clock: FakeClock }> {
    const provider = new ManualProvider();
    const clock = new FakeClock();
    const server = await startCriuPageServer({ provider, log: nullLogger, clock, ...opts });
    servers.push(server);
    const client = await FakeClient.connect(server.port);
    clients.push(client);
    return { server, provider, client, clock };
  }

  async function another(server: CriuPageServer): Promise<FakeClient> {
    const c = await FakeClient.connect(server.port);
    clients.push(c);
    return c;
  }

  it('listens on 127.0.0.1 and answers a GET with ADD_F|PE_PRESENT and the pages', async () => {
    const { server, provider, client, clock } = await setup();
    assert.equal(server.address, '127.0.0.1');
    client.send(get(7, 0x400000, 4));
    const [call] = await provider.waitCalls(1);
    assert.deepEqual(
      { ...call, resolve: 0, reject: 0 },
      {
        vpid: 7,
        vaddr: 0x400000,
        nrPages: 4,
        fault: false,
        resolve: 0,
        reject: 0,
      },
    );
    call!.resolve(pagesOf(7, 0x400000, 4));
    const a = await client.answer();
    assert.deepEqual(a.iov, { cmd: ANSWER_CMD, nrPages: 4, vaddr: 0x400000, dstId: 7 });
    assert.ok(a.data.equals(pagesOf(7, 0x400000, 4)));

    client.send(get(7, 0x7ffd0000, 1));
    const calls = await provider.waitCalls(2);
    assert.equal(calls[1]!.fault, true);
    clock.t += 3;
    calls[1]!.resolve(pageOf(7, 0x7ffd0000));
    const f = await client.answer();
    assert.equal(f.iov.nrPages, 1);
    await tick();
    const s = server.stats();
    assert.equal(s.requests, 2);
    assert.equal(s.faultRequests, 1);
    assert.equal(s.pagesServed, 5);
    assert.equal(s.bytesServed, 5 * PAGE_SIZE);
    assert.equal(s.errors, 0);
    assert.deepEqual(s.faultLatenciesMs, [3]);
  });

  it('parses a header split across TCP segments', async () => {
    const { provider, client } = await setup();
    provider.auto = true;
    const h = Buffer.concat([get(3, 0x10000, 2), get(3, 0x20000, 1)]);
    for (const [a, b] of [
      [0, 5],
      [5, 31],
      [31, 40],
      [40, 64],
    ] as const) {
      client.send(h.subarray(a, b));
      await tick(10);
    }
    assert.equal((await client.answer()).iov.vaddr, 0x10000);
    assert.equal((await client.answer()).iov.vaddr, 0x20000);
  });

  it('answers pipelined GETs in request order when the provider resolves them in reverse', async () => {
    const { provider, client, server } = await setup();
    client.send(get(5, 0x1000, 16), get(5, 0x2000_0000, 1), get(6, 0x3000, 2));
    const calls = await provider.waitCalls(3);
    calls[2]!.resolve(pagesOf(6, 0x3000, 2));
    calls[1]!.resolve(pageOf(5, 0x2000_0000));
    await tick();
    assert.equal(client.pending(), 0, 'nothing goes out before the first answer');
    calls[0]!.resolve(pagesOf(5, 0x1000, 16));
    const got = [await client.answer(), await client.answer(), await client.answer()];
    assert.deepEqual(
      got.map((a) => [a.iov.dstId, a.iov.vaddr, a.iov.nrPages]),
      [
        [5, 0x1000, 16],
        [5, 0x2000_0000, 1],
        [6, 0x3000, 2],
      ],
    );
    assert.ok(got[0]!.data.equals(pagesOf(5, 0x1000, 16)));
    assert.ok(got[2]!.data.equals(pagesOf(6, 0x3000, 2)));
    assert.equal(server.stats().pagesServed, 19);
  });

  it('sends a short answer when the provider returns fewer pages than asked', async () => {
    const { provider, client } = await setup();
    client.send(get(9, 0x600000, 8));
    const [call] = await provider.waitCalls(1);
    call!.resolve(pagesOf(9, 0x600000, 3));
    const a = await client.answer();
    assert.deepEqual(a.iov, { cmd: ANSWER_CMD, nrPages: 3, vaddr: 0x600000, dstId: 9 });
    assert.ok(a.data.equals(pagesOf(9, 0x600000, 3)));
  });

  it('answers PS_IOV_CLOSE with int32 0 after the pending answers, then closes; the session is ok', async () => {
    const { server, provider, client } = await setup();
    client.send(get(1, 0x1000, 1), header(PsCmd.Close));
    const [call] = await provider.waitCalls(1);
    await tick();
    assert.equal(client.pending(), 0);
    call!.resolve(pageOf(1, 0x1000));
    assert.equal((await client.answer()).iov.vaddr, 0x1000);
    assert.equal((await client.read(4)).readInt32LE(0), 0);
    assert.deepEqual(await server.session, { ok: true });
    client.socket.end();
    await client.closed;
    assert.equal(client.pending(), 0);
    assert.equal(server.stats().errors, 0);
  });

  it('answers PS_IOV_FORCE_CLOSE the same way', async () => {
    const { server, client } = await setup();
    client.send(header(PsCmd.ForceClose));
    assert.equal((await client.read(4)).readInt32LE(0), 0);
    assert.deepEqual(await server.session, { ok: true });
  });

  it('closes on a truncated header followed by a disconnect, and keeps serving others', async () => {
    const { server, provider, client } = await setup();
    client.send(get(1, 0x1000, 1).subarray(0, 20));
    await tick();
    client.socket.end();
    await client.closed;
    const s = await server.session;
    assert.equal(s.ok, false);
    assert.match(s.error ?? '', /20 byte\(s\) of a header/);
    assert.equal(s.code, ErrorCode.TransferConnectionLost);
    provider.auto = true;
    const c2 = await another(server);
    c2.send(get(2, 0x2000, 1));
    assert.equal((await c2.answer()).iov.dstId, 2);
  });

  for (const [name, bytes, re, code] of [
    [
      'a u64 beyond 2^53',
      header(PsCmd.Get, 1, 0, 1).fill(0xff, 8, 16),
      /malformed header/,
      ErrorCode.TransferProtocol,
    ],
    ['an unknown command', header(0x99, 1, 0x1000, 1), /unknown command 0x99/, ErrorCode.TransferProtocol],
    [
      'a dump-side command',
      header(PsCmd.Open2, 0, 0, 1),
      /command 4 .*not served/,
      ErrorCode.TransferProtocol,
    ],
    [
      'GET with flags',
      header(encodePsCmd(PsCmd.Get, 4), 1, 0x1000, 1),
      /flags 0x4/,
      ErrorCode.TransferProtocol,
    ],
    ['nr_pages 0', get(1, 0x1000, 0), /no pages asked for/, ErrorCode.TransferProtocol],
    ['nr_pages above the limit', get(1, 0x1000, 17), /more than 16 pages/, ErrorCode.TransferTooLarge],
    ['an unaligned vaddr', get(1, 0x1001, 1), /not page-aligned/, ErrorCode.TransferProtocol],
    ['dst_id 0', get(0, 0x1000, 1), /not a pid/, ErrorCode.TransferProtocol],
  ] as const) {
    it(`closes the connection on ${name}`, async () => {
      const { server, provider, client } = await setup({ maxPagesPerRequest: 16 });
      client.send(bytes);
      await client.closed;
      assert.equal(client.received, 0);
      assert.equal(provider.calls.length, 0);
      const s = await server.session;
      assert.equal(s.ok, false);
      assert.match(s.error ?? '', re);
      assert.equal(s.code, code);
      assert.equal(server.stats().errors, 1);
    });
  }

  it('accepts a GET of exactly maxPagesPerRequest pages', async () => {
    const { provider, client } = await setup({ maxPagesPerRequest: 16 });
    provider.auto = true;
    client.send(get(1, 0x1000, 16));
    assert.equal((await client.answer()).iov.nrPages, 16);
  });

  it('closes the connection when the provider rejects; the session settles with the error', async () => {
    const { server, provider, client } = await setup();
    client.send(get(4, 0x1000, 1), get(4, 0x2000, 1));
    const calls = await provider.waitCalls(2);
    calls[0]!.resolve(pageOf(4, 0x1000));
    assert.equal((await client.answer()).iov.vaddr, 0x1000);
    calls[1]!.reject(new Error('source host gone'));
    await client.closed;
    assert.equal(client.pending(), 0, 'no answer for the failed request');
    const s = await server.session;
    assert.equal(s.ok, false);
    assert.match(s.error ?? '', /provider cannot supply GET 1 pages at 0x2000 of pid 4: source host gone/);
    assert.equal(s.code, ErrorCode.TransferFailed);
    assert.equal(server.stats().errors, 1);
  });

  it('fails the connection on a provider that throws or answers a wrong length', async () => {
    const provider: LazyPageProvider = {
      read: (_vpid, vaddr, n) => {
        if (vaddr === 0x1000) throw new Error('sync throw');
        return Promise.resolve(Buffer.alloc(vaddr === 0x2000 ? 100 : (n + 1) * PAGE_SIZE));
      },
    };
    const server = await startCriuPageServer({ provider, log: nullLogger });
    servers.push(server);
    for (const [vaddr, re] of [
      [0x1000, /sync throw/],
      [0x2000, /100 bytes, not 1\.\.2 whole pages/],
      [0x3000, /12288 bytes, not 1\.\.2 whole pages/],
    ] as const) {
      const c = await another(server);
      c.send(get(1, vaddr, 2));
      await c.closed;
      assert.equal(c.received, 0);
      if (vaddr === 0x1000) assert.match((await server.session).error ?? '', re);
    }
    assert.equal(server.stats().errors, 3);
    assert.equal(server.stats().pagesServed, 0);
  });

  it('writes nothing and survives when the client disconnects while the provider is pending', async () => {
    const { server, provider, client } = await setup();
    client.send(get(2, 0x5000, 4));
    const [call] = await provider.waitCalls(1);
    client.destroy();
    const s = await server.session;
    assert.equal(s.ok, false);
    assert.match(s.error ?? '', /peer disconnected with 1 request\(s\) unanswered/);
    call!.resolve(pagesOf(2, 0x5000, 4));
    await tick();
    assert.equal(server.stats().pagesServed, 0);
    assert.equal(server.stats().bytesServed, 0);
  });

  it('abort() drops every connection at once and refuses later ones', async () => {
    const { server, provider, client } = await setup();
    const c2 = await another(server);
    client.send(get(1, 0x1000, 1));
    const [call] = await provider.waitCalls(1);
    server.abort('container killed');
    await Promise.all([client.closed, c2.closed]);
    const s = await server.session;
    assert.equal(s.ok, false);
    assert.match(s.error ?? '', /aborted: container killed/);
    assert.equal(s.code, ErrorCode.TransferAborted);
    call!.resolve(pageOf(1, 0x1000));
    await tick();
    assert.equal(client.received + c2.received, 0);
    const late = await another(server);
    await late.closed;
    assert.equal(late.received, 0);
  });

  it('close() with open connections closes them and resolves', async () => {
    const { server, provider, client } = await setup();
    const c2 = await another(server);
    client.send(get(1, 0x1000, 1));
    await provider.waitCalls(1);
    await server.close();
    await Promise.all([client.closed, c2.closed]);
    assert.equal((await server.session).ok, false);
    await server.close(); // idempotent
  });

  it('close() after a clean session leaves the session ok', async () => {
    const { server, client } = await setup();
    client.send(header(PsCmd.Close));
    await client.read(4);
    await server.close();
    assert.deepEqual(await server.session, { ok: true });
    assert.equal(server.stats().errors, 0);
  });

  it('close() before any client settles the session', async () => {
    const server = await startCriuPageServer({ provider: new ManualProvider(), log: nullLogger });
    await server.close();
    assert.equal((await server.session).ok, false);
  });

  it('reports a port in use', async () => {
    const { server } = await setup();
    await assert.rejects(
      startCriuPageServer({ provider: new ManualProvider(), log: nullLogger, port: server.port }),
      (err: unknown) => (err as { code?: string }).code === ErrorCode.AddressInUse,
    );
  });

  it('pauses reading past maxOutstandingRequests and resumes as answers go out', async () => {
    const { provider, client } = await setup({ maxOutstandingRequests: 2 });
    client.send(get(1, 0x1000, 1), get(1, 0x2000, 1), get(1, 0x3000, 1), get(1, 0x4000, 1));
    const calls = await provider.waitCalls(2);
    await tick();
    assert.equal(calls.length, 2, 'the third request waits');
    calls[0]!.resolve(pageOf(1, 0x1000));
    await client.answer();
    await provider.waitCalls(3);
    calls[1]!.resolve(pageOf(1, 0x2000));
    calls[2]!.resolve(pageOf(1, 0x3000));
    const c4 = await provider.waitCalls(4);
    c4[3]!.resolve(pageOf(1, 0x4000));
    const vaddrs = [];
    for (let i = 0; i < 3; i++) vaddrs.push((await client.answer()).iov.vaddr);
    assert.deepEqual(vaddrs, [0x2000, 0x3000, 0x4000]);
  });
});
