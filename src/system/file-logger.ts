import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from '../core/logger.js';

/**
 * Appends one JSON object per line to a file (`{"t":…,"level":…,"msg":…,…}`).
 * Writes are synchronous so that a crash right after an event still has it logged.
 * A failing write is dropped: logging never fails the operation it describes.
 */
export class JsonFileLogger implements Logger {
  constructor(
    private readonly path: string,
    private readonly fields: Record<string, unknown> = {},
  ) {
    try {
      mkdirSync(dirname(path), { recursive: true });
    } catch {
      // reported by the first write, which is dropped
    }
  }

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
    return new JsonFileLogger(this.path, { ...this.fields, ...fields });
  }

  private write(level: string, msg: string, fields?: Record<string, unknown>): void {
    const line = JSON.stringify({ t: new Date().toISOString(), level, msg, ...this.fields, ...fields });
    try {
      appendFileSync(this.path, line + '\n');
    } catch {
      // see class comment
    }
  }
}
