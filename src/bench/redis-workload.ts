/**
 * The benchmark's Redis workload: Debian's redis-server in a godwit container (image `redis`) under a
 * steady SET load from the host's redis-benchmark, run in a client network namespace. The probe measures
 * it with `redis://IP:6379` targets (INCR godwit:probe). Needs root and Debian's redis-tools.
 */
import { spawn } from 'node:child_process';
import { ErrorCode, InvalidArgumentError, UnavailableError } from '../core/errors.js';
import { RespParser, encodeCommand, describeReply, type RespValue } from '../probe/resp.js';
import { REDIS_SERVER_PATH } from '../runtime/image-store.js';
import { capCpu } from '../system/cpu-cap.js';
import { runInNetns } from '../testbed/system.js';

/** The port the workload's Redis listens on. */
export const REDIS_PORT = 6379;

/** The host's redis-benchmark (Debian's redis-tools). */
export const REDIS_BENCHMARK = '/usr/bin/redis-benchmark';

/** Requests per redis-benchmark run: large enough that a run never ends while measured (it loops if it does). */
const LOAD_REQUESTS = 2_000_000_000;

/** redis-benchmark prints its progress every 250 ms. */
const PROGRESS_INTERVAL_MS = 250;

/**
 * The container command of the workload's Redis (image `redis`): in the foreground, logging to stdout,
 * on every address without protected mode, no persistence (no RDB snapshots, no AOF: the state is the
 * memory godwit moves), `maxMemoryMiB` of data (64 by default) and `noeviction` (a full Redis refuses
 * writes rather than silently dropping the probe's key), and at most 512 clients, which fits the
 * container's 1024 open files (Redis would otherwise try to raise the limit and warn).
 */
export function redisServerArgs(o: { maxMemoryMiB?: number } = {}): string[] {
  const mib = o.maxMemoryMiB ?? 64;
  if (!Number.isInteger(mib) || mib < 1 || mib > 65536) {
    throw new InvalidArgumentError(ErrorCode.InvalidFlag, `redis maxmemory ${mib} MiB: not 1–65536`);
  }
  return [
    REDIS_SERVER_PATH,
    '--port',
    String(REDIS_PORT),
    '--bind',
    '0.0.0.0',
    '--protected-mode',
    'no',
    '--daemonize',
    'no',
    '--supervised',
    'no',
    '--logfile',
    '',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    '/tmp',
    '--maxmemory',
    `${mib}mb`,
    '--maxmemory-policy',
    'noeviction',
    '--maxclients',
    '512',
  ];
}

/** Options of `startRedisLoad`. */
export interface RedisLoadOptions {
  /** Network namespace the load runs in (ip netns exec). */
  netns: string;
  host: string;
  /** Default REDIS_PORT. */
  port?: number;
  /** Parallel connections; default 2. Each runs one request at a time, as fast as Redis answers. */
  clients?: number;
  /** Keys `key:000000000000`… written at random; default 10000. */
  keyspace?: number;
  /** Bytes per value; default 64. */
  valueBytes?: number;
  /**
   * CPU redis-benchmark may use, % of one CPU; default LOAD_CPU_PERCENT. redis-benchmark has no
   * rate limit: uncapped, two clients and the server they drive take both cores of this machine
   * (~30k SET/s), starving the hosts whose migration is being measured.
   */
  cpuPercent?: number;
}

/** The load's default CPU share: ~4-5k SET/s here, a steady write load that leaves the hosts their CPU. */
export const LOAD_CPU_PERCENT = 15;

/** What a load did. */
export interface RedisLoadResult {
  /**
   * SETs answered, estimated from redis-benchmark's progress lines (its overall rate × the time since its
   * run began, so within about 250 ms of load); 0 when it printed none.
   */
  requests: number;
  /** From the start of the load to its end, ms. */
  durationMs: number;
  /** redis-benchmark ended by itself before stop() (e.g. its connections broke, or `ip` failed). */
  exitedEarly: boolean;
  /**
   * The last thing redis-benchmark said besides its progress (e.g. `Could not connect to Redis at …`, after
   * which it waits forever; `Error: Connection reset by peer`), or why it could not run.
   */
  lastMessage?: string;
}

/** A running load. */
export interface RedisLoad {
  /** Ends the load (SIGINT, SIGKILL after 3 s) and reports; never rejects; idempotent. */
  stop(): Promise<RedisLoadResult>;
}

/**
 * Starts `redis-benchmark -t set` against HOST:PORT inside `netns` as a steady write load until stop().
 * Throws InvalidFlag on a bad option; a load that cannot connect says so in `lastMessage` at stop().
 */
