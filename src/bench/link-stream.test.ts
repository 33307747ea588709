import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { failedFirst, receiverCommand, senderCommand } from './link-stream.js';

/** Runs `argv` here (no namespace); resolves with its exit status and stderr. */
function run(
  argv: readonly string[],
  onStderr?: (text: string) => void,
): Promise<{ code: number | null; stderr: string }> {
  const [file, ...args] = argv;
  const child = spawn(file ?? 'false', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => {
    stderr += c;
    onStderr?.(stderr);
  });
  return new Promise((res, rej) => {
    child.on('error', rej);
    child.on('close', (code) => res({ code, stderr }));
  });
}

/** The receiver's port once it listens, and its whole run. */
function startReceiver(argv: readonly string[]): { port: Promise<string>; done: ReturnType<typeof run> } {
  let listening: (port: string) => void = () => undefined;
  const port = new Promise<string>((res) => (listening = res));
  const done = run(argv, (text) => {
    const m = /^listening (\d+)$/m.exec(text);
    if (m?.[1]) listening(m[1]);
  });
  void done.then((r) => listening(`receiver exited ${r.code}: ${r.stderr}`));
  return { port, done };
}

describe('link-stream commands (run here on loopback, without namespaces)', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-link-stream-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('carries a file whose path holds spaces, quotes and $(…) as data, counted alike at both ends', async () => {
    const sub = join(dir, `a dir 'with' "quotes"`);
    await mkdir(sub);
    const src = join(sub, `-x $(touch pwned) \`touch pwned\` ;rm -rf ~.bin`);
    const dst = join(sub, `out $HOME "copy".bin`);
    const data = randomBytes(300_000);
    await writeFile(src, data);
    const receiver = startReceiver(receiverCommand('cat > "$1"', '127.0.0.1', [dst]));
    const port = await receiver.port;
    assert.match(port, /^\d+$/);
    const sender = await run(senderCommand('cat -- "$1"', '127.0.0.1', '127.0.0.1', port, [src]));
    const received = await receiver.done;
    assert.equal(sender.code, 0, sender.stderr);
    assert.equal(received.code, 0, received.stderr);
    assert.match(sender.stderr, /^sent 300000$/m);
    assert.match(received.stderr, /^received 300000$/m);
    assert.deepEqual(await readFile(dst), data);
    assert.ok(!(await readdir(sub)).includes('pwned'), 'nothing in a path ran');
    assert.ok(!(await readdir(process.cwd())).includes('pwned'), 'nothing in a path ran');
  });

  it('a failing stage of the source fails the sending end (pipefail)', async () => {
    const receiver = startReceiver(receiverCommand('cat > /dev/null', '127.0.0.1', []));
    const port = await receiver.port;
    const sender = await run(
      senderCommand('cat -- "$1" | cat', '127.0.0.1', '127.0.0.1', port, [join(dir, 'missing')]),
    );
    await receiver.done;
    assert.notEqual(sender.code, 0);
    assert.match(sender.stderr, /missing: No such file/);
  });
});

describe('failedFirst', () => {
  const exit = (code: number | null, at: number) => ({ code, signal: null, at });
  it('names the end that failed first; none when both exited 0', () => {
    assert.equal(failedFirst(exit(0, 1), exit(0, 2)), undefined);
    assert.equal(failedFirst(exit(1, 1), exit(0, 2)), 'sender');
    assert.equal(failedFirst(exit(0, 1), exit(1, 2)), 'receiver');
    assert.equal(failedFirst(exit(1, 5), exit(null, 3)), 'receiver', 'the receiver failed first');
    assert.equal(failedFirst(exit(null, 3), exit(1, 5)), 'sender');
  });
});
