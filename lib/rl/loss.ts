/**
 * GRPO / DAPO advantages, DAPO's dynamic-sampling mask and overlong shaping, and the clipped
 * policy-gradient loss with its gradient and the metrics trainers log. Definitions follow verl
 * (core_algos.py) and, where named, TRL; see src/rl/rl_loss.h for the exact statements.
 */
import { cancelFlag } from '../abort'
import { resolveDevice, type Device } from '../device'
import { invalidArg, optionsArg } from '../errors'
import { native } from '../native'

export interface AdvantageOptions {
  /**
   * 'verl': (r - mean) / (std + 1e-6), unbiased std; a group of one uses mean 0 and std 1.
   * 'trl': (r - mean) / (std + 1e-4), unbiased std; a group of one gives 0.
   */
  convention?: 'verl' | 'trl'
  /** Divide by the group's std ('group'), the whole batch's std ('batch'), or not at all ('none', Dr. GRPO). */
  scale?: 'group' | 'batch' | 'none'
  device?: Device
}

/**
 * Rejects NaN and +-Infinity, naming the first index. The kernels would otherwise turn them into silent
 * garbage: a NaN log-probability gives a zero gradient, an infinite advantage an infinite loss, and a group
 * of NaN rewards compares unequal to itself and survives DAPO's filter. Checked here, in one pass over
 * values the kernel reads anyway, so every backend gets the same error.
 */
function checkFinite(fn: string, name: string, values: Float32Array): void {
  for (let i = 0; i < values.length; i++) {
    const v = values[i]
    if (v - v !== 0) throw invalidArg(`${fn}: ${name}[${i}] is ${String(v)} (every value must be finite)`)
  }
}

function checkRewards(fn: string, rewards: Float32Array, groupSize: number): void {
  if (!(rewards instanceof Float32Array) || rewards.length === 0) throw invalidArg(`${fn}: rewards must be a non-empty Float32Array`)
  if (!Number.isInteger(groupSize) || groupSize < 1 || rewards.length % groupSize !== 0) {
    throw invalidArg(`${fn}: groupSize must be a positive integer dividing rewards.length (${rewards.length}), got ${groupSize}`)
  }
  checkFinite(fn, 'rewards', rewards)
}

/**
 * GRPO advantages for rewards laid out as consecutive groups of `groupSize` responses per prompt.
 * @returns one advantage per reward.
 */
export function grpoAdvantages(rewards: Float32Array, groupSize: number, options: AdvantageOptions = {}): Float32Array {
  options = optionsArg(options, 'grpoAdvantages')
  checkRewards('grpoAdvantages', rewards, groupSize)
  const convention = options.convention ?? 'verl'
  const scale = options.scale ?? 'group'
  if (convention !== 'verl' && convention !== 'trl')
    throw invalidArg(`grpoAdvantages: convention must be 'verl' or 'trl', got ${String(convention)}`)
  if (scale !== 'group' && scale !== 'batch' && scale !== 'none')
    throw invalidArg(`grpoAdvantages: scale must be 'group', 'batch' or 'none', got ${String(scale)}`)
  const device = resolveDevice(options.device, 'grpoAdvantages')
  return native().grpoAdvantages(
    device,
    rewards,
    groupSize,
    convention === 'trl' ? 1 : 0,
    scale === 'group' ? 0 : scale === 'batch' ? 1 : 2
  ) as Float32Array
}

/**
 * DAPO dynamic sampling: 1 for each group to keep, 0 for groups whose rewards are all equal (they carry no
 * gradient). Groups of one are kept.
 */
export function dapoDynamicMask(rewards: Float32Array, groupSize: number): Uint8Array {
  checkRewards('dapoDynamicMask', rewards, groupSize)
  return native().dapoDynamicMask(rewards, groupSize) as Uint8Array
}

export interface OverlongOptions {
  /** Maximum response length L_max. */
  maxLength: number
  /** Soft buffer L_cache: penalties start at L_max - L_cache. */
  buffer: number
  /** Penalty at L_max (DAPO: 1). Default 1. */
  factor?: number
}

