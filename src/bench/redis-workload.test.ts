import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BenchmarkProgress,
  REDIS_PORT,
  redisCommand,
  redisServerArgs,
  startRedisLoad,
  waitRedisReady,
} from './redis-workload.js';

describe('redisServerArgs', () => {
  it('runs the image’s redis-server in the foreground, open, without persistence', () => {
    const args = redisServerArgs();
    assert.equal(args[0], '/usr/bin/redis-server');
    const opt = (name: string): string | undefined => args[args.indexOf(name) + 1];
    assert.equal(opt('--port'), String(REDIS_PORT));
    assert.equal(opt('--bind'), '0.0.0.0');
    assert.equal(opt('--protected-mode'), 'no');
    assert.equal(opt('--daemonize'), 'no');
    assert.equal(opt('--save'), '');
    assert.equal(opt('--appendonly'), 'no');
    assert.equal(opt('--logfile'), '');
    assert.equal(opt('--maxmemory'), '64mb');
    assert.equal(redisServerArgs({ maxMemoryMiB: 8 })[redisServerArgs().indexOf('--maxmemory') + 1], '8mb');
    assert.throws(() => redisServerArgs({ maxMemoryMiB: 0 }), { code: 'GODWIT_INVALID_FLAG' });
  });
});

describe('BenchmarkProgress', () => {
  const line = (rps: number, overall: number): string =>
    `${' '.repeat(60)}\rSET: rps=${rps.toFixed(1)} (overall: ${overall.toFixed(1)}) avg_msec=0.045 (overall: 0.045)\r`;

  it('estimates the requests from the overall rate and the time since the run began', () => {
    const p = new BenchmarkProgress(1_000_000);
    assert.equal(p.requests(), 0);
    p.push(line(0, 20000), 1000); // 250 ms into the run
    assert.equal(p.requests(), 5000);
    p.push(line(30000, 25000).slice(0, 30), 1250); // split mid-line
    p.push(line(30000, 25000).slice(30), 1250);
    assert.equal(p.requests(), 12500); // 25000/s × 0.5 s
    p.push(line(0, 10000) + line(0, 7500), 1750); // frozen for a while: the overall rate falls
    assert.equal(p.requests(), 7500); // 7500/s × 1 s
    assert.equal(p.lastMessage, undefined);
  });

  it('adds completed runs, and keeps the last message', () => {
    const p = new BenchmarkProgress(1000);
    p.push(line(4000, 4000), 0);
    p.push('SET: 4000.00 requests per second, p50=0.2 msec\n', 300);
    p.push(line(4000, 4000), 600);
    assert.equal(p.requests(), 2000);
    p.pushMessage('Error: Connection reset by peer\n');
    assert.equal(p.lastMessage, 'Error: Connection reset by peer');
    p.push('All clients disconnected... aborting.\n', 700);
    assert.equal(p.lastMessage, 'All clients disconnected... aborting.');
  });
});

describe('option checks', () => {
  it('refuses bad namespaces, hosts and sizes before running anything', async () => {
    assert.throws(() => startRedisLoad({ netns: '../x', host: '10.0.0.1' }), { code: 'GODWIT_INVALID_FLAG' });
    assert.throws(() => startRedisLoad({ netns: 'ns', host: '-h' }), { code: 'GODWIT_INVALID_FLAG' });
    assert.throws(() => startRedisLoad({ netns: 'ns', host: '10.0.0.1', clients: 0 }), /clients 0/);
    assert.throws(() => startRedisLoad({ netns: 'ns', host: '10.0.0.1', valueBytes: 1.5 }), /valueBytes/);
    await assert.rejects(redisCommand('ns', 'a b', 6379, ['PING']), { code: 'GODWIT_INVALID_FLAG' });
    await assert.rejects(waitRedisReady('bad/ns', '10.0.0.1', 6379, 10), { code: 'GODWIT_INVALID_FLAG' });
  });
});
