/**
 * Cancellation across the native boundary: native loops poll an Int32Array(1) that an AbortSignal
 * listener sets to 1. One flag per call; dispose() removes the listener. The flag lives in a
 * SharedArrayBuffer, which cannot be transferred (detached) while a native job reads it.
 */
import { abortError } from './errors'

export interface CancelFlag {
  flag: Int32Array
  dispose: () => void
}

export function cancelFlag(signal?: AbortSignal): CancelFlag {
  const flag = new Int32Array(new SharedArrayBuffer(4))
  if (!signal) return { flag, dispose: () => {} }
  if (signal.aborted) throw abortError()
  const onAbort = (): void => {
    Atomics.store(flag, 0, 1)
  }
  signal.addEventListener('abort', onAbort, { once: true })
  return { flag, dispose: () => signal.removeEventListener('abort', onAbort) }
}

export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw abortError()
}
