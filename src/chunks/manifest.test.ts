import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MANIFEST_VERSION, type Manifest } from '../core/chunks.js';
import { ErrorCategory, ErrorCode, GodwitError, InvalidArgumentError } from '../core/errors.js';
import { digestOf } from './hash.js';
import { manifestDigests, manifestStats, parseManifest } from './manifest.js';

const D1 = digestOf(Buffer.from('one'));
const D2 = digestOf(Buffer.from('two'));

function valid(): Manifest {
  return {
    version: MANIFEST_VERSION,
    label: 'checkpoint:web',
    createdAt: '2025-01-02T03:04:05.000Z',
    entries: [
      { type: 'dir', path: 'etc', mode: 0o755 },
      {
        type: 'file',
        path: 'etc/hosts',
        mode: 0o644,
        size: 5,
        inline: Buffer.from('hello').toString('base64'),
      },
      {
        type: 'file',
        path: 'pages.img',
        mode: 0o600,
        size: 65536 * 3 + 4096,
        chunks: [
          { digest: D1, size: 65536 },
          { zero: 65536 },
          { digest: D2, size: 65536 },
          { digest: D1, size: 4096 },
        ],
      },
      { type: 'file', path: 'empty', mode: 0o644, size: 0, chunks: [] },
      { type: 'symlink', path: 'etc/localtime', target: '/usr/share/zoneinfo/UTC' },
      { type: 'dir', path: 'a/b/c', mode: 0o1777 },
    ],
  };
}

/** Runs `mutate` on a fresh valid manifest and expects ManifestInvalid naming `field`. */
function rejects(
  field: string,
  mutate: (m: Record<string, unknown> & { entries: Record<string, unknown>[] }) => void,
): void {
  const m = structuredClone(valid()) as unknown as Record<string, unknown> & {
    entries: Record<string, unknown>[];
  };
  mutate(m);
  assert.throws(
    () => parseManifest(m),
    (err: unknown) => {
      assert.ok(err instanceof InvalidArgumentError, String(err));
      assert.equal(err.code, ErrorCode.ManifestInvalid);
      assert.equal(err.category, ErrorCategory.InvalidArgument);
      assert.ok(
        err.details[0]?.startsWith(field),
        `field ${err.details[0]} should start with ${field}: ${err.message}`,
      );
      return true;
    },
  );
}

