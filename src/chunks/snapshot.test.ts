import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { ChunkStore, Manifest } from '../core/chunks.js';
import { ErrorCode, GodwitError } from '../core/errors.js';
import { FsChunkStore } from './fs-chunk-store.js';
import { digestOf } from './hash.js';
import { parseManifest } from './manifest.js';
import { MemoryChunkStore } from './memory-chunk-store.js';
import { materialize, snapshotDirectory } from './snapshot.js';

const CS = 65536;

function code(expected: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof GodwitError, String(err));
    assert.equal(err.code, expected, err.message);
    return true;
  };
}

/** Removes a tree even where the test made directories read-only. */
async function forceRemove(path: string): Promise<void> {
  const open = async (p: string): Promise<void> => {
    const st = await lstat(p).catch(() => undefined);
    if (st === undefined || !st.isDirectory()) return;
    await chmod(p, 0o700);
    for (const n of await readdir(p)) await open(join(p, n));
  };
  await open(path);
  await rm(path, { recursive: true, force: true });
}

type TreeItem = { path: string; kind: string; mode?: number; data?: string; target?: string };

/** Everything below `root` that a manifest carries, in a comparable form. */
async function describeTree(root: string, rel = ''): Promise<TreeItem[]> {
  const out: TreeItem[] = [];
  for (const name of (await readdir(join(root, rel))).sort()) {
    const path = rel === '' ? name : `${rel}/${name}`;
    const abs = join(root, path);
    const st = await lstat(abs);
    if (st.isSymbolicLink()) out.push({ path, kind: 'symlink', target: await readlink(abs) });
    else if (st.isDirectory()) {
      out.push({ path, kind: 'dir', mode: st.mode & 0o7777 });
      out.push(...(await describeTree(root, path)));
    } else out.push({ path, kind: 'file', mode: st.mode & 0o7777, data: digestOf(await readFile(abs)) });
  }
  return out;
}

const NOISE = randomBytes(CS * 4);

/** 1 MiB + 123 bytes: zero, random and repeated stretches; equal for equal `seedByte`. */
function mixed(seedByte: number): Buffer {
  const buf = Buffer.alloc(CS * 16 + 123);
  NOISE.copy(buf, CS * 2, 0, CS * 3);
  buf.fill(seedByte, CS * 7, CS * 10);
  NOISE.copy(buf, CS * 12 + 5, CS * 3, CS * 3 + 100);
  buf.fill(1, CS * 16);
  return buf;
}

/** Counts the store calls a snapshot makes. */
class CountingStore extends MemoryChunkStore {
  puts = 0;
  gets = 0;
  override async put(digest: string, data: Buffer): Promise<void> {
    this.puts++;
    return super.put(digest, data);
  }
  override async get(digest: string): Promise<Buffer> {
    this.gets++;
    return super.get(digest);
  }
}

