/**
 * The destination as the source's engine sees it: the incoming-migration half of the agent
 * API, over the agent's TCP listener. Separate from AgentClient's container calls so that
 * the engine can be tested against a fake peer.
 */
import type { ContainerNetwork } from '../core/network.js';
import type { InlineState, InlineStatePart } from './inline-state.js';
import type { AgentClient } from '../agent/client.js';
import { array, boolean, integer, number, object, oneOf, optional, string } from '../agent/schema.js';
import type { LazyMemoryReport } from '../core/migration.js';
import type { FinalPhase, LazyRestoreRequest } from './incoming.js';

const text = string({ maxLength: 4096 });
/** Longest the source waits for a destination to fetch every page it kept back. */
const FILL_TIMEOUT_MS = 30 * 60_000;
const keep = { unknownFields: 'keep' } as const;

/** Answer of `POST /v1/migrations/incoming`. */
export const prepareResponse = object(
  {
    transfer: object({ host: text, port: integer(1, 65_535) }, keep),
    hostId: optional(text),
    lazyPages: optional(boolean()),
  },
  keep,
);

/** Answer of `POST /v1/migrations/incoming/:id/restore`. */
export const incomingRestoreResponse = object(
  {
    name: text,
    pid: integer(0, Number.MAX_SAFE_INTEGER),
    restoreMs: number(0, Number.MAX_VALUE),
    materializeMs: number(0, Number.MAX_VALUE),
  },
  keep,
);

const count = integer(0, Number.MAX_SAFE_INTEGER);
const ms = number(0, Number.MAX_VALUE);

/** Answer of `GET /v1/migrations/incoming/:id/fill`. */
export const fillResponse = object(
  {
    outcome: oneOf(['filled', 'lost'] as const),
    pagesRemote: count,
    pagesOnDemand: count,
    pagesPushed: count,
    pagesLocal: count,
    pagesServed: count,
    faults: count,
    faultWaitMs: object({ p50: ms, p99: ms, max: ms }, keep),
    sourceWindowMs: optional(ms),
    degradationWindowMs: optional(ms),
    bytesWire: count,
    missingPages: optional(count),
    missingRuns: optional(
      array(object({ vpid: count, vaddr: count, nrPages: count }, keep), { maxItems: 1000 }),
    ),
    error: optional(text),
  },
  keep,
);

/** Answer of `POST /v1/migrations/incoming/:id/prestage`. */
export const prestageResponse = object({}, keep);

/** Answer of `DELETE /v1/migrations/incoming/:id`. */
export const abortResponse = object({ removedContainer: boolean() }, keep);

/** What the source needs from the destination. */
export interface MigrationPeer {
  /** Label of the destination for reports. */
  readonly label: string;
  /** Checks the name is free there and returns the destination's transfer endpoint. */
  /**
   * Reserves nothing but checks the name; with `network`, the destination builds the container's
   * network namespace ahead (off the network) while the source still runs.
   */
  prepare(
    id: string,
    name: string,
    network?: { net: ContainerNetwork; locked: boolean },
    image?: string,
    finalPhase?: FinalPhase,
  ): Promise<{ transfer: { host: string; port: number }; lazyPages?: boolean }>;
  /**
   * Reassembles the transferred checkpoint and restores it; resolves once it runs. With `lazy`,
   * the pages listed there stayed on the source and are fetched from it after the restore.
   */
  restore(
    id: string,
    name: string,
    lazy?: LazyRestoreRequest,
    state?: InlineState,
  ): Promise<{ pid: number; restoreMs: number; materializeMs: number }>;
  /**
   * Optional head start: the checkpoint's `checkpoint.json`, sent once the dump is done, lets the
   * destination prepare the restore (its network) while the rest is still on its way.
   */
  prestage?(id: string, checkpointJson: Buffer): Promise<void>;
  /**
   * A part of the state of a `restore` request whose `state.parts` counts it, sent alongside it
   * (inline-state.ts `splitInlineState`). Required for a split state.
   */
  statePart?(id: string, part: InlineStatePart): Promise<void>;
  /**
   * Optional: the source is about to stop the container; the destination does now what would
   * otherwise compete with the stopped phase for the machine (a full garbage collection). With
   * `base` (a lazy final phase), it also reads which pages that completed round left it.
   */
  quiesce?(id: string, base?: string): Promise<void>;
  /** After a lazy restore: resolves once every page has arrived (or the source was lost). */
  fill(id: string): Promise<LazyMemoryReport>;
  /** After commit: drop temp files. Before commit: also remove a container this migration restored. */
  finish(id: string, committed: boolean): Promise<{ removedContainer: boolean }>;
}

/** A MigrationPeer over an AgentClient. */
export class AgentMigrationPeer implements MigrationPeer {
  constructor(
    private readonly client: AgentClient,
    readonly label: string,
  ) {}

  prepare(
    id: string,
    name: string,
    network?: { net: ContainerNetwork; locked: boolean },
    image?: string,
    finalPhase?: FinalPhase,
  ): Promise<{ transfer: { host: string; port: number }; lazyPages?: boolean }> {
    return this.client.call(
      'POST',
      '/v1/migrations/incoming',
      prepareResponse,
      {
        id,
        name,
        ...(network ? { network: { ...network.net, locked: network.locked } } : {}),
        ...(image !== undefined ? { image } : {}),
        ...(finalPhase !== undefined ? { finalPhase } : {}),
      },
      30_000,
    );
  }

  restore(
    id: string,
    name: string,
    lazy?: LazyRestoreRequest,
    state?: InlineState,
  ): Promise<{ pid: number; restoreMs: number; materializeMs: number }> {
    return this.client.call('POST', `/v1/migrations/incoming/${id}/restore`, incomingRestoreResponse, {
      name,
      ...(lazy ? { lazy } : {}),
      ...(state ? { state } : {}),
    });
  }

  async prestage(id: string, checkpointJson: Buffer): Promise<void> {
    await this.client.call('POST', `/v1/migrations/incoming/${id}/prestage`, prestageResponse, {
      checkpoint: checkpointJson.toString('base64'),
    });
  }

  async statePart(id: string, part: InlineStatePart): Promise<void> {
    await this.client.call('POST', `/v1/migrations/incoming/${id}/state`, prestageResponse, part);
  }

  async quiesce(id: string, base?: string): Promise<void> {
    // Two requests alongside leave three connections open in the pool for the stopped phase,
    // whose prestage, restore and state part requests go out together: otherwise each more would
    // first pay a TCP handshake (a round trip: 20 ms on the edge link) while the container is
    // stopped.
    await Promise.all([
      this.client.call(
        'POST',
        `/v1/migrations/incoming/${id}/quiesce`,
        prestageResponse,
        base !== undefined ? { base } : {},
      ),
      this.client.health().catch(() => undefined),
      this.client.health().catch(() => undefined),
    ]);
  }

  async fill(id: string): Promise<LazyMemoryReport> {
    const r = await this.client.call(
      'GET',
      `/v1/migrations/incoming/${id}/fill`,
      fillResponse,
      undefined,
      FILL_TIMEOUT_MS,
    );
    return r as LazyMemoryReport;
  }

  finish(id: string, committed: boolean): Promise<{ removedContainer: boolean }> {
    return this.client.call(
      'DELETE',
      `/v1/migrations/incoming/${id}?committed=${committed}`,
      abortResponse,
      undefined,
      60_000,
    );
  }
}
