/**
 * JSON payloads of the sync protocol's control frames and their validators. Every
 * validator rejects unknown fields, wrong types and out-of-range values with
 * TransferProtocol, so nothing unchecked from a peer reaches the session logic.
 */
import { ErrorCategory } from '../core/errors.js';
import { protocolError, type WireError } from './errors.js';

/** Version of the frame format and message set; HELLO carries it, HELLO_OK echoes it. */
export const PROTOCOL_VERSION = 2;

/** Session ids name a directory on the receiver: letters, digits, `.`, `_`, `-`, not first `.`. */
export const SESSION_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Resume tokens: 32 lower-case hex digits issued by the receiver. */
export const RESUME_TOKEN_RE = /^[0-9a-f]{32}$/;
/** Most parallel connections one session may use. */
export const MAX_STREAMS = 16;

/** Sender → receiver, first frame of every connection. */
export interface HelloMessage {
  protocol: number;
  role: 'sender';
  sessionId: string;
  /** This connection's index among the session's parallel connections (0 carries OFFER). */
  stream: number;
  streams: number;
  /** The token from an earlier HELLO_OK of this session: joins or resumes it. */
  resumeToken?: string;
}

/** Receiver → sender, answer to HELLO. */
export interface HelloOkMessage {
  protocol: number;
  sessionId: string;
  resumeToken: string;
  maxChunkSize: number;
  maxOfferBytes: number;
}

/** Sender → receiver: this connection sends no more chunks. */
export interface EndMessage {
  chunks: number;
  rawBytes: number;
}

/** Receiver → sender, answer to END: what this connection delivered and where the session stands. */
export interface DoneMessage {
  /** Every chunk of the manifest is stored and the manifest recorded. */
  complete: boolean;
  /** Chunks of the manifest still missing. */
  missing: number;
  /** Chunks stored from this connection, their raw bytes, and chunks that were already there. */
  chunks: number;
  rawBytes: number;
  duplicates: number;
  /** The same over every connection of the session. */
  sessionChunks: number;
  sessionRawBytes: number;
}

type Checker<T> = (v: unknown, field: string) => T;

function fail(field: string, problem: string): never {
  throw protocolError(`invalid message: ${field} ${problem}`);
}

function record(v: unknown, what: string, allowed: readonly string[]): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(what, 'must be an object');
  const obj = v as Record<string, unknown>;
  for (const k of Object.keys(obj))
    if (!allowed.includes(k)) fail(`${what}.${k.slice(0, 40)}`, 'is not a known field');
  return obj;
}

const int =
  (min: number, max: number): Checker<number> =>
  (v, field) => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
      fail(field, `must be an integer in ${min}..${max}`);
    }
    return v;
  };

const count = int(0, Number.MAX_SAFE_INTEGER);

const matching =
  (re: RegExp, what: string): Checker<string> =>
  (v, field) => {
    if (typeof v !== 'string' || v.length > 256 || !re.test(v)) fail(field, `must be ${what}`);
    return v;
  };

const bool: Checker<boolean> = (v, field) => {
  if (typeof v !== 'boolean') fail(field, 'must be a boolean');
  return v;
};

function text(max: number): Checker<string> {
  return (v, field) => {
    if (typeof v !== 'string' || v.length > max) fail(field, `must be a string of at most ${max} characters`);
    return v;
  };
}

export function parseHello(v: unknown): HelloMessage {
  const o = record(v, 'HELLO', ['protocol', 'role', 'sessionId', 'stream', 'streams', 'resumeToken']);
  const streams = int(1, MAX_STREAMS)(o['streams'], 'HELLO.streams');
  const stream = int(0, streams - 1)(o['stream'], 'HELLO.stream');
  if (o['role'] !== 'sender') fail('HELLO.role', 'must be "sender"');
  const msg: HelloMessage = {
    protocol: int(1, 65_535)(o['protocol'], 'HELLO.protocol'),
    role: 'sender',
    sessionId: matching(SESSION_ID_RE, 'a session id')(o['sessionId'], 'HELLO.sessionId'),
    stream,
    streams,
  };
  if (o['resumeToken'] !== undefined) {
    msg.resumeToken = matching(RESUME_TOKEN_RE, '32 hex digits')(o['resumeToken'], 'HELLO.resumeToken');
  }
  return msg;
}

export function parseHelloOk(v: unknown): HelloOkMessage {
  const o = record(v, 'HELLO_OK', ['protocol', 'sessionId', 'resumeToken', 'maxChunkSize', 'maxOfferBytes']);
  return {
    protocol: int(1, 65_535)(o['protocol'], 'HELLO_OK.protocol'),
    sessionId: matching(SESSION_ID_RE, 'a session id')(o['sessionId'], 'HELLO_OK.sessionId'),
    resumeToken: matching(RESUME_TOKEN_RE, '32 hex digits')(o['resumeToken'], 'HELLO_OK.resumeToken'),
    maxChunkSize: int(1, 1 << 30)(o['maxChunkSize'], 'HELLO_OK.maxChunkSize'),
    maxOfferBytes: int(1, 1 << 30)(o['maxOfferBytes'], 'HELLO_OK.maxOfferBytes'),
  };
}

const CATEGORIES = new Set<string>(Object.values(ErrorCategory));

export function parseWireError(v: unknown): WireError {
  const o = record(v, 'ERROR', ['code', 'message', 'category']);
  const w: WireError = {
    code: matching(/^[A-Z][A-Z0-9_]{0,63}$/, 'an error code')(o['code'], 'ERROR.code'),
    message: text(4096)(o['message'], 'ERROR.message'),
  };
  if (o['category'] !== undefined) {
    const c = o['category'];
    if (typeof c !== 'string' || !CATEGORIES.has(c)) fail('ERROR.category', 'must be an error category');
    w.category = c as ErrorCategory;
  }
  return w;
}

export function parseEnd(v: unknown): EndMessage {
  const o = record(v, 'END', ['chunks', 'rawBytes']);
  return { chunks: count(o['chunks'], 'END.chunks'), rawBytes: count(o['rawBytes'], 'END.rawBytes') };
}

export function parseDone(v: unknown): DoneMessage {
  const keys = [
    'complete',
    'missing',
    'chunks',
    'rawBytes',
    'duplicates',
    'sessionChunks',
    'sessionRawBytes',
  ];
  const o = record(v, 'DONE', keys);
  return {
    complete: bool(o['complete'], 'DONE.complete'),
    missing: count(o['missing'], 'DONE.missing'),
    chunks: count(o['chunks'], 'DONE.chunks'),
    rawBytes: count(o['rawBytes'], 'DONE.rawBytes'),
    duplicates: count(o['duplicates'], 'DONE.duplicates'),
    sessionChunks: count(o['sessionChunks'], 'DONE.sessionChunks'),
    sessionRawBytes: count(o['sessionRawBytes'], 'DONE.sessionRawBytes'),
  };
}
