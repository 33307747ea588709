/**
 * godwit's state sync protocol between agents: a framed binary stream over TCP that offers a
 * manifest, learns which chunks the receiver lacks, and sends only those, compressed and
 * verified, over one or more connections, resuming after a cut without resending what the
 * receiver has verified.
 */
export {
  CODEC_NAMES,
  ChunkCompressor,
  CodecId,
  DEFAULT_CODEC,
  DEFAULT_ZSTD_LEVEL,
  MAX_CHUNK_BYTES,
  ZSTD_MAX_LEVEL,
  ZSTD_MIN_LEVEL,
  decompressChunk,
  parseCodecName,
  type CodecIdValue,
  type CodecName,
  type EncodedChunk,
} from './codec.js';
export {
  DEFAULT_FRAME_LIMITS,
  DEFAULT_MAX_OFFER_BYTES,
  FrameDecoder,
  FrameType,
  RECEIVER_ACCEPTS,
  SENDER_ACCEPTS,
  encodeChunk,
  encodeFrame,
  encodeJsonFrame,
  encodeOffer,
  encodeWant,
  type Frame,
  type FrameLimits,
} from './frames.js';
export {
  MAX_STREAMS,
  PROTOCOL_VERSION,
  SESSION_ID_RE,
  type DoneMessage,
  type EndMessage,
  type HelloMessage,
  type HelloOkMessage,
} from './messages.js';
export type { WireError } from './errors.js';
export {
  completedManifest,
  startTransferServer,
  type TransferServer,
  type TransferServerOptions,
  type TransferSessionInfo,
} from './server.js';
export {
  DEFAULT_READ_AHEAD_BYTES,
  DEFAULT_RETRIES,
  DEFAULT_STREAMS,
  sendManifest,
  type SendManifestOptions,
  type TransferProgress,
  type TransferStats,
} from './client.js';
