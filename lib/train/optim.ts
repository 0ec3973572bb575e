/**
 * AdamW (fp32 master weights and moments, torch.optim.AdamW semantics) and global gradient-norm clipping
 * (torch.nn.utils.clip_grad_norm_) over many tensors, in native code (src/train/optim.cpp).
 */
import { cancelFlag } from '../abort'
import { RecodeError } from '../errors'
import { native } from '../native'

export interface AdamWHyper {
  lr: number
  beta1?: number
  beta2?: number
  eps?: number
  weightDecay?: number
  /** 1-based index of this update (torch's state['step'] after incrementing). */
  step: number
}

/** Parameters with their AdamW state: one entry per tensor. */
export interface AdamWTensor {
  param: Float32Array
  grad: Float32Array
  expAvg: Float32Array
  expAvgSq: Float32Array
  /** Apply weight decay to this tensor (default true). */
  decay?: boolean
  /** Receives the updated weights rounded to bf16 (the compute copy of a bf16 model). */
  bf16?: Uint16Array
}

export interface AdamWOptions {
  /** Multiplies every gradient before use (fused clipping coefficient or 1 / accumulation steps). */
  gradScale?: number
  /** Use the plain single-threaded reference loop (tests). */
  reference?: boolean
  signal?: AbortSignal
}

interface OptimAddon {
  adamwStep: (p: Float32Array[], g: Float32Array[], m: Float32Array[], v: Float32Array[], h: AdamWHyper, o?: object) => void
  adamwStepAsync: (
    p: Float32Array[],
    g: Float32Array[],
    m: Float32Array[],
    v: Float32Array[],
    h: AdamWHyper,
    o: object,
    cancel: Int32Array
  ) => Promise<void>
  gradNormSq: (g: Float32Array[]) => number
  clipGradNorm: (g: Float32Array[], maxNorm: number) => number
}

const addon = (): OptimAddon => native() as unknown as OptimAddon

function split(tensors: AdamWTensor[], options: AdamWOptions): [Float32Array[], Float32Array[], Float32Array[], Float32Array[], object] {
  if (!Array.isArray(tensors)) throw new RecodeError('ERR_INVALID_ARG', 'adamwStep: tensors must be an array')
  return [
    tensors.map((t) => t.param),
    tensors.map((t) => t.grad),
    tensors.map((t) => t.expAvg),
    tensors.map((t) => t.expAvgSq),
    {
      gradScale: options.gradScale ?? 1,
      reference: options.reference ?? false,
      decay: tensors.map((t) => t.decay ?? true),
      ...(tensors.some((t) => t.bf16) ? { bf16: tensors.map((t) => t.bf16 ?? null) } : {})
    }
  ]
}

/** One AdamW update of every tensor, in place (synchronous: small models and tests). */
export function adamwStep(tensors: AdamWTensor[], hyper: AdamWHyper, options: AdamWOptions = {}): void {
  const [p, g, m, v, o] = split(tensors, options)
  addon().adamwStep(p, g, m, v, hyper, o)
}

/** The same update on a worker thread (large models); stops before starting when `signal` is aborted. */
export async function adamwStepAsync(tensors: AdamWTensor[], hyper: AdamWHyper, options: AdamWOptions = {}): Promise<void> {
  const [p, g, m, v, o] = split(tensors, options)
  const cancel = cancelFlag(options.signal)
  try {
    await addon().adamwStepAsync(p, g, m, v, hyper, o, cancel.flag)
  } finally {
    cancel.dispose()
  }
}

/** sqrt of the sum of squares of all gradients (accumulated in float64, deterministic). */
export function gradNorm(grads: Float32Array[]): number {
  return Math.sqrt(addon().gradNormSq(grads))
}

/**
 * Clips the global gradient norm to `maxNorm` in place (coefficient maxNorm / (norm + 1e-6) when below 1) and
 * returns the norm before clipping. A non-finite norm leaves the gradients as they are: skip that step.
 */
export function clipGradNorm(grads: Float32Array[], maxNorm: number): number {
  return addon().clipGradNorm(grads, maxNorm)
}

/** Fresh zeroed AdamW state for parameter tensors. */
export function adamwState(params: Float32Array[]): Array<{ expAvg: Float32Array; expAvgSq: Float32Array }> {
  return params.map((p) => ({ expAvg: new Float32Array(p.length), expAvgSq: new Float32Array(p.length) }))
}