describe('parseManifest', () => {
  it('accepts a valid manifest and returns an equal, fresh copy', () => {
    const m = valid();
    const parsed = parseManifest(JSON.parse(JSON.stringify(m)));
    assert.deepEqual(parsed, m);
    assert.notEqual(parsed.entries[0], m.entries[0]);
  });

  it('checks the top level', () => {
    for (const v of [null, 1, 'x', [], true]) assert.throws(() => parseManifest(v), InvalidArgumentError);
    rejects('version', (m) => (m['version'] = 2));
    rejects('manifest.extra', (m) => (m['extra'] = 1));
    rejects('label', (m) => (m['label'] = 'x'.repeat(257)));
    rejects('label', (m) => (m['label'] = 'bell\u0007'));
    rejects('label', (m) => (m['label'] = 7));
    rejects('createdAt', (m) => (m['createdAt'] = 'yesterday'));
    rejects('entries', (m) => ((m as Record<string, unknown>)['entries'] = {}));
    assert.throws(
      () =>
        parseManifest(
          {
            ...valid(),
            entries: [
              { type: 'dir', path: 'a', mode: 0 },
              { type: 'dir', path: 'b', mode: 0 },
            ],
          },
          { maxEntries: 1 },
        ),
      /at most 1 entries/,
    );
  });

  it('refuses unsafe or ambiguous paths', () => {
    const bad = [
      '',
      '/etc',
      'a/../b',
      '..',
      '.',
      'a/./b',
      'a//b',
      'a/',
      'nul\0byte',
      'x'.repeat(4097),
      `${'y'.repeat(256)}/z`,
      'lone\uD800',
    ];
    for (const p of bad)
      rejects('entries[0].path', (m) => ((m.entries[0] as Record<string, unknown>)['path'] = p));
    rejects('entries[0].path', (m) => ((m.entries[0] as Record<string, unknown>)['path'] = 5));
    rejects('entries[1].path', (m) => ((m.entries[1] as Record<string, unknown>)['path'] = 'etc'));
  });

  it('refuses entries below a file or a symlink', () => {
    rejects('entries[6].path', (m) =>
      m.entries.push({ type: 'file', path: 'etc/localtime/x', mode: 0o644, size: 0 }),
    );
    rejects('entries[6].path', (m) => m.entries.push({ type: 'dir', path: 'empty/sub', mode: 0o755 }));
    rejects('entries[0].path', (m) =>
      m.entries.unshift({ type: 'file', path: 'etc/hosts/deeper/x', mode: 0o644, size: 0 }),
    );
  });

  it('checks modes, sizes and types', () => {
    rejects('entries[0].mode', (m) => (m.entries[0]!['mode'] = 0o10000));
    rejects('entries[0].mode', (m) => (m.entries[0]!['mode'] = -1));
    rejects('entries[0].mode', (m) => (m.entries[0]!['mode'] = 1.5));
    rejects('entries[0].mode', (m) => (m.entries[0]!['mode'] = '755'));
    rejects('entries[0].type', (m) => (m.entries[0]!['type'] = 'fifo'));
    rejects('entries[3].size', (m) => (m.entries[3]!['size'] = -1));
    rejects('entries[3].size', (m) => (m.entries[3]!['size'] = 2 ** 53));
    rejects('entries[0].extra', (m) => (m.entries[0]!['extra'] = true));
    rejects('entries[3]', (m) => {
      m.entries[3]!['size'] = 10;
      delete m.entries[3]!['chunks'];
    });
  });

  it('checks chunk references and that they cover the file exactly', () => {
    const refs = (m: { entries: Record<string, unknown>[] }): Record<string, unknown>[] =>
      m.entries[2]!['chunks'] as Record<string, unknown>[];
    rejects('entries[2].chunks[0].digest', (m) => (refs(m)[0]!['digest'] = D1.toUpperCase()));
    rejects('entries[2].chunks[0].digest', (m) => (refs(m)[0]!['digest'] = 'md5:abc'));
    rejects('entries[2].chunks[0].size', (m) => (refs(m)[0]!['size'] = 0));
    rejects('entries[2].chunks[0].size', (m) => (refs(m)[0]!['size'] = 16 * 1024 * 1024 + 1));
    rejects('entries[2].chunks[1].zero', (m) => (refs(m)[1]!['zero'] = 0));
    rejects('entries[2].chunks[1]', (m) => (refs(m)[1]!['digest'] = D1));
    rejects('entries[2].chunks', (m) => (m.entries[2]!['size'] = 1));
    rejects('entries[2].chunks', (m) => (m.entries[2]!['size'] = (m.entries[2]!['size'] as number) + 1));
    rejects('entries[2].chunks[3]', (m) => (refs(m)[3] = 'chunk' as unknown as Record<string, unknown>));
    rejects('entries[2]', (m) => (m.entries[2]!['inline'] = ''));
    assert.throws(() => parseManifest(valid(), { maxChunkRefs: 3 }), /chunk references/);
  });

  it('takes references it made itself as they are, still within the limits and the file size', () => {
    const first = parseManifest(valid());
    const again = parseManifest(first);
    assert.deepEqual(again, first);
    const refsOf = (m: Manifest): unknown[] => (m.entries[2] as { chunks: unknown[] }).chunks;
    assert.equal(refsOf(again)[0], refsOf(first)[0], 'the same (read-only) reference object');
    assert.notEqual(refsOf(first)[0], refsOf(valid())[0], 'a raw reference is copied');
    // Still counted against the file size and the limits of this parse.
    const shorter = { ...first, entries: first.entries.map((e, i) => (i === 2 ? { ...e, size: 1 } : e)) };
    assert.throws(() => parseManifest(shorter), /cover/);
    assert.throws(() => parseManifest(first, { maxChunkSize: 4096 }), /size/);
    assert.throws(() => parseManifest(first, { maxChunkRefs: 3 }), /chunk references/);
  });

  it('checks inline data strictly', () => {
    rejects('entries[1].inline', (m) => (m.entries[1]!['inline'] = 'aGVsbG8')); // no padding
    rejects('entries[1].inline', (m) => (m.entries[1]!['inline'] = 'aGVsbG9='));
    rejects('entries[1].inline', (m) => (m.entries[1]!['inline'] = 'aGVsbG!='));
    rejects('entries[1].inline', (m) => (m.entries[1]!['inline'] = 'aGVsbG9=\n'));
    rejects('entries[1].inline', (m) => (m.entries[1]!['size'] = 6));
    rejects('entries[1].inline', (m) => {
      m.entries[1]!['size'] = 65537;
      m.entries[1]!['inline'] = Buffer.alloc(65537).toString('base64');
    });
    const big = Buffer.alloc(65536, 7);
    const m = valid();
    m.entries[1] = {
      type: 'file',
      path: 'etc/hosts',
      mode: 0o644,
      size: big.length,
      inline: big.toString('base64'),
    };
    assert.equal(parseManifest(m).entries.length, 6);
  });

  it('checks symlink targets', () => {
    rejects('entries[4].target', (m) => (m.entries[4]!['target'] = ''));
    rejects('entries[4].target', (m) => (m.entries[4]!['target'] = 'a\0b'));
    rejects('entries[4].target', (m) => (m.entries[4]!['target'] = 'x'.repeat(4097)));
    rejects('entries[4].target', (m) => (m.entries[4]!['target'] = null));
  });
});

