/**
 * Service-interruption probe: measures what a client sees while a service is checkpointed,
 * migrated or restarted. Two series run side by side against one target:
 *
 *   fresh       a new TCP connection per request (GET, `Connection: close`), one every interval;
 *   long-lived  ONE keep-alive connection for the whole run, a GET on it every interval; when it breaks
 *               the break is recorded and the series reconnects and goes on.
 *
 * Each series has at most one request outstanding: when one is slow, the next starts when it ends.
 * Reported per series: counts by outcome, the longest gap between successful replies, latency
 * percentiles, and the continuity of the `counter N` values the service returns (godwit-counterd).
 * A `redis://` target gets `INCR godwit:probe` instead of the GET, and its integer reply is the counter
 * (see protocol.ts). Timestamps come from the injected Clock; per-request timeouts run on real timers,
 * as sockets are real.
 */
import { Socket } from 'node:net';
import { systemClock, type Clock } from '../core/clock.js';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';
import { formatHostPort, HttpProtocolError, parseTarget, type ProbeTarget } from './http.js';
import { protocolFor, type ProbeProtocol, type ProbeReply, type ReplyParser } from './protocol.js';
import { RespProtocolError } from './resp.js';
import { countDecreases, longestGap, summarizeLatency, type LatencySummary } from './stats.js';

/** How a request failed: refused (ECONNREFUSED), reset (reset or closed by the peer before a complete reply), timeout, other. */
export type ProbeErrorKind = 'refused' | 'reset' | 'timeout' | 'other';

/** Every error kind, in report order. */
export const PROBE_ERROR_KINDS: readonly ProbeErrorKind[] = ['refused', 'reset', 'timeout', 'other'];

/** Options of `runProbe`. */
export interface ProbeOptions {
  /** `host:port`, `http://host:port/path` or `redis://host:port`. */
  target: string;
  /** Time between the starts of two requests of a series, ms; default 5. */
  intervalMs?: number;
  /** How long to keep sending requests, ms. */
  durationMs: number;
  /** A request without a complete reply after this long counts as a timeout, ms; default 1000. */
  timeoutMs?: number;
  /**
   * The long-lived connection is given up (a break, then a reconnect) when a request has had no reply for this
   * long, ms; default 5 × timeoutMs. Until then a late reply still arrives on it: TCP retransmits across a
   * checkpoint take a while, and an intact connection should not be counted as broken because it was slow.
   */
  stallTimeoutMs?: number;
  clock?: Clock;
  /** Ends the run early (the report covers the time until then); as if the duration ran out. */
  signal?: AbortSignal;
  /** Called about every `tickMs` (default 100) with the state so far, until the run ends. */
  onTick?: (progress: ProbeProgress) => void;
  tickMs?: number;
}

/** A moment of a run: an error, or a break of the long-lived connection. Times are ms since the start. */
export interface ProbeEvent {
  atMs: number;
  kind: ProbeErrorKind;
  message: string;
}

/** What one series measured. Times are ms since the start of the run. */
export interface SeriesReport {
  /** Requests started (a failed connect counts as one): ok + every error. */
  requests: number;
  /** Requests answered with a success (a 2xx status; an integer from Redis) within the timeout. */
  ok: number;
  errors: Record<ProbeErrorKind, number>;
  /** Longest time without a successful reply, counting from the start and up to the end of the run. */
  maxGapMs: number;
  gapStartMs: number;
  gapEndMs: number;
  /** Latency of the requests counted ok, ms (connect included for fresh); null when there were none. */
  latencyMs: LatencySummary | null;
  /** First and last `counter N` value seen; null when no reply carried one. */
  counterFirst: number | null;
  counterLast: number | null;
  /** Times a counter value was lower than the one before it (the service restarted and lost its state). */
  counterResets: number;
  /** The first errors (at most MAX_EVENTS), for diagnosis. */
  firstErrors: ProbeEvent[];
}

/** The long-lived series adds what happened to its connection. */
export interface LongLivedReport extends SeriesReport {
  /** One connection carried the whole run: it opened at the first try and never broke. */
  survived: boolean;
  /** Connections opened after the first. */
  reconnects: number;
  /** When and how the connection broke (at most MAX_EVENTS). */
  breaks: ProbeEvent[];
  /** Replies that came after their request had counted as a timeout, on a connection still intact. */
  lateReplies: number;
}