/**
 * DAPO overlong reward shaping, added to the rewards: 0 up to L_max - buffer, then falling linearly to
 * -factor at L_max, and -factor beyond.
 */
export function overlongPenalty(lengths: Int32Array | ArrayLike<number>, options: OverlongOptions): Float32Array {
  const l = lengths instanceof Int32Array ? lengths : Int32Array.from(lengths as ArrayLike<number>)
  if (!options || typeof options !== 'object') throw invalidArg('overlongPenalty: options { maxLength, buffer } are required')
  for (const [name, v] of [
    ['maxLength', options.maxLength],
    ['buffer', options.buffer],
    ['factor', options.factor ?? 1]
  ] as const) {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw invalidArg(`overlongPenalty: ${name} must be a finite number, got ${String(v)}`)
  }
  return native().overlongPenalty(l, options.maxLength, options.buffer, options.factor ?? 1) as Float32Array
}

export type LossAggregation = 'token-mean' | 'seq-mean-token-sum' | 'seq-mean-token-mean' | 'seq-mean-token-sum-norm' | 'dr-grpo'

/** TRL GRPOTrainer's `loss_type` values (v1.9): an objective and an aggregation each (see policyLoss). */
export type LossType = 'grpo' | 'bnpo' | 'dr_grpo' | 'dapo' | 'cispo' | 'sapo' | 'luspo'

/**
 * Importance-sampling correction for the generator's numerics: weight exp(oldLogp - rolloutLogp), truncated at c
 * (min(w, c)) or masked (0 outside [1/c, c]), per token or per sequence (the sequence's summed log-ratio).
 */
export interface RolloutCorrectionOptions {
  mode: 'truncate' | 'mask'
  level: 'token' | 'sequence'
  /** The bound C (> 1). */
  c: number
}

export interface PolicyLossInputs {
  /** Sequences (rows). */
  batch: number
  /** Tokens per row (the response length, padded). */
  length: number
  /** Current policy log-probabilities [B*T]. */
  logp: Float32Array
  /** Rollout (behaviour) policy log-probabilities [B*T]. */
  oldLogp: Float32Array
  /** Reference policy log-probabilities [B*T]; required with a KL penalty. */
  refLogp?: Float32Array
  /** Advantages per sequence [B] or per token [B*T]. */
  advantages: Float32Array
  /** Response mask [B*T]: 1 for tokens that count (Uint8Array or Float32Array weights). */
  mask: Float32Array | Uint8Array
  /** Per-token entropy [B*T]: the entropy metric; required by entropyCoef and topEntropyQuantile. */
  entropy?: Float32Array
  /** The generator's log-probabilities of the sampled tokens [B*T]; required by rolloutCorrection. */
  rolloutLogp?: Float32Array
  /** One flag per sequence [B]: the completion was cut at the length limit (maskTruncatedCompletions). */
  truncated?: Uint8Array | ArrayLike<boolean | number>
}

