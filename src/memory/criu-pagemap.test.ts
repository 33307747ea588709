import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PAGE_SIZE } from '../core/chunks.js';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';
import {
  IMG_COMMON_MAGIC,
  PAGEMAP_MAGIC,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
  parsePagemapImage,
  readPagesLayouts,
} from './criu-pagemap.js';
import {
  key,
  newEntry,
  oldEntry,
  pagemapHead,
  pagemapImage,
  u32,
  varint,
  vField,
} from './pagemap-testing.js';

// ---- encoders for malformed images (the well-formed ones come from pagemap-testing) ----

const bytesField = (field: number, data: Buffer): Buffer =>
  Buffer.concat([key(field, 2), varint(data.length), data]);
const fixed64Field = (field: number, data: Buffer): Buffer => {
  assert.equal(data.length, 8);
  return Buffer.concat([key(field, 1), data]);
};
const fixed32Field = (field: number, data: Buffer): Buffer => {
  assert.equal(data.length, 4);
  return Buffer.concat([key(field, 5), data]);
};
const image = pagemapImage;
const head = pagemapHead;

function corrupt(pattern: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError, String(err));
    assert.equal(err.code, ErrorCode.CheckpointCorrupt);
    assert.equal(err.code, 'GODWIT_CHECKPOINT_CORRUPT');
    assert.match(err.message, pattern);
    return true;
  };
}

