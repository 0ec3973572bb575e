/**
 * Every error the library throws on purpose is a RecodeError with a stable `code`, so callers can branch
 * on `err.code` rather than on message text. Native code throws plain Errors with the same `code` field.
 *
 * Codes: ERR_INVALID_ARG (bad argument to a function), ERR_CONFIG (a configuration field is invalid),
 * ERR_DATA (a data file is malformed: the message names file and line), ERR_MODEL (a model folder is
 * malformed), ERR_PYTHON (no usable python3), ERR_CUDA_UNAVAILABLE, ERR_NATIVE_LOAD (the addon did not
 * load), ERR_KERNEL (a native kernel failed), ABORT_ERR (cancelled through an AbortSignal).
 */
export class RecodeError extends Error {
  readonly code: string
  constructor (code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'RecodeError'
    this.code = code
  }
}

export function abortError (): RecodeError {
  return new RecodeError('ABORT_ERR', 'the operation was aborted')
}

export function invalidArg (what: string): RecodeError {
  return new RecodeError('ERR_INVALID_ARG', what)
}
