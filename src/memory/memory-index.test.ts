import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MANIFEST_VERSION, PAGE_SIZE, type Manifest } from '../core/chunks.js';
import { ErrorCode, GodwitError } from '../core/errors.js';
import {
  decodePageRuns,
  encodePageRuns,
  layeredLookup,
  memoryMapPath,
  memoryPath,
  ProcessPageIndex,
  readMemoryIndex,
} from './memory-index.js';

const D = (c: string): string => `sha256:${c.repeat(64)}`;

function manifest(
  vpid: number,
  runs: { vaddr: number; nrPages: number }[],
  refs: Manifest['entries'],
): Manifest {
  const map = encodePageRuns(runs);
  return {
    version: MANIFEST_VERSION,
    label: 't',
    createdAt: new Date(0).toISOString(),
    entries: [
      ...refs,
      {
        type: 'file',
        path: memoryMapPath(vpid),
        mode: 0o600,
        size: map.length,
        inline: map.toString('base64'),
      },
    ],
  };
}

const inline = async (e: { inline?: string }): Promise<Buffer> => Buffer.from(e.inline ?? '', 'base64');

describe('memory index', () => {
  it('round-trips page runs', () => {
    const runs = [
      { vaddr: 0x1000, nrPages: 2 },
      { vaddr: 0x7fff_ffff_f000, nrPages: 1 },
    ];
    assert.deepEqual(decodePageRuns(encodePageRuns(runs)), runs);
    assert.deepEqual(decodePageRuns(Buffer.alloc(0)), []);
  });

  it('rejects runs that are torn, unaligned, overlapping or empty', () => {
    const bad = [
      Buffer.alloc(15),
      encodePageRuns([{ vaddr: 0x1001, nrPages: 1 }]),
      encodePageRuns([
        { vaddr: 0x1000, nrPages: 2 },
        { vaddr: 0x2000, nrPages: 1 },
      ]),
      encodePageRuns([{ vaddr: 0x1000, nrPages: 0 }]),
    ];
    for (const b of bad) {
      assert.throws(
        () => decodePageRuns(b),
        (e: unknown) => e instanceof GodwitError && e.code === ErrorCode.CheckpointCorrupt,
      );
    }
  });

  it('names each page of a round manifest by its address, zero runs included', async () => {
    const m = manifest(
      7,
      [
        { vaddr: 0x10000, nrPages: 2 },
        { vaddr: 0x20000, nrPages: 3 },
      ],
      [
        {
          type: 'file',
          path: memoryPath(7),
          mode: 0o600,
          size: 5 * PAGE_SIZE,
          chunks: [
            { digest: D('a'), size: PAGE_SIZE },
            { zero: 2 * PAGE_SIZE },
            { digest: D('b'), size: PAGE_SIZE },
            { digest: D('a'), size: PAGE_SIZE },
          ],
        },
      ],
    );
    const idx = (await readMemoryIndex(m, inline)).get(7);
    assert.ok(idx);
    assert.equal(idx.size, 5);
    assert.equal(idx.lookup(0x10000), D('a'));
    assert.equal(idx.lookup(0x11000), 'zero');
    assert.equal(idx.lookup(0x20000), 'zero');
    assert.equal(idx.lookup(0x21000), D('b'));
    assert.equal(idx.lookup(0x22000), D('a'));
    assert.equal(idx.lookup(0x12000), undefined);
    assert.equal(idx.lookup(0x23000), undefined);
    assert.equal(idx.lookup(0), undefined);
  });

  it('refuses a map that does not match its memory file', async () => {
    const m = manifest(
      3,
      [{ vaddr: 0x10000, nrPages: 2 }],
      [
        {
          type: 'file',
          path: memoryPath(3),
          mode: 0o600,
          size: PAGE_SIZE,
          chunks: [{ digest: D('c'), size: PAGE_SIZE }],
        },
      ],
    );
    await assert.rejects(
      readMemoryIndex(m, inline),
      (e: unknown) => e instanceof GodwitError && e.code === ErrorCode.CheckpointCorrupt,
    );
  });

  it('leaves out processes without a map', async () => {
    const m: Manifest = {
      version: MANIFEST_VERSION,
      label: 't',
      createdAt: new Date(0).toISOString(),
      entries: [{ type: 'file', path: memoryPath(1), mode: 0o600, size: 0, chunks: [] }],
    };
    assert.equal((await readMemoryIndex(m, inline)).size, 0);
  });

  it('layeredLookup: a closing pass over the round names the pages it holds, the latest pass first', () => {
    const A = 0x400000;
    const round = new Map([
      [7, new ProcessPageIndex([{ vaddr: A, nrPages: 4 }], [D('a'), D('b'), 'zero', D('c')])],
    ]);
    const pass1 = new Map([
      [7, new ProcessPageIndex([{ vaddr: A + PAGE_SIZE, nrPages: 2 }], [D('d'), D('e')])],
    ]);
    const pass2 = new Map([[7, new ProcessPageIndex([{ vaddr: A + 2 * PAGE_SIZE, nrPages: 1 }], ['zero'])]]);
    const lookup = layeredLookup([pass2, pass1, round]);
    assert.equal(lookup(7, A), D('a'), 'only the round names page 0');
    assert.equal(lookup(7, A + PAGE_SIZE), D('d'), 'pass 1 over the round');
    assert.equal(lookup(7, A + 2 * PAGE_SIZE), 'zero', 'pass 2 over pass 1');
    assert.equal(lookup(7, A + 3 * PAGE_SIZE), D('c'));
    assert.equal(lookup(7, A + 4 * PAGE_SIZE), undefined, 'no layer names it');
    assert.equal(lookup(8, A), undefined, 'another process');
    assert.equal(layeredLookup([round])(7, A + PAGE_SIZE), D('b'), 'the round alone');
  });
});