export interface PolicyLossOptions {
  /** Ratio lower clip 1 - clipLow. Default 0.2. */
  clipLow?: number
  /** Ratio upper clip 1 + clipHigh (DAPO clip-higher: 0.28). Default 0.2. */
  clipHigh?: number
  /** Dual-clip constant for negative advantages (verl clip_ratio_c, > 1); 0 or undefined = off. */
  clipRatioC?: number
  /** KL penalty coefficient (0 = off). */
  klCoef?: number
  /** KL estimator: k1 = logp - ref, k2 = (logp - ref)^2 / 2, k3 = exp(ref - logp) - (ref - logp) - 1 (clamped). */
  klEstimator?: 'k1' | 'k2' | 'k3'
  /** Loss aggregation (verl agg_loss). Default 'token-mean'. */
  aggregation?: LossAggregation
  /** Divisor for 'seq-mean-token-sum-norm' (default: length). */
  normLength?: number
  /**
   * TRL's loss_type: sets the objective and the aggregation (so `aggregation` must be left out).
   * grpo, sapo: seq-mean-token-mean; bnpo, dapo, cispo: token-mean; dr_grpo: 'dr-grpo' (sum / (B * normLength));
   * luspo: seq-mean-token-sum (each sequence's loss times its length, averaged). cispo: -min(ratio, clipHigh)
   * (detached) * A * logp, so clipHigh is the weight cap (TRL's epsilon_high; ScaleRL suggests 5). sapo:
   * -sigmoid(tau (ratio - 1)) * 4 / tau * A. Default: the clipped ratio with `aggregation`.
   */
  lossType?: LossType
  /** 'sequence' (GSPO): one ratio per sequence, exp of the masked mean log-ratio. Default 'token'. */
  importanceSamplingLevel?: 'token' | 'sequence'
  /** Two-sided clipping (INTELLECT-2): the unclipped ratio is capped at delta (> 1 + clipHigh advised). */
  delta?: number
  /** SAPO temperatures for A > 0 and A <= 0 (TRL defaults 1.0 and 1.05). */
  sapoTemperaturePos?: number
  sapoTemperatureNeg?: number
  /** Drop the sequences flagged in `inputs.truncated` from the loss (their mask is zeroed). */
  maskTruncatedCompletions?: boolean
  /** Keep in the policy term only tokens whose entropy reaches this top quantile (TRL's rho; 1 = all). */
  topEntropyQuantile?: number
  /** Entropy bonus: loss -= entropyCoef * mean entropy of the kept tokens (per token of the batch for lossType
   * dapo / cispo, as TRL); gradEntropy is returned. */
  entropyCoef?: number
  rolloutCorrection?: RolloutCorrectionOptions
  /** Buffer [B*T] to write the gradient into (reused across steps); default: a new Float32Array. */
  gradOut?: Float32Array
  device?: Device
  signal?: AbortSignal
}

export interface PolicyLossMetrics {
  loss: number
  pgLoss: number
  klLoss: number
  /** Fraction of masked tokens where the clipped branch is active (low + high). */
  clipFrac: number
  clipFracLow: number
  clipFracHigh: number
  /** Fraction where the dual clip (negative advantages) is active. */
  clipFracDual: number
  /** Masked mean of old_logp - logp (verl's ppo_kl). */
  approxKl: number
  /** Masked mean of the KL estimator (0 without KL). */
  klMean: number
  entropyMean: number
  ratioMean: number
  ratioMin: number
  ratioMax: number
  /** Sum of the mask. */
  tokens: number
  /** The mean entropy the bonus rewards (0 without entropyCoef). */
  entropyBonus: number
  /** Fraction of tokens the top-entropy mask keeps (1 without it). */
  entropyKeptFrac: number
  /** Masked mean |oldLogp - rolloutLogp| (0 without rolloutCorrection). */
  rolloutLogRatioAbs: number
  /** Fraction of tokens whose correction weight was truncated or masked. */
  rolloutCorrectedFrac: number
}

export interface PolicyLossResult {
  /** d loss / d logp, [B*T]. */
  grad: Float32Array
  /** d loss / d entropy, [B*T] (with entropyCoef only). */
  gradEntropy?: Float32Array
  metrics: PolicyLossMetrics
}

const aggregations: LossAggregation[] = ['token-mean', 'seq-mean-token-sum', 'seq-mean-token-mean', 'seq-mean-token-sum-norm', 'dr-grpo']

/** TRL v1.9 _compute_loss: each loss_type's per-token objective (0 clip, 1 cispo, 2 sapo) and normalisation. */
const lossTypes: Record<LossType, { objective: number; aggregation: LossAggregation; entropyGlobalNorm: boolean }> = {
  grpo: { objective: 0, aggregation: 'seq-mean-token-mean', entropyGlobalNorm: false },
  bnpo: { objective: 0, aggregation: 'token-mean', entropyGlobalNorm: false },
  dr_grpo: { objective: 0, aggregation: 'dr-grpo', entropyGlobalNorm: false },
  dapo: { objective: 0, aggregation: 'token-mean', entropyGlobalNorm: true },
  cispo: { objective: 1, aggregation: 'token-mean', entropyGlobalNorm: true },
  sapo: { objective: 2, aggregation: 'seq-mean-token-mean', entropyGlobalNorm: false },
  luspo: { objective: 0, aggregation: 'seq-mean-token-sum', entropyGlobalNorm: false }
}