/** The outcome of a run. */
export interface ProbeReport {
  target: ProbeTarget;
  /** ISO time the run started. */
  startedAt: string;
  intervalMs: number;
  timeoutMs: number;
  stallTimeoutMs: number;
  /** Measured length of the run, ms (at least the requested duration, plus requests still in flight at its end). */
  durationMs: number;
  fresh: SeriesReport;
  longLived: LongLivedReport;
  /** Same as longLived.survived. */
  survived: boolean;
  verdict: ProbeVerdict;
}

/** ok when both series got replies, no counter went back, and the long-lived connection survived. */
export interface ProbeVerdict {
  ok: boolean;
  problems: string[];
}

/** Progress of a running probe. */
export interface ProbeProgress {
  elapsedMs: number;
  fresh: SeriesProgress;
  longLived: SeriesProgress & { connected: boolean; breaks: number };
}

/** Counts of one series so far; `currentGapMs` is the time since its last successful reply. */
export interface SeriesProgress {
  requests: number;
  ok: number;
  errors: number;
  currentGapMs: number;
  maxGapMs: number;
}

/** Events kept per list in a report. */
export const MAX_EVENTS = 20;

/**
 * Runs both series against `opts.target` for `opts.durationMs` and reports. Request failures are data in the report,
 * never thrown; throws InvalidFlag on a bad target or option.
 */
export async function runProbe(opts: ProbeOptions): Promise<ProbeReport> {
  const target = parseTarget(opts.target);
  const intervalMs = opts.intervalMs ?? 5;
  const timeoutMs = opts.timeoutMs ?? 1000;
  const stallTimeoutMs = Math.max(opts.stallTimeoutMs ?? 5 * timeoutMs, timeoutMs);
  for (const [name, v] of [
    ['intervalMs', intervalMs],
    ['durationMs', opts.durationMs],
    ['timeoutMs', timeoutMs],
  ] as const) {
    if (!Number.isFinite(v) || v < 0 || (name !== 'intervalMs' && v === 0)) {
      throw new InvalidArgumentError(
        ErrorCode.InvalidFlag,
        `probe: ${name} must be a positive number of ms, not ${v}`,
      );
    }
  }
  const clock = opts.clock ?? systemClock;
  const t0 = clock.monotonic();
  const startedAt = new Date(clock.now()).toISOString();
  const elapsed = (): number => clock.monotonic() - t0;
  const ctx: SeriesContext = {
    target,
    protocol: protocolFor(target),
    intervalMs,
    timeoutMs,
    stallTimeoutMs,
    clock,
    elapsed,
    deadline: opts.durationMs,
  };

  const stop = (): void => {
    ctx.deadline = Math.min(ctx.deadline, elapsed());
  };
  if (opts.signal?.aborted) stop();
  else opts.signal?.addEventListener('abort', stop, { once: true });
  const fresh = new SeriesState();
  const long = new LongLivedState();
  let done = false;
  if (opts.onTick) {
    const onTick = opts.onTick;
    const tickMs = opts.tickMs ?? 100;
    void (async () => {
      while (!done) {
        await clock.sleep(tickMs);
        if (done) break;
        const now = elapsed();
        onTick({
          elapsedMs: now,
          fresh: fresh.progress(now),
          longLived: { ...long.progress(now), connected: long.connected, breaks: long.breaks.length },
        });
      }
    })();
  }
  try {
    await Promise.all([runFresh(ctx, fresh), runLongLived(ctx, long)]);
  } finally {
    done = true;
    opts.signal?.removeEventListener('abort', stop);
  }
  const durationMs = elapsed();
  const longLived: LongLivedReport = {
    ...long.report(durationMs),
    survived: long.survived(),
    reconnects: long.reconnects,
    breaks: long.breaks.slice(0, MAX_EVENTS),
    lateReplies: long.lateReplies,
  };
  const freshReport = fresh.report(durationMs);
  return {
    target,
    startedAt,
    intervalMs,
    timeoutMs,
    stallTimeoutMs,
    durationMs: round(durationMs),
    fresh: freshReport,
    longLived,
    survived: longLived.survived,
    verdict: probeVerdict(freshReport, longLived),
  };
}

