/**
 * `npm run bench:strategies -- [--link edge] [--mib 256] [--dirty 2] [--hot 32] [--reps 5]
 *   [--kinds floor,cold,precopy-off,precopy-on,precopy-full,postcopy,hybrid] [--fast-dirty 30|0] [--out FILE]
 *   [--logs DIR]` (`--logs` keeps the agents' logs)
 * (`bench:precopy` is the same command).
 *
 * On a fresh 2-host testbed with a client, a memload service holding MIB MiB (30 % zero, 30 %
 * repeated, 40 % random pages) rewrites DIRTY MB/s within a HOT MiB hot set while the client
 * probes it. Each repetition measures, in this order, with the probe running, each on a fresh
 * service (a new seed, so new memory content: every move is a first trip, the destination holds
 * none of it), the kinds asked for:
 *  - floor: a local checkpoint + restore of the same kind of container on h1 (no transfer);
 *  - cold migration h1 → h2;
 *  - precopy-off / precopy-on: pre-copy with prediction off / on, h1 → h2 (its final dump held:
 *    the memory stays in the frozen processes, only what changed since the last round crosses);
 *  - precopy-full: pre-copy with prediction on whose final dump writes every page (the classic);
 *  - postcopy: stop, move all but the lazy memory, run on h2, fetch the rest after;
 *  - hybrid: pre-copy rounds, then post-copy for what changed since the last round;
 * so the strategies alternate and machine drift hits all of them. After every move memload
 * verifies its whole memory (post-copy and hybrid: once every page has arrived). Then one
 * pre-copy of a service dirtying faster than the link (--fast-dirty MB/s, default 30; 0 skips
 * it) shows where the rounds stop and why.
 * Client-perceived downtime is the probe's longest gap between replies on its long-lived
 * connection. Benchmarks measure and write numbers; they assert nothing.
 */
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { AgentClient } from '../agent/client.js';
import { formatBytes, formatMs, table } from '../cli/format.js';
import type { LazyMemoryReport, MigrationReport } from '../core/migration.js';
import { migrateThrough, type MigrationRequest } from '../migration/client.js';
import { projectRoot } from '../system/tools.js';
import { parseLinkSpec } from '../testbed/profiles.js';
import { pairTestbedUp, testbedDown } from '../testbed/testbed.js';
import { agentOutFile } from '../testbed/agents.js';
import { memloadServiceArgs } from '../demo/memload.js';
import { verifyMemory, waitListening } from '../demo/migration-demo.js';
import { probeDuring } from './manual-migration.js';
import type { ProbeReport } from '../probe/probe.js';

const { values } = parseArgs({
  options: {
    link: { type: 'string', default: 'edge' },
    mib: { type: 'string', default: '256' },
    dirty: { type: 'string', default: '2' },
    hot: { type: 'string', default: '32' },
    'fast-dirty': { type: 'string', default: '30' },
    kinds: { type: 'string', default: 'floor,cold,precopy-off,precopy-on,postcopy,hybrid' },
    logs: { type: 'string' },
    reps: { type: 'string', default: '5' },
    out: { type: 'string' },
  },
});
const mib = Number(values.mib);
const reps = Number(values.reps);
const link = parseLinkSpec(values.link ?? 'edge');
const bin = resolve(projectRoot(), 'bin/godwit.js');
const log = (l: string): void => void process.stderr.write(l + '\n');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The probe's longest gap on its long-lived connection, in wall-clock time. */
const gapOf = (p: ProbeReport): { from: string; to: string } => {
  const t0 = Date.parse(p.startedAt);
  return {
    from: new Date(t0 + p.longLived.gapStartMs).toISOString(),
    to: new Date(t0 + p.longLived.gapEndMs).toISOString(),
  };
};

const KINDS = ['floor', 'cold', 'precopy-off', 'precopy-on', 'precopy-full', 'postcopy', 'hybrid'] as const;
type Kind = (typeof KINDS)[number];
const wanted = new Set((values.kinds ?? '').split(',').map((k) => k.trim()));
for (const k of wanted)
  if (!(KINDS as readonly string[]).includes(k)) throw new Error(`--kinds: unknown ${k}`);
