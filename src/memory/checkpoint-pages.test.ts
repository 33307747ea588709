import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { PAGE_SIZE, type Digest, type Manifest, type ManifestEntry } from '../core/chunks.js';
import { ErrorCode, GodwitError } from '../core/errors.js';
import { digestOf } from '../chunks/hash.js';
import { PE_LAZY, PE_PRESENT } from './criu-pagemap.js';
import { checkpointPages } from './checkpoint-pages.js';
import { newEntry, pagemapHead, pagemapImage } from './pagemap-testing.js';

/** A manifest of one process's images: its pagemap and its pages file, cut into page chunks. */
function checkpoint(entries: Buffer[], pages: Buffer): { manifest: Manifest; chunks: Map<Digest, Buffer> } {
  const chunks = new Map<Digest, Buffer>();
  const refs: NonNullable<Extract<ManifestEntry, { type: 'file' }>['chunks']> = [];
  for (let o = 0; o < pages.length; o += PAGE_SIZE) {
    const page = pages.subarray(o, o + PAGE_SIZE);
    if (page.every((b) => b === 0)) refs.push({ zero: PAGE_SIZE });
    else {
      const d = digestOf(page);
      chunks.set(d, Buffer.from(page));
      refs.push({ digest: d, size: PAGE_SIZE });
    }
  }
  const map = pagemapImage([pagemapHead(3), ...entries]);
  const manifest: Manifest = {
    version: 1,
    label: 'checkpoint:t',
    createdAt: new Date(0).toISOString(),
    entries: [
      { type: 'dir', path: 'criu', mode: 0o700 },
      {
        type: 'file',
        path: 'criu/pagemap-7.img',
        mode: 0o600,
        size: map.length,
        inline: map.toString('base64'),
      },
      { type: 'file', path: 'criu/pages-3.img', mode: 0o600, size: pages.length, chunks: refs },
    ],
  };
  return { manifest, chunks };
}

const get =
  (chunks: Map<Digest, Buffer>) =>
  async (d: Digest): Promise<Buffer> => {
    const b = chunks.get(d);
    if (!b) throw new Error(`no chunk ${d}`);
    return b;
  };

describe('checkpointPages', () => {
  const A = 0x400000;
  const B = 0x7f0000000000;
  // 2 non-lazy pages at A (file pages 0–1), then 3 lazy pages at B (2–4), one of them zero.
  const pages = Buffer.concat([
    randomBytes(2 * PAGE_SIZE),
    randomBytes(PAGE_SIZE),
    Buffer.alloc(PAGE_SIZE),
    randomBytes(PAGE_SIZE),
  ]);
  const entries = [
    newEntry(A, 2, PE_PRESENT),
    newEntry(B, 3, PE_PRESENT | PE_LAZY),
    newEntry(B + 0x10000, 4, PE_LAZY),
  ];

  it('names the lazy pages, their holes in the pages file, and reads them from the chunks', async () => {
    const { manifest, chunks } = checkpoint(entries, pages);
    const cp = await checkpointPages(manifest, get(chunks));
    assert.ok(cp);
    assert.equal(cp.pages, 3);
    assert.deepEqual(cp.runs, [{ vpid: 7, vaddr: B, nrPages: 3 }]);
    assert.deepEqual(cp.holes('criu/pages-3.img'), [{ offset: 2 * PAGE_SIZE, length: 3 * PAGE_SIZE }]);
    assert.equal(cp.holes('criu/pagemap-7.img'), undefined);
    assert.deepEqual(await cp.read(7, B, 3), pages.subarray(2 * PAGE_SIZE));
    assert.deepEqual(await cp.read(7, B + PAGE_SIZE, 1), Buffer.alloc(PAGE_SIZE));
  });

  it('answers undefined for pages that are not lazy pages of the manifest', async () => {
    const { manifest, chunks } = checkpoint(entries, pages);
    const cp = await checkpointPages(manifest, get(chunks));
    assert.equal(await cp?.read(7, A, 1), undefined, 'a non-lazy page is in the file');
    assert.equal(await cp?.read(7, B + 2 * PAGE_SIZE, 2), undefined, 'past the run');
    assert.equal(await cp?.read(8, B, 1), undefined, 'another process');
  });

  it('is undefined without lazy pages, and refuses a pages file shorter than its pagemap', async () => {
    const plain = checkpoint([newEntry(A, 2, PE_PRESENT)], pages.subarray(0, 2 * PAGE_SIZE));
    assert.equal(await checkpointPages(plain.manifest, get(plain.chunks)), undefined);
    const short = checkpoint(entries, pages.subarray(0, 4 * PAGE_SIZE));
    await assert.rejects(checkpointPages(short.manifest, get(short.chunks)), (err: unknown) => {
      assert.ok(err instanceof GodwitError);
      assert.equal(err.code, ErrorCode.CheckpointCorrupt);
      return true;
    });
  });
});
