import type { Logger } from '../core/logger.js';
import type { AddressAllocator, NetworkProvider } from '../core/network.js';
import { ImageStore } from './image-store.js';
import { RuncRuntime, type RuncTools } from './runc-runtime.js';
import type { StateDir } from './state-dir.js';

/** godwit's static helpers that every busybox image carries in /usr/local/bin. */
export interface ImageHelperTools {
  memload: string;
  counterd: string;
}

/** The images in `imagesDir`, with godwit's helpers: the one place that says which helpers images get. */
export function openLocalImages(imagesDir: string, tools: ImageHelperTools): ImageStore {
  return new ImageStore(imagesDir, { binaries: [tools.memload, tools.counterd] });
}

/**
 * The RuncRuntime of a godwit host on this machine: its state directory, godwit's tools, and
 * its images (openLocalImages).
 */
export function openLocalRuntime(
  state: StateDir,
  tools: RuncTools & ImageHelperTools,
  opts: { log?: Logger; network?: NetworkProvider & AddressAllocator } = {},
): RuncRuntime {
  return new RuncRuntime({
    state,
    tools,
    images: openLocalImages(state.imagesDir, tools),
    ...(opts.log === undefined ? {} : { log: opts.log }),
    ...(opts.network === undefined ? {} : { network: opts.network }),
  });
}
