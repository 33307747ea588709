/**
 * `npm run bench:cold -- [--links lan,edge] [--mib 256] [--reps 1] [--out FILE]`
 *
 * On a fresh 2-host testbed per link, with a container holding MIB MiB of written memory
 * (30 % zero, 30 % repeated, 40 % random pages), measures in the same run:
 *  - plain TCP copy of the checkpoint's bytes h1 → h2 (the link's practical ceiling);
 *  - godwit's cold migration h1 → h2: downtime, total, transfer rate on the wire vs the link,
 *    bytes logical / on the wire, and the agents' CPU seconds per GB of state;
 *  - the Podman-style path: runc checkpoint to a directory, tar + gzip, plain TCP copy,
 *    untar, runc restore (through the same agents, same container).
 * Benchmarks measure and write numbers; they assert nothing.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { AgentClient } from '../agent/client.js';
import { migrateThrough } from '../migration/client.js';
import { formatBytes, formatMs, table } from '../cli/format.js';
import type { LinkSpec, TestbedHost } from '../core/testbed.js';
import { runChecked } from '../system/exec.js';
import { projectRoot } from '../system/tools.js';
import { parseLinkSpec } from '../testbed/profiles.js';
import { testbedDown, testbedUp } from '../testbed/testbed.js';

const { values } = parseArgs({
  options: {
    links: { type: 'string', default: 'lan,edge' },
    mib: { type: 'string', default: '256' },
    out: { type: 'string' },
  },
});
const mib = Number(values.mib);
const links = (values.links ?? 'lan').split(',').map((l) => parseLinkSpec(l));
const bin = resolve(projectRoot(), 'bin/godwit.js');
const log = (l: string): void => void process.stderr.write(l + '\n');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** CPU seconds (user + system) a process has used so far. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Runs `argv` inside namespace `ns`; resolves with its wall time. */
async function inNetns(ns: string, argv: string[]): Promise<number> {
  const t0 = performance.now();
  await runChecked('ip', ['netns', 'exec', ns, ...argv], { timeoutMs: 600_000 });
  return performance.now() - t0;
}

