/**
 * The little HTTP/1.1 a probe needs: target parsing (HTTP and Redis targets), GET requests and an
 * incremental response parser (Content-Length, chunked, or delimited by the connection's close). Pure; no I/O.
 */
import { isIP } from 'node:net';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';

/** Where a probe sends its requests. */
export interface ProbeTarget {
  /** Host name or IP address (IPv6 without brackets). */
  host: string;
  port: number;
  /** Request target, starting with `/`; empty for Redis. */
  path: string;
  /** `redis` for a `redis://` target; absent for HTTP. */
  protocol?: 'redis';
}

/** The port of a `redis://` target without one. */
export const REDIS_DEFAULT_PORT = 6379;

/**
 * Parses `host:port`, `host:port/path`, `[v6]:port` or `http://host[:port]/path` (port 80 by default for the
 * URL form), or `redis://host[:port]` (port 6379 by default). Throws InvalidFlag on anything else (https, no
 * port in the short form, a bad port, a Redis database or credentials).
 */
export function parseTarget(text: string): ProbeTarget {
  const bad = (why: string): InvalidArgumentError =>
    new InvalidArgumentError(ErrorCode.InvalidFlag, `probe target ${JSON.stringify(text)}: ${why}`, {
      hint: 'use host:port, http://host:port/path or redis://host:port, e.g. 127.0.0.1:8080',
    });
  const trimmed = text.trim();
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed)) {
    let url: URL;
    try {
      url = new URL(trimmed);
    } catch {
      throw bad('not a URL');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'redis:') {
      throw bad(`${url.protocol.slice(0, -1)} is not supported (only http and redis)`);
    }
    if (url.username || url.password) throw bad('credentials are not supported');
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    if (host === '') throw bad('no host');
    if (url.protocol === 'redis:') {
      if ((url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.hash !== '') {
        throw bad('a database, path or query is not supported for redis');
      }
      const port = url.port === '' ? REDIS_DEFAULT_PORT : Number(url.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad('port must be 1–65535');
      return { host, port, path: '', protocol: 'redis' };
    }
    return {
      host,
      port: url.port === '' ? 80 : Number(url.port),
      path: `${url.pathname}${url.search}` || '/',
    };
  }
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:/[\]\s]+):(\d{1,5})(\/\S*)?$/.exec(trimmed);
  if (!m) throw bad('expected host:port');
  const host = (m[1] ?? '').replace(/^\[(.*)\]$/, '$1');
  if (m[1]?.startsWith('[') && isIP(host) !== 6) throw bad('not an IPv6 address');
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad('port must be 1–65535');
  return { host, port, path: m[3] ?? '/' };
}

/** `host:port` as written in a Host header or a report (`[v6]:port` for IPv6). */
export function formatHostPort(target: ProbeTarget): string {
  return isIP(target.host) === 6 ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
}

/** The bytes of a GET request for `target`; `keepAlive` chooses the Connection header. */
export function getRequest(target: ProbeTarget, keepAlive: boolean): Buffer {
  return Buffer.from(
    `GET ${target.path} HTTP/1.1\r\nHost: ${formatHostPort(target)}\r\nUser-Agent: godwit-probe\r\n` +
      `Accept: */*\r\nConnection: ${keepAlive ? 'keep-alive' : 'close'}\r\n\r\n`,
    'latin1',
  );
}

/** A complete response. Header names are lower case; repeated headers are joined with `, `. */
export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  /** The server said `Connection: close` (or answered HTTP/1.0 without keep-alive). */
  closes: boolean;
}

/** A response that breaks HTTP/1.1's framing rules, or exceeds the parser's limits. */
export class HttpProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HttpProtocolError';
  }
}

/** Limits of `HttpResponseParser`; a response beyond them is a protocol error. */
export const HTTP_LIMITS = { headerBytes: 64 * 1024, bodyBytes: 4 * 1024 * 1024 } as const;

type BodyMode =
  | { kind: 'length'; remaining: number }
  | { kind: 'chunked'; state: 'size' | 'data' | 'data-crlf' | 'trailers'; remaining: number }
  | { kind: 'close' };

/**
 * Incremental parser of the responses on one connection, in order. `push` takes bytes as they arrive and
 * returns every response completed by them; `end` is called when the peer closes and returns the response a
 * close completes (a body delimited by the close), if any. Both throw HttpProtocolError on malformed input.
 * Interim 1xx responses are skipped. Responses to HEAD are not supported (the probe only sends GET).
 */
export class HttpResponseParser {
  private buf: Buffer = Buffer.alloc(0);
  private head: Omit<HttpResponse, 'body'> | undefined;
  private mode: BodyMode | undefined;
  private body: Buffer[] = [];
  private bodyBytes = 0;

  /** True while a response has begun (some bytes arrived) but is not complete. */
  get inProgress(): boolean {
    return this.head !== undefined || this.buf.length > 0;
  }

  push(chunk: Buffer): HttpResponse[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: HttpResponse[] = [];
    for (;;) {
      const res = this.step();
      if (res === undefined) break;
      out.push(res);
    }
    return out;
  }

