/**
 * godwit-criu (native/godwit-criu.c), the CRIU runc is given: it answers VERSION and
 * FEATURE_CHECK requests from a cache filled by the real CRIU, and hands anything else to it.
 * CRIU's RPC is spoken over a SOCK_SEQPACKET socket pair, which Node cannot make: a small
 * python3 client plays runc's part (go-criu: one request, one answer, hang up).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { buildNative } from '../system/native-build.js';
import { which } from '../system/exec.js';
import { loadTools, toolPaths, type Tools } from '../system/tools.js';

const run = promisify(execFile);
const tools: Tools | undefined = await loadTools().catch(() => undefined);
const python = await which('python3');
const skip =
  process.getuid?.() !== 0
    ? 'needs root'
    : !tools
      ? 'needs godwit setup (CRIU)'
      : python === undefined
        ? 'needs python3 (the test client)'
        : false;

/** One swrk conversation: sends `hex`, prints the answer's hex. */
const CLIENT = `
import socket, subprocess, sys
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
p = subprocess.Popen([sys.argv[1], 'swrk', str(b.fileno())], pass_fds=[b.fileno()])
b.close()
a.send(bytes.fromhex(sys.argv[2]))
r = a.recv(65536)
a.close()
sys.exit(p.wait() or print(r.hex()))
`;

describe('godwit-criu, the CRIU front', { skip }, () => {
  let dir: string;
  let front: string;
  let starts: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-criu-front-'));
    await buildNative({ toolsDir: dir, log: () => undefined, only: ['criuFront'] });
    const paths = toolPaths(dir);
    front = paths.criuFront;
    // The "real CRIU" beside it: the provisioned one, counting its starts (and, being a new
    // file, with cache keys of its own).
    starts = join(dir, 'starts');
    await writeFile(paths.criu, `#!/bin/sh\necho "$1" >> ${starts}\nexec ${tools!.criu} "$@"\n`);
    await chmod(paths.criu, 0o755);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** The answer's hex: the client's last line (CRIU may print before it, `criu check` does). */
  const ask = async (hex: string, criu = front): Promise<string> =>
    (await run(python as string, ['-c', CLIENT, criu, hex])).stdout.trim().split('\n').pop() ?? '';
  const started = async (): Promise<string[]> =>
    (await readFile(starts, 'utf8').catch(() => '')).split('\n').filter(Boolean);

  it('asks CRIU its version once, then answers from the cache', async () => {
    const direct = await ask('080a', tools!.criu);
    // criu_resp: type VERSION (10), success, version { major 4, ... }
    assert.match(direct, /^080a1001520608041002/);
    assert.equal(await ask('080a'), direct);
    assert.deepEqual(await started(), ['swrk']);
    assert.equal(await ask('080a'), direct);
    assert.equal(await ask('080a'), direct);
    assert.deepEqual(await started(), ['swrk'], 'no CRIU start for a cached answer');
  });

  it('caches feature checks by request: lazy pages', async () => {
    // criu_req: type FEATURE_CHECK (9), features { lazy_pages: true }
    const first = await ask('08092a021001');
    assert.match(first, /^08091001420/, first);
    assert.equal(await ask('08092a021001'), first);
    assert.equal((await started()).length, 2);
    // runc sends its whole options along (image directory descriptor, log file: they vary from
    // one checkpoint to the next); CRIU's check ignores them, and so does the key.
    assert.equal(await ask('080912020805' + '2a021001'), first);
    assert.equal(await ask('0809120408071001' + '2a021001'), first);
    assert.equal((await started()).length, 2);
    // Another question is another key.
    await ask('08092a020801');
    assert.equal((await started()).length, 3);
  });

  it('hands any other request to CRIU, which reads it itself', async () => {
    const before = (await started()).length;
    // criu_req: type CHECK (3): CRIU's own checks, answered by CRIU.
    const answer = await ask('0803');
    assert.match(answer, /^0803/);
    assert.equal((await started()).length, before + 1);
    assert.equal((await run(front, ['--version'])).stdout.includes('Version:'), true);
    assert.deepEqual((await started()).slice(-1), ['--version']);
  });
});
