export * from './errors.js';
export * from './clock.js';
export * from './runtime.js';
export * from './logger.js';
export * from './network.js';
export * from './testbed.js';
export * from './chunks.js';
export * from './migration.js';