const kinds: Kind[] = KINDS.filter((k) => wanted.has(k));
interface Sample {
  kind: Kind;
  rep: number;
  from: string;
  to: string;
  /** Longest gap between replies on the probe's long-lived connection, and for fresh connections. */
  clientDowntimeMs: number;
  clientFreshGapMs: number;
  /** When the long-lived connection's longest gap began and ended (ISO), to line it up with the phases. */
  clientGap?: { from: string; to: string };
  /** The runtime's view: checkpoint start → running (migrations), checkpoint + restore (floor). */
  downtimeMs: number;
  totalMs: number;
  wireBytes: number;
  rounds: number;
  stopReason: string;
  memoryVerified: boolean;
  report?: MigrationReport;
  floor?: { checkpointMs: number; restoreMs: number };
  /** Post-copy, hybrid: the memory fetched after the restore. */
  lazy?: LazyMemoryReport;
}

function memloadArgs(dirty: number, seed: number): string[] {
  return memloadServiceArgs({ mib, dirtyMBps: dirty, hotMiB: Number(values.hot ?? '32'), seed });
}

/** memload's own check of its whole memory, now. */
async function verify(agent: AgentClient, name: string): Promise<boolean> {
  return /^verify ok/.test((await verifyMemory(agent, name)) ?? '');
}

