import assert from 'node:assert/strict';
import { readFile, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { which } from './exec.js';
import { buildNative, NATIVE_PROGRAMS } from './native-build.js';
import { readToolsRecord } from './tools.js';

describe('buildNative', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-native-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('lists the shim, the static memload and the static counterd', () => {
    assert.deepEqual(
      NATIVE_PROGRAMS.map((p) => p.name),
      ['godwit-shim', 'godwit-memload', 'godwit-counterd'],
    );
    assert.ok(NATIVE_PROGRAMS.find((p) => p.key === 'memload')?.flags.includes('-static'));
    assert.ok(NATIVE_PROGRAMS.find((p) => p.key === 'counterd')?.flags.includes('-static'));
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
      [true, true, true],
    );
    const record = await readToolsRecord(dir);
    assert.equal(record.shim?.sourceSha256, first[0]?.sourceSha256);
    assert.equal(record.memload?.sourceSha256, first[1]?.sourceSha256);
    assert.equal(record.counterd?.sourceSha256, first[2]?.sourceSha256);
    const memload = join(dir, 'bin/godwit-memload');
    assert.ok(((await stat(memload)).mode & 0o111) !== 0);
    assert.equal((await readFile(memload)).subarray(0, 4).toString('latin1'), '\x7fELF');
    const second = await buildNative({ toolsDir: dir, log: (l) => lines.push(l) });
    assert.deepEqual(
      second.map((r) => r.built),
      [false, false, false],
    );
    assert.equal(lines.length, 3);
  });
});
