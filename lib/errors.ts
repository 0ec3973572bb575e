/**
 * Every error the library throws on purpose is a RecodeError with a stable `code`, so callers can branch
 * on `err.code` rather than on message text. Native code throws plain Errors with the same `code` field.
 *
 * Codes: ERR_INVALID_ARG (bad argument to a function), ERR_CONFIG (a configuration field is invalid),
 * ERR_DATA (a data file is malformed: the message names file and line), ERR_MODEL (a model folder is
 * malformed), ERR_PYTHON (no usable python3), ERR_CUDA_UNAVAILABLE, ERR_NATIVE_LOAD (the addon did not
 * load), ERR_KERNEL (a native kernel failed), ERR_OUTPUT (an output folder or file cannot be created; names
 * it), ERR_OUTPUT_EXISTS (an output folder holds files and overwriting was not asked for), ERR_OUT_OF_MEMORY (a
 * CUDA run's memory plan exceeds the GPU: the message holds the plan), ABORT_ERR (cancelled
 * through an AbortSignal).
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

/**
 * An options argument: undefined gives {}, an object is returned as is, anything else (null included) is
 * an ERR_INVALID_ARG naming the function, rather than a TypeError from reading a field of null.
 */
export function optionsArg<T extends object> (value: T | null | undefined, fn: string, name = 'options'): T {
  if (value === undefined) return {} as T
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new RecodeError('ERR_INVALID_ARG', `${fn}: ${name} must be an object or undefined, got ${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value}`)
  }
  return value
}
