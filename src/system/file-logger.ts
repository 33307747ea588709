import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from '../core/logger.js';

/**
 * Writes one JSON object per line (`{"t":…,"level":…,"msg":…,…}`) to a sink. A failing
 * write is dropped: logging never fails the operation it describes.
 */
export class JsonLineLogger implements Logger {
  constructor(
    private readonly sink: (line: string) => void,
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
    return new JsonLineLogger(this.sink, { ...this.fields, ...fields });
  }

  private write(level: string, msg: string, fields?: Record<string, unknown>): void {
    const line = JSON.stringify({ t: new Date().toISOString(), level, msg, ...this.fields, ...fields });
    try {
      this.sink(line + '\n');
    } catch {
      // see class comment
    }
  }
}

/**
 * A JsonLineLogger appending to a file. Writes are synchronous so that a crash right after
 * an event still has it logged.
 */
export class JsonFileLogger extends JsonLineLogger {
  constructor(path: string, fields: Record<string, unknown> = {}) {
    try {
      mkdirSync(dirname(path), { recursive: true });
    } catch {
      // reported by the first write, which is dropped
    }
    super((line) => appendFileSync(path, line), fields);
  }
}
