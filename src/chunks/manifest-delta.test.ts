import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  MANIFEST_VERSION,
  PAGE_SIZE,
  type ChunkRef,
  type Manifest,
  type ManifestEntry,
} from '../core/chunks.js';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';
import { digestOf } from './hash.js';
import { parseManifest } from './manifest.js';
import {
  applyManifestDelta,
  encodeManifestDelta,
  flattenRefs,
  isManifestDelta,
  type DeltaOp,
  type ManifestDelta,
} from './manifest-delta.js';

/** A page reference whose digest is that of the small buffer `page:<n>` (distinct per n). */
function page(n: number | string): ChunkRef {
  return { digest: digestOf(Buffer.from(`page:${n}`)), size: PAGE_SIZE };
}

function zero(pages: number): ChunkRef {
  return { zero: pages * PAGE_SIZE };
}

function sizeOf(chunks: readonly ChunkRef[]): number {
  return chunks.reduce((n, c) => n + ('zero' in c ? c.zero : c.size), 0);
}

function file(path: string, chunks: ChunkRef[]): ManifestEntry {
  return { type: 'file', path, mode: 0o600, size: sizeOf(chunks), chunks };
}

function manifest(entries: ManifestEntry[], label = 'test'): Manifest {
  return { version: MANIFEST_VERSION, label, createdAt: '2025-01-02T03:04:05.000Z', entries };
}

/** Pages `from` … `to − 1`. */
function pages(from: number, to: number): ChunkRef[] {
  const out: ChunkRef[] = [];
  for (let i = from; i < to; i++) out.push(page(i));
  return out;
}

/** Encodes `m` against `base`, sends the delta through JSON, expands and validates it. */
function roundTrip(m: Manifest, base: Manifest): { delta: ManifestDelta; back: Manifest } {
  const delta = encodeManifestDelta(m, base, 'base-session');
  const wire: unknown = JSON.parse(JSON.stringify(delta));
  const back = parseManifest(applyManifestDelta(wire, parseManifest(JSON.parse(JSON.stringify(base)))));
  return { delta, back };
}

function opsOf(delta: ManifestDelta, i: number): DeltaOp[] {
  const e = delta.entries[i];
  assert.ok(e !== undefined && 'delta' in e, `entry ${i} is a delta entry`);
  return e.delta;
}

function isInvalid(pattern?: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError, String(err));
    assert.equal(err.code, ErrorCode.ManifestInvalid);
    if (pattern) assert.match(err.message, pattern);
    return true;
  };
}

