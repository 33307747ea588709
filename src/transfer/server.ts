/**
 * The receiving side of the sync protocol. Per connection: HELLO → HELLO_OK; on OFFER the
 * manifest is validated and answered with WANT (what the store lacks); each CHUNK is
 * decoded (bounded by the manifest's size for that digest) and its SHA-256 checked BEFORE
 * it reaches the store; END is answered with DONE. A session (its sessionId) spans any
 * number of connections, parallel or successive: a reconnect re-offers and gets a fresh
 * WANT of what is still missing, so verified chunks are never asked for twice.
 *
 * When the last chunk is stored, the session completes: `<dataDir>/<id>/manifest.json`
 * is written atomically, the store retains the manifest as `session:<id>`, and then the
 * `complete` marker is written; `completedManifest` reads only sessions with the marker.
 *
 * A malformed or hostile peer gets an ERROR frame and a closed connection; nothing it
 * sends can throw out of a connection handler or make the server hold more than one
 * frame plus a few queued frames per connection.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import type { ChunkStore, Digest, Manifest } from '../core/chunks.js';
import { systemClock, type Clock } from '../core/clock.js';
import {
  AlreadyExistsError,
  ErrorCode,
  FailedPreconditionError,
  InvalidArgumentError,
  UnavailableError,
  errorMessage,
  type GodwitError,
} from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { applyManifestDelta, digestOf, isManifestDelta, parseManifest } from '../chunks/index.js';
import { decompressChunk, MAX_CHUNK_BYTES } from './codec.js';
import { FrameConnection } from './connection.js';
import { protocolError } from './errors.js';
import {
  DEFAULT_MAX_OFFER_BYTES,
  encodeJsonFrame,
  encodeWant,
  FrameType,
  RECEIVER_ACCEPTS,
  RECEIVER_FIRST,
  type Frame,
} from './frames.js';
import { MAX_STREAMS, PROTOCOL_VERSION, SESSION_ID_RE, type HelloMessage } from './messages.js';

/** Options of `startTransferServer`. */
export interface TransferServerOptions {
  store: ChunkStore;
  /** Where to listen; port 0 picks a free port (see `TransferServer.port`). */
  listen: { host: string; port: number };
  /** Completed sessions are recorded under `<dataDir>/<sessionId>/`. */
  dataDir: string;
  log: Logger;
  /** Sessions kept in memory; idle ones are evicted first. Default 64. */
  maxSessions?: number;
  /** A connection without traffic for this long is closed. Default 60 s. */
  idleTimeoutMs?: number;
  /** Largest chunk accepted. Default (and ceiling) 16 MiB. */
  maxChunkSize?: number;
  /** Largest OFFER (manifest JSON) accepted. Default 64 MiB. */
  maxOfferBytes?: number;
  /** Parallel connections per session. Default 16. */
  maxStreamsPerSession?: number;
  /**
   * Called once per session when its manifest is first known, with the chunks the store lacks
   * (e.g. to start reassembling while they arrive). Must not throw.
   */
  onOffer?: (sessionId: string, manifest: Manifest, missing: readonly Digest[]) => void;
  /**
   * Whether a completed session's record (manifest, completion marker) is synced to disk before
   * the sender hears DONE. Default: every session. Not syncing saves four fsyncs (~40 ms here);
   * a power cut that loses the record loses only the retention of the session's chunks.
   */
  syncSession?: (sessionId: string) => boolean;
  clock?: Clock;
}

/** What `sessions()` reports about one session. */
export interface TransferSessionInfo {
  sessionId: string;
  offered: boolean;
  complete: boolean;
  /** Distinct chunks of the offered manifest, and how many the store still lacks. */
  chunks: number;
  missing: number;
  connections: number;
  chunksReceived: number;
  rawBytesReceived: number;
  /** Chunks that arrived when the store already had them. */
  duplicates: number;
  /** Chunks refused because they did not match their digest. */
  rejected: number;
}

