/**
 * Charts for `godwit bench`: line, grouped bar and migration timeline charts as SVG, an SVG → PNG
 * renderer, and validators for both formats (for tests and the bench's self-check).
 *
 * Each generator builds a Vega-Lite spec, compiles it to Vega and renders it headless (a vega View
 * with renderer 'none', then `view.toSVG()`), so layout, ticks, legends and XML escaping are
 * vega's. Nothing reads a clock or the machine's fonts, so the same spec always gives the same
 * SVG. Every chart is CHART_WIDTH × CHART_HEIGHT (800 × 450, autosize 'fit' with the padding
 * inside), with a title, a legend, and colours from the Okabe–Ito colour-blind-safe palette; text
 * uses CHART_FONT_FAMILY. Without node-canvas, vega guesses text widths as 0.8 em per character;
 * importing this module replaces that guess (vega's documented `textMetrics.width` hook) with
 * DejaVu Sans's real advance widths, so legends, label truncation and "does the label fit" match
 * what resvg draws.
 *
 * PNG comes from @resvg/resvg-js: a Rust SVG renderer shipped as a prebuilt N-API binary for
 * linux-x64 (gnu and musl), so no browser, no node-gyp and no system libraries beyond a font.
 * Fonts are passed explicitly (Debian's fonts-dejavu-core, DEJAVU_FONT_FILES) with system font
 * loading off, which is faster and makes the output independent of the machine's other fonts.
 *
 * Measured on this machine kind (Node 20.20, vega 6.4.0, vega-lite 6.4.3, resvg-js 2.6.2, compiled
 * dist, 2 cores shared with other work at load ≈ 3), median of 40 renders after 5 warm-ups, as
 * spec → SVG + SVG → PNG: line chart (log y, 5 series × 5 points, whiskers) 18–22 + 21–23 ms; bar
 * chart (4 groups × 4 series, whiskers, value labels) 12–16 + 24 ms; timeline (4 lanes, 8 spans,
 * 2 markers) 11–12 + 24–25 ms; so 35–46 ms a chart. SVGs are 17–39 KB, PNGs 28–34 KB. The first
 * chart in a process costs more: importing this module 150–195 ms (vega ≈ 150 ms of it, vega-lite
 * ≈ 18 ms, resvg ≈ 10 ms), the first spec → SVG 74–92 ms (vega's parser warming up), the first PNG
 * 22–31 ms (loads the binary). The hand-written SVG code this replaced built a chart in ~0.06 ms.
 */
import { existsSync } from 'node:fs';
import * as zlib from 'node:zlib';
import { renderAsync } from '@resvg/resvg-js';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { ErrorCode, InternalError } from '../core/errors.js';

/** Width of every chart, px. */
export const CHART_WIDTH = 800;
/** Height of every chart, px. */
export const CHART_HEIGHT = 450;
/** The font-family every chart's text uses; svgToPng loads DejaVu Sans to match it. */
export const CHART_FONT_FAMILY = 'DejaVu Sans, sans-serif';
/** The SVG namespace; isValidSvg requires the root element to declare it. */
export const SVG_NAMESPACE = 'http://www.w3.org/2000/svg';
/** Font files svgToPng loads by default (Debian's fonts-dejavu-core); missing ones are skipped. */
export const DEJAVU_FONT_FILES: readonly string[] = [
  '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf',
  '/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf',
];

/**
 * Okabe–Ito palette, ordered so the first colours differ most; yellow (weak on white) comes late.
 * Series and kinds take colours in order (the colour scale's range) and wrap around after eight.
 */
export const CHART_PALETTE: readonly string[] = [
  '#0072B2', // blue
  '#E69F00', // orange
  '#009E73', // bluish green
  '#D55E00', // vermillion
  '#CC79A7', // reddish purple
  '#56B4E9', // sky blue
  '#F0E442', // yellow
  '#000000', // black
];

/** Colour of timeline spans that have no `kind`. */
export const UNKINDED_SPAN_COLOUR = '#9E9E9E';

/** One point of a line series; yMin/yMax draw a whisker. Points with a non-finite x or y are skipped. */
export interface LinePoint {
  x: number;
  y: number;
  yMin?: number;
  yMax?: number;
}

/** A named line; an empty one still appears in the legend. Names should be unique within a chart. */
export interface LineSeries {
  name: string;
  points: readonly LinePoint[];
}

/** Input of lineChart. The linear y axis always includes 0. */
export interface LineChartSpec {
  title: string;
  /** Axis label including the unit, e.g. "dirty rate (MB/s)". */
  xLabel: string;
  /** Axis label including the unit, e.g. "client downtime (ms)". */
  yLabel: string;
  series: readonly LineSeries[];
  /** Logarithmic y axis; values ≤ 0 are then skipped. */
  yLog?: boolean;
}

/**
 * One bar series: values[i] belongs to groups[i]; undefined or non-finite leaves a gap. Names
 * should be unique within a chart.
 */
export interface BarSeries {
  name: string;
  values: readonly (number | undefined)[];
  /** Whisker bottoms, index-aligned with values; a whisker needs both its min and max. */
  mins?: readonly (number | undefined)[];
  maxs?: readonly (number | undefined)[];
}

