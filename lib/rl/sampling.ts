/**
 * Sampling one token per row of logits (temperature, top-k, top-p, min-p, greedy) on the CPU or CUDA.
 *
 * Definition (the same on every backend; see src/sampling/sampling.h for the full statement):
 * - temperature T scales the logits: p_i ∝ exp((x_i - max x) / T); T = 0 is greedy (first argmax).
 * - filters compose in Hugging Face's order: top-k, then top-p on the renormalised top-k distribution, then
 *   min-p (p_i >= minP * p_max). Ties at a boundary are kept or dropped together: top-k keeps every token
 *   whose logit is >= the k-th largest logit; top-p keeps the smallest set of largest logits (whole tie
 *   groups) whose mass reaches topP.
 * - the token is drawn from the exactly renormalised kept set with 64 random bits from Philox-4x32-10 keyed
 *   by (seed, row id, step), so CPU and CUDA pick the same token for the same seed.
 * - NaN or +Infinity logits, and rows that are entirely -Infinity, are rejected (code ERR_INVALID_ARG).
 */
import { cancelFlag } from '../abort'
import { resolveDevice, type Device } from '../device'
import { invalidArg, optionsArg } from '../errors'
import { native } from '../native'

/** A value for every row, or one value per row. */
export type PerRow = number | ArrayLike<number>

export interface SampleOptions {
  /** Temperature (>= 0; 0 = greedy). Default 1. */
  temperature?: PerRow
  /** Keep the k most likely tokens (ties included); 0 = off. Default 0. */
  topK?: PerRow
  /** Nucleus mass in (0, 1]; 1 = off. Default 1. */
  topP?: PerRow
  /** Keep tokens with p >= minP * p_max, minP in [0, 1]; 0 = off. Default 0. */
  minP?: PerRow
  /** Random seed (integer in [0, 2^53) or a BigInt below 2^64). Default 0. */
  seed?: number | bigint
  /** Step counter (e.g. the decoding position), per call or per row. Default 0. */
  step?: PerRow
  /** Row ids for the random stream; default 0..rows-1. */
  rowIds?: ArrayLike<number>
  /** Backend; default 'auto'. */
  device?: Device
  signal?: AbortSignal
}

export interface SampleResult {
  /** The sampled token of each row. */
  tokens: Int32Array
  /** Its log-probability under the unfiltered temperature-scaled distribution (T = 1 for greedy rows). */
  logprobs: Float32Array
  /** Its log-probability under the renormalised filtered distribution (0 for greedy rows). */
  filteredLogprobs: Float32Array
}

/** The smallest normal float32, 2^-126: below it (and above 0) 1/T overflows float32. */
const FLOAT32_MIN_NORMAL = 2 ** -126
const INT32_MAX = 2 ** 31 - 1

/**
 * Why a temperature cannot be used, or null. The native sampler works in float32 with 1/T: a positive T below
 * 2^-126 makes 1/T infinite (NaN log-probabilities), and one that rounds to 0 in float32 would silently turn
 * into greedy decoding. Both are rejected; T = 0 asks for greedy explicitly. Above float32's range T would
 * become Infinity.
 */
export function temperatureProblem(t: number): string | null {
  if (typeof t !== 'number' || !Number.isFinite(t) || t < 0) return `must be a finite number >= 0 (0 = greedy), got ${String(t)}`
  if (t > 0 && t < FLOAT32_MIN_NORMAL)
    return `${t} is too small: 1/T overflows float32 (use 0 for greedy decoding, or a value >= 2^-126 = ${FLOAT32_MIN_NORMAL})`
  if (t > 3.4028234663852886e38) return `${t} is beyond float32's range`
  return null
}

/** Why a top-k value cannot be used, or null: the native sampler takes a 32-bit count. */
export function topKProblem(k: number): string | null {
  if (typeof k !== 'number' || !Number.isInteger(k) || k < 0 || k > INT32_MAX)
    return `must be an integer in [0, ${INT32_MAX}] (0 = off), got ${String(k)}`
  return null
}

function checkEach(name: string, values: number[], problem: (v: number) => string | null): void {
  for (let r = 0; r < values.length; r++) {
    const why = problem(values[r])
    if (why !== null) throw invalidArg(`sample: ${name}${values.length > 1 ? `[${r}]` : ''} ${why}`)
  }
}

