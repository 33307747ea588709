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
import { randomInt } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
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
import { errorLines, formatEntry, parseCriuLog } from '../criu/log.js';
import { BaselineSteps } from './baseline-steps.js';
import type { BaselineContext, BaselineKind, BaselineReport } from './baseline.js';
import {
  LISTEN_TIMEOUT_MS,
  describeExit,
  processFailure,
  startInNetns,
  streamOverLink,
  type NetnsProcess,
} from './link-stream.js';

/** Longest the page server and its relay may take to end once the dump has returned. */
const PAGE_SERVER_END_TIMEOUT_MS = 15_000;
/** Ports tried for `criu page-server` (it takes no port 0): below Linux's ephemeral range. */
const PAGE_SERVER_PORTS = { first: 20_000, count: 12_000, attempts: 5 } as const;

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
  await requireTools(['bash', 'tar', 'zstd', 'nsenter']);
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
  await requireTools(['bash', 'tar', 'zstd', 'nsenter']);
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
              `the page-server relay on ${ctx.to.name} did not start listening`,
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
    if (!relayed) throw processFailure('the page-server relay', relay.proc, rl);
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
    return this.rolledBack(err, this.sinceCheckpoint());
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
  const transferLines = parseCriuLog(fullLog ? await readFile(fullLog, 'utf8').catch(() => '') : '')
    .map(formatEntry)
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
 * Copies `files` (default: all) of `srcDir` into `dstDir` as `tar | zstd -1 -T0` over the link
 * from `from` to `to` (streamOverLink), `zstd -d | tar -x` on arrival. Resolves with the stream's
 * length on the wire.
 */
async function streamTree(
  from: TestbedHost,
  to: TestbedHost,
  srcDir: string,
  dstDir: string,
  files: readonly string[] = ['.'],
): Promise<number> {
  await mkdir(dstDir, { recursive: true });
  const { bytes } = await streamOverLink(from, to, {
    source: 'tar -C "$1" -cf - "${@:2}" | zstd -1 -T0 -q -c',
    sourceArgs: [srcDir, ...files],
    sink: 'zstd -d -q -c | tar -C "$1" -xf -',
    sinkArgs: [dstDir],
    what: `the copy of ${srcDir}`,
  });
  return bytes;
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

/** The errors of a CRIU log file (criu/log.ts errorLines); empty when it cannot be read. */
async function criuErrorLines(path: string): Promise<string[]> {
  return errorLines(await readFile(path, 'utf8').catch(() => ''));
}

// ---- small helpers ----

/** Fails with ToolMissing unless every tool is in PATH. */
async function requireTools(names: readonly string[]): Promise<void> {
  const missing: string[] = [];
  for (const n of names) if ((await which(n)) === undefined) missing.push(n);
  if (missing.length > 0) {
    throw new FailedPreconditionError(ErrorCode.ToolMissing, `the baselines need ${missing.join(', ')}`, {
      hint: `apt-get install ${missing.map((m) => (m === 'nsenter' ? 'util-linux' : m)).join(' ')}`,
    });
  }
}
