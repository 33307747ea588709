/**
 * Bytes over a testbed's shaped link the way an operator's script would move them, for the
 * baselines: processes run inside a host's network namespace, and one plain TCP connection from
 * one host's address to another's (so it crosses their link) carries the stdout of a bash
 * pipeline on the first host to the stdin of a bash pipeline on the second, counted at both ends.
 *
 * Processes start with `nsenter --net=/run/netns/NS` (the network namespace only, as the testbed's
 * daemons: `ip netns exec` would add a private mount namespace), each the leader of its own process
 * group, so that a kill ends a whole pipeline.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import { systemClock } from '../core/clock.js';
import { ErrorCode, InternalError, UnavailableError } from '../core/errors.js';
import type { TestbedHost } from '../core/testbed.js';
import { netnsPath } from '../testbed/system.js';

/** Longest one stream may take by default (a few hundred MiB on a slow link). */
export const STREAM_TIMEOUT_MS = 10 * 60_000;
/** Longest a stream's receiver (or a relay, a page server) may take to listen. */
export const LISTEN_TIMEOUT_MS = 15_000;

// ---- processes in a host's namespace ----

/** How a process ended. */
export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** When it ended (monotonic ms). */
  at: number;
}

/** `exit status N` or `signal SIG`. */
export function describeExit(e: { code: number | null; signal: NodeJS.Signals | null }): string {
  return e.signal ? `signal ${e.signal}` : `exit status ${e.code}`;
}

/** A process started by `startInNetns`: its own process group, stderr kept. */
export interface NetnsProcess {
  readonly exited: Promise<ProcessExit>;
  /** Everything it has written to stderr so far. */
  stderr(): string;
  /**
   * The first match of `re` in its stderr; rejects (TransferFailed, message `${failure}: why`)
   * when it exits first or `timeoutMs` passes.
   */
  waitFor(re: RegExp, timeoutMs: number, failure: string): Promise<RegExpExecArray>;
  /** With `statusFd`: true once it has written to fd 3; false when it exits or `timeoutMs` passes first. */
  ready(timeoutMs: number): Promise<boolean>;
  /** Its exit, or a kill and then its exit when it takes longer than `timeoutMs`. */
  exitedWithin(timeoutMs: number): Promise<ProcessExit>;
  /** SIGKILL to its process group, unless it has exited. */
  kill(): void;
}

/**
 * Runs `argv` inside network namespace `netns` as the leader of a new process group. stdin and
 * stdout are /dev/null; with `statusFd`, fd 3 is a pipe that `ready` watches.
 */
