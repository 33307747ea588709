/**
 * godwit's typed errors. Every failure that leaves a module is a GodwitError
 * with a stable `code` (like undici's `UND_ERR_*`) and one of a small fixed set
 * of categories (like containerd's errdefs). Categories are mapped to CLI exit
 * codes in `cli/exit-codes.ts` and to HTTP status in exactly one place each.
 */

/** The fixed error categories; each code belongs to exactly one. */
export enum ErrorCategory {
  NotFound = 'not-found',
  AlreadyExists = 'already-exists',
  FailedPrecondition = 'failed-precondition',
  InvalidArgument = 'invalid-argument',
  Unavailable = 'unavailable',
  Internal = 'internal',
}

/** Optional context carried with an error: a hint for the user, decisive log lines, the cause. */
export interface GodwitErrorOptions {
  cause?: unknown;
  /** One line telling the user what to do about it. */
  hint?: string;
  /** Lines quoted from a log (e.g. CRIU's dump.log) that explain the failure. */
  details?: readonly string[];
}

/** Base class of every error godwit raises on purpose. */
export abstract class GodwitError extends Error {
  abstract readonly code: string;
  abstract readonly category: ErrorCategory;
  readonly hint: string | undefined;
  readonly details: readonly string[];

  constructor(message: string, options: GodwitErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.hint = options.hint;
    this.details = options.details ?? [];
  }

  /** Plain-object form used by `--json` output and, later, the wire. */
  toJSON(): { code: string; category: ErrorCategory; message: string; hint?: string; details?: string[] } {
    return {
      code: this.code,
      category: this.category,
      message: this.message,
      ...(this.hint === undefined ? {} : { hint: this.hint }),
      ...(this.details.length === 0 ? {} : { details: [...this.details] }),
    };
  }
}

