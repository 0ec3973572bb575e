/**
 * The training configuration's type: every field a run reads, with its meaning. The presets that fill it are
 * in presets.ts, the checks in validate.ts.
 */
export type Algorithm = 'grpo' | 'dapo' | 'sft'
export type ScheduleName = 'constant' | 'linear' | 'cosine'
export type KlEstimator = 'k1' | 'k2' | 'k3'
/** verl's loss_agg_mode names: token-mean (DAPO), seq-mean-token-mean (original GRPO), seq-mean-token-sum, seq-mean-token-sum-norm (Dr. GRPO). */
export type LossAggregation = 'token-mean' | 'seq-mean-token-mean' | 'seq-mean-token-sum' | 'seq-mean-token-sum-norm'
/** Advantage normalisation: per group (GRPO), over the batch, or none (Dr. GRPO: r - group mean only). */
export type AdvantageScaling = 'group' | 'batch' | 'none'
/** Each is format + that component (lib/reward trainingReward); 'format' is format alone. */
export type RewardName = 'es*' | 'es' | 'em*' | 'em' | 'format'
export type AdapterType = 'none' | 'lora' | 'dora'
export type DeviceName = 'auto' | 'cpu' | 'cuda' | 'emulated'
export type ComputeDtype = 'auto' | 'fp32' | 'bf16'
export type PresetName = 'grpo-paper' | 'dapo-paper' | 'tiny' | 'demo'
/** TRL GRPOTrainer's loss_type values (v1.9); lib/rl/README.md states each objective and normalisation. */
export type LossType = 'grpo' | 'bnpo' | 'dr_grpo' | 'dapo' | 'cispo' | 'sapo' | 'luspo'
/** Importance-sampling correction of the trainer/generator mismatch (TRL's vllm_importance_sampling_mode). */
export interface RolloutCorrectionConfig {
  /** 'truncate': weight min(pi_trainer / pi_rollout, c); 'mask': the weight, or 0 outside [1/c, c]. */
  mode: 'truncate' | 'mask'
  /** Per token, or one weight per sequence from its summed log-ratio. */
  level: 'token' | 'sequence'
  /** The bound C (> 1; TRL's vllm_importance_sampling_clip_max defaults to 3). */
  c: number
}

export interface AdapterConfig {
  type: AdapterType
  /** Rank r of the low-rank update. */
  r: number
  /** Scaling numerator: the update is multiplied by alpha / r. */
  alpha: number
  /** Dropout probability on the adapter's input path (training only). */
  dropout: number
  /** Projection names the adapter wraps (PEFT's target_modules). */
  targetModules: string[]
}

export interface SyntheticDataConfig {
  /** Seed of the task generator (independent of the training seed). */
  seed: number
  /** Number of training tasks and of held-out tasks. */
  train: number
  heldOut: number
}

