/**
 * The rollout phase of a GRPO / DAPO step: draw promptsPerStep tasks, sample samplesPerPrompt completions each,
 * score them, (DAPO) drop groups whose rewards are all equal and draw again until the batch is full, and compute
 * the group-relative advantages. Its result is plain data, all that the update phase (policyUpdate.ts) reads.
 */
import { RecodeError } from '../errors'
import type { Model } from '../model/index'
import type { GenerateOptions } from '../model/types'
import { score as rewardComponents, trainingReward } from '../reward'
import { grpoAdvantages, dapoDynamicMask, overlongPenalty } from '../rl/loss'
import type { TrainConfig } from './config'
import type { StepMetrics } from './metrics'
import type { UpdateTaskRow } from './synthetic'

/** A prompt and its completion as token ids; the loss sees the tokens from promptLength on. */
export interface Sequence {
  tokens: number[]
  promptLength: number
  /** The generator's log-probability of each completion token (the rollout correction compares the trainer's to it). */
  sampledLogp?: number[]
  /** The completion hit maxCompletionTokens (finish reason 'length'; maskTruncatedCompletions drops it). */
  truncated?: boolean
}

/** Replaces the configured reward: one number per completion (completions and their rows in order). */
export type RewardFunction = (completions: string[], rows: UpdateTaskRow[]) => ArrayLike<number> | Promise<ArrayLike<number>>

/** What rollouts draw from: the training rows, their rendered prompts, the rows whose prompts fit, and the position in their shuffled stream. */
export interface PromptSource {
  rows: UpdateTaskRow[]
  text: string[]
  ids: number[][]
  usable: number[]
  cursor: { next: (count: number) => number[] }
}

export interface RolloutOptions {
  rewardFunction?: RewardFunction
  /** Python for the reward's syntax check. */
  python?: string
  signal?: AbortSignal
  onProgress?: GenerateOptions['onProgress']
  /** Data parallelism: this rank generates and scores its shards of each draw; every rank gets every sample. */
  world?: RolloutWorld
}

/** What a rollout needs from the process group (lib/dist World). */
export interface RolloutWorld {
  rank: number
  size: number
  /** Every rank's array, in rank order. */
  allgatherv: (a: Float64Array) => Float64Array[]
}

/** The rollout statistics a step records, over every drawn sample (kept or not). */
export type RolloutMetrics = Required<
  Pick<StepMetrics, 'rewardMean' | 'rewardStd' | 'formatRate' | 'esStar' | 'exactMatch' | 'responseLength' | 'entropy'>
> & { generationBatches: number; keptGroups: number }

export interface Rollout {
  /** Prompt + completion of every kept sample, group after group (samplesPerPrompt each); empty when no group was kept. */
  sequences: Sequence[]
  /** One group-relative advantage per sequence. */
  advantages: Float32Array
  metrics: RolloutMetrics
  /** Seconds spent sampling and scoring. */
  seconds: { generation: number; reward: number }
}

const mean = (xs: ArrayLike<number>): number => {
  let s = 0
  for (let i = 0; i < xs.length; i++) s += xs[i]
  return xs.length ? s / xs.length : 0
}
const std = (xs: ArrayLike<number>): number => {
  const m = mean(xs)
  let s = 0
  for (let i = 0; i < xs.length; i++) s += (xs[i] - m) ** 2
  return xs.length > 1 ? Math.sqrt(s / (xs.length - 1)) : 0
}

