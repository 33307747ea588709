/** `godwit probe` as a command: flag parsing, output and exit status (against an in-process HTTP server). */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { formatProbeReport, parseDuration } from '../cli/commands/probe.js';
import { runCommand } from '../system/exec.js';
import type { ProbeReport } from './probe.js';

const SRC = fileURLToPath(new URL('..', import.meta.url));

/**
 * Runs `godwit probe ARGS` in a child process (through tsx) with only the probe command registered, the way
 * main.ts runs commands: errors printed, exit code from the error's category. A child, because the test
 * runner's own output shares this process's stdout.
 */
async function probe(...args: string[]): Promise<{ out: string; err: string; code: number }> {
  const script = `
    import { Command } from 'commander';
    import { registerProbeCommand } from '${SRC}cli/commands/probe.ts';
    import { CliContext } from '${SRC}cli/context.ts';
    import { exitCodeFor } from '${SRC}cli/exit-codes.ts';
    import { printError } from '${SRC}cli/main.ts';
    const program = new Command('godwit').exitOverride();
    let code = 0;
    registerProbeCommand(program, () => CliContext.fromFlags({}), (c) => { code = c; });
    try { await program.parseAsync(process.argv.slice(1), { from: 'user' }); }
    catch (err) { printError(err, false); code = exitCodeFor(err); }
    process.exitCode = code;`;
  const res = await runCommand(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', script, 'probe', ...args],
    { timeoutMs: 30_000 },
  );
  return { out: res.stdout, err: res.stderr, code: res.code };
}

describe('parseDuration', () => {
  it('reads ms and s', () => {
    assert.equal(parseDuration('5ms', '--interval'), 5);
    assert.equal(parseDuration('1.5s', '--duration'), 1500);
    assert.equal(parseDuration(' 300 ms ', '--timeout'), 300);
    assert.equal(parseDuration('0ms', '--interval', { allowZero: true }), 0);
  });
  it('refuses bare numbers, other units, negatives and zero where it makes no sense', () => {
    for (const bad of ['10', '5m', '-1s', '1e3ms', '', 's', '0s']) {
      assert.throws(() => parseDuration(bad, '--duration'), { code: 'GODWIT_INVALID_FLAG' }, bad);
    }
  });
});

describe('godwit probe', () => {
  let server: Server;
  let target: string;
  let n = 0;
  before(async () => {
    server = createServer((_req, res) => {
      const body = `counter ${++n}\n`;
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
      res.end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    target = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('prints one JSON document and exits 0 on a healthy service', async () => {
    const { out, err, code } = await probe(target, '--duration', '300ms', '--interval', '10ms', '--json');
    assert.equal(code, 0, err);
    assert.equal(err, '', 'no progress when stderr is not a TTY');
    const report = JSON.parse(out) as ProbeReport;
    assert.equal(report.survived, true);
    assert.ok(report.fresh.ok > 10 && report.longLived.ok > 10);
    assert.equal(report.intervalMs, 10);
    assert.equal(report.verdict.ok, true);
  });

  it('prints a block per series and the verdict', async () => {
    const { out, code } = await probe(`http://${target}/x`, '--duration', '200ms');
    assert.equal(code, 0);
    assert.match(out, /^probe 127\.0\.0\.1:\d+\/x for 0\.2\d\d s/);
    assert.match(out, /fresh connections[^\n]*\n {2}requests +\d+: \d+ ok, 0 errors\n {2}max gap/);
    assert.match(out, /long-lived connection[\s\S]*counter +\d+ → \d+, continued\n {2}connection survived/);
    assert.match(
      out,
      /\nverdict: ok: max gap [\d.]+ ms, counters continued, the long-lived connection survived\n$/,
    );
  });

  it('exits 1 when nothing answers', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const { out, code } = await probe(`127.0.0.1:${port}`, '--duration', '100ms');
    assert.equal(code, 1);
    assert.match(out, /first error +at [\d.]+ s: refused: /);
    assert.match(out, /verdict: fresh connections got no successful reply/);
  });

  it('rejects bad flags and unknown namespaces before probing', async () => {
    let r = await probe(target, '--duration', '10');
    assert.equal(r.code, 2);
    assert.match(r.err, /^godwit: --duration 10: not a duration\n {2}hint: write it with a unit/);
    r = await probe('nowhere', '--duration', '1s');
    assert.equal(r.code, 2);
    assert.match(r.err, /probe target "nowhere": expected host:port/);
    r = await probe(target, '--netns', 'godwit-no-such-ns-x');
    assert.equal(r.code, 3);
    assert.match(r.err, /no network namespace named godwit-no-such-ns-x/);
    r = await probe(target, '--netns', '../etc');
    assert.equal(r.code, 2);
    assert.equal(r.out, '');
  });
});

describe('formatProbeReport', () => {
  it('describes a broken connection and late replies', () => {
    const series = {
      requests: 10,
      ok: 8,
      errors: { refused: 0, reset: 1, timeout: 1, other: 0 },
      maxGapMs: 512.4,
      gapStartMs: 2010,
      gapEndMs: 2522.4,
      latencyMs: { count: 8, p50: 0.2, p90: 0.4, p99: 1.5, max: 2 },
      counterFirst: 1,
      counterLast: 20,
      counterResets: 0,
      firstErrors: [{ atMs: 2100, kind: 'reset' as const, message: 'read ECONNRESET' }],
    };
    const text = formatProbeReport({
      target: { host: '10.0.0.2', port: 8080, path: '/' },
      startedAt: '2026-01-01T00:00:00.000Z',
      intervalMs: 5,
      timeoutMs: 1000,
      stallTimeoutMs: 5000,
      durationMs: 5000,
      fresh: series,
      longLived: {
        ...series,
        survived: false,
        reconnects: 1,
        breaks: [{ atMs: 2100, kind: 'reset', message: 'read ECONNRESET' }],
        lateReplies: 1,
      },
      survived: false,
      verdict: {
        ok: false,
        problems: ['the long-lived connection broke at 2.100 s (reset: read ECONNRESET)'],
      },
    });
    assert.match(text, /requests +10: 8 ok, 2 errors \(1 reset, 1 timeout\); 1 late reply/);
    assert.match(text, /max gap +512 ms, from 2\.010 s to 2\.522 s/);
    assert.match(text, /connection broke at 2\.100 s \(reset: read ECONNRESET\); 1 reconnect\n/);
    assert.match(text, /verdict: the long-lived connection broke/);
  });
});
