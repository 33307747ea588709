/**
 * The baselines godwit's strategies are measured against, run on a testbed (hosts are network
 * namespaces joined by shaped links, each with an agent; one filesystem):
 *  - by hand: checkpoint through the source agent (the container stops), `tar | zstd -1 -T0` over
 *    one plain TCP connection from the source host's address to the destination's, `zstd -d |
 *    tar -x`, restore through the destination agent;
 *  - CRIU's page server: `criu page-server` on the destination receives the memory straight from
 *    the dump (`runc checkpoint --page-server`), the rest of the checkpoint goes as by hand.
 * Both keep the container's one copy: a failure before the destination runs it restores the source
 * from its own checkpoint. Bytes on the wire are counted where they cross the link: by the tar
 * stream's receiver, and by a relay in front of the page server (both directions).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { systemClock } from '../core/clock.js';
import {
  ErrorCode,
  FailedPreconditionError,
  UnavailableError,
  errorMessage,
  isGodwitError,
} from '../core/errors.js';
import { ContainerStatus, type CheckpointResult, type ContainerInfo } from '../core/runtime.js';
import type { TestbedHost } from '../core/testbed.js';
import { treeBytes } from '../runtime/index.js';
import { which } from '../system/exec.js';
import { defaultToolsDir, toolPaths } from '../system/tools.js';
import { BaselineSteps } from './baseline-steps.js';
import type { BaselineContext, BaselineKind, BaselineReport } from './baseline.js';

/** Longest one tar stream may take (a few hundred MiB on a slow link). */
const COPY_TIMEOUT_MS = 10 * 60_000;
/** Longest a receiver, relay or page server may take to listen. */
const LISTEN_TIMEOUT_MS = 15_000;
/** Longest the page server and its relay may take to end once the dump has returned. */
const PAGE_SERVER_END_TIMEOUT_MS = 15_000;
/** Ports tried for `criu page-server` (it takes no port 0): below Linux's ephemeral range. */
const PAGE_SERVER_PORTS = { first: 20_000, count: 12_000, attempts: 5 } as const;

/**
 * The stream's receiving end (node -e; argv: ADDRESS): accepts one connection on ADDRESS, a free
 * port, says `listening PORT` on stderr, copies the connection to stdout and says `received N`.
 */
const RECEIVER_JS = `
const net = require('node:net');
let n = 0;
const fail = (e) => { process.stderr.write('receiver: ' + e.message + '\\n'); process.exit(1); };
const srv = net.createServer((c) => {
  srv.close();
  c.on('data', (d) => { n += d.length; });
  c.on('end', () => process.stderr.write('received ' + n + '\\n'));
  c.on('error', fail);
  c.pipe(process.stdout);
});
srv.on('error', fail);
srv.listen(0, process.argv[1], () => process.stderr.write('listening ' + srv.address().port + '\\n'));
`;

/** The sending end (argv: FROM_ADDRESS TO_ADDRESS PORT): stdin to one connection, then `sent N`. */
const SENDER_JS = `
const net = require('node:net');
let n = 0;
const s = net.connect({ host: process.argv[2], port: Number(process.argv[3]), localAddress: process.argv[1] });
s.on('error', (e) => { process.stderr.write('sender: ' + e.message + '\\n'); process.exit(1); });
s.on('close', (hadError) => { if (!hadError) process.stderr.write('sent ' + n + '\\n'); });
process.stdin.on('data', (d) => { n += d.length; });
process.stdin.pipe(s);
`;

/**
 * A byte-counting TCP relay (argv: LISTEN_ADDRESS TARGET_ADDRESS TARGET_PORT): accepts one
 * connection, forwards it both ways, says `listening PORT`, and at the end `relayed UP DOWN`.
 */