export function startInNetns(
  netns: string,
  argv: readonly string[],
  opts: { statusFd?: boolean } = {},
): NetnsProcess {
  const child: ChildProcess = spawn('nsenter', [`--net=${netnsPath(netns)}`, '--', ...argv], {
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
    async waitFor(re, timeoutMs, failure) {
      const found = await until<RegExpExecArray | Error>(
        () => re.exec(err) ?? (exit ? new Error(`exited (${describeExit(exit)})`) : undefined),
        timeoutMs,
        () => new Error(`nothing after ${timeoutMs} ms`),
      );
      if (found instanceof Error) {
        throw new UnavailableError(ErrorCode.TransferFailed, `${failure}: ${found.message}`, {
          details: err.split('\n').filter(Boolean).slice(-6),
        });
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

/**
 * TransferFailed: `${what} ended with EXIT`, its first line of its own on stderr quoted (the
 * status lines of a stream's ends or a relay left out), its last lines as details.
 */
export function processFailure(what: string, p: NetnsProcess, e: ProcessExit): UnavailableError {
  const lines = p
    .stderr()
    .split('\n')
    .filter((l) => l.trim() && !/^(listening|sent|received|relayed) /.test(l));
  return new UnavailableError(
    ErrorCode.TransferFailed,
    `${what} ended with ${describeExit(e)}${lines[0] ? `: ${lines[0]}` : ''}`,
    { details: lines.slice(-6) },
  );
}

// ---- one stream over the link ----

/**
 * The receiving end (node -e; argv: ADDRESS): accepts one connection on ADDRESS, a free port, says
 * `listening PORT` on stderr, copies the connection to stdout and says `received N`.
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

const LISTENING = /^listening (\d+)$/m;

/** What `streamOverLink` runs at each end. */
export interface LinkStreamOptions {
  /**
   * A bash pipeline, run in `from`'s namespace, that writes the bytes to stdout; its positional
   * parameters ($1…) are `sourceArgs`: paths go there, never into the text.
   */
  source: string;
  sourceArgs?: readonly string[];
  /** A bash pipeline, run in `to`'s namespace, that reads the bytes from stdin; $1… are `sinkArgs`. */
  sink: string;
  sinkArgs?: readonly string[];
  /** What is streamed, for messages (`the copy of DIR`): they say `${what} from H1 to H2: …`. */
  what: string;
  /** The stream fails (Timeout) after this long, both ends killed. Default STREAM_TIMEOUT_MS. */
  timeoutMs?: number;
  /** The stream must carry exactly this many bytes (a file's size), else TransferFailed. */
  expectBytes?: number;
}

/**
 * The receiving end's command line: bash (with pipefail) runs RECEIVER_JS on `address` into
 * `sink`, called with `sinkArgs` as its positional parameters. Pure.
 */
export function receiverCommand(sink: string, address: string, sinkArgs: readonly string[]): string[] {
  const script = `set -o pipefail\ngodwit_sink() {\n${sink}\n}\n"$1" -e "$2" "$3" | godwit_sink "\${@:4}"`;
  return ['bash', '-c', script, 'link-stream-receiver', process.execPath, RECEIVER_JS, address, ...sinkArgs];
}

/**
 * The sending end's command line: bash (with pipefail) runs `source`, called with `sourceArgs`
 * as its positional parameters, into SENDER_JS from `fromAddress` to `toAddress`:`port`. Pure.
 */
export function senderCommand(
  source: string,
  fromAddress: string,
  toAddress: string,
  port: string,
  sourceArgs: readonly string[],
): string[] {
  const script = `set -o pipefail\ngodwit_source() {\n${source}\n}\ngodwit_source "\${@:6}" | "$1" -e "$2" "$3" "$4" "$5"`;
  return [
    'bash',
    '-c',
    script,
    'link-stream-sender',
    process.execPath,
    SENDER_JS,
    fromAddress,
    toAddress,
    port,
    ...sourceArgs,
  ];
}

/**
 * Which end failed first, when one did: the other was ended for it (a receiver that waits for a
 * sender that is gone waits forever, so one end failing kills the other). Pure.
 */
export function failedFirst(sender: ProcessExit, receiver: ProcessExit): 'sender' | 'receiver' | undefined {
  if (sender.code !== 0 && (receiver.code === 0 || sender.at <= receiver.at)) return 'sender';
  return receiver.code !== 0 ? 'receiver' : undefined;
}

/**
 * Streams `o.source`'s stdout on `from` to `o.sink`'s stdin on `to` over one TCP connection from
 * `from.address` to `to.address` (a free port), each end in its host's network namespace, so the
 * bytes cross their shaped link. Resolves, once both ends have exited 0, with the bytes on the
 * wire, which the sender and the receiver both counted alike. Rejects with an UnavailableError:
 * Timeout after `o.timeoutMs`; TransferFailed when the receiver does not listen, an end fails (the
 * first to fail is named, its stderr quoted; a failing stage of a pipeline fails its end), or the
 * counts disagree (with each other, or with `o.expectBytes`). Both ends are gone when it settles.
 */
export async function streamOverLink(
  from: TestbedHost,
  to: TestbedHost,
  o: LinkStreamOptions,
): Promise<{ bytes: number }> {
  const what = `${o.what} from ${from.name} to ${to.name}`;
  if (!o.source.trim() || !o.sink.trim()) {
    throw new InternalError(ErrorCode.Internal, `${what}: an empty source or sink pipeline`);
  }
  const timeoutMs = o.timeoutMs ?? STREAM_TIMEOUT_MS;
  const receiver = startInNetns(to.netns, receiverCommand(o.sink, to.address, o.sinkArgs ?? []));
  let sender: NetnsProcess | undefined;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    receiver.kill();
    sender?.kill();
  }, timeoutMs);
  const timeout = (): UnavailableError =>
    new UnavailableError(ErrorCode.Timeout, `${what} took over ${timeoutMs} ms`);
  try {
    const listening = await receiver
      .waitFor(LISTENING, LISTEN_TIMEOUT_MS, `${what}: the receiver on ${to.name} did not start listening`)
      .catch((err: unknown) => {
        throw timedOut ? timeout() : err;
      });
    const s = startInNetns(
      from.netns,
      senderCommand(o.source, from.address, to.address, listening[1] ?? '', o.sourceArgs ?? []),
    );
    sender = s;
    void s.exited.then((e) => e.code !== 0 && receiver.kill());
    void receiver.exited.then((e) => e.code !== 0 && s.kill());
    const [se, re] = await Promise.all([s.exited, receiver.exited]);
    if (timedOut) throw timeout();
    const first = failedFirst(se, re);
    if (first === 'sender') throw processFailure(`${what}: the sending side`, s, se);
    if (first === 'receiver') throw processFailure(`${what}: the receiving side`, receiver, re);
    const sent = /^sent (\d+)$/m.exec(s.stderr())?.[1];
    const received = /^received (\d+)$/m.exec(receiver.stderr())?.[1];
    if (
      sent === undefined ||
      sent !== received ||
      (o.expectBytes !== undefined && Number(sent) !== o.expectBytes)
    ) {
      throw new UnavailableError(
        ErrorCode.TransferFailed,
        `${what}: ${o.expectBytes === undefined ? '' : `${o.expectBytes} bytes, `}sent ${sent ?? '?'} bytes, received ${received ?? '?'}`,
      );
    }
    return { bytes: Number(received) };
  } finally {
    clearTimeout(timer);
    receiver.kill();
    sender?.kill();
  }
}
