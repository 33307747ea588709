import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HOST_BUSYBOX, ImageStore, parseLddOutput, REDIS_SERVER_PATH } from './image-store.js';

describe('parseLddOutput', () => {
  it('takes the libraries and the loader, without the vDSO, sorted', () => {
    const out = [
      '\tlinux-vdso.so.1 (0x00007ffd3a7e5000)',
      '\tliblzf.so.1 => /lib/x86_64-linux-gnu/liblzf.so.1 (0x00007f05c426a000)',
      '\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f05c38a5000)',
      '\t/lib64/ld-linux-x86-64.so.2 (0x00007f05c4283000)',
      '\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f05c38a5000)',
      '',
    ].join('\n');
    assert.deepEqual(parseLddOutput(out), [
      '/lib/x86_64-linux-gnu/libc.so.6',
      '/lib/x86_64-linux-gnu/liblzf.so.1',
      '/lib64/ld-linux-x86-64.so.2',
    ]);
    assert.deepEqual(parseLddOutput('\tstatically linked\n'), []);
  });
  it('refuses a library that is not found, and strange paths', () => {
    assert.throws(() => parseLddOutput('\tlibfoo.so.1 => not found\n', '/usr/bin/x'), {
      code: 'GODWIT_TOOL_MISSING',
      message: /\/usr\/bin\/x needs libfoo\.so\.1/,
    });
    assert.throws(() => parseLddOutput('\tlibx.so => /lib/../etc/x (0x1)\n'), {
      code: 'GODWIT_TOOL_MISSING',
    });
  });
});

describe('ImageStore', { skip: !existsSync(HOST_BUSYBOX) && `no ${HOST_BUSYBOX}` }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-images-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('builds a redis image from a dynamic binary, its libraries and the busybox base', async () => {
    // /bin/sh (dash) stands in for the Redis server: a small dynamic binary every Debian has.
    const store = new ImageStore(join(dir, 'a'), { binaries: [], redisServer: '/bin/sh' });
    const img = await store.ensure('redis');
    assert.equal(img.name, 'redis');
    assert.match(img.id, /^[0-9a-f]{16}$/);
    const server = await readFile(join(img.rootfs, REDIS_SERVER_PATH));
    assert.ok(server.equals(await readFile('/bin/sh')));
    assert.equal((await stat(join(img.rootfs, REDIS_SERVER_PATH))).mode & 0o777, 0o755);
    assert.equal(await readlink(join(img.rootfs, 'bin/sh')), '/bin/busybox');
    const meta = JSON.parse(await readFile(join(img.rootfs, '..', 'image.json'), 'utf8')) as {
      inputs: string[];
    };
    const libs = meta.inputs.filter((f) => f.includes('.so'));
    assert.ok(
      libs.some((f) => /\/libc\.so\.6$/.test(f)),
      JSON.stringify(meta.inputs),
    );
    assert.ok(
      libs.some((f) => /ld-linux/.test(f)),
      'the dynamic loader, at its absolute path',
    );
    for (const lib of libs) assert.ok(existsSync(join(img.rootfs, lib)), lib);

    // The same inputs give the same id, from this store (cached) and from a new one (rehashed).
    assert.deepEqual(await store.ensure('redis'), img);
    const again = await new ImageStore(join(dir, 'b'), { binaries: [], redisServer: '/bin/sh' }).ensure(
      'redis',
    );
    assert.equal(again.id, img.id);
    const busybox = await store.ensure('busybox');
    assert.notEqual(busybox.id, img.id);
  });

  it('says how to get a missing Redis server, and names the known images', async () => {
    const store = new ImageStore(join(dir, 'c'), {
      binaries: [],
      redisServer: '/nonexistent/redis-check-rdb',
    });
    await assert.rejects(store.ensure('redis'), (err: Error & { code?: string; hint?: string }) => {
      assert.equal(err.code, 'GODWIT_TOOL_MISSING');
      assert.match(err.message, /\/nonexistent\/redis-check-rdb is missing/);
      assert.match(err.hint ?? '', /apt-get install redis-tools/);
      return true;
    });
    await assert.rejects(store.ensure('postgres'), (err: Error & { code?: string; hint?: string }) => {
      assert.equal(err.code, 'GODWIT_IMAGE_NOT_FOUND');
      assert.match(err.hint ?? '', /busybox, redis/);
      return true;
    });
  });
});
