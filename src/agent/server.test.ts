import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  AlreadyExistsError,
  ErrorCode,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
} from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { AgentClient } from './client.js';
import { startAgent, type AgentHandle } from './server.js';
import { MemoryRuntime, errorOf, rawRequest } from './testing.js';

/** A logger that keeps entries for assertions. */
function memoryLogger(): Logger & {
  entries: { level: string; msg: string; fields: Record<string, unknown> }[];
} {
  const entries: { level: string; msg: string; fields: Record<string, unknown> }[] = [];
  const make = (base: Record<string, unknown>): Logger => ({
    info: (msg, f) => entries.push({ level: 'info', msg, fields: { ...base, ...f } }),
    warn: (msg, f) => entries.push({ level: 'warn', msg, fields: { ...base, ...f } }),
    error: (msg, f) => entries.push({ level: 'error', msg, fields: { ...base, ...f } }),
    child: (f) => make({ ...base, ...f }),
  });
  return Object.assign(make({}), { entries });
}

const json = { 'content-type': 'application/json' };

describe('agent server (in-memory runtime)', () => {
  let dir: string;
  let socketPath: string;
  let runtime: MemoryRuntime;
  let agent: AgentHandle;
  let client: AgentClient;
  const log = memoryLogger();
  const sock = () => ({ socketPath });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-agent-unit-'));
    socketPath = join(dir, 'agent.sock');
    runtime = new MemoryRuntime();
    agent = await startAgent({
      runtime,
      socketPath,
      log,
      version: '9.9.9',
      hostId: 'abc123',
      listen: { host: '127.0.0.1', port: 0 },
    });
    client = new AgentClient({ socketPath }, { output: { stdout: sink(), stderr: sink() } });
  });
  after(async () => {
    client.close();
    await agent.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves /healthz on a 0600 socket', async () => {
    const h = await client.health();
    assert.deepEqual(
      { ok: h.ok, version: h.version, api: h.api, hostId: h.hostId },
      {
        ok: true,
        version: '9.9.9',
        api: 'v1',
        hostId: 'abc123',
      },
    );
    assert.equal(h.pid, process.pid);
    assert.equal((await stat(socketPath)).mode & 0o777, 0o600);
  });

  it('runs the whole container lifecycle through the client', async () => {
    const info = await client.run({ name: 'web', image: 'busybox', args: ['sh'], env: { A: 'b' } });
    assert.equal(info.status, 'running');
    assert.deepEqual(
      (await client.list()).map((c) => c.name),
      ['web'],
    );
    assert.equal((await client.inspect('web')).pid, info.pid);
    const ex = await client.exec('web', ['echo', 'hi'], { capture: true });
    assert.deepEqual(ex, { exitCode: 0, stdout: 'out: echo hi\n', stderr: 'err\n' });
    assert.equal((await client.exec('web', ['false'])).exitCode, 1);
    assert.ok(runtime.calls.includes('exec web echo hi capture=true'), 'the agent always captures');
    assert.ok(runtime.calls.includes('exec web false capture=true'));
    assert.equal(await client.logs('web'), 'started sh\n');
    await client.kill('web', 'USR1');
    await client.kill('web');
    assert.deepEqual(
      runtime.calls.filter((c) => c.startsWith('kill')),
      ['kill web USR1', 'kill web TERM'],
    );

    // Relative checkpoint paths are resolved by the client (same machine over the socket).
    const cp = await client.checkpoint('web', { dir: 'cp-web', leaveRunning: true });
    assert.equal(cp.dir, resolve('cp-web'));
    const rs = await client.restore({ dir: 'cp-web', name: 'web2' });
    assert.equal(rs.name, 'web2');
    assert.equal((await client.inspect('web2')).restoredFrom, resolve('cp-web'));

    await client.stop('web', { timeoutMs: 500 });
    assert.ok(runtime.calls.includes('stop web 500'));
    await client.remove('web');
    await client.remove('web2', { force: true });
    assert.ok(runtime.calls.includes('remove web2 force=true'));
    assert.deepEqual(await client.list(), []);
  });

  it('writes exec output to its output streams when the caller does not capture', async () => {
    const out = sink();
    const err = sink();
    const c = new AgentClient({ socketPath }, { output: { stdout: out, stderr: err } });
    await c.run({ name: 'ex', image: 'busybox', args: ['sh'], env: {} });
    const res = await c.exec('ex', ['echo', 'x']);
    assert.deepEqual(res, { exitCode: 0, stdout: '', stderr: '' });
    assert.equal(out.text(), 'out: echo x\n');
    assert.equal(err.text(), 'err\n');
    await c.remove('ex', { force: true });
    c.close();
  });

  it('returns the runtime errors as the same GodwitError subclasses', async () => {
    await assert.rejects(client.inspect('ghost'), (err: unknown) => {
      assert.ok(err instanceof NotFoundError);
      assert.equal(err.code, ErrorCode.ContainerNotFound);
      assert.equal(err.message, 'no container named ghost');
      assert.equal(err.hint, 'godwit ps lists the containers of this host');
      return true;
    });
    await client.run({ name: 'dup', image: 'busybox', args: ['sh'], env: {} });
    await assert.rejects(
      client.run({ name: 'dup', image: 'busybox', args: ['sh'], env: {} }),
      AlreadyExistsError,
    );
    await assert.rejects(client.remove('dup'), (err: unknown) => {
      assert.ok(err instanceof FailedPreconditionError);
      assert.equal(err.code, ErrorCode.ContainerRunning);
      assert.equal(err.hint, 'stop it first (godwit stop dup) or use rm -f');
      return true;
    });
    await assert.rejects(client.inspect('Bad Name'), (err: unknown) => {
      assert.ok(err instanceof InvalidArgumentError);
      assert.equal(err.code, ErrorCode.InvalidName);
      assert.match(err.message, /^invalid container name "Bad Name"$/);
      return true;
    });
    await assert.rejects(client.inspect('a/b'), /invalid container name "a\/b"/);
    await client.remove('dup', { force: true });
  });

  it('answers an unexpected exception with 500 GODWIT_INTERNAL, logs it, and keeps serving', async () => {
    await client.run({ name: 'bug', image: 'busybox', args: ['sh'], env: {} });
    await assert.rejects(client.exec('bug', ['throw']), (err: unknown) => {
      assert.ok(err instanceof InternalError);
      assert.equal(err.code, ErrorCode.Internal);
      assert.match(err.message, /simulated bug/);
      return true;
    });
    const logged = log.entries.find((e) => e.msg === 'request failed unexpectedly');
    assert.ok(logged, 'the bug is logged');
    assert.match(String(logged.fields['stack']), /simulated bug/);
    assert.equal((await client.health()).ok, true);
    await client.remove('bug', { force: true });
  });

  it('logs one line per request with method, path, status and ms', async () => {
    await client.list();
    const line = log.entries.filter((e) => e.msg === 'request').at(-1);
    assert.ok(line);
    assert.equal(line.fields['method'], 'GET');
    assert.equal(line.fields['path'], '/v1/containers');
    assert.equal(line.fields['status'], 200);
    assert.equal(typeof line.fields['ms'], 'number');
  });

  describe('request validation', () => {
    const post = (path: string, body: string, headers: Record<string, string | number> = json) =>
      rawRequest(sock(), 'POST', path, { headers, body });

    it('rejects unknown fields, naming them', async () => {
      const r = await post(
        '/v1/containers',
        JSON.stringify({ name: 'x', image: 'busybox', args: ['sh'], colour: 'red' }),
      );
      assert.equal(r.status, 400);
      assert.equal(errorOf(r)?.code, ErrorCode.RequestInvalid);
      assert.equal(errorOf(r)?.message, 'unknown field "colour"');
      const n = await post(
        '/v1/containers',
        JSON.stringify({
          name: 'x',
          image: 'busybox',
          args: ['sh'],
          network: { ip: '10.0.0.1', prefixLength: 24, mac: '02:00:00:00:00:01', x: 1 },
        }),
      );
      assert.equal(errorOf(n)?.message, 'unknown field "network.x"');
    });

    it('rejects bad names, types and ranges', async () => {
      let r = await post(
        '/v1/containers',
        JSON.stringify({ name: 'Bad Name', image: 'busybox', args: ['sh'] }),
      );
      assert.equal(r.status, 400);
      assert.equal(errorOf(r)?.code, ErrorCode.InvalidName);
      r = await post('/v1/containers', JSON.stringify({ name: 'x', image: 'busybox', args: 'sh' }));
      assert.match(errorOf(r)?.message ?? '', /^args: expected an array of strings/);
      r = await post('/v1/containers/x/stop', JSON.stringify({ timeoutMs: -5 }));
      assert.equal(r.status, 400);
      assert.match(errorOf(r)?.message ?? '', /^timeoutMs: expected an integer/);
      r = await post('/v1/containers', '{}');
      assert.match(errorOf(r)?.message ?? '', /^missing field "name"/);
      r = await post('/v1/containers', '[1,2]');
      assert.equal(errorOf(r)?.message, 'request body: expected a JSON object');
      r = await post('/v1/restore', JSON.stringify({ dir: 'relative', name: 'x' }));
      assert.match(errorOf(r)?.message ?? '', /^dir: must be an absolute path/);
      r = await rawRequest(sock(), 'DELETE', '/v1/containers/x?force=maybe');
      assert.match(errorOf(r)?.message ?? '', /^force: expected true or false/);
      r = await rawRequest(sock(), 'GET', '/v1/containers?all=1');
      assert.equal(errorOf(r)?.message, 'unknown query parameter "all"');
      r = await rawRequest(sock(), 'GET', '/v1/containers/%zz');
      assert.equal(r.status, 400);
    });

    it('rejects malformed JSON, bad UTF-8 and other content types', async () => {
      let r = await post('/v1/containers', '{"name": ');
      assert.equal(r.status, 400);
      assert.match(errorOf(r)?.message ?? '', /^malformed JSON in request body/);
      r = await rawRequest(sock(), 'POST', '/v1/containers', {
        headers: json,
        body: Buffer.from([0x7b, 0xff, 0x7d]),
      });
      assert.equal(errorOf(r)?.message, 'request body is not valid UTF-8');
      r = await post('/v1/containers', JSON.stringify({ name: 'x' }), { 'content-type': 'text/plain' });
      assert.equal(r.status, 415);
      assert.equal(errorOf(r)?.code, ErrorCode.UnsupportedMediaType);
      r = await post('/v1/containers', JSON.stringify({ name: 'x' }), {});
      assert.equal(r.status, 415);
      r = await post('/v1/containers', '{}', { 'content-type': 'application/json; charset=latin1' });
      assert.equal(r.status, 415);
    });

    it('answers 413 to bodies over 1 MiB, declared or streamed, and keeps serving', async () => {
      const big = JSON.stringify({ name: 'x', image: 'busybox', args: ['a'.repeat(2 * 1024 * 1024)] });
      let r = await post('/v1/containers', big);
      assert.equal(r.status, 413);
      assert.equal(errorOf(r)?.code, ErrorCode.RequestTooLarge);
      r = await rawRequest(sock(), 'POST', '/v1/containers', { headers: json, body: big, chunked: true });
      assert.equal(r.status, 413);
      assert.equal(r.headers['connection'], 'close');
      // Just under the limit is read (and then validated).
      const fits = JSON.stringify({ name: 'x', image: 'busybox', args: ['a'.repeat(1024 * 1024 - 100)] });
      r = await post('/v1/containers', fits);
      assert.equal(r.status, 400, 'read and validated, not rejected for size');
      assert.equal((await client.health()).ok, true);
    });

    it('answers 404, 405 (with Allow) and 501 for migrations', async () => {
      let r = await rawRequest(sock(), 'GET', '/v2/containers');
      assert.equal(r.status, 404);
      assert.equal(errorOf(r)?.code, ErrorCode.RouteNotFound);
      r = await rawRequest(sock(), 'GET', '/v1/containers/x/');
      assert.equal(r.status, 404);
      r = await rawRequest(sock(), 'PUT', '/v1/containers');
      assert.equal(r.status, 405);
      assert.equal(r.headers['allow'], 'GET, POST');
      assert.equal(errorOf(r)?.code, ErrorCode.MethodNotAllowed);
      r = await rawRequest(sock(), 'GET', '/v1/containers/x/exec');
      assert.equal(r.status, 405);
      for (const [m, p] of [
        ['POST', '/v1/migrations'],
        ['GET', '/v1/migrations/abc'],
      ] as const) {
        r = await rawRequest(sock(), m, p, m === 'POST' ? { headers: json, body: '{}' } : {});
        assert.equal(r.status, 501);
        assert.equal(errorOf(r)?.code, ErrorCode.NotImplemented);
        assert.match(errorOf(r)?.message ?? '', /not implemented/);
      }
      assert.equal((await client.health()).ok, true);
    });

    it('accepts an empty body where every field is optional', async () => {
      await client.run({ name: 'empty', image: 'busybox', args: ['sh'], env: {} });
      const r = await rawRequest(sock(), 'POST', '/v1/containers/empty/kill');
      assert.equal(r.status, 204);
      await client.remove('empty', { force: true });
    });
  });

  it('serves TCP too', async () => {
    assert.ok(agent.tcp && agent.tcp.port > 0);
    const tcp = new AgentClient({ host: '127.0.0.1', port: agent.tcp.port });
    assert.equal((await tcp.health()).hostId, 'abc123');
    assert.deepEqual(await tcp.list(), []);
    tcp.close();
  });

  it('refuses to start a second agent on a live socket', async () => {
    await assert.rejects(
      startAgent({ runtime, socketPath, log: memoryLogger(), version: 'x' }),
      (err: unknown) => {
        assert.ok(err instanceof FailedPreconditionError);
        assert.equal(err.code, ErrorCode.AgentRunning);
        assert.match(err.message, new RegExp(`pid ${process.pid}`));
        return true;
      },
    );
    assert.equal((await client.health()).ok, true, 'the first agent is unharmed');
  });
});

