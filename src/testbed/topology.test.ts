import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidArgumentError } from '../core/errors.js';
import { LINK_PROFILES } from './profiles.js';
import { htbBurstBytes, htbCommands, linkdArgs, tcRate } from './shaping.js';
import {
  containerNetns,
  containerPort,
  hostIndex,
  linkBetween,
  pairKey,
  validateBaseStateDir,
  validateTestbedName,
} from './topology.js';

const lan = LINK_PROFILES['lan']!;
const edge = LINK_PROFILES['edge']!;
const g4 = LINK_PROFILES['4g']!;

describe('testbed topology', () => {
  it('accepts short names without "-", so namespace prefixes never overlap', () => {
    assert.equal(validateTestbedName('gw'), 'gw');
    assert.equal(validateTestbedName('gwt123456'), 'gwt123456');
    for (const bad of ['', 'gw-2', 'GW', '1gw', 'abcdefghijklm', 'a b']) {
      assert.throws(() => validateTestbedName(bad), InvalidArgumentError, bad);
    }
  });

  it('canonicalizes host pairs and rejects bad ones', () => {
    assert.equal(pairKey('h2-h1', 3), 'h1-h2');
    assert.equal(pairKey('h1-h3', 3), 'h1-h3');
    for (const bad of ['h1-h1', 'h1-h4', 'h0-h1', '1-2', 'h1_h2', 'h1-h2-h3']) {
      assert.throws(() => pairKey(bad, 3), InvalidArgumentError, bad);
    }
  });

  it('applies a pair override in both directions', () => {
    const pairs = { 'h1-h3': edge };
    assert.equal(linkBetween(1, 3, lan, pairs), edge);
    assert.equal(linkBetween(3, 1, lan, pairs), edge);
    assert.equal(linkBetween(1, 2, lan, pairs), lan);
  });

  it('keeps container names within interface and file limits', () => {
    assert.equal(containerNetns('gw', 'web'), 'gw-c-web');
    const long = 'x'.repeat(100);
    assert.match(containerNetns('gw', long), /^gw-c-[0-9a-f]{16}$/);
    assert.equal(containerNetns('gw', long), containerNetns('gw', long));
    assert.match(containerPort('web'), /^c-[0-9a-f]{12}$/);
    assert.ok(containerPort(long).length <= 15);
    assert.notEqual(containerPort('a'), containerPort('b'));
  });

  it('knows host names', () => {
    assert.equal(hostIndex('h1'), 1);
    assert.equal(hostIndex('h16'), 16);
    assert.equal(hostIndex('h17'), undefined);
    assert.equal(hostIndex('h01'), undefined);
    assert.equal(hostIndex('x1'), undefined);
  });

  it('refuses base state directories that are too shallow to delete', () => {
    assert.equal(validateBaseStateDir('/var/lib/godwit/testbed/gw/'), '/var/lib/godwit/testbed/gw');
    for (const bad of ['/', '/var', 'relative/dir', '/tmp/../']) {
      assert.throws(() => validateBaseStateDir(bad), InvalidArgumentError, bad);
    }
  });
});

describe('testbed shaping', () => {
  it('spells rates for tc', () => {
    assert.equal(tcRate(1000), '1000mbit');
    assert.equal(tcRate(0.512), '512kbit');
    assert.equal(tcRate(2.5), '2500kbit');
  });

  it('bursts at least one GSO frame, else one millisecond of traffic', () => {
    assert.equal(htbBurstBytes(20), 70_000);
    assert.equal(htbBurstBytes(1000), 125_000);
  });

  it('builds one htb class, pfifo and u32 filter per peer', () => {
    const cmds = htbCommands('gw-h1', 1, 3, lan, { 'h1-h3': g4 });
    assert.deepEqual(cmds[0], [
      '-n',
      'gw-h1',
      'qdisc',
      'replace',
      'dev',
      'eth0',
      'root',
      'handle',
      '1:',
      'htb',
    ]);
    assert.equal(cmds.length, 1 + 2 * 3);
    const text = cmds.map((c) => c.join(' '));
    assert.ok(text.some((t) => t.includes('classid 1:2 htb rate 1000mbit ceil 1000mbit')));
    assert.ok(text.some((t) => t.includes('classid 1:3 htb rate 20mbit ceil 20mbit burst 70000')));
    assert.ok(text.some((t) => t.endsWith('match ip dst 10.77.0.3/32 flowid 1:3')));
    assert.ok(!text.some((t) => t.includes('10.77.0.1/32')), 'no class towards itself');
  });

  it('gives godwit-linkd every port and the delay and loss of each ordered pair', () => {
    const wan = LINK_PROFILES['wan']!;
    const args = linkdArgs(3, lan, { 'h2-h3': wan });
    assert.deepEqual(args.slice(0, 6), ['--port', 'h1', '--port', 'h2', '--port', 'h3']);
    const links = args.filter((_, i) => args[i - 1] === '--link');
    assert.deepEqual(links, [
      'h1,h2,500,0',
      'h1,h3,500,0',
      'h2,h1,500,0',
      'h2,h3,50000,0.1',
      'h3,h1,500,0',
      'h3,h2,50000,0.1',
    ]);
    assert.deepEqual(linkdArgs(2, { name: 'custom', rateMbit: 10, delayMs: 0, lossPct: 0 }, {}), [
      '--port',
      'h1',
      '--port',
      'h2',
    ]);
  });
});