describe('parsePagemapImage', () => {
  it('has the magic numbers of CRIU images', () => {
    assert.equal(IMG_COMMON_MAGIC, 0x54564319);
    assert.equal(PAGEMAP_MAGIC, 0x56084025);
  });

  it('parses entries with the count in nr_pages (CRIU < 4)', () => {
    const img = image([
      head(3),
      oldEntry(0x400000, 2, PE_PRESENT),
      oldEntry(0x600000, 1, PE_PARENT),
      oldEntry(0x7ffd0000, 16, PE_PRESENT),
    ]);
    assert.deepEqual(parsePagemapImage(img), {
      pagesId: 3,
      entries: [
        { vaddr: 0x400000, nrPages: 2, flags: PE_PRESENT },
        { vaddr: 0x600000, nrPages: 1, flags: PE_PARENT },
        { vaddr: 0x7ffd0000, nrPages: 16, flags: PE_PRESENT },
      ],
    });
  });

  it('parses entries with the count in field 5 (CRIU ≥ 4)', () => {
    const img = image([head(1), newEntry(0x401000, 1, PE_PRESENT), newEntry(0x4b1000, 300, PE_PRESENT)]);
    assert.deepEqual(parsePagemapImage(img), {
      pagesId: 1,
      entries: [
        { vaddr: 0x401000, nrPages: 1, flags: PE_PRESENT },
        { vaddr: 0x4b1000, nrPages: 300, flags: PE_PRESENT },
      ],
    });
  });

  it('parses an image with only a head, and pages_id 0', () => {
    assert.deepEqual(parsePagemapImage(image([head(0)])), { pagesId: 0, entries: [] });
  });

  it('decodes addresses above 2^32 exactly', () => {
    const high = 0x7ff003600000;
    const top = 0x7ffffffff000; // the last page of a 47-bit user address space
    const img = image([head(2), newEntry(high, 3, PE_PRESENT), oldEntry(top, 1, PE_PRESENT)]);
    const { entries } = parsePagemapImage(img);
    assert.equal(entries[0]?.vaddr, high);
    assert.equal(entries[0]?.vaddr, 140_668_825_501_696);
    assert.equal(entries[1]?.vaddr, top);
  });

  it('keeps the flags of present, lazy and parent entries, and defaults missing ones', () => {
    const img = image([
      head(1),
      oldEntry(0x1000, 1, PE_PRESENT),
      oldEntry(0x2000, 2, PE_LAZY),
      oldEntry(0x4000, 3, PE_PARENT),
      Buffer.concat([vField(1, 0x8000), vField(2, 4)]), // no flags
      vField(1, 0x10000), // no count, no flags
    ]);
    assert.deepEqual(
      parsePagemapImage(img).entries.map((e) => [e.nrPages, e.flags]),
      [
        [1, PE_PRESENT],
        [2, PE_LAZY],
        [3, PE_PARENT],
        [4, 0],
        [0, 0],
      ],
    );
  });

  it('skips unknown fields of wire types 1, 2 and 5, in the head and in entries', () => {
    const img = image([
      Buffer.concat([
        fixed64Field(9, Buffer.alloc(8, 0xff)),
        head(7),
        bytesField(10, Buffer.from('unknown bytes')),
        fixed32Field(11, Buffer.alloc(4, 0x88)),
      ]),
      Buffer.concat([
        bytesField(3, Buffer.alloc(200, 0x80)), // length > 127: a two-byte length varint
        vField(1, 0x7ff003600000),
        fixed32Field(6, Buffer.from([0x08, 0x01, 0x10, 0x02])), // looks like fields; must be skipped
        vField(2, 0),
        fixed64Field(7, Buffer.from([0x08, 0x01, 0x10, 0x02, 0x20, 0x04, 0x28, 0x05])),
        vField(4, PE_PRESENT),
        bytesField(8, Buffer.alloc(0)),
        vField(5, 9),
        vField(12, 12345), // an unknown varint field
      ]),
    ]);
    assert.deepEqual(parsePagemapImage(img), {
      pagesId: 7,
      entries: [{ vaddr: 0x7ff003600000, nrPages: 9, flags: PE_PRESENT }],
    });
  });

  it('parses the first three messages of a pagemap-1.img dumped by CRIU 4.2.1', () => {
    const hex =
      '1943565425400856020000000801' +
      '0b00000008' +
      '80a08002' +
      '1000' +
      '2004' +
      '2801' +
      '0b000000' +
      '0880a0ac02' +
      '1000' +
      '2004' +
      '2805';
    const real = Buffer.from(hex, 'hex');
    // Magic 8 bytes, then messages of 2, 11 and 11 bytes, each after a 4-byte length.
    const end = 8 + (4 + 2) + (4 + 11) + (4 + 11);
    assert.equal(real.length, end);
    // 80 a0 80 02 = 0x00 + 0x20·2^7 + 0x00·2^14 + 0x02·2^21 = 0x401000
    // 80 a0 ac 02 = 0x00 + 0x20·2^7 + 0x2c·2^14 + 0x02·2^21 = 0x4b1000
    assert.deepEqual(parsePagemapImage(real.subarray(0, end)), {
      pagesId: 1,
      entries: [
        { vaddr: 0x401000, nrPages: 1, flags: PE_PRESENT },
        { vaddr: 0x4b1000, nrPages: 5, flags: PE_PRESENT },
      ],
    });
    // Cut within the third message (as a 0x80-byte prefix of a longer image would be): refused.
    assert.throws(() => parsePagemapImage(real.subarray(0, end - 3)), corrupt(/truncated message$/));
  });

  describe('rejects with CheckpointCorrupt', () => {
    const good = image([head(1), newEntry(0x1000, 1, PE_PRESENT)]);

    it('wrong or missing magic', () => {
      assert.doesNotThrow(() => parsePagemapImage(good));
      assert.throws(
        () => parsePagemapImage(image([head(1)], [0x12345678, PAGEMAP_MAGIC])),
        corrupt(/wrong magic/),
      );
      assert.throws(
        () => parsePagemapImage(image([head(1)], [IMG_COMMON_MAGIC, 0x56084026])),
        corrupt(/wrong magic/),
      );
      // The magic of another image type (inventory) in the second word.
      assert.throws(
        () => parsePagemapImage(image([head(1)], [PAGEMAP_MAGIC, IMG_COMMON_MAGIC])),
        corrupt(/wrong magic/),
      );
      assert.throws(() => parsePagemapImage(Buffer.alloc(0)), corrupt(/shorter than its magic/));
      assert.throws(() => parsePagemapImage(good.subarray(0, 7)), corrupt(/shorter than its magic/));
    });

    it('a truncated message length', () => {
      for (const extra of [1, 2, 3]) {
        const img = Buffer.concat([good, Buffer.alloc(extra, 1)]);
        assert.throws(() => parsePagemapImage(img), corrupt(/truncated message length/), `${extra} bytes`);
      }
    });

    it('a truncated message', () => {
      assert.throws(
        () => parsePagemapImage(good.subarray(0, good.length - 1)),
        corrupt(/truncated message$/),
      );
      const img = Buffer.concat([good, u32(20), newEntry(0x2000, 1, PE_PRESENT).subarray(0, 5)]);
      assert.throws(() => parsePagemapImage(img), corrupt(/truncated message$/));
      assert.throws(
        () => parsePagemapImage(Buffer.concat([good, u32(0xffffffff)])),
        corrupt(/truncated message$/),
      );
    });

    it('a truncated varint', () => {
      // A message whose last byte has the continuation bit set.
      const cut = Buffer.concat([key(1, 0), Buffer.from([0x80, 0x80])]);
      assert.throws(() => parsePagemapImage(image([head(1), cut])), corrupt(/truncated varint/));
      assert.throws(() => parsePagemapImage(image([Buffer.from([0x88])])), corrupt(/truncated varint/));
      // A length-delimited field whose length varint is cut.
      const cutLen = Buffer.concat([head(1), key(3, 2), Buffer.from([0xff])]);
      assert.throws(() => parsePagemapImage(image([cutLen])), corrupt(/truncated varint/));
    });

    it('fields that run past their message', () => {
      const long = Buffer.concat([vField(1, 0x1000), key(3, 2), varint(50), Buffer.alloc(10)]);
      assert.throws(() => parsePagemapImage(image([head(1), long])), corrupt(/runs past its message/));
      const f64 = Buffer.concat([vField(1, 0x1000), key(3, 1), Buffer.alloc(4)]);
      assert.throws(() => parsePagemapImage(image([head(1), f64])), corrupt(/runs past its message/));
      const f32 = Buffer.concat([vField(1, 0x1000), key(3, 5), Buffer.alloc(2)]);
      assert.throws(() => parsePagemapImage(image([head(1), f32])), corrupt(/runs past its message/));
    });

    it('unsupported wire types (groups)', () => {
      for (const wire of [3, 4, 6, 7]) {
        const m = Buffer.concat([vField(1, 0x1000), key(3, wire)]);
        assert.throws(
          () => parsePagemapImage(image([head(1), m])),
          corrupt(/unsupported wire type/),
          `wire ${wire}`,
        );
      }
    });

    it('an unaligned or missing vaddr', () => {
      for (const vaddr of [1, 0x1001, 0x7ff003600800, PAGE_SIZE - 1]) {
        assert.throws(
          () => parsePagemapImage(image([head(1), newEntry(vaddr, 1, PE_PRESENT)])),
          corrupt(/aligned vaddr/),
          vaddr.toString(16),
        );
      }
      const noVaddr = Buffer.concat([vField(2, 1), vField(4, PE_PRESENT)]);
      assert.throws(() => parsePagemapImage(image([head(1), noVaddr])), corrupt(/aligned vaddr/));
    });

    it('no head, or a head without pages_id', () => {
      assert.throws(() => parsePagemapImage(image([])), corrupt(/no head/));
      assert.throws(() => parsePagemapImage(image([Buffer.alloc(0)])), corrupt(/head without pages_id/));
      assert.throws(() => parsePagemapImage(image([vField(2, 1)])), corrupt(/head without pages_id/));
    });

    it('varints out of range', () => {
      // 2^53 does not fit a JavaScript number exactly.
      const big = Buffer.concat([key(1, 0), Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10])]);
      assert.throws(() => parsePagemapImage(image([head(1), big])), corrupt(/out of range/));
      const eleven = Buffer.concat([key(1, 0), Buffer.alloc(10, 0x80), Buffer.from([0x01])]);
      assert.throws(() => parsePagemapImage(image([head(1), eleven])), corrupt(/longer than 10 bytes/));
    });
  });
});