export function startRedisLoad(o: RedisLoadOptions): RedisLoad {
  checkNetns(o.netns);
  checkHost(o.host);
  const port = positive(o.port ?? REDIS_PORT, 'port', 65535);
  const clients = positive(o.clients ?? 2, 'clients', 1000);
  const keyspace = positive(o.keyspace ?? 10_000, 'keyspace', 100_000_000);
  const valueBytes = positive(o.valueBytes ?? 64, 'valueBytes', 1024 * 1024);
  const args = [
    'netns',
    'exec',
    o.netns,
    REDIS_BENCHMARK,
    '-h',
    o.host,
    '-p',
    String(port),
    '-t',
    'set',
    '-r',
    String(keyspace),
    '-d',
    String(valueBytes),
    '-c',
    String(clients),
    '-n',
    String(LOAD_REQUESTS),
    '-l',
    '-q',
  ];
  const started = performance.now();
  const progress = new BenchmarkProgress(LOAD_REQUESTS);
  // `ip netns exec` execs redis-benchmark, so signals reach it.
  const child = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const cap =
    child.pid === undefined
      ? undefined
      : capCpu(child.pid, `godwit-load-${child.pid}`, o.cpuPercent ?? LOAD_CPU_PERCENT);
  let endedAt: number | undefined;
  let spawnError: string | undefined;
  child.stdout.setEncoding('latin1').on('data', (c: string) => progress.push(c, performance.now()));
  child.stderr.setEncoding('latin1').on('data', (c: string) => progress.pushMessage(c));
  child.on('error', (err) => (spawnError = err.message));
  const closed = new Promise<void>((resolve) =>
    child.on('close', () => {
      endedAt = performance.now();
      resolve();
    }),
  );
  let result: Promise<RedisLoadResult> | undefined;
  return {
    stop() {
      result ??= (async () => {
        const early = endedAt !== undefined || spawnError !== undefined;
        if (!early) {
          child.kill('SIGINT');
          const killer = setTimeout(() => child.kill('SIGKILL'), 3000);
          await closed;
          clearTimeout(killer);
        }
        const end = endedAt ?? performance.now();
        await (await cap)?.release();
        const lastMessage =
          spawnError ??
          progress.lastMessage ??
          (early ? `redis-benchmark exited (code ${child.exitCode ?? child.signalCode})` : undefined);
        return {
          requests: progress.requests(),
          durationMs: Math.round(end - started),
          exitedEarly: early,
          ...(lastMessage === undefined ? {} : { lastMessage }),
        };
      })();
      return result;
    },
  };
}

/**
 * Follows redis-benchmark's output (`SET: rps=R (overall: O) avg_msec=…` every 250 ms, `\r`-separated;
 * with -q, `SET: N requests per second…` when a run of `perRun` requests ends) and estimates the requests
 * answered from it. Arrival times are ms on any monotonic clock.
 */
export class BenchmarkProgress {
  /** The last line that was not progress (errors, warnings), if any. */
  lastMessage: string | undefined;
  private pending = '';
  private completedRuns = 0;
  private runFirstAt: number | undefined;
  private runLast: { overall: number; atMs: number } | undefined;

  constructor(private readonly perRun: number) {}

  /** Takes stdout as it arrives at `atMs`. */
  push(text: string, atMs: number): void {
    this.pending += text;
    const parts = this.pending.split(/[\r\n]/);
    this.pending = (parts.pop() ?? '').slice(-4096);
    for (const raw of parts) {
      const line = raw.trim();
      if (line === '') continue;
      const m = /rps=[\d.]+ \(overall: ([\d.]+)\)/.exec(line);
      if (m) {
        this.runFirstAt ??= atMs;
        this.runLast = { overall: Number(m[1]), atMs };
      } else if (/requests per second/.test(line)) {
        this.completedRuns++;
        this.runFirstAt = undefined;
        this.runLast = undefined;
      } else this.lastMessage = line.slice(0, 500);
    }
  }

  /** Takes stderr: its last non-empty line becomes lastMessage. */
  pushMessage(text: string): void {
    const lines = text
      .split(/[\r\n]/)
      .map((l) => l.trim())
      .filter((l) => l !== '');
    const last = lines[lines.length - 1];
    if (last !== undefined) this.lastMessage = last.slice(0, 500);
  }

  /** Requests of the completed runs plus the current run's overall rate × its time so far. */
  requests(): number {
    let n = this.completedRuns * this.perRun;
    const last = this.runLast;
    if (last !== undefined && this.runFirstAt !== undefined && Number.isFinite(last.overall)) {
      // The first progress line comes one interval after the run began.
      const dtMs = last.atMs - this.runFirstAt + PROGRESS_INTERVAL_MS;
      n += Math.round((last.overall * dtMs) / 1000);
    }
    return n;
  }
}