describe('manifestStats and manifestDigests', () => {
  it('count logical, zero, inline and distinct chunk bytes', () => {
    assert.deepEqual(manifestStats(valid()), {
      files: 3,
      logicalBytes: 5 + 65536 * 3 + 4096,
      zeroBytes: 65536,
      inlineBytes: 5,
      uniqueChunks: 2,
      uniqueChunkBytes: 65536 * 2,
    });
  });
  it('list distinct digests in order of first use', () => {
    assert.deepEqual(manifestDigests(valid()), [D1, D2]);
  });
});

/** mulberry32: a small seeded PRNG, so failures reproduce. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SPECIAL_STRINGS = [
  '',
  '..',
  '.',
  '/',
  'a//b',
  '\0',
  '\uD800',
  'x'.repeat(5000),
  'sha256:',
  D1,
  'AAAA',
  'file',
  'dir',
  'symlink',
  'zero',
  '__proto__',
  'constructor',
];
const SPECIAL_NUMBERS = [
  0,
  -1,
  1,
  0.5,
  4096,
  65536,
  16 * 1024 * 1024 + 1,
  2 ** 53,
  -0,
  NaN,
  Infinity,
  0o7777,
  0o10000,
  1e6 + 1,
];

function randomValue(rand: () => number, depth: number): unknown {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  switch (Math.floor(rand() * (depth > 2 ? 5 : 7))) {
    case 0:
      return null;
    case 1:
      return rand() < 0.5;
    case 2:
      return pick(SPECIAL_NUMBERS);
    case 3:
      return pick(SPECIAL_STRINGS);
    case 4:
      return String.fromCharCode(
        ...Array.from({ length: Math.floor(rand() * 12) }, () => Math.floor(rand() * 0x110)),
      );
    case 5:
      return Array.from({ length: Math.floor(rand() * 4) }, () => randomValue(rand, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(rand() * 4); i > 0; i--)
        o[pick(['type', 'path', 'mode', 'size', 'chunks', 'inline', 'digest', 'zero', 'x'])] = randomValue(
          rand,
          depth + 1,
        );
      return o;
    }
  }
}

/** Replaces, deletes or adds one value somewhere in `root`. */
function mutate(root: unknown, rand: () => number): void {
  const containers: (Record<string, unknown> | unknown[])[] = [];
  const collect = (v: unknown): void => {
    if (typeof v === 'object' && v !== null) {
      containers.push(v as Record<string, unknown> | unknown[]);
      for (const child of Object.values(v)) collect(child);
    }
  };
  collect(root);
  const target = containers[Math.floor(rand() * containers.length)];
  if (target === undefined) return;
  const keys = Object.keys(target);
  const key = keys.length > 0 && rand() < 0.85 ? (keys[Math.floor(rand() * keys.length)] as string) : 'extra';
  const action = rand();
  const t = target as Record<string, unknown>;
  if (action < 0.15) {
    if (Array.isArray(target)) target.splice(Number(key) || 0, 1);
    else delete t[key];
  } else if (action < 0.3 && Array.isArray(target) && target.length > 0) {
    target.push(structuredClone(target[Math.floor(rand() * target.length)]));
  } else if (action < 0.45 && typeof t[key] === 'number') {
    t[key] = (t[key] as number) + Math.floor(rand() * 3) - 1;
  } else if (action < 0.55 && typeof t[key] === 'string') {
    const s = t[key] as string;
    const at = Math.floor(rand() * (s.length + 1));
    t[key] = s.slice(0, at) + String(randomValue(rand, 3)) + s.slice(at);
  } else {
    t[key] = randomValue(rand, 0);
  }
}

