import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, afterEach, describe, it } from 'node:test';
import { describeTarget, runProbe, type ProbeProgress } from './probe.js';
import { RespParser } from './resp.js';

/**
 * A counter service on 127.0.0.1 that a test can disturb: hold every reply for a while (pause),
 * close the connections that served more than one request (the probe's long-lived one), or lose
 * its counter (a restart without migration).
 */
class TestCounterServer {
  counter = 0;
  private readonly server: Server;
  private readonly conns = new Map<Socket, { served: number }>();
  private held: (() => void)[] | undefined;

  constructor(private readonly opts: { silent?: boolean } = {}) {
    this.server = createServer((socket) => this.serve(socket));
  }

  async start(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return (this.server.address() as AddressInfo).port;
  }

  /** Answers nothing for `ms`, then answers everything it held, in order. */
  pause(ms: number): void {
    this.held = [];
    setTimeout(() => {
      const held = this.held ?? [];
      this.held = undefined;
      for (const f of held) f();
    }, ms);
  }

  /** Closes every connection that has served more than one request. */
  closeKeepAlive(): number {
    let n = 0;
    for (const [socket, c] of this.conns) {
      if (c.served > 1) {
        socket.destroy();
        n++;
      }
    }
    return n;
  }

  async stop(): Promise<void> {
    for (const socket of this.conns.keys()) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private serve(socket: Socket): void {
    const state = { served: 0 };
    this.conns.set(socket, state);
    socket.on('close', () => this.conns.delete(socket));
    socket.on('error', () => undefined);
    let buf = '';
    socket.on('data', (chunk: Buffer) => {
      buf += chunk.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        if (this.opts.silent) continue;
        const close = /\r\nConnection: close/i.test(head);
        const answer = (): void => {
          if (socket.destroyed) return;
          state.served++;
          const body = `counter ${++this.counter}\n`;
          socket.write(
            `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n` +
              `Connection: ${close ? 'close' : 'keep-alive'}\r\n\r\n${body}`,
          );
          if (close) socket.end();
        };
        if (this.held) this.held.push(answer);
        else answer();
      }
    });
  }
}

const servers: TestCounterServer[] = [];
async function startServer(opts?: {
  silent?: boolean;
}): Promise<{ server: TestCounterServer; target: string }> {
  const server = new TestCounterServer(opts);
  servers.push(server);
  return { server, target: `127.0.0.1:${await server.start()}` };
}
const at = (ms: number, f: () => void): NodeJS.Timeout => setTimeout(f, ms);

