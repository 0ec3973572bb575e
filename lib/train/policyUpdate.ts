/**
 * The update phase of a GRPO / DAPO step, on a Rollout: reference log-probs of the frozen base (KL), then
 * policyUpdatesPerBatch times: per micro-batch a forward that keeps the activations, the clipped policy loss on
 * its log-probs, a backward with the loss's d/dlogp as token weights; then clip + AdamW. The first update's
 * log-probs are the old policy's (the ratio is 1 there and differs from 1 in later updates).
 */
import { RecodeError } from '../errors'
import type { ModelTrainer } from '../model/train'
import { policyLoss, type PolicyLossInputs, type PolicyLossOptions } from '../rl/loss'
import type { TrainConfig } from './config'
import type { Rollout, Sequence } from './rollout'

export interface PolicyUpdateOptions {
  lr: number
  /** Full fine-tuning with KL: the base weights, swapped in for the reference forward (adapters switch themselves off instead). */
  baseWeights?: Array<{ name: string; data: Float32Array }>
  signal?: AbortSignal
  /** Data parallelism: this rank trains micro-batches [r G/N, (r+1) G/N) of the G = gradAccumulation. */
  dataParallel?: DataParallel
}

/** What the update needs from the process group: sums over ranks of metrics and of the trainer's gradients. */
export interface DataParallel {
  rank: number
  size: number
  /** Sum over ranks, in place (each entry has one contributing rank: exact). */
  allreduce: (a: Float64Array) => Float64Array
  /** Sums the trainer's gradients over ranks, the same bits on every rank. */
  reduceGradients: () => Promise<void>
}

export interface PolicyUpdateResult {
  /** The loss over the batch, averaged over the policy updates. */
  loss: number
  /** The last update's gradient norm before clipping. */
  gradNorm: number
  /** Token-weighted means over every update. */
  kl: number
  clipFraction: number
  clipFractionLow: number
  clipFractionHigh: number
  /** Trained tokens per second of log-prob, backward and optimizer time. */
  tokensPerSecond: number
  seconds: { logprobs: number; backward: number; optimizer: number }
  /** With config.rolloutCorrection, token-weighted over the updates: mean |trainer - generator log-prob| of the
   * sampled tokens, and the fraction of tokens whose correction weight was truncated or masked. */
  rolloutLogRatioAbs?: number
  rolloutCorrectedFraction?: number
}