const name = `gwp${process.pid % 10000}`;
const dir = await mkdtemp(join(tmpdir(), 'godwit-bench-precopy-'));
const samples: Sample[] = [];
let fastRun: MigrationReport | undefined;
try {
  log(`== testbed up: 2 hosts, ${link.name} link, client`);
  const tb = await pairTestbedUp({ name, link, godwitBin: bin, dir });
  const hosts = tb.hosts;
  const client = { netns: tb.clientNetns };
  const agents = hosts.map((h) => new AgentClient({ socketPath: h.socket })) as [AgentClient, AgentClient];
  try {
    // Every measurement starts a fresh service (a new seed: new memory content) on h1, so every
    // move is a first trip: the destination holds none of its memory yet.
    let seed = 0;
    const fresh = async (dirty = Number(values.dirty)): Promise<{ cname: string; target: string }> => {
      seed++;
      const cname = `w${seed}`;
      const info = await agents[0].run({
        name: cname,
        image: 'busybox',
        args: memloadArgs(dirty, seed),
        env: {},
      });
      await waitListening(agents[0], cname);
      await sleep(1000);
      return { cname, target: `${info.network?.ip ?? '?'}:8080` };
    };
    const migrate = async (
      kind: Kind,
      rep: number,
      req: Omit<MigrationRequest, 'name' | 'to'>,
    ): Promise<void> => {
      const [from, to] = hosts;
      const { cname, target } = await fresh();
      log(`-- rep ${rep} ${kind} ${from.name} → ${to.name}`);
      const [report, probe] = await probeDuring({ bin, netns: client.netns, target }, () =>
        migrateThrough(agents[0], {
          name: cname,
          to: { host: to.address, port: to.port, label: to.name },
          ...req,
        }),
      );
      const at = report.outcome === 'committed' ? agents[1] : agents[0];
      const ok = await verify(at, cname);
      if (values.logs && report.outcome === 'committed') await keepRestoreLogs(to, cname, report.id);
      await at.remove(cname, { force: true });
      samples.push({
        kind,
        rep,
        from: from.name,
        to: to.name,
        clientDowntimeMs: probe.longLived.maxGapMs,
        clientFreshGapMs: probe.fresh.maxGapMs,
        clientGap: gapOf(probe),
        downtimeMs: report.downtimeMs ?? Number.NaN,
        totalMs: report.totalMs ?? Number.NaN,
        wireBytes: report.bytes.wire,
        rounds: report.rounds.length,
        stopReason: report.stopReason ?? '-',
        memoryVerified: ok,
        report,
        ...(report.lazy ? { lazy: report.lazy } : {}),
      });
      log(
        `   ${report.outcome}: client ${probe.longLived.maxGapMs} ms, runtime ${report.downtimeMs} ms, ` +
          `total ${report.totalMs} ms, wire ${formatBytes(report.bytes.wire)}, rounds ${report.rounds.length} ` +
          `(${report.stopReason}), memory ${ok ? 'verified' : 'NOT verified'}` +
          (report.lazy
            ? `; degraded ${report.lazy.degradationWindowMs} ms, ${report.lazy.pagesRemote} pages held on the source: ` +
              `${report.lazy.pagesFromStore ?? 0} from the store, ${report.lazy.pagesOnDemand} on faults, ` +
              `${report.lazy.pagesPushed} pushed; faults ${report.lazy.faults} ` +
              `p50 ${report.lazy.faultWaitMs.p50} p99 ${report.lazy.faultWaitMs.p99} ms`
            : ''),
      );
      const t = report.timings;
      log(
        `   phases: checkpoint ${t.checkpointMs}, snapshot ${t.snapshotMs}, final transfer ${t.finalTransferMs}, ` +
          `materialize ${t.materializeMs}, restore ${t.restoreMs} ms`,
      );
    };
    const measure = (k: Kind, rep: number): Promise<void> => {
      switch (k) {
        case 'cold':
          return migrate(k, rep, { strategy: 'cold' });
        case 'precopy-off':
          return migrate(k, rep, { strategy: 'precopy', predict: false });
        case 'precopy-on':
          return migrate(k, rep, { strategy: 'precopy', predict: true });
        case 'precopy-full':
          return migrate(k, rep, { strategy: 'precopy', predict: true, finalDump: 'full' });
        case 'postcopy':
          return migrate(k, rep, { strategy: 'postcopy' });
        case 'hybrid':
          return migrate(k, rep, { strategy: 'hybrid' });
        case 'floor':
          return Promise.resolve();
      }
    };
    for (let rep = 1; rep <= reps; rep++) {
      if (!wanted.has('floor')) {
        for (const k of kinds) await measure(k, rep);
        continue;
      }
      const host = hosts[0];
      const agent = agents[0];
      log(`-- rep ${rep} floor on ${host.name}`);
      const { cname, target } = await fresh();
      const cpDir = `/dev/shm/${name}-floor`;
      const [floor, probe] = await probeDuring({ bin, netns: client.netns, target }, async () => {
        const t0 = performance.now();
        const cp = await agent.checkpoint(cname, { dir: cpDir });
        await agent.remove(cname, { force: true });
        const rs = await agent.restore({ dir: cpDir, name: cname });
        return { checkpointMs: cp.durationMs, restoreMs: rs.durationMs, totalMs: performance.now() - t0 };
      });
      await rm(cpDir, { recursive: true, force: true });
      const ok = await verify(agent, cname);
      await agent.remove(cname, { force: true });
      samples.push({
        kind: 'floor',
        rep,
        from: host.name,
        to: host.name,
        clientDowntimeMs: probe.longLived.maxGapMs,
        clientFreshGapMs: probe.fresh.maxGapMs,
        downtimeMs: floor.totalMs,
        totalMs: floor.totalMs,
        wireBytes: 0,
        rounds: 0,
        stopReason: '-',
        memoryVerified: ok,
        floor: { checkpointMs: floor.checkpointMs, restoreMs: floor.restoreMs },
      });
      log(`   client ${probe.longLived.maxGapMs} ms, checkpoint + restore ${Math.round(floor.totalMs)} ms`);
      for (const k of kinds) if (k !== 'floor') await measure(k, rep);
    }
    // A service that dirties faster than the link: the rounds must stop by rule.
    const fast = Number(values['fast-dirty']);
    if (fast > 0) {
      log(`-- pre-copy of a service dirtying ${fast} MB/s`);
      const f = await fresh(fast);
      fastRun = await migrateThrough(agents[0], {
        name: f.cname,
        to: { host: hosts[1].address, port: hosts[1].port, label: hosts[1].name },
        strategy: 'precopy',
      });
      log(
        `   ${fastRun.outcome}: ${fastRun.rounds.length} rounds, stopped by ${fastRun.stopReason}, downtime ${fastRun.downtimeMs} ms`,
      );
    }
  } finally {
    for (const c of agents) c.close();
    // --logs DIR: keep the agents' logs (their phase timings) before the testbed goes.
    if (values.logs) {
      await mkdir(values.logs, { recursive: true });
      for (const h of hosts) {
        await copyFile(agentOutFile(h), join(values.logs, `${h.name}.agent.out`)).catch(() => undefined);
        await copyFile(join(h.stateDir, 'logs', 'agent.log'), join(values.logs, `${h.name}.agent.log`)).catch(
          () => undefined,
        );
        // CRIU's dump log of every migration this host was the source of.
        const migrations = join(h.stateDir, 'migrations');
        for (const id of await readdir(migrations).catch(() => [] as string[])) {
          await copyFile(
            join(migrations, id, 'dump.log'),
            join(values.logs, `${h.name}.${id}.dump.log`),
          ).catch(() => undefined);
        }
        // CRIU's restore and lazy-pages logs of the containers it holds now.
        const containers = join(h.stateDir, 'containers');
        for (const c of await readdir(containers).catch(() => [] as string[])) await keepRestoreLogs(h, c, c);
      }
    }
  }
} finally {
  await testbedDown({ name, dir }).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
}

