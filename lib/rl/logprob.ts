/**
 * Token log-probabilities: the log-probability of each target token and the entropy of each position's
 * distribution, fused with the log-softmax so that the [T, V] probabilities are never materialised (the
 * vocabulary is processed in chunks with an online log-sum-exp), and the backward passes.
 *
 * With z = logits / temperature, lse = log Σ exp z, p = exp(z - lse):
 * logp = z_target - lse; entropy = -Σ p log p; d logp/dz_v = [v = target] - p_v; d entropy/dz_v = -p_v (log p_v + entropy).
 */
import { cancelFlag } from '../abort'
import { resolveDevice, type Device } from '../device'
import { invalidArg, optionsArg } from '../errors'
import { native } from '../native'

/** Logits [positions, vocab], row-major. */
export interface LogitsInput {
  logits: Float32Array
  positions: number
  vocab: number
}

/** Hidden states [positions, hiddenSize] and the output projection weight [vocab, hiddenSize] (logits = hidden weightᵀ). */
export interface HiddenInput {
  hidden: Float32Array
  weight: Float32Array
  positions: number
  hiddenSize: number
  vocab: number
}

export interface TokenLogprobOptions {
  /** Logits are divided by the temperature first (as verl does). Default 1. */
  temperature?: number
  device?: Device
  signal?: AbortSignal
}

export interface TokenLogprobResult {
  /** log p(target) per position. */
  logp: Float32Array
  /** Entropy of each position's distribution. */
  entropy: Float32Array
  /** log Σ exp(z) per position (saved for the backward pass). */
  lse: Float32Array
}

export interface TokenLogprobGrads {
  /** d loss / d logp per position. */
  dlogp: Float32Array
  /** d loss / d entropy per position (omit for no entropy term). */
  dentropy?: Float32Array
}

function isHidden(input: LogitsInput | HiddenInput): input is HiddenInput {
  return (input as HiddenInput).hidden !== undefined
}

function checkCommon(fn: string, input: LogitsInput | HiddenInput, targets: Int32Array): void {
  if (!input || typeof input !== 'object')
    throw invalidArg(`${fn}: input must be { logits, positions, vocab } or { hidden, weight, positions, hiddenSize, vocab }`)
  if (!(targets instanceof Int32Array)) throw invalidArg(`${fn}: targets must be an Int32Array`)
  if (targets.length !== input.positions) throw invalidArg(`${fn}: targets has ${targets.length} entries for ${input.positions} positions`)
}

/**
 * Target log-probabilities and entropies from logits or from hidden states and the output projection.
 * @param targets the target token of each position, in [0, vocab).
 */
export async function tokenLogprobs(
  input: LogitsInput | HiddenInput,
  targets: Int32Array,
  options: TokenLogprobOptions = {}
): Promise<TokenLogprobResult> {
  options = optionsArg(options, 'tokenLogprobs')
  checkCommon('tokenLogprobs', input, targets)
  const device = resolveDevice(options.device, 'tokenLogprobs')
  const temperature = options.temperature ?? 1
  const cancel = cancelFlag(options.signal)
  try {
    if (isHidden(input)) {
      const { hidden, weight, positions, hiddenSize, vocab } = input
      return (await native().logprobHidden(
        device,
        { hidden, weight, positions, hiddenSize, vocab, targets, temperature },
        cancel.flag
      )) as TokenLogprobResult
    }
    const { logits, positions, vocab } = input
    return (await native().logprobLogits(device, { logits, positions, vocab, targets, temperature }, cancel.flag)) as TokenLogprobResult
  } finally {
    cancel.dispose()
  }
}

/**
 * Backward pass of {@link tokenLogprobs}: gradients with respect to the logits, or to the hidden states and
 * the projection weight, given the forward result and the upstream gradients.
 */
export async function tokenLogprobsBackward(
  input: LogitsInput,
  targets: Int32Array,
  forward: TokenLogprobResult,
  grads: TokenLogprobGrads,
  options?: TokenLogprobOptions
): Promise<{ dlogits: Float32Array }>
export async function tokenLogprobsBackward(
  input: HiddenInput,
  targets: Int32Array,
  forward: TokenLogprobResult,
  grads: TokenLogprobGrads,
  options?: TokenLogprobOptions
): Promise<{ dhidden: Float32Array; dweight: Float32Array }>
export async function tokenLogprobsBackward(
  input: LogitsInput | HiddenInput,
  targets: Int32Array,
  forward: TokenLogprobResult,
  grads: TokenLogprobGrads,
  options: TokenLogprobOptions = {}
): Promise<{ dlogits: Float32Array } | { dhidden: Float32Array; dweight: Float32Array }> {
  options = optionsArg(options, 'tokenLogprobsBackward')
  checkCommon('tokenLogprobsBackward', input, targets)
  if (!forward || !(forward.lse instanceof Float32Array) || !(forward.entropy instanceof Float32Array)) {
    throw invalidArg('tokenLogprobsBackward: forward must be the result of tokenLogprobs ({ lse, entropy })')
  }
  if (!grads || !(grads.dlogp instanceof Float32Array)) throw invalidArg('tokenLogprobsBackward: grads.dlogp must be a Float32Array')
  const device = resolveDevice(options.device, 'tokenLogprobsBackward')
  const temperature = options.temperature ?? 1
  const cancel = cancelFlag(options.signal)
  try {
    const upstream = { targets, temperature, lse: forward.lse, entropy: forward.entropy, dlogp: grads.dlogp, dentropy: grads.dentropy }
    if (isHidden(input)) {
      const { hidden, weight, positions, hiddenSize, vocab } = input
      return await native().logprobHiddenBackward(device, { hidden, weight, positions, hiddenSize, vocab, ...upstream }, cancel.flag)
    }
    const { logits, positions, vocab } = input
    const dlogits = (await native().logprobLogitsBackward(device, { logits, positions, vocab, ...upstream }, cancel.flag)) as Float32Array
    return { dlogits }
  } finally {
    cancel.dispose()
  }
}