function perRow(name: string, value: PerRow | undefined, fallback: number, rows: number, integer: boolean): number[] {
  const out = new Array<number>(rows)
  if (value === undefined || typeof value === 'number') {
    const v = value ?? fallback
    if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
      throw invalidArg(`sample: ${name} must be a finite ${integer ? 'integer' : 'number'}, got ${String(value)}`)
    }
    return out.fill(v)
  }
  if (typeof value !== 'object' || value === null || typeof (value as ArrayLike<number>).length !== 'number') {
    throw invalidArg(`sample: ${name} must be a number or an array with one value per row`)
  }
  if (value.length !== rows) throw invalidArg(`sample: ${name} has ${value.length} values for ${rows} rows`)
  for (let r = 0; r < rows; r++) {
    const v = value[r]
    if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
      throw invalidArg(`sample: ${name}[${r}] must be a finite ${integer ? 'integer' : 'number'}, got ${String(v)}`)
    }
    out[r] = v
  }
  return out
}

/**
 * Samples one token from each of `rows` rows of logits.
 * @param logits rows x vocab logits, row-major: a Float32Array, or a Uint16Array holding bf16 bit patterns.
 * @param rows number of rows (vocab = logits.length / rows).
 * @returns tokens and their log-probabilities (unfiltered and filtered).
 */
export async function sample(logits: Float32Array | Uint16Array, rows: number, options: SampleOptions = {}): Promise<SampleResult> {
  options = optionsArg(options, 'sample')
  if (!(logits instanceof Float32Array) && !(logits instanceof Uint16Array)) {
    throw invalidArg('sample: logits must be a Float32Array or a Uint16Array of bf16 bits')
  }
  if (!Number.isInteger(rows) || rows < 1) throw invalidArg(`sample: rows must be a positive integer, got ${rows}`)
  if (logits.length === 0 || logits.length % rows !== 0) {
    throw invalidArg(`sample: logits length ${logits.length} is not a positive multiple of rows (${rows})`)
  }
  const vocab = logits.length / rows
  const temperature = perRow('temperature', options.temperature, 1, rows, false)
  checkEach('temperature', temperature, temperatureProblem)
  const topK = perRow('topK', options.topK, 0, rows, true)
  checkEach('topK', topK, topKProblem)
  const topP = perRow('topP', options.topP, 1, rows, false)
  const minP = perRow('minP', options.minP, 0, rows, false)
  const step = perRow('step', options.step, 0, rows, true)
  const rowIds = options.rowIds === undefined ? Array.from({ length: rows }, (_, r) => r) : perRow('rowIds', options.rowIds, 0, rows, true)
  const seed = options.seed ?? 0
  if (typeof seed === 'bigint') {
    if (seed < 0n || seed >= 1n << 64n) throw invalidArg('sample: seed must be in [0, 2^64)')
  } else if (!Number.isSafeInteger(seed) || seed < 0) {
    throw invalidArg(`sample: seed must be a non-negative safe integer or a BigInt, got ${String(seed)}`)
  }
  const device = resolveDevice(options.device, 'sample')
  const cancel = cancelFlag(options.signal)
  try {
    return (await native().sampleRows(
      device,
      {
        logits,
        rows,
        vocab,
        temperature: Float32Array.from(temperature),
        topK: Int32Array.from(topK),
        topP: Float32Array.from(topP),
        minP: Float32Array.from(minP),
        seed,
        rowIds: Float64Array.from(rowIds),
        steps: Float64Array.from(step)
      },
      cancel.flag
    )) as SampleResult
  } finally {
    cancel.dispose()
  }
}

/** The raw Philox-4x32-10 block for a counter and key (for known-answer tests and reproducing draws). */
export function philox4x32(counter: Uint32Array, key: Uint32Array): Uint32Array {
  if (!(counter instanceof Uint32Array) || counter.length !== 4 || !(key instanceof Uint32Array) || key.length !== 2) {
    throw invalidArg('philox4x32: counter must be a Uint32Array(4) and key a Uint32Array(2)')
  }
  return native().philoxKat(counter, key) as Uint32Array
}
