import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cgroupHasChildren } from './freezer.js';
import { criuConfigText } from './runc-runtime.js';

describe('cgroupHasChildren', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'godwit-cgroup-'));
    // A v1 layout with a v2 hierarchy beside it: the container's cgroup in each, files only.
    for (const h of ['freezer', 'memory', 'unified']) {
      await mkdir(join(root, h, 'godwit/c1'), { recursive: true });
      await writeFile(join(root, h, 'godwit/c1/cgroup.procs'), '');
    }
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('is false for a container cgroup without cgroups below it', async () => {
    assert.equal(await cgroupHasChildren('godwit/c1', root), false);
  });

  it('is true once any hierarchy has one below it', async () => {
    await mkdir(join(root, 'memory', 'godwit/c1/inner'));
    assert.equal(await cgroupHasChildren('godwit/c1', root), true);
    await rm(join(root, 'memory', 'godwit/c1/inner'), { recursive: true });
  });

  it('is true when it cannot tell: no such cgroup anywhere', async () => {
    assert.equal(await cgroupHasChildren('godwit/none', root), true);
    assert.equal(await cgroupHasChildren('godwit/c1', join(root, 'missing')), true);
  });
});

describe('criuConfigText', () => {
  it('writes one option per line, cgroups left alone only when asked', () => {
    assert.equal(
      criuConfigText({ skipInFlight: true, skipNetworkLock: true, actionScript: '/w/gate.sh' }),
      'skip-in-flight\nnetwork-lock skip\naction-script /w/gate.sh\n',
    );
    assert.equal(criuConfigText({ skipInFlight: false, ignoreCgroups: true }), 'manage-cgroups=ignore\n');
  });
});