const RELAY_JS = `
const net = require('node:net');
let up = 0, down = 0, closed = 0;
const srv = net.createServer((a) => {
  srv.close();
  const b = net.connect({ host: process.argv[2], port: Number(process.argv[3]) });
  a.on('data', (d) => { up += d.length; });
  b.on('data', (d) => { down += d.length; });
  a.pipe(b);
  b.pipe(a);
  const done = () => { if (++closed === 2) process.stderr.write('relayed ' + up + ' ' + down + '\\n'); };
  a.on('close', done);
  b.on('close', done);
  a.on('error', (e) => { process.stderr.write('relay: client: ' + e.message + '\\n'); b.destroy(); });
  b.on('error', (e) => { process.stderr.write('relay: page server: ' + e.message + '\\n'); a.destroy(); });
});
srv.on('error', (e) => { process.stderr.write('relay: ' + e.message + '\\n'); process.exit(1); });
srv.listen(0, process.argv[1], () => process.stderr.write('listening ' + srv.address().port + '\\n'));
`;

/** Receiving side ($0 node, $1 receiver script, $2 address, $3 directory). */
const RECEIVE_SH = 'set -o pipefail; "$0" -e "$1" "$2" | zstd -d -q -c | tar -C "$3" -xf -';
/** Sending side ($0 directory, $1 node, $2 sender script, $3 from, $4 to, $5 port, $6… files). */
const SEND_SH =
  'set -o pipefail; tar -C "$0" -cf - "${@:6}" | zstd -1 -T0 -q -c | "$1" -e "$2" "$3" "$4" "$5"';

/**
 * Migrates `ctx.name` from `ctx.from` to `ctx.to` the way an operator would script it: checkpoint
 * through the source agent (CRIU, established TCP connections included; the container stops),
 * the checkpoint directory as `tar | zstd -1 -T0` over one TCP connection from the source host's
 * address to the destination's (so it crosses their shaped link), `zstd -d | tar -x` there,
 * restore through the destination agent under the same name, then the source's record is removed.
 * Wire bytes: the compressed stream's length. Before the destination runs it, any failure restores
 * the source from its own checkpoint ('rolled-back'). Throws, with the container still running on
 * `from`, when the checkpoint itself fails or a tool is missing; throws also when the container's
 * fate cannot be told (the destination does not answer), rather than risk two copies.
 */
export async function migrateByHandTarZstd(ctx: BaselineContext): Promise<BaselineReport> {
  await requireTools(['bash', 'tar', 'zstd', 'ip']);
  const run = new BaselineRun(ctx, 'byhand');
  const base = await mkdtemp(join(resolve(ctx.workDir), `byhand-${ctx.name}-`));
  const srcDir = join(base, `from-${ctx.from.name}`);
  const dstDir = join(base, `to-${ctx.to.name}`);
  const cp = await run.step('checkpoint', () =>
    ctx.agents[0].checkpoint(ctx.name, { dir: srcDir, tcpEstablished: true }),
  );
  run.logicalBytes = cp.imageBytes;
  try {
    run.wireBytes += await run.step('copy', () => streamTree(ctx.from, ctx.to, srcDir, dstDir));
    await run.step('restore', () =>
      ctx.agents[1].restore({ dir: dstDir, name: ctx.name, tcpEstablished: true }),
    );
  } catch (err) {
    return run.failed(err, dstDir, () => restoreSource(ctx, srcDir));
  }
  return run.committed();
}

/**
 * Migrates `ctx.name` with CRIU's own stop-and-copy to a page server: `criu page-server` in the
 * destination host's namespace on its address, behind a byte-counting relay on the same address;
 * the source agent checkpoints with `pageServer` (runc checkpoint --page-server), so the memory
 * (pagemap-*.img, pages-*.img) is written by the page server into the destination's checkpoint
 * directory while the dump runs; the rest of the checkpoint follows as by hand (tar | zstd over one
 * TCP connection), then the destination agent restores. Wire bytes: the page-server connection's
 * payload, both directions, plus the tar stream. Before the destination runs it, a failure brings
 * the memory back over the same kind of stream and restores the source ('rolled-back'). Throws,
 * with the container still running on `from`, when the page server or the dump to it fails: an
 * UnavailableError GODWIT_CRIU_DUMP_FAILED whose message quotes CRIU's log.
 */
