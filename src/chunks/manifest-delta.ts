/**
 * A manifest written against a base manifest the receiver already holds: each file's chunk
 * list becomes copies of runs of the base's chunk references plus literal references. A
 * memory image of 256 MiB is 65 536 page references (megabytes of JSON, incompressible
 * digests); against the previous pre-copy round it is a few runs, so the final phase of a
 * pre-copy migration offers kilobytes instead of megabytes.
 *
 * The base's references are numbered in manifest order over all its file entries. A delta
 * is plain JSON: the manifest's fields, `base` (the receiver's name for the base), and file
 * entries whose `chunks` is replaced by `delta`: `[start, count]` copies base references
 * start … start+count−1, an object is a literal ChunkRef. Expanding gives back exactly the
 * encoded manifest; `parseManifest` then validates it as any other.
 */
import type { ChunkRef, Manifest, ManifestEntry } from '../core/chunks.js';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';
import { DEFAULT_MANIFEST_LIMITS } from './manifest.js';

/** Copy `count` base references from `start`, or one literal reference. */
export type DeltaOp = [start: number, count: number] | ChunkRef;

/** A manifest encoded against a base (see the module comment). */
export interface ManifestDelta {
  version: Manifest['version'];
  label: string;
  createdAt: string;
  /** The receiver's name of the base manifest (a completed transfer session). */
  base: string;
  entries: (
    ManifestEntry | (Omit<Extract<ManifestEntry, { type: 'file' }>, 'chunks'> & { delta: DeltaOp[] })
  )[];
}

/**
 * A reference that differs from the base's at its position is taken as new content, without
 * indexing the whole base, when this many references after it lie exactly where they did
 * (changed pages are mostly scattered and few).
 */
const REALIGN_MATCH = 4;

function keyOf(r: ChunkRef): string {
  return 'zero' in r ? `z${r.zero}` : r.digest;
}

/** The base's chunk references in order, over all file entries. */
export function flattenRefs(m: Manifest): ChunkRef[] {
  const out: ChunkRef[] = [];
  for (const e of m.entries) if (e.type === 'file' && e.chunks) for (const c of e.chunks) out.push(c);
  return out;
}

/** Encodes `m` against `base` (named `baseName` on the receiver). */
export function encodeManifestDelta(m: Manifest, base: Manifest, baseName: string): ManifestDelta {
  const refs = flattenRefs(base);
  const keys = refs.map(keyOf);
  // Where each reference first appears in the base, made only if needed: a round's image
  // mostly lies where the last one did, so the same position is tried first.
  let first: Map<string, number> | undefined;
  /** `k`, at `guess` in `m`'s chunk list `list` (index `at` there): its position in the base. */
  const find = (k: string, guess: number, list: readonly ChunkRef[], at: number): number | undefined => {
    if (keys[guess] === k) return guess;
    // Changed here while the next references lie where they did: new content, not moved. Only
    // distinct page digests count as lying where they did (a zero run of the same length, or a
    // repeated page, matches by chance in a region that moved).
    if (at + REALIGN_MATCH < list.length) {
      let d = 1;
      for (; d <= REALIGN_MATCH; d++) {
        const c = list[at + d] as ChunkRef;
        if ('zero' in c || keys[guess + d] !== c.digest) break;
      }
      if (d > REALIGN_MATCH) return undefined;
    }
    if (first === undefined) {
      const made = new Map<string, number>();
      keys.forEach((key, i) => {
        if (!made.has(key)) made.set(key, i);
      });
      first = made;
    }
    return first.get(k);
  };
  let pos = 0;
  const entries: ManifestDelta['entries'] = m.entries.map((e) => {
    if (e.type !== 'file' || e.chunks === undefined) return e;
    const ops: DeltaOp[] = [];
    let run: [number, number] | undefined;
    const list = e.chunks;
    for (let i = 0; i < list.length; i++) {
      const c = list[i] as ChunkRef;
      const k = keyOf(c);
      const here = pos++;
      if (run !== undefined && keys[run[0] + run[1]] === k) {
        run[1]++;
        continue;
      }
      const at = find(k, here, list, i);
      if (at === undefined) {
        run = undefined;
        ops.push(c);
      } else {
        run = [at, 1];
        ops.push(run);
      }
    }
    const { chunks: _chunks, ...rest } = e;
    return { ...rest, delta: ops };
  });
  return { version: m.version, label: m.label, createdAt: m.createdAt, base: baseName, entries };
}

function bad(problem: string): InvalidArgumentError {
  return new InvalidArgumentError(ErrorCode.ManifestInvalid, `invalid manifest delta: ${problem}`);
}

/** Whether a parsed OFFER is a delta (names a base). */
export function isManifestDelta(v: unknown): v is { base: string } {
  return typeof v === 'object' && v !== null && typeof (v as { base?: unknown }).base === 'string';
}

/**
 * Expands a delta (as parsed from JSON, untrusted) against `base` into a manifest-shaped value
 * for `parseManifest`. Throws ManifestInvalid on malformed ops, copies outside the base, or
 * more than `maxChunkRefs` references.
 */
export function applyManifestDelta(
  value: unknown,
  base: Manifest,
  maxChunkRefs: number = DEFAULT_MANIFEST_LIMITS.maxChunkRefs,
): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('not an object');
  const { base: _base, entries, ...rest } = value as Record<string, unknown>;
  if (!Array.isArray(entries)) throw bad('entries must be an array');
  const refs = flattenRefs(base);
  let budget = maxChunkRefs;
  const out = entries.map((e: unknown, i) => {
    if (typeof e !== 'object' || e === null || !('delta' in e)) return e;
    const { delta, ...entry } = e as Record<string, unknown>;
    if (!Array.isArray(delta)) throw bad(`entries[${i}].delta must be an array`);
    const chunks: unknown[] = [];
    for (const op of delta) {
      if (Array.isArray(op)) {
        const [start, count] = op as unknown[];
        if (
          op.length !== 2 ||
          !Number.isSafeInteger(start) ||
          !Number.isSafeInteger(count) ||
          (start as number) < 0 ||
          (count as number) < 1 ||
          (start as number) + (count as number) > refs.length
        ) {
          throw bad(`entries[${i}].delta has a copy outside the base (${refs.length} references)`);
        }
        budget -= count as number;
        if (budget < 0) throw bad(`more than ${maxChunkRefs} chunk references`);
        // The base's own (validated, read-only) references: parseManifest takes them as they are.
        for (let j = start as number; j < (start as number) + (count as number); j++) chunks.push(refs[j]);
      } else {
        if (--budget < 0) throw bad(`more than ${maxChunkRefs} chunk references`);
        chunks.push(op);
      }
    }
    return { ...entry, chunks };
  });
  return { ...rest, entries: out };
}
