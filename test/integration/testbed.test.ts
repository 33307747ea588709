/**
 * The testbed on the real kernel: shaped links measured (RTT and throughput per profile), a crash
 * cleaned up by `testbedDown`, and the service network. Needs root, iproute2, tc, nsenter, gcc
 * and busybox; under CI=true a missing requirement fails instead of skipping. Every testbed is
 * named gwt<pid><letter> and lives in temp directories; `after` removes them even on failure.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { AlreadyExistsError, ErrorCode } from '../../src/core/errors.js';
import type { LinkSpec } from '../../src/core/testbed.js';
import { runChecked, which } from '../../src/system/exec.js';
import { projectRoot } from '../../src/system/tools.js';
import {
  LINK_PROFILES,
  loadServiceNetwork,
  macForIp,
  readTestbed,
  testbedDown,
  testbedStatus,
  testbedUp,
  type TestbedRecord,
} from '../../src/testbed/index.js';
import {
  isAlive,
  linkNames,
  listNetns,
  mountsUnder,
  netnsId,
  processesInNetns,
  runInNetns,
} from '../../src/testbed/system.js';
import { writeTestbed } from '../../src/testbed/testbed-file.js';

async function testbedRequirement(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'testbed tests need root';
  for (const tool of ['ip', 'tc', 'nsenter', 'gcc']) {
    if ((await which(tool)) === undefined) return `${tool} is missing; run godwit setup`;
  }
  if (!existsSync('/bin/busybox')) return '/bin/busybox is missing; run godwit setup';
  return undefined;
}

const skip = await testbedRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`testbed tests cannot run in CI: ${skip}`);

let scratch = '';
const names = new Set<string>();

/** A fresh testbed name for this process; `after` removes every one handed out. */
function nameFor(suffix: string): string {
  const name = `gwt${process.pid}${suffix}`;
  names.add(name);
  return name;
}

function tbDir(): string {
  return join(scratch, 'tb');
}

async function up(
  name: string,
  link: LinkSpec,
  extra: { hosts?: number; client?: boolean } = {},
): Promise<TestbedRecord> {
  return testbedUp({
    name,
    hosts: extra.hosts ?? 2,
    link,
    client: extra.client ?? false,
    startAgents: false,
    godwitBin: join(projectRoot(), 'bin', 'godwit.js'),
    baseStateDir: join(scratch, 'state', name),
    dir: tbDir(),
  });
}

before(async () => {
  if (skip) return;
  scratch = await mkdtemp(join(tmpdir(), 'godwit-testbed-'));
  process.env['GODWIT_TESTBED_DIR'] = tbDir();
  // Testbeds of earlier runs that were killed before their `after` could run.
  const stale = new Set<string>();
  for (const ns of await listNetns()) {
    const m = /^(gwt(\d+)[a-z])-/.exec(ns);
    if (m && Number(m[2]) !== process.pid && !(await isAlive(Number(m[2])))) stale.add(m[1]!);
  }
  for (const name of stale) await testbedDown({ name, dir: tbDir() });
});

after(async () => {
  if (skip) return;
  for (const name of names) await testbedDown({ name, dir: tbDir() }).catch(() => undefined);
  await rm(scratch, { recursive: true, force: true });
});