describe('agent start-up and shutdown', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-agent-life-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('replaces a stale socket left by a killed process', async () => {
    const socketPath = join(dir, 'stale.sock');
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => console.log('up'))`,
    ]);
    await new Promise<void>((r) => child.stdout.once('data', () => r()));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    assert.ok(existsSync(socketPath), 'SIGKILL leaves the socket file behind');
    const log = memoryLogger();
    const agent = await startAgent({ runtime: new MemoryRuntime(), socketPath, log, version: 'x' });
    assert.ok(log.entries.some((e) => e.msg === 'removed stale socket'));
    assert.equal((await new AgentClient({ socketPath }).health()).ok, true);
    await agent.close();
    assert.equal(existsSync(socketPath), false, 'close removes the socket');
  });

  it('refuses a path that is not a socket', async () => {
    const p = join(dir, 'file');
    await writeFile(p, 'x');
    await assert.rejects(
      startAgent({ runtime: new MemoryRuntime(), socketPath: p, log: memoryLogger(), version: 'x' }),
      /exists and is not a socket/,
    );
  });

  it('finishes in-flight requests before closing, and refuses new ones', async () => {
    const socketPath = join(dir, 'graceful.sock');
    const runtime = new MemoryRuntime();
    const agent = await startAgent({ runtime, socketPath, log: memoryLogger(), version: 'x' });
    const client = new AgentClient({ socketPath });
    await client.run({ name: 'slow', image: 'busybox', args: ['sh'], env: {} });
    const inFlight = client.exec('slow', ['sleep', '300'], { capture: true });
    await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    const closed = agent.close();
    assert.equal((await inFlight).exitCode, 0, 'the in-flight request completes');
    await closed;
    assert.ok(Date.now() - started < 5_000, 'close does not wait for idle keep-alive connections');
    assert.equal(existsSync(socketPath), false);
    await assert.rejects(client.health(), (err: unknown) => {
      assert.ok(err instanceof UnavailableError);
      assert.equal(err.code, ErrorCode.AgentUnavailable);
      assert.match(err.hint ?? '', /godwit agent/);
      return true;
    });
    client.close();
  });

  it('cuts requests that outlast the grace period', async () => {
    const socketPath = join(dir, 'cut.sock');
    const agent = await startAgent({
      runtime: new MemoryRuntime(),
      socketPath,
      log: memoryLogger(),
      version: 'x',
    });
    const client = new AgentClient({ socketPath });
    await client.run({ name: 'slow', image: 'busybox', args: ['sh'], env: {} });
    const inFlight = client.exec('slow', ['sleep', '3000'], { capture: true }).then(
      () => undefined,
      (err: unknown) => err,
    );
    await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    await agent.close({ graceMs: 100 });
    assert.ok(Date.now() - started < 2_000);
    const err = await inFlight;
    assert.ok(err instanceof UnavailableError, String(err));
    assert.equal(err.code, ErrorCode.AgentUnavailable);
    client.close();
  });
});

function sink(): NodeJS.WritableStream & { text(): string } {
  let buf = '';
  const s = {
    write(chunk: string | Uint8Array, cb?: unknown): boolean {
      buf += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
      if (typeof cb === 'function') (cb as () => void)();
      return true;
    },
    text: () => buf,
  };
  return s as unknown as NodeJS.WritableStream & { text(): string };
}
