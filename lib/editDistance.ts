/**
 * Unit-cost Levenshtein distance over Unicode code points (Python `str` semantics: an astral character
 * such as an emoji is one character, not two UTF-16 units), and the similarity 1 - d / max(len).
 *
 * This version is a plain dynamic-programming loop in TypeScript (one row, common prefix and suffix
 * stripped first). It is correct but slow; the native bit-parallel kernel (CPU and CUDA) replaces it
 * behind the same signatures.
 */
import { throwIfAborted } from './abort'
import type { Device } from './device'
import { RecodeError } from './errors'

export interface EditDistanceOptions {
  device?: Device
  signal?: AbortSignal
}

/** The code points of s (a lone surrogate counts as one code point, as in a Python str). */
function codePoints (s: string): Int32Array {
  const out = new Int32Array(s.length)
  let n = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        out[n++] = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000
        i++
        continue
      }
    }
    out[n++] = c
  }
  return out.subarray(0, n)
}

function distanceOfCodePoints (a: Int32Array, b: Int32Array): number {
  let start = 0
  let endA = a.length
  let endB = b.length
  while (start < endA && start < endB && a[start] === b[start]) start++
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB-- }
  const n = endA - start
  const m = endB - start
  if (n === 0) return m
  if (m === 0) return n
  // row[j] = distance between a[start, start+i) and b[start, start+j) for the current i.
  const row = new Int32Array(m + 1)
  for (let j = 0; j <= m; j++) row[j] = j
  for (let i = 1; i <= n; i++) {
    const ai = a[start + i - 1]
    let diagonal = row[0]
    row[0] = i
    for (let j = 1; j <= m; j++) {
      const above = row[j]
      const substitute = diagonal + (ai === b[start + j - 1] ? 0 : 1)
      const insertOrDelete = Math.min(above, row[j - 1]) + 1
      row[j] = substitute < insertOrDelete ? substitute : insertOrDelete
      diagonal = above
    }
  }
  return row[m]
}

// Every device runs this same loop here; the value is still checked so that callers get the same errors.
function checkDevice (device: unknown, what: string): void {
  if (device !== undefined && device !== 'auto' && device !== 'cpu' && device !== 'cuda' && device !== 'emulated') {
    throw new RecodeError('ERR_INVALID_ARG', `${what}: device must be 'auto', 'cpu', 'cuda' or 'emulated', got ${JSON.stringify(device)}`)
  }
}

// The loop runs on the main thread; it lets I/O and timers through every few pairs and stops on abort.
async function yieldToEventLoop (signal?: AbortSignal): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve))
  throwIfAborted(signal)
}

function checkPairs (a: unknown, b: unknown, what: string): void {
  if (!Array.isArray(a) || !Array.isArray(b)) throw new RecodeError('ERR_INVALID_ARG', `${what}: a and b must be arrays of strings`)
  if (a.length !== b.length) throw new RecodeError('ERR_INVALID_ARG', `${what}: a has ${a.length} strings but b has ${b.length}`)
  for (let i = 0; i < a.length; i++) {
    if (typeof a[i] !== 'string') throw new RecodeError('ERR_INVALID_ARG', `${what}: a[${i}] is not a string`)
    if (typeof b[i] !== 'string') throw new RecodeError('ERR_INVALID_ARG', `${what}: b[${i}] is not a string`)
  }
}

/** Distances of the pairs (a[i], b[i]), synchronously (for small batches). */
export function editDistanceSync (a: string[], b: string[]): Int32Array {
  checkPairs(a, b, 'editDistanceSync')
  const out = new Int32Array(a.length)
  for (let i = 0; i < a.length; i++) out[i] = distanceOfCodePoints(codePoints(a[i]), codePoints(b[i]))
  return out
}

/** Distances of the pairs (a[i], b[i]). */
export async function editDistance (a: string[], b: string[], options: EditDistanceOptions = {}): Promise<Int32Array> {
  checkPairs(a, b, 'editDistance')
  checkDevice(options.device, 'editDistance')
  throwIfAborted(options.signal)
  const out = new Int32Array(a.length)
  for (let i = 0; i < a.length; i++) {
    if ((i & 7) === 7) await yieldToEventLoop(options.signal)
    out[i] = distanceOfCodePoints(codePoints(a[i]), codePoints(b[i]))
  }
  return out
}

/** 1 - d / max(len(a), len(b)) in code points; 1 when both are empty. */
export function similarity (a: string, b: string): number {
  if (typeof a !== 'string' || typeof b !== 'string') throw new RecodeError('ERR_INVALID_ARG', 'similarity: a and b must be strings')
  const ca = codePoints(a)
  const cb = codePoints(b)
  const longest = Math.max(ca.length, cb.length)
  if (longest === 0) return 1
  return 1 - distanceOfCodePoints(ca, cb) / longest
}

/** Similarities of the pairs (a[i], b[i]). */
export async function similarities (a: string[], b: string[], options: EditDistanceOptions = {}): Promise<Float64Array> {
  checkPairs(a, b, 'similarities')
  checkDevice(options.device, 'similarities')
  throwIfAborted(options.signal)
  const out = new Float64Array(a.length)
  for (let i = 0; i < a.length; i++) {
    if ((i & 7) === 7) await yieldToEventLoop(options.signal)
    out[i] = similarity(a[i], b[i])
  }
  return out
}
