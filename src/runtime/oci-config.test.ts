import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildOciConfig, cgroupsPathFor, parseMemorySize } from './oci-config.js';

const spec = { name: 'web', image: 'busybox', args: ['/bin/sh', '-c', 'sleep 1'], env: { FOO: 'bar' } };

describe('buildOciConfig', () => {
  it('writes the process, root and hostname from the spec', () => {
    const c = buildOciConfig(spec, { hostId: 'abc123' });
    assert.equal(c.ociVersion, '1.0.2');
    assert.deepEqual(c.process.args, ['/bin/sh', '-c', 'sleep 1']);
    assert.equal(c.process.terminal, false, 'stdio must be pipes, never a TTY, so CRIU can dump them');
    assert.ok(c.process.env.includes('FOO=bar'));
    assert.ok(c.process.env.some((e) => e.startsWith('PATH=')));
    assert.deepEqual(c.root, { path: 'rootfs', readonly: false });
    assert.equal(c.hostname, 'web');
    assert.equal(c.process.cwd, '/');
  });

  it('lets the spec override default environment variables', () => {
    const c = buildOciConfig({ ...spec, env: { PATH: '/x' } }, { hostId: 'h' });
    assert.deepEqual(
      c.process.env.filter((e) => e.startsWith('PATH=')),
      ['PATH=/x'],
    );
  });

  it('puts the cgroup under the host id so two hosts on one machine never collide', () => {
    const a = buildOciConfig(spec, { hostId: 'aaaa' });
    const b = buildOciConfig(spec, { hostId: 'bbbb' });
    assert.equal(a.linux.cgroupsPath, '/godwit/aaaa/web');
    assert.notEqual(a.linux.cgroupsPath, b.linux.cgroupsPath);
    assert.equal(cgroupsPathFor('h', 'n'), '/godwit/h/n');
  });

  it('creates a new network namespace, or joins the given one by path', () => {
    const fresh = buildOciConfig(spec, { hostId: 'h' });
    assert.deepEqual(
      fresh.linux.namespaces.find((n) => n.type === 'network'),
      { type: 'network' },
    );
    const joined = buildOciConfig({ ...spec, netnsPath: '/run/netns/svc' }, { hostId: 'h' });
    assert.deepEqual(
      joined.linux.namespaces.find((n) => n.type === 'network'),
      { type: 'network', path: '/run/netns/svc' },
    );
    assert.deepEqual(fresh.linux.namespaces.map((n) => n.type).sort(), [
      'ipc',
      'mount',
      'network',
      'pid',
      'uts',
    ]);
  });

  it('sets a memory limit only when asked', () => {
    assert.equal(buildOciConfig(spec, { hostId: 'h' }).linux.resources.memory, undefined);
    const c = buildOciConfig({ ...spec, memoryLimitBytes: 268435456 }, { hostId: 'h' });
    assert.deepEqual(c.linux.resources.memory, { limit: 268435456 });
  });

  it('denies devices by default and allows the standard character devices', () => {
    const d = buildOciConfig(spec, { hostId: 'h' }).linux.resources.devices;
    assert.deepEqual(d[0], { allow: false, access: 'rwm' });
    assert.ok(
      d.some((x) => x.allow && x.major === 1 && x.minor === 3),
      '/dev/null',
    );
    const pts = d.find((x) => x.major === 136);
    assert.ok(pts && !('minor' in pts), 'pty wildcard has no minor');
  });

  it('records godwit annotations and is deterministic', () => {
    const a = buildOciConfig(spec, { hostId: 'h', annotations: { 'org.godwit.x': '1' } });
    assert.equal(a.annotations['org.godwit.name'], 'web');
    assert.equal(a.annotations['org.godwit.x'], '1');
    assert.deepEqual(buildOciConfig(spec, { hostId: 'h' }), buildOciConfig(spec, { hostId: 'h' }));
  });
});

describe('parseMemorySize', () => {
  it('accepts the usual suffixes', () => {
    assert.equal(parseMemorySize('256m'), 256 * 1024 * 1024);
    assert.equal(parseMemorySize('1G'), 1024 ** 3);
    assert.equal(parseMemorySize('512MiB'), 512 * 1024 * 1024);
    assert.equal(parseMemorySize('4096'), 4096);
    assert.equal(parseMemorySize('1.5k'), 1536);
  });
  it('rejects garbage and zero', () => {
    assert.equal(parseMemorySize('lots'), undefined);
    assert.equal(parseMemorySize('0'), undefined);
    assert.equal(parseMemorySize('-5m'), undefined);
  });
});
