/**
 * The one mapping between godwit's errors and HTTP: category → status for the agent's
 * responses, and the wire body `{ error: { code, category, message, hint?, details? } }`
 * back into the GodwitError subclass of the same category for the client.
 */
import {
  AlreadyExistsError,
  ErrorCategory,
  ErrorCode,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  errorMessage,
  isGodwitError,
  type GodwitError,
  type GodwitErrorOptions,
} from '../core/errors.js';
import { array, object, oneOf, optional, string } from './schema.js';

/** HTTP status of each category. FailedPrecondition is 412, as in containerd's errhttp. */
export const STATUS_BY_CATEGORY: Readonly<Record<ErrorCategory, number>> = {
  [ErrorCategory.InvalidArgument]: 400,
  [ErrorCategory.NotFound]: 404,
  [ErrorCategory.AlreadyExists]: 409,
  [ErrorCategory.FailedPrecondition]: 412,
  [ErrorCategory.Unavailable]: 503,
  [ErrorCategory.Internal]: 500,
};

/** Codes whose HTTP status is more specific than their category's. */
const STATUS_BY_CODE: Readonly<Record<string, number>> = {
  [ErrorCode.MethodNotAllowed]: 405,
  [ErrorCode.RequestTooLarge]: 413,
  [ErrorCode.UnsupportedMediaType]: 415,
  [ErrorCode.NotImplemented]: 501,
};

/** The HTTP status of an error response carrying `err`. */
export function httpStatusFor(err: GodwitError): number {
  return STATUS_BY_CODE[err.code] ?? STATUS_BY_CATEGORY[err.category];
}

/** Wire form of an error response. */
export interface ErrorBody {
  error: ReturnType<GodwitError['toJSON']>;
}

/** An error response: status and body. */
export interface HttpError {
  status: number;
  body: ErrorBody;
  /** The error as a GodwitError (unexpected exceptions become InternalError). */
  error: GodwitError;
  /** True when `err` was not a GodwitError: a bug, to be logged with its stack. */
  unexpected: boolean;
}

/** Converts anything thrown by a handler into an error response. Never throws. */
export function toHttpError(err: unknown): HttpError {
  const unexpected = !isGodwitError(err);
  const error = isGodwitError(err)
    ? err
    : new InternalError(ErrorCode.Internal, `internal error in the agent: ${errorMessage(err)}`, {
        cause: err,
        hint: 'see the agent log (<state-dir>/logs/agent.log) and report it',
      });
  return { status: httpStatusFor(error), body: { error: error.toJSON() }, error, unexpected };
}

const errorBodySchema = object(
  {
    error: object(
      {
        code: string({ minLength: 1, maxLength: 256 }),
        category: oneOf(Object.values(ErrorCategory)),
        message: string({ maxLength: 1_000_000 }),
        hint: optional(string({ maxLength: 1_000_000 })),
        details: optional(array(string({ maxLength: 1_000_000 }), { maxItems: 10_000 })),
      },
      { unknownFields: 'keep' },
    ),
  },
  { unknownFields: 'keep' },
);

type ErrorClass = new (code: string, message: string, options?: GodwitErrorOptions) => GodwitError;

const CLASS_BY_CATEGORY: Readonly<Record<ErrorCategory, ErrorClass>> = {
  [ErrorCategory.InvalidArgument]: InvalidArgumentError,
  [ErrorCategory.NotFound]: NotFoundError,
  [ErrorCategory.AlreadyExists]: AlreadyExistsError,
  [ErrorCategory.FailedPrecondition]: FailedPreconditionError,
  [ErrorCategory.Unavailable]: UnavailableError,
  [ErrorCategory.Internal]: InternalError,
};

/**
 * Rebuilds the GodwitError an agent answered with (same class, code, message, hint and
 * details). A body that is not a godwit error becomes AgentProtocol (Unavailable), quoting
 * the start of what came back.
 */
export function errorFromResponse(status: number, body: unknown, where: string): GodwitError {
  let wire;
  try {
    wire = errorBodySchema.parse(body, '').error;
  } catch {
    const quoted = typeof body === 'string' ? body : (JSON.stringify(body) ?? '');
    return new UnavailableError(
      ErrorCode.AgentProtocol,
      `${where} answered HTTP ${status} without a godwit error`,
      quoted ? { details: [quoted.slice(0, 300)] } : {},
    );
  }
  const options: GodwitErrorOptions = {};
  if (wire.hint !== undefined) options.hint = wire.hint;
  if (wire.details !== undefined) options.details = wire.details;
  return new CLASS_BY_CATEGORY[wire.category](wire.code, wire.message, options);
}
