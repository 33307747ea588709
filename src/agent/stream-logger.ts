import type { Logger } from '../core/logger.js';

/**
 * Writes one JSON object per line to a stream (stderr for `godwit agent --json-logs`), in
 * the same shape as JsonFileLogger. A failing write is dropped.
 */
export class JsonStreamLogger implements Logger {
  constructor(
    private readonly stream: NodeJS.WritableStream,
    private readonly fields: Record<string, unknown> = {},
  ) {}

  info(msg: string, fields?: Record<string, unknown>): void {
    this.write('info', msg, fields);
  }
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.write('warn', msg, fields);
  }
  error(msg: string, fields?: Record<string, unknown>): void {
    this.write('error', msg, fields);
  }
  child(fields: Record<string, unknown>): Logger {
    return new JsonStreamLogger(this.stream, { ...this.fields, ...fields });
  }

  private write(level: string, msg: string, fields?: Record<string, unknown>): void {
    try {
      this.stream.write(
        JSON.stringify({ t: new Date().toISOString(), level, msg, ...this.fields, ...fields }) + '\n',
      );
    } catch {
      // see class comment
    }
  }
}

/** A logger that writes every entry to each of `sinks`. */
export function teeLogger(...sinks: Logger[]): Logger {
  return {
    info: (msg, fields) => sinks.forEach((s) => s.info(msg, fields)),
    warn: (msg, fields) => sinks.forEach((s) => s.warn(msg, fields)),
    error: (msg, fields) => sinks.forEach((s) => s.error(msg, fields)),
    child: (fields) => teeLogger(...sinks.map((s) => s.child(fields))),
  };
}
