/**
 * Assembles an agent's migration service: its chunk store, its transfer server, the
 * source-side engine and the destination-side handler, and the API routes over them.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { AgentClient } from '../agent/client.js';
import type { Route } from '../agent/server.js';
import type { Manifest } from '../core/chunks.js';
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
import { migrationRoutes } from './routes.js';

/**
 * CRIU's memory images (`criu/pages-N.img`) are cut into page-sized chunks, so identical
 * pages are one chunk wherever they sit and pages the destination already holds are found
 * again; everything else in 64 KiB chunks.
 */
export function chunkSizeForCheckpoint(rel: string): number | undefined {
  return /(^|\/)pages-\d+\.img$/.test(rel) ? 4096 : undefined;
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
  log: Logger;
}

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
  const transferDataDir = join(opts.stateRoot, 'transfers');
  const log = opts.log.child({ component: 'migration' });
  // Writing thousands of chunk files takes seconds here (file creation ≈ 0.6 ms each), so
  // chunks reach the disk in the background after commit; until then they are served from
  // memory, and if the agent stops first they are simply not kept (a cache, never the only copy).
  let flushing: Promise<void> = Promise.resolve();
  const persist = (manifest: Manifest): void => {
    flushing = flushing
      .then(() => store.flush(manifestDigests(manifest)))
      .then(
        (r) => log.info('chunks persisted', { label: manifest.label, ...r }),
        (err: unknown) => log.warn('cannot persist chunks', { label: manifest.label, err: String(err) }),
      );
  };

  const mover: StateMover = {
    snapshot: (dir, label) => snapshotDirectory(dir, store, { label, chunkSizeFor: chunkSizeForCheckpoint }),
    send: async (o) => {
      const st = await sendManifest({
        host: o.host,
        port: o.port,
        sessionId: o.sessionId,
        manifest: o.manifest,
        store,
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
    hostLabel: opts.hostLabel,
    log,
  });
  // Migrations a killed agent left half-way are settled before this one serves anything.
  await engine.recover();

  let server: Awaited<ReturnType<typeof startTransferServer>> | undefined;
  let incoming: IncomingMigrations | undefined;
  if (opts.transferListen) {
    server = await startTransferServer({ store, listen: opts.transferListen, dataDir: transferDataDir, log });
    const state: IncomingState = {
      completed: (sessionId) => completedManifest(transferDataDir, sessionId),
      materialize: (manifest: Manifest, dir: string) => materialize(manifest, store, dir),
      keep: async (name, manifest, sessionId) => {
        await store.retain(name, manifest);
        persist(manifest);
        await store.release(`session:${sessionId}`);
        await rm(join(transferDataDir, sessionId), { recursive: true, force: true });
      },
      discard: async (sessionId) => {
        const manifest = await completedManifest(transferDataDir, sessionId).catch(() => undefined);
        if (manifest) store.discard(manifestDigests(manifest));
        await store.release(`session:${sessionId}`);
        await rm(join(transferDataDir, sessionId), { recursive: true, force: true });
      },
    };
    incoming = new IncomingMigrations({
      runtime: opts.runtime,
      state,
      transfer: { host: server.address, port: server.port },
      dir: incomingDir,
      log,
    });
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
