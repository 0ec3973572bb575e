/**
 * Batched unit-cost Levenshtein distance over Unicode code points (Python `str` semantics: an astral
 * character such as an emoji counts as one character, not as two UTF-16 units), and the similarity
 * `1 - d / max(len_a, len_b)` that ReCode's reward is built on.
 *
 * The work runs natively: bit-parallel on all CPU cores, or on a GPU ('cuda'), or through the SIMT
 * emulation of the CUDA kernel ('emulated', for tests). The asynchronous calls decode and compute off the
 * event loop and stop on an AbortSignal (rejecting with code ABORT_ERR).
 */
import { cancelFlag, throwIfAborted } from './abort'
import { resolveDevice, type ConcreteDevice, type Device } from './device'
import { RecodeError, optionsArg } from './errors'
import { native } from './native'

export interface EditDistanceOptions {
  /** 'auto' (default): the GPU when one is usable and the batch is large enough to pay for it, else 'cpu'. */
  device?: Device
  signal?: AbortSignal
  /** Where to write the distances (one per pair); a new Int32Array when omitted. */
  out?: Int32Array
}

export interface EditDistanceSyncOptions {
  device?: Device
  out?: Int32Array
}

interface EditDistanceAddon {
  editDistanceBatch: (device: ConcreteDevice, a: string[], b: string[], out: Int32Array, cancel?: Int32Array) => Promise<Int32Array>
  editDistanceBatchSync: (device: ConcreteDevice, a: string[], b: string[], out: Int32Array) => Int32Array
}

function addon(): EditDistanceAddon {
  return native() as unknown as EditDistanceAddon
}

// Below this many UTF-16 cells (sum of |a| |b|), a GPU round trip costs more than the CPU needs.
const GPU_MIN_CELLS = 2e8

function checkPairs(what: string, a: unknown, b: unknown): void {
  if (!Array.isArray(a)) throw new RecodeError('ERR_INVALID_ARG', `${what}: a must be an array of strings`)
  if (!Array.isArray(b)) throw new RecodeError('ERR_INVALID_ARG', `${what}: b must be an array of strings`)
  if (a.length !== b.length) {
    throw new RecodeError('ERR_INVALID_ARG', `${what}: a and b must have the same length, got ${a.length} and ${b.length}`)
  }
}

function pickDevice(what: string, device: Device | undefined, a: string[], b: string[]): ConcreteDevice {
  if (device !== undefined && device !== 'auto') return resolveDevice(device, what)
  const resolved = resolveDevice('auto', what)
  if (resolved !== 'cuda') return resolved
  let cells = 0
  for (let i = 0; i < a.length && cells < GPU_MIN_CELLS; i++) cells += (a[i]?.length ?? 0) * (b[i]?.length ?? 0)
  return cells >= GPU_MIN_CELLS ? 'cuda' : 'cpu'
}

function outputFor(what: string, out: Int32Array | undefined, n: number): Int32Array {
  if (out === undefined) return new Int32Array(n)
  if (!(out instanceof Int32Array) || out.length !== n) {
    throw new RecodeError('ERR_INVALID_ARG', `${what}: out must be an Int32Array of length ${n}`)
  }
  return out
}

/** Levenshtein distance of each pair (a[i], b[i]) in code points. */
export async function editDistance(a: string[], b: string[], options: EditDistanceOptions = {}): Promise<Int32Array> {
  options = optionsArg(options, 'editDistance')
  checkPairs('editDistance', a, b)
  throwIfAborted(options.signal)
  const device = pickDevice('editDistance', options.device, a, b)
  const out = outputFor('editDistance', options.out, a.length)
  const cancel = cancelFlag(options.signal)
  try {
    return await addon().editDistanceBatch(device, a, b, out, cancel.flag)
  } finally {
    cancel.dispose()
  }
}

/** The same on the calling thread, for small batches (it blocks the event loop while it runs). */
export function editDistanceSync(a: string[], b: string[], options: EditDistanceSyncOptions = {}): Int32Array {
  options = optionsArg(options, 'editDistanceSync')
  checkPairs('editDistanceSync', a, b)
  const device = pickDevice('editDistanceSync', options.device, a, b)
  const out = outputFor('editDistanceSync', options.out, a.length)
  return addon().editDistanceBatchSync(device, a, b, out)
}

/** Length in code points (a surrogate pair counts once; a lone surrogate counts as one character). */
export function codePointLength(s: string): number {
  let n = s.length
  for (let i = 0; i + 1 < s.length; i++) {
    const u = s.charCodeAt(i)
    if (u >= 0xd800 && u <= 0xdbff) {
      const v = s.charCodeAt(i + 1)
      if (v >= 0xdc00 && v <= 0xdfff) {
        n--
        i++
      }
    }
  }
  return n
}

function similarityOf(d: number, lenA: number, lenB: number): number {
  const longest = Math.max(lenA, lenB)
  return longest === 0 ? 1 : 1 - d / longest
}

/** 1 - d / max(len_a, len_b) in code points; 1 when both strings are empty. */
export function similarity(a: string, b: string): number {
  if (typeof a !== 'string' || typeof b !== 'string') {
    throw new RecodeError('ERR_INVALID_ARG', 'similarity: a and b must be strings')
  }
  const d = addon().editDistanceBatchSync('cpu', [a], [b], new Int32Array(1))[0]
  return similarityOf(d, codePointLength(a), codePointLength(b))
}

/** similarity() of each pair, computed as one batch. */
export async function similarities(a: string[], b: string[], options: Omit<EditDistanceOptions, 'out'> = {}): Promise<Float64Array> {
  options = optionsArg(options, 'similarities')
  const d = await editDistance(a, b, { device: options.device, signal: options.signal })
  const sim = new Float64Array(a.length)
  for (let i = 0; i < a.length; i++) sim[i] = similarityOf(d[i], codePointLength(a[i]), codePointLength(b[i]))
  return sim
}
