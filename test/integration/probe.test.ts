/**
 * `godwit probe` against godwit-counterd in a busybox container while the container is checkpointed (with
 * its established TCP connections), left checkpointed for a moment, and restored under a new name into the
 * same network namespace. The namespace is made here (loopback only); the probe runs inside it via
 * `ip netns exec`, so no traffic leaves it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isGodwitError } from '../../src/core/errors.js';
import type { ProbeReport } from '../../src/probe/index.js';
import type { RuncRuntime } from '../../src/runtime/runc-runtime.js';
import { openLocalRuntime } from '../../src/runtime/local-runtime.js';
import { StateDir } from '../../src/runtime/state-dir.js';
import { runChecked, runCommand, type CommandResult } from '../../src/system/exec.js';
import { defaultToolsDir, loadTools } from '../../src/system/tools.js';
import { missingRequirement, removeAll } from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('probe across a checkpoint and restore with established TCP connections', { skip }, () => {
  let runtime: RuncRuntime;
  let stateDir: string;
  let scratch: string;
  /** The probe child; awaited in `after` too, so it has exited (bounded by its duration) before cleanup. */
  let probe: Promise<CommandResult> | undefined;
  const netns = `godwit-probe-${process.pid}`;
  const nsPath = `/run/netns/${netns}`;

  before(async () => {
    const tools = await loadTools(defaultToolsDir());
    stateDir = await mkdtemp(join(tmpdir(), 'godwit-probe-'));
    scratch = await mkdtemp(join(tmpdir(), 'godwit-probe-cp-'));
    const state = await StateDir.open(stateDir);
    runtime = openLocalRuntime(state, tools);
    await runChecked('ip', ['netns', 'add', netns]);
    await runChecked('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  });
  after(async () => {
    await probe?.catch(() => undefined);
    if (runtime) await removeAll(runtime);
    await runCommand('ip', ['netns', 'delete', netns]);
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('sees a gap of about the checkpoint and restore, the counter goes on, and the connection survives', async (t) => {
    await runtime.run({
      name: 'counterd',
      image: 'busybox',
      args: ['/usr/local/bin/godwit-counterd', '--port', '8080'],
      env: {},
      netnsPath: nsPath,
    });
    const deadline = Date.now() + 10_000;
    while (!(await runtime.logs('counterd')).includes('listening 8080')) {
      if (Date.now() > deadline) assert.fail(`counterd did not start: ${await runtime.logs('counterd')}`);
      await sleep(20);
    }

    // The probe runs in the namespace; it is bounded by its duration, the command by its own timeout.
    probe = runCommand(
      'ip',
      [
        'netns',
        'exec',
        netns,
        process.execPath,
        resolve('bin/godwit.js'),
        'probe',
        '127.0.0.1:8080',
        '--duration',
        '6s',
        '--interval',
        '5ms',
        '--json',
      ],
      { timeoutMs: 40_000 },
    );
    probe.catch(() => undefined); // awaited below; this only keeps an early failure from being unhandled
    // Let the probe start and run steadily for about 2 s.
    await sleep(2500);

    const dir = join(scratch, 'cp');
    // The fresh series keeps connections arriving while CRIU freezes the container, so the listening
    // socket always has some in its accept queue; the runtime's default skipInFlight lets CRIU drop them
    // (without it CRIU refuses: "In-flight connection (l)").
    const cpStart = Date.now();
    const cp = await runtime.checkpoint('counterd', { dir, tcpEstablished: true }).catch(explain);
    const cpEnd = Date.now();
    await sleep(300);
    const rsStart = Date.now();
    const rs = await runtime.restore({ dir, name: 'counterd-2', netnsPath: nsPath }).catch(explain);
    const rsEnd = Date.now();

    const res = await probe;
    probe = undefined;
    assert.ok(res.stdout.startsWith('{'), `probe printed no report (exit ${res.code}): ${res.stderr}`);
    const report = JSON.parse(res.stdout) as ProbeReport;
    const started = Date.parse(report.startedAt);
    const window = { fromMs: cpStart - started, toMs: rsEnd - started };
    const summary = {
      checkpointMs: Math.round(cp.durationMs),
      checkpointedMs: rsStart - cpEnd,
      restoreMs: Math.round(rs.durationMs),
      outageWindowMs: window,
      fresh: pick(report.fresh),
      longLived: {
        ...pick(report.longLived),
        survived: report.longLived.survived,
        reconnects: report.longLived.reconnects,
        lateReplies: report.longLived.lateReplies,
        breaks: report.longLived.breaks,
      },
    };
    t.diagnostic(`probe across checkpoint/restore: ${JSON.stringify(summary)}`);

    const at = (wall: number): number => wall - started;
    for (const [name, s] of [
      ['fresh', report.fresh],
      ['long-lived', report.longLived],
    ] as const) {
      const gap = `${name}: gap of ${s.maxGapMs} ms from ${s.gapStartMs} to ${s.gapEndMs}`;
      assert.ok(s.ok > 200, `${name}: ${s.ok} ok`);
      assert.equal(s.counterResets, 0, `${name}: the counter went on from where it was`);
      // The longest gap is the outage: it begins while the checkpoint runs (when CRIU freezes the container and
      // locks the namespace with iptables) and ends after the restore has begun (the restored process answers
      // before runc returns). It may end later: packets dropped while locked come back on TCP's retransmission
      // backoff (200, 400, 800 ms), and a fresh request stuck in the lock waits for its 1 s timeout.
      assert.ok(
        s.gapStartMs >= at(cpStart) - 50 && s.gapStartMs <= at(cpEnd),
        `${gap}; checkpoint ${window.fromMs}–${at(cpEnd)}`,
      );
      assert.ok(
        s.gapEndMs >= at(rsStart) && s.gapEndMs <= at(rsEnd) + 2000,
        `${gap}; restore ${at(rsStart)}–${window.toMs}`,
      );
      assert.ok(
        s.maxGapMs >= rsStart - cpEnd,
        `${gap}; it covers the ${rsStart - cpEnd} ms spent checkpointed`,
      );
    }
    assert.ok((report.fresh.counterLast ?? 0) > (report.fresh.counterFirst ?? 0));
    assert.equal(
      report.longLived.survived,
      true,
      `long-lived connection: ${JSON.stringify(report.longLived.breaks)}`,
    );
    assert.equal(res.code, 0, res.stderr);
  });
});

/** Rethrows with the quoted CRIU log lines in the message, so the test report shows them. */
function explain(err: unknown): never {
  if (isGodwitError(err)) {
    throw new Error([err.message, ...err.details.map((d) => `  | ${d}`), err.hint ?? ''].join('\n'), {
      cause: err,
    });
  }
  throw err;
}

function pick(s: ProbeReport['fresh']): Record<string, unknown> {
  return {
    requests: s.requests,
    ok: s.ok,
    errors: s.errors,
    maxGapMs: s.maxGapMs,
    gapStartMs: s.gapStartMs,
    gapEndMs: s.gapEndMs,
    latencyMs: s.latencyMs,
    counterFirst: s.counterFirst,
    counterLast: s.counterLast,
    counterResets: s.counterResets,
    firstErrors: s.firstErrors.slice(0, 3),
  };
}