/** Round-trip times (ms) of `count` pings from `fromNs` to `ip`. */
async function pingTimes(fromNs: string, ip: string, count: number): Promise<number[]> {
  const res = await runInNetns(
    fromNs,
    'busybox',
    ['ping', '-c', String(count), '-i', '0.2', '-W', '5', ip],
    30_000,
  );
  return [...res.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * A bounded TCP transfer: `recv PORT SECS` accepts one connection and prints the receive rate
 * (Mbit/s of payload) over the last two thirds of the transfer, after slow start;
 * `send HOST PORT SECS` connects (retrying until the receiver listens) and writes for SECS.
 */
const TRANSFER = String.raw`
const net = require('node:net');
const [mode, a, b, c] = process.argv.slice(1);
if (mode === 'recv') {
  const secs = Number(b);
  setTimeout(() => { console.log(JSON.stringify({ error: 'timeout' })); process.exit(1); }, (secs + 15) * 1000).unref();
  const server = net.createServer((s) => {
    server.close();
    const samples = [];
    let bytes = 0, t0;
    s.on('data', (d) => {
      const t = performance.now();
      if (t0 === undefined) t0 = t;
      bytes += d.length;
      samples.push([t - t0, bytes]);
    });
    s.on('end', () => {
      const last = samples[samples.length - 1];
      const from = samples.find((x) => x[0] >= last[0] / 3);
      const mbit = ((last[1] - from[1]) * 8) / ((last[0] - from[0]) / 1000) / 1e6;
      console.log(JSON.stringify({ bytes, ms: last[0], mbit }));
      s.end();
    });
  });
  server.listen(Number(a));
} else {
  const [host, port, secs] = [a, Number(b), Number(c)];
  const deadline = performance.now() + 5000;
  const attempt = () => {
    const s = net.connect(port, host);
    s.once('error', () => { if (performance.now() > deadline) process.exit(2); setTimeout(attempt, 50); });
    s.once('connect', () => {
      const buf = Buffer.alloc(1 << 20, 7);
      const end = performance.now() + secs * 1000;
      const pump = () => {
        while (performance.now() < end) if (!s.write(buf)) return void s.once('drain', pump);
        s.end();
      };
      pump();
      s.on('close', () => process.exit(0));
    });
  };
  attempt();
}`;

/** Payload throughput (Mbit/s) of a `secs`-second TCP transfer from one namespace to another. */
async function throughput(fromNs: string, toNs: string, toIp: string, secs: number): Promise<number> {
  const port = String(20_000 + (process.pid % 20_000));
  const node = process.execPath;
  const [recv, send] = await Promise.all([
    runInNetns(toNs, node, ['-e', TRANSFER, 'recv', port, String(secs)], (secs + 20) * 1000),
    runInNetns(fromNs, node, ['-e', TRANSFER, 'send', toIp, port, String(secs)], (secs + 20) * 1000),
  ]);
  assert.equal(send.code, 0, `sender failed: ${send.stderr}`);
  assert.equal(recv.code, 0, `receiver failed: ${recv.stdout} ${recv.stderr}`);
  const result = JSON.parse(recv.stdout.trim()) as { mbit: number };
  return result.mbit;
}

describe('testbed links', { skip }, () => {
  const cases: { profile: string; secs: number }[] = [
    { profile: 'lan', secs: 2 },
    { profile: 'edge', secs: 2.5 },
    { profile: '4g', secs: 3 },
  ];
  for (const { profile, secs } of cases) {
    it(`shapes h1<->h2 like the ${profile} profile (RTT and throughput within 10 %)`, async (t: TestContext) => {
      const link = LINK_PROFILES[profile]!;
      const name = nameFor(profile === '4g' ? 'g' : profile[0]!);
      try {
        const tb = await up(name, link);
        const [h1, h2] = tb.hosts;
        const rtts = await pingTimes(h1!.netns, h2!.address, 11);
        assert.ok(rtts.length >= 9, `got ${rtts.length} ping replies`);
        const rtt = median(rtts.slice(1));
        const mbit = await throughput(h1!.netns, h2!.netns, h2!.address, secs);
        t.diagnostic(
          `${profile}: RTT median ${rtt.toFixed(3)} ms (expected ${2 * link.delayMs}), ${mbit.toFixed(1)} Mbit/s (link ${link.rateMbit})`,
        );

        const wantRtt = 2 * link.delayMs;
        const rttTolerance = Math.max(0.1 * wantRtt, 0.3);
        assert.ok(
          Math.abs(rtt - wantRtt) <= rttTolerance,
          `RTT ${rtt.toFixed(3)} ms, expected ${wantRtt} ± ${rttTolerance.toFixed(2)} ms (samples ${rtts.join(', ')})`,
        );
        assert.ok(
          Math.abs(mbit - link.rateMbit) <= 0.1 * link.rateMbit,
          `throughput ${mbit.toFixed(1)} Mbit/s, expected ${link.rateMbit} ± 10 %`,
        );
      } finally {
        await testbedDown({ name, dir: tbDir() });
      }
    });
  }

  it('applies a per-pair override in both directions', async () => {
    const name = nameFor('p');
    try {
      const tb = await testbedUp({
        name,
        hosts: 3,
        link: LINK_PROFILES['lan']!,
        pairLinks: { 'h3-h1': LINK_PROFILES['edge']! },
        client: false,
        startAgents: false,
        godwitBin: join(projectRoot(), 'bin', 'godwit.js'),
        baseStateDir: join(scratch, 'state', name),
        dir: tbDir(),
      });
      assert.deepEqual(Object.keys(tb.pairLinks), ['h1-h3']);
      const [h1, h2, h3] = tb.hosts;
      const viaOverride = median(await pingTimes(h3!.netns, h1!.address, 5));
      const viaDefault = median(await pingTimes(h3!.netns, h2!.address, 5));
      assert.ok(Math.abs(viaOverride - 20) <= 2, `h3->h1 RTT ${viaOverride} ms, expected 20`);
      assert.ok(viaDefault < 2, `h3->h2 RTT ${viaDefault} ms, expected about 1`);
    } finally {
      await testbedDown({ name, dir: tbDir() });
    }
  });
});

/** Everything that could be left of testbed `name`, as a list of findings (empty when clean). */
async function remains(
  name: string,
  tb: TestbedRecord,
  nsIds: Set<string>,
  ourPorts: string[],
): Promise<string[]> {
  const found: string[] = [];
  for (const n of await listNetns()) if (n.startsWith(`${name}-`)) found.push(`netns ${n}`);
  for (const l of await linkNames()) if (ourPorts.includes(l)) found.push(`link ${l} in the root namespace`);
  for (const pid of await processesInNetns(nsIds)) found.push(`process ${pid}`);
  for (const m of await mountsUnder([tb.baseStateDir, tb.runDir])) found.push(`mount ${m}`);
  for (const d of [tb.baseStateDir, tb.runDir]) if (existsSync(d)) found.push(`dir ${d}`);
  if ((await readTestbed(tbDir()).catch(() => undefined))?.name === name) found.push('testbed.json');
  return found;
}

/** Starts `cmd` inside `netns` the way a careless agent would (ip netns exec), owned by this test. */
function startIn(netns: string, cmd: string[]): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', netns, ...cmd], { stdio: 'ignore', detached: true });
  child.unref();
  return child;
}

async function waitAlive(pid: number | undefined): Promise<number> {
  assert.ok(pid !== undefined);
  for (let i = 0; i < 100 && !(await isAlive(pid)); i++) await new Promise((r) => setTimeout(r, 20));
  // ip netns exec execs the command: wait until it is in the namespace.
  for (let i = 0; i < 100; i++) {
    const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
    if (comm.trim() === 'sleep') break;
    await new Promise((r) => setTimeout(r, 20));
  }
  return pid;
}

describe('testbed down', { skip }, () => {
  it('removes a testbed with live "agents", a container namespace and a mount, twice', async () => {
    const name = nameFor('d');
    const rootLinksBefore = new Set(await linkNames());
    const tb = await up(name, LINK_PROFILES['edge']!, { client: true });
    const children: ChildProcess[] = [];
    try {
      for (const h of tb.hosts) {
        const child = startIn(h.netns, ['sleep', '1000']);
        children.push(child);
        h.agentPid = await waitAlive(child.pid);
      }
      await writeTestbed(tb, tbDir());
      const sn = await loadServiceNetwork(join(tbDir(), 'testbed.json'));
      const id = await sn.allocate();
      const nsPath = await sn.attach('ctr1', id);
      children.push(startIn(sn.netnsName('ctr1'), ['sleep', '1000']));
      await waitAlive(children.at(-1)!.pid);
      const mnt = join(tb.hosts[0]!.stateDir, 'containers', 'ctr1', 'rootfs');
      await runChecked('mkdir', ['-p', mnt]);
      await runChecked('mount', ['-t', 'tmpfs', 'godwit-test', mnt]);

      const nsIds = new Set<string>();
      for (const n of await listNetns()) {
        const nid = n.startsWith(`${name}-`) ? await netnsId(n) : undefined;
        if (nid) nsIds.add(nid);
      }
      assert.equal(nsIds.size, 5, 'switch, two hosts, client, container');
      assert.ok(existsSync(nsPath));
      const ourPorts = [
        'h1',
        'h2',
        'client',
        'br-svc',
        sn.info.bridge,
        ...(await linkNames(tb.switchNetns)),
      ].filter((l) => l !== 'lo' && !rootLinksBefore.has(l));

      const report = await testbedDown({ name, dir: tbDir() });
      assert.deepEqual(report.leftovers, []);
      assert.ok(report.recorded);
      for (const c of children) assert.ok(report.killedPids.includes(c.pid!), `killed ${c.pid}`);
      assert.ok(report.mounts.includes(mnt));
      assert.deepEqual(await remains(name, tb, nsIds, ourPorts), []);
      for (const c of children) assert.equal(await isAlive(c.pid!), false);

      const again = await testbedDown({ name, dir: tbDir() });
      assert.deepEqual(again.leftovers, []);
      assert.deepEqual(again.namespaces, []);
      assert.deepEqual(again.killedPids, []);
    } finally {
      for (const c of children) c.kill('SIGKILL');
      await testbedDown({ name, dir: tbDir() });
    }
  });

  it('finds everything from the name alone when testbed.json is gone and the switch was killed', async () => {
    const name = nameFor('x');
    const tb = await up(name, LINK_PROFILES['lan']!, { client: true });
    const children: ChildProcess[] = [];
    try {
      for (const h of tb.hosts) {
        const child = startIn(h.netns, ['sleep', '1000']);
        children.push(child);
        await waitAlive(child.pid);
      }
      process.kill(tb.linkd!.pid, 'SIGKILL');
      const nsIds = new Set<string>();
      for (const n of [tb.switchNetns, ...tb.hosts.map((h) => h.netns), tb.client!.netns]) {
        nsIds.add((await netnsId(n))!);
      }
      await rm(join(tbDir(), 'testbed.json'));
      // A stale file of another testbed must not stop it either.
      await writeFile(join(tbDir(), 'testbed.json'), '{"version":1,"name":"gwtother"}');

      const report = await testbedDown({ name, dir: tbDir() });
      assert.deepEqual(report.leftovers, []);
      assert.equal(report.recorded, false);
      assert.equal(report.namespaces.length, 4);
      assert.deepEqual(await remains(name, tb, nsIds, []), []);
      assert.ok(existsSync(join(tbDir(), 'testbed.json')), "another testbed's file is left alone");
      await rm(join(tbDir(), 'testbed.json'));
    } finally {
      for (const c of children) c.kill('SIGKILL');
      await testbedDown({ name, dir: tbDir() });
    }
  });

  it('refuses to come up over an existing testbed, and cleans up a failed start', async () => {
    const name = nameFor('r');
    try {
      await up(name, LINK_PROFILES['lan']!, { hosts: 1 });
      await assert.rejects(
        up(name, LINK_PROFILES['lan']!, { hosts: 1 }),
        (err: unknown) => err instanceof AlreadyExistsError && err.code === ErrorCode.TestbedExists,
      );
      const status = await testbedStatus({ dir: tbDir() });
      assert.equal(status.testbed?.name, name);
      assert.equal(status.hosts[0]?.netnsPresent, true);
      await testbedDown({ name, dir: tbDir() });

      // An agent that cannot start (no such entry point) fails `up`, which removes everything.
      await assert.rejects(
        testbedUp({
          name,
          hosts: 1,
          link: LINK_PROFILES['lan']!,
          client: false,
          startAgents: true,
          godwitBin: join(scratch, 'no-such-godwit.js'),
          baseStateDir: join(scratch, 'state', name),
          dir: tbDir(),
        }),
        (err: unknown) => (err as { code?: string }).code === ErrorCode.AgentStartFailed,
      );
      assert.deepEqual(
        (await listNetns()).filter((n) => n.startsWith(`${name}-`)),
        [],
      );
      assert.equal(existsSync(join(scratch, 'state', name)), false);
      assert.equal(await readTestbed(tbDir()), undefined);
    } finally {
      await testbedDown({ name, dir: tbDir() });
    }
  });
});

describe('service network', { skip }, () => {
  let tb: TestbedRecord;
  const name = skip ? '' : nameFor('s');
  before(async () => {
    if (skip) return;
    tb = await up(name, LINK_PROFILES['lan']!, { client: true });
  });
  after(async () => {
    if (skip) return;
    await testbedDown({ name, dir: tbDir() });
  });

  it('attaches containers that the client reaches, and detaches them', async () => {
    const sn = await loadServiceNetwork(join(tbDir(), 'testbed.json'));
    const a = await sn.allocate();
    assert.deepEqual(a, { ip: '10.78.0.10', prefixLength: 24, mac: macForIp('10.78.0.10') });
    const pathA = await sn.attach('web-a', a);
    assert.equal(pathA, `/run/netns/${name}-c-web-a`);
    assert.equal(await sn.attach('web-a', a), pathA, 'same key and identity: idempotent');

    // Attach the second from inside a host's namespace, as an agent would.
    const b = await sn.allocate();
    assert.equal(b.ip, '10.78.0.11');
    const script =
      `import('${join(projectRoot(), 'src/testbed/index.ts')}').then(async (m) => {` +
      ` const sn = await m.loadServiceNetwork('${join(tbDir(), 'testbed.json')}');` +
      ` console.log(await sn.attach('web-b', ${JSON.stringify(b)})); })`;
    const inHost = await runInNetns(
      tb.hosts[1]!.netns,
      process.execPath,
      ['--import', 'tsx', '-e', script],
      30_000,
    );
    assert.equal(inHost.code, 0, inHost.stderr);
    assert.equal(inHost.stdout.trim(), `/run/netns/${name}-c-web-b`);

    const client = tb.client!.netns;
    for (const ip of [a.ip, b.ip]) {
      const res = await runInNetns(client, 'busybox', ['ping', '-c', '2', '-i', '0.2', '-W', '3', ip]);
      assert.equal(res.code, 0, `client -> ${ip}: ${res.stdout}`);
    }
    const aToB = await runInNetns(sn.netnsName('web-a'), 'busybox', ['ping', '-c', '1', '-W', '3', b.ip]);
    assert.equal(aToB.code, 0, 'container to container');
    const link = await runChecked('ip', ['-n', sn.netnsName('web-a'), '-o', 'link', 'show', 'eth0']);
    assert.match(link.stdout, new RegExp(`link/ether ${a.mac} `));

    await assert.rejects(
      sn.attach('intruder', a),
      (err: unknown) => err instanceof AlreadyExistsError && err.code === ErrorCode.AddressInUse,
    );
    assert.equal((await listNetns()).includes(sn.netnsName('intruder')), false);

    await sn.detach('web-a');
    await sn.detach('web-a');
    assert.equal((await sn.leases()).has(a.ip), false, 'lease released');
    assert.equal((await listNetns()).includes(sn.netnsName('web-a')), false);
    const gone = await runInNetns(client, 'busybox', ['ping', '-c', '1', '-W', '1', a.ip]);
    assert.notEqual(gone.code, 0, 'a detached address no longer answers');
    assert.equal((await sn.allocate()).ip, a.ip, 'the address is free again');
    assert.deepEqual(await readdir(sn.info.leaseDir), [b.ip]);

    await sn.detach('web-b');
    assert.deepEqual(await readdir(sn.info.leaseDir), []);
  });

  it('the link lock: no reset leaves a locked namespace, disconnect cuts it off, reconnect ends both', async () => {
    const sn = await loadServiceNetwork(join(tbDir(), 'testbed.json'));
    const c = await sn.allocate();
    const client = tb.client!.netns;
    const ping = async (): Promise<number> =>
      (await runInNetns(client, 'busybox', ['ping', '-c', '1', '-W', '1', c.ip])).code;
    // A connection to a port nothing listens on: refused at once (a reset), or timed out (none).
    const probeClosedPort = async (): Promise<string> => {
      const res = await runInNetns(client, 'busybox', ['nc', '-w', '1', c.ip, '9']);
      return /refused/i.test(res.stderr) ? 'refused' : `no answer (${res.stderr.trim()})`;
    };
    try {
      await sn.attach('web-c', c, { lock: 'link' });
      assert.equal((await sn.leases()).get(c.ip), 'web-c', 'leased while locked');
      assert.equal(await ping(), 0, 'on the network while locked');
      assert.match(await probeClosedPort(), /^no answer/, 'locked: no reset');
      const rules = await runChecked('ip', ['netns', 'exec', sn.netnsName('web-c'), 'iptables', '-S']);
      assert.doesNotMatch(rules.stdout, /CRIU/, "not CRIU's lock");
      await sn.reconnect('web-c', c);
      let unlocked = '';
      for (let i = 0; i < 50 && unlocked !== 'refused'; i++) {
        await new Promise((r) => setTimeout(r, 100));
        unlocked = await probeClosedPort();
      }
      assert.equal(unlocked, 'refused', 'unlocked: resets again');
      await sn.disconnect('web-c');
      await sn.disconnect('web-c');
      assert.notEqual(await ping(), 0, 'disconnected: no answer');
      await sn.reconnect('web-c', c);
      assert.equal(await ping(), 0, 'answers again');
    } finally {
      await sn.detach('web-c');
    }
  });
});