/** Input of barChart. */
export interface BarChartSpec {
  title: string;
  /** Axis label including the unit, e.g. "bytes on the wire (MiB)". */
  yLabel: string;
  /** Group names along the x axis (e.g. links or workloads); should be unique. */
  groups: readonly string[];
  series: readonly BarSeries[];
  /**
   * Formats the value labels over bars (shown only where they fit). Default: formatValue
   * (three significant digits, 1.5k, 20M). The y axis ticks always use vega's number format.
   */
  valueFormat?: (v: number) => string;
}

/** One span on a timeline lane; spans with the same kind share a colour. */
export interface TimelineSpan {
  label: string;
  startMs: number;
  durationMs: number;
  /** E.g. "round", "checkpoint", "transfer", "restore", "outage"; none → grey, not in the legend. */
  kind?: string;
}

/** One horizontal lane of a timeline, e.g. "source", "link", "destination", "client"; unique names. */
export interface TimelineLane {
  name: string;
  spans: readonly TimelineSpan[];
}

/** A vertical line across all lanes, e.g. "freeze" or "commit"; its label goes above the lanes. */
export interface TimelineMarker {
  atMs: number;
  label: string;
}

/** Input of timelineChart. Times are ms from any origin; the axis shows ms, or s past 2 s. */
export interface TimelineChartSpec {
  title: string;
  lanes: readonly TimelineLane[];
  markers?: readonly TimelineMarker[];
}

/** Size read from a PNG's IHDR chunk. */
export interface PngInfo {
  width: number;
  height: number;
}

/** Options of svgToPng. */
export interface SvgToPngOptions {
  /** Font files to load; missing ones are skipped (text then does not render). Default DEJAVU_FONT_FILES. */
  fontFiles?: readonly string[];
}

// ---------------------------------------------------------------------------------------------
// Text widths

/**
 * Advance widths of DejaVu Sans (regular, then bold) for ASCII 32–126, in 1/1000 em, read from
 * the fonts' hmtx tables. Other characters count as OTHER_ADVANCE.
 */
const ADVANCE_REGULAR = [
  318, 401, 460, 838, 636, 950, 780, 275, 390, 390, 500, 838, 318, 361, 318, 337, 636, 636, 636, 636, 636,
  636, 636, 636, 636, 636, 337, 337, 838, 838, 838, 531, 1000, 684, 686, 698, 770, 632, 575, 775, 752, 295,
  295, 656, 557, 863, 748, 787, 603, 787, 695, 635, 611, 732, 684, 989, 685, 611, 685, 390, 337, 390, 838,
  500, 500, 613, 635, 550, 635, 615, 352, 635, 634, 278, 278, 579, 278, 974, 634, 612, 635, 635, 411, 521,
  392, 634, 592, 818, 592, 592, 525, 636, 337, 636, 838,
];
const ADVANCE_BOLD = [
  348, 456, 521, 838, 696, 1002, 872, 306, 457, 457, 523, 838, 380, 415, 380, 365, 696, 696, 696, 696, 696,
  696, 696, 696, 696, 696, 400, 400, 838, 838, 838, 580, 1000, 774, 762, 734, 830, 683, 683, 821, 837, 372,
  372, 775, 637, 995, 837, 850, 733, 850, 770, 720, 682, 812, 774, 1103, 771, 724, 725, 457, 365, 457, 838,
  500, 500, 675, 716, 593, 716, 678, 435, 716, 712, 343, 343, 665, 343, 1042, 712, 687, 716, 716, 493, 595,
  478, 712, 652, 924, 645, 652, 582, 712, 365, 712, 838,
];
const OTHER_ADVANCE = 700;

/** Width of `s` in DejaVu Sans at `size` px (bold when asked), from the font's advance widths. */
export function estimateTextWidth(s: string, size: number, bold = false): number {
  const table = bold ? ADVANCE_BOLD : ADVANCE_REGULAR;
  let em = 0;
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0;
    em += (c >= 32 && c < 127 ? table[c - 32] : undefined) ?? (ch === '…' ? 1000 : OTHER_ADVANCE);
  }
  return (em / 1000) * size;
}

/** The part of a vega scenegraph text item the width hook reads. */
interface TextItem {
  fontSize?: number | string;
  fontWeight?: number | string;
}

interface VegaTextMetrics {
  width: (item: TextItem, text: unknown) => number;
}

/**
 * vega-scenegraph's text measurer, which vega re-exports but its typings omit. Its `width` may be
 * replaced by a user function (vl-convert does the same); vega then also uses it to truncate text
 * to a `limit`. This is process-wide, for any other vega user too. Vega's own estimate measures
 * the truncated text for bounds; this one measures the full text, which only makes the bounds of
 * truncated labels a little wide.
 */
const textMetrics = (vega as unknown as { textMetrics: VegaTextMetrics }).textMetrics;
textMetrics.width = (item, text) => {
  const size = item.fontSize === undefined ? 11 : Number(item.fontSize) || 0;
  const w = item.fontWeight;
  const bold = w === 'bold' || w === 'bolder' || (typeof w === 'number' && w >= 600);
  return estimateTextWidth(text === null || text === undefined ? '' : String(text).trim(), size, bold);
};

