/** Human rendering of migration reports and progress. Pure. */
import { formatBytes, formatMs, table } from '../cli/format.js';
import type {
  LazyMemoryReport,
  MigrationProgress,
  MigrationReport,
  PhaseRecord,
  RoundReport,
  WriteTrackingReport,
} from '../core/migration.js';

/** The report as a table of phases plus a summary block. */
export function formatMigrationReport(r: MigrationReport): string {
  const rows = r.phases.map((p) => [
    p.phase,
    formatMs(p.startMs),
    p.durationMs === undefined ? '…' : formatMs(p.durationMs),
    p.error ? `error: ${p.error}` : describeDetail(p.detail),
  ]);
  const rounds = (r.rounds ?? []).map((x) => [
    `${x.round}${x.flush ? '*' : ''}`,
    String(x.pagesScanned),
    String(x.dirtyPages),
    String(x.heldBackPages),
    formatBytes(x.bytesSent),
    formatBytes(x.bytesWire),
    formatMs(x.durationMs),
    formatMs(x.predictedFinalMs),
  ]);
  const t = r.timings ?? {};
  const timing = (label: string, v: number | undefined): string =>
    v === undefined ? '' : `${label} ${formatMs(v)}`;
  const lines = [
    `migration ${r.id}: ${r.name} ${r.from} → ${r.to} (${r.strategy}): ${r.outcome.toUpperCase()}`,
    ...(r.fallback ? [`fell back    ${r.fallback.from} → ${r.fallback.to}: ${r.fallback.reason}`] : []),
    '',
    table(['PHASE', 'START', 'TIME', 'DETAIL'], rows),
    '',
    ...(rounds.length > 0
      ? [table(['ROUND', 'SCANNED', 'DIRTY', 'HELD', 'SENT', 'WIRE', 'TIME', 'PREDICTED FINAL'], rounds), '']
      : []),
    `stopped by   ${r.stopReason ?? '-'}${rounds.some((x) => x[0]?.endsWith('*')) ? ' (* = last round sent everything held back)' : ''}`,
    ...(r.writeTracking ? [`writes       ${formatWriteTracking(r.writeTracking)}`] : []),
    `timings      ${[
      timing('rounds', t.roundsMs),
      timing('closing passes', t.closingMs),
      timing('checkpoint', t.checkpointMs),
      timing('snapshot', t.snapshotMs),
      timing('final transfer', t.finalTransferMs),
      timing('materialize', t.materializeMs),
      timing('restore', t.restoreMs),
      timing('verdict scan', t.verdictScanMs),
    ]
      .filter(Boolean)
      .join(', ')}`,
    `downtime     ${r.downtimeMs === undefined ? '-' : formatMs(r.downtimeMs)} (checkpoint start → running on ${r.to})`,
    `total        ${r.totalMs === undefined ? '-' : formatMs(r.totalMs)}`,
    `state        ${formatBytes(r.bytes.logical)} logical, ${formatBytes(r.bytes.zero)} zero, ${formatBytes(r.bytes.dedup)} already there`,
    `on the wire  ${formatBytes(r.bytes.wire)} (${formatBytes(r.bytes.sent)} sent before compression` +
      `${r.compressionRatio ? `, compression ${r.compressionRatio}×` : ''}${r.dedupRatio ? `, logical/sent ${r.dedupRatio}×` : ''})`,
    `rate         ${r.rateBps === undefined ? '-' : `${formatBytes(r.rateBps)}/s`}`,
  ];
  if (r.lazy) lines.push(...formatLazy(r.lazy));
  if (r.error) lines.push(`error        ${r.error.code}: ${r.error.message}`);
  for (const w of r.warnings) lines.push(`warning      ${w}`);
  return lines.join('\n');
}

