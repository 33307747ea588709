/** Rules and errors every ChunkStore implementation shares (internal). */
import {
  ErrorCode,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  type GodwitError,
} from '../core/errors.js';
import type { Digest, Manifest } from '../core/chunks.js';
import { assertDigest, digestOf } from './hash.js';
import { manifestDigests } from './manifest.js';

/** Retention names: safe as file names (`<name>.json`), e.g. `checkpoint:web@3`. */
export const RETENTION_NAME = /^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}$/;

/** Throws InvalidName unless `name` can name a retention. */
export function validateRetentionName(name: string): void {
  if (typeof name !== 'string' || !RETENTION_NAME.test(name)) {
    throw new InvalidArgumentError(ErrorCode.InvalidName, `invalid retention name ${JSON.stringify(name)}`, {
      hint: 'use 1-200 characters: letters, digits and . _ : @ + = - (not first)',
    });
  }
}

/** Checks `data` against `digest` before anything is stored: InvalidDigest or ChunkDigestMismatch. */
export function verifyChunk(digest: Digest, data: Buffer): void {
  assertDigest(digest);
  if (!Buffer.isBuffer(data)) {
    throw new InvalidArgumentError(ErrorCode.InvalidDigest, `chunk data for ${digest} is not a Buffer`);
  }
  const actual = digestOf(data);
  if (actual !== digest) {
    throw new FailedPreconditionError(
      ErrorCode.ChunkDigestMismatch,
      `chunk does not match its digest: expected ${digest}, got ${actual} (${data.length} bytes)`,
    );
  }
}

export function chunkNotFound(digest: Digest, cause?: unknown): GodwitError {
  return new NotFoundError(ErrorCode.ChunkNotFound, `chunk ${digest} not found`, { cause });
}

/** The digests a retention of `manifest` holds, each checked to be well-formed. */
export function retentionDigests(manifest: Manifest): Digest[] {
  const digests = manifestDigests(manifest);
  for (const d of digests) assertDigest(d);
  return digests;
}
