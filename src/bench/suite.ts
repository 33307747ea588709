/**
 * `godwit bench`: runs a benchmark matrix on testbeds and writes results.json, report.md and the
 * charts. One testbed (two hosts and a client, the link of the cells) per link; every run starts
 * a fresh service on h1, moves it to h2 by one kind (a godwit strategy or a baseline) while the
 * client probes it, checks its state on h2, and removes it. results.json is rewritten after every
 * run, so an interrupted benchmark keeps what it finished.
 *
 * Stopping: `signal` aborted → the run in progress finishes (a migration is never cut in the
 * middle: the container must end on exactly one host), nothing new starts, the testbed comes
 * down and the report covers the runs made (`interrupted: true`).
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { cpus, hostname, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AgentClient } from '../agent/client.js';
import { errorMessage, isGodwitError } from '../core/errors.js';
import type { MigrationReport } from '../core/migration.js';
import type { LinkSpec, TestbedHost } from '../core/testbed.js';
import { counterdServiceArgs, memloadServiceArgs } from '../demo/memload.js';
import { verifyMemory, waitListening } from '../demo/migration-demo.js';
import { migrateThrough, type MigrationRequest } from '../migration/client.js';
import type { ProbeReport } from '../probe/probe.js';
import { loadTools, projectRoot } from '../system/tools.js';
import { pairTestbedUp, testbedDown } from '../testbed/testbed.js';
import type { BaselineContext, BaselineKind, BaselineReport, ServiceHost } from './baseline.js';
import { migrateByHandTarZstd, migrateCriuPageServer } from './baselines.js';
import { probeDuring } from './manual-migration.js';
import {
  isBaseline,
  planRuns,
  type BenchCell,
  type BenchKind,
  type BenchMatrix,
  type PlannedRun,
} from './matrix.js';
import { openPodmanBed, podmanUnavailable, type PodmanBed } from './podman-baseline.js';
import { REDIS_PORT, redisServerArgs, startRedisLoad, waitRedisReady } from './redis-workload.js';
import { RESULTS_SCHEMA, summarize, type BenchResults, type BenchRun, type MachineInfo } from './results.js';
import { writeReport } from './report.js';

const run = promisify(execFile);

/** How long the probe watches before and after each move, ms: both sides of the gap. */
export const BENCH_PROBE_MARGIN_MS = 500;
/** A service must be up within this long after `run`, ms. */
const SERVICE_START_TIMEOUT_MS = 60_000;
/** After the service is up, it runs this long before the move (memload's writes under way), ms. */
const SETTLE_MS = 400;

/** Options of runBench. */
export interface BenchOptions {
  matrix: BenchMatrix;
  /** Output directory; created; results.json, report.md and the charts go there. */
  outDir: string;
  /** The command line to record. */
  command: string;
  /** bin/godwit.js; default the project's. */
  godwitBin?: string;
  /** One line per event (testbed up, each run's figures); for the terminal. */
  onProgress?: (line: string) => void;
  /** Aborted: finish the run in progress, start nothing new, write what was made. */
  signal?: AbortSignal;
  /** Where the testbeds live (default a temp dir under /tmp). */
  workDir?: string;
}

/** What runBench wrote. */
export interface BenchOutcome {
  results: BenchResults;
  files: string[];
}

