/**
 * Issue 3's end-to-end check: two testbed hosts with agents and a client. The counter
 * service runs on h1, the client probes it, it is checkpointed through h1's agent, its
 * checkpoint copied by a plain file copy, and restored through h2's agent. The client must
 * see the service come back at the same address, its counter continued, and its
 * long-lived TCP connection alive.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, realpath, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AgentClient } from '../../src/agent/client.js';
import { ContainerStatus } from '../../src/core/runtime.js';
import type { TestbedInfo } from '../../src/core/testbed.js';
import { migrateByHand, probeInNetns } from '../../src/bench/manual-migration.js';
import { linkProfile } from '../../src/testbed/profiles.js';
import { testbedDown, testbedUp } from '../../src/testbed/testbed.js';
import { runCommand } from '../../src/system/exec.js';
import { missingRequirement, mountsUnder } from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('migration by hand across the testbed, seen by a client', { skip }, () => {
  const name = `gwm${process.pid % 100000}`;
  let dir: string;
  let tb: TestbedInfo;
  let h1: AgentClient;
  let h2: AgentClient;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-tbm-'));
    tb = await testbedUp({
      name,
      hosts: 2,
      link: linkProfile('lan')!,
      client: true,
      startAgents: true,
      godwitBin: resolve('bin/godwit.js'),
      dir,
      baseStateDir: join(dir, 'hosts'),
    });
    h1 = new AgentClient({ socketPath: tb.hosts[0]!.socket });
    h2 = new AgentClient({ socketPath: tb.hosts[1]!.socket });
  });
  after(async () => {
    h1?.close();
    h2?.close();
    await testbedDown({ name, dir });
    await rm(dir, { recursive: true, force: true });
  });

  it('the service comes back on h2 at the same address with its counter and connection', async () => {
    const info = await h1.run({
      name: 'web',
      image: 'busybox',
      args: ['/usr/local/bin/godwit-counterd', '--port', '8080'],
      env: {},
    });
    const ip = info.network?.ip;
    assert.ok(ip, 'the container got a service address');
    const mac = info.network?.mac;

    const probe = probeInNetns({
      bin: resolve('bin/godwit.js'),
      netns: tb.client!.netns,
      target: `${ip}:8080`,
      durationMs: 5000,
    });
    probe.catch(() => undefined);
    await sleep(1500);
    const m = await migrateByHand({
      name: 'web',
      from: { host: tb.hosts[0]!, runtime: h1 },
      to: { host: tb.hosts[1]!, runtime: h2 },
    });
    const report = await probe;
    const why = JSON.stringify({ migration: m, longLived: report.longLived, fresh: report.fresh });

    const moved = await h2.inspect('web');
    assert.equal(moved.status, ContainerStatus.Running);
    assert.equal(moved.network?.ip, ip, 'same IP on the destination');
    assert.equal(moved.network?.mac, mac, 'same MAC on the destination');
    assert.deepEqual(
      (await h1.list()).map((c) => c.name),
      [],
      'the source no longer has it',
    );

    assert.equal(report.longLived.survived, true, `the long-lived TCP connection survived: ${why}`);
    assert.equal(report.longLived.reconnects, 0, why);
    assert.equal(report.longLived.counterResets, 0, `counter continued on the long-lived connection: ${why}`);
    assert.equal(report.fresh.counterResets, 0, `counter continued for new connections: ${why}`);
    assert.ok(report.fresh.ok > 100 && report.longLived.ok > 100, 'the service answered before and after');
    assert.ok(report.longLived.maxGapMs < m.frozenMs + 2000, `gap ${report.longLived.maxGapMs} ms`);
    // Replies after the migration came from h2: the last counter is beyond the one at the checkpoint.
    assert.ok((report.longLived.counterLast ?? 0) > (report.longLived.counterFirst ?? 0));
    console.log(
      `# by-hand migration on lan: checkpoint ${m.checkpointMs.toFixed(0)} ms, copy ${m.copyMs.toFixed(0)} ms, ` +
        `restore ${m.restoreMs.toFixed(0)} ms; client gap long-lived ${report.longLived.maxGapMs.toFixed(0)} ms, ` +
        `fresh ${report.fresh.maxGapMs.toFixed(0)} ms`,
    );
  });

  it('testbed down after SIGKILL of the agents leaves nothing behind', async () => {
    // A container keeps running on h2 (from the test above, or a new one) while its agent dies.
    if ((await h2.list()).length === 0) {
      await h2.run({ name: 'web', image: 'busybox', args: ['/usr/local/bin/godwit-counterd'], env: {} });
    }
    const pid = (await h2.inspect('web')).pid;
    assert.ok(pid);
    // Each host's containers live in cgroups /godwit/<hostId>/<name> (hostId: sha256 of its state dir).
    const hostIds = await Promise.all(
      tb.hosts.map(async (h) =>
        createHash('sha256')
          .update(await realpath(h.stateDir))
          .digest('hex')
          .slice(0, 12),
      ),
    );
    assert.ok(
      await exists(`/sys/fs/cgroup/memory/godwit/${hostIds[1]}/web`),
      'the container has a cgroup before down',
    );
    for (const h of tb.hosts) if (h.agentPid) process.kill(h.agentPid, 'SIGKILL');
    await sleep(200);

    const report = await testbedDown({ name, dir });
    assert.deepEqual(report.leftovers, []);
    assert.ok(report.killedPids.length > 0 || report.containers.length > 0);

    const netns = await runCommand('ip', ['netns', 'list']);
    assert.doesNotMatch(netns.stdout, new RegExp(`^${name}-`, 'm'), 'no namespace');
    const links = await runCommand('ip', ['-o', 'link', 'show']);
    assert.doesNotMatch(links.stdout, new RegExp(name), 'no interface in the root namespace');
    assert.deepEqual(await mountsUnder(dir), [], 'no mount');
    assert.equal(await pidAlive(pid), false, 'the container process is gone');
    for (const h of tb.hosts) {
      if (h.agentPid) assert.equal(await pidAlive(h.agentPid), false, `agent of ${h.name} is gone`);
      assert.equal(await exists(h.stateDir), false, `state dir of ${h.name} removed`);
    }
    for (const ctl of ['memory', 'pids', 'freezer', 'cpu', 'devices']) {
      for (const id of hostIds) {
        assert.equal(
          await exists(`/sys/fs/cgroup/${ctl}/godwit/${id}`),
          false,
          `no ${ctl} cgroup of host ${id}`,
        );
      }
    }
    assert.deepEqual((await testbedDown({ name, dir })).leftovers, [], 'down is idempotent');
  });
});

async function pidAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
