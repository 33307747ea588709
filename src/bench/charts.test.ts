import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import * as zlib from 'node:zlib';
import { ErrorCode, isGodwitError } from '../core/errors.js';
import {
  barChart,
  CHART_HEIGHT,
  CHART_PALETTE,
  CHART_WIDTH,
  crc32ByTable,
  DEJAVU_FONT_FILES,
  estimateTextWidth,
  formatValue,
  isValidSvg,
  lineChart,
  MIN_SPAN_WIDTH,
  pngInfo,
  svgToPng,
  timelineChart,
  UNKINDED_SPAN_COLOUR,
  type LineChartSpec,
  type TimelineChartSpec,
} from './charts.js';

const NASTY = 'a <b> & "c"';
/** How vega writes NASTY as text content ('"' needs no escape there); attributes also get &quot;. */
const NASTY_TEXT = '>a &lt;b&gt; &amp; "c"</text>';

/** Invariants every generated chart must meet. */
function assertChart(svg: string): void {
  assert.ok(isValidSvg(svg), 'well-formed SVG');
  assert.match(svg, new RegExp(`<svg [^>]*width="${CHART_WIDTH}" height="${CHART_HEIGHT}"`));
  assert.doesNotMatch(svg, /NaN|Infinity|undefined/);
  assert.ok(!svg.includes('<b>'), 'no unescaped markup from the input');
}

/**
 * The items (direct child elements) of every data mark of `type` ('symbol', 'rule', 'rect',
 * 'line', 'text') in vega's SVG, marks in layer order; axes, legends and titles are not included.
 */
function items(svg: string, type: string): string[] {
  const marks = [
    ...svg.matchAll(new RegExp(`<g class="mark-${type} role-mark [^"]*"[^>]*(?<!/)>([\\s\\S]*?)</g>`, 'g')),
  ];
  return marks.flatMap((m) => (m[1] ?? '').match(/<(path|line|text)\b[^>]*(?:\/>|>[^<]*<\/\1>)/g) ?? []);
}

/** The texts of text items with that role (e.g. 'legend-label', 'axis-label', 'mark'). */
function texts(svg: string, role: string): string[] {
  const groups = [
    ...svg.matchAll(new RegExp(`<g class="mark-text role-${role}\\b[^"]*"[^>]*>([\\s\\S]*?)</g>`, 'g')),
  ];
  return groups.flatMap((g) =>
    [...(g[1] ?? '').matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1] ?? ''),
  );
}

const fillOf = (item: string): string | undefined =>
  item.match(/fill="(#[0-9A-Fa-f]{6})"/)?.[1]?.toUpperCase();
const strokeOf = (item: string): string | undefined =>
  item.match(/stroke="(#[0-9A-Fa-f]{6})"/)?.[1]?.toUpperCase();
