/**
 * LoRA / DoRA for one linear layer on the CPU (src/train/adapters.cpp): forward, backward, the DoRA weight norm and
 * the counter-based dropout mask. The formulas (PEFT's) are stated in src/adapters.h.
 */
import { RecodeError } from '../errors'
import { native } from '../native'

export interface AdapterDims {
  /** Tokens (rows of x). */
  rows: number
  in: number
  out: number
  rank: number
}

export interface AdapterLayer {
  /** Frozen base weight W [out, in]. */
  weight: Float32Array
  bias?: Float32Array
  /** A [rank, in] and B [out, rank]. */
  loraA: Float32Array
  loraB: Float32Array
  /** DoRA magnitude m [out]; absent for LoRA. */
  magnitude?: Float32Array
  /** alpha / r. */
  scaling: number
  /** Dropout probability on the adapter input (0 at inference). */
  dropout?: number
  /** Dropout stream: key and counter base (give each layer and step its own offset range). */
  seed?: number
  offset?: number
}

export interface AdapterSaved {
  /** u = drop(x) A^T [rows, rank]. */
  loraHidden: Float32Array
  /** DoRA: the row norms n [out] and drop(x) W^T [rows, out]. */
  weightNorm?: Float32Array
  droppedBase?: Float32Array
}

export interface AdapterGrads {
  /** dx [rows, in] (optional). */
  input?: Float32Array
  loraA: Float32Array
  loraB: Float32Array
  magnitude?: Float32Array
  /** Add into loraA / loraB / magnitude instead of overwriting. */
  accumulate?: boolean
}

interface AdapterAddon {
  adapterForward: (x: Float32Array, dims: AdapterDims, w: AdapterLayer, y: Float32Array, saved: AdapterSaved) => void
  adapterBackward: (x: Float32Array, dy: Float32Array, dims: AdapterDims, w: AdapterLayer, saved: AdapterSaved, grads: AdapterGrads) => void
  doraWeightNorm: (dims: AdapterDims, w: AdapterLayer, out: Float32Array) => void
  adapterMerge: (dims: AdapterDims, w: AdapterLayer, out: Float32Array) => void
  dropoutMask: (count: number, p: number, seed: number, offset: number) => Uint8Array
  philox4x32: (counter: Uint32Array, key: Uint32Array) => Uint32Array
}

const addon = (): AdapterAddon => native() as unknown as AdapterAddon

/** Buffers forward must fill for backward. */
export function adapterSavedBuffers(dims: AdapterDims, dora: boolean): AdapterSaved {
  return {
    loraHidden: new Float32Array(dims.rows * dims.rank),
    ...(dora ? { weightNorm: new Float32Array(dims.out), droppedBase: new Float32Array(dims.rows * dims.out) } : {})
  }
}

/** y = the adapted layer applied to x [rows, in]; fills `saved` (allocated when not given). */
export function adapterForward(
  x: Float32Array,
  dims: AdapterDims,
  layer: AdapterLayer,
  y?: Float32Array,
  saved?: AdapterSaved
): { y: Float32Array; saved: AdapterSaved } {
  const out = y ?? new Float32Array(dims.rows * dims.out)
  const s = saved ?? adapterSavedBuffers(dims, layer.magnitude !== undefined)
  addon().adapterForward(x, dims, layer, out, s)
  return { y: out, saved: s }
}

/** Gradients of A, B (and m for DoRA) and of x, given dy [rows, out] and what forward saved. */
export function adapterBackward(
  x: Float32Array,
  dy: Float32Array,
  dims: AdapterDims,
  layer: AdapterLayer,
  saved: AdapterSaved,
  grads?: Partial<AdapterGrads>
): AdapterGrads {
  const g: AdapterGrads = {
    input: grads?.input ?? new Float32Array(dims.rows * dims.in),
    loraA: grads?.loraA ?? new Float32Array(dims.rank * dims.in),
    loraB: grads?.loraB ?? new Float32Array(dims.out * dims.rank),
    ...(layer.magnitude ? { magnitude: grads?.magnitude ?? new Float32Array(dims.out) } : {}),
    accumulate: grads?.accumulate ?? false
  }
  addon().adapterBackward(x, dy, dims, layer, saved, g)
  return g
}

/** PEFT's DoRA weight norm ||W + s B A|| per output row; also the initial magnitude of a fresh DoRA adapter. */
export function doraWeightNorm(dims: Omit<AdapterDims, 'rows'>, layer: AdapterLayer): Float32Array {
  const out = new Float32Array(dims.out)
  addon().doraWeightNorm({ rows: 1, ...dims }, layer, out)
  return out
}

/**
 * The merged weight [out, in] of an adapted layer, as PEFT's merge_and_unload computes it (LoRA: W + s B A;
 * DoRA: each row of W + s B A scaled to its magnitude), for writing a full Hugging Face model folder.
 */
export function mergeAdapter(dims: Omit<AdapterDims, 'rows'>, layer: AdapterLayer): Float32Array {
  const out = new Float32Array(dims.out * dims.in)
  addon().adapterMerge({ rows: 1, ...dims }, layer, out)
  return out
}

/** The dropout keep mask (1 = kept) for `count` elements starting at counter `offset`. */
export function dropoutMask(count: number, p: number, seed: number, offset = 0): Uint8Array {
  return addon().dropoutMask(count, p, seed, offset)
}

/** Philox4x32-10 of one counter block (exposed for known-answer tests). */
export function philox4x32(counter: Uint32Array, key: Uint32Array): Uint32Array {
  return addon().philox4x32(counter, key)
}

/** PEFT's default initialisation: A ~ kaiming-uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0. */
export function initLora(dims: Omit<AdapterDims, 'rows'>, random: () => number): { loraA: Float32Array; loraB: Float32Array } {
  if (!(dims.in > 0 && dims.rank > 0 && dims.out > 0))
    throw new RecodeError('ERR_INVALID_ARG', 'initLora: in, out and rank must be positive')
  const bound = 1 / Math.sqrt(dims.in)
  const loraA = Float32Array.from({ length: dims.rank * dims.in }, () => (2 * random() - 1) * bound)
  return { loraA, loraB: new Float32Array(dims.out * dims.rank) }
}