/** A running transfer server. */
export interface TransferServer {
  /** The address it listens on, and the port (the real one when 0 was asked for). */
  address: string;
  port: number;
  /** Sessions in memory, in order of creation. */
  sessions(): TransferSessionInfo[];
  /** The manifest of a completed session (kept in memory while the session is; else read from disk). */
  completed(sessionId: string): Promise<Manifest | undefined>;
  /**
   * Drops a session from memory once nothing will use it there (its record on disk stays, for
   * `completedManifest`). Sessions hold their manifest and digest index: tens of MB for a
   * 256 MiB memory image, which otherwise weighs on this process's garbage collections.
   */
  forget(sessionId: string): void;
  /**
   * Completes session `sessionId` with a manifest and chunks that came another way (small state
   * inside a request, sent without asking what is missing): each chunk is verified as it is
   * stored, every chunk of the manifest must then be in the store, and the session is recorded
   * exactly as one that arrived over the wire. Rejects a session offered another manifest.
   * `manifest` is untrusted JSON: a manifest, or a delta against a session completed here.
   */
  deliver(sessionId: string, manifest: unknown, chunks: ReadonlyMap<Digest, Buffer>): Promise<void>;
  /** Stops listening, closes every connection and waits for chunk writes in flight. */
  close(): Promise<void>;
}

/** Chunk writes in flight per connection. */
const PUTS_PER_CONNECTION = 8;

function sessionConflict(message: string): GodwitError {
  return new FailedPreconditionError(ErrorCode.TransferSessionConflict, message);
}

function checkSessionId(sessionId: string): void {
  if (typeof sessionId !== 'string' || !SESSION_ID_RE.test(sessionId)) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidName,
      `invalid transfer session id ${JSON.stringify(sessionId)}`,
      {
        hint: 'use 1-128 letters, digits, ".", "_" or "-", not starting with "."',
      },
    );
  }
}

