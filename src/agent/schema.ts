/**
 * A small schema layer for values that cross a process boundary (agent requests and
 * responses). Each schema checks an `unknown` and returns it typed, or throws an
 * InvalidArgumentError whose message names the offending field (`network.ip: …`).
 *
 * Hand-written rather than a dependency: the API has a dozen small bodies, validation is
 * not on a hot path, and this keeps messages exact (unknown fields named, ranges stated)
 * and the agent free of runtime dependencies.
 */
import { isAbsolute } from 'node:path';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';

/** Checks an untrusted value. `path` names it in errors (`''` for the whole document). */
export interface Schema<T> {
  parse(value: unknown, path: string): T;
  /** What a valid value is, for messages: `a string`, `an integer 1..65535`. */
  readonly expected: string;
}

/** A schema marked as an optional object field. */
export interface OptionalSchema<T> extends Schema<T> {
  readonly optional: true;
}

/** The type a schema produces. */
export type Infer<S> = S extends Schema<infer T> ? T : never;

type Shape = Record<string, Schema<unknown>>;
type Simplify<T> = { [K in keyof T]: T[K] } & {};
type RequiredKeys<S extends Shape> = {
  [K in keyof S]: S[K] extends OptionalSchema<unknown> ? never : K;
}[keyof S];
type OptionalKeys<S extends Shape> = {
  [K in keyof S]: S[K] extends OptionalSchema<unknown> ? K : never;
}[keyof S];
/** The object type described by a shape: optional schemas become optional properties. */
export type ObjectOf<S extends Shape> = Simplify<
  { [K in RequiredKeys<S>]: Infer<S[K]> } & { [K in OptionalKeys<S>]?: Infer<S[K]> }
>;

/** The error every schema throws. `path` is prefixed to the message when set. */
export function invalid(path: string, message: string, hint?: string): InvalidArgumentError {
  return new InvalidArgumentError(
    ErrorCode.RequestInvalid,
    path ? `${path}: ${message}` : message,
    hint === undefined ? undefined : { hint },
  );
}

/** A short, safe rendering of a received value for error messages. */
export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') {
    const s = JSON.stringify(v.length > 40 ? `${v.slice(0, 39)}…` : v);
    return `the string ${s}`;
  }
  return String(v);
}

function typeError(path: string, expected: string, got: unknown): InvalidArgumentError {
  return invalid(path, `expected ${expected}, got ${describeValue(got)}`);
}

/** Options of `string`. */
export interface StringRules {
  minLength?: number;
  maxLength?: number;
  pattern?: RegExp;
  /** Replaces `a string` in messages, e.g. `an IPv4 address`. */
  expected?: string;
  /** Extra check; returns a message when the value is invalid. */
  check?: (s: string) => string | undefined;
}

/** A string; by default 0..65536 characters and without NUL (it ends up in argv or paths). */
export function string(rules: StringRules = {}): Schema<string> {
  const min = rules.minLength ?? 0;
  const max = rules.maxLength ?? 65_536;
  const expected = rules.expected ?? 'a string';
  return {
    expected,
    parse(v, path) {
      if (typeof v !== 'string') throw typeError(path, expected, v);
      if (v.length < min)
        throw invalid(path, min === 1 ? 'must not be empty' : `must be at least ${min} characters`);
      if (v.length > max) throw invalid(path, `must be at most ${max} characters (got ${v.length})`);
      if (v.includes('\0')) throw invalid(path, 'must not contain NUL characters');
      if (rules.pattern && !rules.pattern.test(v)) throw typeError(path, expected, v);
      const problem = rules.check?.(v);
      if (problem !== undefined) throw invalid(path, problem);
      return v;
    },
  };
}

/** An absolute path (on the agent's host), at most 4096 characters. */
export function absolutePath(): Schema<string> {
  return string({
    minLength: 1,
    maxLength: 4096,
    expected: 'an absolute path',
    check: (s) => (isAbsolute(s) ? undefined : `must be an absolute path, got ${JSON.stringify(s)}`),
  });
}

/** A safe integer in `min..max` (inclusive). */
export function integer(min: number, max: number): Schema<number> {
  const expected = `an integer ${min}..${max}`;
  return {
    expected,
    parse(v, path) {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
        throw typeError(path, expected, v);
      }
      return v;
    },
  };
}

/** A finite number in `min..max` (inclusive). */
export function number(min: number, max: number): Schema<number> {
  const expected = `a number ${min}..${max}`;
  return {
    expected,
    parse(v, path) {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max)
        throw typeError(path, expected, v);
      return v;
    },
  };
}

