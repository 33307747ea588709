/** The service-interruption probe: two series (fresh and long-lived connections) of HTTP or Redis requests against one target. */
export * from './probe.js';
export {
  counterFromBody,
  formatHostPort,
  parseTarget,
  REDIS_DEFAULT_PORT,
  type ProbeTarget,
} from './http.js';
export { REDIS_PROBE_KEY, type ProbeProtocol, type ProbeReply } from './protocol.js';
export { describeReply, encodeCommand, RespParser, RespProtocolError, type RespValue } from './resp.js';
export { longestGap, percentile, summarizeLatency, type Gap, type LatencySummary } from './stats.js';