describe('snapshotDirectory and materialize', () => {
  let tmp: string;
  let src: string;
  beforeEach(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'godwit-snap-'));
    src = join(tmp, 'src');
    await mkdir(src);
  });
  afterEach(async () => {
    await forceRemove(tmp);
  });

  async function makeTree(): Promise<void> {
    await mkdir(join(src, 'etc'), { mode: 0o755 });
    await writeFile(join(src, 'etc/hosts'), '127.0.0.1 localhost\n');
    await writeFile(join(src, 'empty'), '');
    await writeFile(join(src, 'exactly-inline'), Buffer.alloc(4096, 9));
    await writeFile(join(src, 'just-over'), Buffer.alloc(4097, 9));
    await writeFile(join(src, 'mixed.img'), mixed(0x5a));
    await writeFile(join(src, 'zeros.img'), Buffer.alloc(CS * 5 + 100));
    await writeFile(join(src, 'tool'), '#!/bin/sh\n');
    await chmod(join(src, 'tool'), 0o4755);
    await mkdir(join(src, 'var/lib/data'), { recursive: true });
    await writeFile(join(src, 'var/lib/data/copy.img'), mixed(0x5a));
    await symlink('../etc/hosts', join(src, 'var/hosts-link'));
    await symlink('/nonexistent/absolute', join(src, 'dangling'));
    await mkdir(join(src, 'ro'));
    await writeFile(join(src, 'ro/inside'), 'read-only dir content');
    await chmod(join(src, 'ro/inside'), 0o444);
    await chmod(join(src, 'ro'), 0o555);
    await mkdir(join(src, 'ünïcode ✓'));
  }

  it('recreates the tree exactly: contents, modes, symlinks, empty and read-only dirs', async () => {
    await makeTree();
    const store = await FsChunkStore.open(join(tmp, 'store'));
    const { manifest, stats } = await snapshotDirectory(src, store, { label: 'test:tree' });
    assert.deepEqual(parseManifest(JSON.parse(JSON.stringify(manifest))), manifest);
    const out = join(tmp, 'out');
    await materialize(manifest, store, out);
    assert.deepEqual(await describeTree(out), await describeTree(src));
    assert.equal(stats.files, 9);
    assert.equal(stats.logicalBytes, 20 + 4096 + 4097 + 2 * (CS * 16 + 123) + CS * 5 + 100 + 10 + 21);
    assert.equal(stats.inlineBytes, 20 + 4096 + 10 + 21);
  });

  it('leaves out excluded paths and everything below them', async () => {
    await makeTree();
    const store = new MemoryChunkStore();
    const all = await snapshotDirectory(src, store, { label: 'all' });
    const some = await snapshotDirectory(src, store, { label: 'some', exclude: (rel) => rel === 'etc' });
    const paths = some.manifest.entries.map((e) => e.path);
    assert.ok(
      all.manifest.entries.some((e) => e.path.startsWith('etc/')),
      'the tree has etc/…',
    );
    assert.ok(!paths.some((p) => p === 'etc' || p.startsWith('etc/')), JSON.stringify(paths));
    assert.deepEqual(
      paths,
      all.manifest.entries.map((e) => e.path).filter((p) => p !== 'etc' && !p.startsWith('etc/')),
    );
  });

  it('lists entries depth-first in name order, and is deterministic', async () => {
    await makeTree();
    const store = new MemoryChunkStore();
    const a = await snapshotDirectory(src, store, { label: 'a' });
    const b = await snapshotDirectory(src, store, { label: 'a' });
    assert.deepEqual(a.manifest.entries, b.manifest.entries);
    assert.deepEqual(
      a.manifest.entries.map((e) => e.path),
      [
        'dangling',
        'empty',
        'etc',
        'etc/hosts',
        'exactly-inline',
        'just-over',
        'mixed.img',
        'ro',
        'ro/inside',
        'tool',
        'var',
        'var/hosts-link',
        'var/lib',
        'var/lib/data',
        'var/lib/data/copy.img',
        'zeros.img',
        'ünïcode ✓',
      ],
    );
  });

  it('turns zero chunks into merged zero runs, inlines small files, and stores each chunk once', async () => {
    await writeFile(join(src, 'mixed.img'), mixed(0x5a));
    await writeFile(join(src, 'again.img'), mixed(0x5a));
    await writeFile(join(src, 'zeros.img'), Buffer.alloc(CS * 5 + 100));
    await writeFile(join(src, 'small'), 'hi');
    const store = new CountingStore();
    const { manifest, stats } = await snapshotDirectory(src, store, { label: 'zeros' });
    const byPath = new Map(manifest.entries.map((e) => [e.path, e]));
    assert.deepEqual(byPath.get('zeros.img'), {
      type: 'file',
      path: 'zeros.img',
      mode: 0o644,
      size: CS * 5 + 100,
      chunks: [{ zero: CS * 5 + 100 }],
    });
    assert.deepEqual(byPath.get('small'), {
      type: 'file',
      path: 'small',
      mode: 0o644,
      size: 2,
      inline: 'aGk=',
    });
    const img = byPath.get('mixed.img');
    assert.ok(img?.type === 'file' && img.chunks !== undefined);
    const kinds = img.chunks.map((c) => ('zero' in c ? `z${c.zero / CS}` : 'd'));
    // 0-1 zero, 2-4 random, 5-6 zero, 7-9 repeated byte, 10-11 zero, 12 random bits in its first page
    // (the other 15 pages of that window are zero pages, merged with the zero windows 13-15), tail.
    const PAGES_15 = 15 * 4096;
    assert.deepEqual(kinds, [
      'z2',
      'd',
      'd',
      'd',
      'z2',
      'd',
      'd',
      'd',
      'z2',
      'd',
      `z${(CS * 3 + PAGES_15) / CS}`,
      'd',
    ]);
    // Unique: 3 random + 1 repeated + 1 partly random + 1 tail, shared by both files.
    assert.equal(stats.uniqueChunks, 6);
    assert.equal(store.puts, 6);
    assert.deepEqual(await store.usage(), { chunks: 6, bytes: CS * 4 + 4096 + 123 });
    assert.equal(stats.zeroBytes, 2 * (CS * 9 + 15 * 4096) + CS * 5 + 100);

    store.puts = 0;
    await snapshotDirectory(src, store, { label: 'again' });
    assert.equal(store.puts, 0, 'a second snapshot finds every chunk in the store');
  });

  it('materializes zero runs as holes', async () => {
    await writeFile(
      join(src, 'sparse.img'),
      Buffer.concat([Buffer.alloc(4 * 1024 * 1024), Buffer.from('end')]),
    );
    const store = new MemoryChunkStore();
    const { manifest } = await snapshotDirectory(src, store, { label: 'sparse' });
    const out = join(tmp, 'out');
    await materialize(manifest, store, out);
    const st = await stat(join(out, 'sparse.img'));
    assert.equal(st.size, 4 * 1024 * 1024 + 3);
    assert.ok(st.blocks * 512 < 1024 * 1024, `expected a sparse file, got ${st.blocks} blocks`);
    assert.deepEqual(await readFile(join(out, 'sparse.img')), await readFile(join(src, 'sparse.img')));
  });

  it('leaves the holes it is given unwritten, and reads none of their chunks', async () => {
    const pages = randomBytes(8 * 4096);
    await writeFile(join(src, 'pages.img'), pages);
    const store = new MemoryChunkStore();
    const { manifest } = await snapshotDirectory(src, store, { label: 'p', chunkSizeFor: () => 4096 });
    const asked = new Set<string>();
    const counting: ChunkStore = Object.assign(Object.create(store) as ChunkStore, {
      get: (d: string) => {
        asked.add(d);
        return store.get(d as never);
      },
    });
    const out = join(tmp, 'out');
    const holes = [
      { offset: 4096, length: 2 * 4096 },
      { offset: 5 * 4096, length: 3 * 4096 },
    ];
    await materialize(manifest, counting, out, { holes: (p) => (p === 'pages.img' ? holes : undefined) });
    const got = await readFile(join(out, 'pages.img'));
    assert.equal(got.length, pages.length);
    for (let i = 0; i < 8; i++) {
      const inHole = (i >= 1 && i < 3) || i >= 5;
      const page = got.subarray(i * 4096, (i + 1) * 4096);
      assert.deepEqual(
        page,
        inHole ? Buffer.alloc(4096) : pages.subarray(i * 4096, (i + 1) * 4096),
        `page ${i}`,
      );
    }
    assert.equal(asked.size, 3, 'only the chunks outside the holes are read');
  });

  it('honours chunkSize and inlineMax, and validates them', async () => {
    await writeFile(join(src, 'f'), randomBytes(20000));
    const store = new MemoryChunkStore();
    const { manifest } = await snapshotDirectory(src, store, { label: 'x', chunkSize: 8192, inlineMax: 0 });
    const f = manifest.entries[0];
    assert.ok(f?.type === 'file');
    assert.deepEqual(
      f.chunks?.map((c) => ('size' in c ? c.size : -1)),
      [8192, 8192, 3616],
    );
    for (const chunkSize of [0, 1000, 4096 * 4097, 65536.5]) {
      await assert.rejects(
        snapshotDirectory(src, store, { label: 'x', chunkSize }),
        code(ErrorCode.InvalidFlag),
      );
    }
    await assert.rejects(
      snapshotDirectory(src, store, { label: 'x', inlineMax: 65537 }),
      code(ErrorCode.InvalidFlag),
    );
    await assert.rejects(
      snapshotDirectory(src, store, { label: 'bad\nlabel' }),
      code(ErrorCode.ManifestInvalid),
    );
  });

  it('reports progress up to the logical size', async () => {
    await writeFile(join(src, 'big'), mixed(3));
    await writeFile(join(src, 'small'), 'abc');
    const seen: number[] = [];
    const store = new MemoryChunkStore();
    const { manifest, stats } = await snapshotDirectory(src, store, {
      label: 'p',
      onProgress: (n) => seen.push(n),
    });
    assert.ok(seen.every((n, i) => i === 0 || n >= (seen[i - 1] as number)));
    assert.equal(seen.at(-1), stats.logicalBytes);
    const written: number[] = [];
    await materialize(manifest, store, join(tmp, 'out'), { onProgress: (n) => written.push(n) });
    assert.equal(written.at(-1), stats.logicalBytes);
  });

  it('refuses other file types, naming the path', async () => {
    await mkdir(join(src, 'run'));
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(src, 'run/app.sock'), resolve));
    try {
      await assert.rejects(snapshotDirectory(src, new MemoryChunkStore(), { label: 'x' }), (err: unknown) => {
        assert.ok(err instanceof GodwitError);
        assert.equal(err.code, ErrorCode.UnsupportedFile);
        assert.match(err.message, /run\/app\.sock.*socket/);
        return true;
      });
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    await assert.rejects(
      snapshotDirectory(join(tmp, 'absent'), new MemoryChunkStore(), { label: 'x' }),
      code(ErrorCode.UnsupportedFile),
    );
  });

  it('refuses a target that is not empty or not a directory', async () => {
    await writeFile(join(src, 'f'), 'x');
    const store = new MemoryChunkStore();
    const { manifest } = await snapshotDirectory(src, store, { label: 'x' });
    await assert.rejects(materialize(manifest, store, src), code(ErrorCode.TargetNotEmpty));
    await assert.rejects(materialize(manifest, store, join(src, 'f')), code(ErrorCode.TargetNotEmpty));
    const empty = join(tmp, 'empty');
    await mkdir(empty);
    await materialize(manifest, store, empty);
    assert.equal(await readFile(join(empty, 'f'), 'utf8'), 'x');
  });

  it('refuses manifests that would write outside the target', async () => {
    const store = new MemoryChunkStore();
    const base = { version: 1 as const, label: 'evil', createdAt: new Date().toISOString() };
    const evil: Manifest[] = [
      { ...base, entries: [{ type: 'file', path: '../escape', mode: 0o644, size: 1, inline: 'eA==' }] },
      { ...base, entries: [{ type: 'file', path: '/etc/escape', mode: 0o644, size: 1, inline: 'eA==' }] },
      {
        ...base,
        entries: [
          { type: 'symlink', path: 'link', target: tmp },
          { type: 'file', path: 'link/escape', mode: 0o644, size: 1, inline: 'eA==' },
        ],
      },
    ];
    for (const m of evil) {
      const out = join(tmp, 'out');
      await assert.rejects(materialize(m, store, out), code(ErrorCode.ManifestInvalid));
      await assert.rejects(lstat(out), { code: 'ENOENT' });
    }
    await assert.rejects(lstat(join(tmp, 'escape')), { code: 'ENOENT' });
  });

  it('cleans up when a chunk is missing or the wrong size', async () => {
    await writeFile(join(src, 'a'), randomBytes(100_000));
    await mkdir(join(src, 'd'));
    await writeFile(join(src, 'd/b'), randomBytes(100_000));
    const store = new MemoryChunkStore();
    const { manifest } = await snapshotDirectory(src, store, { label: 'x' });
    const out = join(tmp, 'out');
    await assert.rejects(materialize(manifest, new MemoryChunkStore(), out), code(ErrorCode.ChunkNotFound));
    await assert.rejects(lstat(out), { code: 'ENOENT' });

    const liar: ChunkStore = Object.assign(Object.create(store) as ChunkStore, {
      get: async (d: string) => (await store.get(d)).subarray(1),
    });
    const existing = join(tmp, 'existing');
    await mkdir(existing);
    await assert.rejects(materialize(manifest, liar, existing), code(ErrorCode.ChunkStoreCorrupt));
    assert.deepEqual(await readdir(existing), []);
  });

  it('fetches a repeated chunk once per file', async () => {
    await writeFile(join(src, 'rep'), Buffer.alloc(CS * 20, 7));
    const store = new CountingStore();
    const { manifest, stats } = await snapshotDirectory(src, store, { label: 'rep' });
    assert.equal(stats.uniqueChunks, 1);
    await materialize(manifest, store, join(tmp, 'out'));
    assert.equal(store.gets, 1);
  });
});
