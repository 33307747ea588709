/**
 * Test fixtures: a CRIU image directory with pagemaps and pages files written from a
 * description, so page serving can be tested without dumping a process.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PAGE_SIZE } from '../core/chunks.js';
import { PE_LAZY, PE_PRESENT } from '../memory/criu-pagemap.js';
import { newEntry, pagemapHead, pagemapImage } from '../memory/pagemap-testing.js';

/** One process of a fake checkpoint: its runs of present pages, in address order. */
export interface FakeProcess {
  vpid: number;
  pagesId: number;
  /** `absent`: left out of the pages file for a lazy page server (flag PE_LAZY only). */
  runs: { vaddr: number; nrPages: number; lazy: boolean; absent?: boolean }[];
}

/** The bytes fake page `vaddr` of process `vpid` holds: recognisable, never all zero. */
export function fakePage(vpid: number, vaddr: number): Buffer {
  const b = Buffer.alloc(PAGE_SIZE);
  for (let i = 0; i < PAGE_SIZE; i += 16) {
    b.writeUInt32LE(vpid, i);
    b.writeDoubleLE(vaddr, i + 4);
    b.writeUInt32LE(i, i + 12);
  }
  return b;
}

/** Writes `pagemap-<vpid>.img` (CRIU 4.x encoding) and `pages-<id>.img` for each process into `criuDir`. */
export async function writeFakeCriuImages(criuDir: string, procs: readonly FakeProcess[]): Promise<void> {
  for (const p of procs) {
    const messages = [pagemapHead(p.pagesId)];
    const pages: Buffer[] = [];
    for (const r of p.runs) {
      const flags = (r.absent ? 0 : PE_PRESENT) | (r.lazy || r.absent ? PE_LAZY : 0);
      messages.push(newEntry(r.vaddr, r.nrPages, flags));
      if (r.absent) continue;
      for (let i = 0; i < r.nrPages; i++) pages.push(fakePage(p.vpid, r.vaddr + i * PAGE_SIZE));
    }
    const img = pagemapImage(messages);
    await writeFile(join(criuDir, `pagemap-${p.vpid}.img`), img);
    await writeFile(join(criuDir, `pages-${p.pagesId}.img`), Buffer.concat(pages));
  }
}
