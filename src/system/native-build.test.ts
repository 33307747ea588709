import assert from 'node:assert/strict';
import { readFile, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { which } from './exec.js';
import { buildNative, nativeSourceSha256, NATIVE_PROGRAMS } from './native-build.js';
import { readToolsRecord } from './tools.js';

describe('buildNative', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-native-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('lists the shim, the static memload and the static counterd, the write tracker and the CRIU front', () => {
    assert.deepEqual(
      NATIVE_PROGRAMS.map((p) => p.name),
      ['godwit-shim', 'godwit-memload', 'godwit-counterd', 'godwit-wptrack', 'godwit-criu'],
    );
    assert.ok(NATIVE_PROGRAMS.find((p) => p.key === 'memload')?.flags.includes('-static'));
    assert.ok(NATIVE_PROGRAMS.find((p) => p.key === 'counterd')?.flags.includes('-static'));
  });

  it('hashes the program source plus every header, so a header change rebuilds', async () => {
    const src = join(dir, 'src');
    await mkdir(src, { recursive: true });
    const program = NATIVE_PROGRAMS.find((p) => p.key === 'counterd');
    assert.ok(program);
    await writeFile(join(src, program.source), '#include "b.h"\nint main(void) { return 0; }\n');
    await writeFile(join(src, 'b.h'), '/* b */\n');
    const base = await nativeSourceSha256(program, src);
    assert.match(base, /^[0-9a-f]{64}$/);
    await writeFile(join(src, 'notes.txt'), 'not a header\n');
    assert.equal(await nativeSourceSha256(program, src), base);
    await writeFile(join(src, 'b.h'), '/* b, edited */\n');
    const edited = await nativeSourceSha256(program, src);
    assert.notEqual(edited, base);
    await writeFile(join(src, 'a.h'), '');
    assert.notEqual(await nativeSourceSha256(program, src), edited);
    await writeFile(join(src, program.source), 'int main(void) { return 1; }\n');
    assert.notEqual(await nativeSourceSha256(program, src), edited);
  });

  it('compiles once, records source hashes, then skips', async (t) => {
    if ((await which('gcc')) === undefined) {
      if (process.env['CI'] === 'true') assert.fail('gcc is required in CI');
      t.skip('gcc not installed');
      return;
    }
    const lines: string[] = [];
    const first = await buildNative({ toolsDir: dir, log: (l) => lines.push(l) });
    assert.deepEqual(
      first.map((r) => r.built),
      [true, true, true, true, true],
    );
    const record = await readToolsRecord(dir);
    assert.equal(record.shim?.sourceSha256, first[0]?.sourceSha256);
    assert.equal(record.memload?.sourceSha256, first[1]?.sourceSha256);
    assert.equal(record.counterd?.sourceSha256, first[2]?.sourceSha256);
    assert.equal(record.wptrack?.sourceSha256, first[3]?.sourceSha256);
    assert.equal(record.criuFront?.sourceSha256, first[4]?.sourceSha256);
    const memload = join(dir, 'bin/godwit-memload');
    assert.ok(((await stat(memload)).mode & 0o111) !== 0);
    assert.equal((await readFile(memload)).subarray(0, 4).toString('latin1'), '\x7fELF');
    const second = await buildNative({ toolsDir: dir, log: (l) => lines.push(l) });
    assert.deepEqual(
      second.map((r) => r.built),
      [false, false, false, false, false],
    );
    assert.equal(lines.length, 5);
  });
});
