/** Driving a migration from outside the source agent: start it, then follow its report. */
import type { AgentClient } from '../agent/client.js';
import { object, string, type Schema } from '../agent/schema.js';
import type { FinalDump, MigrationReport, MigrationStrategy } from '../core/migration.js';

const keep = { unknownFields: 'keep' } as const;

/** Answer of `POST /v1/migrations`. */
export const migrationStartResponse = object({ id: string({ minLength: 1, maxLength: 128 }) }, keep);

/** A report as the agent sends it: checked for the fields callers read, the rest passed through. */
export const migrationReportResponse: Schema<MigrationReport> = {
  expected: 'a migration report',
  parse(v: unknown, path: string): MigrationReport {
    object(
      {
        id: string({ maxLength: 128 }),
        name: string({ maxLength: 128 }),
        outcome: string({ maxLength: 32 }),
      },
      keep,
    ).parse(v, path);
    return v as MigrationReport;
  },
};

/** What to migrate and where: the destination agent's TCP address. */
export interface MigrationRequest {
  name: string;
  to: { host: string; port: number; label?: string };
  strategy?: MigrationStrategy;
  maxDowntimeMs?: number;
  maxRounds?: number;
  predict?: boolean;
  /** Pre-copy: how the final dump takes the memory (default `held`). */
  finalDump?: FinalDump;
  /** Test-only: failures to inject (the source agent must allow it). */
  faults?: { failRound?: number; failPhase?: string; dropPagesAfter?: number; dropSourceAtCommit?: boolean };
}

/**
 * Starts a migration through the source agent `source` and polls its report every `pollMs`
 * (default 150) until it has ended; `onReport` sees each report while it runs. Resolves with
 * the final report, whatever its outcome.
 */
export async function migrateThrough(
  source: AgentClient,
  req: MigrationRequest,
  opts: { pollMs?: number; onReport?: (r: MigrationReport) => void | Promise<void> } = {},
): Promise<MigrationReport> {
  const { id } = await source.call('POST', '/v1/migrations', migrationStartResponse, req);
  for (;;) {
    const report = await source.call('GET', `/v1/migrations/${id}`, migrationReportResponse);
    if (report.outcome !== 'running') return report;
    await opts.onReport?.(report);
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 150));
  }
}