describe('runProbe', () => {
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.stop();
  });
  after(async () => {
    for (const s of servers.splice(0)) await s.stop();
  });

  it('measures a steady service: no errors, small gaps, growing counters, the connection survives', async () => {
    const { target } = await startServer();
    const ticks: ProbeProgress[] = [];
    const r = await runProbe({ target, durationMs: 500, onTick: (p) => ticks.push(p), tickMs: 50 });
    for (const s of [r.fresh, r.longLived]) {
      assert.ok(s.ok > 40, `ok ${s.ok}`);
      assert.equal(s.requests, s.ok);
      assert.deepEqual(s.errors, { refused: 0, reset: 0, timeout: 0, other: 0 });
      assert.ok(s.maxGapMs < 100, `gap ${s.maxGapMs}`);
      assert.equal(s.counterResets, 0);
      assert.ok(s.counterFirst !== null && s.counterLast !== null && s.counterLast > s.counterFirst);
      assert.ok(
        s.latencyMs !== null && s.latencyMs.p50 <= s.latencyMs.p99 && s.latencyMs.p99 <= s.latencyMs.max,
      );
    }
    assert.equal(r.survived, true);
    assert.equal(r.longLived.reconnects, 0);
    assert.deepEqual(r.verdict, { ok: true, problems: [] });
    assert.ok(r.durationMs >= 500 && r.durationMs < 700, `duration ${r.durationMs}`);
    assert.ok(ticks.length >= 5, `${ticks.length} ticks`);
    assert.ok((ticks.at(-1)?.fresh.requests ?? 0) > 0);
    // At most one request outstanding and one started per interval: about duration / interval of each.
    assert.ok(r.fresh.requests <= 500 / 5 + 1, `fresh ${r.fresh.requests}`);
    assert.ok(r.longLived.requests <= 500 / 5 + 1, `long-lived ${r.longLived.requests}`);
  });

  it('sees a pause as a gap of about its length, and the connection survives it', async () => {
    const { server, target } = await startServer();
    at(300, () => server.pause(300));
    const r = await runProbe({ target, durationMs: 1000 });
    for (const [name, s] of [
      ['fresh', r.fresh],
      ['long-lived', r.longLived],
    ] as const) {
      assert.ok(s.maxGapMs >= 290 && s.maxGapMs <= 380, `${name} gap ${s.maxGapMs}`);
      assert.ok(s.gapStartMs >= 280 && s.gapStartMs <= 340, `${name} gap start ${s.gapStartMs}`);
      assert.equal(s.counterResets, 0);
      assert.equal(s.ok, s.requests, `${name}: no errors below the timeout`);
    }
    assert.equal(r.survived, true);
    assert.ok((r.longLived.latencyMs?.max ?? 0) >= 280);
  });

  it('counts a reply later than the timeout as late, not as a broken connection', async () => {
    const { server, target } = await startServer();
    at(200, () => server.pause(400));
    const r = await runProbe({ target, durationMs: 900, timeoutMs: 150, stallTimeoutMs: 2000 });
    assert.equal(r.longLived.errors.timeout, 1);
    assert.equal(r.longLived.lateReplies, 1);
    assert.equal(r.survived, true);
    assert.ok(r.longLived.maxGapMs >= 390 && r.longLived.maxGapMs <= 480, `gap ${r.longLived.maxGapMs}`);
    assert.ok(r.fresh.errors.timeout >= 2, `fresh timeouts ${r.fresh.errors.timeout}`);
    assert.ok(r.fresh.maxGapMs >= 390, `fresh gap ${r.fresh.maxGapMs}`);
    assert.equal(r.longLived.counterResets, 0);
  });

  it('records a break of the long-lived connection, reconnects and goes on', async () => {
    const { server, target } = await startServer();
    let closed = 0;
    at(300, () => (closed = server.closeKeepAlive()));
    const r = await runProbe({ target, durationMs: 700 });
    assert.equal(closed, 1);
    assert.equal(r.survived, false);
    assert.equal(r.longLived.breaks.length, 1);
    const b = r.longLived.breaks[0];
    assert.ok(b !== undefined && b.atMs >= 290 && b.atMs <= 360, `break at ${b?.atMs}`);
    assert.equal(b.kind, 'reset');
    assert.equal(r.longLived.reconnects, 1);
    assert.ok(r.longLived.ok > 100, `ok ${r.longLived.ok}`);
    assert.equal(r.longLived.counterResets, 0);
    assert.equal(r.verdict.ok, false);
    assert.match(r.verdict.problems.join('\n'), /long-lived connection broke/);
  });

  it('detects a counter that restarts', async () => {
    const { server, target } = await startServer();
    at(300, () => (server.counter = 0));
    const r = await runProbe({ target, durationMs: 600 });
    assert.equal(r.fresh.counterResets, 1);
    assert.equal(r.longLived.counterResets, 1);
    assert.equal(r.survived, true);
    assert.ok((r.fresh.counterLast ?? 0) < (r.fresh.counterFirst ?? 0) + r.fresh.ok + r.longLived.ok);
    assert.equal(r.verdict.ok, false);
  });

  it('reports refused connections', async () => {
    const { server, target } = await startServer();
    await server.stop();
    servers.length = 0;
    const r = await runProbe({ target, durationMs: 200, intervalMs: 10 });
    assert.equal(r.fresh.ok, 0);
    assert.ok(r.fresh.errors.refused >= 5, `refused ${r.fresh.errors.refused}`);
    assert.equal(r.fresh.requests, r.fresh.errors.refused);
    assert.ok(r.longLived.errors.refused >= 5);
    assert.equal(r.survived, false);
    assert.equal(r.longLived.reconnects, 0);
    assert.equal(r.fresh.maxGapMs, r.durationMs);
    assert.equal(r.fresh.latencyMs, null);
    assert.equal(r.fresh.counterFirst, null);
    assert.match(r.fresh.firstErrors[0]?.message ?? '', /ECONNREFUSED/);
  });

  it('times out on a service that never answers', async () => {
    const { target } = await startServer({ silent: true });
    const r = await runProbe({ target, durationMs: 400, timeoutMs: 100, stallTimeoutMs: 150 });
    assert.equal(r.fresh.ok, 0);
    assert.ok(r.fresh.errors.timeout >= 3, `fresh timeouts ${r.fresh.errors.timeout}`);
    assert.equal(r.fresh.requests, r.fresh.errors.timeout);
    assert.ok(r.longLived.errors.timeout >= 2);
    assert.equal(r.survived, false);
    assert.equal(r.longLived.breaks[0]?.kind, 'timeout');
  });

  it('rejects a bad target or option before sending anything', async () => {
    await assert.rejects(runProbe({ target: 'nope', durationMs: 10 }), { code: 'GODWIT_INVALID_FLAG' });
    await assert.rejects(runProbe({ target: '127.0.0.1:1', durationMs: 0 }), { code: 'GODWIT_INVALID_FLAG' });
    await assert.rejects(runProbe({ target: '127.0.0.1:1', durationMs: 10, intervalMs: -1 }), /intervalMs/);
  });
});