// ---------------------------------------------------------------------------------------------
// Rendering a Vega-Lite spec

const TEXT_COLOUR = '#222222';
const AXIS_COLOUR = '#444444';
const GRID_COLOUR = '#E3E3E3';
/** Space around the whole chart, px; inside CHART_WIDTH × CHART_HEIGHT. */
const PADDING = 10;
const TITLE_SIZE = 16;
const LABEL_SIZE = 11;
const LEGEND_LABEL_SIZE = 12;
const LEGEND_COLUMN_PADDING = 14;

/** A layered Vega-Lite spec with the chart frame, and the parts the generators build. */
type LayeredSpec = Extract<TopLevelSpec, { layer: unknown }>;
type TopLevelLayerItem = LayeredSpec['layer'][number];
type Encoding = NonNullable<Extract<TopLevelLayerItem, { mark: unknown }>['encoding']>;
type PositionDef = NonNullable<Encoding['x']>;
type ColourDef = NonNullable<Encoding['color']>;
type OffsetDef = NonNullable<Encoding['xOffset']>;
type Config = NonNullable<TopLevelSpec['config']>;

/** Shared look: fonts, colours, no view border, legends on top. */
const CONFIG: Config = {
  font: CHART_FONT_FAMILY,
  background: '#FFFFFF',
  view: { stroke: null },
  title: { fontSize: TITLE_SIZE, color: TEXT_COLOUR, anchor: 'middle', limit: CHART_WIDTH - 2 * PADDING },
  axis: {
    labelFontSize: LABEL_SIZE,
    labelColor: TEXT_COLOUR,
    titleFontSize: 12,
    titleFontWeight: 'normal',
    titleColor: TEXT_COLOUR,
    domainColor: AXIS_COLOUR,
    tickColor: AXIS_COLOUR,
    gridColor: GRID_COLOUR,
  },
  // vega-lite's default, one tick per 40 px, crowds a time or rate axis 780 px wide.
  axisQuantitative: { tickCount: 10 },
  legend: {
    orient: 'top',
    direction: 'horizontal',
    labelFontSize: LEGEND_LABEL_SIZE,
    labelColor: TEXT_COLOUR,
    labelLimit: 300,
    columnPadding: LEGEND_COLUMN_PADDING,
  },
};

/** The top-level properties every chart shares. */
function frame(title: string): Omit<LayeredSpec, 'layer'> {
  return {
    title,
    width: CHART_WIDTH,
    height: CHART_HEIGHT,
    padding: PADDING,
    autosize: { type: 'fit', contains: 'padding' },
    config: CONFIG,
  };
}

/** Legend columns so that a top legend of these labels fits the chart's width. */
function legendColumns(labels: readonly string[]): number {
  const widest = Math.max(0, ...labels.map((l) => Math.min(300, estimateTextWidth(l, LEGEND_LABEL_SIZE))));
  const entry = 16 + 5 + widest + LEGEND_COLUMN_PADDING;
  return Math.max(1, Math.min(labels.length, Math.floor((CHART_WIDTH - 2 * PADDING) / entry)));
}

/** A "no data" note in the middle of the plot. */
function noDataLayer(): TopLevelLayerItem {
  return {
    data: { values: [{}] },
    mark: { type: 'text', fontSize: 14, color: '#888888', text: 'no data' },
    encoding: { x: { value: { expr: 'width / 2' } }, y: { value: { expr: 'height / 2' } } },
  };
}

type VegaLogger = NonNullable<NonNullable<ConstructorParameters<typeof vega.View>[1]>['logger']>;

/**
 * A logger for vega and vega-lite that keeps errors in `errors` and drops everything else. Vega
 * calls the methods with its dataflow as `this`, so they are closures.
 */
function errorCollector(errors: unknown[]): VegaLogger {
  let level = vega.Error;
  const logger: VegaLogger = {
    level: (l?: number) => {
      if (l === undefined) return level;
      level = l;
      return logger;
    },
    error: (...args: unknown[]) => {
      errors.push(args.length === 1 ? args[0] : args.map(String).join(' '));
      return logger;
    },
    warn: () => logger,
    info: () => logger,
    debug: () => logger,
  };
  return logger;
}

/**
 * Compiles a Vega-Lite spec and renders it to SVG with a headless vega View. Warnings are dropped
 * (the specs are ours); an error, thrown or only logged by the dataflow, rejects with an
 * InternalError.
 */
async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const errors: unknown[] = [];
  const logger = errorCollector(errors);
  let view: vega.View | undefined;
  let svg: string | undefined;
  try {
    const { spec: vgSpec } = compile(spec, { logger });
    view = new vega.View(vega.parse(vgSpec), { renderer: 'none', logger });
    svg = await view.toSVG();
  } catch (err: unknown) {
    errors.unshift(err);
  } finally {
    view?.finalize();
  }
  if (errors.length > 0 || svg === undefined) {
    throw new InternalError(ErrorCode.Internal, 'could not render a chart with vega', { cause: errors[0] });
  }
  return svg;
}

