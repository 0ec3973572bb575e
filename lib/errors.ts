/**
 * Every error the library throws on purpose is a RecodeError with a stable `code`, so callers can branch
 * on `err.code` rather than on message text. Native code throws plain Errors with the same `code` field.
 *
 * Codes (every one thrown in lib/ and src/):
 * - ERR_INVALID_ARG: a bad argument to a function (null options included); ERR_OUT_OF_RANGE: a native index
 *   or count outside its range.
 * - ERR_CONFIG: a configuration field is invalid (names it). ERR_DATA: a data file, checkpoint or safetensors
 *   file is malformed or corrupt (names the file, line or entry). ERR_MODEL: a model folder is malformed.
 * - ERR_REWARD: a reward function returned something that is not a finite number per completion (names it).
 * - ERR_DIVERGED: training produced a non-finite loss, gradient norm or weight (names the step and stage; the
 *   error's `checkpoint` is the last good one), or a tensor to checkpoint holds NaN/Inf.
 * - ERR_PYTHON: no usable python3. ERR_SANDBOX: no sandbox that runs programs without uid 0 or capabilities;
 *   ERR_SANDBOX_WEAK: only weaker isolation than full is available and it was not allowed.
 * - ERR_OUTPUT: an output folder or file cannot be created (names it); ERR_OUTPUT_EXISTS: an output folder
 *   holds files and overwriting was not asked for.
 * - ERR_UNSUPPORTED: a valid request this build or device does not do. ERR_CUDA_UNAVAILABLE: no CUDA device.
 * - ERR_NATIVE_LOAD: the addon did not load; ERR_KERNEL: a native kernel failed; ERR_OUT_OF_MEMORY: a CUDA run's
 *   memory plan exceeds the GPU (the message holds the plan); ERR_NATIVE:
 *   an unexpected native exception; ERR_INTERNAL: an internal invariant failed (a bug).
 * - ERR_DIST: a multi-process run cannot start or a collective failed (names the rank); ERR_NCCL_UNAVAILABLE:
 *   NCCL was asked for and could not be loaded (says why); ERR_NCCL: an NCCL call failed (names the call, the rank and
 *   ncclGetErrorString's reason).
 * - ABORT_ERR: cancelled through an AbortSignal (training's carries the `checkpoint` it saved).
 */
export class RecodeError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'RecodeError'
    this.code = code
  }
}

export function abortError(): RecodeError {
  return new RecodeError('ABORT_ERR', 'the operation was aborted')
}

export function invalidArg(what: string): RecodeError {
  return new RecodeError('ERR_INVALID_ARG', what)
}

/**
 * An options argument: undefined gives {}, an object is returned as is, anything else (null included) is
 * an ERR_INVALID_ARG naming the function, rather than a TypeError from reading a field of null.
 */
export function optionsArg<T extends object>(value: T | null | undefined, fn: string, name = 'options'): T {
  if (value === undefined) return {} as T
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `${fn}: ${name} must be an object or undefined, got ${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value}`
    )
  }
  return value
}
