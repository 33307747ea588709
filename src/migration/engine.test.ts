import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MemoryRuntime } from '../agent/testing.js';
import { MANIFEST_VERSION, type Manifest } from '../core/chunks.js';
import { ErrorCode, UnavailableError } from '../core/errors.js';
import { nullLogger } from '../core/logger.js';
import { MemoryChunkStore } from '../chunks/index.js';
import { MigrationPhase } from '../core/migration.js';
import { ContainerStatus } from '../core/runtime.js';
import { MigrationEngine, type StateMover } from './engine.js';
import type { MigrationPeer } from './peer.js';

const manifest: Manifest = { version: MANIFEST_VERSION, label: 't', createdAt: 'now', entries: [] };

/** A destination that restores into its own MemoryRuntime and can be told to fail at a step. */
class FakePeer implements MigrationPeer {
  readonly label = 'h2';
  readonly runtime = new MemoryRuntime();
  failAt: 'prepare' | 'restore' | 'restore-after' | 'finish' | undefined;
  calls: string[] = [];
  constructor(private readonly source: MemoryRuntime) {}
  /** The image each prepare asked the destination to make ready. */
  images: (string | undefined)[] = [];
  async prepare(id: string, name: string, _network?: unknown, image?: string) {
    this.calls.push(`prepare ${name}`);
    this.images.push(image);
    if (this.failAt === 'prepare') throw new UnavailableError(ErrorCode.AgentUnavailable, 'peer down');
    void id;
    return { transfer: { host: '127.0.0.1', port: 1 } };
  }
  async restore(_id: string, name: string) {
    this.calls.push(`restore ${name}`);
    if (this.failAt === 'restore') throw new UnavailableError(ErrorCode.CriuRestoreFailed, 'restore failed');
    const spec = this.source.containers.get(name)?.spec ?? { name, image: 'busybox', args: ['x'], env: {} };
    const info = await this.runtime.run({ ...spec, name });
    if (this.failAt === 'restore-after') {
      this.failAt = 'finish'; // the answer is lost and the peer stays unreachable
      throw new UnavailableError(ErrorCode.AgentUnavailable, 'connection reset');
    }
    return { pid: info.pid ?? 1, restoreMs: 1, materializeMs: 1 };
  }
  async fill(): Promise<never> {
    throw new UnavailableError(ErrorCode.NotImplemented, 'no lazy restores here');
  }
  async finish(_id: string, committed: boolean) {
    this.calls.push(`finish ${committed}`);
    if (this.failAt === 'finish') throw new UnavailableError(ErrorCode.AgentUnavailable, 'peer down');
    return { removedContainer: false };
  }
}

function mover(fail?: 'send'): StateMover {
  return {
    store: new MemoryChunkStore(),
    snapshot: async () => ({
      manifest,
      stats: {
        files: 1,
        logicalBytes: 100,
        zeroBytes: 10,
        inlineBytes: 0,
        uniqueChunks: 1,
        uniqueChunkBytes: 90,
      },
    }),
    send: async () => {
      if (fail === 'send') throw new UnavailableError(ErrorCode.AgentUnavailable, 'link cut');
      return {
        logicalBytes: 100,
        zeroBytes: 10,
        dedupBytes: 0,
        rawBytesSent: 90,
        wireBytes: 30,
        durationMs: 10,
        reconnects: 0,
      };
    },
    keep: async () => undefined,
  };
}

