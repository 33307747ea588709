/**
 * The CLI as a user runs it: the built `bin/godwit.js` against a temporary state directory.
 * Requires `npm run build` (the test command builds first).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCommand } from '../../src/system/exec.js';
import { missingRequirement } from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);
const BIN = resolve('bin/godwit.js');

describe('godwit CLI', { skip }, () => {
  let stateDir: string;
  let scratch: string;
  const godwit = (...args: string[]) =>
    runCommand(process.execPath, [BIN, '--state-dir', stateDir, ...args], { timeoutMs: 120_000 });

  before(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'godwit-cli-'));
    scratch = await mkdtemp(join(tmpdir(), 'godwit-cli-cp-'));
  });
  after(async () => {
    await godwit('rm', '-f', 'web', 'web2').catch(() => undefined);
    await rm(stateDir, { recursive: true, force: true });
    await rm(scratch, { recursive: true, force: true });
  });

  it('runs, lists, execs, checkpoints, restores and removes', async () => {
    let r = await godwit(
      'run',
      'web',
      '--env',
      'GREETING=hi',
      '--memory',
      '64m',
      '--',
      '/bin/sh',
      '-c',
      'i=0; while true; do i=$((i+1)); echo "counter $i"; sleep 0.1; done',
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^web running/);

    r = await godwit('ps', '--json');
    assert.equal(r.code, 0, r.stderr);
    const list = JSON.parse(r.stdout) as { name: string; status: string }[];
    assert.deepEqual(
      list.map((c) => [c.name, c.status]),
      [['web', 'running']],
    );

    r = await godwit('exec', 'web', '--', 'sh', '-c', 'echo $GREETING; exit 3');
    assert.equal(r.code, 3, 'exec exits with the command exit code');
    assert.equal(r.stdout.trim(), 'hi');

    const dir = join(scratch, 'web');
    r = await godwit('checkpoint', 'web', '--to', dir, '--leave-running', '--json');
    assert.equal(r.code, 0, r.stderr);
    const cp = JSON.parse(r.stdout) as { durationMs: number; imageBytes: number; leftRunning: boolean };
    assert.equal(cp.leftRunning, true);
    assert.ok(cp.imageBytes > 0);

    r = await godwit('restore', dir, '--name', 'web2', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.ok((JSON.parse(r.stdout) as { pid: number }).pid > 0);

    r = await godwit('rm', 'web');
    assert.equal(r.code, 5, 'removing a running container without -f is refused');
    assert.match(r.stderr, /^godwit: web is running\n {2}hint: .*rm -f/);

    r = await godwit('rm', '-f', 'web', 'web2');
    assert.equal(r.code, 0, r.stderr);
    r = await godwit('ps');
    assert.equal(r.stdout.trim(), 'no containers');
  });

  it('prints one-line errors with stable exit codes and no stack trace', async () => {
    let r = await godwit('checkpoint', 'ghost', '--to', join(scratch, 'g'));
    assert.equal(r.code, 3);
    assert.match(r.stderr, /^godwit: no container named ghost\n/);
    assert.doesNotMatch(r.stderr, /at .*\.js:\d+/);

    r = await godwit('restore', join(scratch, 'missing'), '--name', 'x');
    assert.equal(r.code, 3);
    assert.match(r.stderr, /^godwit: no checkpoint directory at /);

    r = await godwit('run', 'Bad Name', '--', 'true');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^godwit: invalid container name/);

    r = await godwit('run', 'x', '--memory', 'lots', '--', 'true');
    assert.equal(r.code, 2);

    r = await godwit('frobnicate');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^godwit: unknown command/);

    r = await godwit('--debug', 'checkpoint', 'ghost', '--to', join(scratch, 'g'));
    assert.match(r.stderr, /code: GODWIT_CONTAINER_NOT_FOUND/);
  });

  it('has --help for every command', async () => {
    for (const cmd of [
      'run',
      'ps',
      'exec',
      'stop',
      'rm',
      'logs',
      'checkpoint',
      'restore',
      'doctor',
      'setup',
      'demo',
    ]) {
      const r = await godwit(cmd, '--help');
      assert.equal(r.code, 0, `${cmd} --help`);
      assert.match(r.stdout, new RegExp(`Usage: godwit ${cmd}`));
    }
  });

  it('doctor --json is one machine-readable document and exits 0 after setup', async () => {
    const r = await godwit('doctor', '--json');
    const report = JSON.parse(r.stdout) as {
      ok: boolean;
      checks: { id: string; status: string; required: boolean }[];
    };
    const failing = report.checks.filter((c) => c.required && c.status !== 'ok');
    assert.deepEqual(failing, []);
    assert.equal(report.ok, true);
    assert.equal(r.code, 0);
    assert.ok(report.checks.some((c) => c.id.includes('criu')));
  });
});