export async function migrateCriuPageServer(ctx: BaselineContext): Promise<BaselineReport> {
  await requireTools(['bash', 'tar', 'zstd', 'ip']);
  const criu = toolPaths(defaultToolsDir()).criu;
  const run = new BaselineRun(ctx, 'criu-page-server');
  const base = await mkdtemp(join(resolve(ctx.workDir), `criu-page-server-${ctx.name}-`));
  const srcDir = join(base, `from-${ctx.from.name}`);
  const dstDir = join(base, `to-${ctx.to.name}`);
  const psWorkDir = join(base, 'page-server');
  const pagesDir = join(dstDir, 'criu');
  await mkdir(pagesDir, { recursive: true });
  await mkdir(psWorkDir, { recursive: true });

  const { server, relay } = await run.step('page-server', async () => {
    const server = await startPageServer(criu, ctx.to, pagesDir, psWorkDir);
    try {
      const relay = startInNetns(ctx.to.netns, [
        process.execPath,
        '-e',
        RELAY_JS,
        ctx.to.address,
        ctx.to.address,
        String(server.port),
      ]);
      try {
        const port = Number(
          (
            await relay.waitFor(
              /^listening (\d+)$/m,
              LISTEN_TIMEOUT_MS,
              `the page-server relay on ${ctx.to.name}`,
            )
          )[1],
        );
        return { server, relay: { proc: relay, port } };
      } catch (err) {
        relay.kill();
        throw err;
      }
    } catch (err) {
      server.proc.kill();
      throw err;
    }
  });
  let cp: CheckpointResult;
  try {
    cp = await run.step('checkpoint', () =>
      ctx.agents[0].checkpoint(ctx.name, {
        dir: srcDir,
        tcpEstablished: true,
        pageServer: { address: ctx.to.address, port: relay.port },
      }),
    );
  } catch (err) {
    relay.proc.kill();
    server.proc.kill();
    await Promise.all([relay.proc.exited, server.proc.exited]);
    throw await pageServerDumpError(err, ctx, server.port, psWorkDir);
  }
  try {
    // The dump has ended its page-server session: the page server and the relay end with it.
    const [ps, rl] = await Promise.all([
      server.proc.exitedWithin(PAGE_SERVER_END_TIMEOUT_MS),
      relay.proc.exitedWithin(PAGE_SERVER_END_TIMEOUT_MS),
    ]);
    const relayed = /^relayed (\d+) (\d+)$/m.exec(relay.proc.stderr());
    if (!relayed) throw streamError('the page-server relay', relay.proc, rl);
    run.wireBytes += Number(relayed[1]) + Number(relayed[2]);
    if (ps.code !== 0) {
      throw new UnavailableError(
        ErrorCode.TransferFailed,
        `criu page-server on ${ctx.to.name} ended with ${describeExit(ps)} after the dump`,
        { details: await criuErrorLines(join(psWorkDir, 'page-server.log')) },
      );
    }
  } catch (err) {
    relay.proc.kill();
    server.proc.kill();
    // Nothing ran on the destination: the memory is all there, in the page server's images.
    return run.failed(err, dstDir, () => restoreSourceWithPages(ctx, srcDir, pagesDir, run));
  }
  run.logicalBytes = cp.imageBytes + (await treeBytes(pagesDir));
  try {
    run.wireBytes += await run.step('copy', () => streamTree(ctx.from, ctx.to, srcDir, dstDir));
    await run.step('restore', () =>
      ctx.agents[1].restore({ dir: dstDir, name: ctx.name, tcpEstablished: true }),
    );
  } catch (err) {
    return run.failed(err, dstDir, () => restoreSourceWithPages(ctx, srcDir, pagesDir, run));
  }
  return run.committed();
}

// ---- one migration's bookkeeping ----

/** A baseline migration through the agents: BaselineSteps plus how it ends, committed or rolled back. */
class BaselineRun extends BaselineSteps {
  constructor(
    private readonly ctx: BaselineContext,
    kind: BaselineKind,
  ) {
    super(kind);
  }

