/** Human rendering of migration reports and progress. Pure. */
import { formatBytes, formatMs, table } from '../cli/format.js';
import type { MigrationProgress, MigrationReport } from '../core/migration.js';

/** The report as a table of phases plus a summary block. */
export function formatMigrationReport(r: MigrationReport): string {
  const rows = r.phases.map((p) => [
    p.phase,
    formatMs(p.startMs),
    p.durationMs === undefined ? '…' : formatMs(p.durationMs),
    p.error ? `error: ${p.error}` : describeDetail(p.detail),
  ]);
  const lines = [
    `migration ${r.id}: ${r.name} ${r.from} → ${r.to} (${r.strategy}): ${r.outcome.toUpperCase()}`,
    '',
    table(['PHASE', 'START', 'TIME', 'DETAIL'], rows),
    '',
    `downtime     ${r.downtimeMs === undefined ? '-' : formatMs(r.downtimeMs)} (checkpoint start → running on ${r.to})`,
    `total        ${r.totalMs === undefined ? '-' : formatMs(r.totalMs)}`,
    `state        ${formatBytes(r.bytes.logical)} logical, ${formatBytes(r.bytes.zero)} zero, ${formatBytes(r.bytes.dedup)} already there`,
    `on the wire  ${formatBytes(r.bytes.wire)} (${formatBytes(r.bytes.sent)} sent before compression` +
      `${r.compressionRatio ? `, compression ${r.compressionRatio}×` : ''}${r.dedupRatio ? `, logical/sent ${r.dedupRatio}×` : ''})`,
    `rate         ${r.rateBps === undefined ? '-' : `${formatBytes(r.rateBps)}/s`}`,
  ];
  if (r.error) lines.push(`error        ${r.error.code}: ${r.error.message}`);
  for (const w of r.warnings) lines.push(`warning      ${w}`);
  return lines.join('\n');
}

/** One progress line: phase, bytes, rate, ETA. */
export function formatProgress(p: MigrationProgress | undefined, elapsedMs: number): string {
  if (!p) return `${formatMs(elapsedMs)} …`;
  let s = `${formatMs(elapsedMs)}  ${p.phase}`;
  if (p.bytesTotal !== undefined && p.bytesDone !== undefined) {
    s += `  ${formatBytes(p.bytesDone)} / ${formatBytes(p.bytesTotal)}`;
    if (p.rateBps) {
      s += `  ${formatBytes(p.rateBps)}/s`;
      const left = (p.bytesTotal - p.bytesDone) / p.rateBps;
      if (left > 0 && Number.isFinite(left)) s += `  ETA ${left.toFixed(1)} s`;
    }
  }
  return s;
}

function describeDetail(d: Record<string, unknown> | undefined): string {
  if (!d) return '';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(d)) {
    if (typeof v === 'number')
      parts.push(`${k} ${/Bytes$/.test(k) ? formatBytes(v) : Number.isInteger(v) ? v : v.toFixed(1)}`);
    else if (typeof v === 'string' || typeof v === 'boolean') parts.push(`${k} ${String(v)}`);
  }
  return parts.slice(0, 5).join(', ');
}
