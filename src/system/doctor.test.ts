import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { elfIsStatic, formatDoctor, parseCgroupMounts, type DoctorReport } from './doctor.js';

/** A minimal 64-bit little-endian ELF header followed by program headers of the given types. */
function elf64(types: number[]): Buffer {
  const phoff = 64;
  const phentsize = 56;
  const buf = Buffer.alloc(phoff + phentsize * types.length);
  buf.writeUInt32BE(0x7f454c46, 0);
  buf[4] = 2; // ELFCLASS64
  buf[5] = 1; // little endian
  buf[6] = 1;
  buf.writeBigUInt64LE(BigInt(phoff), 0x20);
  buf.writeUInt16LE(phentsize, 0x36);
  buf.writeUInt16LE(types.length, 0x38);
  types.forEach((t, i) => buf.writeUInt32LE(t, phoff + i * phentsize));
  return buf;
}

/** The same for 32-bit big-endian. */
function elf32be(types: number[]): Buffer {
  const phoff = 52;
  const phentsize = 32;
  const buf = Buffer.alloc(phoff + phentsize * types.length);
  buf.writeUInt32BE(0x7f454c46, 0);
  buf[4] = 1;
  buf[5] = 2;
  buf.writeUInt32BE(phoff, 0x1c);
  buf.writeUInt16BE(phentsize, 0x2a);
  buf.writeUInt16BE(types.length, 0x2c);
  types.forEach((t, i) => buf.writeUInt32BE(t, phoff + i * phentsize));
  return buf;
}

const reader = (b: Buffer) => async (offset: number, length: number) => b.subarray(offset, offset + length);

describe('elfIsStatic', () => {
  it('is true without PT_INTERP', async () => {
    assert.equal(await elfIsStatic(reader(elf64([6, 1, 1, 4]))), true);
    assert.equal(await elfIsStatic(reader(elf32be([1, 1]))), true);
  });
  it('is false with PT_INTERP', async () => {
    assert.equal(await elfIsStatic(reader(elf64([6, 3, 1, 1, 2]))), false);
    assert.equal(await elfIsStatic(reader(elf32be([3, 1]))), false);
  });
  it('is undefined for non-ELF or truncated input', async () => {
    assert.equal(await elfIsStatic(reader(Buffer.from('#!/bin/sh\necho hi\n'))), undefined);
    assert.equal(await elfIsStatic(reader(elf64([1, 3]).subarray(0, 80))), undefined);
  });
});

describe('parseCgroupMounts', () => {
  const mountinfo = [
    '25 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755',
    '26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate',
    '30 25 0:27 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer',
    '31 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct',
    '40 1 8:1 / / rw - ext4 /dev/sda1 rw',
  ].join('\n');
  it('returns cgroup mounts with their options', () => {
    assert.deepEqual(parseCgroupMounts(mountinfo), [
      { mountPoint: '/sys/fs/cgroup/unified', type: 'cgroup2', options: ['rw', 'nsdelegate'] },
      { mountPoint: '/sys/fs/cgroup/freezer', type: 'cgroup', options: ['rw', 'freezer'] },
      { mountPoint: '/sys/fs/cgroup/cpu,cpuacct', type: 'cgroup', options: ['rw', 'cpu', 'cpuacct'] },
    ]);
  });
});

describe('formatDoctor', () => {
  const report: DoctorReport = {
    ok: false,
    checks: [
      { id: 'root', title: 'running as root', status: 'ok', required: true, detail: 'uid 0' },
      {
        id: 'criu',
        title: 'criu >= 4.2',
        status: 'missing',
        required: true,
        detail: 'no criu found',
        fix: 'run `godwit setup`',
      },
      {
        id: 'soft-dirty',
        title: 'soft-dirty page tracking',
        status: 'degraded',
        required: false,
        detail: 'not set',
        fix: 'optional: rebuild the kernel',
      },
    ],
  };
  it('prints one row per check and a fix under each non-ok one', () => {
    const text = formatDoctor(report);
    const lines = text.split('\n');
    assert.match(lines[0] ?? '', /^ok\s+running as root\s+uid 0$/);
    assert.match(lines[1] ?? '', /^missing\s+criu >= 4\.2\s+no criu found$/);
    assert.match(lines[2] ?? '', /^\s+fix: run `godwit setup`$/);
    assert.match(lines[3] ?? '', /^degraded\s+soft-dirty page tracking \(optional\)\s+not set$/);
    assert.match(lines[4] ?? '', /^\s+fix: optional: rebuild the kernel$/);
    assert.match(text, /not ready: 1 required check\(s\) failed: criu$/);
  });
  it('says ready when every required check is ok', () => {
    const text = formatDoctor({ ok: true, checks: report.checks.filter((c) => c.id !== 'criu') });
    assert.match(text, /ready: all required checks pass \(limited: soft-dirty\)$/);
  });
});