  /** The destination runs it: the source's checkpointed record goes (a failure there changes nothing). */
  async committed(): Promise<BaselineReport> {
    const downtimeMs = this.sinceCheckpoint();
    await this.step('cleanup', () => this.ctx.agents[0].remove(this.ctx.name, { force: true })).catch(
      () => undefined,
    );
    return this.report('committed', downtimeMs);
  }

  /**
   * `err` happened after the checkpoint. Unless the destination runs the container after all
   * (restored from `dstDir`: then it is committed), `putBack` restores the source. Throws when
   * the destination cannot say, or the source cannot be restored.
   */
  async failed(err: unknown, dstDir: string, putBack: () => Promise<void>): Promise<BaselineReport> {
    let there: ContainerInfo | undefined;
    try {
      there = await this.ctx.agents[1].inspect(this.ctx.name);
    } catch (e) {
      if (!isGodwitError(e) || e.code !== ErrorCode.ContainerNotFound) {
        throw new UnavailableError(
          ErrorCode.AgentUnavailable,
          `${this.kind}: ${errorMessage(err)}; and ${this.ctx.to.name} cannot say whether it runs ` +
            `${this.ctx.name} (${errorMessage(e)}): not restoring it on ${this.ctx.from.name}, so that it never runs twice`,
          {
            cause: err,
            hint: `inspect ${this.ctx.name} on ${this.ctx.to.name}; its checkpoint is in ${dstDir}`,
          },
        );
      }
    }
    // Restored from our images after all (an answer lost on the way): it is the destination's.
    if (there?.restoredFrom === resolve(dstDir) && there.status === ContainerStatus.Running) {
      return this.committed();
    }
    try {
      await this.step('rollback', putBack);
    } catch (rollbackErr) {
      throw new UnavailableError(
        ErrorCode.CriuRestoreFailed,
        `${this.kind}: ${errorMessage(err)}; and the rollback on ${this.ctx.from.name} failed: ${errorMessage(rollbackErr)}`,
        {
          cause: rollbackErr,
          details: isGodwitError(rollbackErr) ? rollbackErr.details : [],
          hint:
            `its checkpoint is under ${dirname(dstDir)}: restore it by hand (godwit --host ${this.ctx.from.name} ` +
            `restore DIR --name ${this.ctx.name}) before that scratch directory is removed`,
        },
      );
    }
    const report = this.report('rolled-back', this.sinceCheckpoint());
    report.error = {
      code: isGodwitError(err) ? err.code : ErrorCode.Internal,
      message:
        errorMessage(err) + (isGodwitError(err) && err.details.length ? `: ${err.details.join(' | ')}` : ''),
    };
    return report;
  }
}

/** Restores the source from its own checkpoint (its checkpointed record goes first). */
async function restoreSource(ctx: BaselineContext, srcDir: string): Promise<void> {
  await ctx.agents[0].remove(ctx.name, { force: true }).catch(() => undefined);
  await ctx.agents[0].restore({ dir: srcDir, name: ctx.name, tcpEstablished: true });
}

/** The page server kept the memory on the destination: it comes back over the link first. */
async function restoreSourceWithPages(
  ctx: BaselineContext,
  srcDir: string,
  pagesDir: string,
  run: BaselineRun,
): Promise<void> {
  const files = (await readdir(pagesDir)).filter((f) => /^(pagemap|pages)-\d+\.img$/.test(f));
  if (files.length > 0) {
    run.wireBytes += await streamTree(ctx.to, ctx.from, pagesDir, join(srcDir, 'criu'), files);
  }
  await restoreSource(ctx, srcDir);
}

/** A CRIU log line about the page-server transfer (PAGE_SERVER_TOPIC) that says it failed. */
const PAGE_SERVER_TOPIC = /page.?server|connect to server|page-xfer|page-pipe|splice/i;
const FAILURE_WORDS = /error|fail|can't|cannot|unable|refused|reset|broken/i;

