/**
 * Parsing of CRIU's logs (dump.log, restore.log, …) and of runc's logrus lines,
 * so that failures quote the few lines that decide them instead of a whole log.
 */

/** Severity of a CRIU log line; CRIU prints "Error" and "Warn" explicitly, the rest is info/debug. */
export type CriuLogLevel = 'error' | 'warn' | 'info';

/** One parsed line of a CRIU log. */
export interface CriuLogEntry {
  /** Seconds since CRIU started, from the `(SS.ssssss)` prefix. */
  time: number;
  level: CriuLogLevel;
  /** Source location such as `criu/files-reg.c:1790`, for error and warn lines. */
  source?: string;
  message: string;
}

const LINE = /^\((\d+\.\d+)\)\s+(?:(Error|Warn)\s+\(([^)]+)\):\s*)?(.*)$/;
/** An error or warning CRIU printed before it stamps its lines (e.g. a page server's failed bind). */
const UNSTAMPED = /^(Error|Warn)\s+\(([^)]+)\):\s*(.*)$/;

/**
 * Errors CRIU reports on every run on this machine kind and that never decide an outcome.
 * Each entry says why it is harmless.
 */
export const BENIGN_CRIU_ERRORS: readonly { pattern: RegExp; why: string }[] = [
  {
    pattern: /rlimit: Can't setup RLIMIT_NOFILE for self/,
    why: 'CRIU tries to raise its own fd limit above the hard limit; it continues with the current one',
  },
];

/**
 * Parses every line of a CRIU log. Lines that do not carry CRIU's time prefix continue the
 * previous entry, unless they are an `Error (…)` or `Warn (…)` line of their own (CRIU prints
 * some before it stamps its lines): those are entries at the previous entry's time (0 first).
 */
export function parseCriuLog(text: string): CriuLogEntry[] {
  const entries: CriuLogEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (line.length === 0) continue;
    const m = LINE.exec(line);
    if (!m) {
      const prev = entries[entries.length - 1];
      const u = UNSTAMPED.exec(line);
      if (u) {
        const [, level, source, message] = u;
        entries.push({
          time: prev?.time ?? 0,
          level: level === 'Error' ? 'error' : 'warn',
          ...(source === undefined ? {} : { source }),
          message: message ?? '',
        });
      } else if (prev) prev.message += `\n${line.trim()}`;
      continue;
    }
    const [, time, level, source, message] = m;
    entries.push({
      time: Number(time),
      level: level === 'Error' ? 'error' : level === 'Warn' ? 'warn' : 'info',
      ...(source === undefined ? {} : { source }),
      message: message ?? '',
    });
  }
  return entries;
}

/** True when an entry is on the benign list. */
export function isBenign(entry: CriuLogEntry): boolean {
  return BENIGN_CRIU_ERRORS.some((b) => b.pattern.test(entry.message));
}

/**
 * The lines that explain a failed CRIU run: its non-benign errors, in order, each
 * formatted as `Error (source): message`, at most `max` of them. When CRIU logged no
 * error, the last info lines are returned instead, since they show where it stopped.
 */
export function decisiveLines(text: string, max = 6): string[] {
  const entries = parseCriuLog(text);
  const errors = errorEntries(entries);
  const picked = errors.length > 0 ? errors : entries.slice(-Math.min(3, max));
  return picked.slice(0, max).map(formatEntry);
}

/** A CRIU log's non-benign errors, formatted as `Error (source): message`, at most `max`; empty when none. */
export function errorLines(text: string, max = 6): string[] {
  return errorEntries(parseCriuLog(text)).slice(0, max).map(formatEntry);
}

function errorEntries(entries: readonly CriuLogEntry[]): CriuLogEntry[] {
  return entries.filter((e) => e.level === 'error' && !isBenign(e));
}

/** One entry as CRIU would print it, without the time prefix. */
export function formatEntry(e: CriuLogEntry): string {
  if (e.level === 'info') return e.message;
  return `${e.level === 'error' ? 'Error' : 'Warn'} (${e.source ?? '?'}): ${e.message}`;
}

/** The CRIU version a log reports in its `Version:` line, if any. */
export function criuVersionFromLog(text: string): string | undefined {
  return /\)\s+Version:\s+(\S+)/.exec(text)?.[1];
}

/** A runc log line in logrus text form. */
export interface RuncLogLine {
  level: string;
  msg: string;
}

/**
 * Parses runc's stderr (`time="…" level=error msg="…"`), unquoting `msg`.
 * Lines in another form are returned with level `unknown`.
 */
export function parseRuncStderr(text: string): RuncLogLine[] {
  const out: RuncLogLine[] = [];
  for (const line of text.split('\n')) {
    if (line.trim().length === 0) continue;
    const level = /\blevel=(\w+)/.exec(line)?.[1];
    const quoted = /\bmsg="((?:[^"\\]|\\.)*)"/.exec(line)?.[1];
    const bare = /\bmsg=(\S+)/.exec(line)?.[1];
    if (level === undefined || (quoted === undefined && bare === undefined)) {
      out.push({ level: 'unknown', msg: line.trim() });
      continue;
    }
    out.push({ level, msg: quoted === undefined ? (bare ?? '') : unescapeGo(quoted) });
  }
  return out;
}

/** The path of the CRIU log runc names in a failure message ("log file: /x/dump.log"). */
export function criuLogPathFromRunc(text: string): string | undefined {
  for (const l of parseRuncStderr(text)) {
    const m = /log file: (\S+)/.exec(l.msg);
    if (m?.[1]) return m[1];
  }
  return undefined;
}

function unescapeGo(s: string): string {
  return s.replace(/\\(["\\nt])/g, (_, c: string) => (c === 'n' ? '\n' : c === 't' ? '\t' : c));
}