/** The verdict of a run: each problem as one line. */
export function probeVerdict(fresh: SeriesReport, longLived: LongLivedReport): ProbeVerdict {
  const problems: string[] = [];
  if (fresh.ok === 0) problems.push('fresh connections got no successful reply');
  if (longLived.ok + longLived.lateReplies === 0)
    problems.push('the long-lived connection got no successful reply');
  if (fresh.counterResets > 0)
    problems.push(`the counter went back ${fresh.counterResets}× (fresh connections)`);
  if (longLived.counterResets > 0) {
    problems.push(`the counter went back ${longLived.counterResets}× (long-lived connection)`);
  }
  if (!longLived.survived) {
    const first = longLived.breaks[0];
    problems.push(
      first === undefined
        ? 'the long-lived connection could not be opened at the first try'
        : `the long-lived connection broke at ${(first.atMs / 1000).toFixed(3)} s (${first.kind}: ${first.message})`,
    );
  }
  return { ok: problems.length === 0, problems };
}

// ---- internals ----

interface SeriesContext {
  target: ProbeTarget;
  protocol: ProbeProtocol;
  intervalMs: number;
  timeoutMs: number;
  stallTimeoutMs: number;
  clock: Clock;
  /** ms since the start of the run. */
  elapsed: () => number;
  /** When to stop starting requests, ms since the start. */
  deadline: number;
}

/** Outcome of one request. */
type Outcome = { ok: true; response: ProbeReply; latencyMs: number } | { ok: false; error: FailedRequest };

interface FailedRequest {
  kind: ProbeErrorKind;
  message: string;
}

class SeriesState {
  requests = 0;
  ok = 0;
  errors: Record<ProbeErrorKind, number> = { refused: 0, reset: 0, timeout: 0, other: 0 };
  readonly replyTimes: number[] = [];
  readonly latencies: number[] = [];
  readonly counters: number[] = [];
  readonly firstErrors: ProbeEvent[] = [];
  private maxGapSoFar = 0;

  /** A reply that ends a gap: in time (ok) or late. Replies that are not a success are errors, not replies. */
  reply(atMs: number, response: ProbeReply): void {
    const prev = this.replyTimes[this.replyTimes.length - 1] ?? 0;
    this.maxGapSoFar = Math.max(this.maxGapSoFar, atMs - prev);
    this.replyTimes.push(atMs);
    if (response.counter !== undefined) this.counters.push(response.counter);
  }

  success(atMs: number, response: ProbeReply, latencyMs: number): void {
    this.ok++;
    this.latencies.push(latencyMs);
    this.reply(atMs, response);
  }

  error(atMs: number, err: FailedRequest): void {
    this.errors[err.kind]++;
    if (this.firstErrors.length < MAX_EVENTS) this.firstErrors.push({ atMs, ...err });
  }

  progress(now: number): SeriesProgress {
    const current = now - (this.replyTimes[this.replyTimes.length - 1] ?? 0);
    return {
      requests: this.requests,
      ok: this.ok,
      errors: PROBE_ERROR_KINDS.reduce((n, k) => n + this.errors[k], 0),
      currentGapMs: current,
      maxGapMs: Math.max(this.maxGapSoFar, current),
    };
  }

  report(endMs: number): SeriesReport {
    const gap = longestGap(this.replyTimes, endMs);
    return {
      requests: this.requests,
      ok: this.ok,
      errors: { ...this.errors },
      maxGapMs: round(gap.gapMs),
      gapStartMs: round(gap.fromMs),
      gapEndMs: round(gap.toMs),
      latencyMs: roundLatency(summarizeLatency(this.latencies)),
      counterFirst: this.counters[0] ?? null,
      counterLast: this.counters[this.counters.length - 1] ?? null,
      counterResets: countDecreases(this.counters),
      firstErrors: this.firstErrors.map((e) => ({ ...e, atMs: round(e.atMs) })),
    };
  }
}

