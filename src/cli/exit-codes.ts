/**
 * The one mapping from godwit's error categories to process exit codes.
 * 0 is success; 1 is kept for "the command ran and reports a negative result"
 * (e.g. `doctor` finding a missing requirement, a demo whose check failed).
 */
import { ErrorCategory, isGodwitError } from '../core/errors.js';

/** Exit codes of the godwit CLI; stable, documented in the README. */
export const ExitCode = {
  Ok: 0,
  Negative: 1,
  Usage: 2,
  NotFound: 3,
  AlreadyExists: 4,
  FailedPrecondition: 5,
  Unavailable: 6,
  Internal: 70,
} as const;

/** The exit code for a thrown value. Non-godwit errors are internal. */
export function exitCodeFor(err: unknown): number {
  if (!isGodwitError(err)) return ExitCode.Internal;
  switch (err.category) {
    case ErrorCategory.InvalidArgument:
      return ExitCode.Usage;
    case ErrorCategory.NotFound:
      return ExitCode.NotFound;
    case ErrorCategory.AlreadyExists:
      return ExitCode.AlreadyExists;
    case ErrorCategory.FailedPrecondition:
      return ExitCode.FailedPrecondition;
    case ErrorCategory.Unavailable:
      return ExitCode.Unavailable;
    case ErrorCategory.Internal:
      return ExitCode.Internal;
  }
}
