/**
 * Assembles an agent's migration service: its chunk store, its transfer server, the
 * source-side engine and the destination-side handler, and the API routes over them.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { AgentClient } from '../agent/client.js';
import type { Route } from '../agent/server.js';
import { PAGE_SIZE, type Digest, type Manifest } from '../core/chunks.js';
import type { Logger } from '../core/logger.js';
import type { ContainerRuntime } from '../core/runtime.js';
import {
  FsChunkStore,
  StagedChunkStore,
  manifestDigests,
  materialize,
  snapshotDirectory,
} from '../chunks/index.js';
import { completedManifest, sendManifest, startTransferServer } from '../transfer/index.js';
import { MigrationEngine, type StateMover } from './engine.js';
import { IncomingMigrations, type IncomingState } from './incoming.js';
import { AgentMigrationPeer } from './peer.js';
import { ArrivalStore } from './prebuild.js';
import { QuietGate } from './quiet-gate.js';
import { scratchDirFor } from './scratch.js';
import { migrationRoutes } from './routes.js';

/**
 * CRIU's memory images (`criu/pages-N.img`) are cut into page-sized chunks, so identical
 * pages are one chunk wherever they sit and pages the destination already holds are found
 * again; everything else in 64 KiB chunks.
 */
export function chunkSizeForCheckpoint(rel: string): number | undefined {
  return /(^|\/)pages-\d+\.img$/.test(rel) ? 4096 : undefined;
}

/**
 * Bytes of chunks an agent keeps in memory (default 2 GiB; `GODWIT_CHUNK_CACHE_MIB` to change).
 */
export function chunkCacheBudget(): number {
  const mib = Number(process.env['GODWIT_CHUNK_CACHE_MIB'] ?? 2048);
  return (Number.isFinite(mib) && mib >= 0 ? mib : 2048) * 1024 * 1024;
}

/** A running migration service. */
export interface MigrationService {
  routes: Route[];
  /** The transfer server's endpoint, when this agent accepts incoming migrations. */
  transfer?: { host: string; port: number };
  /** Waits for running migrations, then stops the transfer server. */
  close(): Promise<void>;
}

/** Options of `startMigrationService`. */
export interface MigrationServiceOptions {
  runtime: ContainerRuntime;
  /** The host's state directory root. */
  stateRoot: string;
  hostLabel: string;
  /** Where the transfer server listens (the host address, agent port + 1 by default); none: no incoming. */
  transferListen?: { host: string; port: number };
  /** Whether this host can dump and restore memory lazily (userfaultfd); default true. */
  lazyPages?: boolean;
  /**
   * The write tracker (godwit-wptrack): pre-copy then knows exactly which pages were written.
   * Without it (or GODWIT_TRACK_WRITES=0), rounds find changes by comparing bytes only.
   */
  writeTracker?: string;
  log: Logger;
}

/** A pre-copy round's transfer session (`ID.rN`), not a migration's final one (`ID`). */
const isRoundSession = (sessionId: string): boolean => /\.r\d+$/.test(sessionId);
/** A pre-copy session: a round's (`ID.rN`) or a closing pass's (`ID.cN`, precopy.ts). */
const isPrecopySession = (sessionId: string): boolean => /\.[rc]\d+$/.test(sessionId);