class LongLivedState extends SeriesState {
  connected = false;
  connects = 0;
  connectFailedFirst = false;
  reconnects = 0;
  lateReplies = 0;
  readonly breaks: ProbeEvent[] = [];

  broke(atMs: number, err: FailedRequest): void {
    this.connected = false;
    this.breaks.push({ atMs: round(atMs), ...err });
  }

  survived(): boolean {
    return this.connects === 1 && !this.connectFailedFirst && this.breaks.length === 0;
  }
}

async function runFresh(ctx: SeriesContext, state: SeriesState): Promise<void> {
  const pacer = new Pacer(ctx);
  while (ctx.elapsed() < ctx.deadline) {
    state.requests++;
    const outcome = await freshRequest(ctx);
    record(state, ctx.elapsed(), outcome);
    await pacer.next();
  }
}

/** Records an outcome; a reply that is not a success (e.g. non-2xx) counts as an `other` error. */
function record(state: SeriesState, atMs: number, outcome: Outcome): void {
  if (!outcome.ok) state.error(atMs, outcome.error);
  else if (!outcome.response.ok) {
    state.error(atMs, { kind: 'other', message: outcome.response.problem ?? 'not a success' });
  } else state.success(atMs, outcome.response, outcome.latencyMs);
}

/**
 * Paces a series on a grid of `intervalMs` from the start, so timer overshoot does not lower the rate. After a
 * request that overran its slot, the next one starts at once and the grid restarts from there: never a burst.
 */
class Pacer {
  private at = 0;
  constructor(private readonly ctx: SeriesContext) {}

  /** Waits for the next slot (or the deadline, whichever comes first). */
  async next(): Promise<void> {
    this.at += this.ctx.intervalMs;
    const now = this.ctx.elapsed();
    if (this.at < now) this.at = now;
    else await sleepUntil(this.ctx, Math.min(this.at, this.ctx.deadline));
  }
}

/** Sleeps until `atMs` (ms since the start); timers may fire a little early, so it checks and sleeps again. */
async function sleepUntil(ctx: SeriesContext, atMs: number): Promise<void> {
  for (let wait = atMs - ctx.elapsed(); wait > 0; wait = atMs - ctx.elapsed()) {
    await ctx.clock.sleep(Math.ceil(wait));
  }
}

