/**
 * The benchmark's Redis workload end to end on the testbed's `lan` link: Redis (image `redis`, the host's
 * redis-server) on h1 under redis-benchmark's SET load from the client namespace, probed with
 * `redis://` (INCR), migrated cold to h2: the probe's counter never goes back, and Redis on h2 answers
 * with the keys the load wrote.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, it } from 'node:test';
import {
  REDIS_BENCHMARK,
  REDIS_PORT,
  redisCommand,
  redisServerArgs,
  startRedisLoad,
  waitRedisReady,
} from '../../src/bench/redis-workload.js';
import { probeInNetns } from '../../src/bench/manual-migration.js';
import { describeReply } from '../../src/probe/resp.js';
import { HOST_REDIS_SERVER } from '../../src/runtime/image-store.js';
import { linkProfile } from '../../src/testbed/profiles.js';
import { useMigrationTestbed } from './migration-testbed.js';
import { missingRequirement } from './support.js';

const missing =
  (await missingRequirement()) ??
  [HOST_REDIS_SERVER, REDIS_BENCHMARK]
    .filter((f) => !existsSync(f))
    .map((f) => `${f} is missing (apt-get install redis-tools)`)[0];
if (missing && process.env['CI'] === 'true')
  throw new Error(`integration tests cannot run in CI: ${missing}`);
const skip = missing ?? false;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('Redis workload: redis-server under redis-benchmark, probed and migrated cold', { skip }, () => {
  const bed = useMigrationTestbed({
    name: `gwr${process.pid % 100000}`,
    hosts: 2,
    link: linkProfile('lan')!,
  });
  const { host } = bed;

  it('answers INCR with a growing counter, keeps it and the load’s keys across a cold move to h2', async (t) => {
    const client = bed.tb.client!.netns;
    const runStart = performance.now();
    const info = await host(0).a.run({ name: 'redis', image: 'redis', args: redisServerArgs(), env: {} });
    const runMs = performance.now() - runStart;
    const ip = info.network!.ip;
    const readyStart = performance.now();
    await waitRedisReady(client, ip, REDIS_PORT, 20_000);
    const readyMs = performance.now() - readyStart;
    const target = `redis://${ip}:${REDIS_PORT}`;
    const load = startRedisLoad({ netns: client, host: ip });
    try {
      // A short probe first: replies and a counter that grows.
      const before = await probeInNetns({
        bin: resolve('bin/godwit.js'),
        netns: client,
        target,
        durationMs: 1000,
        intervalMs: 10,
      });
      for (const s of [before.fresh, before.longLived]) {
        assert.ok(s.ok > 20, `ok ${s.ok}: ${JSON.stringify(s.firstErrors.slice(0, 3))}`);
        assert.equal(s.counterResets, 0);
        assert.ok((s.counterLast ?? 0) > (s.counterFirst ?? 0), `${s.counterFirst} → ${s.counterLast}`);
      }
      assert.equal(before.target.protocol, 'redis');

      // Then a probe across the move.
      const stop = new AbortController();
      const across = probeInNetns({
        bin: resolve('bin/godwit.js'),
        netns: client,
        target,
        durationMs: 40_000,
        intervalMs: 10,
        signal: stop.signal,
      });
      across.catch(() => undefined);
      await sleep(1000);
      const moved = await bed.migrate(0, 1, { name: 'redis', strategy: 'cold' });
      assert.equal(moved.outcome, 'committed', JSON.stringify(moved.error ?? moved.warnings));
      assert.deepEqual(await bed.runningOn('redis'), [1], 'exactly one copy, on h2');
      await sleep(1500);
      stop.abort();
      const seen = await across;
      const result = await load.stop();

      const dbsize = await redisCommand(client, ip, REDIS_PORT, ['DBSIZE']);
      const counter = await redisCommand(client, ip, REDIS_PORT, ['GET', 'godwit:probe']);
      t.diagnostic(
        `redis: run ${runMs.toFixed(0)} ms, ready ${readyMs.toFixed(0)} ms after; cold move downtime ` +
          `${moved.downtimeMs} ms, total ${moved.totalMs} ms, wire ${moved.bytes.wire} B of ${moved.bytes.logical} B; ` +
          `client gap ${seen.fresh.maxGapMs.toFixed(0)} ms (fresh), ${seen.longLived.maxGapMs.toFixed(0)} ms ` +
          `(long-lived, survived ${seen.survived}); counter ${before.fresh.counterFirst} → ` +
          `${seen.longLived.counterLast}; load ${result.requests} SETs in ${result.durationMs} ms` +
          `${result.exitedEarly ? ` (ended early: ${result.lastMessage})` : ''}; DBSIZE ${describeReply(dbsize)}`,
      );

      for (const [name, s] of [
        ['fresh', seen.fresh],
        ['long-lived', seen.longLived],
      ] as const) {
        assert.ok(s.ok > 50, `${name}: ok ${s.ok}`);
        assert.equal(s.counterResets, 0, `${name}: the counter went on from where it was`);
      }
      // The counter carried on from the first probe's: the state moved with the container.
      const firstLast = Math.max(before.fresh.counterLast ?? 0, before.longLived.counterLast ?? 0);
      assert.ok((seen.fresh.counterFirst ?? 0) > firstLast, `${seen.fresh.counterFirst} > ${firstLast}`);
      const lastSeen = Math.max(seen.fresh.counterLast ?? 0, seen.longLived.counterLast ?? 0);
      assert.ok(
        counter.type === 'bulk' && Number(counter.value?.toString()) >= lastSeen,
        `GET godwit:probe ${describeReply(counter)} ≥ ${lastSeen}`,
      );
      // The load's keys are there on h2 (key:000000000000… plus the probe's).
      assert.ok(dbsize.type === 'integer' && dbsize.value > 100, `DBSIZE ${describeReply(dbsize)}`);
      assert.ok(result.requests > 0, `the load's requests: ${JSON.stringify(result)}`);
    } finally {
      await load.stop();
      await host(1)
        .a.remove('redis', { force: true })
        .catch(() => undefined);
      await host(0)
        .a.remove('redis', { force: true })
        .catch(() => undefined);
    }
  });
});