const isNum = (v: number | undefined): v is number => typeof v === 'number' && Number.isFinite(v);

/** Compact value text with three significant digits: 0.5, 12.3, 256, 4096, 1.2G, -300M. */
export function formatValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  const units: [number, string][] = [
    [1e12, 'T'],
    [1e9, 'G'],
    [1e6, 'M'],
    [1e3, 'k'],
  ];
  if (a >= 1e4) {
    for (const [u, suffix] of units) if (a >= u) return `${Number((v / u).toPrecision(3))}${suffix}`;
  }
  return a >= 1000 ? v.toFixed(0) : String(Number(v.toPrecision(3)));
}

/** Relative luminance of a #RRGGBB colour, for choosing black or white text over it. */
function luminance(hex: string): number {
  const c = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
  const lin = c.map((x) => (x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4));
  return 0.2126 * (lin[0] ?? 0) + 0.7152 * (lin[1] ?? 0) + 0.0722 * (lin[2] ?? 0);
}

function paletteColour(i: number): string {
  return CHART_PALETTE[i % CHART_PALETTE.length] ?? '#000000';
}

/** Marker shapes of line series, cycled with an offset so colour + shape stay distinct for 32 series. */
const SHAPES = ['circle', 'square', 'diamond', 'triangle-up'] as const;

function seriesShape(i: number): string {
  return SHAPES[(i + Math.floor(i / CHART_PALETTE.length)) % SHAPES.length] ?? 'circle';
}

/** The plot's approximate width, px: the chart less padding, a y axis `axisWidth` wide and a margin. */
function plotWidthEstimate(axisWidth: number): number {
  return CHART_WIDTH - 2 * PADDING - axisWidth - 10;
}

// ---------------------------------------------------------------------------------------------
// Line chart

/**
 * Lines with point markers and optional min–max whiskers, one colour and marker shape per
 * series, e.g. client downtime vs dirty rate per strategy. Points are joined in x order; points
 * with a non-finite x or y (or y ≤ 0 on a log axis) are skipped; a whisker end that is missing,
 * non-finite or ≤ 0 on a log axis is drawn from the point instead.
 */
export async function lineChart(spec: LineChartSpec): Promise<string> {
  const log = spec.yLog === true;
  const validY = (v: number | undefined): v is number => isNum(v) && (!log || v > 0);
  const rows = spec.series.flatMap((s) =>
    s.points
      .filter((p) => isNum(p.x) && validY(p.y))
      .map((p) => {
        const whisker = validY(p.yMin) || validY(p.yMax);
        const lo = validY(p.yMin) ? p.yMin : p.y;
        const hi = validY(p.yMax) ? p.yMax : p.y;
        return { series: s.name, x: p.x, y: p.y, lo: Math.min(lo, hi), hi: Math.max(lo, hi), whisker };
      }),
  );
  const names = spec.series.map((s) => s.name);
  const hasData = rows.length > 0;
  // vega would make a one-value domain a single tick; widen it (by 10 %, or by 1 around 0).
  const xMin = Math.min(...rows.map((r) => r.x));
  const xMax = Math.max(...rows.map((r) => r.x));
  const xPad = xMin === 0 ? 1 : Math.abs(xMin) * 0.1;
  const xDomain = !hasData ? [0, 1] : xMin === xMax ? [xMin - xPad, xMax + xPad] : undefined;

  // Colour and shape share the field and the legend, which vega-lite then merges into one.
  const legend = names.length > 0 ? { title: null, columns: legendColumns(names) } : null;
  const colour: ColourDef = {
    field: 'series',
    type: 'nominal',
    scale: { domain: names, range: names.map((_, i) => paletteColour(i)) },
    legend,
  };
  const shape: Encoding['shape'] = {
    field: 'series',
    type: 'nominal',
    scale: { domain: names, range: names.map((_, i) => seriesShape(i)) },
    legend,
  };
  const x: PositionDef = {
    field: 'x',
    type: 'quantitative',
    title: spec.xLabel,
    // Padding (unniced, so the axis does not grow to the next round number) insets points at
    // the ends of the x range from the y axis.
    scale: xDomain === undefined ? { zero: false, nice: false, padding: 12 } : { domain: xDomain },
  };
  const y: PositionDef = {
    field: 'y',
    type: 'quantitative',
    title: spec.yLabel,
    scale: log ? { type: 'log', ...(hasData ? {} : { domain: [1, 10] }) } : hasData ? {} : { domain: [0, 1] },
  };

  const layer: TopLevelLayerItem[] = [
    {
      transform: [{ filter: 'datum.whisker' }],
      mark: { type: 'errorbar', ticks: { size: 8 }, thickness: 1.2 },
      encoding: { x, y: { ...y, field: 'lo' }, y2: { field: 'hi' }, color: colour },
    },
    { mark: { type: 'line', strokeWidth: 2 }, encoding: { x, y, color: colour } },
    {
      mark: { type: 'point', filled: true, size: 45, opacity: 1 },
      encoding: { x, y, color: colour, shape },
    },
  ];
  if (!hasData) layer.push(noDataLayer());
  return renderSvg({ ...frame(spec.title), data: { values: rows }, layer });
}

