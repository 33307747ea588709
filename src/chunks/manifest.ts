/**
 * Manifest validation and accounting. `parseManifest` is the gate for every manifest read
 * from another host or from disk: it accepts only what `materialize` can recreate safely
 * inside its target, and returns a fresh object built from the validated fields.
 */
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';
import {
  MANIFEST_VERSION,
  type ChunkRef,
  type Digest,
  type Manifest,
  type ManifestEntry,
  type ManifestStats,
} from '../core/chunks.js';
import { isDigest } from './hash.js';

/** Largest chunk a manifest may reference (and the store accepts from a manifest). */
export const MAX_CHUNK_SIZE = 16 * 1024 * 1024;
/** Largest file a manifest may carry inline. */
export const MAX_INLINE_SIZE = 64 * 1024;

/** Bounds `parseManifest` enforces; the defaults suit manifests from another host. */
export interface ManifestLimits {
  maxEntries: number;
  maxLabelBytes: number;
  /** Bytes of a path (UTF-8); each segment is also held to 255 bytes (NAME_MAX). */
  maxPathBytes: number;
  maxSymlinkTargetBytes: number;
  maxChunkSize: number;
  maxInlineSize: number;
  /** Chunk references and zero runs over all files together. */
  maxChunkRefs: number;
}

export const DEFAULT_MANIFEST_LIMITS: Readonly<ManifestLimits> = Object.freeze({
  maxEntries: 1_000_000,
  maxLabelBytes: 256,
  maxPathBytes: 4096,
  maxSymlinkTargetBytes: 4096,
  maxChunkSize: MAX_CHUNK_SIZE,
  maxInlineSize: MAX_INLINE_SIZE,
  maxChunkRefs: 1 << 24,
});

const NAME_MAX = 255;
const MAX_CREATED_AT = 64;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function fail(field: string, problem: string): never {
  throw new InvalidArgumentError(ErrorCode.ManifestInvalid, `invalid manifest: ${field} ${problem}`, {
    details: [field],
  });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(obj: Record<string, unknown>, allowed: readonly string[], field: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) fail(`${field}.${key.slice(0, 64)}`, 'is not a known field');
  }
}

function quote(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s);
}

/** Throws ManifestInvalid unless `label` is a printable string of at most `maxBytes` bytes. */
export function validateLabel(label: unknown, maxBytes = DEFAULT_MANIFEST_LIMITS.maxLabelBytes): string {
  if (typeof label !== 'string') fail('label', 'must be a string');
  if (label.length > maxBytes || Buffer.byteLength(label) > maxBytes) {
    fail('label', `must be at most ${maxBytes} bytes`);
  }
  if (CONTROL.test(label) || LONE_SURROGATE.test(label)) fail('label', 'must be printable text');
  return label;
}

function checkText(value: unknown, field: string, maxBytes: number): string {
  if (typeof value !== 'string') fail(field, 'must be a string');
  if (value.length === 0) fail(field, 'must not be empty');
  if (value.length > maxBytes || Buffer.byteLength(value) > maxBytes) {
    fail(field, `must be at most ${maxBytes} bytes`);
  }
  if (value.includes('\0')) fail(field, 'must not contain NUL');
  // A lone surrogate encodes as U+FFFD, so two different strings could name one file.
  if (LONE_SURROGATE.test(value)) fail(field, 'must be well-formed Unicode');
  return value;
}

/**
 * Throws ManifestInvalid unless `path` is relative, `/`-separated, without empty, `.` or `..`
 * segments, NUL, lone surrogates, segments over 255 bytes, or more than `maxBytes` bytes
 * (UTF-8). One pass without allocation: manifests may hold a million paths.
 */
export function validateEntryPath(path: unknown, field = 'path', maxBytes = 4096): string {
  if (typeof path !== 'string') fail(field, 'must be a string');
  const p = path;
  if (p.length === 0) fail(field, 'must not be empty');
  if (p.length > maxBytes) fail(field, `must be at most ${maxBytes} bytes`);
  let bytes = 0;
  let segStart = 0;
  let segBytes = 0;
  for (let i = 0; i <= p.length; i++) {
    const c = i < p.length ? p.charCodeAt(i) : 0x2f;
    if (c === 0x2f) {
      const len = i - segStart;
      if (len === 0) fail(field, `${quote(p)} must be relative, without empty segments`);
      if (len <= 2 && p.charCodeAt(segStart) === 0x2e && (len === 1 || p.charCodeAt(segStart + 1) === 0x2e)) {
        fail(field, `${quote(p)} must not contain . or .. segments`);
      }
      if (segBytes > NAME_MAX) fail(field, `${quote(p)} has a segment longer than ${NAME_MAX} bytes`);
      bytes++;
      segStart = i + 1;
      segBytes = 0;
      continue;
    }
    let n: number;
    if (c === 0) fail(field, 'must not contain NUL');
    else if (c < 0x80) n = 1;
    else if (c < 0x800) n = 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      const d = p.charCodeAt(i + 1);
      // A lone surrogate encodes as U+FFFD, so two different strings could name one file.
      if (!(d >= 0xdc00 && d <= 0xdfff)) fail(field, 'must be well-formed Unicode');
      n = 4;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) fail(field, 'must be well-formed Unicode');
    else n = 3;
    segBytes += n;
    bytes += n;
  }
  if (bytes - 1 > maxBytes) fail(field, `must be at most ${maxBytes} bytes`);
  return p;
}

