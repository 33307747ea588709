/**
 * Reading request bodies: JSON only, at most a limit, never buffering more than that.
 */
import type { IncomingMessage } from 'node:http';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';

/** How much of an unwanted body the server reads and discards before closing the connection. */
export const DISCARD_LIMIT_BYTES = 16 * 1024 * 1024;

function tooLarge(limit: number): InvalidArgumentError {
  return new InvalidArgumentError(ErrorCode.RequestTooLarge, `request body is larger than ${limit} bytes`, {
    hint: 'checkpoints and other bulk data travel as files or chunks, not in API requests',
  });
}

/** True when `header` is `application/json`, optionally with `charset=utf-8`. */
export function isJsonContentType(header: string | undefined): boolean {
  if (header === undefined) return false;
  const [type, ...params] = header.split(';').map((p) => p.trim().toLowerCase());
  if (type !== 'application/json') return false;
  return params.every((p) => p === '' || p === 'charset=utf-8' || p === 'charset="utf-8"');
}

/**
 * Reads the body of `req` as JSON. An empty body reads as `undefined`. Fails with
 * RequestTooLarge (before reading, when Content-Length says so), UnsupportedMediaType,
 * or RequestInvalid (bad UTF-8, malformed JSON). On failure the rest of the body is
 * left unread; call `discardBody`.
 */
export async function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) throw tooLarge(limit);
  const mayHaveBody =
    (declared !== undefined && declared !== '0') || req.headers['transfer-encoding'] !== undefined;
  if (mayHaveBody && !isJsonContentType(req.headers['content-type'])) {
    throw new InvalidArgumentError(
      ErrorCode.UnsupportedMediaType,
      `request body must be application/json, not ${req.headers['content-type'] ?? 'untyped'}`,
      { hint: 'send Content-Type: application/json' },
    );
  }
  const chunks: Buffer[] = [];
  let total = 0;
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      total += chunk.length;
      if (total > limit) {
        cleanup();
        req.pause();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve();
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const cleanup = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
  if (total === 0) return undefined;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks, total));
  } catch {
    throw new InvalidArgumentError(ErrorCode.RequestInvalid, 'request body is not valid UTF-8');
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new InvalidArgumentError(
      ErrorCode.RequestInvalid,
      `malformed JSON in request body: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}

/**
 * Reads and drops whatever is left of a request body, so that the client can still read
 * the response; past `DISCARD_LIMIT_BYTES` the connection is destroyed instead.
 */
export function discardBody(req: IncomingMessage): void {
  if (req.readableEnded || req.destroyed) return;
  let discarded = 0;
  req.removeAllListeners('data');
  req.on('data', (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > DISCARD_LIMIT_BYTES) req.socket.destroy();
  });
  req.on('error', () => undefined);
  req.resume();
}
