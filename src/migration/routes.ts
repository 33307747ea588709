/**
 * The migration API of the agent: `/v1/migrations` (this host as source) and
 * `/v1/migrations/incoming` (this host as destination). Validation as everywhere in the
 * agent: unknown fields are refused.
 */
import type { Call, Route } from '../agent/server.js';
import { containerName, imageName } from '../agent/api.js';
import { API_VERSION, MAX_BODY_BYTES } from '../agent/api.js';
import {
  array,
  boolean,
  integer,
  invalid,
  object,
  oneOf,
  optional,
  refine,
  string,
} from '../agent/schema.js';
import { FINAL_DUMPS, MIGRATION_STRATEGIES, MigrationPhase } from '../core/migration.js';
import { ErrorCode, FailedPreconditionError } from '../core/errors.js';
import type { MigrationEngine } from './engine.js';
import { FINAL_PHASES, type IncomingMigrations } from './incoming.js';
import { MAX_INLINE_MANIFEST_BYTES } from './inline-state.js';
import type { MigrationPeer } from './peer.js';
import { MAX_CLOSING_PASSES } from './precopy.js';

/** A transfer session id (a pre-copy round's, as the destination names it). */
const sessionId = string({
  minLength: 1,
  maxLength: 200,
  pattern: /^[A-Za-z0-9._-]+$/,
  expected: 'a session id',
});

/** Body of `POST /v1/migrations`. */
export const migrateRequest = object({
  name: containerName,
  to: object({
    host: string({ minLength: 1, maxLength: 253, pattern: /^[A-Za-z0-9.:-]+$/, expected: 'an address' }),
    port: integer(1, 65_535),
    label: optional(string({ minLength: 1, maxLength: 64 })),
  }),
  strategy: optional(oneOf(MIGRATION_STRATEGIES)),
  maxDowntimeMs: optional(integer(1, 3_600_000)),
  maxRounds: optional(integer(1, 1000)),
  predict: optional(boolean()),
  finalDump: optional(oneOf(FINAL_DUMPS)),
  /** Test-only; refused unless the agent allows fault injection. */
  faults: optional(
    object({
      failRound: optional(integer(0, 1000)),
      failPhase: optional(oneOf(Object.values(MigrationPhase))),
      dropPagesAfter: optional(integer(0, Number.MAX_SAFE_INTEGER)),
      dropSourceAtCommit: optional(boolean()),
    }),
  ),
});

/** Body of `POST /v1/migrations/incoming`. */
export const prepareRequest = object({
  id: containerName,
  name: containerName,
  /** The container's network identity, to build its namespace ahead (locked: TCP to restore). */
  network: optional(
    object({
      ip: string({ pattern: /^\d{1,3}(\.\d{1,3}){3}$/, expected: 'an IPv4 address' }),
      prefixLength: integer(1, 32),
      mac: string({ pattern: /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/, expected: 'a MAC address' }),
      gateway: optional(string({ pattern: /^\d{1,3}(\.\d{1,3}){3}$/, expected: 'an IPv4 address' })),
      locked: boolean(),
    }),
  ),
  /** The container's image, to make it ready ahead (a first restore here would build it). */
  image: optional(imageName),
  /**
   * `full`: every page crosses before the restore (cold, pre-copy), so the destination may serve
   * the restored memory from its chunk store. `lazy` (the default): pages may stay on the source.
   */
  finalPhase: optional(oneOf(FINAL_PHASES)),
});

/** Body of `POST /v1/migrations/incoming/:id/prestage`: the checkpoint's checkpoint.json, base64. */
export const prestageRequest = object({
  checkpoint: string({
    minLength: 1,
    maxLength: 128 * 1024,
    pattern: /^[A-Za-z0-9+/=]+$/,
    expected: 'base64',
  }),
});

/**
 * Body of `POST /v1/migrations/incoming/:id/quiesce`: with `base`, the last pre-copy round of a
 * lazy final phase, whose pages the destination then gets ready to serve before the stop.
 */
export const quiesceRequest = object({ base: optional(sessionId) });

/** Most parts a restore request's state may come in besides its own (inline-state.ts). */
const MAX_STATE_PARTS = 64;

/** The chunks of an inline state or of one of its parts (inline-state.ts). */
const inlineChunks = array(
  object({
    digest: string({ pattern: /^sha256:[0-9a-f]{64}$/, expected: 'a chunk digest' }),
    codec: integer(0, 255),
    size: integer(0, 16 * 1024 * 1024),
    data: base64(MAX_BODY_BYTES),
  }),
  { maxItems: 100_000 },
);

/** Most remote runs a lazy restore may list (each a contiguous range of one process's pages). */
const MAX_REMOTE_RUNS = 100_000;

/** Body of `POST /v1/migrations/incoming/:id/restore`. */
export const incomingRestoreRequest = object({
  name: containerName,
  lazy: optional(
    object({
      source: object({
        host: string({ minLength: 1, maxLength: 253, pattern: /^[A-Za-z0-9.:-]+$/, expected: 'an address' }),
        port: integer(1, 65_535),
        token: string({ minLength: 32, maxLength: 32, pattern: /^[0-9a-f]{32}$/, expected: '32 hex digits' }),
      }),
      // Absent: every page the pagemaps mark lazy.
      remote: optional(
        array(
          object({
            vpid: integer(1, 2 ** 31 - 1),
            vaddr: refine(integer(0, Number.MAX_SAFE_INTEGER), (v, path) => {
              if (v % 4096 !== 0) throw invalid(path, 'expected a page-aligned address');
            }),
            nrPages: integer(1, 2 ** 31 - 1),
          }),
          { maxItems: MAX_REMOTE_RUNS },
        ),
      ),
      verdicts: optional(
        object({
          base: sessionId,
          closing: optional(array(sessionId, { maxItems: MAX_CLOSING_PASSES })),
        }),
      ),
      waitForAll: optional(boolean()),
    }),
  ),
  /** A small final state sent with the request (inline-state.ts) instead of a transfer session. */
  state: optional(
    object({
      manifest: base64(MAX_BODY_BYTES),
      manifestCodec: optional(integer(0, 255)),
      manifestSize: optional(integer(0, MAX_INLINE_MANIFEST_BYTES)),
      chunks: inlineChunks,
      parts: optional(integer(1, MAX_STATE_PARTS)),
    }),
  ),
});

