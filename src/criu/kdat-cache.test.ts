import assert from 'node:assert/strict';
import { mkdtemp, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadTools, type Tools } from '../system/tools.js';
import { ensureKdatCache } from './kdat-cache.js';

const tools: Tools | undefined = await loadTools().catch(() => undefined);
const skip = process.getuid?.() !== 0 ? 'needs root' : !tools ? 'needs godwit setup (CRIU)' : false;

describe('CRIU kernel-feature cache', { skip }, () => {
  let dir: string;
  let shm: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-kdat-'));
    shm = await mkdtemp('/dev/shm/godwit-kdat-test-');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
    await rm(shm, { recursive: true, force: true });
  });

  it('leaves a tmpfs /run to CRIU', async () => {
    const r = await ensureKdatCache({
      criu: tools!.criu,
      criuVersion: tools!.criuVersion,
      runDir: '/dev/shm',
    });
    assert.deepEqual(r, { state: 'native' });
  });

  it('makes the cache once on tmpfs and links it where CRIU looks', async () => {
    const linkPath = join(dir, 'criu.kdat');
    const o = { criu: tools!.criu, criuVersion: tools!.criuVersion, dir: shm, linkPath, runDir: dir };
    const first = await ensureKdatCache(o);
    assert.equal(first.state, 'linked', JSON.stringify(first));
    assert.ok(first.state === 'linked' && first.made);
    assert.equal(await readlink(linkPath), join(shm, 'criu.kdat'));
    assert.ok((await stat(join(shm, 'criu.kdat'))).size > 0);
    const again = await ensureKdatCache(o);
    assert.ok(again.state === 'linked' && !again.made, 'kept while CRIU, kernel and boot are the same');
    // A new CRIU version makes it again.
    const other = await ensureKdatCache({ ...o, criuVersion: `${tools!.criuVersion}-other` });
    assert.ok(other.state === 'linked' && other.made);
  });

  it('never replaces a regular file', async () => {
    const linkPath = join(dir, 'mine.kdat');
    await writeFile(linkPath, 'not ours');
    const r = await ensureKdatCache({
      criu: tools!.criu,
      criuVersion: tools!.criuVersion,
      dir: shm,
      linkPath,
      runDir: dir,
    });
    assert.equal(r.state, 'unavailable');
  });
});