  end(): HttpResponse | undefined {
    if (this.head !== undefined && this.mode?.kind === 'close') return this.finish();
    if (this.inProgress) throw new HttpProtocolError('connection closed in the middle of a response');
    return undefined;
  }

  /** Parses as far as the buffer allows; returns a response when one completes. */
  private step(): HttpResponse | undefined {
    for (;;) {
      if (this.head === undefined) {
        if (!this.parseHead()) return undefined;
        continue;
      }
      const mode = this.mode;
      if (mode === undefined) throw new HttpProtocolError('internal: no body mode');
      if (mode.kind === 'close') {
        this.take(this.buf.length);
        return undefined;
      }
      if (mode.kind === 'length') {
        const n = Math.min(mode.remaining, this.buf.length);
        this.take(n);
        mode.remaining -= n;
        return mode.remaining === 0 ? this.finish() : undefined;
      }
      // chunked
      if (mode.state === 'size' || mode.state === 'data-crlf' || mode.state === 'trailers') {
        const eol = this.buf.indexOf('\r\n');
        if (eol < 0) {
          if (this.buf.length > HTTP_LIMITS.headerBytes) throw new HttpProtocolError('chunk line too long');
          return undefined;
        }
        const line = this.buf.subarray(0, eol).toString('latin1');
        this.buf = this.buf.subarray(eol + 2);
        if (mode.state === 'data-crlf') {
          if (line !== '') throw new HttpProtocolError('chunk data not followed by CRLF');
          mode.state = 'size';
        } else if (mode.state === 'trailers') {
          if (line === '') return this.finish();
        } else {
          const m = /^([0-9a-fA-F]{1,8})(;.*)?$/.exec(line.trim());
          if (!m) throw new HttpProtocolError(`bad chunk size ${JSON.stringify(line.slice(0, 40))}`);
          const size = parseInt(m[1] ?? '', 16);
          if (size === 0) mode.state = 'trailers';
          else {
            mode.state = 'data';
            mode.remaining = size;
          }
        }
        continue;
      }
      const n = Math.min(mode.remaining, this.buf.length);
      this.take(n);
      mode.remaining -= n;
      if (mode.remaining > 0) return undefined;
      mode.state = 'data-crlf';
    }
  }

  /** Parses a status line and headers when complete; returns false when more bytes are needed. */
  private parseHead(): boolean {
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.buf.length > HTTP_LIMITS.headerBytes) throw new HttpProtocolError('response head too large');
      return false;
    }
    const lines = this.buf.subarray(0, end).toString('latin1').split('\r\n');
    this.buf = this.buf.subarray(end + 4);
    const statusLine = lines[0] ?? '';
    const m = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(statusLine);
    if (!m) throw new HttpProtocolError(`bad status line ${JSON.stringify(statusLine.slice(0, 60))}`);
    const http10 = m[1] === '0';
    const status = Number(m[2]);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon <= 0) throw new HttpProtocolError(`bad header line ${JSON.stringify(line.slice(0, 60))}`);
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
    }
    if (status >= 100 && status < 200) return true; // interim response: skip it, parse the next head
    const connection = (headers['connection'] ?? '').toLowerCase();
    const closes = connection.includes('close') || (http10 && !connection.includes('keep-alive'));
    this.head = { status, headers, closes };
    this.body = [];
    this.bodyBytes = 0;
    const te = headers['transfer-encoding'];
    const cl = headers['content-length'];
    if (status === 204 || status === 304) this.mode = { kind: 'length', remaining: 0 };
    else if (te !== undefined && /(^|,)\s*chunked\s*$/i.test(te))
      this.mode = { kind: 'chunked', state: 'size', remaining: 0 };
    else if (cl !== undefined) {
      if (!/^\d{1,15}$/.test(cl)) throw new HttpProtocolError(`bad Content-Length ${JSON.stringify(cl)}`);
      const length = Number(cl);
      if (length > HTTP_LIMITS.bodyBytes) throw new HttpProtocolError(`body of ${length} bytes is too large`);
      this.mode = { kind: 'length', remaining: length };
    } else this.mode = { kind: 'close' };
    return true;
  }

  private take(n: number): void {
    if (n === 0) return;
    this.bodyBytes += n;
    if (this.bodyBytes > HTTP_LIMITS.bodyBytes) throw new HttpProtocolError('response body too large');
    this.body.push(this.buf.subarray(0, n));
    this.buf = this.buf.subarray(n);
  }

  private finish(): HttpResponse {
    const head = this.head;
    if (head === undefined) throw new HttpProtocolError('internal: no response head');
    const res: HttpResponse = { ...head, body: Buffer.concat(this.body) };
    this.head = undefined;
    this.mode = undefined;
    this.body = [];
    this.bodyBytes = 0;
    return res;
  }
}

/** The N of a `counter N` line in a response body (godwit-counterd's format), or undefined. */
export function counterFromBody(body: Buffer | string): number | undefined {
  const text = typeof body === 'string' ? body : body.toString('latin1', 0, Math.min(body.length, 4096));
  const m = /^counter (\d{1,15})\s*$/m.exec(text);
  return m ? Number(m[1]) : undefined;
}