async function writeFileAtomic(path: string, data: string, durable = true): Promise<void> {
  const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  try {
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(data);
      if (durable) await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  if (!durable) return;
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

interface CompleteMarker {
  offerDigest: string;
  completedAt: string;
}

async function readMarker(dataDir: string, sessionId: string): Promise<CompleteMarker | undefined> {
  let text: string;
  try {
    text = await readFile(join(dataDir, sessionId, 'complete'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const v = JSON.parse(text) as Partial<CompleteMarker>;
    if (typeof v.offerDigest === 'string' && typeof v.completedAt === 'string') {
      return { offerDigest: v.offerDigest, completedAt: v.completedAt };
    }
  } catch {
    // fall through
  }
  throw new FailedPreconditionError(
    ErrorCode.ManifestInvalid,
    `transfer session ${sessionId} has a corrupt marker`,
  );
}

/**
 * The manifest of a completed transfer session, or undefined while it is not complete (or
 * unknown). Throws ManifestInvalid when the recorded manifest does not validate.
 */
export async function completedManifest(dataDir: string, sessionId: string): Promise<Manifest | undefined> {
  checkSessionId(sessionId);
  if ((await readMarker(dataDir, sessionId)) === undefined) return undefined;
  const text = await readFile(join(dataDir, sessionId, 'manifest.json'), 'utf8');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(
      ErrorCode.ManifestInvalid,
      `manifest of transfer session ${sessionId} is not JSON`,
      {
        cause: err,
      },
    );
  }
  return parseManifest(value);
}

/** Per-connection accounting and chunk writes in flight. */
interface ConnState {
  conn: FrameConnection;
  stream: number;
  chunks: number;
  rawBytes: number;
  duplicates: number;
  puts: Set<Promise<void>>;
  putError: unknown;
}

class Session {
  readonly id: string;
  token: string;
  manifest: Manifest | undefined;
  offerDigest: string | undefined;
  sizes = new Map<Digest, number>();
  missing = new Set<Digest>();
  /** Verified chunks being written. */
  inflight = new Set<Digest>();
  puts = new Set<Promise<void>>();
  /** Collect digests stored while an OFFER asks the store what is missing. */
  storedSinks = new Set<Set<Digest>>();
  connections = new Set<ConnState>();
  complete = false;
  /** `onOffer` was called. */
  announced = false;
  finalizing: Promise<void> | undefined;
  chunksReceived = 0;
  rawBytesReceived = 0;
  duplicates = 0;
  rejected = 0;
  lastActive: number;

  constructor(id: string, token: string, now: number) {
    this.id = id;
    this.token = token;
    this.lastActive = now;
  }

  info(): TransferSessionInfo {
    return {
      sessionId: this.id,
      offered: this.manifest !== undefined,
      complete: this.complete,
      chunks: this.sizes.size,
      missing: this.missing.size,
      connections: this.connections.size,
      chunksReceived: this.chunksReceived,
      rawBytesReceived: this.rawBytesReceived,
      duplicates: this.duplicates,
      rejected: this.rejected,
    };
  }
}

class Receiver {
  private readonly opts: TransferServerOptions;
  private readonly store: ChunkStore;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly maxSessions: number;
  private readonly idleTimeoutMs: number;
  private readonly maxChunkSize: number;
  private readonly maxOfferBytes: number;
  private readonly maxStreams: number;
  private readonly sessionMap = new Map<string, Session>();
  private readonly handlers = new Set<Promise<void>>();
  private readonly sockets = new Set<Socket>();
  private closing = false;

  constructor(opts: TransferServerOptions) {
    this.opts = opts;
    this.store = opts.store;
    this.log = opts.log.child({ component: 'transfer-server' });
    this.clock = opts.clock ?? systemClock;
    this.maxSessions = opts.maxSessions ?? 64;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 60_000;
    this.maxChunkSize = Math.min(opts.maxChunkSize ?? MAX_CHUNK_BYTES, MAX_CHUNK_BYTES);
    this.maxOfferBytes = opts.maxOfferBytes ?? DEFAULT_MAX_OFFER_BYTES;
    this.maxStreams = Math.min(opts.maxStreamsPerSession ?? MAX_STREAMS, MAX_STREAMS);
  }

  get connectionLimit(): number {
    return this.maxSessions * this.maxStreams;
  }

  sessions(): TransferSessionInfo[] {
    return [...this.sessionMap.values()].map((s) => s.info());
  }

  forget(sessionId: string): void {
    const live = this.sessionMap.get(sessionId);
    if (live && live.connections.size === 0 && live.puts.size === 0 && live.finalizing === undefined) {
      this.sessionMap.delete(sessionId);
    }
  }

  async deliver(sessionId: string, manifest: unknown, chunks: ReadonlyMap<Digest, Buffer>): Promise<void> {
    checkSessionId(sessionId);
    const parsed = isManifestDelta(manifest)
      ? await this.expandDelta(manifest)
      : parseManifest(manifest, { maxChunkSize: this.maxChunkSize });
    const offerDigest = createHash('sha256').update(JSON.stringify(parsed)).digest('hex');
    let session = this.sessionMap.get(sessionId);
    if (session?.offerDigest !== undefined && session.offerDigest !== offerDigest) {
      throw sessionConflict(`transfer session ${sessionId} was offered another manifest`);
    }
    const marker = await readMarker(this.opts.dataDir, sessionId);
    if (marker !== undefined && marker.offerDigest !== offerDigest) {
      throw sessionConflict(`transfer session ${sessionId} already completed with another manifest`);
    }
    // Sizes as the manifest gives them, checked against what came.
    const sizes = chunkSizes(parsed);
    for (const [d, data] of chunks) {
      const size = sizes.get(d);
      if (size === undefined || size !== data.length) {
        throw new InvalidArgumentError(
          ErrorCode.ManifestInvalid,
          size === undefined
            ? `chunk ${d} is not in the delivered manifest`
            : `chunk ${d} has ${data.length} bytes, the manifest says ${size}`,
        );
      }
    }
    for (const [d, data] of chunks) await this.store.put(d, data);
    const missing = await this.store.missing([...sizes.keys()]);
    if (missing.length > 0) {
      throw new FailedPreconditionError(
        ErrorCode.TransferIncomplete,
        `transfer session ${sessionId}: ${missing.length} chunks of its manifest are neither delivered nor stored here`,
      );
    }
    if (!session) {
      this.makeRoom();
      session = new Session(sessionId, '', this.clock.monotonic());
      this.sessionMap.set(sessionId, session);
    }
    session.manifest = parsed;
    session.offerDigest = offerDigest;
    session.sizes = sizes;
    session.chunksReceived += chunks.size;
    for (const b of chunks.values()) session.rawBytesReceived += b.length;
    // Not synced to disk: this runs while the container is stopped (four fsyncs, ~40 ms here),
    // and a crash that lost the record loses only the retention of a few hundred KB of chunks.
    await this.finalize(session, false);
  }

  async completed(sessionId: string): Promise<Manifest | undefined> {
    const live = this.sessionMap.get(sessionId);
    if (live?.complete && live.manifest) return live.manifest;
    return completedManifest(this.opts.dataDir, sessionId);
  }

  accept(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    const peer = `sender ${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    const conn = new FrameConnection(socket, {
      accept: RECEIVER_ACCEPTS,
      first: RECEIVER_FIRST,
      limits: { maxChunkSize: this.maxChunkSize, maxOfferBytes: this.maxOfferBytes },
      idleTimeoutMs: this.idleTimeoutMs,
      peer,
    });
    const handler = this.serve(conn, peer).catch((err: unknown) => {
      this.log.error('transfer connection handler failed', { peer, err: errorMessage(err) });
      conn.destroy();
    });
    this.handlers.add(handler);
    void handler.finally(() => this.handlers.delete(handler));
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const s of this.sockets) s.destroy();
    await Promise.allSettled([...this.handlers]);
    for (const s of this.sessionMap.values()) await Promise.allSettled([...s.puts]);
  }

  private async serve(conn: FrameConnection, peer: string): Promise<void> {
    let session: Session | undefined;
    let state: ConnState | undefined;
    try {
      const { hello } = await conn.expect(FrameType.Hello, 'waiting for HELLO');
      state = {
        conn,
        stream: hello.stream,
        chunks: 0,
        rawBytes: 0,
        duplicates: 0,
        puts: new Set(),
        putError: undefined,
      };
      session = this.attach(hello, state);
      await conn.send(
        encodeJsonFrame(FrameType.HelloOk, {
          protocol: PROTOCOL_VERSION,
          sessionId: session.id,
          resumeToken: session.token,
          maxChunkSize: this.maxChunkSize,
          maxOfferBytes: this.maxOfferBytes,
        }),
      );
      for (;;) {
        const frame = await conn.next();
        if (frame === undefined) break;
        session.lastActive = this.clock.monotonic();
        await this.handle(session, state, frame);
        if (state.putError !== undefined) throw state.putError;
      }
      await this.settle(state);
      await conn.close();
    } catch (err) {
      const lost =
        conn.error === err || (err as Partial<GodwitError>).code === ErrorCode.TransferConnectionLost;
      const fields = { peer, sessionId: session?.id, err: errorMessage(err) };
      if (lost) this.log.info('transfer connection ended', fields);
      else
        this.log.warn('transfer connection refused', { ...fields, code: (err as Partial<GodwitError>).code });
      conn.abort(err);
      if (state) await this.settle(state).catch(() => undefined);
    } finally {
      if (session && state) {
        session.connections.delete(state);
        session.lastActive = this.clock.monotonic();
      }
    }
  }

  /** Joins or creates the session named in HELLO; SessionConflict or Busy when it cannot. */
  private attach(hello: HelloMessage, state: ConnState): Session {
    if (hello.protocol !== PROTOCOL_VERSION) {
      throw protocolError(
        `protocol version ${hello.protocol} is not supported (this receiver speaks ${PROTOCOL_VERSION})`,
      );
    }
    let s = this.sessionMap.get(hello.sessionId);
    if (s === undefined) {
      this.makeRoom();
      s = new Session(
        hello.sessionId,
        hello.resumeToken ?? randomBytes(16).toString('hex'),
        this.clock.monotonic(),
      );
      this.sessionMap.set(s.id, s);
    } else if (hello.resumeToken === undefined) {
      if (s.connections.size > 0) {
        throw sessionConflict(`transfer session ${s.id} is in use by another sender`);
      }
      s.token = randomBytes(16).toString('hex');
    } else if (hello.resumeToken !== s.token) {
      throw sessionConflict(`wrong resume token for transfer session ${s.id}`);
    }
    // A reconnect supersedes whatever is left of the same stream's earlier connection.
    for (const other of s.connections) {
      if (other.stream === hello.stream) {
        other.conn.destroy(
          new UnavailableError(
            ErrorCode.TransferConnectionLost,
            `stream ${hello.stream} of ${s.id} reconnected`,
          ),
        );
      }
    }
    if (s.connections.size >= this.maxStreams) {
      throw new UnavailableError(
        ErrorCode.TransferBusy,
        `transfer session ${s.id} has ${this.maxStreams} connections`,
      );
    }
    s.connections.add(state);
    return s;
  }

  /** Evicts idle sessions (complete ones first, then the longest idle) to stay under maxSessions. */
  private makeRoom(): void {
    if (this.sessionMap.size < this.maxSessions) return;
    const idle = [...this.sessionMap.values()]
      .filter((s) => s.connections.size === 0 && s.puts.size === 0 && s.finalizing === undefined)
      .sort((a, b) => Number(b.complete) - Number(a.complete) || a.lastActive - b.lastActive);
    const victim = idle[0];
    if (victim === undefined) {
      throw new UnavailableError(
        ErrorCode.TransferBusy,
        `the receiver has ${this.maxSessions} active transfer sessions`,
      );
    }
    this.sessionMap.delete(victim.id);
  }

  private async handle(session: Session, state: ConnState, frame: Frame): Promise<void> {
    switch (frame.type) {
      case FrameType.Offer:
        return this.onOffer(session, state, frame);
      case FrameType.Chunk:
        return this.onChunk(session, state, frame);
      case FrameType.End:
        return this.onEnd(session, state);
      default:
        throw protocolError(`unexpected ${FrameType[frame.type]} frame`);
    }
  }

  private async onOffer(
    session: Session,
    state: ConnState,
    frame: Extract<Frame, { type: FrameType.Offer }>,
  ): Promise<void> {
    if (session.offerDigest !== undefined && session.offerDigest !== frame.offerDigest) {
      throw sessionConflict(`transfer session ${session.id} was offered another manifest`);
    }
    if (session.offerDigest === undefined || session.complete) {
      const marker = await readMarker(this.opts.dataDir, session.id);
      if (marker !== undefined && marker.offerDigest !== frame.offerDigest) {
        throw sessionConflict(`transfer session ${session.id} already completed with another manifest`);
      }
      // The record was removed (the session's state was taken over): write it again.
      if (marker === undefined) session.complete = false;
    }
    const t0 = performance.now();
    if (session.manifest === undefined) {
      const offered = frame.manifest ?? (await this.expandDelta(frame.delta));
      const sizes = chunkSizes(offered);
      session.manifest = offered;
      session.offerDigest = frame.offerDigest;
      session.sizes = sizes;
    }
    // Chunks being written count as present once written: wait for them, then ask the store.
    await Promise.allSettled([...session.puts]);
    const stored = new Set<Digest>();
    session.storedSinks.add(stored);
    let missing: Digest[];
    try {
      missing = await this.store.missing([...session.sizes.keys()]);
    } finally {
      session.storedSinks.delete(stored);
    }
    // Chunks from other connections stored while the store was asked are not missing.
    if (stored.size > 0) missing = missing.filter((d) => !stored.has(d));
    const missingMs = Math.round(performance.now() - t0);
    session.missing = new Set(missing);
    if (!session.announced) {
      session.announced = true;
      this.opts.onOffer?.(session.id, session.manifest, missing);
    }
    this.log.info('transfer offer', {
      sessionId: session.id,
      stream: state.stream,
      chunks: session.sizes.size,
      want: missing.length,
      offerBytes: frame.bytes,
      ms: missingMs,
    });
    for (const f of encodeWant(missing)) await state.conn.send(f);
    if (missing.length === 0) await this.finalize(session);
  }

  /**
   * The manifest a delta OFFER describes: its base is a completed session of this receiver
   * (in memory, else its record on disk); FailedPrecondition ManifestBaseNotFound otherwise,
   * and the sender then offers the whole manifest.
   */
  private async expandDelta(delta: { base: string } | undefined): Promise<Manifest> {
    if (delta === undefined) throw protocolError('OFFER without a manifest');
    const base = SESSION_ID_RE.test(delta.base)
      ? await this.completed(delta.base).catch(() => undefined)
      : undefined;
    if (base === undefined) {
      throw new FailedPreconditionError(
        ErrorCode.ManifestBaseNotFound,
        `the base of the offered manifest delta, transfer session ${JSON.stringify(delta.base.slice(0, 130))}, is not complete here`,
      );
    }
    // A delta expands to no more references than a whole manifest within the offer limit
    // could hold (each reference is at least ~64 bytes of JSON there).
    const maxRefs = Math.floor(this.maxOfferBytes / 64);
    return parseManifest(applyManifestDelta(delta, base, maxRefs), {
      maxChunkSize: this.maxChunkSize,
      maxChunkRefs: maxRefs,
    });
  }

  private async onChunk(
    session: Session,
    state: ConnState,
    frame: Extract<Frame, { type: FrameType.Chunk }>,
  ): Promise<void> {
    const { digest, rawSize } = frame;
    if (session.manifest === undefined) throw protocolError('CHUNK before OFFER');
    const size = session.sizes.get(digest);
    if (size === undefined) throw protocolError(`chunk ${digest} is not in the offered manifest`);
    if (rawSize !== size)
      throw protocolError(`chunk ${digest} declares ${rawSize} bytes, the manifest ${size}`);
    if (!session.missing.has(digest) || session.inflight.has(digest)) {
      session.duplicates++;
      state.duplicates++;
      return;
    }
    const raw = decompressChunk(frame.codec, frame.data, rawSize, this.maxChunkSize);
    const actual = digestOf(raw);
    if (actual !== digest) {
      session.rejected++;
      throw new FailedPreconditionError(
        ErrorCode.ChunkDigestMismatch,
        `chunk does not match its digest: expected ${digest}, got ${actual}`,
      );
    }
    session.inflight.add(digest);
    const put: Promise<void> = this.store
      .put(digest, raw)
      .then(() => {
        session.missing.delete(digest);
        for (const sink of session.storedSinks) sink.add(digest);
        session.chunksReceived++;
        session.rawBytesReceived += rawSize;
        state.chunks++;
        state.rawBytes += rawSize;
        if (session.missing.size === 0 && !session.complete) {
          this.finalize(session).catch((err: unknown) => {
            this.log.warn('cannot complete transfer session yet', {
              sessionId: session.id,
              err: errorMessage(err),
            });
          });
        }
      })
      .catch((err: unknown) => {
        state.putError ??= err;
      })
      .finally(() => {
        session.inflight.delete(digest);
        session.puts.delete(put);
        state.puts.delete(put);
      });
    session.puts.add(put);
    state.puts.add(put);
    if (state.puts.size >= PUTS_PER_CONNECTION) await Promise.race(state.puts);
  }

  private async onEnd(session: Session, state: ConnState): Promise<void> {
    if (session.manifest === undefined) throw protocolError('END before OFFER');
    await this.settle(state);
    if (session.missing.size === 0) await this.finalize(session);
    await state.conn.send(
      encodeJsonFrame(FrameType.Done, {
        complete: session.complete,
        missing: session.missing.size,
        chunks: state.chunks,
        rawBytes: state.rawBytes,
        duplicates: state.duplicates,
        sessionChunks: session.chunksReceived,
        sessionRawBytes: session.rawBytesReceived,
      }),
    );
  }

  /** Waits for the connection's chunk writes; rethrows the first that failed. */
  private async settle(state: ConnState): Promise<void> {
    await Promise.allSettled([...state.puts]);
    if (state.putError !== undefined) throw state.putError;
  }

  /** Records the completed session (idempotent; concurrent calls share one run). */
  private finalize(session: Session, durable = true): Promise<void> {
    if (session.complete) return Promise.resolve();
    if (session.finalizing) return session.finalizing;
    const manifest = session.manifest as Manifest;
    if (durable && this.opts.syncSession) durable = this.opts.syncSession(session.id);
    const run = async (): Promise<void> => {
      const t0 = performance.now();
      const dir = join(this.opts.dataDir, session.id);
      await mkdir(dir, { recursive: true });
      await writeFileAtomic(join(dir, 'manifest.json'), `${JSON.stringify(manifest)}\n`, durable);
      await this.store.retain(`session:${session.id}`, manifest);
      const marker: CompleteMarker = {
        offerDigest: session.offerDigest as string,
        completedAt: new Date(this.clock.now()).toISOString(),
      };
      await writeFileAtomic(join(dir, 'complete'), `${JSON.stringify(marker)}\n`, durable);
      session.complete = true;
      this.log.info('transfer session complete', {
        sessionId: session.id,
        chunks: session.sizes.size,
        received: session.chunksReceived,
        rawBytes: session.rawBytesReceived,
        duplicates: session.duplicates,
        finalizeMs: Math.round(performance.now() - t0),
        synced: durable,
      });
    };
    session.finalizing = run().finally(() => {
      session.finalizing = undefined;
    });
    return session.finalizing;
  }
}

/** Each chunk of `m` and its size; ManifestInvalid when one digest appears with two sizes. */
function chunkSizes(m: Manifest): Map<Digest, number> {
  const sizes = new Map<Digest, number>();
  for (const e of m.entries) {
    if (e.type !== 'file') continue;
    for (const c of e.chunks ?? []) {
      if (!('digest' in c)) continue;
      const known = sizes.get(c.digest);
      if (known !== undefined && known !== c.size) {
        throw new InvalidArgumentError(
          ErrorCode.ManifestInvalid,
          `invalid manifest: chunk ${c.digest} appears with sizes ${known} and ${c.size}`,
        );
      }
      sizes.set(c.digest, c.size);
    }
  }
  return sizes;
}

/** Starts a transfer server; resolves once it listens. */
export async function startTransferServer(opts: TransferServerOptions): Promise<TransferServer> {
  await mkdir(opts.dataDir, { recursive: true });
  const receiver = new Receiver(opts);
  const server: Server = createServer({ noDelay: true, allowHalfOpen: true }, (socket) =>
    receiver.accept(socket),
  );
  server.maxConnections = receiver.connectionLimit;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const where = `${opts.listen.host}:${opts.listen.port}`;
      reject(
        err.code === 'EADDRINUSE'
          ? new AlreadyExistsError(
              ErrorCode.AddressInUse,
              `transfer server cannot listen on ${where}: in use`,
              { cause: err },
            )
          : new UnavailableError(
              ErrorCode.TransferFailed,
              `transfer server cannot listen on ${where}: ${err.message}`,
              {
                cause: err,
              },
            ),
      );
    });
    server.listen(opts.listen.port, opts.listen.host, () => resolve());
  });
  server.on('error', (err) => opts.log.error('transfer server error', { err: errorMessage(err) }));
  const addr = server.address() as AddressInfo;
  opts.log.info('transfer server listening', { address: addr.address, port: addr.port });
  let closed: Promise<void> | undefined;
  return {
    address: addr.address,
    port: addr.port,
    sessions: () => receiver.sessions(),
    completed: (sessionId) => receiver.completed(sessionId),
    forget: (sessionId) => receiver.forget(sessionId),
    deliver: (sessionId, manifest, chunks) => receiver.deliver(sessionId, manifest, chunks),
    close: () => {
      closed ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        await receiver.close();
        await stopped;
      })();
      return closed;
    },
  };
}