/** Runs the matrix; resolves when every run is made (or the signal stopped it) and the files are written. */
export async function runBench(opts: BenchOptions): Promise<BenchOutcome> {
  const say = opts.onProgress ?? ((): void => undefined);
  const bin = opts.godwitBin ?? join(projectRoot(), 'bin', 'godwit.js');
  await mkdir(opts.outDir, { recursive: true });
  const m = opts.matrix;
  const results: BenchResults = {
    schema: RESULTS_SCHEMA,
    startedAt: new Date().toISOString(),
    interrupted: false,
    command: opts.command,
    matrix: {
      name: m.name,
      reps: m.reps,
      kinds: m.kinds,
      cells: m.cells.map((c) => ({ link: c.link, workload: c.workload })),
    },
    machine: await machineInfo(),
    versions: await versions(),
    unavailable: [],
    runs: [],
    summary: [],
  };
  const save = async (): Promise<void> => {
    results.summary = summarize(m.cells, m.kinds, results.runs);
    const file = join(opts.outDir, 'results.json');
    await writeFile(`${file}.tmp`, JSON.stringify(results, null, 2) + '\n');
    await rename(`${file}.tmp`, file);
  };
  // Kinds this machine cannot run are named with the exact reason, and skipped.
  if (m.kinds.includes('podman')) {
    const why = await podmanUnavailable();
    if (why) results.unavailable.push({ kind: 'podman', reason: why });
  }
  const skip = new Set(results.unavailable.map((u) => u.kind));
  for (const u of results.unavailable) say(`${u.kind}: not measured — ${u.reason}`);
  const plan = planRuns(m).filter((p) => !skip.has(p.kind));
  say(
    `${plan.length} runs: ${new Set(m.cells.map((c) => c.link.name)).size} links, ${m.cells.length} cells, ${m.reps} reps`,
  );
  await save();

  const t0 = performance.now();
  let done = 0;
  const workRoot = opts.workDir ?? join('/tmp', `godwit-bench-${process.pid}`);
  try {
    for (const link of [...new Set(plan.map((p) => p.cell.link.name))]) {
      if (opts.signal?.aborted) break;
      const runs = plan.filter((p) => p.cell.link.name === link);
      const spec = (runs[0] as PlannedRun).cell.link;
      const podman = runs.some((p) => p.kind === 'podman');
      await withTestbed(spec, bin, join(workRoot, link), say, podman, async (bed) => {
        for (const p of runs) {
          if (opts.signal?.aborted) break;
          const r = await measure(bed, p, bin);
          results.runs.push(r);
          done++;
          await save();
          const elapsed = (performance.now() - t0) / 1000;
          const left = (elapsed / done) * (plan.length - done);
          say(`[${done}/${plan.length} ${clock(elapsed)} elapsed, ~${clock(left)} left] ${describeRun(r)}`);
        }
      });
    }
  } finally {
    await rm(workRoot, { recursive: true, force: true }).catch(() => undefined);
  }
  results.interrupted = done < plan.length;
  results.finishedAt = new Date().toISOString();
  await save();
  const files = ['results.json', ...(await writeReport(opts.outDir, results))];
  return { results, files };
}

const clock = (s: number): string => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`;

/** One line of progress for a finished run. */
export function describeRun(r: BenchRun): string {
  const head = `${r.link}/${r.workload} ${r.kind} rep ${r.rep}:`;
  if (r.outcome !== 'committed') return `${head} ${r.outcome}${r.error ? ` — ${r.error.message}` : ''}`;
  const ms = (v: number | undefined): string => (v === undefined ? '-' : `${Math.round(v)} ms`);
  return (
    `${head} client ${ms(r.clientDowntimeMs)}, runtime ${ms(r.downtimeMs)}, total ${ms(r.totalMs)}, ` +
    `wire ${((r.wireBytes ?? 0) / 1e6).toFixed(1)} MB, state ${r.stateKept === undefined ? '?' : r.stateKept ? 'kept' : 'LOST'}`
  );
}

/** A testbed for one link and what runs need of it. */
interface Bed {
  hosts: readonly [TestbedHost, TestbedHost];
  agents: readonly [AgentClient, AgentClient];
  clientNetns: string;
  workDir: string;
  seq: { n: number };
  /** Podman's two stores standing in for h1 and h2, when the matrix measures Podman. */
  podman?: PodmanBed;
}

async function withTestbed(
  link: LinkSpec,
  bin: string,
  dir: string,
  say: (l: string) => void,
  podman: boolean,
  body: (bed: Bed) => Promise<void>,
): Promise<void> {
  const name = `gwb${process.pid % 10000}${link.name.replace(/[^a-z0-9]/gi, '').slice(0, 4)}`;
  await mkdir(dir, { recursive: true });
  say(
    `testbed up: 2 hosts and a client on the ${link.name} link (${link.rateMbit} Mbit/s, ${link.delayMs} ms)`,
  );
  try {
    const tb = await pairTestbedUp({ name, link, godwitBin: bin, dir });
    const hosts = tb.hosts;
    const agents = hosts.map((h) => new AgentClient({ socketPath: h.socket })) as [AgentClient, AgentClient];
    let pod: PodmanBed | undefined;
    try {
      if (podman) {
        say('podman: two stores standing in for h1 and h2');
        pod = await openPodmanBed({
          testbed: { name, hosts, serviceNetwork: tb.record.serviceNetwork },
          workDir: join(dir, 'podman'),
        });
      }
      await body({
        hosts,
        agents,
        clientNetns: tb.clientNetns,
        workDir: join(dir, 'work'),
        seq: { n: 0 },
        ...(pod ? { podman: pod } : {}),
      });
    } finally {
      await pod?.close().catch(() => undefined);
      for (const a of agents) a.close();
    }
  } finally {
    await testbedDown({ name, dir }).catch(() => undefined);
  }
}

/** Where a kind's service runs: under godwit's agents, or (Podman) under the baseline's own runtime. */
function serviceHosts(bed: Bed, kind: BenchKind): readonly [ServiceHost, ServiceHost] {
  if (kind === 'podman') {
    if (!bed.podman) throw new Error('podman: no Podman stores on this testbed');
    return bed.podman.hosts;
  }
  return bed.agents;
}

/** What a workload's container runs and how a client reaches it. */
interface Service {
  name: string;
  /** The probe's target, or undefined when the workload serves nothing (idle). */
  target?: string;
  ip: string;
}

async function startService(bed: Bed, cell: BenchCell, agent: ServiceHost): Promise<Service> {
  const n = ++bed.seq.n;
  const name = `b${n}`;
  const w = cell.workload;
  const listening = (): Promise<void> => waitListening(agent, name, SERVICE_START_TIMEOUT_MS);
  let ip = '';
  const run = async (image: string, args: string[]): Promise<string> =>
    (ip = (await agent.run({ name, image, args, env: {} })).network?.ip ?? '');
  let target: string | undefined;
  switch (w.type) {
    case 'memload': {
      const o = { mib: w.mib, dirtyMBps: w.dirtyMBps, hotMiB: w.hotMiB, seed: n, pattern: w.pattern };
      target = `${await run('busybox', memloadServiceArgs(o))}:8080`;
      await listening();
      break;
    }
    case 'web':
      target = `${await run('busybox', counterdServiceArgs())}:8080`;
      await listening();
      break;
    case 'redis':
      target = `redis://${await run('redis', redisServerArgs())}:${REDIS_PORT}`;
      await waitRedisReady(bed.clientNetns, ip, REDIS_PORT, SERVICE_START_TIMEOUT_MS);
      break;
    case 'idle':
      await run('busybox', ['sh', '-c', 'while true; do sleep 3600; done']);
      break;
  }
  await sleep(SETTLE_MS);
  return { name, ip, ...(target ? { target } : {}) };
}