/** Opens the chunk store, starts the transfer server and returns the API routes. */
export async function startMigrationService(opts: MigrationServiceOptions): Promise<MigrationService> {
  // New chunks are staged in memory and written to disk after commit, off the downtime path
  // (see StagedChunkStore for the measured reason).
  // Both writers of this store (snapshotDirectory, the transfer receiver) hash or verify every
  // chunk just before putting it, so the staged put does not hash a second time.
  const store = new StagedChunkStore(await FsChunkStore.open(join(opts.stateRoot, 'chunks')), {
    trustPuts: true,
  });
  const migrationsDir = join(opts.stateRoot, 'migrations');
  const incomingDir = join(migrationsDir, 'incoming');
  const scratch = await scratchDirFor(opts.stateRoot);
  const transferDataDir = join(opts.stateRoot, 'transfers');
  const log = opts.log.child({ component: 'migration' });
  // Writing thousands of chunk files takes seconds here (file creation ≈ 0.6 ms each): a 256 MiB
  // memory image is ~26 000 page-sized chunks, half a minute of a core per host and migration,
  // which slowed the next migrations' checkpoints and restores 2–3× in back-to-back runs. So
  // page-sized chunks stay in memory as a cache (they always exist elsewhere: in the container,
  // or on the peer) up to a budget, and only the oldest beyond it reach the disk; other chunks
  // are persisted after commit. All of it waits while a migration runs here (QuietGate).
  let flushing: Promise<void> = Promise.resolve();
  const quiet = new QuietGate();
  const budget = chunkCacheBudget();
  const persist = (manifest: Manifest): void => {
    const large = new Set<Digest>();
    for (const e of manifest.entries) {
      if (e.type !== 'file') continue;
      for (const c of e.chunks ?? []) if ('digest' in c && c.size > PAGE_SIZE) large.add(c.digest);
    }
    flushing = flushing
      .then(async () => {
        const r = await store.flush([...large], { pace: () => quiet.wait() });
        const over = await store.flushOldest(budget, { pace: () => quiet.wait() });
        return { chunks: r.chunks + over.chunks, bytes: r.bytes + over.bytes };
      })
      .then(
        (r) => log.info('chunks persisted', { label: manifest.label, ...r }),
        (err: unknown) => log.warn('cannot persist chunks', { label: manifest.label, err: String(err) }),
      );
  };

  const mover: StateMover = {
    store,
    snapshot: (dir, label, o) =>
      snapshotDirectory(dir, store, {
        label,
        chunkSizeFor: chunkSizeForCheckpoint,
        ...(o?.knownPages ? { knownPages: o.knownPages } : {}),
        ...(o?.holes ? { holes: o.holes } : {}),
        ...(o?.exclude ? { exclude: o.exclude } : {}),
      }),
    send: async (o) => {
      const st = await sendManifest({
        host: o.host,
        port: o.port,
        sessionId: o.sessionId,
        manifest: o.manifest,
        // Built here (snapshotDirectory, the pre-copy mirror), never received.
        trusted: true,
        ...(o.base ? { base: o.base } : {}),
        store: o.source ?? store,
        log,
        ...(o.onProgress
          ? {
              onProgress: (p: { bytesDone: number; bytesTotal: number }) =>
                o.onProgress?.(p.bytesDone, p.bytesTotal),
            }
          : {}),
      });
      return st;
    },
    keep: async (name, manifest) => {
      await store.retain(name, manifest);
      persist(manifest);
    },
    drop: (manifest) => store.discard(manifestDigests(manifest)),
  };
  const engine = new MigrationEngine({
    runtime: opts.runtime,
    mover,
    dir: migrationsDir,
    ...(scratch ? { scratchDir: join(scratch, 'out') } : {}),
    hostLabel: opts.hostLabel,
    log,
    quiet,
    allowFaults: process.env['GODWIT_FAULT_INJECTION'] === '1',
    ...(opts.transferListen ? { pageSourceHost: opts.transferListen.host } : {}),
    // GODWIT_HOLD_MEMORY=0: post-copy writes the whole dump out (the memory served from it).
    holdMemory: process.env['GODWIT_HOLD_MEMORY'] !== '0',
    lazyPages: opts.lazyPages !== false,
    ...(opts.writeTracker && process.env['GODWIT_TRACK_WRITES'] !== '0'
      ? { writeTracker: opts.writeTracker }
      : {}),
  });
  // Migrations a killed agent left half-way are settled before this one serves anything.
  await engine.recover();

  let server: Awaited<ReturnType<typeof startTransferServer>> | undefined;
  let incoming: IncomingMigrations | undefined;
  if (opts.transferListen) {
    const arrivals = new ArrivalStore(store);
    let onOffer: (sessionId: string, manifest: Manifest, missing: readonly Digest[]) => void = () =>
      undefined;
    server = await startTransferServer({
      store: arrivals,
      listen: opts.transferListen,
      dataDir: transferDataDir,
      log,
      // A migration's checkpoint travels as the session named after it (rounds are `ID.rN`).
      onOffer: (sessionId, manifest, missing) => onOffer(sessionId, manifest, missing),
      // The final session completes while the container is stopped: its record is not synced
      // (as for a final state delivered inline); at commit its chunks are retained for the container.
      syncSession: isRoundSession,
    });
    const transfer = server;
    // Pre-copy rounds of migration ID are transfer sessions `ID.rN`, its closing passes `ID.cN`;
    // they end with the migration.
    const dropRounds = async (sessionId: string, keep: ReadonlySet<string>): Promise<void> => {
      const rounds = (await readdir(transferDataDir).catch(() => [] as string[])).filter(
        (d) => d.startsWith(`${sessionId}.`) && /^[rc]\d+$/.test(d.slice(sessionId.length + 1)),
      );
      for (const r of rounds) {
        const manifest = await completedManifest(transferDataDir, r).catch(() => undefined);
        if (manifest) store.discard(manifestDigests(manifest).filter((d) => !keep.has(d)));
        await store.release(`session:${r}`);
        await rm(join(transferDataDir, r), { recursive: true, force: true });
        transfer.forget(r);
      }
    };
    const state: IncomingState = {
      completed: (sessionId) => transfer.completed(sessionId),
      chunk: (digest) => {
        const b = store.peek?.(digest);
        return b ? Promise.resolve(b) : store.get(digest);
      },
      chunkInto: (digest, out, offset, size) => store.readInto(digest, out, offset, size),
      deliver: (sessionId, manifest, chunks) => transfer.deliver(sessionId, manifest, chunks),
      materialize: (manifest: Manifest, dir: string, o) => materialize(manifest, store, dir, o),
      materializeArriving: (manifest, dir, missing, signal, o) =>
        materialize(manifest, arrivals.awaiting(missing, signal), dir, o),
      keep: async (name, manifest, sessionId) => {
        await store.retain(name, manifest);
        persist(manifest);
        await store.release(`session:${sessionId}`);
        await rm(join(transferDataDir, sessionId), { recursive: true, force: true });
        await dropRounds(sessionId, new Set(manifestDigests(manifest)));
        transfer.forget(sessionId);
      },
      discard: async (sessionId) => {
        const manifest = await completedManifest(transferDataDir, sessionId).catch(() => undefined);
        if (manifest) store.discard(manifestDigests(manifest));
        await store.release(`session:${sessionId}`);
        await rm(join(transferDataDir, sessionId), { recursive: true, force: true });
        await dropRounds(sessionId, new Set());
        transfer.forget(sessionId);
      },
    };
    incoming = new IncomingMigrations({
      runtime: opts.runtime,
      state,
      transfer: { host: server.address, port: server.port },
      dir: incomingDir,
      quiet,
      lazyRestore: process.env['GODWIT_LAZY_RESTORE'] !== '0' && opts.lazyPages !== false,
      lazyPages: opts.lazyPages !== false,
      ...(scratch ? { scratchDir: join(scratch, 'in') } : {}),
      log,
    });
    const inc = incoming;
    onOffer = (sessionId, manifest, missing) => {
      if (!isPrecopySession(sessionId)) {
        inc.offered(sessionId, manifest, missing);
        return;
      }
      // Rounds before the previous one are no longer a delta base: drop them from memory.
      const m = /^(.*)\.r(\d+)$/.exec(sessionId);
      if (m) for (let k = Number(m[2]) - 2; k >= 0; k--) transfer.forget(`${m[1]}.r${k}`);
      // A pre-copy round: what this host already had on disk (an earlier trip) is read into
      // memory now, so that the final reassembly does not read it from disk while stopped.
      if (sessionId.endsWith('.r0')) {
        void store.warm(manifestDigests(manifest)).then(
          (r) => log.info('chunks warmed for an incoming migration', { sessionId, ...r }),
          () => undefined,
        );
      }
    };
  }
  const peers = new Map<string, AgentClient>();
  const routes = migrationRoutes({
    engine,
    incoming,
    connectPeer: (to) => {
      const key = `${to.host}:${to.port}`;
      let client = peers.get(key);
      if (!client) {
        client = new AgentClient({ host: to.host, port: to.port });
        peers.set(key, client);
      }
      return new AgentMigrationPeer(client, to.label ?? key);
    },
  });
  return {
    routes,
    ...(server ? { transfer: { host: server.address, port: server.port } } : {}),
    async close() {
      await engine.drain();
      await flushing;
      await server?.close();
      for (const c of peers.values()) c.close();
    },
  };
}