/** A named thing (container, checkpoint, host) does not exist. */
export class NotFoundError extends GodwitError {
  readonly code: string;
  readonly category = ErrorCategory.NotFound;
  constructor(code: string, message: string, options?: GodwitErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** A thing with that name already exists. */
export class AlreadyExistsError extends GodwitError {
  readonly code: string;
  readonly category = ErrorCategory.AlreadyExists;
  constructor(code: string, message: string, options?: GodwitErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** The system is not in a state where the operation can run (missing tool, running container, …). */
export class FailedPreconditionError extends GodwitError {
  readonly code: string;
  readonly category = ErrorCategory.FailedPrecondition;
  constructor(code: string, message: string, options?: GodwitErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** The caller gave an invalid value (flag, name, file contents). */
export class InvalidArgumentError extends GodwitError {
  readonly code: string;
  readonly category = ErrorCategory.InvalidArgument;
  constructor(code: string, message: string, options?: GodwitErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** A dependency (runc, CRIU, the network, a package mirror) failed; retrying may help. */
export class UnavailableError extends GodwitError {
  readonly code: string;
  readonly category = ErrorCategory.Unavailable;
  constructor(code: string, message: string, options?: GodwitErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** A bug or an unexpected state inside godwit. */
export class InternalError extends GodwitError {
  readonly code: string;
  readonly category = ErrorCategory.Internal;
  constructor(code: string, message: string, options?: GodwitErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** Stable error codes. Never renumber or reuse one; add new ones at the end of their group. */
export const ErrorCode = {
  ContainerNotFound: 'GODWIT_CONTAINER_NOT_FOUND',
  ContainerExists: 'GODWIT_CONTAINER_EXISTS',
  ContainerRunning: 'GODWIT_CONTAINER_RUNNING',
  ContainerNotRunning: 'GODWIT_CONTAINER_NOT_RUNNING',
  ImageNotFound: 'GODWIT_IMAGE_NOT_FOUND',
  CheckpointNotFound: 'GODWIT_CHECKPOINT_NOT_FOUND',
  CheckpointCorrupt: 'GODWIT_CHECKPOINT_CORRUPT',
  CheckpointExists: 'GODWIT_CHECKPOINT_EXISTS',
  CriuDumpFailed: 'GODWIT_CRIU_DUMP_FAILED',
  CriuRestoreFailed: 'GODWIT_CRIU_RESTORE_FAILED',
  RuncFailed: 'GODWIT_RUNC_FAILED',
  ToolMissing: 'GODWIT_TOOL_MISSING',
  ToolTooOld: 'GODWIT_TOOL_TOO_OLD',
  SetupFailed: 'GODWIT_SETUP_FAILED',
  InvalidName: 'GODWIT_INVALID_NAME',
  InvalidFlag: 'GODWIT_INVALID_FLAG',
  InvalidState: 'GODWIT_INVALID_STATE',
  NotRoot: 'GODWIT_NOT_ROOT',
  CommandFailed: 'GODWIT_COMMAND_FAILED',
  Timeout: 'GODWIT_TIMEOUT',
  Internal: 'GODWIT_INTERNAL',
  CriuCheckFailed: 'GODWIT_CRIU_CHECK_FAILED',
  NativeBuildFailed: 'GODWIT_NATIVE_BUILD_FAILED',
  NoServiceNetwork: 'GODWIT_NO_SERVICE_NETWORK',
  AgentUnavailable: 'GODWIT_AGENT_UNAVAILABLE',
  AgentRunning: 'GODWIT_AGENT_RUNNING',
  AgentProtocol: 'GODWIT_AGENT_PROTOCOL',
  HostNotFound: 'GODWIT_HOST_NOT_FOUND',
  RequestInvalid: 'GODWIT_REQUEST_INVALID',
  RequestTooLarge: 'GODWIT_REQUEST_TOO_LARGE',
  UnsupportedMediaType: 'GODWIT_UNSUPPORTED_MEDIA_TYPE',
  RouteNotFound: 'GODWIT_ROUTE_NOT_FOUND',
  MethodNotAllowed: 'GODWIT_METHOD_NOT_ALLOWED',
  NotImplemented: 'GODWIT_NOT_IMPLEMENTED',
  TestbedExists: 'GODWIT_TESTBED_EXISTS',
  TestbedNotFound: 'GODWIT_TESTBED_NOT_FOUND',
  TestbedCorrupt: 'GODWIT_TESTBED_CORRUPT',
  InvalidLinkSpec: 'GODWIT_INVALID_LINK_SPEC',
  AddressInUse: 'GODWIT_ADDRESS_IN_USE',
  AddressesExhausted: 'GODWIT_ADDRESSES_EXHAUSTED',
  AgentStartFailed: 'GODWIT_AGENT_START_FAILED',
  NetnsNotFound: 'GODWIT_NETNS_NOT_FOUND',
  MigrationNotFound: 'GODWIT_MIGRATION_NOT_FOUND',
  MigrationInProgress: 'GODWIT_MIGRATION_IN_PROGRESS',
  TransferIncomplete: 'GODWIT_TRANSFER_INCOMPLETE',
  ChunkNotFound: 'GODWIT_CHUNK_NOT_FOUND',
  ChunkDigestMismatch: 'GODWIT_CHUNK_DIGEST_MISMATCH',
  ChunkStoreCorrupt: 'GODWIT_CHUNK_STORE_CORRUPT',
  InvalidDigest: 'GODWIT_INVALID_DIGEST',
  ManifestInvalid: 'GODWIT_MANIFEST_INVALID',
  UnsupportedFile: 'GODWIT_UNSUPPORTED_FILE',
  TargetNotEmpty: 'GODWIT_TARGET_NOT_EMPTY',
  TransferProtocol: 'GODWIT_TRANSFER_PROTOCOL',
  TransferTooLarge: 'GODWIT_TRANSFER_TOO_LARGE',
  TransferSessionConflict: 'GODWIT_TRANSFER_SESSION_CONFLICT',
  TransferBusy: 'GODWIT_TRANSFER_BUSY',
  TransferFailed: 'GODWIT_TRANSFER_FAILED',
  TransferAborted: 'GODWIT_TRANSFER_ABORTED',
  TransferConnectionLost: 'GODWIT_TRANSFER_CONNECTION_LOST',
  DecompressFailed: 'GODWIT_DECOMPRESS_FAILED',
  TransferUnfinished: 'GODWIT_TRANSFER_UNFINISHED',
  ProcessMemoryUnreadable: 'GODWIT_PROCESS_MEMORY_UNREADABLE',
  ManifestBaseNotFound: 'GODWIT_MANIFEST_BASE_NOT_FOUND',
  FaultInjected: 'GODWIT_FAULT_INJECTED',
  PageNotHeld: 'GODWIT_PAGE_NOT_HELD',
  PageProtocol: 'GODWIT_PAGE_PROTOCOL',
  PageSourceLost: 'GODWIT_PAGE_SOURCE_LOST',
  MemoryLost: 'GODWIT_MEMORY_LOST',
  WriteTrackingUnavailable: 'GODWIT_WRITE_TRACKING_UNAVAILABLE',
} as const;
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Narrowing helper for `catch (err: unknown)`. */
export function isGodwitError(err: unknown): err is GodwitError {
  return err instanceof GodwitError;
}

/** The message of any thrown value, for logs. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