/** One request on a new connection, closed afterwards. Never rejects. */
function freshRequest(ctx: SeriesContext): Promise<Outcome> {
  const started = ctx.elapsed();
  return new Promise((resolve) => {
    const socket = new Socket();
    const parser = ctx.protocol.parser();
    let settled = false;
    const settle = (outcome: Outcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const fail = (kind: ProbeErrorKind, message: string): void =>
      settle({ ok: false, error: { kind, message } });
    const timer = setTimeout(
      () =>
        fail(
          'timeout',
          `no complete reply after ${ctx.timeoutMs} ms${socket.connecting ? ' (connecting)' : ''}`,
        ),
      ctx.timeoutMs,
    );
    socket.setNoDelay(true);
    socket.on('error', (err) => settle({ ok: false, error: classify(err) }));
    socket.on('data', (chunk: Buffer) => {
      try {
        const [response] = parser.push(chunk);
        if (response) settle({ ok: true, response, latencyMs: ctx.elapsed() - started });
      } catch (err) {
        settle({ ok: false, error: classify(err) });
      }
    });
    socket.on('end', () => {
      try {
        const response = parser.end();
        if (response) settle({ ok: true, response, latencyMs: ctx.elapsed() - started });
        else fail('reset', 'closed by the peer before a reply');
      } catch (err) {
        settle({ ok: false, error: classify(err) });
      }
    });
    socket.on('close', () => fail('reset', 'closed before a reply'));
    socket.connect({ host: ctx.target.host, port: ctx.target.port }, () => {
      socket.write(ctx.protocol.request(false));
    });
  });
}

async function runLongLived(ctx: SeriesContext, state: LongLivedState): Promise<void> {
  let conn: KeepAliveConnection | undefined;
  // A break while no request is outstanding (e.g. the peer closed an idle connection).
  const onIdleBreak = (err: FailedRequest): void => state.broke(ctx.elapsed(), err);
  const pacer = new Pacer(ctx);
  try {
    while (ctx.elapsed() < ctx.deadline) {
      if (conn === undefined || conn.broken !== undefined) {
        conn?.destroy();
        conn = undefined;
        try {
          conn = await KeepAliveConnection.open(ctx, onIdleBreak);
          state.connected = true;
          state.connects++;
          if (state.connects > 1) state.reconnects++;
        } catch (err) {
          // A failed connect counts as a failed request.
          if (state.connects === 0) state.connectFailedFirst = true;
          state.requests++;
          state.error(ctx.elapsed(), classify(err));
          await pacer.next();
          continue;
        }
      }
      state.requests++;
      await longLivedRequest(ctx, state, conn, ctx.deadline);
      await pacer.next();
    }
  } finally {
    conn?.destroy();
  }
}

/** One request on the long-lived connection: ok, a failure that breaks it, or a timeout followed by a late reply. */
async function longLivedRequest(
  ctx: SeriesContext,
  state: LongLivedState,
  conn: KeepAliveConnection,
  deadline: number,
): Promise<void> {
  const start = ctx.elapsed();
  const reply = conn.request(ctx.protocol.request(true));
  const first = await withTimeout(reply, ctx.timeoutMs);
  if (first.kind === 'value') {
    const response = first.value;
    record(state, ctx.elapsed(), { ok: true, response, latencyMs: ctx.elapsed() - start });
    if (response.closes)
      breakConn(ctx, state, conn, {
        kind: 'reset',
        message: 'the server closed the connection (Connection: close)',
      });
    return;
  }
  if (first.kind === 'error') {
    state.error(ctx.elapsed(), first.error);
    breakConn(ctx, state, conn, first.error);
    return;
  }
  // Timed out: counts as failed, but the connection may be intact and the reply on its way.
  state.error(ctx.elapsed(), { kind: 'timeout', message: `no reply after ${ctx.timeoutMs} ms` });
  const waitMs =
    Math.min(start + ctx.stallTimeoutMs, Math.max(deadline, start + ctx.timeoutMs)) - ctx.elapsed();
  const late = waitMs > 0 ? await withTimeout(reply, waitMs) : ({ kind: 'timeout' } as const);
  if (late.kind === 'value') {
    state.lateReplies++;
    if (late.value.ok) state.reply(ctx.elapsed(), late.value);
    if (late.value.closes)
      breakConn(ctx, state, conn, {
        kind: 'reset',
        message: 'the server closed the connection (Connection: close)',
      });
    return;
  }
  const stalled = ctx.elapsed() - start;
  breakConn(
    ctx,
    state,
    conn,
    late.kind === 'error'
      ? late.error
      : {
          kind: 'timeout',
          message:
            ctx.elapsed() >= deadline && stalled < ctx.stallTimeoutMs
              ? `no reply for ${Math.round(stalled)} ms when the run ended`
              : `no reply for ${Math.round(stalled)} ms; gave the connection up`,
        },
  );
}

function breakConn(
  ctx: SeriesContext,
  state: LongLivedState,
  conn: KeepAliveConnection,
  err: FailedRequest,
): void {
  if (conn.broken === undefined) conn.markBroken(err);
  state.broke(ctx.elapsed(), err);
  conn.destroy();
}

type Raced<T> = { kind: 'value'; value: T } | { kind: 'error'; error: FailedRequest } | { kind: 'timeout' };

/** Waits for `promise` at most `ms`; the promise keeps running after a timeout. */
function withTimeout<T>(promise: Promise<T>, ms: number): Promise<Raced<T>> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ kind: 'timeout' }), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve({ kind: 'value', value });
      },
      (err: unknown) => {
        clearTimeout(timer);
        resolve({ kind: 'error', error: classify(err) });
      },
    );
  });
}

/** A keep-alive connection with at most one request outstanding. */
class KeepAliveConnection {
  /** Set once the connection failed or was given up; no request can be sent on it then. */
  broken: FailedRequest | undefined;
  private readonly parser: ReplyParser;
  private waiter: { resolve: (r: ProbeReply) => void; reject: (e: unknown) => void } | undefined;