/** Rollouts of RL step `step` (its sampling seeds are a function of (config.seed, step, generation batch)). */
export async function rollout(
  model: Model,
  config: TrainConfig,
  step: number,
  prompts: PromptSource,
  options: RolloutOptions = {}
): Promise<Rollout> {
  const { signal } = options
  const n = config.samplesPerPrompt
  const seconds = { generation: 0, reward: 0 }
  const tick = (name: keyof typeof seconds, since: number): number => {
    const now = performance.now()
    seconds[name] += (now - since) / 1000
    return now
  }

  const kept: Array<{ row: number; completions: number[][]; rewards: number[]; logprobs: number[][]; truncated: boolean[] }> = []
  let batches = 0
  let allRewards: number[] = []
  let allFmt: number[] = []
  let allEs: number[] = []
  let allEm: number[] = []
  let allLengths: number[] = []
  let sampledLogpSum = 0
  let t = performance.now()
  while (kept.length < config.promptsPerStep && batches < config.maxGenerationBatches) {
    const rows = prompts.cursor.next(config.promptsPerStep).map((k) => prompts.usable[k])
    // The draw is generated in shards of whole prompts (gcd(prompts, gradAccumulation) of them: one micro-batch's
    // prompts each when gradAccumulation divides the prompts; micro-batches may also split a group), with sampling
    // streams numbered as in the whole draw: rank r generates and scores shards [r S/N, (r+1) S/N), so a run gives
    // the same samples on any number of ranks.
    const shards = gcd(rows.length, config.gradAccumulation)
    const per = rows.length / shards
    const world = options.world ?? { rank: 0, size: 1, allgatherv: (a: Float64Array) => [a] }
    const packed: number[] = []
    for (let k = Math.floor((world.rank * shards) / world.size); k < Math.floor(((world.rank + 1) * shards) / world.size); k++) {
      const shardRows = rows.slice(k * per, (k + 1) * per)
      const shardGens = await model.generate(
        shardRows.map((i) => prompts.text[i]),
        {
          n,
          maxNewTokens: config.maxCompletionTokens,
          temperature: config.temperature,
          topP: config.topP,
          seed: (config.seed * 1_000_003 + step * 1009 + batches) % 2 ** 52,
          firstRow: k * per * n,
          signal,
          onProgress: options.onProgress
        }
      )
      t = tick('generation', t)
      const shardFlat = shardGens.flat()
      const texts = shardFlat.map((g) => g.text)
      const targetsRows = shardRows.flatMap((i) => Array(n).fill(prompts.rows[i]) as UpdateTaskRow[])
      const comps = await rewardComponents(
        texts,
        targetsRows.map((r) => r.new_code),
        { python: options.python, signal }
      )
      let r: Float32Array
      if (options.rewardFunction) {
        const given = await options.rewardFunction(texts, targetsRows)
        if (given == null || given.length !== texts.length)
          throw new RecodeError('ERR_REWARD', `train: rewardFunction must return ${texts.length} numbers, got ${given?.length}`)
        r = Float32Array.from(given)
        // A bad reward is the reward's fault, not the model's: named here rather than surfacing as a divergence.
        for (let j = 0; j < r.length; j++) {
          if (!Number.isFinite(r[j]))
            throw new RecodeError(
              'ERR_REWARD',
              `train: rewardFunction returned ${String(given[j])} for completion ${k * per * n + j} (training row ${shardRows[Math.floor(j / n)]}, sample ${j % n}) of RL step ${step + 1}`
            )
        }
      } else {
        r = Float32Array.from(trainingReward(config.reward, comps))
      }
      // per sample: reward, format, ES*, EM*, truncated (0/1), length, token ids, log-probs (exact in float64)
      shardFlat.forEach((g, k) =>
        packed.push(
          r[k],
          comps.format[k],
          comps.esStar[k],
          comps.emStar[k],
          g.finishReason === 'length' ? 1 : 0,
          g.tokenIds.length,
          ...g.tokenIds,
          ...g.logprobs
        )
      )
      t = tick('reward', t)
    }
    const samples = world.allgatherv(Float64Array.from(packed))
    const flat: Array<{ tokenIds: number[]; logprobs: number[]; finishReason: 'length' | 'other' }> = []
    const rAll: number[] = []
    const comps = { format: [] as number[], esStar: [] as number[], emStar: [] as number[] }
    for (const a of samples) {
      for (let o = 0; o < a.length; ) {
        rAll.push(a[o])
        comps.format.push(a[o + 1])
        comps.esStar.push(a[o + 2])
        comps.emStar.push(a[o + 3])
        const len = a[o + 5]
        const body = o + 6
        flat.push({
          tokenIds: Array.from(a.subarray(body, body + len)),
          logprobs: Array.from(a.subarray(body + len, body + 2 * len)),
          finishReason: a[o + 4] === 1 ? 'length' : 'other'
        })
        o = body + 2 * len
      }
    }
    if (flat.length !== rows.length * n)
      throw new RecodeError('ERR_DIST', `rollout: the ranks returned ${flat.length} samples for ${rows.length * n}`)
    const gens = rows.map((_, p) => flat.slice(p * n, (p + 1) * n))
    const r = Float32Array.from(rAll)
    const lengths = Int32Array.from(flat, (g) => g.tokenIds.length)
    if (config.overlongBufferTokens > 0) {
      const pen = overlongPenalty(lengths, {
        maxLength: config.maxCompletionTokens,
        buffer: config.overlongBufferTokens,
        factor: config.overlongPenalty
      })
      for (let k = 0; k < r.length; k++) r[k] += pen[k]
    }
    allRewards = allRewards.concat(Array.from(r))
    allFmt = allFmt.concat(Array.from(comps.format, (f) => (f > 0 ? 1 : 0)))
    allEs = allEs.concat(Array.from(comps.esStar))
    allEm = allEm.concat(Array.from(comps.emStar, (e) => (e === 2 ? 1 : 0)))
    allLengths = allLengths.concat(Array.from(lengths))
    for (const g of flat) for (const lp of g.logprobs) sampledLogpSum -= lp
    const keep = config.dynamicSampling ? dapoDynamicMask(r, n) : new Uint8Array(rows.length).fill(1)
    rows.forEach((row, p) => {
      if (!keep[p] || kept.length >= config.promptsPerStep) return
      kept.push({
        row,
        completions: gens[p].map((g) => g.tokenIds),
        rewards: Array.from({ length: n }, (_, s) => r[p * n + s]),
        logprobs: gens[p].map((g) => g.logprobs),
        truncated: gens[p].map((g) => g.finishReason === 'length')
      })
    })
    batches++
  }

  const metrics: RolloutMetrics = {
    rewardMean: mean(allRewards),
    rewardStd: std(allRewards),
    formatRate: mean(allFmt),
    esStar: mean(allEs),
    exactMatch: mean(allEm),
    responseLength: mean(allLengths),
    // Monte-Carlo entropy of the rollout policy: the mean of -log p(sampled token).
    entropy:
      sampledLogpSum /
      Math.max(
        1,
        allLengths.reduce((a, b) => a + b, 0)
      ),
    generationBatches: batches,
    keptGroups: kept.length
  }
  // Every group had equal rewards in every draw: nothing to learn from (verl skips the step the same way).
  if (kept.length === 0) return { sequences: [], advantages: new Float32Array(0), metrics, seconds }

  const rewardsKept = Float32Array.from(kept.flatMap((g) => g.rewards))
  const advantages = grpoAdvantages(rewardsKept, n, {
    device: 'cpu', // host arrays: the same bits whether or not a GPU is visible (see policyUpdate)
    convention: config.advantageEps >= 1e-4 ? 'trl' : 'verl',
    scale: config.advantageScaling
  })
  const sequences = kept.flatMap((g) =>
    g.completions.map((ids, s) => ({
      tokens: [...prompts.ids[g.row], ...ids],
      promptLength: prompts.ids[g.row].length,
      sampledLogp: g.logprobs[s],
      truncated: g.truncated[s]
    }))
  )
  return { sequences, advantages, metrics, seconds }
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b]
  return a
}