/**
 * Sends one command to Redis at HOST:PORT from inside `netns` (a short-lived node process there relays the
 * bytes; the reply is parsed here) and returns the reply; an error reply is returned, not thrown. Throws
 * CommandFailed when it cannot connect or the reply is malformed, Timeout when no complete reply comes
 * within `timeoutMs`.
 */
export async function redisCommand(
  netns: string,
  host: string,
  port: number,
  command: readonly string[],
  timeoutMs = 5000,
): Promise<RespValue> {
  checkNetns(netns);
  checkHost(host);
  positive(port, 'port', 65535);
  // QUIT makes Redis close the connection once it has answered both, which ends the relay.
  const request = Buffer.concat([encodeCommand(command), encodeCommand(['QUIT'])]);
  const res = await runInNetns(
    netns,
    process.execPath,
    ['-e', RELAY_SCRIPT, host, String(port), request.toString('base64'), String(timeoutMs)],
    timeoutMs + 10_000,
  );
  const what = `redis ${host}:${port} ${command[0] ?? ''}`;
  if (res.code !== 0) {
    throw new UnavailableError(
      res.code === 3 ? ErrorCode.Timeout : ErrorCode.CommandFailed,
      `${what}: ${res.stderr.trim().split('\n').pop() || `exit ${res.code}`}`,
    );
  }
  const parser = new RespParser();
  let replies: RespValue[];
  try {
    replies = parser.push(Buffer.from(res.stdout.trim(), 'base64'));
    parser.end();
  } catch (err) {
    throw new UnavailableError(
      ErrorCode.CommandFailed,
      `${what}: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  const reply = replies[0];
  if (reply === undefined) throw new UnavailableError(ErrorCode.CommandFailed, `${what}: no reply`);
  return reply;
}

/**
 * Waits until Redis at HOST:PORT answers PING with PONG from inside `netns`; throws Timeout with the last
 * answer or error after `timeoutMs`, InvalidFlag at once on a bad namespace, host or port.
 */
export async function waitRedisReady(
  netns: string,
  host: string,
  port: number = REDIS_PORT,
  timeoutMs = 30_000,
): Promise<void> {
  checkNetns(netns);
  checkHost(host);
  positive(port, 'port', 65535);
  const deadline = performance.now() + timeoutMs;
  let last = 'no answer';
  for (;;) {
    const left = deadline - performance.now();
    try {
      const reply = await redisCommand(netns, host, port, ['PING'], Math.max(200, Math.min(2000, left)));
      if (reply.type === 'simple' && reply.value === 'PONG') return;
      last = describeReply(reply);
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (performance.now() >= deadline) {
      throw new UnavailableError(
        ErrorCode.Timeout,
        `redis at ${host}:${port} did not answer PING within ${timeoutMs} ms: ${last}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The relay run inside the namespace: connects, writes the request, and prints everything it read as base64
 * once the server closed; exit 2 on a socket error, 3 on the timeout.
 */
const RELAY_SCRIPT = `
const net = require('node:net');
const [host, port, request, ms] = process.argv.slice(1);
const chunks = [];
const timer = setTimeout(() => { process.stderr.write('no complete reply after ' + ms + ' ms\\n'); process.exit(3); }, Number(ms));
const s = net.connect({ host, port: Number(port) }, () => s.write(Buffer.from(request, 'base64')));
s.on('data', (c) => chunks.push(c));
s.on('error', (e) => { process.stderr.write((e.code || e.message) + '\\n'); process.exitCode = 2; });
s.on('close', () => { clearTimeout(timer); process.stdout.write(Buffer.concat(chunks).toString('base64') + '\\n'); });
`;

function checkNetns(netns: string): void {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(netns) || netns === '.' || netns === '..') {
    throw new InvalidArgumentError(ErrorCode.InvalidFlag, `${JSON.stringify(netns)} is not a namespace name`);
  }
}

function checkHost(host: string): void {
  if (!/^[A-Za-z0-9_.:-]{1,253}$/.test(host) || host.startsWith('-')) {
    throw new InvalidArgumentError(ErrorCode.InvalidFlag, `${JSON.stringify(host)} is not a host`);
  }
}

function positive(n: number, what: string, max: number): number {
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new InvalidArgumentError(ErrorCode.InvalidFlag, `redis load: ${what} ${n} is not 1–${max}`);
  }
  return n;
}
