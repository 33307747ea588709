/**
 * `godwit bench` as a user runs it, on a one-cell matrix: the quick matrix's lan cell (memload
 * 16 MiB), one repetition of cold, the by-hand baseline and hybrid. Checks the files: results.json
 * against the schema (every run committed, the service's state kept), report.md's tables, and
 * that every chart is a valid SVG with a PNG of the same size beside it. Bounded: ≤ 4 min.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { isValidSvg, pngInfo } from '../../src/bench/charts.js';
import { validateResults, type BenchResults } from '../../src/bench/results.js';
import { runCommand } from '../../src/system/exec.js';
import { missingRequirement } from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);
const BIN = resolve('bin/godwit.js');

describe('godwit bench', { skip, timeout: 240_000 }, () => {
  let out: string | undefined;
  after(async () => {
    if (out) await rm(out, { recursive: true, force: true });
  });

  it('runs a one-cell matrix and writes results.json, report.md and charts', async () => {
    out = await mkdtemp(join(tmpdir(), 'godwit-bench-test-'));
    const r = await runCommand(
      process.execPath,
      [
        BIN,
        'bench',
        '--matrix',
        'quick',
        '--links',
        'lan',
        '--kinds',
        'cold,byhand,hybrid',
        '--reps',
        '1',
        '--out',
        out,
      ],
      { timeoutMs: 230_000 },
    );
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, /\[3\/3 /, 'progress names each run');

    const doc = JSON.parse(await readFile(join(out, 'results.json'), 'utf8')) as BenchResults;
    assert.deepEqual(validateResults(doc), []);
    assert.equal(doc.interrupted, false);
    assert.deepEqual(doc.runs.map((x) => x.kind).sort(), ['byhand', 'cold', 'hybrid']);
    for (const run of doc.runs) {
      assert.equal(run.outcome, 'committed', JSON.stringify(run.error));
      assert.equal(run.stateKept, true, `${run.kind}: memload verified its memory`);
      assert.ok((run.clientDowntimeMs ?? 0) > 0 && (run.wireBytes ?? 0) > 0, run.kind);
    }
    assert.ok(doc.versions['criu'] && doc.versions['runc'], 'versions recorded');
    assert.equal(doc.summary.length, 3);

    const md = await readFile(join(out, 'report.md'), 'utf8');
    assert.match(md, /## lan link — memload 16 MiB/);
    assert.match(md, /\| godwit hybrid \|/);
    assert.match(md, /## Who wins/);

    const files = await readdir(out);
    const svgs = files.filter((f) => f.endsWith('.svg'));
    assert.ok(
      ['downtime.svg', 'wire-bytes.svg', 'timeline.svg'].every((f) => svgs.includes(f)),
      files.join(', '),
    );
    assert.ok(
      svgs.some((f) => f.startsWith('downtime-vs-dirty-lan')),
      files.join(', '),
    );
    for (const svg of svgs) {
      const text = await readFile(join(out, svg), 'utf8');
      assert.ok(isValidSvg(text), `${svg} is valid SVG`);
      const png = pngInfo(await readFile(join(out, svg.replace(/\.svg$/, '.png'))));
      assert.ok(png && png.width > 0 && png.height > 0, `${svg}: PNG beside it`);
    }
  });
});
