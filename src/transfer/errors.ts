/** Errors of the sync protocol and how they cross the wire (internal to transfer/). */
import {
  AlreadyExistsError,
  ErrorCategory,
  ErrorCode,
  FailedPreconditionError,
  GodwitError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  type GodwitErrorOptions,
} from '../core/errors.js';

/** A malformed frame or a frame out of place: the peer does not speak the protocol. */
export function protocolError(message: string, options?: GodwitErrorOptions): GodwitError {
  return new InvalidArgumentError(ErrorCode.TransferProtocol, message, options);
}

/** A frame, offer or chunk over a limit. */
export function tooLargeError(message: string, options?: GodwitErrorOptions): GodwitError {
  return new InvalidArgumentError(ErrorCode.TransferTooLarge, message, options);
}

/** The connection ended or failed; retrying may help. */
export function connectionLost(message: string, cause?: unknown): GodwitError {
  return new UnavailableError(
    ErrorCode.TransferConnectionLost,
    message,
    cause === undefined ? {} : { cause },
  );
}

/** The caller's AbortSignal fired. */
export function abortedError(reason?: unknown): GodwitError {
  return new FailedPreconditionError(
    ErrorCode.TransferAborted,
    'transfer aborted',
    reason === undefined ? {} : { cause: reason },
  );
}

/** Wire form of an error: what an ERROR frame carries. */
export interface WireError {
  code: string;
  message: string;
  category?: ErrorCategory;
}

/** The ERROR payload for any thrown value; non-godwit errors become Internal without details. */
export function toWireError(err: unknown): WireError {
  if (err instanceof GodwitError) {
    return { code: err.code, message: err.message.slice(0, 2000), category: err.category };
  }
  return { code: ErrorCode.Internal, message: 'internal error', category: ErrorCategory.Internal };
}

/** An error the peer reported in an ERROR frame, rebuilt with its code and category. */
export function fromWireError(w: WireError, peer: string): GodwitError {
  const message = `${peer}: ${w.message}`;
  switch (w.category) {
    case ErrorCategory.NotFound:
      return new NotFoundError(w.code, message);
    case ErrorCategory.AlreadyExists:
      return new AlreadyExistsError(w.code, message);
    case ErrorCategory.FailedPrecondition:
      return new FailedPreconditionError(w.code, message);
    case ErrorCategory.InvalidArgument:
      return new InvalidArgumentError(w.code, message);
    case ErrorCategory.Unavailable:
      return new UnavailableError(w.code, message);
    default:
      return new InternalError(w.code, message);
  }
}

/** True when a later attempt may succeed: the link or the peer was unavailable. */
export function isRetryable(err: unknown): boolean {
  if (!(err instanceof GodwitError)) return false;
  if (err.code === ErrorCode.TransferAborted) return false;
  return err.category === ErrorCategory.Unavailable;
}