export interface TrainConfig {
  /** The preset the unspecified fields came from. */
  preset: PresetName
  algorithm: Algorithm
  /** A Hugging Face model folder, 'nova-base' for the shipped demo base model (models/nova-base), or 'tiny' for a
   * tiny model made at run time (tests). */
  model: string
  /** 'synthetic' (the bundled generator) or the path of a ReCode-format JSONL file. */
  data: string
  synthetic: SyntheticDataConfig
  reward: RewardName
  /** Prompts per optimizer step (before gradient accumulation splits them) and samples drawn per prompt. */
  promptsPerStep: number
  samplesPerPrompt: number
  maxPromptTokens: number
  maxCompletionTokens: number
  /** Rollout sampling. */
  temperature: number
  topP: number
  /** Held-out evaluation sampling (0 temperature = greedy). */
  evalTemperature: number
  evalTopP: number
  /** Held-out evaluation every N steps (0: only before and after training). */
  evalEvery: number
  learningRate: number
  schedule: ScheduleName
  /** Exactly one of warmupSteps / warmupRatio is set (the other null). */
  warmupSteps: number | null
  warmupRatio: number | null
  /** Cosine floor as a fraction of the peak learning rate. */
  minLrRatio: number
  weightDecay: number
  adamBeta1: number
  adamBeta2: number
  adamEps: number
  /** Global gradient-norm clip (0: off). */
  gradClip: number
  /** Micro-batches per optimizer step: RL splits promptsPerStep x samplesPerPrompt sequences (a micro-batch may be smaller than a group), SFT splits promptsPerStep. */
  gradAccumulation: number
  /** Optimizer steps of the run. */
  steps: number
  /** Policy updates per rollout batch (TRL num_iterations / PPO epochs); > 1 makes the ratio differ from 1. */
  policyUpdatesPerBatch: number
  clipEpsLow: number
  clipEpsHigh: number
  /** Dual-clip constant for negative advantages (verl clip_ratio_c, > 1), or null for off. */
  dualClip: number | null
  /** KL coefficient against the frozen base policy (0: no KL term, no reference log-probs). */
  klCoef: number
  klEstimator: KlEstimator
  lossAggregation: LossAggregation
  /** Epsilon in (r - mean) / (std + eps): 1e-6 in verl, 1e-4 in TRL. */
  advantageEps: number
  advantageScaling: AdvantageScaling
  /** DAPO dynamic sampling: drop groups whose rewards are all equal and refill, up to maxGenerationBatches. */
  dynamicSampling: boolean
  maxGenerationBatches: number
  /** DAPO overlong reward shaping: buffer length in tokens (0: off) and the maximal penalty. */
  overlongBufferTokens: number
  overlongPenalty: number
  adapter: AdapterConfig
  /** Short SFT warm start (steps) before RL; 0 for none. */
  warmStartSteps: number
  /** Learning rate of the warm start (constant after 10 warmup steps); null: learningRate. */
  warmStartLearningRate: number | null
  /** Checkpoint every N steps (0: only at the end) and how many to keep. */
  checkpointEvery: number
  keepCheckpoints: number
  outputDir: string
  seed: number
  device: DeviceName
  computeDtype: ComputeDtype
  /** Recompute activations in backward instead of keeping them (less memory, ~1/3 more compute). */
  activationRecomputation: boolean
  /** ZeRO-1 with several ranks: AdamW moments sharded over the ranks (null: on for full fine-tuning, off for adapters). */
  zero1: boolean | null
  /**
   * Non-finite steps (loss or gradient norm NaN/Inf) tolerated in a row before the run stops with ERR_DIVERGED
   * (0: stop at the first). Such a step is recorded but never checkpointed; the optimizer skips an update whose
   * gradient norm is not finite.
   */
  divergencePatience: number

  // ---- TRL GRPOTrainer's objectives (issue 16); the defaults keep the objective above ----
  /** TRL loss_type (TRL's default: 'dapo'); null: the clipped objective with lossAggregation. Sets the aggregation. */
  lossType: LossType | null
  /** TRL importance_sampling_level (default 'token'); 'sequence' is GSPO: exp of the mean log-ratio per sequence. */
  importanceSamplingLevel: 'token' | 'sequence'
  /** TRL delta (default None = null): two-sided clipping, the unclipped ratio capped at delta (INTELLECT-2). */
  delta: number | null
  /** TRL sapo_temperature_pos / _neg (defaults 1.0 and 1.05), for lossType 'sapo'. */
  sapoTemperaturePos: number
  sapoTemperatureNeg: number
  /** TRL mask_truncated_completions (default false): completions cut at maxCompletionTokens leave the loss. */
  maskTruncatedCompletions: boolean
  /** TRL top_entropy_quantile (default 1.0): train only on the top quantile of tokens by entropy. */
  topEntropyQuantile: number
  /** TRL entropy_coef (default 0.0): loss -= entropyCoef * mean token entropy. */
  entropyCoef: number
  /** Rollout-mismatch correction from the generator's recorded log-probabilities; null: off (TRL applies it to
   * vLLM rollouts by default, sequence mask at 3). */
  rolloutCorrection: RolloutCorrectionConfig | null
}
