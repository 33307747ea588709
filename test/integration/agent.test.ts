/**
 * The agent on real runc + CRIU: in-process over a test host's runtime, and as the built
 * `godwit agent` process driven by the CLI with --host. Requires `npm run build`.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { AgentClient } from '../../src/agent/client.js';
import { startAgent, type AgentHandle } from '../../src/agent/server.js';
import { errorOf, rawRequest } from '../../src/agent/testing.js';
import { ErrorCode, FailedPreconditionError, NotFoundError } from '../../src/core/errors.js';
import { ContainerStatus } from '../../src/core/runtime.js';
import { JsonFileLogger } from '../../src/system/file-logger.js';
import { runCommand } from '../../src/system/exec.js';
import {
  COUNTER_ARGS,
  counters,
  createTestHost,
  missingRequirement,
  waitCounters,
  type TestHost,
} from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);
const BIN = resolve('bin/godwit.js');
const JSON_HEADERS = { 'content-type': 'application/json' };

describe('godwit agent in-process on runc', { skip }, () => {
  let host: TestHost;
  let agent: AgentHandle;
  let client: AgentClient;
  let socketPath: string;
  let scratch: string;
  const stdout: string[] = [];
  const stderr: string[] = [];

  before(async () => {
    host = await createTestHost('agent');
    scratch = await mkdtemp(join(tmpdir(), 'godwit-agent-cp-'));
    socketPath = join(host.state.root, 'agent.sock');
    agent = await startAgent({
      runtime: host.runtime,
      socketPath,
      log: new JsonFileLogger(join(host.state.logsDir, 'agent.log')),
      version: 'test',
      hostId: host.state.hostId,
    });
    client = new AgentClient(
      { socketPath },
      { output: { stdout: collect(stdout), stderr: collect(stderr) } },
    );
  });
  after(async () => {
    client?.close();
    await agent?.close();
    await host?.dispose();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('runs, lists, execs, checkpoints and restores through the API', async () => {
    const info = await client.run({
      name: 'web',
      image: 'busybox',
      args: COUNTER_ARGS,
      env: { GREETING: 'hi' },
    });
    assert.equal(info.status, ContainerStatus.Running);
    assert.ok((info.pid ?? 0) > 0);
    assert.deepEqual(
      (await client.list()).map((c) => [c.name, c.status]),
      [['web', 'running']],
    );

    const ex = await client.exec('web', ['sh', '-c', 'echo $GREETING; echo oops >&2; exit 3']);
    assert.deepEqual(
      ex,
      { exitCode: 3, stdout: '', stderr: '' },
      'not captured: written to the output streams',
    );
    assert.deepEqual([stdout.join(''), stderr.join('')], ['hi\n', 'oops\n']);
    const cap = await client.exec('web', ['sh', '-c', 'echo $GREETING; echo oops >&2; exit 3'], {
      capture: true,
    });
    assert.deepEqual(cap, { exitCode: 3, stdout: 'hi\n', stderr: 'oops\n' });

    await waitCounters(client, 'web', 3);
    const dir = join(scratch, 'web');
    const cp = await client.checkpoint('web', { dir });
    assert.equal(cp.leftRunning, false);
    assert.ok(cp.imageBytes > 0 && cp.pagesBytes > 0);
    const atCheckpoint = Math.max(...counters(await client.logs('web')));
    assert.equal((await client.inspect('web')).status, ContainerStatus.Checkpointed);

    const rs = await client.restore({ dir, name: 'web2' });
    assert.ok(rs.pid > 0);
    const after = await waitCounters(client, 'web2', 1);
    assert.equal(after[0], atCheckpoint + 1, 'the restored counter continues from memory');

    await assert.rejects(client.remove('web2'), FailedPreconditionError);
    await client.remove('web2', { force: true });
    await client.remove('web');
    assert.deepEqual(await client.list(), []);
    await assert.rejects(client.inspect('web'), NotFoundError);
  });

  it('answers invalid requests with 4xx and a clear message, and keeps serving', async () => {
    const sock = { socketPath };
    const post = (body: string | Buffer, headers: Record<string, string> = JSON_HEADERS) =>
      rawRequest(sock, 'POST', '/v1/containers', { headers, body });

    let r = await post(JSON.stringify({ name: 'x', image: 'busybox', args: ['true'], priviledged: true }));
    assert.equal(r.status, 400);
    assert.equal(errorOf(r)?.message, 'unknown field "priviledged"');

    r = await post(JSON.stringify({ name: '../etc', image: 'busybox', args: ['true'] }));
    assert.equal(r.status, 400);
    assert.equal(errorOf(r)?.code, ErrorCode.InvalidName);
    assert.match(errorOf(r)?.message ?? '', /^invalid container name/);

    r = await post(JSON.stringify({ name: 'x', image: 'busybox', args: ['x'.repeat(2 * 1024 * 1024)] }));
    assert.equal(r.status, 413);
    assert.match(errorOf(r)?.message ?? '', /larger than 1048576 bytes/);

    r = await post('{"name": "x", ');
    assert.equal(r.status, 400);
    assert.match(errorOf(r)?.message ?? '', /^malformed JSON/);

    r = await post('name=x', { 'content-type': 'application/x-www-form-urlencoded' });
    assert.equal(r.status, 415);
    assert.match(errorOf(r)?.message ?? '', /must be application\/json/);

    assert.equal((await client.health()).ok, true);
    assert.deepEqual(await client.list(), [], 'nothing was created by the rejected requests');
  });

  it('logs one line per request and its lifecycle to agent.log', async () => {
    const lines = (await readFile(join(host.state.logsDir, 'agent.log'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(lines.some((l) => l['msg'] === 'agent listening'));
    const req = lines.find((l) => l['msg'] === 'request' && l['status'] === 413);
    assert.ok(req, 'the 413 is logged');
    assert.equal(req['method'], 'POST');
    assert.equal(req['path'], '/v1/containers');
    assert.equal(typeof req['ms'], 'number');
  });
});

/** A writable stream that appends what is written to `into`. */
function collect(into: string[]): NodeJS.WritableStream {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      into.push(chunk.toString('utf8'));
      cb();
    },
  });
}