/** Plain TCP copy of `file` from h1's namespace to `dest` in h2's: Node sockets, no framing. */
async function tcpCopy(from: TestbedHost, to: TestbedHost, file: string, dest: string): Promise<number> {
  const port = 9300 + Math.floor(Math.random() * 500);
  const sink = `const fs=require('fs');const s=require('net').createServer(c=>{c.pipe(fs.createWriteStream(${JSON.stringify(dest)})).on('finish',()=>process.exit(0))});s.listen(${port},${JSON.stringify(to.address)},()=>console.log('ready'))`;
  const receiver = spawn('ip', ['netns', 'exec', to.netns, process.execPath, '-e', sink], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((ok) => receiver.stdout.once('data', () => ok()));
  const done = new Promise<void>((ok) => receiver.on('exit', () => ok()));
  const source = `const fs=require('fs');const c=require('net').connect(${port},${JSON.stringify(to.address)},()=>fs.createReadStream(${JSON.stringify(file)}).pipe(c))`;
  const t0 = performance.now();
  await runChecked('ip', ['netns', 'exec', from.netns, process.execPath, '-e', source], {
    timeoutMs: 600_000,
  });
  await done;
  return performance.now() - t0;
}

interface LinkResult {
  link: LinkSpec;
  stateBytes: number;
  plainTcp: { ms: number; MBps: number; linkUtilisation: number };
  godwit: {
    downtimeMs: number;
    totalMs: number;
    transferMs: number;
    logicalBytes: number;
    wireBytes: number;
    wireMBps: number;
    linkUtilisation: number;
    effectiveMBps: number;
    cpuSecondsPerGB: number;
  };
  podmanStyle: {
    checkpointMs: number;
    tarGzipMs: number;
    tgzBytes: number;
    copyMs: number;
    untarMs: number;
    restoreMs: number;
    totalMs: number;
  };
}

const results: LinkResult[] = [];
for (const link of links) {
  const name = `gwk${process.pid % 10000}`;
  const dir = await mkdtemp(join(tmpdir(), 'godwit-bench-cold-'));
  try {
    log(`== ${link.name}: testbed up`);
    const tb = await testbedUp({
      name,
      hosts: 2,
      link,
      client: false,
      startAgents: true,
      godwitBin: bin,
      dir,
      baseStateDir: join(dir, 'hosts'),
    });
    const [h1, h2] = tb.hosts as [TestbedHost, TestbedHost];
    const a1 = new AgentClient({ socketPath: h1.socket });
    const a2 = new AgentClient({ socketPath: h2.socket });
    const args = [
      '/usr/local/bin/godwit-memload',
      '--mib',
      String(mib),
      '--mix',
      '30:30:40',
      '--verify-interval-ms',
      '0',
    ];
    await a1.run({ name: 'w', image: 'busybox', args, env: {} });
    while (!/ready mib/.test(await a1.logs('w'))) await sleep(100);

    // 1. Podman-style path: checkpoint to a directory, tar + gzip, plain TCP copy, untar, restore.
    log(`== ${link.name}: podman-style path`);
    const cpDir = join(h1.stateDir, 'bench-cp');
    const t0 = performance.now();
    const cp = await a1.checkpoint('w', { dir: cpDir });
    const tgz = join(h1.stateDir, 'bench-cp.tgz');
    const tarGzipMs = await inNetns(h1.netns, ['tar', '-C', cpDir, '-czf', tgz, '.']);
    const tgzBytes = (await stat(tgz)).size;
    const rxTgz = join(h2.stateDir, 'bench-rx.tgz');
    const copyMs = await tcpCopy(h1, h2, tgz, rxTgz);
    const rxDir = join(h2.stateDir, 'bench-rx');
    await mkdir(rxDir, { recursive: true });
    const untarMs = await inNetns(h2.netns, ['tar', '-C', rxDir, '-xzf', rxTgz]);
    await a1.remove('w', { force: true }); // releases the service address for h2
    const rs = await a2.restore({ dir: rxDir, name: 'w' });
    const podmanTotal = performance.now() - t0;
    const podmanStyle = {
      checkpointMs: cp.durationMs,
      tarGzipMs,
      tgzBytes,
      copyMs,
      untarMs,
      restoreMs: rs.durationMs,
      totalMs: podmanTotal,
    };

    // 2. Plain TCP copy of the checkpoint's bytes (uncompressed tar): the link's ceiling.
    const rawTar = join(h1.stateDir, 'bench-cp.tar');
    await inNetns(h1.netns, ['tar', '-C', cpDir, '-cf', rawTar, '.']);
    const stateBytes = (await stat(rawTar)).size;
    const plainMs = await tcpCopy(h1, h2, rawTar, join(h2.stateDir, 'bench-rx.tar'));
    for (const f of [cpDir, tgz, rawTar]) await rm(f, { recursive: true, force: true });
    for (const f of [rxTgz, join(h2.stateDir, 'bench-rx.tar')]) await rm(f, { force: true });

    // 3. godwit cold migration h2 → h1 (h1 holds no chunks of this container yet: a first trip).
    log(`== ${link.name}: godwit cold migration`);
    const cpu0 = (await cpuSeconds(h1.agentPid!)) + (await cpuSeconds(h2.agentPid!));
    const r = await migrateThrough(
      a2,
      { name: 'w', to: { host: h1.address, port: h1.port, label: 'h1' } },
      { pollMs: 100 },
    );
    const cpu1 = (await cpuSeconds(h1.agentPid!)) + (await cpuSeconds(h2.agentPid!));
    if (r.outcome !== 'committed') throw new Error(`migration ${r.outcome}: ${JSON.stringify(r.error)}`);
    const transferMs = r.phases.find((p) => p.phase === 'transfer')?.durationMs ?? 0;
    const linkBps = (link.rateMbit * 1e6) / 8;
    const wireMBps = r.bytes.wire / 1e6 / (transferMs / 1000);
    results.push({
      link,
      stateBytes,
      plainTcp: {
        ms: plainMs,
        MBps: stateBytes / 1e6 / (plainMs / 1000),
        linkUtilisation: stateBytes / (plainMs / 1000) / linkBps,
      },
      godwit: {
        downtimeMs: r.downtimeMs ?? 0,
        totalMs: r.totalMs ?? 0,
        transferMs,
        logicalBytes: r.bytes.logical,
        wireBytes: r.bytes.wire,
        wireMBps,
        linkUtilisation: (wireMBps * 1e6) / linkBps,
        effectiveMBps: r.bytes.logical / 1e6 / (transferMs / 1000),
        cpuSecondsPerGB: (cpu1 - cpu0) / (r.bytes.logical / 1e9),
      },
      podmanStyle,
    });
    a1.close();
    a2.close();
  } finally {
    await testbedDown({ name, dir }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

if (values.out) await writeFile(values.out, JSON.stringify({ mib, results }, null, 2) + '\n');
const pct = (x: number): string => `${(x * 100).toFixed(0)} %`;
console.log(
  table(
    [
      'LINK',
      'PLAIN TCP COPY',
      'GODWIT WIRE RATE',
      'GODWIT DOWNTIME',
      'ON THE WIRE',
      'CPU s/GB',
      'PODMAN-STYLE TOTAL',
      'OF WHICH tar+gzip / copy',
    ],
    results.map((x) => [
      x.link.name,
      `${x.plainTcp.MBps.toFixed(1)} MB/s (${pct(x.plainTcp.linkUtilisation)} of link)`,
      `${x.godwit.wireMBps.toFixed(1)} MB/s (${pct(x.godwit.linkUtilisation)})`,
      formatMs(x.godwit.downtimeMs),
      `${formatBytes(x.godwit.wireBytes)} of ${formatBytes(x.godwit.logicalBytes)}`,
      x.godwit.cpuSecondsPerGB.toFixed(2),
      formatMs(x.podmanStyle.totalMs),
      `${formatMs(x.podmanStyle.tarGzipMs)} / ${formatMs(x.podmanStyle.copyMs)} (${formatBytes(x.podmanStyle.tgzBytes)})`,
    ]),
  ),
);