/** --logs DIR: CRIU's restore and lazy-pages logs of container `cname` on `h`, named by `tag`. */
async function keepRestoreLogs(
  h: { name: string; stateDir: string },
  cname: string,
  tag: string,
): Promise<void> {
  if (!values.logs) return;
  await mkdir(values.logs, { recursive: true });
  for (const f of ['restore.log', 'lazy-pages.log']) {
    await copyFile(
      join(h.stateDir, 'containers', cname, 'restore-work', f),
      join(values.logs, `${h.name}.${tag}.${f}`),
    ).catch(() => undefined);
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const stat = (k: Kind, f: (s: Sample) => number): { median: number; min: number; max: number } => {
  const xs = samples.filter((s) => s.kind === k).map(f);
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
};
type Stat = { median: number; min: number; max: number };
interface KindSummary {
  clientDowntimeMs: Stat;
  downtimeMs: Stat;
  totalMs: Stat;
  wireBytes: Stat;
  rounds: Stat;
  /** Post-copy, hybrid: restore → every page in place; fault waits; where the pages came from. */
  degradationWindowMs?: Stat;
  faultP50Ms?: Stat;
  faultP99Ms?: Stat;
  pagesFromStore?: Stat;
  pagesRemote?: Stat;
  pagesOnDemand?: Stat;
  verified: number;
  runs: number;
}
const summarize = (k: Kind): KindSummary => {
  const lazy = samples.some((s) => s.kind === k && s.lazy);
  const l = (f: (x: LazyMemoryReport) => number): Stat => stat(k, (s) => (s.lazy ? f(s.lazy) : Number.NaN));
  return {
    clientDowntimeMs: stat(k, (s) => s.clientDowntimeMs),
    downtimeMs: stat(k, (s) => s.downtimeMs),
    totalMs: stat(k, (s) => s.totalMs),
    wireBytes: stat(k, (s) => s.wireBytes),
    rounds: stat(k, (s) => s.rounds),
    ...(lazy
      ? {
          degradationWindowMs: l((x) => x.degradationWindowMs ?? Number.NaN),
          faultP50Ms: l((x) => x.faultWaitMs.p50),
          faultP99Ms: l((x) => x.faultWaitMs.p99),
          pagesFromStore: l((x) => x.pagesFromStore ?? 0),
          pagesRemote: l((x) => x.pagesRemote),
          pagesOnDemand: l((x) => x.pagesOnDemand),
        }
      : {}),
    verified: samples.filter((s) => s.kind === k && s.memoryVerified).length,
    runs: samples.filter((s) => s.kind === k).length,
  };
};
const summary: Partial<Record<Kind, KindSummary>> = Object.fromEntries(kinds.map((k) => [k, summarize(k)]));
const resident = mib * 1024 * 1024;
const med = (k: Kind): number | undefined => summary[k]?.clientDowntimeMs.median;
const floorMs = med('floor');
const fmt = (v: { median: number; min: number; max: number }, f: (n: number) => string): string =>
  `${f(v.median)} (${f(v.min)}–${f(v.max)})`;
const rows = kinds.map((k) => {
  const s = summary[k] as KindSummary;
  return [
    k,
    fmt(s.clientDowntimeMs, formatMs),
    fmt(s.downtimeMs, formatMs),
    fmt(s.totalMs, formatMs),
    fmt(s.wireBytes, formatBytes),
    (s.wireBytes.median / resident).toFixed(2),
    String(s.rounds.median),
    s.degradationWindowMs ? fmt(s.degradationWindowMs, formatMs) : '-',
    s.faultP50Ms && s.faultP99Ms
      ? `${formatMs(s.faultP50Ms.median)} / ${formatMs(s.faultP99Ms.median)}`
      : '-',
    s.pagesFromStore && s.pagesRemote && s.pagesOnDemand
      ? `${s.pagesRemote.median} / ${s.pagesFromStore.median} / ${s.pagesOnDemand.median}`
      : '-',
    `${s.verified}/${s.runs}`,
  ];
});
const ratio = (a: number | undefined, b: number | undefined): number | undefined =>
  a === undefined || b === undefined ? undefined : a / b;
const minus = (a: number | undefined, b: number | undefined): number | undefined =>
  a === undefined || b === undefined ? undefined : a - b;
const checks = {
  precopyDowntimeMinusFloorMs: minus(med('precopy-on'), floorMs),
  precopyOffDowntimeMinusFloorMs: minus(med('precopy-off'), floorMs),
  precopyFullDowntimeMinusFloorMs: minus(med('precopy-full'), floorMs),
  coldOverPrecopyDowntime: ratio(med('cold'), med('precopy-on')),
  precopyWireOverResident: ratio(summary['precopy-on']?.wireBytes.median, resident),
  predictionByteCut:
    summary['precopy-on'] && summary['precopy-off']
      ? 1 - summary['precopy-on'].wireBytes.median / summary['precopy-off'].wireBytes.median
      : undefined,
  postcopyDowntimeMinusFloorMs: minus(med('postcopy'), floorMs),
  coldOverPostcopyDowntime: ratio(med('cold'), med('postcopy')),
  hybridDowntimeMinusFloorMs: minus(med('hybrid'), floorMs),
};
const out = {
  link,
  mib,
  dirtyMBps: Number(values.dirty),
  hotMiB: Number(values.hot),
  reps,
  kinds,
  summary,
  checks,
  fastDirty: fastRun
    ? {
        dirtyMBps: Number(values['fast-dirty']),
        outcome: fastRun.outcome,
        rounds: fastRun.rounds,
        stopReason: fastRun.stopReason,
        downtimeMs: fastRun.downtimeMs,
      }
    : undefined,
  samples,
};
const line = (label: string, v: number | undefined, f: (n: number) => string): string =>
  v === undefined ? '' : `${label}: ${f(v)}`;
const text = [
  `link ${link.name}, memload ${mib} MiB, ${values.dirty} MB/s on a ${values.hot} MiB hot set, ${reps} reps (median (min–max))`,
  table(
    [
      'STRATEGY',
      'CLIENT DOWNTIME',
      'RUNTIME DOWNTIME',
      'TOTAL',
      'WIRE',
      'WIRE/RESIDENT',
      'ROUNDS',
      'DEGRADED',
      'FAULT P50/P99',
      'PAGES HELD/FROM STORE/ON FAULT',
      'VERIFIED',
    ],
    rows,
  ),
  line('pre-copy (predict on) client downtime − floor', checks.precopyDowntimeMinusFloorMs, formatMs),
  line('pre-copy (predict off) client downtime − floor', checks.precopyOffDowntimeMinusFloorMs, formatMs),
  line(
    'pre-copy (full final dump) client downtime − floor',
    checks.precopyFullDowntimeMinusFloorMs,
    formatMs,
  ),
  line('cold / pre-copy client downtime', checks.coldOverPrecopyDowntime, (x) => `${x.toFixed(1)}×`),
  line('prediction cut bytes on the wire by', checks.predictionByteCut, (x) => `${(100 * x).toFixed(1)} %`),
  line('post-copy client downtime − floor', checks.postcopyDowntimeMinusFloorMs, formatMs),
  line('cold / post-copy client downtime', checks.coldOverPostcopyDowntime, (x) => `${x.toFixed(1)}×`),
  line('hybrid client downtime − floor', checks.hybridDowntimeMinusFloorMs, formatMs),
  fastRun
    ? `dirtying ${values['fast-dirty']} MB/s: ${fastRun.rounds.length} rounds, stopped by ${fastRun.stopReason}, ${fastRun.outcome}`
    : '',
]
  .filter(Boolean)
  .join('\n');
process.stdout.write(text + '\n');
if (values.out) await writeFile(values.out, JSON.stringify(out, null, 2) + '\n');
