import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { which } from './exec.js';
import {
  defaultToolsDir,
  findProjectRoot,
  loadTools,
  nativeDir,
  parseToolsRecord,
  readToolsRecord,
  toolPaths,
  updateToolsRecord,
} from './tools.js';

const SHA = 'a'.repeat(64);

describe('parseToolsRecord', () => {
  it('accepts a full record and drops unknown fields', () => {
    const rec = parseToolsRecord(
      JSON.stringify({
        criu: {
          version: '4.2.1',
          source: 'debian-testing',
          binary: '/x/criu',
          packageVersion: '4.2.1-1',
          provisionedAt: 't',
          extra: 1,
        },
        shim: { sourceSha256: SHA },
        memload: { sourceSha256: SHA },
        counterd: { sourceSha256: SHA },
        other: true,
      }),
    );
    assert.deepEqual(rec, {
      criu: {
        version: '4.2.1',
        source: 'debian-testing',
        binary: '/x/criu',
        packageVersion: '4.2.1-1',
        provisionedAt: 't',
      },
      shim: { sourceSha256: SHA },
      memload: { sourceSha256: SHA },
      counterd: { sourceSha256: SHA },
    });
  });
  it('accepts partial records', () => {
    assert.deepEqual(parseToolsRecord('{}'), {});
  });
  it('rejects malformed content', () => {
    assert.throws(() => parseToolsRecord('nope'), { code: 'GODWIT_INVALID_STATE' });
    assert.throws(() => parseToolsRecord('[]'), { code: 'GODWIT_INVALID_STATE' });
    assert.throws(
      () =>
        parseToolsRecord(
          JSON.stringify({ criu: { version: '4.2', source: 'ppa', binary: '/c', provisionedAt: 't' } }),
        ),
      /criu\.source/,
    );
    assert.throws(
      () => parseToolsRecord(JSON.stringify({ shim: { sourceSha256: 'xyz' } })),
      /shim\.sourceSha256/,
    );
  });
});

describe('tools directory', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-tools-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('lays out paths under the tools dir', () => {
    const p = toolPaths('/t');
    assert.equal(p.criu, '/t/bin/criu');
    assert.equal(p.criuRoot, '/t/criu-root');
    assert.equal(p.shim, '/t/bin/godwit-shim');
    assert.equal(p.memload, '/t/bin/godwit-memload');
    assert.equal(p.counterd, '/t/bin/godwit-counterd');
    assert.equal(p.wptrack, '/t/bin/godwit-wptrack');
    assert.equal(p.criuFront, '/t/bin/godwit-criu');
    assert.equal(p.record, '/t/tools.json');
  });

  it('defaults to $GODWIT_TOOLS_DIR, else /var/lib/godwit/tools', () => {
    const saved = process.env['GODWIT_TOOLS_DIR'];
    try {
      delete process.env['GODWIT_TOOLS_DIR'];
      assert.equal(defaultToolsDir(), '/var/lib/godwit/tools');
      process.env['GODWIT_TOOLS_DIR'] = '/elsewhere';
      assert.equal(defaultToolsDir(), '/elsewhere');
    } finally {
      if (saved === undefined) delete process.env['GODWIT_TOOLS_DIR'];
      else process.env['GODWIT_TOOLS_DIR'] = saved;
    }
  });

  it('merges sections into tools.json', async () => {
    assert.deepEqual(await readToolsRecord(dir), {});
    await updateToolsRecord(dir, { shim: { sourceSha256: SHA } });
    await updateToolsRecord(dir, { memload: { sourceSha256: SHA } });
    assert.deepEqual(await readToolsRecord(dir), {
      shim: { sourceSha256: SHA },
      memload: { sourceSha256: SHA },
    });
  });

  it('loadTools names everything missing', async () => {
    await assert.rejects(loadTools(dir), (err: Error & { code?: string; hint?: string }) => {
      assert.equal(err.code, 'GODWIT_TOOL_MISSING');
      assert.equal(err.hint, 'run `godwit setup`');
      assert.match(err.message, /criu/);
      assert.match(err.message, /godwit-shim/);
      return true;
    });
  });

  it('loadTools accepts a complete directory and refuses an old criu', async () => {
    const p = toolPaths(dir);
    await mkdir(p.binDir, { recursive: true });
    const realCriu = join(dir, 'real-criu');
    for (const f of [p.criu, p.shim, p.memload, p.counterd, p.wptrack, p.criuFront, realCriu]) {
      await writeFile(f, '#!/bin/sh\n');
      await chmod(f, 0o755);
    }
    await updateToolsRecord(dir, {
      criu: { version: '4.2.1', source: 'system', binary: realCriu, provisionedAt: new Date().toISOString() },
      counterd: { sourceSha256: SHA },
    });
    const runc = await which('runc');
    if (runc === undefined) {
      await assert.rejects(loadTools(dir), /runc/);
      return;
    }
    const tools = await loadTools(dir);
    assert.equal(tools.criu, p.criu);
    assert.equal(tools.criuVersion, '4.2.1');
    assert.equal(tools.runc, runc);
    await updateToolsRecord(dir, {
      criu: { version: '4.1.1', source: 'system', binary: realCriu, provisionedAt: new Date().toISOString() },
    });
    await assert.rejects(loadTools(dir), { code: 'GODWIT_TOOL_TOO_OLD' });
  });
});

describe('project root', () => {
  it('finds the godwit package from inside the tree, and its native/ dir', () => {
    const root = findProjectRoot(dirname(fileURLToPath(import.meta.url)));
    assert.ok(root !== undefined);
    assert.equal(nativeDir(), join(root, 'native'));
  });
  it('returns undefined outside any godwit package', () => {
    assert.equal(findProjectRoot('/'), undefined);
  });
});