describe('manifest delta round trip', () => {
  const base = manifest([
    { type: 'dir', path: 'memory', mode: 0o755 },
    file('memory/1', pages(0, 200)),
    file('memory/2', [...pages(1000, 1050), zero(3), ...pages(1050, 1100)]),
  ]);

  it('gives back a manifest identical to the base, as one copy per file', () => {
    const m = structuredClone(base);
    m.label = 'round-2';
    m.createdAt = '2025-01-02T03:04:06.000Z';
    const { delta, back } = roundTrip(m, base);
    assert.deepEqual(back, m);
    assert.equal(delta.base, 'base-session');
    assert.equal(delta.label, 'round-2');
    assert.deepEqual(opsOf(delta, 1), [[0, 200]]);
    assert.deepEqual(opsOf(delta, 2), [[200, 101]]);
    assert.deepEqual(delta.entries[0], base.entries[0]);
  });

  it('gives back a manifest with a few pages changed in the middle', () => {
    const chunks = pages(0, 200);
    chunks[50] = page('new-50');
    chunks[51] = page('new-51');
    chunks[120] = page('new-120');
    const m = manifest([
      base.entries[0] as ManifestEntry,
      file('memory/1', chunks),
      base.entries[2] as ManifestEntry,
    ]);
    const { delta, back } = roundTrip(m, base);
    assert.deepEqual(back, m);
    assert.deepEqual(opsOf(delta, 1), [
      [0, 50],
      page('new-50'),
      page('new-51'),
      [52, 68],
      page('new-120'),
      [121, 79],
    ]);
  });

  it('gives back a manifest after insertions and deletions that shift positions', () => {
    const chunks = [
      page('head'), // inserted before everything
      ...pages(0, 10),
      ...pages(30, 60), // 10 … 29 deleted
      page('mid-a'),
      page('mid-b'),
      ...pages(60, 190), // inserted pages shift the rest
      ...pages(1000, 1010), // pages of the other file of the base
      // 190 … 199 deleted at the end
    ];
    const m = manifest([file('memory/1', chunks), file('memory/3', pages(1040, 1060))]);
    const { delta, back } = roundTrip(m, base);
    assert.deepEqual(back, m);
    assert.deepEqual(opsOf(delta, 0), [
      page('head'),
      [0, 10],
      [30, 30],
      page('mid-a'),
      page('mid-b'),
      [60, 130],
      [200, 10],
    ]);
    // A run over the base's zero run stops at the zero (the base continues with the zero run).
    assert.deepEqual(opsOf(delta, 1), [
      [240, 10],
      [251, 10],
    ]);
  });

  it('copies moved content even where zero runs line up by chance (no literal for a moved page)', () => {
    // Zero runs every 10 references; the new manifest is the base shifted by 10 references, with
    // one page changed: each zero run then lies where another one did, by chance.
    const striped: ChunkRef[] = [];
    for (let i = 0; i < 300; i++) striped.push(i % 10 === 9 ? zero(1) : page(`s${i}`));
    const b = manifest([file('memory/1', striped)]);
    const head = pages(5000, 5010);
    const moved = [...head, ...striped];
    moved[45] = page('changed');
    const m = manifest([file('memory/1', moved)]);
    const { delta, back } = roundTrip(m, b);
    assert.deepEqual(back, m);
    const literals = opsOf(delta, 0).filter((op) => !Array.isArray(op));
    assert.deepEqual(literals, [...head, page('changed')]);
  });

  it('gives back zero runs of various sizes', () => {
    const zeroBase = manifest([
      file('a', [zero(1), page(1), zero(2), page(2), zero(16), page(3), zero(1)]),
      file('b', [zero(300)]),
    ]);
    const m = manifest([
      file('a', [zero(1), page(1), zero(2), page(2), zero(16), page(3), zero(1)]),
      file('b', [zero(2), page(1), zero(5), zero(1), page(9), zero(300), zero(1), zero(1)]),
      file('c', [zero(16)]),
    ]);
    const { delta, back } = roundTrip(m, zeroBase);
    assert.deepEqual(back, m);
    assert.deepEqual(opsOf(delta, 0), [[0, 7]]);
    // zero(2) then page(1) is not a run of the base (zero(1) comes before page(1) there).
    assert.deepEqual(opsOf(delta, 1), [[2, 1], [1, 1], zero(5), [0, 1], page(9), [7, 1], [0, 1], [0, 1]]);
    assert.deepEqual(opsOf(delta, 2), [[4, 1]]);
  });

  it('gives back manifests over a base with duplicate digests', () => {
    const A = page('A');
    const B = page('B');
    const C = page('C');
    const dupBase = manifest([file('m', [A, B, A, A, C, A, B])]);
    for (const chunks of [
      [A, B, A, A, C, A, B],
      [A, A, A, A],
      [B, A, A, C, A, B, A, B],
      [C, C, C, B, B],
      [A, page('new'), A, B, A, A, C],
    ]) {
      const m = manifest([file('m', chunks)]);
      const { delta, back } = roundTrip(m, dupBase);
      assert.deepEqual(back, m);
      for (const op of opsOf(delta, 0)) {
        if (Array.isArray(op))
          assert.ok(op[0] >= 0 && op[0] + op[1] <= 7, `copy ${JSON.stringify(op)} in the base`);
      }
    }
  });

  it('gives back non-file entries, inline and empty files unchanged', () => {
    const entries: ManifestEntry[] = [
      { type: 'dir', path: 'etc', mode: 0o755 },
      { type: 'dir', path: 'a/b/c', mode: 0o1777 },
      { type: 'symlink', path: 'etc/localtime', target: '/usr/share/zoneinfo/UTC' },
      {
        type: 'file',
        path: 'etc/hosts',
        mode: 0o644,
        size: 5,
        inline: Buffer.from('hello').toString('base64'),
      },
      { type: 'file', path: 'empty', mode: 0o644, size: 0, chunks: [] },
      file('pages.img', [...pages(5, 20), page('x')]),
    ];
    const m = manifest(entries);
    const { delta, back } = roundTrip(m, base);
    assert.deepEqual(back, m);
    for (let i = 0; i < 4; i++) assert.deepEqual(delta.entries[i], entries[i]);
    assert.deepEqual(opsOf(delta, 4), []);
    // Against an empty base (no chunk references at all) everything is literal.
    const fromEmpty = roundTrip(m, manifest([]));
    assert.deepEqual(fromEmpty.back, m);
    assert.deepEqual(opsOf(fromEmpty.delta, 5), [...pages(5, 20), page('x')]);
  });

  it('encodes 3 changed pages of a 10 000-page file in a few ops and a small fraction of the JSON', () => {
    const big = manifest([file('memory/1', pages(0, 10_000))]);
    const chunks = pages(0, 10_000);
    for (const i of [2500, 5000, 7500]) chunks[i] = page(`changed-${i}`);
    const m = manifest([file('memory/1', chunks)]);
    const { delta, back } = roundTrip(m, big);
    assert.deepEqual(back, m);
    const ops = opsOf(delta, 0);
    assert.ok(ops.length <= 10, `${ops.length} ops`);
    assert.equal(ops.filter((op) => !Array.isArray(op)).length, 3);
    const deltaBytes = JSON.stringify(delta).length;
    const fullBytes = JSON.stringify(m).length;
    assert.ok(deltaBytes < 0.05 * fullBytes, `delta ${deltaBytes} bytes, full ${fullBytes} bytes`);
  });

  it('numbers the base references in manifest order over all files', () => {
    assert.equal(flattenRefs(base).length, 301);
    assert.deepEqual(flattenRefs(base)[250], zero(3));
    assert.deepEqual(flattenRefs(manifest([{ type: 'dir', path: 'd', mode: 0o755 }])), []);
  });
});