/**
 * The clipped policy-gradient loss (PPO/GRPO/DAPO as verl computes it): ratio = exp(clamp(logp - oldLogp, ±20)),
 * per-token loss max(-A ratio, -A clip(ratio, 1 - clipLow, 1 + clipHigh)), dual clip min(·, -A c) for A < 0,
 * plus klCoef times the aggregated KL estimator; aggregated over masked tokens. TRL's variants (lossType,
 * importanceSamplingLevel, delta, topEntropyQuantile, entropyCoef, rolloutCorrection, maskTruncatedCompletions)
 * follow its GRPOTrainer._compute_loss (v1.9); lib/rl/README.md states each.
 * @returns the gradient with respect to logp and the loss with its metrics.
 */
export async function policyLoss(inputs: PolicyLossInputs, options: PolicyLossOptions = {}): Promise<PolicyLossResult> {
  if (!inputs || typeof inputs !== 'object') throw invalidArg('policyLoss: inputs are required')
  options = optionsArg(options, 'policyLoss')
  for (const name of ['logp', 'oldLogp', 'refLogp', 'advantages', 'mask', 'entropy', 'rolloutLogp'] as const) {
    const v = inputs[name]
    if (v instanceof Float32Array) checkFinite('policyLoss', name, v)
  }
  for (const name of [
    'clipLow',
    'clipHigh',
    'clipRatioC',
    'klCoef',
    'normLength',
    'delta',
    'sapoTemperaturePos',
    'sapoTemperatureNeg',
    'topEntropyQuantile',
    'entropyCoef'
  ] as const) {
    const v = options[name]
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v)))
      throw invalidArg(`policyLoss: ${name} must be a finite number, got ${String(v)}`)
  }
  const { batch, length } = inputs
  if (!Number.isInteger(batch) || batch < 1) throw invalidArg(`policyLoss: batch must be a positive integer, got ${batch}`)
  if (!Number.isInteger(length) || length < 1) throw invalidArg(`policyLoss: length must be a positive integer, got ${length}`)
  let mask = inputs.mask
  if (mask instanceof Uint8Array) mask = Float32Array.from(mask)
  else if (!(mask instanceof Float32Array)) throw invalidArg('policyLoss: mask must be a Float32Array or a Uint8Array')
  if (options.maskTruncatedCompletions === true) {
    const tr = inputs.truncated
    if (tr == null || tr.length !== batch)
      throw invalidArg(`policyLoss: inputs.truncated must hold one flag per sequence (${batch}) with maskTruncatedCompletions`)
    if (mask === inputs.mask) mask = mask.slice() // the caller's array stays as it was
    for (let b = 0; b < batch; b++) if (tr[b]) mask.fill(0, b * length, (b + 1) * length)
  } else if (options.maskTruncatedCompletions !== undefined && options.maskTruncatedCompletions !== false) {
    throw invalidArg(`policyLoss: maskTruncatedCompletions must be a boolean, got ${String(options.maskTruncatedCompletions)}`)
  }
  const lossType = options.lossType
  if (lossType !== undefined && !Object.hasOwn(lossTypes, lossType))
    throw invalidArg(`policyLoss: lossType must be one of ${Object.keys(lossTypes).join(', ')}, got ${String(lossType)}`)
  if (lossType !== undefined && options.aggregation !== undefined)
    throw invalidArg('policyLoss: aggregation must be left out with lossType (the loss type sets it)')
  const variant = lossType !== undefined ? lossTypes[lossType] : undefined
  for (const name of ['delta', 'sapoTemperaturePos', 'sapoTemperatureNeg'] as const) {
    const v = options[name]
    if (v !== undefined && !(v > 0)) throw invalidArg(`policyLoss: ${name} must be a positive number, got ${String(v)}`)
  }
  const level = options.importanceSamplingLevel ?? 'token'
  if (level !== 'token' && level !== 'sequence')
    throw invalidArg(`policyLoss: importanceSamplingLevel must be 'token' or 'sequence', got ${String(level)}`)
  const rc = options.rolloutCorrection
  if (rc !== undefined) {
    if (rc === null || typeof rc !== 'object') throw invalidArg('policyLoss: rolloutCorrection must be { mode, level, c }')
    if (rc.mode !== 'truncate' && rc.mode !== 'mask')
      throw invalidArg(`policyLoss: rolloutCorrection.mode must be 'truncate' or 'mask', got ${String(rc.mode)}`)
    if (rc.level !== 'token' && rc.level !== 'sequence')
      throw invalidArg(`policyLoss: rolloutCorrection.level must be 'token' or 'sequence', got ${String(rc.level)}`)
    if (typeof rc.c !== 'number' || !Number.isFinite(rc.c) || rc.c <= 1)
      throw invalidArg(`policyLoss: rolloutCorrection.c must be a finite number > 1, got ${String(rc.c)}`)
    if (!(inputs.rolloutLogp instanceof Float32Array))
      throw invalidArg('policyLoss: inputs.rolloutLogp (Float32Array) is required with rolloutCorrection')
  }
  if (((options.entropyCoef ?? 0) !== 0 || (options.topEntropyQuantile ?? 1) < 1) && !(inputs.entropy instanceof Float32Array)) {
    throw invalidArg('policyLoss: inputs.entropy (Float32Array) is required with entropyCoef or topEntropyQuantile < 1')
  }
  const agg = aggregations.indexOf(variant?.aggregation ?? options.aggregation ?? 'token-mean')
  if (agg < 0) throw invalidArg(`policyLoss: aggregation must be one of ${aggregations.join(', ')}, got ${String(options.aggregation)}`)
  const klCoef = options.klCoef ?? 0
  const est = options.klEstimator
  if (est !== undefined && est !== 'k1' && est !== 'k2' && est !== 'k3')
    throw invalidArg(`policyLoss: klEstimator must be 'k1', 'k2' or 'k3', got ${String(est)}`)
  const klKind = klCoef !== 0 || est !== undefined ? ({ k1: 1, k2: 2, k3: 3 } as const)[est ?? 'k3'] : 0
  const device = resolveDevice(options.device, 'policyLoss')
  const cancel = cancelFlag(options.signal)
  try {
    return (await native().policyLoss(
      device,
      {
        batch,
        length,
        logp: inputs.logp,
        oldLogp: inputs.oldLogp,
        refLogp: inputs.refLogp,
        advantages: inputs.advantages,
        mask,
        entropy: inputs.entropy,
        clipLow: options.clipLow ?? 0.2,
        clipHigh: options.clipHigh ?? 0.2,
        clipRatioC: options.clipRatioC ?? 0,
        klCoef,
        klKind,
        aggregation: agg,
        normLength: options.normLength ?? 0,
        gradOut: options.gradOut,
        objective: variant?.objective ?? 0,
        seqLevel: level === 'sequence' ? 1 : 0,
        delta: options.delta ?? 0,
        sapoTauPos: options.sapoTemperaturePos ?? 1.0,
        sapoTauNeg: options.sapoTemperatureNeg ?? 1.05,
        entropyCoef: options.entropyCoef ?? 0,
        entropyGlobalNorm: variant?.entropyGlobalNorm === true ? 1 : 0,
        topEntropyQuantile: options.topEntropyQuantile ?? 1,
        rolloutCorrection: rc === undefined ? 0 : rc.mode === 'truncate' ? 1 : 2,
        rolloutSeq: rc?.level === 'sequence' ? 1 : 0,
        rolloutC: rc?.c ?? 0,
        rolloutLogp: rc !== undefined ? inputs.rolloutLogp : undefined
      },
      cancel.flag
    )) as PolicyLossResult
  } finally {
    cancel.dispose()
  }
}