export async function policyUpdate(
  trainer: ModelTrainer,
  config: TrainConfig,
  batch: Rollout,
  options: PolicyUpdateOptions
): Promise<PolicyUpdateResult> {
  const { lr, baseWeights, signal } = options
  const seconds = { logprobs: 0, backward: 0, optimizer: 0 }
  const tick = (name: keyof typeof seconds, since: number): number => {
    const now = performance.now()
    seconds[name] += (now - since) / 1000
    return now
  }
  const seqs = batch.sequences
  const advantages = batch.advantages
  const B = seqs.length
  const microRows = (config.promptsPerStep * config.samplesPerPrompt) / config.gradAccumulation // may split a group
  const masked = (s: Sequence): boolean => config.maskTruncatedCompletions && s.truncated === true
  const totalMask = seqs.reduce((a, s) => a + (masked(s) ? 0 : s.tokens.length - s.promptLength), 0)
  const dp = options.dataParallel
  const G = config.gradAccumulation
  // micro-batch m / microRows is this rank's when it falls in the rank's contiguous share of the G micro-batches
  const mine = (m: number): boolean => dp === undefined || Math.floor(((m / microRows) * dp.size) / G) === dp.rank
  let t: number

  // Reference log-probs (KL), one forward per micro-batch of the frozen base: adapters switched off, or (full
  // fine-tuning) the base weights swapped in.
  const refLogp: Float32Array[] = []
  const withRef = config.klCoef > 0 && (baseWeights !== undefined || trainer.adapter !== undefined)
  if (config.klCoef > 0 && (baseWeights !== undefined || trainer.adapter !== undefined)) {
    t = performance.now()
    const current = baseWeights !== undefined ? await trainer.parameters() : undefined
    if (baseWeights !== undefined) await trainer.setState({ tensors: baseWeights })
    else await trainer.setAdaptersEnabled(false)
    try {
      for (let m = 0; m < B; m += microRows)
        if (mine(m))
          (
            await trainer.forward(
              seqs.slice(m, m + microRows).map((s) => s.tokens),
              { signal }
            )
          ).forEach((x, i) => {
            refLogp[m + i] = x
          })
    } finally {
      if (current !== undefined) await trainer.setState({ tensors: current })
      else await trainer.setAdaptersEnabled(true)
    }
    tick('logprobs', t)
  }

  const oldLogp: Float32Array[] = []
  let lossSum = 0
  let klSum = 0
  let clipSum = 0
  let clipLowSum = 0
  let clipHighSum = 0
  let gradNorm = 0
  let weightSum = 0
  let misSum = 0
  let correctedSum = 0
  for (let update = 0; update < config.policyUpdatesPerBatch; update++) {
    // per micro-batch: loss, kl, clip, clip low, clip high (each times its weight), its mask count, and the rollout
    // mismatch and corrected fraction (times the mask count)
    const PARTS = 8
    const parts = new Float64Array(Math.ceil(B / microRows) * PARTS)
    for (let m = 0; m < B; m += microRows) {
      if (!mine(m)) continue
      const mb = seqs.slice(m, m + microRows)
      if (dp !== undefined) await trainer.setForwardIndex(m / microRows)
      t = performance.now()
      const logp = await trainer.forward(
        mb.map((s) => s.tokens),
        { signal }
      )
      if (update === 0)
        logp.forEach((x, i) => {
          oldLogp[m + i] = x.slice()
        })
      t = tick('logprobs', t)
      // Pack the response tokens of the micro-batch as [rows x L] for the loss kernel.
      const L = Math.max(...mb.map((s) => s.tokens.length - s.promptLength))
      const pack = (arrs: Float32Array[] | undefined): Float32Array | undefined => {
        if (arrs === undefined) return undefined
        const out = new Float32Array(mb.length * L)
        mb.forEach((s, r) => out.set(arrs[r].subarray(s.promptLength), r * L))
        return out
      }
      const mask = new Float32Array(mb.length * L)
      mb.forEach((s, r) => mask.fill(1, r * L, r * L + s.tokens.length - s.promptLength))
      // Non-finite log-probabilities mean the model itself has diverged (the loss kernel would refuse them as a bad
      // argument): the trainer turns ERR_DIVERGED into a stop naming the step.
      for (let r = 0; r < mb.length; r++) {
        const lp = logp[r]
        for (let k = mb[r].promptLength; k < lp.length; k++) {
          if (!Number.isFinite(lp[k]))
            throw new RecodeError(
              'ERR_DIVERGED',
              `the policy's log-probability of response token ${k - mb[r].promptLength} of sequence ${m + r} is ${lp[k]}`
            )
        }
      }
      const mbMask = mb.reduce((a, s) => a + (masked(s) ? 0 : s.tokens.length - s.promptLength), 0)
      const variants = objectiveOptions(config, mb, L)
      const { grad, metrics } = await policyLoss(
        {
          batch: mb.length,
          length: L,
          logp: pack(logp) as Float32Array,
          oldLogp: pack(oldLogp.slice(m, m + microRows)) as Float32Array,
          refLogp: withRef ? pack(refLogp.slice(m, m + microRows)) : undefined,
          advantages: advantages.subarray(m, m + mb.length),
          mask,
          ...variants.inputs
        },
        {
          clipLow: config.clipEpsLow,
          clipHigh: config.clipEpsHigh,
          clipRatioC: config.dualClip ?? 0,
          klCoef: config.klCoef,
          klEstimator: config.klCoef > 0 ? config.klEstimator : undefined,
          aggregation: config.lossType == null ? config.lossAggregation : undefined,
          normLength: config.maxCompletionTokens,
          ...variants.options,
          // host arrays in and out: the CPU kernel, whatever GPU this process sees. 'auto' took the GPU where one
          // was visible, so on a one-GPU machine rank 0 (GPU) and rank 1 (none visible) rounded the KL differently
          device: 'cpu',
          signal
        }
      )
      // The kernel aggregates over this micro-batch; scale to the whole batch (tokens or sequences).
      const scale = tokenMean(config) ? (totalMask > 0 ? mbMask / totalMask : 0) : mb.length / B
      const weights = mb.map((s, r) => {
        const w = new Float32Array(s.tokens.length)
        for (let k = 0; k < s.tokens.length - s.promptLength; k++) w[s.promptLength + k] = -grad[r * L + k] * scale
        return w
      })
      await trainer.backward(weights, { signal })
      t = tick('backward', t)
      parts.set(
        [
          metrics.loss * scale,
          metrics.klMean * mbMask,
          metrics.clipFrac * mbMask,
          metrics.clipFracLow * mbMask,
          metrics.clipFracHigh * mbMask,
          mbMask,
          metrics.rolloutLogRatioAbs * mbMask,
          metrics.rolloutCorrectedFrac * mbMask
        ],
        (m / microRows) * PARTS
      )
    }
    // summed in micro-batch order whichever rank computed each: the same numbers on any number of ranks
    dp?.allreduce(parts)
    for (let k = 0; k < parts.length; k += PARTS) {
      lossSum += parts[k]
      klSum += parts[k + 1]
      clipSum += parts[k + 2]
      clipLowSum += parts[k + 3]
      clipHighSum += parts[k + 4]
      weightSum += parts[k + 5]
      misSum += parts[k + 6]
      correctedSum += parts[k + 7]
    }
    t = performance.now()
    await dp?.reduceGradients()
    gradNorm = await trainer.applyAdamW({
      lr,
      beta1: config.adamBeta1,
      beta2: config.adamBeta2,
      eps: config.adamEps,
      weightDecay: config.weightDecay,
      maxGradNorm: config.gradClip
    })
    tick('optimizer', t)
  }
  const trainedTokens = seqs.reduce((a, s) => a + s.tokens.length, 0) * config.policyUpdatesPerBatch
  return {
    loss: lossSum / config.policyUpdatesPerBatch,
    gradNorm,
    kl: klSum / weightSum,
    clipFraction: clipSum / weightSum,
    clipFractionLow: clipLowSum / weightSum,
    clipFractionHigh: clipHighSum / weightSum,
    tokensPerSecond: trainedTokens / Math.max(1e-9, seconds.logprobs + seconds.backward + seconds.optimizer),
    seconds,
    ...(config.rolloutCorrection != null
      ? { rolloutLogRatioAbs: misSum / weightSum, rolloutCorrectedFraction: correctedSum / weightSum }
      : {})
  }
}

