import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { kernelOptionEnabled, kernelVersion, parseKernelConfig } from './kernel.js';

const sample = `#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.18.44 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT="gcc (Debian 12.2.0-14) 12.2.0"
CONFIG_CHECKPOINT_RESTORE=y
CONFIG_HAVE_ARCH_SOFT_DIRTY=y
# CONFIG_MEM_SOFT_DIRTY is not set
CONFIG_USERFAULTFD=y
CONFIG_OVERLAY_FS=m
CONFIG_NR_CPUS=64
CONFIG_QUOTED="a \\"b\\" c"
this line is junk
`;

describe('parseKernelConfig', () => {
  const cfg = parseKernelConfig(sample);
  it('reads built-in, module and numeric options', () => {
    assert.equal(cfg.get('CONFIG_CHECKPOINT_RESTORE'), 'y');
    assert.equal(cfg.get('CONFIG_OVERLAY_FS'), 'm');
    assert.equal(cfg.get('CONFIG_NR_CPUS'), '64');
  });
  it('reads "is not set" as n', () => {
    assert.equal(cfg.get('CONFIG_MEM_SOFT_DIRTY'), 'n');
  });
  it('unquotes strings', () => {
    assert.equal(cfg.get('CONFIG_CC_VERSION_TEXT'), 'gcc (Debian 12.2.0-14) 12.2.0');
    assert.equal(cfg.get('CONFIG_QUOTED'), 'a "b" c');
  });
  it('ignores comments and junk', () => {
    assert.equal(cfg.size, 8);
  });
  it('handles empty input and CRLF', () => {
    assert.equal(parseKernelConfig('').size, 0);
    assert.equal(parseKernelConfig('CONFIG_A=y\r\n').get('CONFIG_A'), 'y');
  });
});

describe('kernelOptionEnabled', () => {
  const cfg = parseKernelConfig(sample);
  it('is true for y and m, false for n, undefined when absent', () => {
    assert.equal(kernelOptionEnabled(cfg, 'CONFIG_USERFAULTFD'), true);
    assert.equal(kernelOptionEnabled(cfg, 'CONFIG_OVERLAY_FS'), true);
    assert.equal(kernelOptionEnabled(cfg, 'CONFIG_MEM_SOFT_DIRTY'), false);
    assert.equal(kernelOptionEnabled(cfg, 'CONFIG_NOPE'), undefined);
  });
});

describe('kernelVersion', () => {
  it('parses major and minor', () => {
    assert.deepEqual(kernelVersion('6.18.44-fc-v669'), [6, 18]);
    assert.deepEqual(kernelVersion('5.2.0'), [5, 2]);
    assert.deepEqual(kernelVersion('weird'), [0, 0]);
  });
});