function checkMode(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0o7777) {
    fail(field, 'must be an integer in 0..0o7777');
  }
  return value + 0; // -0 becomes 0
}

function checkSize(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    fail(field, `must be an integer in ${min}..${max}`);
  }
  return value + 0; // -0 becomes 0
}

function parseInline(value: unknown, size: number, field: string, limits: ManifestLimits): string {
  if (typeof value !== 'string') fail(field, 'must be a base64 string');
  if (size > limits.maxInlineSize)
    fail(field, `is only allowed for files of at most ${limits.maxInlineSize} bytes`);
  if (value.length !== 4 * Math.ceil(size / 3) || !BASE64.test(value)) {
    fail(field, `must be canonical base64 of exactly ${size} bytes`);
  }
  const bytes = Buffer.from(value, 'base64');
  if (bytes.length !== size || bytes.toString('base64') !== value) {
    fail(field, `must be canonical base64 of exactly ${size} bytes`);
  }
  return value;
}

interface RefBudget {
  left: number;
}

/**
 * Chunk references this module validated and created: never changed afterwards (manifests are
 * read-only by contract), so one met again (a delta's copies of its base) is taken as it is. A
 * pre-copy round's delta copies 262,000 references of a 1 GiB image: checking each digest's
 * form again cost the receiver ~100 ms per round.
 */
const VALIDATED_REFS = new WeakSet<ChunkRef>();

function parseChunks(
  value: unknown,
  size: number,
  field: string,
  limits: ManifestLimits,
  budget: RefBudget,
): ChunkRef[] {
  if (!Array.isArray(value)) fail(field, 'must be an array');
  if (value.length > budget.left) fail(field, `exceeds ${limits.maxChunkRefs} chunk references in total`);
  budget.left -= value.length;
  const out: ChunkRef[] = [];
  let sum = 0;
  for (let i = 0; i < value.length; i++) {
    const ref: unknown = value[i];
    let n: number;
    if (typeof ref === 'object' && ref !== null && VALIDATED_REFS.has(ref as ChunkRef)) {
      const r = ref as ChunkRef;
      n = 'zero' in r ? r.zero : r.size;
      if (!('zero' in r) && n > limits.maxChunkSize)
        fail(`${field}[${i}].size`, `must be at most ${limits.maxChunkSize}`);
      out.push(r);
    } else {
      const f = `${field}[${i}]`;
      if (!isRecord(ref)) fail(f, 'must be an object');
      let made: ChunkRef;
      if ('zero' in ref) {
        checkKeys(ref, ['zero'], f);
        n = checkSize(ref['zero'], `${f}.zero`, 1, Number.MAX_SAFE_INTEGER);
        made = { zero: n };
      } else {
        checkKeys(ref, ['digest', 'size'], f);
        const digest = ref['digest'];
        if (!isDigest(digest)) fail(`${f}.digest`, 'must be sha256: followed by 64 lower-case hex digits');
        n = checkSize(ref['size'], `${f}.size`, 1, limits.maxChunkSize);
        made = { digest, size: n };
      }
      VALIDATED_REFS.add(made);
      out.push(made);
    }
    sum += n;
    if (sum > size) fail(field, `cover more than the file size ${size}`);
  }
  if (sum !== size) fail(field, `cover ${sum} bytes, not the file size ${size}`);
  return out;
}

function parseEntry(raw: unknown, field: string, limits: ManifestLimits, budget: RefBudget): ManifestEntry {
  if (!isRecord(raw)) fail(field, 'must be an object');
  const type = raw['type'];
  const path = validateEntryPath(raw['path'], `${field}.path`, limits.maxPathBytes);
  switch (type) {
    case 'dir':
      checkKeys(raw, ['type', 'path', 'mode'], field);
      return { type: 'dir', path, mode: checkMode(raw['mode'], `${field}.mode`) };
    case 'symlink': {
      checkKeys(raw, ['type', 'path', 'target'], field);
      const target = checkText(raw['target'], `${field}.target`, limits.maxSymlinkTargetBytes);
      return { type: 'symlink', path, target };
    }
    case 'file': {
      checkKeys(raw, ['type', 'path', 'mode', 'size', 'inline', 'chunks'], field);
      const mode = checkMode(raw['mode'], `${field}.mode`);
      const size = checkSize(raw['size'], `${field}.size`, 0, Number.MAX_SAFE_INTEGER);
      const hasInline = raw['inline'] !== undefined;
      const hasChunks = raw['chunks'] !== undefined;
      if (hasInline && hasChunks) fail(field, 'must not have both inline and chunks');
      if (hasInline) {
        return {
          type: 'file',
          path,
          mode,
          size,
          inline: parseInline(raw['inline'], size, `${field}.inline`, limits),
        };
      }
      if (hasChunks) {
        return {
          type: 'file',
          path,
          mode,
          size,
          chunks: parseChunks(raw['chunks'], size, `${field}.chunks`, limits, budget),
        };
      }
      if (size !== 0) fail(field, 'must have inline or chunks');
      return { type: 'file', path, mode, size, chunks: [] };
    }
    default:
      fail(`${field}.type`, 'must be file, dir or symlink');
  }
}