/**
 * The error of a failed dump to the page server. Its message quotes the first line of CRIU's full
 * dump log (the agent names it in its hint) that says how the page-server transfer failed, else
 * the dump's first error; details hold those lines and the page server's own errors.
 */
async function pageServerDumpError(
  err: unknown,
  ctx: BaselineContext,
  port: number,
  psWorkDir: string,
): Promise<Error> {
  const still = await ctx.agents[0].inspect(ctx.name).catch(() => undefined);
  const dumpLines = isGodwitError(err) ? [...err.details] : [];
  const fullLog = isGodwitError(err) ? /full CRIU log: (\S+)/.exec(err.hint ?? '')?.[1] : undefined;
  const transferLines = (fullLog ? await readFile(fullLog, 'utf8').catch(() => '') : '')
    .split('\n')
    .map(stripCriuTime)
    .filter((l) => PAGE_SERVER_TOPIC.test(l) && FAILURE_WORDS.test(l))
    .slice(0, 6);
  const serverLines = (await criuErrorLines(join(psWorkDir, 'page-server.log'))).map(
    (l) => `page-server: ${l}`,
  );
  const quote =
    transferLines[0] ??
    serverLines[0] ??
    dumpLines.find((l) => l.startsWith('Error')) ??
    dumpLines[0] ??
    errorMessage(err);
  return new UnavailableError(
    ErrorCode.CriuDumpFailed,
    `criu-page-server: the dump of ${ctx.name} to criu page-server at ${ctx.to.address}:${port} failed: ${quote}`,
    {
      cause: err,
      details: [...new Set([...transferLines, ...dumpLines, ...serverLines])],
      hint:
        (still?.status === ContainerStatus.Running
          ? `${ctx.name} still runs on ${ctx.from.name}`
          : `${ctx.name} is ${still?.status ?? 'unknown'} on ${ctx.from.name}`) +
        (isGodwitError(err) && err.hint ? `; ${err.hint}` : ''),
    },
  );
}

// ---- the tar stream ----

/**
 * Copies `files` (default: all) of `srcDir` into `dstDir` as `tar | zstd -1 -T0` over one TCP
 * connection from `from.address` to `to.address` (a free port), each end in its host's network
 * namespace, `zstd -d | tar -x` on arrival. Resolves with the stream's length on the wire.
 */
async function streamTree(
  from: TestbedHost,
  to: TestbedHost,
  srcDir: string,
  dstDir: string,
  files: readonly string[] = ['.'],
): Promise<number> {
  await mkdir(dstDir, { recursive: true });
  const receiver = startInNetns(to.netns, [
    'bash',
    '-c',
    RECEIVE_SH,
    process.execPath,
    RECEIVER_JS,
    to.address,
    dstDir,
  ]);
  let sender: NetnsProcess | undefined;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    receiver.kill();
    sender?.kill();
  }, COPY_TIMEOUT_MS);
  try {
    const port = (
      await receiver.waitFor(/^listening (\d+)$/m, LISTEN_TIMEOUT_MS, `the receiver on ${to.name}`)
    )[1] as string;
    const s = startInNetns(from.netns, [
      'bash',
      '-c',
      SEND_SH,
      srcDir,
      process.execPath,
      SENDER_JS,
      from.address,
      to.address,
      port,
      ...files,
    ]);
    sender = s;
    // One end failing ends the other: a receiver that waits for a sender that is gone waits forever.
    void s.exited.then((e) => e.code !== 0 && receiver.kill());
    void receiver.exited.then((e) => e.code !== 0 && s.kill());
    const [se, re] = await Promise.all([s.exited, receiver.exited]);
    const what = `the copy of ${srcDir} from ${from.name} to ${to.name}`;
    if (timedOut) throw new UnavailableError(ErrorCode.Timeout, `${what} took over ${COPY_TIMEOUT_MS} ms`);
    // The side that failed first names the cause; the other was ended for it.
    const first =
      se.code !== 0 && (re.code === 0 || se.at <= re.at) ? 'sender' : re.code !== 0 ? 'receiver' : undefined;
    if (first === 'sender') throw streamError(`${what}: the sending side`, s, se);
    if (first === 'receiver') throw streamError(`${what}: the receiving side`, receiver, re);
    const sent = /^sent (\d+)$/m.exec(s.stderr());
    const received = /^received (\d+)$/m.exec(receiver.stderr());
    if (!sent || !received || sent[1] !== received[1]) {
      throw new UnavailableError(
        ErrorCode.TransferFailed,
        `${what}: sent ${sent?.[1] ?? '?'} bytes, received ${received?.[1] ?? '?'}`,
      );
    }
    return Number(received[1]);
  } finally {
    clearTimeout(timer);
    receiver.kill();
    sender?.kill();
  }
}

