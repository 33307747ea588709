import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';
import {
  DEFAULT_DECAY,
  DEFAULT_HOLD_THRESHOLD,
  DecayedFrequencyPredictor,
  MIN_ROUNDS_BEFORE_HOLDING,
  NoPredictor,
  type DirtyPagePredictor,
} from './predictor.js';

/** mulberry32: a tiny seeded PRNG with uniform output in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PAGES = 8192;
const HOT = 1024;
const HOT_WRITE_P = 0.7;
const COLD_WRITE_P = 0.005;
const PRECOPY_ROUNDS = 5;

/** A hot-set workload: HOT random pages written with HOT_WRITE_P per round, the rest with COLD_WRITE_P. */
interface Workload {
  hot: Set<number>;
  /** dirty[r] for rounds 1..PRECOPY_ROUNDS, then the final interval at PRECOPY_ROUNDS + 1; dirty[0] = []. */
  dirty: number[][];
}

function hotSetWorkload(seed: number, intervals = PRECOPY_ROUNDS + 1): Workload {
  const rand = mulberry32(seed);
  const order = Array.from({ length: PAGES }, (_, i) => i);
  for (let i = PAGES - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  const hot = new Set(order.slice(0, HOT));
  const dirty: number[][] = [[]];
  for (let r = 1; r <= intervals; r++) {
    const d: number[] = [];
    for (let i = 0; i < PAGES; i++) if (rand() < (hot.has(i) ? HOT_WRITE_P : COLD_WRITE_P)) d.push(i);
    // Any order is allowed; hand the predictor a shuffled list.
    for (let k = d.length - 1; k > 0; k--) {
      const j = Math.floor(rand() * (k + 1));
      [d[k], d[j]] = [d[j] as number, d[k] as number];
    }
    dirty.push(d);
  }
  return { hot, dirty };
}

interface PrecopyResult {
  /** Pages sent in rounds 1..PRECOPY_ROUNDS. */
  roundPages: number;
  /** Pages sent in the final phase: stale at the destination, or dirty in the final interval. */
  finalPages: Set<number>;
  heldPerRound: Set<number>[];
}

/**
 * Simulates pre-copy: round 0 sends every page; rounds 1..5 send their dirty pages minus the
 * held-back ones; the final phase sends what the destination lacks (held back and not sent
 * since) plus everything dirty in the final interval. `order` says whether holdBack is asked
 * before or after the round is observed.
 */
function simulate(pred: DirtyPagePredictor, w: Workload, order: 'before' | 'after'): PrecopyResult {
  const stale = new Uint8Array(PAGES);
  pred.observe({ dirty: [], scanned: PAGES });
  let roundPages = 0;
  const heldPerRound: Set<number>[] = [new Set()];
  for (let r = 1; r <= PRECOPY_ROUNDS; r++) {
    const d = w.dirty[r] as number[];
    let held: Set<number>;
    if (order === 'before') {
      held = pred.holdBack(d);
      pred.observe({ dirty: d, scanned: PAGES });
    } else {
      pred.observe({ dirty: d, scanned: PAGES });
      held = pred.holdBack([...d].reverse());
    }
    heldPerRound.push(held);
    for (const i of d) {
      if (held.has(i)) stale[i] = 1;
      else {
        stale[i] = 0;
        roundPages++;
      }
    }
  }
  const finalPages = new Set<number>(w.dirty[PRECOPY_ROUNDS + 1]);
  for (let i = 0; i < PAGES; i++) if (stale[i] === 1) finalPages.add(i);
  return { roundPages, finalPages, heldPerRound };
}

test('constants are as documented', () => {
  assert.equal(DEFAULT_DECAY, 0.5);
  assert.equal(DEFAULT_HOLD_THRESHOLD, 0.4);
  assert.equal(MIN_ROUNDS_BEFORE_HOLDING, 1);
});

test('holds back hot pages and sends cold ones once the workload has been seen', () => {
  const w = hotSetWorkload(1);
  const pred = new DecayedFrequencyPredictor();
  const { heldPerRound } = simulate(pred, w, 'before');
  assert.equal(pred.rounds, PRECOPY_ROUNDS + 1);
  assert.equal(heldPerRound[1]?.size, 0, 'round 1: only round 0 seen, which carries no dirty information');
  let [hotDirtyAll, hotHeldAll, coldDirtyAll, coldHeldAll] = [0, 0, 0, 0];
  for (let r = 2; r <= PRECOPY_ROUNDS; r++) {
    const d = w.dirty[r] as number[];
    const held = heldPerRound[r] as Set<number>;
    for (const i of held) assert.ok(d.includes(i), 'holds back only pages of the given round');
    const hotDirty = d.filter((i) => w.hot.has(i));
    const hotHeld = hotDirty.filter((i) => held.has(i)).length;
    // A hot page is held when it was written in the previous round (p = 0.7), or in enough rounds before.
    assert.ok(
      hotHeld >= 0.6 * hotDirty.length,
      `round ${r}: ${hotHeld} of ${hotDirty.length} hot dirty pages held`,
    );
    const coldDirty = d.filter((i) => !w.hot.has(i));
    hotDirtyAll += hotDirty.length;
    hotHeldAll += hotHeld;
    coldDirtyAll += coldDirty.length;
    coldHeldAll += coldDirty.filter((i) => held.has(i)).length;
  }
  assert.ok(
    hotHeldAll >= 0.65 * hotDirtyAll,
    `rounds 2-5: ${hotHeldAll} of ${hotDirtyAll} hot dirty pages held`,
  );
  assert.ok(
    coldHeldAll <= 0.05 * coldDirtyAll,
    `rounds 2-5: ${coldHeldAll} of ${coldDirtyAll} cold dirty pages held`,
  );
});

test('prediction sends ≥10% fewer pages than plain pre-copy without a larger final phase than the hot set', () => {
  for (const seed of [1, 2, 3, 42]) {
    const w = hotSetWorkload(seed);
    const plain = simulate(new NoPredictor(), w, 'before');
    const predicted = simulate(new DecayedFrequencyPredictor(), w, 'before');
    const plainTotal = plain.roundPages + plain.finalPages.size;
    const predictedTotal = predicted.roundPages + predicted.finalPages.size;
    assert.ok(
      predictedTotal <= 0.9 * plainTotal,
      `seed ${seed}: ${predictedTotal} pages sent with prediction vs ${plainTotal} without (rounds 1-5 + final)`,
    );
    assert.ok(
      PAGES + predictedTotal <= 0.9 * (PAGES + plainTotal),
      `seed ${seed}: still ≥10% fewer counting round 0's full copy`,
    );
    assert.ok(
      predicted.finalPages.size <= HOT,
      `seed ${seed}: final phase ${predicted.finalPages.size} pages with prediction, hot set ${HOT}`,
    );
    const extra = [...predicted.finalPages].filter((i) => !plain.finalPages.has(i));
    assert.ok(extra.length <= HOT, `seed ${seed}: the final phase grows by held-back pages only`);
  }
});

test('holdBack gives the same answer before and after the round is observed', () => {
  const w = hotSetWorkload(7);
  const before = simulate(new DecayedFrequencyPredictor(), w, 'before');
  const after = simulate(new DecayedFrequencyPredictor(), w, 'after');
  assert.deepEqual(after.heldPerRound, before.heldPerRound);
  assert.deepEqual(after.finalPages, before.finalPages);
});

test('holdBack does not change the model', () => {
  const w = hotSetWorkload(9);
  const pred = new DecayedFrequencyPredictor();
  pred.observe({ dirty: [], scanned: PAGES });
  for (let r = 1; r <= 3; r++) pred.observe({ dirty: w.dirty[r] as number[], scanned: PAGES });
  const scores = Array.from({ length: PAGES }, (_, i) => pred.score(i));
  const first = pred.holdBack(w.dirty[4] as number[]);
  assert.deepEqual(pred.holdBack(w.dirty[4] as number[]), first);
  assert.deepEqual(
    Array.from({ length: PAGES }, (_, i) => pred.score(i)),
    scores,
  );
  assert.equal(pred.rounds, 4);
});

test('scores follow the decay rule, stay in [0, 1], and the model grows with the indices', () => {
  const pred = new DecayedFrequencyPredictor({ decay: 0.75, threshold: 0.15 });
  pred.observe({ dirty: [], scanned: 10 });
  pred.observe({ dirty: [3, 5000], scanned: 10 });
  assert.equal(pred.score(3), 0.25);
  assert.equal(pred.score(5000), 0.25);
  assert.equal(pred.score(4), 0);
  pred.observe({ dirty: [3], scanned: 70_000 });
  assert.equal(pred.score(3), 0.75 * 0.25 + 0.25);
  assert.equal(pred.score(5000), 0.75 * 0.25);
  assert.equal(pred.score(69_999), 0);
  for (const i of [-1, 1.5, 70_000, 1e9, Number.NaN]) assert.equal(pred.score(i), 0);
  assert.deepEqual(pred.holdBack([3, 5000, 7, 1e9]), new Set([3, 5000]));
  let s = 0;
  for (let r = 0; r < 50; r++) {
    pred.observe({ dirty: [3], scanned: 70_000 });
    s = pred.score(3);
    assert.ok(s >= 0 && s <= 1);
  }
  assert.ok(s > 0.99);
});

test('nothing is held back before a round with dirty information has been observed', () => {
  const pred = new DecayedFrequencyPredictor({ threshold: 1e-9 });
  assert.equal(pred.holdBack([1, 2]).size, 0);
  pred.observe({ dirty: [], scanned: 4 });
  assert.equal(pred.holdBack([1, 2]).size, 0);
  pred.observe({ dirty: [1, 2], scanned: 4 });
  assert.equal(pred.holdBack([1, 2]).size, 0, 'the same set is taken as the observed round 1');
  assert.deepEqual(pred.holdBack([1, 2, 3]), new Set([1, 2]), 'round 2 is decided on round 1');
});

test('NoPredictor holds nothing back', () => {
  const w = hotSetWorkload(5);
  const pred = new NoPredictor();
  const { heldPerRound } = simulate(pred, w, 'before');
  assert.equal(pred.rounds, PRECOPY_ROUNDS + 1);
  for (const held of heldPerRound) assert.equal(held.size, 0);
  assert.equal(pred.score(0), 0);
});

test('invalid options throw InvalidArgumentError', () => {
  const invalid = (err: unknown): boolean =>
    err instanceof InvalidArgumentError && err.code === ErrorCode.InvalidFlag;
  for (const decay of [0, 1, -0.5, 1.5, Number.NaN]) {
    assert.throws(() => new DecayedFrequencyPredictor({ decay }), invalid, `decay ${decay}`);
  }
  for (const threshold of [0, -0.1, 1.01, Number.NaN]) {
    assert.throws(() => new DecayedFrequencyPredictor({ threshold }), invalid, `threshold ${threshold}`);
  }
  assert.equal(new DecayedFrequencyPredictor({ decay: 0.9, threshold: 1 }).threshold, 1);
  const pred = new DecayedFrequencyPredictor();
  assert.throws(() => pred.observe({ dirty: [-1], scanned: 4 }));
  assert.throws(() => pred.observe({ dirty: [], scanned: -1 }));
  assert.equal(pred.rounds, 0, 'a rejected observation leaves the model alone');
});