/**
 * Validates a manifest read from anywhere untrusted and returns a fresh copy of it.
 * Besides the field rules, paths are unique and no entry lies below a file or a symlink,
 * so recreating the tree never writes through a link. Throws InvalidArgumentError with
 * code ManifestInvalid naming the offending field (also in `details[0]`).
 */
export function parseManifest(value: unknown, limits: Partial<ManifestLimits> = {}): Manifest {
  const lim: ManifestLimits = { ...DEFAULT_MANIFEST_LIMITS, ...limits };
  if (!isRecord(value)) fail('manifest', 'must be an object');
  checkKeys(value, ['version', 'label', 'createdAt', 'entries'], 'manifest');
  if (value['version'] !== MANIFEST_VERSION) fail('version', `must be ${MANIFEST_VERSION}`);
  const label = validateLabel(value['label'], lim.maxLabelBytes);
  const createdAt = value['createdAt'];
  if (
    typeof createdAt !== 'string' ||
    createdAt.length > MAX_CREATED_AT ||
    Number.isNaN(Date.parse(createdAt))
  ) {
    fail('createdAt', 'must be an ISO 8601 date');
  }
  const rawEntries = value['entries'];
  if (!Array.isArray(rawEntries)) fail('entries', 'must be an array');
  if (rawEntries.length > lim.maxEntries) fail('entries', `must hold at most ${lim.maxEntries} entries`);

  const budget: RefBudget = { left: lim.maxChunkRefs };
  const entries: ManifestEntry[] = [];
  const types = new Map<string, ManifestEntry['type']>();
  for (let i = 0; i < rawEntries.length; i++) {
    const entry = parseEntry(rawEntries[i], `entries[${i}]`, lim, budget);
    if (types.has(entry.path)) fail(`entries[${i}].path`, `${quote(entry.path)} appears twice`);
    types.set(entry.path, entry.type);
    entries.push(entry);
  }
  // No ancestor of an entry may be listed as a file or symlink: materialize would write
  // through it. `clear` holds prefixes already known to have no such ancestor.
  const clear = new Set<string>();
  for (let i = 0; i < entries.length; i++) {
    const path = (entries[i] as ManifestEntry).path;
    for (let cut = path.lastIndexOf('/'); cut > 0; cut = path.lastIndexOf('/', cut - 1)) {
      const prefix = path.slice(0, cut);
      if (clear.has(prefix)) break;
      const t = types.get(prefix);
      if (t !== undefined && t !== 'dir') fail(`entries[${i}].path`, `${quote(path)} lies below a ${t}`);
      clear.add(prefix);
    }
  }
  return { version: MANIFEST_VERSION, label, createdAt, entries };
}

/** The manifest's chunk digests, each once, in order of first reference. */
export function manifestDigests(m: Manifest): Digest[] {
  const seen = new Set<Digest>();
  for (const e of m.entries) {
    if (e.type !== 'file' || e.chunks === undefined) continue;
    for (const c of e.chunks) if ('digest' in c) seen.add(c.digest);
  }
  return [...seen];
}

/** Counts for accounting: logical, zero and inline bytes, distinct chunks and their size. */
export function manifestStats(m: Manifest): ManifestStats {
  const stats: ManifestStats = {
    files: 0,
    logicalBytes: 0,
    zeroBytes: 0,
    inlineBytes: 0,
    uniqueChunks: 0,
    uniqueChunkBytes: 0,
  };
  const seen = new Set<Digest>();
  for (const e of m.entries) {
    if (e.type !== 'file') continue;
    stats.files++;
    stats.logicalBytes += e.size;
    if (e.inline !== undefined) stats.inlineBytes += e.size;
    for (const c of e.chunks ?? []) {
      if ('zero' in c) stats.zeroBytes += c.zero;
      else if (!seen.has(c.digest)) {
        seen.add(c.digest);
        stats.uniqueChunks++;
        stats.uniqueChunkBytes += c.size;
      }
    }
  }
  return stats;
}