// ---------------------------------------------------------------------------------------------
// Bar chart

const BAR_LABEL_SIZE = 10;

/**
 * Grouped vertical bars with min–max whiskers, e.g. bytes on the wire per strategy grouped by
 * link. Bars grow from 0 (negative values grow down); a missing or non-finite value leaves a gap,
 * a zero has no visible bar but keeps its label. A value label sits over each bar (under it when
 * negative) where its text fits the bar's width.
 */
export async function barChart(spec: BarChartSpec): Promise<string> {
  const fmt = spec.valueFormat ?? formatValue;
  const at = (arr: readonly (number | undefined)[] | undefined, g: number): number | undefined => {
    const v = arr?.[g];
    return isNum(v) ? v : undefined;
  };
  const names = spec.series.map((s) => s.name);
  const nGroups = Math.max(1, spec.groups.length);
  const nSeries = Math.max(1, spec.series.length);
  // Bands take 90 % of the plot (vega-lite's default band padding), bars split their band.
  const barWidth = (plotWidthEstimate(50) / nGroups) * 0.9 * (1 / nSeries);
  const rows = spec.series.flatMap((s) =>
    spec.groups.flatMap((g, gi) => {
      const v = at(s.values, gi);
      if (v === undefined) return [];
      const mn = at(s.mins, gi);
      const mx = at(s.maxs, gi);
      const whisker = mn !== undefined && mx !== undefined;
      const lo = whisker ? Math.min(mn, mx) : v;
      const hi = whisker ? Math.max(mn, mx) : v;
      const text = fmt(v);
      const label = estimateTextWidth(text, BAR_LABEL_SIZE) <= barWidth + 2 ? text : null;
      // The label goes past the end of the bar and its whisker.
      return [
        {
          group: g,
          series: s.name,
          value: v,
          lo,
          hi,
          whisker,
          label,
          labelAt: v >= 0 ? Math.max(v, hi) : Math.min(v, lo),
        },
      ];
    }),
  );
  const hasData = rows.length > 0;

  const x: PositionDef = {
    field: 'group',
    type: 'nominal',
    title: null,
    scale: { domain: [...spec.groups] },
    // Many groups (a full matrix's cells): slanted labels, or they run into each other.
    axis:
      spec.groups.length > 4
        ? { labelAngle: -30, labelAlign: 'right', labelBaseline: 'top', labelFontSize: 10, labelLimit: 170 }
        : { labelAngle: 0, labelFontSize: 12 },
  };
  const xOffset: OffsetDef = { field: 'series', type: 'nominal', scale: { domain: names } };
  const y: PositionDef = {
    field: 'value',
    type: 'quantitative',
    title: spec.yLabel,
    scale: hasData ? {} : { domain: [0, 1] },
  };
  const colour: ColourDef = {
    field: 'series',
    type: 'nominal',
    scale: { domain: names, range: names.map((_, i) => paletteColour(i)) },
    legend: names.length > 0 ? { title: null, columns: legendColumns(names), symbolType: 'square' } : null,
  };
  const labelLayer = (above: boolean): TopLevelLayerItem => ({
    transform: [{ filter: `datum.label !== null && datum.value ${above ? '>=' : '<'} 0` }],
    mark: {
      type: 'text',
      fontSize: BAR_LABEL_SIZE,
      color: TEXT_COLOUR,
      baseline: above ? 'bottom' : 'top',
      dy: above ? -3 : 3,
      aria: false,
    },
    encoding: { x, xOffset, y: { ...y, field: 'labelAt' }, text: { field: 'label', type: 'nominal' } },
  });

  const layer: TopLevelLayerItem[] = [
    { mark: { type: 'bar' }, encoding: { x, xOffset, y, color: colour } },
    {
      transform: [{ filter: 'datum.whisker' }],
      mark: { type: 'rule', color: TEXT_COLOUR, strokeWidth: 1.2 },
      encoding: { x, xOffset, y: { ...y, field: 'lo' }, y2: { field: 'hi' } },
    },
    ...(['lo', 'hi'] as const).map((end): TopLevelLayerItem => ({
      transform: [{ filter: 'datum.whisker' }],
      mark: {
        type: 'tick',
        color: TEXT_COLOUR,
        thickness: 1.2,
        size: Math.max(2, Math.min(10, barWidth / 2)),
      },
      encoding: { x, xOffset, y: { ...y, field: end } },
    })),
    labelLayer(true),
    labelLayer(false),
  ];
  if (!hasData) layer.push(noDataLayer());
  return renderSvg({ ...frame(spec.title), data: { values: rows }, layer });
}

// ---------------------------------------------------------------------------------------------
// Timeline

/**
 * Minimum drawn width of a span, px, so that sub-pixel phases stay visible. Approximate: shorter
 * spans are widened to this many px of the estimated plot width, and vega may round the time axis
 * up a little, so they come out slightly narrower (≥ 2.5 px in practice).
 */