// ---- TRL's objectives (issue 16) --------------------------------------------------------------------------

/** Whether the loss divides by the batch's token count (so a micro-batch's share is its tokens): verl's
 * token-mean, TRL's dapo and cispo (num_items_in_batch). TRL's bnpo divides each micro-batch by its own count
 * and the sum by the accumulation steps, as the sequence means do. */
function tokenMean(config: TrainConfig): boolean {
  if (config.lossType == null) return config.lossAggregation === 'token-mean'
  return config.lossType === 'dapo' || config.lossType === 'cispo'
}

/** The policyLoss inputs and options of config's TRL settings for micro-batch mb packed as [rows x L]. */
function objectiveOptions(
  config: TrainConfig,
  mb: Sequence[],
  L: number
): { inputs: Partial<PolicyLossInputs>; options: PolicyLossOptions } {
  const inputs: Partial<PolicyLossInputs> = {}
  const options: PolicyLossOptions = {
    lossType: config.lossType ?? undefined,
    importanceSamplingLevel: config.importanceSamplingLevel,
    delta: config.delta ?? undefined,
    sapoTemperaturePos: config.sapoTemperaturePos,
    sapoTemperatureNeg: config.sapoTemperatureNeg
  }
  if (config.maskTruncatedCompletions) {
    inputs.truncated = mb.map((s) => (s.truncated === true ? 1 : 0))
    options.maskTruncatedCompletions = true
  }
  if (config.rolloutCorrection != null) {
    const roll = new Float32Array(mb.length * L)
    mb.forEach((s, r) => {
      const lp = s.sampledLogp
      if (lp === undefined || lp.length !== s.tokens.length - s.promptLength)
        throw new RecodeError('ERR_INVALID_ARG', "train: rolloutCorrection needs the generator's log-probability of every sampled token")
      roll.set(lp, r * L)
    })
    inputs.rolloutLogp = roll
    options.rolloutCorrection = { ...config.rolloutCorrection }
  }
  return { inputs, options }
}