const STRATEGY_REQUESTS: Record<
  Exclude<BenchKind, BaselineKind>,
  Pick<MigrationRequest, 'strategy' | 'predict'>
> = {
  cold: { strategy: 'cold' },
  precopy: { strategy: 'precopy', predict: false },
  'precopy-predict': { strategy: 'precopy', predict: true },
  postcopy: { strategy: 'postcopy' },
  hybrid: { strategy: 'hybrid' },
};

const BASELINES: Record<
  Exclude<BaselineKind, 'podman'>,
  (ctx: BaselineContext) => Promise<BaselineReport>
> = {
  byhand: migrateByHandTarZstd,
  'criu-page-server': migrateCriuPageServer,
};

/** One run: fresh service, the move under the probe (and the load), the state check, cleanup. Never throws. */
async function measure(bed: Bed, p: PlannedRun, bin: string): Promise<BenchRun> {
  const base = {
    link: p.cell.link.name,
    workload: p.cell.workload.id,
    kind: p.kind,
    rep: p.rep,
    startedAt: new Date().toISOString(),
  };
  let svc: Service | undefined;
  let owner: 0 | 1 = 0;
  const hosts = serviceHosts(bed, p.kind);
  try {
    svc = await startService(bed, p.cell, hosts[0]);
    const s = svc;
    const load =
      p.cell.workload.type === 'redis' ? startRedisLoad({ netns: bed.clientNetns, host: s.ip }) : undefined;
    let moved: { report: MigrationReport | BaselineReport; committed: boolean };
    let probe: ProbeReport | undefined;
    try {
      const move = (): Promise<{ report: MigrationReport | BaselineReport; committed: boolean }> =>
        moveOnce(bed, p.kind, s.name);
      if (s.target)
        [moved, probe] = await probeDuring(
          { bin, netns: bed.clientNetns, target: s.target, marginMs: BENCH_PROBE_MARGIN_MS },
          move,
        );
      else moved = await move();
    } finally {
      await load?.stop().catch(() => undefined);
    }
    owner = moved.committed ? 1 : 0;
    const r = moved.report;
    const isMig = 'rounds' in r;
    const out: BenchRun = {
      ...base,
      outcome: moved.committed ? 'committed' : r.outcome === 'rolled-back' ? 'rolled-back' : 'failed',
      downtimeMs: r.downtimeMs ?? Number.NaN,
      totalMs: r.totalMs ?? Number.NaN,
      wireBytes: isMig ? r.bytes.wire : r.wireBytes,
      stateBytes: isMig ? r.bytes.logical : r.logicalBytes,
      report: r,
      ...(r.error ? { error: r.error } : {}),
    };
    if (probe) {
      out.clientDowntimeMs = probe.longLived.maxGapMs;
      out.probe = {
        longLivedMaxGapMs: probe.longLived.maxGapMs,
        freshMaxGapMs: probe.fresh.maxGapMs,
        survived: probe.survived,
        counterResets: probe.longLived.counterResets + probe.fresh.counterResets,
        probeStartedAt: probe.startedAt,
        gapStartMs: probe.longLived.gapStartMs,
        gapEndMs: probe.longLived.gapEndMs,
      };
    }
    const kept = await stateKept(hosts[owner], s.name, p.cell, probe);
    if (kept !== undefined) out.stateKept = kept;
    return out;
  } catch (err) {
    return {
      ...base,
      outcome: 'failed',
      error: { code: isGodwitError(err) ? err.code : 'BENCH_RUN_FAILED', message: errorMessage(err) },
    };
  } finally {
    if (svc) {
      // Wherever it ended up; the other host has nothing of it by then.
      await hosts[owner].remove(svc.name, { force: true }).catch(() => undefined);
      await hosts[(1 - owner) as 0 | 1].remove(svc.name, { force: true }).catch(() => undefined);
    }
  }
}