export const MIN_SPAN_WIDTH = 3;

const SPAN_LABEL_SIZE = 11;
const MARKER_LABEL_SIZE = 11;
const MARKER_ROW = 13;

/** Duration for descriptions: ms with 4 significant digits below 10 s, else s. */
function formatDuration(ms: number): string {
  const clean = (v: number): number => {
    const r = Number(v.toPrecision(12));
    return r === 0 ? 0 : r;
  };
  if (Math.abs(ms) < 10_000) return `${clean(Number(ms.toPrecision(4)))} ms`;
  return `${clean(Math.round(ms / 10) / 100)} s`;
}

/**
 * A Gantt-like timeline of one migration: one lane per actor (in the given order), spans coloured
 * by kind (legend in order of first appearance; spans without a kind are grey and not in the
 * legend), a time axis in ms (or s when the chart covers 2 s or more) and dashed vertical markers
 * labelled above the lanes. Spans are at least about MIN_SPAN_WIDTH px wide; a label is drawn
 * inside its span only where it fits, and every span's aria-label (its description) gives its
 * label, kind, start and duration. Spans with a non-finite start or duration are skipped; negative
 * durations count as 0.
 */
export async function timelineChart(spec: TimelineChartSpec): Promise<string> {
  const lanes = spec.lanes.map((l) => ({
    name: l.name,
    spans: l.spans.filter((s) => isNum(s.startMs) && isNum(s.durationMs)),
  }));
  const markers = (spec.markers ?? []).filter((m) => isNum(m.atMs));
  const laneNames = lanes.map((l) => l.name);
  const kinds: string[] = [];
  for (const l of lanes)
    for (const s of l.spans) if (s.kind !== undefined && !kinds.includes(s.kind)) kinds.push(s.kind);

  const times: number[] = [];
  for (const l of lanes)
    for (const s of l.spans) times.push(s.startMs, s.startMs + Math.max(0, s.durationMs));
  for (const m of markers) times.push(m.atMs);
  const hasData = lanes.some((l) => l.spans.length > 0);
  const tLo = Math.min(0, ...times);
  const tHi = Math.max(tLo + 1, ...times);
  const div = tHi - tLo >= 2000 ? 1000 : 1;

  const laneAxisWidth =
    Math.min(150, Math.max(0, ...laneNames.map((n) => estimateTextWidth(n, LABEL_SIZE)))) + 8;
  const plotW = plotWidthEstimate(laneAxisWidth);
  const pxPerMs = plotW / (tHi - tLo);
  const minMs = MIN_SPAN_WIDTH / pxPerMs;

  const rows = lanes.flatMap((l) =>
    l.spans.map((s) => {
      const dur = Math.max(0, s.durationMs);
      const end = s.startMs + Math.max(dur, minMs);
      const fill = s.kind === undefined ? UNKINDED_SPAN_COLOUR : paletteColour(kinds.indexOf(s.kind));
      // 0.9: the axis is niced, so a ms may be a little narrower than estimated.
      const fits = s.label !== '' && estimateTextWidth(s.label, SPAN_LABEL_SIZE) + 6 <= dur * pxPerMs * 0.9;
      return {
        lane: l.name,
        start: s.startMs / div,
        end: end / div,
        mid: (s.startMs + end) / 2 / div,
        kind: s.kind ?? null,
        label: fits ? s.label : null,
        textColour: luminance(fill) > 0.35 ? '#000000' : '#FFFFFF',
        description:
          `${s.label}${s.kind === undefined ? '' : ` (${s.kind})`}: ` +
          `${formatDuration(s.startMs)} + ${formatDuration(dur)}`,
      };
    }),
  );

  // Marker labels: greedy rows above the lanes, at most three; overflow goes to the emptiest row.
  const rowEnds: number[] = [];
  const markerRows = markers.map((m) => {
    const w = Math.min(160, estimateTextWidth(m.label, MARKER_LABEL_SIZE));
    const left = (m.atMs - tLo) * pxPerMs - w / 2;
    let row = rowEnds.findIndex((end) => end + 6 <= left);
    if (row < 0 && rowEnds.length < 3) row = rowEnds.push(-Infinity) - 1;
    if (row < 0) row = rowEnds.indexOf(Math.min(...rowEnds));
    rowEnds[row] = left + w;
    return { at: m.atMs / div, label: m.label, row };
  });

  const x: PositionDef = {
    field: 'start',
    type: 'quantitative',
    title: div === 1000 ? 'time (s)' : 'time (ms)',
    // Explicit, so that markers count, a lone instant still gets a range, and a span widened to
    // the minimum at the end stays inside (marks outside the domain would upset 'fit').
    scale: { domain: [tLo / div, Math.max(tHi / div, ...rows.map((r) => r.end))], nice: true },
    axis: { grid: true },
  };
  const y: PositionDef = {
    field: 'lane',
    type: 'nominal',
    title: null,
    scale: { domain: laneNames, paddingInner: 0.35, paddingOuter: 0.2 },
    axis: { labelFontSize: 12, labelLimit: 150, ticks: false, domain: false },
  };
  const spanDescription: Encoding['description'] = { field: 'description', type: 'nominal' };

  const layer: TopLevelLayerItem[] = [
    {
      transform: [{ filter: 'datum.kind !== null' }],
      mark: { type: 'bar', stroke: '#FFFFFF', strokeWidth: 1 },
      encoding: {
        x,
        x2: { field: 'end' },
        y,
        color: {
          field: 'kind',
          type: 'nominal',
          scale: { domain: kinds, range: kinds.map((_, i) => paletteColour(i)) },
          legend:
            kinds.length > 0 ? { title: null, columns: legendColumns(kinds), symbolType: 'square' } : null,
        },
        description: spanDescription,
      },
    },
    {
      transform: [{ filter: 'datum.kind === null' }],
      mark: { type: 'bar', color: UNKINDED_SPAN_COLOUR, stroke: '#FFFFFF', strokeWidth: 1 },
      encoding: { x, x2: { field: 'end' }, y, description: spanDescription },
    },
    {
      transform: [{ filter: 'datum.label !== null' }],
      mark: { type: 'text', fontSize: SPAN_LABEL_SIZE, aria: false },
      encoding: {
        x: { ...x, field: 'mid' },
        y,
        text: { field: 'label', type: 'nominal' },
        color: { field: 'textColour', type: 'nominal', scale: null },
      },
    },
  ];
  if (markerRows.length > 0) {
    const markerX: PositionDef = { ...x, field: 'at' };
    layer.push(
      {
        data: { values: markerRows },
        mark: { type: 'rule', color: AXIS_COLOUR, strokeWidth: 1.2, strokeDash: [4, 3] },
        encoding: { x: markerX, description: { field: 'label', type: 'nominal' } },
      },
      ...rowEnds.map((_, row): TopLevelLayerItem => ({
        data: { values: markerRows.filter((m) => m.row === row) },
        mark: {
          type: 'text',
          fontSize: MARKER_LABEL_SIZE,
          color: TEXT_COLOUR,
          baseline: 'bottom',
          limit: 160,
          aria: false,
        },
        encoding: {
          x: markerX,
          y: { value: -4 - row * MARKER_ROW },
          text: { field: 'label', type: 'nominal' },
        },
      })),
    );
  }
  if (!hasData) layer.push(noDataLayer());
  return renderSvg({ ...frame(spec.title), data: { values: rows }, layer });
}

