import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isValidSvg, pngInfo } from './charts.js';
import {
  buildCharts,
  fmtMs,
  fmtStat,
  reportMarkdown,
  timelineOf,
  timelineRun,
  winner,
  writeReport,
} from './report.js';
import { fakeResults } from './testing.js';

describe('formatting', () => {
  it('ms and stats as people read them', () => {
    assert.equal(fmtMs(374.4), '374 ms');
    assert.equal(fmtMs(4790), '4.79 s');
    assert.equal(fmtMs(61_500), '61.5 s');
    assert.equal(fmtStat({ median: 2, min: 1, max: 3, n: 3 }, String), '2 (1–3)');
    assert.equal(fmtStat({ median: 2, min: 2, max: 2, n: 1 }, String), '2');
    assert.equal(fmtStat(undefined, String), '-');
  });
});

describe('report.md', () => {
  const r = fakeResults();
  const md = reportMarkdown(r, []);

  it('a table per cell with every kind, the model under the pre-copy row', () => {
    assert.match(md, /## edge link — memload 32 MiB, 4 MB\/s on a 8 MiB hot set/);
    assert.match(md, /\| godwit cold \| 3\.10 s \| 3\.20 s \(3\.10 s–3\.30 s\) \|/);
    assert.match(md, /\| godwit pre-copy \+ prediction \|[^\n]*\n\| {3}↳ model \|/);
    assert.match(md, /\| godwit hybrid \| 312 ms \(311 ms–313 ms\) \|/);
  });

  it('names the winners and the ratios to the baseline, and what could not run', () => {
    assert.match(md, /\| edge \| memload-medium-hot \| godwit hybrid \(312 ms\) \|/);
    // godwit's best downtime 312 over by hand's 2900
    assert.match(md, /by hand \(runc \+ tar\/zstd \+ TCP\) \| 0\.11× \(hybrid\)/);
    assert.match(md, /Podman checkpoint\/restore: not installed/);
  });

  it('lists runs that did not commit', () => {
    const bad = fakeResults();
    bad.runs.push({ ...bad.runs[0]!, outcome: 'failed', error: { code: 'X', message: 'boom' } });
    assert.match(
      reportMarkdown(bad, []),
      /## Runs that did not commit\n\n- edge\/memload-medium-hot cold rep 1: failed — boom/,
    );
  });

  it('winner ignores rows with no committed run', () => {
    const rows = r.summary.map((s) => (s.kind === 'hybrid' ? { ...s, committed: 0 } : s));
    assert.equal(winner(rows, (s) => s.clientDowntimeMs)?.kind, 'precopy-predict');
  });
});

describe('timeline', () => {
  it('shows the hybrid run: its rounds on the source, the freeze and commit, the client outage where it was', () => {
    const r = fakeResults();
    const run = timelineRun(r.runs)!;
    assert.equal(run.kind, 'hybrid');
    const t = timelineOf(run);
    const lane = (n: string) => t.lanes.find((l) => l.name === n)!.spans;
    assert.deepEqual(
      lane('source').map((s) => s.label),
      ['round 0', 'checkpoint'],
    );
    assert.deepEqual(
      t.markers.map((m) => m.label),
      ['freeze', 'commit'],
    );
    // probe started 800 ms before the migration; its gap began 900 ms into the probe
    assert.equal(lane('client')[0]!.startMs, 100);
  });
});

describe('charts and files', () => {
  it('every chart is valid SVG; writeReport writes report.md and an SVG and a PNG per chart', async () => {
    const r = fakeResults();
    const charts = await buildCharts(r);
    assert.deepEqual(
      charts.map((c) => c.name),
      ['downtime-vs-dirty-edge-hotset', 'downtime', 'wire-bytes', 'timeline'],
    );
    for (const c of charts) assert.ok(isValidSvg(c.svg), c.name);
    const dir = await mkdtemp(join(tmpdir(), 'godwit-report-'));
    try {
      const files = await writeReport(dir, r);
      assert.deepEqual((await readdir(dir)).sort(), [...files].sort());
      assert.ok(pngInfo(await readFile(join(dir, 'timeline.png'))));
      assert.match(
        await readFile(join(dir, 'report.md'), 'utf8'),
        /!\[.*\]\(timeline\.svg\) \(\[PNG\]\(timeline\.png\)\)/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