  private constructor(
    private readonly socket: Socket,
    protocol: ProbeProtocol,
    private readonly onIdleBreak: (err: FailedRequest) => void,
  ) {
    this.parser = protocol.parser();
    socket.on('data', (chunk: Buffer) => {
      let responses: ProbeReply[];
      try {
        responses = this.parser.push(chunk);
      } catch (err) {
        this.fail(classify(err));
        return;
      }
      for (const r of responses) {
        const w = this.waiter;
        this.waiter = undefined;
        if (w) w.resolve(r);
        else this.fail({ kind: 'other', message: 'a reply nobody asked for' });
      }
    });
    socket.on('end', () => {
      let last: ProbeReply | undefined;
      try {
        last = this.parser.end();
      } catch (err) {
        this.fail(classify(err));
        return;
      }
      if (last && this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w.resolve(last);
      }
      this.fail({ kind: 'reset', message: 'closed by the peer' });
    });
    socket.on('error', (err) => this.fail(classify(err)));
    socket.on('close', () => this.fail({ kind: 'reset', message: 'closed' }));
  }

  /** Connects within ctx.timeoutMs; rejects with the socket error or a timeout. */
  static open(ctx: SeriesContext, onIdleBreak: (err: FailedRequest) => void): Promise<KeepAliveConnection> {
    return new Promise((resolve, reject) => {
      const socket = new Socket();
      socket.setNoDelay(true);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new ProbeFailure('timeout', `connect: no answer after ${ctx.timeoutMs} ms`));
      }, ctx.timeoutMs);
      const onError = (err: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      socket.once('error', onError);
      socket.connect({ host: ctx.target.host, port: ctx.target.port }, () => {
        clearTimeout(timer);
        socket.off('error', onError);
        resolve(new KeepAliveConnection(socket, ctx.protocol, onIdleBreak));
      });
    });
  }

  /** Sends a request; resolves with its reply, rejects when the connection fails first. */
  request(bytes: Buffer): Promise<ProbeReply> {
    if (this.broken !== undefined)
      return Promise.reject(new ProbeFailure(this.broken.kind, this.broken.message));
    if (this.waiter !== undefined) return Promise.reject(new Error('internal: a request is outstanding'));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.socket.write(bytes);
    });
  }

  markBroken(err: FailedRequest): void {
    this.broken ??= err;
  }

  destroy(): void {
    this.markBroken({ kind: 'other', message: 'closed by the probe' });
    this.socket.destroy();
  }

  private fail(err: FailedRequest): void {
    if (this.broken !== undefined) return;
    this.broken = err;
    this.socket.destroy();
    const w = this.waiter;
    this.waiter = undefined;
    if (w) w.reject(new ProbeFailure(err.kind, err.message));
    else this.onIdleBreak(err);
  }
}

/** A failure already classified. */
class ProbeFailure extends Error {
  constructor(
    readonly kind: ProbeErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'ProbeFailure';
  }
}

/** Maps a socket or parser error to its kind. */
function classify(err: unknown): FailedRequest {
  if (err instanceof ProbeFailure) return { kind: err.kind, message: err.message };
  if (err instanceof HttpProtocolError || err instanceof RespProtocolError) {
    return { kind: 'other', message: err.message };
  }
  const e = err as NodeJS.ErrnoException;
  const message = err instanceof Error ? err.message : String(err);
  switch (e?.code) {
    case 'ECONNREFUSED':
      return { kind: 'refused', message };
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ECONNABORTED':
      return { kind: 'reset', message };
    case 'ETIMEDOUT':
      return { kind: 'timeout', message };
    default:
      return { kind: 'other', message };
  }
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

function roundLatency(s: LatencySummary | undefined): LatencySummary | null {
  if (s === undefined) return null;
  return { count: s.count, p50: round(s.p50), p90: round(s.p90), p99: round(s.p99), max: round(s.max) };
}

/** `host:port/path` (or `redis://host:port`) of a report's target, for human output. */
export function describeTarget(target: ProbeTarget): string {
  if (target.protocol === 'redis') return `redis://${formatHostPort(target)}`;
  return `${formatHostPort(target)}${target.path}`;
}
