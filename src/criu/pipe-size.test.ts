import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CRIU_PIPE_BYTES, ensurePipeMaxSize } from './pipe-size.js';

describe('ensurePipeMaxSize', () => {
  const dir = mkdtempSync(join(tmpdir(), 'godwit-pipe-size-'));
  const path = join(dir, 'pipe-max-size');
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("raises the kernel's default 1 MiB to CRIU's 4 MiB pipes", async () => {
    writeFileSync(path, '1048576\n');
    assert.deepEqual(await ensurePipeMaxSize({ path }), {
      state: 'raised',
      from: 1048576,
      bytes: CRIU_PIPE_BYTES,
    });
    assert.equal(readFileSync(path, 'utf8'), String(CRIU_PIPE_BYTES));
  });

  it('never lowers a larger limit', async () => {
    writeFileSync(path, '16777216\n');
    assert.deepEqual(await ensurePipeMaxSize({ path }), { state: 'enough', bytes: 16777216 });
    assert.equal(readFileSync(path, 'utf8'), '16777216\n');
  });

  it('only reports when told not to raise it', async () => {
    writeFileSync(path, '1048576\n');
    const r = await ensurePipeMaxSize({ path, raise: false });
    assert.equal(r.state, 'left');
    assert.equal(readFileSync(path, 'utf8'), '1048576\n');
  });

  it('says why when the limit cannot be read', async () => {
    const r = await ensurePipeMaxSize({ path: join(dir, 'missing') });
    assert.equal(r.state, 'left');
    assert.match(r.state === 'left' ? r.reason : '', /ENOENT/);
    writeFileSync(path, 'junk');
    assert.equal((await ensurePipeMaxSize({ path })).state, 'left');
  });
});
