import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LINK_LOCK_FILES, createLinkLockGate, linkLockScript } from './link-lock-gate.js';

/** Runs the gate's script as CRIU would for `action`; resolves with its exit code. */
function runScript(script: string, action: string): { done: Promise<number | null>; exited: () => boolean } {
  const child = spawn(script, [], {
    env: { ...process.env, CRTOOLS_SCRIPT_ACTION: action },
    stdio: 'ignore',
  });
  let exited = false;
  const done = new Promise<number | null>((res) =>
    child.on('exit', (code) => {
      exited = true;
      res(code);
    }),
  );
  return { done, exited: () => exited };
}

const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'godwit-gate-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('link lock gate', () => {
  it('holds CRIU at network-lock until the lock holds, then lets it go on', () =>
    withDir(async (dir) => {
      const gate = await createLinkLockGate(dir);
      assert.ok(gate);
      const s = runScript(gate.script, 'network-lock');
      await tick(150);
      assert.equal(s.exited(), false, 'waits while the lock is not in place');
      await gate.open();
      assert.equal(await s.done, 0);
      await gate.close();
      assert.equal(existsSync(join(dir, LINK_LOCK_FILES.fifo)), false);
      // CRIU still runs the script for its later actions: it stays, and lets them pass.
      assert.equal(await runScript(gate.script, 'status-ready').done, 0);
    }));

  it('lets CRIU past an already opened gate, and through every other action at once', () =>
    withDir(async (dir) => {
      const gate = await createLinkLockGate(dir);
      assert.ok(gate);
      assert.equal(await runScript(gate.script, 'pre-dump').done, 0);
      await gate.open();
      await gate.fail(); // ignored: settled once
      assert.equal(await runScript(gate.script, 'network-lock').done, 0);
      assert.equal(await runScript(gate.script, 'post-dump').done, 0);
      await gate.close();
    }));

  it('fails the dump when the lock failed, or when the gate closes unsettled', () =>
    withDir(async (dir) => {
      const failing = await createLinkLockGate(dir);
      assert.ok(failing);
      const s = runScript(failing.script, 'network-lock');
      await failing.fail();
      assert.notEqual(await s.done, 0);
      await failing.close();

      const closing = await createLinkLockGate(dir);
      assert.ok(closing);
      const t = runScript(closing.script, 'network-lock');
      await tick(50);
      await closing.close();
      assert.notEqual(await t.done, 0);
    }));

  it('makes no gate for a path CRIU configuration cannot carry', async () => {
    assert.equal(await createLinkLockGate('/tmp/with space'), undefined);
    assert.match(linkLockScript("/a/b'c"), /'\/a\/b'\\''c'/);
  });
});