/** A `godwit agent` child process and what it printed. */
interface AgentProcess {
  child: ChildProcess;
  tcpPort: number;
  exited: Promise<number | null>;
}

async function spawnAgent(stateDir: string): Promise<AgentProcess> {
  const child = spawn(process.execPath, [BIN, '--state-dir', stateDir, 'agent', '--listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let out = '';
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (err += c));
  const line = await new Promise<string>((resolveLine, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent did not start: ${err}`)), 30_000);
    child.stdout?.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      const m = /^agent listening on .*\n/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolveLine(m[0]);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`agent exited with ${code}: ${err}`));
    });
  });
  const port = /and 127\.0\.0\.1:(\d+)$/.exec(line.trim());
  if (!port?.[1]) {
    child.kill('SIGKILL'); // never leave an agent behind: it would keep the test process alive
    assert.fail(`unexpected first line: ${line}`);
  }
  return { child, tcpPort: Number(port[1]), exited };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('godwit agent as a process, driven by the CLI', { skip }, () => {
  let host: TestHost;
  let socketPath: string;
  let agent: AgentProcess | undefined;
  let testbedDir: string;
  const godwit = (hostArg: string, ...args: string[]) =>
    runCommand(process.execPath, [BIN, '--host', hostArg, ...args], {
      timeoutMs: 120_000,
      env: { ...process.env, GODWIT_TESTBED_DIR: testbedDir },
    });

  before(async () => {
    host = await createTestHost('agentp');
    socketPath = join(host.state.root, 'agent.sock');
    testbedDir = await mkdtemp(join(tmpdir(), 'godwit-agent-tb-'));
    await writeFile(
      join(testbedDir, 'testbed.json'),
      JSON.stringify({ version: 1, name: 't', hosts: [{ name: 'h1', socket: socketPath }] }),
    );
    agent = await spawnAgent(host.state.root);
  });
  after(async () => {
    if (agent && agent.child.exitCode === null) {
      agent.child.kill('SIGKILL');
      await agent.exited;
    }
    await host?.dispose();
    if (testbedDir) await rm(testbedDir, { recursive: true, force: true });
  });

  it('serves ps, run, exec and rm to the CLI over the socket, TCP and a testbed name', async () => {
    let r = await godwit(socketPath, 'run', 'c1', '--', ...COUNTER_ARGS);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^c1 running \(pid \d+\)/);

    r = await godwit(socketPath, 'ps', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      (JSON.parse(r.stdout) as { name: string; status: string }[]).map((c) => [c.name, c.status]),
      [['c1', 'running']],
    );

    r = await godwit(socketPath, 'exec', 'c1', '--', 'sh', '-c', 'echo out; echo err >&2; exit 7');
    assert.equal(r.code, 7, 'exec exits with the command exit code');
    assert.equal(r.stdout, 'out\n');
    assert.equal(r.stderr, 'err\n');

    r = await godwit(socketPath, 'run', 'Bad Name', '--', 'true');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^godwit: invalid container name "Bad Name"\n {2}hint: /);

    r = await godwit(socketPath, 'run', 'tmp', '--', 'sleep', '1000');
    assert.equal(r.code, 0, r.stderr);
    r = await godwit(socketPath, 'rm', 'tmp');
    assert.equal(r.code, 5, 'removing a running container without -f is refused');
    assert.match(r.stderr, /^godwit: tmp is running\n {2}hint: .*rm -f/);
    r = await godwit(socketPath, 'rm', '-f', 'tmp');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'tmp removed\n');

    r = await godwit(`127.0.0.1:${agent?.tcpPort}`, 'ps');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^NAME .*\nc1 +running/);

    r = await godwit('h1', 'ps', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as unknown[]).length, 1);

    r = await godwit('h7', 'ps');
    assert.equal(r.code, 3);
    assert.match(r.stderr, /^godwit: no testbed host named h7\n {2}hint: known hosts: h1\n$/);

    r = await godwit(join(host.state.root, 'nope.sock'), 'ps');
    assert.equal(r.code, 6);
    assert.match(r.stderr, /^godwit: cannot reach the godwit agent at .*nope\.sock: ENOENT\n/);
  });

  it('leaves containers running on SIGTERM; a new agent lists them', async () => {
    assert.ok(agent);
    const before = await host.runtime.inspect('c1');
    assert.ok(before.pid !== undefined && alive(before.pid));
    agent.child.kill('SIGTERM');
    assert.equal(await agent.exited, 0, 'the agent exits 0 on SIGTERM');
    assert.equal(existsSync(socketPath), false, 'the socket is removed');
    assert.ok(alive(before.pid), 'the container outlives the agent');
    assert.equal((await host.runtime.inspect('c1')).status, ContainerStatus.Running);
    const log = await readFile(join(host.state.logsDir, 'agent.log'), 'utf8');
    assert.match(log, /"msg":"agent stopped"/);

    agent = await spawnAgent(host.state.root);
    const r = await godwit(socketPath, 'ps', '--json');
    assert.equal(r.code, 0, r.stderr);
    const list = JSON.parse(r.stdout) as { name: string; status: string; pid: number }[];
    assert.deepEqual(
      list.map((c) => [c.name, c.status, c.pid]),
      [['c1', 'running', before.pid]],
    );
    const c = await waitCounters(new AgentClient({ socketPath }), 'c1', 2);
    assert.ok(c.length >= 2);
  });

  it('recovers after SIGKILL: the stale socket is replaced and the containers are listed', async () => {
    assert.ok(agent);
    const before = await host.runtime.inspect('c1');
    agent.child.kill('SIGKILL');
    await agent.exited;
    assert.ok(existsSync(socketPath), 'SIGKILL leaves the socket file');
    assert.ok(before.pid !== undefined && alive(before.pid), 'the container outlives the agent');

    agent = await spawnAgent(host.state.root);
    const log = await readFile(join(host.state.logsDir, 'agent.log'), 'utf8');
    assert.match(log, /"msg":"removed stale socket"/);
    let r = await godwit(socketPath, 'ps', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      (JSON.parse(r.stdout) as { name: string; status: string; pid: number }[]).map((c) => [
        c.name,
        c.status,
        c.pid,
      ]),
      [['c1', 'running', before.pid]],
    );

    r = await godwit(socketPath, 'rm', '-f', 'c1');
    assert.equal(r.code, 0, r.stderr);
    r = await godwit(socketPath, 'ps');
    assert.equal(r.stdout.trim(), 'no containers');

    agent.child.kill('SIGTERM');
    assert.equal(await agent.exited, 0);
  });
});
