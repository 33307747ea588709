/**
 * The wire header of CRIU's page-server protocol (criu/page-xfer.c, CRIU ≥ 4.x):
 *
 *   struct page_server_iov { u32 cmd; u64 nr_pages; u64 vaddr; u64 dst_id; }
 *
 * little-endian with the C layout, i.e. 32 bytes: `cmd` at 0, 4 bytes of padding, `nr_pages`
 * at 8, `vaddr` at 16, `dst_id` at 24 (CRIU 3.x had a u32 `nr_pages` and a 24-byte header).
 * `cmd` carries the command in its low 16 bits and flags (PE_* for answers) in the high 16.
 * Every u64 is decoded to a number and must be a safe integer (user addresses on x86-64 and
 * arm64 stay below 2^57).
 */
import { PAGE_SIZE } from '../core/chunks.js';

/** Size of `struct page_server_iov` on the wire. */
export const PS_IOV_SIZE = 32;

/** Page-server commands (low 16 bits of `cmd`). */
export const PsCmd = {
  Add: 1,
  Hole: 2,
  Open: 3,
  Open2: 4,
  Parent: 5,
  AddF: 6,
  Get: 7,
  Close: 0x1023,
  ForceClose: 0x1024,
} as const;
export type PsCmdValue = (typeof PsCmd)[keyof typeof PsCmd];

/** The flags CRIU puts in an answer to PS_IOV_GET: the pages are present (PE_PRESENT). */
export const PS_ANSWER_FLAGS = 4;

/** A decoded `struct page_server_iov`. */
export interface PageServerIov {
  /** The raw u32: command | flags << 16. */
  cmd: number;
  nrPages: number;
  vaddr: number;
  dstId: number;
}

/** `encode_ps_cmd(cmd, flags)`. */
export function encodePsCmd(cmd: number, flags: number): number {
  return ((flags << 16) | (cmd & 0xffff)) >>> 0;
}

/** The command part of a raw `cmd`. */
export function psCommand(cmd: number): number {
  return cmd & 0xffff;
}

/** The flags part of a raw `cmd`. */
export function psFlags(cmd: number): number {
  return cmd >>> 16;
}

/** Encodes a header (padding zeroed). Throws RangeError on values that do not fit. */
export function encodePageServerIov(iov: PageServerIov): Buffer {
  const b = Buffer.alloc(PS_IOV_SIZE);
  b.writeUInt32LE(iov.cmd >>> 0, 0);
  b.writeBigUInt64LE(BigInt(iov.nrPages), 8);
  b.writeBigUInt64LE(BigInt(iov.vaddr), 16);
  b.writeBigUInt64LE(BigInt(iov.dstId), 24);
  return b;
}

/**
 * Decodes the header at `offset` (the caller ensures 32 bytes are there). Returns an error
 * message instead when a u64 field is beyond 2^53 − 1.
 */
export function decodePageServerIov(buf: Buffer, offset = 0): PageServerIov | string {
  const cmd = buf.readUInt32LE(offset);
  const fields = [8, 16, 24].map((at) => buf.readBigUInt64LE(offset + at));
  const names = ['nr_pages', 'vaddr', 'dst_id'];
  const out: number[] = [];
  for (let i = 0; i < fields.length; i++) {
    const v = fields[i] as bigint;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) return `${names[i]} 0x${v.toString(16)} out of range`;
    out.push(Number(v));
  }
  const [nrPages, vaddr, dstId] = out as [number, number, number];
  return { cmd, nrPages, vaddr, dstId };
}

/** The answer header to a GET: ADD_F|PE_PRESENT for `nrPages` pages at `vaddr` of `dstId`. */
export function encodeGetAnswer(vaddr: number, nrPages: number, dstId: number): Buffer {
  return encodePageServerIov({ cmd: encodePsCmd(PsCmd.AddF, PS_ANSWER_FLAGS), nrPages, vaddr, dstId });
}

/** True when `vaddr` is page-aligned. */
export function isPageAligned(vaddr: number): boolean {
  return vaddr % PAGE_SIZE === 0;
}