function streamError(what: string, p: NetnsProcess, e: ProcessExit): UnavailableError {
  const lines = p
    .stderr()
    .split('\n')
    .filter((l) => l.trim() && !/^(listening|sent|received|relayed) /.test(l));
  return new UnavailableError(ErrorCode.TransferFailed, `${what} ended with ${describeExit(e)}`, {
    details: lines.slice(-6),
  });
}

// ---- CRIU's page server ----

/**
 * Starts `criu page-server` in `host`'s namespace on its address, writing into `imagesDir`; it
 * serves one dump and exits. Resolves once it listens (CRIU's status fd); tries other ports when
 * one is taken.
 */
async function startPageServer(
  criu: string,
  host: TestbedHost,
  imagesDir: string,
  workDir: string,
): Promise<{ port: number; proc: NetnsProcess }> {
  const log = join(workDir, 'page-server.log');
  for (let attempt = 1; ; attempt++) {
    const port = PAGE_SERVER_PORTS.first + randomInt(PAGE_SERVER_PORTS.count);
    const proc = startInNetns(
      host.netns,
      [
        criu,
        'page-server',
        '--images-dir',
        imagesDir,
        '--work-dir',
        workDir,
        '--address',
        host.address,
        '--port',
        String(port),
        '--log-file',
        'page-server.log',
        '--status-fd',
        '3',
      ],
      { statusFd: true },
    );
    const ready = await proc.ready(LISTEN_TIMEOUT_MS);
    if (ready) return { port, proc };
    proc.kill();
    const e = await proc.exited;
    const lines = await criuErrorLines(log);
    if (attempt < PAGE_SERVER_PORTS.attempts && lines.some((l) => /Address already in use/.test(l))) continue;
    throw new UnavailableError(
      ErrorCode.CriuDumpFailed,
      `criu page-server did not start on ${host.name} (${host.address}:${port}): ${lines[0] ?? describeExit(e)}`,
      { details: [...lines, ...proc.stderr().split('\n').filter(Boolean).slice(-3)], hint: `see ${log}` },
    );
  }
}

/**
 * The error lines of a CRIU log file, without their time stamps (some, such as a failed bind, come
 * before CRIU stamps its lines); empty when it cannot be read.
 */
async function criuErrorLines(path: string): Promise<string[]> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text
    .split('\n')
    .map(stripCriuTime)
    .filter((l) => l.startsWith('Error ('))
    .slice(0, 6);
}

function stripCriuTime(line: string): string {
  return line.replace(/^\(\s*[\d.]+\)\s*/, '');
}

// ---- processes in a host's namespace ----

interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** When it ended (monotonic ms). */
  at: number;
}

function describeExit(e: { code: number | null; signal: NodeJS.Signals | null }): string {
  return e.signal ? `signal ${e.signal}` : `exit status ${e.code}`;
}

