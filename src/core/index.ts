export * from './errors.js';
export * from './clock.js';
export * from './runtime.js';
export * from './logger.js';
