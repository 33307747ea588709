import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BENCH_KINDS,
  cellKey,
  filterMatrix,
  isBaseline,
  memloadWorkload,
  namedMatrix,
  planRuns,
} from './matrix.js';

describe('namedMatrix', () => {
  it('quick: one memload workload on lan, edge and 4g, every kind, 3 reps', () => {
    const m = namedMatrix('quick');
    assert.deepEqual(
      m.cells.map((c) => c.link.name),
      ['lan', 'edge', '4g'],
    );
    assert.equal(m.reps, 3);
    assert.deepEqual(m.kinds, BENCH_KINDS);
    assert.ok(m.cells.every((c) => c.workload.id === 'memload-medium-hot'));
  });

  it('full: every workload on edge, the three links, no cell twice', () => {
    const m = namedMatrix('full');
    const edge = m.cells.filter((c) => c.link.name === 'edge').map((c) => c.workload.id);
    for (const w of ['idle', 'web', 'redis', 'memload-low-hot', 'memload-high-uniform'])
      assert.ok(edge.includes(w), w);
    assert.deepEqual([...new Set(m.cells.map((c) => c.link.name))].sort(), ['4g', 'edge', 'lan']);
    const keys = m.cells.map(cellKey);
    assert.equal(new Set(keys).size, keys.length);
  });
});

describe('memloadWorkload', () => {
  it('names the rate level and pattern; a hot set is a quarter of the memory', () => {
    const w = memloadWorkload('high', 'hotset', 64);
    assert.equal(w.id, 'memload-high-hot');
    assert.ok(w.type === 'memload' && w.hotMiB === 16 && w.dirtyMBps === 16);
  });
});

describe('planRuns', () => {
  it('alternates every kind within a repetition, rotated per repetition, link by link', () => {
    const m = filterMatrix(namedMatrix('quick', 3), {
      links: ['edge', 'lan'],
      kinds: ['cold', 'byhand', 'hybrid'],
    });
    const plan = planRuns(m);
    assert.equal(plan.length, 2 * 3 * 3);
    // link by link: all of lan first (matrix order), then edge
    assert.deepEqual([...new Set(plan.map((p) => p.cell.link.name))], ['lan', 'edge']);
    const lan = plan.filter((p) => p.cell.link.name === 'lan');
    assert.deepEqual(
      lan.map((p) => `${p.rep}:${p.kind}`),
      ['1:cold', '1:byhand', '1:hybrid', '2:byhand', '2:hybrid', '2:cold', '3:hybrid', '3:cold', '3:byhand'],
    );
    // godwit and baselines alternate
    assert.ok(isBaseline(lan[1]!.kind) && !isBaseline(lan[0]!.kind));
  });
});

describe('filterMatrix', () => {
  it('rejects a name the matrix does not have, with the ones it has', () => {
    assert.throws(
      () => filterMatrix(namedMatrix('quick'), { workloads: ['redis'] }),
      (e: Error & { hint?: string }) =>
        /redis is not in the quick matrix/.test(e.message) && /memload-medium-hot/.test(e.hint ?? ''),
    );
    assert.throws(() => filterMatrix(namedMatrix('quick'), { kinds: ['warp'] }), /warp/);
  });
});
