/**
 * Test fixtures: a minimal protobuf encoder for CRIU's pagemap images, so that parsers and
 * page serving can be tested without dumping a process.
 */
import { IMG_COMMON_MAGIC, PAGEMAP_MAGIC } from './criu-pagemap.js';

/** Base-128 varint of a non-negative safe integer (no 32-bit shifts: values exceed 2^32). */
export function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v >= 128) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** A field key: number and wire type. */
export const key = (field: number, wire: number): Buffer => varint(field * 8 + wire);
/** A varint field. */
export const vField = (field: number, value: number): Buffer => Buffer.concat([key(field, 0), varint(value)]);

/** A u32, little-endian. */
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
}

/** Magic header, then each message preceded by its u32 LE length. */
export function pagemapImage(messages: Buffer[], magic = [IMG_COMMON_MAGIC, PAGEMAP_MAGIC]): Buffer {
  return Buffer.concat([...magic.map(u32), ...messages.flatMap((m) => [u32(m.length), m])]);
}

/** The pagemap head: its pages file's id. */
export const pagemapHead = (pagesId: number): Buffer => vField(1, pagesId);

/** A pagemap_entry as CRIU < 4 writes it: the count in nr_pages (field 2). */
export function oldEntry(vaddr: number, nrPages: number, flags: number): Buffer {
  return Buffer.concat([vField(1, vaddr), vField(2, nrPages), vField(4, flags)]);
}

/** A pagemap_entry as CRIU ≥ 4 writes it: nr_pages 0, the count in field 5. */
export function newEntry(vaddr: number, nrPages: number, flags: number): Buffer {
  return Buffer.concat([vField(1, vaddr), vField(2, 0), vField(4, flags), vField(5, nrPages)]);
}
