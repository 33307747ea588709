/**
 * The little RESP (Redis serialization protocol, version 2) a probe needs: commands as arrays of bulk
 * strings, and an incremental parser of replies: simple strings, errors, integers, bulk strings and
 * arrays, within size limits. Pure; no I/O.
 */

/** A reply. A null bulk string (`$-1`) has value null; a null array (`*-1`) has items null. */
export type RespValue =
  | { type: 'simple'; value: string }
  | { type: 'error'; message: string }
  | { type: 'integer'; value: number }
  | { type: 'bulk'; value: Buffer | null }
  | { type: 'array'; items: RespValue[] | null };

/** A reply that breaks RESP's framing, or exceeds the parser's limits. */
export class RespProtocolError extends Error {
  readonly code = 'RESP_PROTOCOL';
  constructor(message: string) {
    super(message);
    this.name = 'RespProtocolError';
  }
}

/** Limits of `RespParser`; a reply beyond them is a protocol error. */
export const RESP_LIMITS = {
  /** A `+`, `-` or `:` line, or a length line, CRLF excluded. */
  lineBytes: 64 * 1024,
  bulkBytes: 4 * 1024 * 1024,
  arrayItems: 64 * 1024,
  /** Nesting of arrays. */
  depth: 8,
} as const;

/** The bytes of a command: an array of bulk strings. */
export function encodeCommand(args: readonly (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`, 'latin1')];
  for (const arg of args) {
    const data = typeof arg === 'string' ? Buffer.from(arg, 'utf8') : arg;
    parts.push(Buffer.from(`$${data.length}\r\n`, 'latin1'), data, Buffer.from('\r\n', 'latin1'));
  }
  return Buffer.concat(parts);
}

/** A reply as one line of text, for messages: `+OK`, `-ERR …`, `:3`, `"bulk"`, `[…]`. */
export function describeReply(v: RespValue): string {
  switch (v.type) {
    case 'simple':
      return `+${v.value}`;
    case 'error':
      return `-${v.message}`;
    case 'integer':
      return `:${v.value}`;
    case 'bulk':
      return v.value === null ? '(nil)' : JSON.stringify(v.value.toString('latin1', 0, 80));
    case 'array':
      return v.items === null ? '(nil array)' : `[${v.items.map(describeReply).join(', ')}]`;
  }
}

/** Incomplete input: more bytes are needed. */
const MORE = Symbol('more');

/**
 * Incremental parser of the replies on one connection, in order. `push` takes bytes as they arrive and
 * returns every reply completed by them; `end` is called when the peer closes. Both throw RespProtocolError
 * on malformed input; the parser is unusable afterwards. Integers beyond ±2^53 are refused.
 */
export class RespParser {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;

  /** True while a reply has begun (some bytes arrived) but is not complete. */
  get inProgress(): boolean {
    return this.buf.length > 0;
  }

  push(chunk: Buffer): RespValue[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: RespValue[] = [];
    while (this.buf.length > 0) {
      this.pos = 0;
      const v = this.value(0);
      if (v === MORE) break;
      out.push(v);
      this.buf = this.buf.subarray(this.pos);
    }
    return out;
  }

  /** Throws when the connection closed in the middle of a reply. */
  end(): void {
    if (this.inProgress) throw new RespProtocolError('connection closed in the middle of a reply');
  }

  /** Parses one value at `pos`; MORE when the buffer ends first (pos is then meaningless). */
  private value(depth: number): RespValue | typeof MORE {
    const line = this.line();
    if (line === MORE) return MORE;
    const type = line[0];
    const rest = line.slice(1);
    switch (type) {
      case '+':
        return { type: 'simple', value: rest };
      case '-':
        return { type: 'error', message: rest };
      case ':':
        return { type: 'integer', value: integer(rest) };
      case '$': {
        const n = length(rest, RESP_LIMITS.bulkBytes, 'bulk string');
        if (n < 0) return { type: 'bulk', value: null };
        if (this.buf.length < this.pos + n + 2) return MORE;
        const value = this.buf.subarray(this.pos, this.pos + n);
        if (this.buf[this.pos + n] !== 0x0d || this.buf[this.pos + n + 1] !== 0x0a) {
          throw new RespProtocolError(`bulk string of ${n} bytes not followed by CRLF`);
        }
        this.pos += n + 2;
        return { type: 'bulk', value: Buffer.from(value) };
      }
      case '*': {
        const n = length(rest, RESP_LIMITS.arrayItems, 'array');
        if (n < 0) return { type: 'array', items: null };
        if (depth + 1 > RESP_LIMITS.depth) {
          throw new RespProtocolError(`arrays nested deeper than ${RESP_LIMITS.depth}`);
        }
        const items: RespValue[] = [];
        for (let i = 0; i < n; i++) {
          const item = this.value(depth + 1);
          if (item === MORE) return MORE;
          items.push(item);
        }
        return { type: 'array', items };
      }
      default:
        throw new RespProtocolError(`unknown reply type ${JSON.stringify(line.slice(0, 40))}`);
    }
  }

  /** The line at `pos` without its CRLF, moving past it; MORE when no CRLF is there yet. */
  private line(): string | typeof MORE {
    const eol = this.buf.indexOf('\r\n', this.pos, 'latin1');
    if (eol < 0) {
      if (this.buf.length - this.pos > RESP_LIMITS.lineBytes + 1) {
        throw new RespProtocolError(`reply line longer than ${RESP_LIMITS.lineBytes} bytes`);
      }
      return MORE;
    }
    if (eol - this.pos > RESP_LIMITS.lineBytes) {
      throw new RespProtocolError(`reply line longer than ${RESP_LIMITS.lineBytes} bytes`);
    }
    if (eol === this.pos) throw new RespProtocolError('empty reply line');
    const text = this.buf.toString('latin1', this.pos, eol);
    this.pos = eol + 2;
    return text;
  }
}

function integer(text: string): number {
  if (!/^[-+]?\d{1,20}$/.test(text))
    throw new RespProtocolError(`bad integer ${JSON.stringify(text.slice(0, 40))}`);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new RespProtocolError(`integer ${text} is beyond ±2^53`);
  return n;
}

/** A `$` or `*` length: -1 (null) or 0..max. */
function length(text: string, max: number, what: string): number {
  if (text === '-1') return -1;
  if (!/^\d{1,10}$/.test(text))
    throw new RespProtocolError(`bad ${what} length ${JSON.stringify(text.slice(0, 40))}`);
  const n = Number(text);
  if (n > max)
    throw new RespProtocolError(`${what} of ${n} ${what === 'array' ? 'items' : 'bytes'} is too large`);
  return n;
}
