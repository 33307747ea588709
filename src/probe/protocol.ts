/**
 * What the probe speaks to a target: the bytes of a request, a parser of the replies on one connection,
 * and what a reply says (success, the service's counter, whether the server closes). HTTP GETs answered
 * by godwit-counterd's `counter N`; Redis `INCR godwit:probe` answered by the integer. Pure; no I/O.
 */
import {
  counterFromBody,
  getRequest,
  HttpResponseParser,
  type HttpResponse,
  type ProbeTarget,
} from './http.js';
import { describeReply, encodeCommand, RespParser, type RespValue } from './resp.js';

/** A reply as the probe sees it. */
export interface ProbeReply {
  /** A success: a 2xx status (HTTP), an integer (Redis). */
  ok: boolean;
  /** What the reply was when it is not a success, e.g. `HTTP 503` or `-ERR …`. */
  problem?: string;
  /** The service's counter, when the reply carries one. */
  counter?: number;
  /** The server closes the connection after this reply. */
  closes: boolean;
}

/** Parses the replies of one connection, in order; both methods throw the protocol's error on malformed input. */
export interface ReplyParser {
  /** Every reply completed by `chunk`. */
  push(chunk: Buffer): ProbeReply[];
  /** The peer closed: the reply the close completes, if any. */
  end(): ProbeReply | undefined;
}

/** A request/reply protocol of the probe; one request outstanding per connection at a time. */
export interface ProbeProtocol {
  readonly name: 'http' | 'redis';
  /** The bytes of one request; `keepAlive` for the long-lived connection, else the connection is closed after the reply. */
  request(keepAlive: boolean): Buffer;
  parser(): ReplyParser;
}

/** The key the Redis probe increments. */
export const REDIS_PROBE_KEY = 'godwit:probe';

/** The protocol of a parsed target. */
export function protocolFor(target: ProbeTarget): ProbeProtocol {
  return target.protocol === 'redis' ? redisProtocol() : httpProtocol(target);
}

/** GET `target.path`; a 2xx status is a success, `counter N` in the body the counter. */
export function httpProtocol(target: ProbeTarget): ProbeProtocol {
  const keepAlive = getRequest(target, true);
  const close = getRequest(target, false);
  const reply = (r: HttpResponse): ProbeReply => {
    const ok = r.status >= 200 && r.status <= 299;
    const counter = counterFromBody(r.body);
    return {
      ok,
      ...(ok ? {} : { problem: `HTTP ${r.status}` }),
      ...(counter === undefined ? {} : { counter }),
      closes: r.closes,
    };
  };
  return {
    name: 'http',
    request: (k) => (k ? keepAlive : close),
    parser() {
      const p = new HttpResponseParser();
      return {
        push: (chunk) => p.push(chunk).map(reply),
        end: () => {
          const last = p.end();
          return last === undefined ? undefined : reply(last);
        },
      };
    },
  };
}

/** `INCR godwit:probe` on both series; the integer reply is a success and the counter. */
export function redisProtocol(): ProbeProtocol {
  const incr = encodeCommand(['INCR', REDIS_PROBE_KEY]);
  return {
    name: 'redis',
    request: () => incr,
    parser() {
      const p = new RespParser();
      return {
        push: (chunk) => p.push(chunk).map(redisReply),
        end: () => {
          p.end();
          return undefined;
        },
      };
    },
  };
}

function redisReply(v: RespValue): ProbeReply {
  if (v.type === 'integer') return { ok: true, counter: v.value, closes: false };
  return {
    ok: false,
    problem: v.type === 'error' ? `-${v.message}` : `unexpected reply ${describeReply(v)}`,
    closes: false,
  };
}
