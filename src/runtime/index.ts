export { openLocalRuntime, type ImageHelperTools } from './local-runtime.js';
export { RuncRuntime, readCheckpoint, isMountPoint, treeBytes, CHECKPOINT_FILES } from './runc-runtime.js';
export type { RuncTools, RuncRuntimeOptions } from './runc-runtime.js';
export { ImageStore, HOST_BUSYBOX } from './image-store.js';
export type { ImageInfo, ImageHelpers } from './image-store.js';
export {
  buildOciConfig,
  parseMemorySize,
  cgroupsPathFor,
  DEFAULT_ENV,
  DEFAULT_CAPABILITIES,
} from './oci-config.js';
export type { OciConfig, OciConfigContext } from './oci-config.js';
export { StateDir, defaultStateDir, validateName, CONTAINER_NAME } from './state-dir.js';
export * from './records.js';
