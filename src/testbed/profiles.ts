/**
 * Named link profiles of the testbed and the parser of `--link` values. Pure.
 * A profile's delay is one-way and applies in each direction, so the RTT is about twice it.
 */
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';
import type { LinkSpec } from '../core/testbed.js';

/** The named profiles: a LAN, an edge uplink, a 4G cell, a lossy WAN. */
export const LINK_PROFILES: Readonly<Record<string, Readonly<LinkSpec>>> = Object.freeze({
  lan: Object.freeze({ name: 'lan', rateMbit: 1000, delayMs: 0.5, lossPct: 0 }),
  edge: Object.freeze({ name: 'edge', rateMbit: 100, delayMs: 10, lossPct: 0 }),
  '4g': Object.freeze({ name: '4g', rateMbit: 20, delayMs: 40, lossPct: 0 }),
  wan: Object.freeze({ name: 'wan', rateMbit: 50, delayMs: 50, lossPct: 0.1 }),
});

/** Names of the profiles, in the order above. */
export const LINK_PROFILE_NAMES: readonly string[] = Object.keys(LINK_PROFILES);

/** Limits of a custom link: what htb and godwit-linkd can honour. */
export const LINK_LIMITS = { minRateMbit: 0.01, maxRateMbit: 100_000, maxDelayMs: 10_000 } as const;

/** A copy of the named profile, or undefined. */
export function linkProfile(name: string): LinkSpec | undefined {
  const p = Object.prototype.hasOwnProperty.call(LINK_PROFILES, name) ? LINK_PROFILES[name] : undefined;
  return p === undefined ? undefined : { ...p };
}

const RATE = /^(\d+(?:\.\d+)?)\s*(kbit|mbit|gbit)$/i;
const DELAY = /^(\d+(?:\.\d+)?)\s*(us|ms|s)$/i;
const LOSS = /^(\d+(?:\.\d+)?)\s*%?$/;

/**
 * Parses a profile name (`edge`) or `RATE,DELAY[,LOSS]` (`100mbit,10ms,0.5%`): rate in
 * kbit/mbit/gbit, one-way delay in us/ms/s, loss in percent. Throws InvalidLinkSpec.
 */
export function parseLinkSpec(text: string): LinkSpec {
  const value = text.trim();
  const named = linkProfile(value.toLowerCase());
  if (named) return named;
  const parts = value.split(',').map((p) => p.trim());
  if (parts.length < 2 || parts.length > 3 || !/\d/.test(value)) {
    throw invalid(text, `expected a profile (${LINK_PROFILE_NAMES.join(', ')}) or RATE,DELAY[,LOSS]`);
  }
  const [rateText = '', delayText = '', lossText] = parts;

  const r = RATE.exec(rateText);
  if (!r) throw invalid(text, `rate ${JSON.stringify(rateText)}: expected e.g. 100mbit, 512kbit or 1gbit`);
  const rateMbit = Number(r[1]) * { kbit: 0.001, mbit: 1, gbit: 1000 }[r[2]!.toLowerCase() as 'mbit'];
  if (rateMbit < LINK_LIMITS.minRateMbit || rateMbit > LINK_LIMITS.maxRateMbit) {
    throw invalid(text, `rate must be between 10kbit and 100gbit`);
  }

  const d = DELAY.exec(delayText);
  if (!d) throw invalid(text, `delay ${JSON.stringify(delayText)}: expected e.g. 10ms, 500us or 0.2s`);
  const delayMs = Number(d[1]) * { us: 0.001, ms: 1, s: 1000 }[d[2]!.toLowerCase() as 'ms'];
  if (delayMs > LINK_LIMITS.maxDelayMs) throw invalid(text, `delay must be at most 10s`);

  let lossPct = 0;
  if (lossText !== undefined) {
    const l = LOSS.exec(lossText);
    if (!l) throw invalid(text, `loss ${JSON.stringify(lossText)}: expected a percentage, e.g. 0.5%`);
    lossPct = Number(l[1]);
    if (lossPct > 100) throw invalid(text, `loss must be between 0% and 100%`);
  }
  return { name: 'custom', rateMbit: round(rateMbit), delayMs: round(delayMs), lossPct: round(lossPct) };
}

/** `edge (100 Mbit/s, 10 ms one way)` or `custom (…, 0.5 % loss)`. */
export function formatLinkSpec(link: LinkSpec): string {
  const parts = [`${link.rateMbit} Mbit/s`, `${link.delayMs} ms one way`];
  if (link.lossPct > 0) parts.push(`${link.lossPct} % loss`);
  return `${link.name} (${parts.join(', ')})`;
}

/** Throws InvalidLinkSpec unless `link` is within LINK_LIMITS (for links read from files). */
export function validateLinkSpec(link: LinkSpec, what = 'link'): LinkSpec {
  const ok =
    typeof link.name === 'string' &&
    Number.isFinite(link.rateMbit) &&
    link.rateMbit >= LINK_LIMITS.minRateMbit &&
    link.rateMbit <= LINK_LIMITS.maxRateMbit &&
    Number.isFinite(link.delayMs) &&
    link.delayMs >= 0 &&
    link.delayMs <= LINK_LIMITS.maxDelayMs &&
    Number.isFinite(link.lossPct) &&
    link.lossPct >= 0 &&
    link.lossPct <= 100;
  if (!ok) throw invalid(JSON.stringify(link), `${what} is out of range`);
  return link;
}

function round(n: number): number {
  return Math.round(n * 1e6) / 1e6;
}

function invalid(text: string, why: string): InvalidArgumentError {
  return new InvalidArgumentError(ErrorCode.InvalidLinkSpec, `link ${JSON.stringify(text)}: ${why}`, {
    hint: `use ${LINK_PROFILE_NAMES.join(', ')} or RATE,DELAY[,LOSS], e.g. 100mbit,10ms,0.5%`,
  });
}