async function moveOnce(
  bed: Bed,
  kind: BenchKind,
  name: string,
): Promise<{ report: MigrationReport | BaselineReport; committed: boolean }> {
  const [from, to] = bed.hosts;
  if (kind === 'podman') {
    if (!bed.podman) throw new Error('podman: no Podman stores on this testbed');
    const report = await bed.podman.migrate(name);
    return { report, committed: report.outcome === 'committed' };
  }
  if (isBaseline(kind)) {
    const workDir = join(bed.workDir, `${name}-${kind}`);
    await mkdir(workDir, { recursive: true });
    try {
      const report = await BASELINES[kind]({ from, to, agents: bed.agents, name, workDir });
      return { report, committed: report.outcome === 'committed' };
    } finally {
      await rm(workDir, { recursive: true, force: true }).catch(() => undefined);
    }
  }
  const report = await migrateThrough(bed.agents[0], {
    name,
    to: { host: to.address, port: to.port, label: to.name },
    ...STRATEGY_REQUESTS[kind],
  });
  return { report, committed: report.outcome === 'committed' };
}

/**
 * Whether the service kept its state through the move: memload checks its whole memory; for the
 * web service and Redis the probe's counter (counterd's, Redis' INCR) never went back and the
 * service answers; the idle shell still runs.
 */
async function stateKept(
  agent: ServiceHost,
  name: string,
  cell: BenchCell,
  probe: ProbeReport | undefined,
): Promise<boolean | undefined> {
  switch (cell.workload.type) {
    case 'memload':
      return /^verify ok/.test((await verifyMemory(agent, name)) ?? '');
    case 'web':
    case 'redis':
      return probe ? counterKept(probe) : undefined;
    case 'idle':
      return (await agent.exec(name, ['true'])).exitCode === 0;
  }
}

/**
 * The probe's verdict on the service's state: false when a counter went back (the state was
 * lost) or the service never answered again (the longest gap ran to the end of the probe);
 * undefined when it never answered at all (nothing to judge by); else true.
 */
export function counterKept(p: Pick<ProbeReport, 'durationMs' | 'fresh' | 'longLived'>): boolean | undefined {
  if (p.longLived.counterResets > 0 || p.fresh.counterResets > 0) return false;
  if (p.longLived.ok === 0 && p.fresh.ok === 0) return undefined;
  return p.longLived.gapEndMs < p.durationMs - 1;
}

async function machineInfo(): Promise<MachineInfo> {
  const os = await readFile('/etc/os-release', 'utf8')
    .then((t) => /^PRETTY_NAME="?([^"\n]*)"?/m.exec(t)?.[1] ?? 'unknown')
    .catch(() => 'unknown');
  const c = cpus();
  return {
    hostname: hostname(),
    kernel: release(),
    os,
    cpus: c.length,
    cpuModel: c[0]?.model.trim() ?? 'unknown',
    memoryBytes: totalmem(),
  };
}

/** First line of `cmd args`' output, or undefined when it is not there. */
async function versionOf(cmd: string, args: string[]): Promise<string | undefined> {
  try {
    const { stdout, stderr } = await run(cmd, args, { timeout: 10_000 });
    return /\d+\.\d+(?:\.\d+)?(?:[-+~][\w.+~-]*)?/.exec(stdout || stderr)?.[0];
  } catch {
    return undefined;
  }
}

async function versions(): Promise<Record<string, string>> {
  const out: Record<string, string> = { node: process.version };
  const pkg = JSON.parse(await readFile(join(projectRoot(), 'package.json'), 'utf8')) as { version: string };
  out['godwit'] = pkg.version;
  const tools = await loadTools().catch(() => undefined);
  const found: [string, string | undefined][] = await Promise.all([
    ['runc', await versionOf('runc', ['--version'])] as [string, string | undefined],
    ['criu', tools ? await versionOf(tools.criu, ['--version']) : undefined] as [string, string | undefined],
    ['zstd', await versionOf('zstd', ['--version'])] as [string, string | undefined],
    ['redis', await versionOf('redis-cli', ['--version'])] as [string, string | undefined],
    ['podman', await versionOf('podman', ['--version'])] as [string, string | undefined],
  ]);
  for (const [k, v] of found) if (v) out[k] = v;
  return out;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