describe('readPagesLayouts', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-pagemap-'));
    await writeFile(
      join(dir, 'pagemap-1.img'),
      image([
        head(1),
        newEntry(0x400000, 2, PE_PRESENT),
        newEntry(0x500000, 4, PE_PARENT), // in the parent image: not in pages-1.img
        newEntry(0x600000, 3, PE_PRESENT),
        newEntry(0x700000, 8, PE_LAZY), // served lazily: not in pages-1.img
        newEntry(0x800000, 2, PE_PRESENT | PE_LAZY), // CRIU writes flags 6 too: in pages-1.img
        newEntry(0x7ff003600000, 5, PE_PRESENT),
      ]),
    );
    await writeFile(
      join(dir, 'pagemap-7.img'),
      image([head(2), oldEntry(0x10000, 1, PE_PARENT), oldEntry(0x20000, 10, PE_PRESENT)]),
    );
    // Shared memory has its own pagemaps, which are no process's pages.
    await writeFile(join(dir, 'pagemap-shmem-3.img'), image([head(9), newEntry(0x0, 100, PE_PRESENT)]));
    // Unrelated files, some of which would not parse as pagemaps.
    await writeFile(join(dir, 'pages-1.img'), Buffer.alloc(10 * PAGE_SIZE));
    await writeFile(join(dir, 'pages-2.img'), Buffer.alloc(10 * PAGE_SIZE));
    await writeFile(join(dir, 'core-1.img'), Buffer.from('not a pagemap'));
    await writeFile(join(dir, 'pagemap-1.img.bak'), Buffer.from('not a pagemap'));
    await writeFile(join(dir, 'pagemap-x.img'), Buffer.from('not a pagemap'));
    await writeFile(join(dir, 'inventory.img'), Buffer.from('not a pagemap'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('gives each process its pages file, vpid and present runs at cumulative offsets', async () => {
    const layouts = (await readPagesLayouts(dir)).sort((a, b) => a.vpid - b.vpid);
    assert.deepEqual(layouts, [
      {
        file: 'pages-1.img',
        vpid: 1,
        runs: [
          { vaddr: 0x400000, nrPages: 2, fileOffset: 0, lazy: false },
          { vaddr: 0x600000, nrPages: 3, fileOffset: 2 * PAGE_SIZE, lazy: false },
          { vaddr: 0x800000, nrPages: 2, fileOffset: 5 * PAGE_SIZE, lazy: true },
          { vaddr: 0x7ff003600000, nrPages: 5, fileOffset: 7 * PAGE_SIZE, lazy: false },
        ],
        lazyRuns: [{ vaddr: 0x700000, nrPages: 8 }],
      },
      {
        file: 'pages-2.img',
        vpid: 7,
        runs: [{ vaddr: 0x20000, nrPages: 10, fileOffset: 0, lazy: false }],
        lazyRuns: [],
      },
    ]);
  });

  it('is empty for a directory without pagemaps, and fails on a corrupt one', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'godwit-pagemap-empty-'));
    try {
      assert.deepEqual(await readPagesLayouts(empty), []);
      await writeFile(join(empty, 'pagemap-4.img'), image([head(1), newEntry(0x1001, 1, PE_PRESENT)]));
      await assert.rejects(readPagesLayouts(empty), corrupt(/aligned vaddr/));
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});