/** A Redis stand-in on 127.0.0.1: answers INCR with its counter, or with an error or garbage when told. */
class TestRedisServer {
  counter = 0;
  mode: 'ok' | 'error' | 'garbage' = 'ok';
  readonly commands: string[] = [];
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  constructor() {
    this.server = createServer((socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => undefined);
      const parser = new RespParser();
      socket.on('data', (chunk: Buffer) => {
        for (const v of parser.push(chunk)) {
          const words =
            v.type === 'array' ? (v.items ?? []).map((i) => (i.type === 'bulk' ? String(i.value) : '?')) : [];
          if (this.commands.length < 5) this.commands.push(words.join(' '));
          if (this.mode === 'error') socket.write('-LOADING Redis is loading the dataset in memory\r\n');
          else if (this.mode === 'garbage') socket.write('?what\r\n');
          else socket.write(`:${++this.counter}\r\n`);
        }
      });
    });
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `redis://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

describe('runProbe against Redis (redis:// targets)', () => {
  const redises: TestRedisServer[] = [];
  const startRedis = async (): Promise<{ server: TestRedisServer; target: string }> => {
    const server = new TestRedisServer();
    redises.push(server);
    return { server, target: await server.start() };
  };
  afterEach(async () => {
    for (const s of redises.splice(0)) await s.stop();
  });

  it('sends INCR godwit:probe on both series and follows the integer as the counter', async () => {
    const { server, target } = await startRedis();
    const r = await runProbe({ target, durationMs: 400 });
    assert.equal(r.target.protocol, 'redis');
    assert.equal(describeTarget(r.target), `${target}`);
    assert.deepEqual(server.commands.slice(0, 2), ['INCR godwit:probe', 'INCR godwit:probe']);
    for (const s of [r.fresh, r.longLived]) {
      assert.ok(s.ok > 30, `ok ${s.ok}`);
      assert.equal(s.requests, s.ok);
      assert.equal(s.counterResets, 0);
      assert.ok(s.counterFirst !== null && s.counterLast !== null && s.counterLast > s.counterFirst);
    }
    assert.equal(r.survived, true);
    assert.equal(r.verdict.ok, true, r.verdict.problems.join('; '));
    assert.equal(server.counter, r.fresh.ok + r.longLived.ok);
  });

  it('detects a counter that restarts (state lost)', async () => {
    const { server, target } = await startRedis();
    at(200, () => (server.counter = 0));
    const r = await runProbe({ target, durationMs: 400 });
    assert.equal(r.fresh.counterResets, 1);
    assert.equal(r.longLived.counterResets, 1);
    assert.equal(r.verdict.ok, false);
  });

  it('counts error replies as errors, and a malformed reply breaks the long-lived connection', async () => {
    const { server, target } = await startRedis();
    at(100, () => (server.mode = 'error'));
    at(140, () => (server.mode = 'garbage'));
    at(240, () => (server.mode = 'ok'));
    const r = await runProbe({ target, durationMs: 450 });
    assert.ok(r.fresh.errors.other > 5, `fresh other ${r.fresh.errors.other}`);
    // At most MAX_EVENTS (20) are kept: about 8 -LOADING replies come first.
    assert.ok(r.fresh.firstErrors.some((e) => /^-LOADING/.test(e.message)));
    assert.ok(r.longLived.firstErrors.some((e) => /^-LOADING/.test(e.message)));
    assert.ok(r.fresh.firstErrors.some((e) => /unknown reply type/.test(e.message)));
    assert.equal(r.longLived.survived, false);
    assert.equal(r.longLived.breaks[0]?.kind, 'other');
    assert.match(r.longLived.breaks[0]?.message ?? '', /unknown reply type/);
    assert.ok(r.longLived.reconnects >= 1);
    assert.ok((r.longLived.counterLast ?? 0) > 0, 'answers again after the garbage');
  });
});
