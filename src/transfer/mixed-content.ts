/**
 * Seeded synthetic page content for codec measurements, tests and benchmarks: 4 KiB pages
 * that are zero, a short pattern repeated, random (compressed or encrypted data), text-like
 * (words and newlines), or heap-like (pointers into one region, small integers, zeros).
 */

/** A seeded 32-bit generator (mulberry32): the same seed gives the same bytes everywhere. */
export function seededRandom(seed: number): () => number {
  let s = seed | 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  };
}

export type PageKind = 'zero' | 'repeat' | 'random' | 'text' | 'heap';
export const PAGE_KINDS: readonly PageKind[] = ['zero', 'repeat', 'random', 'text', 'heap'];

/** Share of each kind in `mixedPages` (sums to 1). */
export const MIXED_WEIGHTS: Readonly<Record<PageKind, number>> = {
  zero: 0.2,
  repeat: 0.15,
  random: 0.2,
  text: 0.2,
  heap: 0.25,
};

const PAGE = 4096;
const WORDS = (
  'the of and to in is that for it as was with be by on not he this are or his from at which but ' +
  'have an they you were her she there been one all we their has would when if so no out up into ' +
  'do time can only other new some could than first then them now my over such error config ' +
  'value request session container memory page chunk manifest'
).split(' ');

/** Fills `p` (one page) with content of `kind`. */
export function fillPage(p: Buffer, kind: PageKind, rnd: () => number): void {
  switch (kind) {
    case 'zero':
      p.fill(0);
      return;
    case 'repeat': {
      const len = 8 + (rnd() % 56);
      for (let i = 0; i < len; i++) p[i] = rnd() & 255;
      for (let i = len; i < p.length; i++) p[i] = p[i - len] as number;
      return;
    }
    case 'random':
      for (let i = 0; i + 4 <= p.length; i += 4) p.writeUInt32LE(rnd(), i);
      return;
    case 'text': {
      let o = 0;
      while (o < p.length) {
        const w = `${WORDS[rnd() % WORDS.length] as string}${rnd() % 7 === 0 ? '\n' : ' '}`;
        o += p.write(w, o);
      }
      return;
    }
    case 'heap': {
      p.fill(0);
      const base = 0x7f3a_0000_0000 + (rnd() % 4096) * 4096;
      for (let i = 0; i + 8 <= p.length; i += 8) {
        const r = rnd() % 4;
        if (r === 0) p.writeBigUInt64LE(BigInt(base + (rnd() % 65536) * 16), i);
        else if (r === 1) p.writeUInt32LE(rnd() % 1000, i);
        else if (r === 2) p.writeUInt32LE(rnd(), i);
      }
      return;
    }
  }
}

/** `bytes` (a multiple of 4 KiB) of pages of one kind, or mixed by MIXED_WEIGHTS when kind is 'mixed'. */
export function mixedPages(bytes: number, seed: number, kind: PageKind | 'mixed' = 'mixed'): Buffer {
  const rnd = seededRandom(seed);
  const out = Buffer.alloc(bytes);
  for (let off = 0; off + PAGE <= bytes; off += PAGE) {
    let k: PageKind = 'heap';
    if (kind === 'mixed') {
      let r = (rnd() % 10_000) / 10_000;
      for (const candidate of PAGE_KINDS) {
        r -= MIXED_WEIGHTS[candidate];
        if (r < 0) {
          k = candidate;
          break;
        }
      }
    } else {
      k = kind;
    }
    fillPage(out.subarray(off, off + PAGE), k, rnd);
  }
  return out;
}