// ---------------------------------------------------------------------------------------------
// PNG rendering

/**
 * Renders SVG to PNG with resvg (off the main thread), loading only the given fonts (default
 * DEJAVU_FONT_FILES) with 'DejaVu Sans' as the default and sans-serif family. Missing font files
 * are skipped: the PNG is still produced, without text. Rejects with an InternalError
 * (GODWIT_INTERNAL) when resvg cannot parse the SVG, since charts come from this module.
 */
export async function svgToPng(svg: string, options: SvgToPngOptions = {}): Promise<Buffer> {
  const fontFiles = (options.fontFiles ?? DEJAVU_FONT_FILES).filter((f) => existsSync(f));
  try {
    const image = await renderAsync(svg, {
      font: {
        loadSystemFonts: false,
        fontFiles,
        defaultFontFamily: 'DejaVu Sans',
        sansSerifFamily: 'DejaVu Sans',
      },
      fitTo: { mode: 'original' },
      logLevel: 'off',
    });
    return image.asPng();
  } catch (err: unknown) {
    throw new InternalError(ErrorCode.Internal, 'could not render the chart SVG to PNG', { cause: err });
  }
}

// ---------------------------------------------------------------------------------------------
// Validators

const NAME_RE = /[A-Za-z_:][-A-Za-z0-9_:.]*/y;
const ENTITY_RE = /&(?:amp|lt|gt|quot|apos|#[0-9]+|#x[0-9A-Fa-f]+);/y;

/** True when every '&' in `s` starts one of XML's five entities or a character reference. */
function validCharData(s: string): boolean {
  for (let i = s.indexOf('&'); i >= 0; i = s.indexOf('&', i + 1)) {
    ENTITY_RE.lastIndex = i;
    if (!ENTITY_RE.test(s)) return false;
  }
  return true;
}

/**
 * Well-formedness check for SVG documents, without a DOM: an optional BOM and XML declaration,
 * then (after optional comments and a simple DOCTYPE) one root `<svg>` element declaring the SVG
 * namespace; tags balanced and properly nested; attributes quoted, unique per element and free of
 * '<'; '&' only in entity or character references; nothing but comments and whitespace after the
 * root. Not a full XML parser: it does not check DTDs or which characters names may contain
 * beyond ASCII.
 */
export function isValidSvg(text: string): boolean {
  const len = text.length;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  if (text.startsWith('<?xml', i) && /\s/.test(text[i + 5] ?? '')) {
    const end = text.indexOf('?>', i);
    if (end < 0) return false;
    i = end + 2;
  }
  const stack: string[] = [];
  let rootSeen = false;
  const skipWs = (): void => {
    while (i < len && /\s/.test(text[i] ?? '')) i++;
  };
  const readName = (): string | undefined => {
    NAME_RE.lastIndex = i;
    const m = NAME_RE.exec(text);
    if (m === null) return undefined;
    i += m[0].length;
    return m[0];
  };

  while (i < len) {
    const lt = text.indexOf('<', i);
    const chars = text.slice(i, lt < 0 ? len : lt);
    if (stack.length === 0 ? chars.trim() !== '' : !validCharData(chars)) return false;
    if (lt < 0) break;
    i = lt;
    if (text.startsWith('<!--', i)) {
      const end = text.indexOf('-->', i + 4);
      if (end < 0) return false;
      i = end + 3;
      continue;
    }
    if (text.startsWith('<![CDATA[', i)) {
      const end = text.indexOf(']]>', i + 9);
      if (end < 0 || stack.length === 0) return false;
      i = end + 3;
      continue;
    }
    if (text.startsWith('<?', i)) {
      i += 2;
      const target = readName();
      if (target === undefined || target.toLowerCase() === 'xml') return false;
      const end = text.indexOf('?>', i);
      if (end < 0) return false;
      i = end + 2;
      continue;
    }
    if (text.startsWith('<!DOCTYPE', i)) {
      const end = text.indexOf('>', i);
      if (end < 0 || rootSeen || stack.length > 0 || text.slice(i, end).includes('[')) return false;
      i = end + 1;
      continue;
    }
    if (text.startsWith('</', i)) {
      i += 2;
      const name = readName();
      skipWs();
      if (name === undefined || text[i] !== '>' || stack.pop() !== name) return false;
      i++;
      continue;
    }
    // Start tag.
    i++;
    const name = readName();
    if (name === undefined) return false;
    const isRoot = stack.length === 0;
    if (isRoot && (rootSeen || name !== 'svg')) return false;
    const attrs = new Map<string, string>();
    let selfClosing = false;
    for (;;) {
      const before = i;
      skipWs();
      if (text.startsWith('/>', i)) {
        selfClosing = true;
        i += 2;
        break;
      }
      if (text[i] === '>') {
        i++;
        break;
      }
      if (i === before) return false; // attributes must be separated by whitespace
      const attr = readName();
      if (attr === undefined || attrs.has(attr)) return false;
      skipWs();
      if (text[i] !== '=') return false;
      i++;
      skipWs();
      const quote = text[i];
      if (quote !== '"' && quote !== "'") return false;
      const end = text.indexOf(quote, i + 1);
      if (end < 0) return false;
      const value = text.slice(i + 1, end);
      if (value.includes('<') || !validCharData(value)) return false;
      attrs.set(attr, value);
      i = end + 1;
    }
    if (isRoot) {
      if (attrs.get('xmlns') !== SVG_NAMESPACE) return false;
      rootSeen = true;
    }
    if (!selfClosing) stack.push(name);
  }
  return rootSeen && stack.length === 0;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

let crcTable: Uint32Array | undefined;

/** CRC-32 (IEEE, as PNG and zlib use it) by table, for Nodes without zlib.crc32 (< 20.15). */
export function crc32ByTable(data: Uint8Array): number {
  if (crcTable === undefined) {
    crcTable = new Uint32Array(256);
    for (let k = 0; k < 256; k++) {
      let c = k;
      for (let j = 0; j < 8; j++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[k] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (const b of data) c = (crcTable[(c ^ b) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const crc32: (data: Uint8Array) => number =
  typeof zlib.crc32 === 'function' ? (data) => zlib.crc32(data) >>> 0 : crc32ByTable;

/**
 * Size of a PNG, or undefined unless the buffer is one: the 8-byte signature, IHDR as the first
 * chunk (13 bytes, non-zero size), every chunk's CRC correct, and an IEND chunk before the data
 * runs out (so truncated files are rejected too). Bytes after IEND are ignored.
 */
export function pngInfo(buf: Buffer): PngInfo | undefined {
  if (buf.length < PNG_SIGNATURE.length + 25 + 12 || !buf.subarray(0, 8).equals(PNG_SIGNATURE))
    return undefined;
  let info: PngInfo | undefined;
  for (let off = 8; off + 12 <= buf.length;) {
    const length = buf.readUInt32BE(off);
    const dataEnd = off + 8 + length;
    if (length > 0x7fffffff || dataEnd + 4 > buf.length) return undefined;
    const type = buf.toString('latin1', off + 4, off + 8);
    if (!/^[A-Za-z]{4}$/.test(type)) return undefined;
    if (crc32(buf.subarray(off + 4, dataEnd)) !== buf.readUInt32BE(dataEnd)) return undefined;
    if (info === undefined) {
      if (type !== 'IHDR' || length !== 13) return undefined;
      const width = buf.readUInt32BE(off + 8);
      const height = buf.readUInt32BE(off + 12);
      if (width === 0 || height === 0 || width > 0x7fffffff || height > 0x7fffffff) return undefined;
      info = { width, height };
    } else if (type === 'IEND') {
      return info;
    }
    off = dataEnd + 4;
  }
  return undefined;
}
