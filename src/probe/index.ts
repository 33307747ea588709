/** The service-interruption probe: two HTTP series (fresh and long-lived connections) against one target. */
export * from './probe.js';
export { counterFromBody, formatHostPort, parseTarget, type ProbeTarget } from './http.js';
export { longestGap, percentile, summarizeLatency, type Gap, type LatencySummary } from './stats.js';
