import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ErrorCode, NotFoundError } from '../core/errors.js';
import { parseHostPort, resolveAgentAddress } from './target.js';

describe('--host resolution', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-target-'));
    await writeFile(
      join(dir, 'testbed.json'),
      JSON.stringify({
        version: 1,
        name: 'tb',
        hosts: [
          {
            name: 'h1',
            socket: '/run/godwit/h1/agent.sock',
            netns: 'gw-h1',
            address: '10.77.0.1',
            port: 7070,
          },
          {
            name: 'h2',
            socket: '/run/godwit/h2/agent.sock',
            netns: 'gw-h2',
            address: '10.77.0.2',
            port: 7070,
          },
        ],
      }),
    );
  });
  after(() => rm(dir, { recursive: true, force: true }));
  const env = (): NodeJS.ProcessEnv => ({ GODWIT_TESTBED_DIR: dir });

  it('parses ADDR:PORT', () => {
    assert.deepEqual(parseHostPort('127.0.0.1:7070'), { host: '127.0.0.1', port: 7070 });
    assert.deepEqual(parseHostPort('[::1]:80'), { host: '::1', port: 80 });
    assert.deepEqual(parseHostPort('node-1:0'), { host: 'node-1', port: 0 });
    assert.equal(parseHostPort('h1'), undefined);
    assert.equal(parseHostPort('a:70000'), undefined);
    assert.equal(parseHostPort('::1:80'), undefined);
  });
  it('takes a path as a socket and ADDR:PORT as TCP', async () => {
    assert.deepEqual(await resolveAgentAddress('./agent.sock', env()), { socketPath: './agent.sock' });
    assert.deepEqual(await resolveAgentAddress('10.77.0.2:7070', env()), { host: '10.77.0.2', port: 7070 });
  });
  it('finds testbed hosts by name', async () => {
    assert.deepEqual(await resolveAgentAddress('h2', env()), { socketPath: '/run/godwit/h2/agent.sock' });
  });
  it('names the known hosts when the name is unknown', async () => {
    await assert.rejects(resolveAgentAddress('h9', env()), (err: unknown) => {
      assert.ok(err instanceof NotFoundError);
      assert.equal(err.code, ErrorCode.HostNotFound);
      assert.equal(err.hint, 'known hosts: h1, h2');
      return true;
    });
  });
  it('says when there is no testbed', async () => {
    await assert.rejects(
      resolveAgentAddress('h1', { GODWIT_TESTBED_DIR: join(dir, 'none') }),
      /there is no testbed/,
    );
  });
});
