import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Spawner } from './spawner.js';

describe('Spawner', () => {
  const s = Spawner.start();
  after(() => s.close());

  it('runs a command and captures its output and exit code', async () => {
    const r = await s.run({ file: '/bin/sh', args: ['-c', 'echo out; echo err >&2; exit 3'] });
    assert.equal(r.code, 3);
    assert.equal(r.stdout, 'out\n');
    assert.equal(r.stderr, 'err\n');
    assert.equal(r.timedOut, false);
  });

  it('feeds stdin, and passes cwd and env', async () => {
    const r = await s.run({
      file: '/bin/sh',
      args: ['-c', 'cat; pwd; echo "$GW_X"'],
      input: 'in\n',
      cwd: '/tmp',
      env: { PATH: '/usr/bin:/bin', GW_X: 'x1' },
    });
    assert.equal(r.stdout, 'in\n/tmp\nx1\n');
  });

  it('kills a command that outlives its timeout', async () => {
    const t0 = Date.now();
    const r = await s.run({ file: '/bin/sleep', args: ['5'], timeoutMs: 200 });
    assert.equal(r.timedOut, true);
    assert.equal(r.signal, 'SIGKILL');
    assert.ok(Date.now() - t0 < 3000);
  });

  it('reports a missing executable as a spawn error', async () => {
    const r = await s.run({ file: '/nonexistent/gw-nope', args: [] });
    assert.equal(r.spawnError?.code, 'ENOENT');
  });

  it('runs many commands concurrently, each answer to its own request', async () => {
    const rs = await Promise.all(
      Array.from({ length: 20 }, (_, i) => s.run({ file: '/bin/echo', args: [String(i)] })),
    );
    rs.forEach((r, i) => assert.equal(r.stdout, `${i}\n`));
  });
});
