import type { Logger } from '../core/logger.js';
import { JsonLineLogger } from '../system/file-logger.js';

/** A JsonLineLogger writing to a stream (stderr for `godwit agent --json-logs`). */
export class JsonStreamLogger extends JsonLineLogger {
  constructor(stream: NodeJS.WritableStream, fields: Record<string, unknown> = {}) {
    super((line) => stream.write(line), fields);
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