/** true or false. */
export function boolean(): Schema<boolean> {
  return {
    expected: 'true or false',
    parse(v, path) {
      if (typeof v !== 'boolean') throw typeError(path, 'true or false', v);
      return v;
    },
  };
}

/** One of the given strings. */
export function oneOf<const T extends string>(values: readonly T[]): Schema<T> {
  const expected = `one of ${values.map((x) => JSON.stringify(x)).join(', ')}`;
  return {
    expected,
    parse(v, path) {
      if (typeof v !== 'string' || !(values as readonly string[]).includes(v))
        throw typeError(path, expected, v);
      return v as T;
    },
  };
}

/** An array of `item` with `minItems..maxItems` elements. */
export function array<T>(item: Schema<T>, opts: { minItems?: number; maxItems?: number } = {}): Schema<T[]> {
  const min = opts.minItems ?? 0;
  const max = opts.maxItems ?? 65_536;
  const expected = `an array of ${item.expected.replace(/^an? /, '')}s`;
  return {
    expected,
    parse(v, path) {
      if (!Array.isArray(v)) throw typeError(path, expected, v);
      if (v.length < min)
        throw invalid(path, min === 1 ? 'must not be empty' : `needs at least ${min} elements`);
      if (v.length > max) throw invalid(path, `must have at most ${max} elements (got ${v.length})`);
      return v.map((x, i) => item.parse(x, `${path}[${i}]`));
    },
  };
}

/** An object used as a map: keys matching `keyPattern`, values of `value`. */
export function stringMap<T>(
  keyPattern: RegExp,
  value: Schema<T>,
  opts: { maxEntries?: number; keyExpected?: string } = {},
): Schema<Record<string, T>> {
  const max = opts.maxEntries ?? 4096;
  return {
    expected: 'an object',
    parse(v, path) {
      if (!isPlainObject(v)) throw typeError(path, 'an object', v);
      const entries = Object.entries(v);
      if (entries.length > max)
        throw invalid(path, `must have at most ${max} entries (got ${entries.length})`);
      // fromEntries defines own properties, so a key such as `__proto__` stays plain data.
      return Object.fromEntries(
        entries.map(([k, x]) => {
          const at = join(path, k);
          if (!keyPattern.test(k)) {
            throw invalid(
              at,
              `invalid key ${JSON.stringify(k)}; expected ${opts.keyExpected ?? String(keyPattern)}`,
            );
          }
          return [k, value.parse(x, at)];
        }),
      );
    },
  };
}

/** Marks a field of `object` as optional: absent (undefined) is allowed; null is not. */
export function optional<T>(schema: Schema<T>): OptionalSchema<T> {
  return { ...schema, optional: true, parse: (v, path) => schema.parse(v, path) };
}

/** Applies a check to a value that has passed `schema`; `check` throws (any GodwitError) when invalid. */
export function refine<T>(schema: Schema<T>, check: (value: T, path: string) => void): Schema<T> {
  return {
    expected: schema.expected,
    parse(v, path) {
      const value = schema.parse(v, path);
      check(value, path);
      return value;
    },
  };
}

/** Options of `object`. */
export interface ObjectRules {
  /**
   * `reject` (default) fails on a field the shape does not name: requests must not carry
   * anything the agent would silently ignore. `keep` passes such fields through unchecked,
   * for responses from a newer agent.
   */
  unknownFields?: 'reject' | 'keep';
}

/** An object with exactly the fields of `shape` (see `ObjectRules`). */
export function object<S extends Shape>(shape: S, rules: ObjectRules = {}): Schema<ObjectOf<S>> {
  const keys = Object.keys(shape);
  return {
    expected: 'an object',
    parse(v, path) {
      if (!isPlainObject(v)) throw typeError(path, 'an object', v);
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(v)) {
        if (Object.hasOwn(shape, k)) continue;
        if ((rules.unknownFields ?? 'reject') === 'reject') {
          throw invalid(
            '',
            `unknown field ${JSON.stringify(join(path, k))}`,
            `known fields${path ? ` of ${path}` : ''}: ${keys.join(', ')}`,
          );
        }
        Object.defineProperty(out, k, { value: v[k], enumerable: true, writable: true, configurable: true });
      }
      for (const k of keys) {
        const field = shape[k] as Schema<unknown> & { optional?: boolean };
        const raw = Object.hasOwn(v, k) ? v[k] : undefined;
        if (raw === undefined) {
          if (field.optional) continue;
          throw invalid('', `missing field ${JSON.stringify(join(path, k))} (${field.expected})`);
        }
        out[k] = field.parse(raw, join(path, k));
      }
      return out as ObjectOf<S>;
    },
  };
}

/** True for `{…}` (not null, not an array). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}
