/**
 * The update phase of a GRPO / DAPO step, on a Rollout: reference log-probs of the frozen base (KL), then
 * policyUpdatesPerBatch times: per micro-batch a forward that keeps the activations, the clipped policy loss on
 * its log-probs, a backward with the loss's d/dlogp as token weights; then clip + AdamW. The first update's
 * log-probs are the old policy's (the ratio is 1 there and differs from 1 in later updates).
 */
import type { ModelTrainer } from '../model/train'
import { policyLoss } from '../rl/loss'
import type { TrainConfig } from './config'
import type { Rollout } from './rollout'

export interface PolicyUpdateOptions {
  lr: number
  /** Full fine-tuning with KL: the base weights, swapped in for the reference forward (adapters switch themselves off instead). */
  baseWeights?: Array<{ name: string, data: Float32Array }>
  signal?: AbortSignal
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
  seconds: { logprobs: number, backward: number, optimizer: number }
}

export async function policyUpdate (trainer: ModelTrainer, config: TrainConfig, batch: Rollout, options: PolicyUpdateOptions): Promise<PolicyUpdateResult> {
  const { lr, baseWeights, signal } = options
  const seconds = { logprobs: 0, backward: 0, optimizer: 0 }
  const tick = (name: keyof typeof seconds, since: number): number => { const now = performance.now(); seconds[name] += (now - since) / 1000; return now }
  const seqs = batch.sequences
  const advantages = batch.advantages
  const B = seqs.length
  const microRows = (config.promptsPerStep * config.samplesPerPrompt) / config.gradAccumulation  // may split a group
  const totalMask = seqs.reduce((a, s) => a + s.tokens.length - s.promptLength, 0)
  let t: number

  // Reference log-probs (KL), one forward per micro-batch of the frozen base: adapters switched off, or (full
  // fine-tuning) the base weights swapped in.
  const refLogp: Float32Array[] = []
  if (config.klCoef > 0 && (baseWeights !== undefined || trainer.adapter !== undefined)) {
    t = performance.now()
    const current = baseWeights !== undefined ? await trainer.parameters() : undefined
    if (baseWeights !== undefined) await trainer.setState({ tensors: baseWeights })
    else await trainer.setAdaptersEnabled(false)
    try {
      for (let m = 0; m < B; m += microRows) refLogp.push(...await trainer.forward(seqs.slice(m, m + microRows).map((s) => s.tokens), { signal }))
    } finally {
      if (current !== undefined) await trainer.setState({ tensors: current })
      else await trainer.setAdaptersEnabled(true)
    }
    tick('logprobs', t)
  }

  const oldLogp: Float32Array[] = []
  let lossSum = 0; let klSum = 0; let clipSum = 0; let clipLowSum = 0; let clipHighSum = 0; let gradNorm = 0; let weightSum = 0
  for (let update = 0; update < config.policyUpdatesPerBatch; update++) {
    for (let m = 0; m < B; m += microRows) {
      const mb = seqs.slice(m, m + microRows)
      t = performance.now()
      const logp = await trainer.forward(mb.map((s) => s.tokens), { signal })
      if (update === 0) oldLogp.push(...logp.map((x) => x.slice()))
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
      const mbMask = mb.reduce((a, s) => a + s.tokens.length - s.promptLength, 0)
      const { grad, metrics } = await policyLoss({
        batch: mb.length,
        length: L,
        logp: pack(logp) as Float32Array,
        oldLogp: pack(oldLogp.slice(m, m + microRows)) as Float32Array,
        refLogp: refLogp.length > 0 ? pack(refLogp.slice(m, m + microRows)) : undefined,
        advantages: advantages.subarray(m, m + mb.length),
        mask
      }, {
        clipLow: config.clipEpsLow,
        clipHigh: config.clipEpsHigh,
        clipRatioC: config.dualClip ?? 0,
        klCoef: config.klCoef,
        klEstimator: config.klCoef > 0 ? config.klEstimator : undefined,
        aggregation: config.lossAggregation,
        normLength: config.maxCompletionTokens,
        signal
      })
      // The kernel aggregates over this micro-batch; scale to the whole batch (tokens or sequences).
      const scale = config.lossAggregation === 'token-mean' ? mbMask / totalMask : mb.length / B
      const weights = mb.map((s, r) => {
        const w = new Float32Array(s.tokens.length)
        for (let k = 0; k < s.tokens.length - s.promptLength; k++) w[s.promptLength + k] = -grad[r * L + k] * scale
        return w
      })
      await trainer.backward(weights, { signal })
      t = tick('backward', t)
      lossSum += metrics.loss * scale
      klSum += metrics.klMean * mbMask; clipSum += metrics.clipFrac * mbMask; clipLowSum += metrics.clipFracLow * mbMask; clipHighSum += metrics.clipFracHigh * mbMask; weightSum += mbMask
    }
    t = performance.now()
    gradNorm = await trainer.applyAdamW({ lr, beta1: config.adamBeta1, beta2: config.adamBeta2, eps: config.adamEps, weightDecay: config.weightDecay, maxGradNorm: config.gradClip })
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
    seconds
  }
}