/** Body of `POST /v1/migrations/incoming/:id/state`: a part of the restore request's state. */
export const statePartRequest = object({ chunks: inlineChunks });

function base64(maxLength: number): ReturnType<typeof string> {
  return string({ maxLength, pattern: /^[A-Za-z0-9+/=]*$/, expected: 'base64' });
}

/** The routes, given the engine (source side), the incoming handler and how to reach a peer agent. */
export function migrationRoutes(deps: {
  engine: MigrationEngine;
  incoming: IncomingMigrations | undefined;
  connectPeer: (to: { host: string; port: number; label?: string }) => MigrationPeer;
}): Route[] {
  const v = API_VERSION;
  const id = '([^/]+)';
  const needIncoming = (): IncomingMigrations => {
    if (!deps.incoming) {
      throw new FailedPreconditionError(
        ErrorCode.NotImplemented,
        'this agent does not accept incoming migrations',
        {
          hint: 'start the agent with --listen ADDR:PORT so that it runs a transfer server',
        },
      );
    }
    return deps.incoming;
  };
  return [
    {
      pattern: new RegExp(`^/${v}/migrations/incoming$`),
      methods: {
        POST: async (c: Call) => {
          const b = await c.body(prepareRequest);
          const n = b.network;
          const network = n
            ? {
                net: {
                  ip: n.ip,
                  prefixLength: n.prefixLength,
                  mac: n.mac,
                  ...(n.gateway !== undefined ? { gateway: n.gateway } : {}),
                },
                locked: n.locked,
              }
            : undefined;
          return {
            status: 200,
            json: await needIncoming().prepare(b.id, b.name, network, b.image, b.finalPhase),
          };
        },
      },
    },
    {
      pattern: new RegExp(`^/${v}/migrations/incoming/${id}/restore$`),
      methods: {
        POST: async (c: Call) => {
          const b = await c.body(incomingRestoreRequest);
          return { status: 200, json: await needIncoming().restore(first(c), b.name, b.lazy, b.state) };
        },
      },
    },
    {
      pattern: new RegExp(`^/${v}/migrations/incoming/${id}/prestage$`),
      methods: {
        POST: async (c: Call) => {
          const b = await c.body(prestageRequest);
          await needIncoming().prestage(first(c), Buffer.from(b.checkpoint, 'base64'));
          return { status: 200, json: {} };
        },
      },
    },
    {
      pattern: new RegExp(`^/${v}/migrations/incoming/${id}/state$`),
      methods: {
        POST: async (c: Call) => {
          const b = await c.body(statePartRequest);
          needIncoming().statePart(first(c), b.chunks);
          return { status: 200, json: {} };
        },
      },
    },
    {
      pattern: new RegExp(`^/${v}/migrations/incoming/${id}/quiesce$`),
      methods: {
        POST: async (c: Call) => {
          const b = await c.body(quiesceRequest);
          return { status: 200, json: await needIncoming().quiesce(first(c), b.base) };
        },
      },
    },
    {
      pattern: new RegExp(`^/${v}/migrations/incoming/${id}/fill$`),
      methods: {
        GET: async (c: Call) => ({ status: 200, json: await needIncoming().fill(first(c)) }),
      },
    },
    {
      pattern: new RegExp(`^/${v}/migrations/incoming/${id}$`),
      query: ['committed'],
      methods: {
        DELETE: async (c: Call) => {
          const committed = c.query.get('committed');
          if (committed !== 'true' && committed !== 'false')
            throw invalid('committed', 'expected true or false');
          return { status: 200, json: await needIncoming().finish(first(c), committed === 'true') };
        },
      },
    },
    {
      pattern: new RegExp(`^/${v}/migrations$`),
      methods: {
        GET: async () => ({ status: 200, json: { migrations: deps.engine.list() } }),
        POST: async (c: Call) => {
          const b = await c.body(migrateRequest);
          const peer = deps.connectPeer(b.to);
          const { id: mid } = await deps.engine.start({
            name: b.name,
            strategy: b.strategy ?? 'cold',
            peer,
            ...(b.maxDowntimeMs !== undefined ? { maxDowntimeMs: b.maxDowntimeMs } : {}),
            ...(b.maxRounds !== undefined ? { maxRounds: b.maxRounds } : {}),
            ...(b.predict !== undefined ? { predict: b.predict } : {}),
            ...(b.finalDump !== undefined ? { finalDump: b.finalDump } : {}),
            ...(b.faults !== undefined ? { faults: stripUndefined(b.faults) } : {}),
          });
          return { status: 202, json: { id: mid } };
        },
      },
    },
    {
      pattern: new RegExp(`^/${v}/migrations/${id}$`),
      methods: { GET: async (c: Call) => ({ status: 200, json: await deps.engine.get(first(c)) }) },
    },
  ];
}

function stripUndefined<T extends object>(o: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as {
    [K in keyof T]: Exclude<T[K], undefined>;
  };
}

function first(c: Call): string {
  const p = c.params[0];
  if (p === undefined) throw invalid('path', 'missing id');
  return p;
}