function expectValidOrManifestInvalid(value: unknown, seed: number): 'ok' | 'invalid' {
  const started = performance.now();
  try {
    const parsed = parseManifest(value);
    assert.deepEqual(
      parseManifest(JSON.parse(JSON.stringify(parsed))),
      parsed,
      `seed ${seed}: reparse differs`,
    );
    return 'ok';
  } catch (err) {
    if (!(err instanceof GodwitError) || err.code !== ErrorCode.ManifestInvalid) {
      assert.fail(`seed ${seed}: unexpected ${err instanceof Error ? err.stack : String(err)}`);
    }
    return 'invalid';
  } finally {
    assert.ok(performance.now() - started < 500, `seed ${seed}: parse took too long`);
  }
}

describe('parseManifest fuzzing', () => {
  it('only ever returns a manifest or throws ManifestInvalid, for 3000 mutations of a valid manifest', () => {
    const counts = { ok: 0, invalid: 0 };
    const deadline = performance.now() + 20_000;
    for (let seed = 1; seed <= 3000 && performance.now() < deadline; seed++) {
      const rand = prng(seed);
      const m: unknown = structuredClone(valid());
      for (let k = 1 + Math.floor(rand() * 3); k > 0; k--) mutate(m, rand);
      counts[expectValidOrManifestInvalid(m, seed)]++;
    }
    assert.ok(counts.invalid > 1000, JSON.stringify(counts));
    assert.ok(counts.ok > 10, JSON.stringify(counts));
  });

  it('only ever throws ManifestInvalid for 2000 random JSON values', () => {
    for (let seed = 10_001; seed <= 12_000; seed++) {
      const rand = prng(seed);
      const v =
        rand() < 0.5
          ? randomValue(rand, 0)
          : { version: 1, label: 'x', createdAt: '2025-01-01', entries: randomValue(rand, 0) };
      expectValidOrManifestInvalid(v, seed);
    }
  });

  it('parses a 200 000-entry manifest in bounded time', () => {
    const entries = Array.from({ length: 200_000 }, (_, i) => ({
      type: 'file' as const,
      path: `d${i % 100}/f${i}`,
      mode: 0o644,
      size: 4096,
      chunks: [{ digest: D1, size: 4096 }],
    }));
    const started = performance.now();
    const m = parseManifest({ version: 1, label: 'big', createdAt: '2025-01-01T00:00:00Z', entries });
    assert.equal(m.entries.length, 200_000);
    assert.ok(performance.now() - started < 5000);
  });
});