describe('MigrationEngine (cold)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-engine-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  async function setup(fail?: 'send') {
    const runtime = new MemoryRuntime();
    await runtime.run({ name: 'web', image: 'busybox', args: ['x'], env: {} });
    const peer = new FakePeer(runtime);
    const engine = new MigrationEngine({
      runtime,
      mover: mover(fail),
      dir,
      hostLabel: 'h1',
      log: nullLogger,
    });
    return { runtime, peer, engine };
  }

  it('commits: phases in order, source gone, destination runs it, bytes accounted', async () => {
    const { runtime, peer, engine } = await setup();
    const { done } = await engine.start({ name: 'web', strategy: 'cold', peer });
    const r = await done;
    assert.equal(r.outcome, 'committed');
    assert.deepEqual(
      r.phases.map((p) => p.phase),
      [
        MigrationPhase.Prepare,
        MigrationPhase.Checkpoint,
        MigrationPhase.Snapshot,
        MigrationPhase.Transfer,
        MigrationPhase.Restore,
        MigrationPhase.Commit,
        MigrationPhase.Cleanup,
      ],
    );
    assert.equal(runtime.containers.has('web'), false, 'source released');
    assert.equal((await peer.runtime.inspect('web')).status, ContainerStatus.Running);
    assert.deepEqual(
      peer.images,
      ['busybox'],
      'the destination was asked to make the image ready at prepare',
    );
    assert.deepEqual(r.bytes, { logical: 100, zero: 10, dedup: 0, sent: 90, wire: 30 });
    assert.equal(r.compressionRatio, 3);
    assert.ok(r.downtimeMs !== undefined && r.totalMs !== undefined && r.downtimeMs <= r.totalMs);
    assert.deepEqual(await engine.get(r.id), r);
  });

  it('rolls back when the link dies during the transfer: the source runs again, once', async () => {
    const { runtime, peer, engine } = await setup('send');
    const r = await (await engine.start({ name: 'web', strategy: 'cold', peer })).done;
    assert.equal(r.outcome, 'rolled-back');
    assert.equal(r.error?.message, 'link cut');
    assert.equal((await runtime.inspect('web')).status, ContainerStatus.Running);
    assert.equal(peer.runtime.containers.size, 0);
    assert.ok(peer.calls.includes('finish false'), 'the destination was told to clean up');
  });

  it('rolls back when the destination fails to restore', async () => {
    const { runtime, peer, engine } = await setup();
    peer.failAt = 'restore';
    const r = await (await engine.start({ name: 'web', strategy: 'cold', peer })).done;
    assert.equal(r.outcome, 'rolled-back');
    assert.equal((await runtime.inspect('web')).status, ContainerStatus.Running);
    assert.equal(r.phases.at(-1)?.phase, MigrationPhase.Rollback);
  });

  it('does not resume the source when the destination may already run it', async () => {
    const { runtime, peer, engine } = await setup();
    peer.failAt = 'restore-after';
    const r = await (await engine.start({ name: 'web', strategy: 'cold', peer })).done;
    assert.equal(r.outcome, 'failed');
    assert.equal((await runtime.inspect('web')).status, ContainerStatus.Checkpointed, 'source not resumed');
    assert.equal(peer.runtime.containers.size, 1, 'exactly one copy runs');
    assert.match(r.warnings.join('\n'), /godwit restore/);
  });

  it('fails before anything changes when the destination is unreachable at prepare', async () => {
    const { runtime, peer, engine } = await setup();
    peer.failAt = 'prepare';
    const r = await (await engine.start({ name: 'web', strategy: 'cold', peer })).done;
    assert.equal(r.outcome, 'rolled-back');
    assert.ok(!runtime.calls.some((c) => c.startsWith('checkpoint')), 'never checkpointed');
    assert.equal((await runtime.inspect('web')).status, ContainerStatus.Running);
  });

  it('refuses a container that is not running, or already migrating', async () => {
    const { runtime, peer, engine } = await setup();
    await runtime.stop('web');
    await assert.rejects(engine.start({ name: 'web', strategy: 'cold', peer }), /not running/);
  });
});

describe('MigrationEngine.recover (agent killed mid-migration)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-recover-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  async function leftBehind(id: string, phases: MigrationPhase[], committed = false) {
    const runtime = new MemoryRuntime();
    await runtime.run({ name: 'web', image: 'busybox', args: ['x'], env: {} });
    const checkpointDir = join(dir, id, 'checkpoint');
    await runtime.checkpoint('web', { dir: checkpointDir });
    await mkdir(join(dir, id), { recursive: true });
    const report = {
      id,
      name: 'web',
      strategy: 'cold',
      from: 'h1',
      to: 'h2',
      outcome: 'running',
      ...(committed ? { committed: true } : {}),
      startedAt: new Date(0).toISOString(),
      phases: phases.map((phase, i) => ({ phase, startMs: i })),
      bytes: { logical: 0, zero: 0, dedup: 0, sent: 0, wire: 0 },
      warnings: [],
    };
    await writeFile(join(dir, id, 'report.json'), JSON.stringify(report));
    const engine = new MigrationEngine({ runtime, mover: mover(), dir, hostLabel: 'h1', log: nullLogger });
    return { runtime, engine };
  }

  it('resumes the source when the restore phase never started', async () => {
    const { runtime, engine } = await leftBehind('m-a', [
      MigrationPhase.Prepare,
      MigrationPhase.Checkpoint,
      MigrationPhase.Transfer,
    ]);
    const [r] = await engine.recover();
    assert.equal(r?.outcome, 'rolled-back');
    assert.equal((await runtime.inspect('web')).status, ContainerStatus.Running);
    await rm(join(dir, 'm-a'), { recursive: true, force: true });
  });

  it('does not resume the source once the destination may run it', async () => {
    const { runtime, engine } = await leftBehind('m-b', [
      MigrationPhase.Prepare,
      MigrationPhase.Checkpoint,
      MigrationPhase.Transfer,
      MigrationPhase.Restore,
    ]);
    const [r] = await engine.recover();
    assert.equal(r?.outcome, 'failed');
    assert.equal((await runtime.inspect('web')).status, ContainerStatus.Checkpointed);
    assert.match(r?.warnings.join('\n') ?? '', /godwit restore/);
    await rm(join(dir, 'm-b'), { recursive: true, force: true });
  });

  it('finishes the commit when the agent died after the point of no return', async () => {
    const { runtime, engine } = await leftBehind(
      'm-c',
      [MigrationPhase.Prepare, MigrationPhase.Restore, MigrationPhase.Commit],
      true,
    );
    const [r] = await engine.recover();
    assert.equal(r?.outcome, 'committed');
    assert.equal(runtime.containers.has('web'), false, 'the source record is gone');
    assert.deepEqual(await engine.recover(), [], 'settled once');
  });
});