/** Pre-copy's write tracking: on or why not, what the freeze found, what the audit compared. */
export function formatWriteTracking(w: WriteTrackingReport): string {
  if (!w.tracked) return `compared by their bytes (not tracked: ${w.reason ?? 'unknown'})`;
  const parts = ['tracked by the kernel'];
  if (w.pagesAtFreeze !== undefined)
    parts.push(`${w.pagesAtFreeze} pages written since last read at the freeze`);
  if (w.audited !== undefined)
    parts.push(`audit: ${w.audited} pages compared, ${w.auditMismatches ?? 0} differed`);
  if (w.reason) parts.push(w.reason);
  return parts.join('; ');
}

/** The lazy half of post-copy and hybrid: where the memory came from, and how long it took. */
function formatLazy(l: LazyMemoryReport): string[] {
  const w = l.faultWaitMs;
  return [
    `memory       ${l.pagesServed} pages after the restore: ${l.pagesLocal} held here already, ` +
      `${l.pagesRemote} left on the source (` +
      (l.pagesFromStore !== undefined
        ? `${l.pagesFromStore} judged unchanged and served from this host's store, `
        : '') +
      `${l.pagesOnDemand} fetched on faults, ${l.pagesPushed} in the background)` +
      (l.outcome === 'lost'
        ? `; LOST ${l.missingPages ?? '?'} pages (${(l.missingRuns ?? [])
            .slice(0, 4)
            .map((r) => `pid ${r.vpid} 0x${r.vaddr.toString(16)}+${r.nrPages}`)
            .join(', ')}${(l.missingRuns?.length ?? 0) > 4 ? ', …' : ''})`
        : ''),
    `faults       ${l.faults} (wait p50 ${formatMs(w.p50)}, p99 ${formatMs(w.p99)}, max ${formatMs(w.max)})`,
    `degraded     ${l.degradationWindowMs === undefined ? '-' : formatMs(l.degradationWindowMs)} (restore → every page in place); ` +
      `source released after ${l.sourceWindowMs === undefined ? '-' : formatMs(l.sourceWindowMs)}`,
  ];
}

/** One line per pre-copy round, for the terminal while a migration runs. */
export function formatRoundLine(x: RoundReport): string {
  return (
    `round ${x.round}${x.flush ? ' (flush)' : ''}: ${x.pagesScanned} pages scanned, ${x.dirtyPages} dirty, ` +
    `${x.heldBackPages} held back, ${formatBytes(x.bytesWire)} on the wire in ${formatMs(x.durationMs)}; ` +
    `final phase predicted ${formatMs(x.predictedFinalMs)}`
  );
}

/** One line per closing pass (a `round` phase with `detail.closing`), once it has ended. */
export function formatClosingLine(p: PhaseRecord): string {
  const d = p.detail ?? {};
  const n = (k: string): number => Number(d[k] ?? 0);
  if (p.error) return `closing pass ${String(d['closing'])}: failed (${p.error})`;
  return (
    `closing pass ${String(d['closing'])}: ${n('pagesScanned')} pages read` +
    `${d['readAll'] ? ' (all memory)' : ' (those written during the rounds)'}, ${n('changedPages')} changed, ` +
    `${formatBytes(n('bytesWire'))} on the wire in ${formatMs(p.durationMs ?? 0)}`
  );
}

/**
 * The lines a live report adds since the last call: finished pre-copy rounds, then finished
 * closing passes. `seen` counts what was printed and is updated.
 */
export function newProgressLines(r: MigrationReport, seen: { rounds: number; closing: number }): string[] {
  const out: string[] = [];
  for (; seen.rounds < r.rounds.length; seen.rounds++)
    out.push(formatRoundLine(r.rounds[seen.rounds] as RoundReport));
  const closing = r.phases.filter((p) => p.detail?.['closing'] !== undefined && p.endMs !== undefined);
  for (; seen.closing < closing.length; seen.closing++)
    out.push(formatClosingLine(closing[seen.closing] as PhaseRecord));
  return out;
}

/** One progress line: phase, bytes, rate, ETA. */
export function formatProgress(p: MigrationProgress | undefined, elapsedMs: number): string {
  if (!p) return `${formatMs(elapsedMs)} …`;
  let s = `${formatMs(elapsedMs)}  ${p.phase}${p.round !== undefined ? ` ${p.round}` : ''}`;
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