/** Width of a vega rect item (its path is "M{x},{y}h{width}v{height}h-{width}Z"). */
const rectWidth = (item: string): number =>
  Number(item.match(/d="M[-\d.e]+,[-\d.e]+h([\d.e]+)v/)?.[1] ?? Number.NaN);

const lineSpec: LineChartSpec = {
  title: 'Client downtime vs dirty rate',
  xLabel: 'dirty rate (MB/s)',
  yLabel: 'client downtime (ms)',
  series: [
    {
      name: 'precopy',
      points: [0, 5, 10].map((x) => ({ x, y: 100 + x * 20, yMin: 90 + x * 20, yMax: 120 + x * 20 })),
    },
    { name: 'postcopy', points: [0, 5, 10].map((x) => ({ x, y: 50 + x })) },
  ],
};

const timelineSpec: TimelineChartSpec = {
  title: 'Pre-copy of memload',
  lanes: [
    {
      name: 'source',
      spans: [
        { label: 'round 0', startMs: 0, durationMs: 1800, kind: 'round' },
        { label: 'checkpoint', startMs: 1800, durationMs: 300, kind: 'checkpoint' },
      ],
    },
    { name: 'link', spans: [{ label: 'transfer', startMs: 10, durationMs: 2400, kind: 'transfer' }] },
    { name: 'client', spans: [{ label: 'outage', startMs: 1800, durationMs: 900, kind: 'outage' }] },
  ],
  markers: [
    { atMs: 1800, label: 'freeze' },
    { atMs: 2700, label: 'commit' },
  ],
};

describe('text and values', () => {
  it('measures text with DejaVu Sans advance widths', () => {
    assert.equal(estimateTextWidth('0000', 10), 4 * 6.36);
    assert.ok(estimateTextWidth('WWW', 12, true) > estimateTextWidth('WWW', 12));
    assert.ok(estimateTextWidth('iii', 12) < estimateTextWidth('mmm', 12));
    assert.equal(estimateTextWidth('', 12), 0);
  });

  it('formats values compactly', () => {
    assert.deepEqual([0.5, 12.34, 256, 4096, 1.2e9, -3e8].map(formatValue), [
      '0.5',
      '12.3',
      '256',
      '4096',
      '1.2G',
      '-300M',
    ]);
  });
});

describe('lineChart', () => {
  it('draws a line, markers and whiskers per series, deterministically', async () => {
    const svg = await lineChart(lineSpec);
    assertChart(svg);
    assert.equal(svg, await lineChart(lineSpec), 'same spec, same SVG');
    const points = items(svg, 'symbol');
    assert.equal(points.length, 6, 'a marker per point');
    assert.deepEqual(new Set(points.map(fillOf)), new Set(CHART_PALETTE.slice(0, 2)), 'palette colours');
    const whiskers = items(svg, 'rule');
    assert.equal(whiskers.length, 3, 'whiskers only where yMin/yMax are given');
    assert.ok(whiskers.every((w) => strokeOf(w) === CHART_PALETTE[0]));
    assert.equal(items(svg, 'line').length, 2, 'a line per series');
    assert.deepEqual(texts(svg, 'legend-label'), ['precopy', 'postcopy']);
    assert.deepEqual(texts(svg, 'title-text'), ['Client downtime vs dirty rate']);
    assert.deepEqual(texts(svg, 'axis-title').sort(), ['client downtime (ms)', 'dirty rate (MB/s)']);
    assert.ok(svg.includes('font-family="DejaVu Sans, sans-serif"'));
  });

  it('escapes title, labels and series names', async () => {
    const svg = await lineChart({
      ...lineSpec,
      title: NASTY,
      xLabel: NASTY,
      yLabel: NASTY,
      series: [{ name: NASTY, points: [{ x: 1, y: 1 }] }],
    });
    assertChart(svg);
    assert.equal(svg.split(NASTY_TEXT).length - 1, 4, 'title, two axis titles, legend');
    assert.ok(svg.includes('&quot;c&quot;'), 'attributes escape quotes');
  });

  it('handles one point, empty series, equal values and non-finite values', async () => {
    const one = await lineChart({
      ...lineSpec,
      series: [
        { name: 'one', points: [{ x: 3, y: 7 }] },
        { name: 'empty', points: [] },
      ],
    });
    assertChart(one);
    assert.deepEqual(texts(one, 'legend-label'), ['one', 'empty'], 'empty series still in the legend');
    assert.equal(items(one, 'symbol').length, 1);
    assert.ok(texts(one, 'axis-label').length > 4, 'a one-value x domain is widened into several ticks');

    const equal = await lineChart({
      ...lineSpec,
      series: [{ name: 's', points: [1, 2, 3].map(() => ({ x: 4, y: 4 })) }],
    });
    assertChart(equal);
    assert.equal(items(equal, 'symbol').length, 3);

    const holes = await lineChart({
      ...lineSpec,
      series: [
        {
          name: 's',
          points: [
            { x: 1, y: 1 },
            { x: Number.NaN, y: 2 },
            { x: 2, y: undefined as unknown as number },
            { x: 3, y: Number.POSITIVE_INFINITY },
            { x: 4, y: 4, yMin: Number.NaN, yMax: 5 },
          ],
        },
      ],
    });
    assertChart(holes);
    assert.equal(items(holes, 'symbol').length, 2, 'two valid points');
    assert.equal(items(holes, 'rule').length, 1, 'a whisker with one valid end runs from the point');

    const none = await lineChart({ ...lineSpec, series: [] });
    assertChart(none);
    assert.deepEqual(texts(none, 'mark'), ['no data']);
  });

  it('skips values ≤ 0 on a log axis', async () => {
    const svg = await lineChart({
      ...lineSpec,
      yLog: true,
      series: [
        {
          name: 's',
          points: [
            { x: 1, y: 0 },
            { x: 2, y: 10, yMin: 0, yMax: 30 },
            { x: 3, y: 1000 },
          ],
        },
      ],
    });
    assertChart(svg);
    assert.equal(items(svg, 'symbol').length, 2);
    const labels = texts(svg, 'axis-label');
    assert.ok(labels.includes('1,000') && labels.includes('10'), labels.join(' '));
  });
});

describe('barChart', () => {
  it('draws grouped bars with whiskers and leaves gaps for missing values', async () => {
    const spec = {
      title: 'Bytes on the wire',
      yLabel: 'bytes on the wire (MiB)',
      groups: ['lan', 'edge', 'wan'],
      series: [
        { name: 'cold', values: [256, 260, 300], mins: [250, 255, 290], maxs: [270, 262, 310] },
        { name: 'precopy', values: [300, undefined, Number.NaN] },
      ],
      valueFormat: (v: number) => `${v} MiB`,
    };
    const svg = await barChart(spec);
    assertChart(svg);
    assert.equal(svg, await barChart(spec), 'same spec, same SVG');
    const bars = items(svg, 'rect').filter((r) => r.includes('aria-roledescription="bar"'));
    assert.deepEqual(
      bars.map(fillOf),
      [CHART_PALETTE[0], CHART_PALETTE[0], CHART_PALETTE[0], CHART_PALETTE[1]],
      'missing and NaN values leave gaps',
    );
    assert.equal(items(svg, 'rule').length, 3, 'three whiskers');
    assert.deepEqual(texts(svg, 'mark').sort(), ['256 MiB', '260 MiB', '300 MiB', '300 MiB'], 'valueFormat');
    assert.deepEqual(texts(svg, 'axis-label').slice(0, 3), ['lan', 'edge', 'wan']);
    assert.deepEqual(texts(svg, 'legend-label'), ['cold', 'precopy']);
  });

  it('labels only bars whose label fits, and negative bars under the bar', async () => {
    const groups = Array.from({ length: 12 }, (_, i) => `g${i}`);
    const crowded = await barChart({
      title: 't',
      yLabel: 'y',
      groups,
      series: ['a', 'b', 'c', 'd'].map((name) => ({ name, values: groups.map(() => 123_456_789) })),
      valueFormat: (v) => `${v} bytes exactly`,
    });
    assertChart(crowded);
    assert.deepEqual(texts(crowded, 'mark'), [], 'no label wider than its bar');
    const negative = await barChart({
      title: 't',
      yLabel: 'y',
      groups: ['g'],
      series: [{ name: 's', values: [-20] }],
    });
    assert.match(negative, /<text[^>]*>-20<\/text>/);
  });

  it('escapes and handles empty input and zeros', async () => {
    const svg = await barChart({
      title: NASTY,
      yLabel: NASTY,
      groups: [NASTY],
      series: [{ name: NASTY, values: [0] }],
    });
    assertChart(svg);
    assert.equal(svg.split(NASTY_TEXT).length - 1, 4, 'title, y title, group, legend');
    assert.deepEqual(texts(svg, 'mark'), ['0'], 'a zero bar keeps its label');
    const empty = await barChart({ title: 't', yLabel: 'y', groups: [], series: [] });
    assertChart(empty);
    assert.deepEqual(texts(empty, 'mark'), ['no data']);
  });
});

describe('timelineChart', () => {
  it('draws lanes, kinds, markers and a time axis in s past 2 s', async () => {
    const svg = await timelineChart(timelineSpec);
    assertChart(svg);
    assert.equal(svg, await timelineChart(timelineSpec), 'same spec, same SVG');
    const axisLabels = texts(svg, 'axis-label');
    assert.deepEqual(axisLabels.slice(-3), ['source', 'link', 'client'], 'lanes in the given order');
    assert.deepEqual(texts(svg, 'axis-title'), ['time (s)']);
    assert.deepEqual(texts(svg, 'legend-label'), ['round', 'checkpoint', 'transfer', 'outage']);
    assert.deepEqual(texts(svg, 'mark'), ['round 0', 'checkpoint', 'transfer', 'outage', 'freeze', 'commit']);
    const markers = items(svg, 'rule');
    assert.equal(markers.length, 2);
    assert.ok(markers.every((m) => m.includes('stroke-dasharray="4,3"')));
    const spans = items(svg, 'rect');
    assert.equal(spans.length, 4);
    assert.deepEqual(spans.map(fillOf), [
      CHART_PALETTE[0],
      CHART_PALETTE[1],
      CHART_PALETTE[2],
      CHART_PALETTE[3],
    ]);

    const short = await timelineChart({
      title: 't',
      lanes: [{ name: 'l', spans: [{ label: 'x', startMs: 0, durationMs: 120 }] }],
    });
    assert.deepEqual(texts(short, 'axis-title'), ['time (ms)']);
  });

  it('keeps tiny spans visible, greys unkinded ones and labels only spans that fit', async () => {
    const svg = await timelineChart({
      title: 't',
      lanes: [
        {
          name: 'source',
          spans: [
            { label: 'long enough to hold a label', startMs: 0, durationMs: 10_000, kind: 'round' },
            { label: 'tiny span label', startMs: 5000, durationMs: 0.001, kind: 'checkpoint' },
            { label: 'negative', startMs: 6000, durationMs: -5 },
            { label: 'skipped', startMs: Number.NaN, durationMs: 5 },
          ],
        },
      ],
    });
    assertChart(svg);
    const spans = items(svg, 'rect');
    assert.equal(spans.length, 3);
    assert.ok(
      spans.every((s) => rectWidth(s) >= MIN_SPAN_WIDTH * 0.8),
      `widths ${spans.map(rectWidth).join(', ')}`,
    );
    assert.equal(fillOf(spans[2] ?? ''), UNKINDED_SPAN_COLOUR);
    assert.deepEqual(
      texts(svg, 'legend-label'),
      ['round', 'checkpoint'],
      'no legend entry for unkinded spans',
    );
    assert.deepEqual(texts(svg, 'mark'), ['long enough to hold a label'], 'no label where it does not fit');
    assert.ok(svg.includes('aria-label="tiny span label (checkpoint): 5000 ms + 0.001 ms"'), 'a description');
    assert.ok(!svg.includes('skipped'));
  });

  it('escapes and handles no lanes and lanes without spans', async () => {
    const svg = await timelineChart({
      title: NASTY,
      lanes: [{ name: NASTY, spans: [{ label: NASTY, startMs: 0, durationMs: 1e6, kind: NASTY }] }],
      markers: [{ atMs: 5, label: NASTY }],
    });
    assertChart(svg);
    assert.equal(svg.split(NASTY_TEXT).length - 1, 5, 'title, lane, legend, span label, marker');
    const empty = await timelineChart({ title: 'empty', lanes: [] });
    assertChart(empty);
    assert.deepEqual(texts(empty, 'mark'), ['no data']);
    const idle = await timelineChart({
      title: 'idle',
      lanes: [{ name: 'a', spans: [] }],
      markers: [{ atMs: 5, label: 'm' }],
    });
    assertChart(idle);
    assert.deepEqual(texts(idle, 'mark'), ['m', 'no data']);
    const plot = idle.match(/class="background"[^>]*d="M0,0h([\d.]+)v([\d.]+)/);
    assert.ok(Number(plot?.[1]) > 600 && Number(plot?.[2]) > 300, 'the plot still fills the chart');
  });
});

describe('rendering', () => {
  it('gives the same SVG when charts render concurrently', async () => {
    const sequential = [await lineChart(lineSpec), await timelineChart(timelineSpec)];
    const concurrent = await Promise.all([
      lineChart(lineSpec),
      timelineChart(timelineSpec),
      lineChart(lineSpec),
      timelineChart(timelineSpec),
    ]);
    assert.deepEqual(concurrent, [...sequential, ...sequential]);
  });
});

describe('isValidSvg', () => {
  const NS = 'xmlns="http://www.w3.org/2000/svg"';
  it('accepts well-formed SVG', () => {
    for (const ok of [
      `<svg ${NS}/>`,
      `<?xml version="1.0"?>\n<!-- c --><svg ${NS} a='1'><g><text>a &amp; b &#60; &#x3C;</text></g></svg>\n`,
      `<svg ${NS}><![CDATA[ <raw> & ]]><rect/></svg>`,
    ]) {
      assert.ok(isValidSvg(ok), ok);
    }
  });

  it('rejects malformed documents', () => {
    for (const bad of [
      '',
      '<svg/>',
      '<svg xmlns="http://www.w3.org/1999/xhtml"/>',
      `<html ${NS}/>`,
      `<svg ${NS}><g></svg>`,
      `<svg ${NS}><g><rect></g></rect></svg>`,
      `<svg ${NS}></svg></svg>`,
      `<svg ${NS}>a & b</svg>`,
      `<svg ${NS}><rect x=1/></svg>`,
      `<svg ${NS}><rect x="1" x="2"/></svg>`,
      `<svg ${NS}><rect x="<"/></svg>`,
      `<svg ${NS}><rect x="1"y="2"/></svg>`,
      `<svg ${NS}><!-- open</svg>`,
      `<svg ${NS}/><svg ${NS}/>`,
      `<svg ${NS}/>trailing`,
      `junk<svg ${NS}/>`,
      `<svg ${NS}><?xml version="1.0"?></svg>`,
    ]) {
      assert.equal(isValidSvg(bad), false, bad);
    }
  });
});

describe('PNG', () => {
  it('crc32ByTable matches zlib', () => {
    const data = Buffer.from('IHDR godwit charts');
    assert.equal(crc32ByTable(data), zlib.crc32(data) >>> 0);
    assert.equal(crc32ByTable(new Uint8Array()), 0);
  });

  it('renders each chart to a PNG of the SVG size', async () => {
    const svgs = [
      await lineChart(lineSpec),
      await timelineChart(timelineSpec),
      await barChart({ title: 't', yLabel: 'y', groups: ['a'], series: [{ name: 's', values: [1] }] }),
    ];
    for (const svg of svgs) {
      const png = await svgToPng(svg);
      assert.deepEqual(pngInfo(png), { width: CHART_WIDTH, height: CHART_HEIGHT });
    }
    const small = await svgToPng('<svg xmlns="http://www.w3.org/2000/svg" width="120" height="30"/>');
    assert.deepEqual(pngInfo(small), { width: 120, height: 30 });
  });

  it('pngInfo rejects corrupted, truncated and foreign buffers', async () => {
    const png = await svgToPng(
      await barChart({ title: 't', yLabel: 'y', groups: ['a'], series: [{ name: 's', values: [1] }] }),
    );
    const flip = (at: number): Buffer => {
      const b = Buffer.from(png);
      b[at] = (b[at] ?? 0) ^ 0x01;
      return b;
    };
    assert.equal(pngInfo(flip(0)), undefined, 'signature');
    assert.equal(pngInfo(flip(18)), undefined, 'IHDR width');
    assert.equal(pngInfo(flip(29)), undefined, 'IHDR CRC');
    assert.equal(pngInfo(flip(png.length - 40)), undefined, 'image data');
    assert.equal(pngInfo(png.subarray(0, png.length - 12)), undefined, 'no IEND');
    assert.equal(pngInfo(png.subarray(0, 20)), undefined);
    assert.equal(pngInfo(Buffer.from('<svg/>')), undefined);
    assert.equal(pngInfo(Buffer.alloc(0)), undefined);
  });

  it('svgToPng rejects unparsable SVG with an InternalError', async () => {
    await assert.rejects(
      svgToPng('not svg'),
      (err: unknown) => isGodwitError(err) && err.code === ErrorCode.Internal,
    );
  });

  const fontsPresent = DEJAVU_FONT_FILES.every((f) => existsSync(f));
  it(
    'renders text with the DejaVu font, and renders without it when the font is missing',
    { skip: !fontsPresent && process.env.CI !== 'true' ? 'fonts-dejavu-core is not installed' : false },
    async () => {
      const head =
        '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="50" font-family="DejaVu Sans, sans-serif">';
      const bg = '<rect width="200" height="50" fill="#FFFFFF"/>';
      const blank = await svgToPng(`${head}${bg}</svg>`);
      const textSvg = `${head}${bg}<text x="10" y="30" font-size="20">godwit</text></svg>`;
      const withFont = await svgToPng(textSvg);
      const noFont = await svgToPng(textSvg, { fontFiles: ['/nonexistent/font.ttf'] });
      assert.ok(!withFont.equals(blank), 'text is drawn with the font');
      assert.ok(noFont.equals(blank), 'without the font the text is skipped, nothing throws');
      assert.ok(withFont.equals(await svgToPng(textSvg)), 'deterministic');
      assert.deepEqual(pngInfo(noFont), { width: 200, height: 50 });
    },
  );
});