/** A process started by `startInNetns`: its own process group, stderr kept. */
interface NetnsProcess {
  readonly exited: Promise<ProcessExit>;
  /** Everything it has written to stderr so far. */
  stderr(): string;
  /**
   * The first match of `re` in its stderr; rejects (TransferFailed, naming it `what`) when it
   * exits first or `timeoutMs` passes.
   */
  waitFor(re: RegExp, timeoutMs: number, what: string): Promise<RegExpExecArray>;
  /** With `statusFd`: true once it has written to fd 3; false when it exits or `timeoutMs` passes first. */
  ready(timeoutMs: number): Promise<boolean>;
  /** Its exit, or a kill and then its exit when it takes longer than `timeoutMs`. */
  exitedWithin(timeoutMs: number): Promise<ProcessExit>;
  /** SIGKILL to its process group, unless it has exited. */
  kill(): void;
}

/**
 * Runs `argv` inside network namespace `netns` (`ip netns exec`, which execs it) as the leader of
 * a new process group, so that `kill` ends a whole pipeline. stdin and stdout are /dev/null.
 */
function startInNetns(
  netns: string,
  argv: readonly string[],
  opts: { statusFd?: boolean } = {},
): NetnsProcess {
  const child: ChildProcess = spawn('ip', ['netns', 'exec', netns, ...argv], {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe', ...(opts.statusFd ? (['pipe'] as const) : [])],
  });
  let err = '';
  const listeners = new Set<() => void>();
  const changed = (): void => {
    for (const l of [...listeners]) l();
  };
  child.stderr?.setEncoding('utf8').on('data', (c: string) => {
    err += c;
    changed();
  });
  let status = false;
  const statusStream = opts.statusFd ? (child.stdio[3] as Readable | null) : null;
  statusStream?.on('data', () => {
    status = true;
    changed();
  });
  statusStream?.on('error', () => undefined);
  let exit: ProcessExit | undefined;
  const exited = new Promise<ProcessExit>((res) => {
    child.on('error', (e) => {
      err += `${e.message}\n`;
      exit ??= { code: 127, signal: null, at: systemClock.monotonic() };
      res(exit);
      changed();
    });
    child.on('close', (code, signal) => {
      exit ??= { code, signal, at: systemClock.monotonic() };
      res(exit);
      changed();
    });
  });
  const until = <T>(check: () => T | undefined, timeoutMs: number, onTimeout: () => T): Promise<T> =>
    new Promise<T>((res) => {
      const l = (): void => {
        const v = check();
        if (v === undefined) return;
        listeners.delete(l);
        clearTimeout(timer);
        res(v);
      };
      const timer = setTimeout(() => {
        listeners.delete(l);
        res(onTimeout());
      }, timeoutMs);
      listeners.add(l);
      l();
    });
  const kill = (): void => {
    if (exit !== undefined || child.pid === undefined || child.exitCode !== null || child.signalCode !== null)
      return;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  };
  return {
    exited,
    stderr: () => err,
    async waitFor(re, timeoutMs, what) {
      const found = await until<RegExpExecArray | Error>(
        () => re.exec(err) ?? (exit ? new Error(`exited (${describeExit(exit)})`) : undefined),
        timeoutMs,
        () => new Error(`nothing after ${timeoutMs} ms`),
      );
      if (found instanceof Error) {
        throw new UnavailableError(
          ErrorCode.TransferFailed,
          `${what} did not start listening: ${found.message}`,
          { details: err.split('\n').filter(Boolean).slice(-6) },
        );
      }
      return found;
    },
    ready: (timeoutMs) =>
      until(
        () => (status ? true : exit ? false : undefined),
        timeoutMs,
        () => false,
      ),
    async exitedWithin(timeoutMs) {
      const timer = setTimeout(kill, timeoutMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
    kill,
  };
}

// ---- small helpers ----

/** Fails with ToolMissing unless every tool is in PATH. */
async function requireTools(names: readonly string[]): Promise<void> {
  const missing: string[] = [];
  for (const n of names) if ((await which(n)) === undefined) missing.push(n);
  if (missing.length > 0) {
    throw new FailedPreconditionError(ErrorCode.ToolMissing, `the baselines need ${missing.join(', ')}`, {
      hint: `apt-get install ${missing.map((m) => (m === 'ip' ? 'iproute2' : m)).join(' ')}`,
    });
  }
}