describe('applyManifestDelta rejects', () => {
  const base = manifest([file('f', pages(0, 10))]);
  const wrap = (delta: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    version: MANIFEST_VERSION,
    label: 'x',
    createdAt: '2025-01-02T03:04:05.000Z',
    base: 'b',
    entries: [{ type: 'file', path: 'f', mode: 0o600, size: 10 * PAGE_SIZE, delta }],
    ...extra,
  });

  it('accepts a well-formed delta (control)', () => {
    const v = applyManifestDelta(wrap([[0, 5], page(5), [6, 4]]), base);
    assert.deepEqual(parseManifest(v), manifest([file('f', pages(0, 10))], 'x'));
  });

  it('copies outside the base', () => {
    for (const op of [
      [0, 11],
      [10, 1],
      [9, 2],
      [-1, 1],
      [-1, 2],
      [Number.MAX_SAFE_INTEGER, 1],
    ]) {
      assert.throws(
        () => applyManifestDelta(wrap([op]), base),
        isInvalid(/outside the base/),
        JSON.stringify(op),
      );
    }
  });

  it('negative, non-integer, zero or malformed counts and starts', () => {
    for (const op of [
      [0, -1],
      [0, 0],
      [0, 1.5],
      [0.5, 1],
      [0, Number.NaN],
      [0, Infinity],
      [0, '1'],
      ['0', 1],
      [0, null],
      [0],
      [],
      [0, 1, 2],
    ]) {
      assert.throws(() => applyManifestDelta(wrap([op]), base), isInvalid(), JSON.stringify(op));
    }
  });

  it('a delta that is not an array', () => {
    for (const d of [{}, 'x', 1, null, { 0: [0, 10], length: 1 }]) {
      assert.throws(
        () => applyManifestDelta(wrap(d), base),
        isInvalid(/delta must be an array/),
        JSON.stringify(d),
      );
    }
  });

  it('more references than maxChunkRefs, by copies or literals', () => {
    assert.throws(
      () => applyManifestDelta(wrap([[0, 10]]), base, 9),
      isInvalid(/more than 9 chunk references/),
    );
    assert.throws(
      () => applyManifestDelta(wrap([[0, 5], page(5), [6, 4]]), base, 9),
      isInvalid(/more than 9 chunk references/),
    );
    assert.throws(
      () => applyManifestDelta(wrap([page(0), page(1), page(2)]), base, 2),
      isInvalid(/more than 2 chunk references/),
    );
    // Counted over all entries together.
    const two = wrap([[0, 6]]);
    (two['entries'] as unknown[]).push({
      type: 'file',
      path: 'g',
      mode: 0o600,
      size: 6 * PAGE_SIZE,
      delta: [[0, 6]],
    });
    assert.throws(() => applyManifestDelta(two, base, 11), isInvalid(/more than 11 chunk references/));
    assert.doesNotThrow(() => applyManifestDelta(two, base, 12));
    assert.doesNotThrow(() => applyManifestDelta(wrap([[0, 10]]), base, 10));
  });

  it('values that are not objects or have no entries array', () => {
    for (const v of [null, undefined, 1, 'x', true, [], [wrap([])]]) {
      assert.throws(() => applyManifestDelta(v, base), isInvalid(/not an object/), String(v));
    }
    assert.throws(
      () => applyManifestDelta(wrap([], { entries: {} }), base),
      isInvalid(/entries must be an array/),
    );
    assert.throws(() => applyManifestDelta({ base: 'b' }, base), isInvalid(/entries must be an array/));
  });

  it('leaves literal references and other fields to parseManifest', () => {
    const v = applyManifestDelta(wrap([{ digest: 'sha256:nothex', size: PAGE_SIZE }]), base);
    assert.throws(() => parseManifest(v), isInvalid());
    // A copy that does not cover the entry's size is caught by parseManifest too.
    const short = applyManifestDelta(wrap([[0, 9]]), base);
    assert.throws(() => parseManifest(short), isInvalid(/cover/));
    // `base` is dropped: the expanded value has only manifest fields.
    assert.equal((applyManifestDelta(wrap([[0, 10]]), base) as Record<string, unknown>)['base'], undefined);
  });
});

describe('isManifestDelta', () => {
  it('is true only for objects with a string base', () => {
    assert.equal(isManifestDelta({ base: 's.r0' }), true);
    assert.equal(isManifestDelta({ base: '' }), true);
    assert.equal(isManifestDelta(encodeManifestDelta(manifest([]), manifest([]), 'b')), true);
    for (const v of [
      null,
      undefined,
      'base',
      1,
      [],
      ['base'],
      {},
      { base: 1 },
      { base: null },
      { base: ['x'] },
      { base: { name: 'x' } },
      manifest([file('f', pages(0, 2))]),
    ]) {
      assert.equal(isManifestDelta(v), false, JSON.stringify(v));
    }
  });
});
