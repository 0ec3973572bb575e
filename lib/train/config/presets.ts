/**
 * The presets that reproduce the paper's two settings (recode.md §4), the demo preset of the embedded default and the
 * tiny CPU preset the tests use. Adapters target every decoder projection, as PEFT does when asked for all linear layers.
 */
import { RecodeError } from '../../errors'
import { DECODER_PROJECTIONS } from '../../model/projections'
import type { PresetName, TrainConfig } from './schema'

const common: Omit<TrainConfig, 'preset'> = {
  algorithm: 'grpo',
  model: 'tiny',
  data: 'synthetic',
  synthetic: { seed: 1, train: 2000, heldOut: 200 },
  reward: 'es*',
  promptsPerStep: 8,
  samplesPerPrompt: 8,
  maxPromptTokens: 2048,
  maxCompletionTokens: 1024,
  temperature: 1.0,
  topP: 1.0,
  evalTemperature: 0,
  evalTopP: 1.0,
  evalEvery: 0,
  learningRate: 5e-5,
  schedule: 'cosine',
  warmupSteps: null,
  warmupRatio: 0.03,
  minLrRatio: 0,
  weightDecay: 0,
  adamBeta1: 0.9,
  adamBeta2: 0.999,
  adamEps: 1e-8,
  gradClip: 1.0,
  gradAccumulation: 1,
  steps: 5000,
  policyUpdatesPerBatch: 1,
  clipEpsLow: 0.2,
  clipEpsHigh: 0.2,
  dualClip: null,
  klCoef: 0.001,
  klEstimator: 'k3',
  lossAggregation: 'seq-mean-token-mean',
  advantageEps: 1e-4,
  advantageScaling: 'group',
  dynamicSampling: false,
  maxGenerationBatches: 1,
  overlongBufferTokens: 0,
  overlongPenalty: 1.0,
  adapter: { type: 'dora', r: 64, alpha: 64, dropout: 0.01, targetModules: [...DECODER_PROJECTIONS] },
  warmStartSteps: 0,
  warmStartLearningRate: null,
  checkpointEvery: 500,
  keepCheckpoints: 3,
  outputDir: 'runs',
  seed: 42,
  device: 'auto',
  computeDtype: 'auto',
  activationRecomputation: false,
  zero1: null,
  divergencePatience: 0,
  // TRL's objectives (issue 16): off
  lossType: null,
  importanceSamplingLevel: 'token',
  delta: null,
  sapoTemperaturePos: 1.0,
  sapoTemperatureNeg: 1.05,
  maskTruncatedCompletions: false,
  topEntropyQuantile: 1.0,
  entropyCoef: 0,
  rolloutCorrection: null
}

/**
 * grpo-paper: TRL GRPOTrainer as ReCode ran it (DoRA r=64 alpha=64 dropout 0.01, lr 5e-5 cosine with warmup
 * ratio 0.03, 8 prompts x 8 generations, KL 0.001 with k3, TRL's default temperature 1.0 and clip 0.2, TRL's
 * advantage eps 1e-4, max prompt 2048 / completion 1024 tokens, 5000 steps, TRL's default max_grad_norm 1.0).
 * dapo-paper: verl's DAPO recipe (full fine-tuning, lr 1e-6 constant after 10 warmup steps, weight decay 0.1,
 * grad clip 1.0, no KL, clip 0.2/0.28, dual clip 10, token-mean, dynamic sampling up to 10 generation batches,
 * overlong shaping off, 8 x 8, rollout temperature 1.0 / top_p 1.0, validation top_p 0.7, advantage eps 1e-6).
 * tiny: the tests' preset (it was the embedded default before the demo base model), GRPO on the synthetic tasks with
 * the built-in tiny model on 2 CPU cores: 600 SFT
 * warm-start steps (lr 2e-3), then 60 GRPO steps of 4 prompts x 8 samples (lr 1e-3 cosine, rollout temperature
 * 0.7: the tiny model's samples at 1.0 rarely parse, which leaves ES* no signal), no KL, full fine-tuning.
 */
/**
 * demo: the embedded default (`npm start`): GRPO with ReCode's reward from the shipped demo base model (models/
 * nova-base: knows nova's old API and code editing, never saw an update note) on the synthetic tasks, full
 * fine-tuning on the CPU, held-out tasks of unseen updates evaluated greedily before, every 10 steps and after.
 * Sized to end within five minutes on two cores. lr 5e-5 and rollouts at temperature 0.7: from the earlier base, 30
 * steps at lr 1e-4-2.5e-4 lowered held-out exact match after a first rise (Adam moves every weight by about lr a step,
 * and 32 samples give a noisy direction), and at temperature 1 or 0.5 it rose less. 8 prompts x 4 samples rather than
 * 4 x 8: the same 32 samples over more tasks, the steadier of the two across seeds (README: The demo base model).
 */
const demoPreset: TrainConfig = {
  ...common,
  preset: 'demo',
  model: 'nova-base',
  data: 'synthetic',
  synthetic: { seed: 1, train: 2000, heldOut: 64 },
  promptsPerStep: 8,
  samplesPerPrompt: 4,
  maxPromptTokens: 320,
  maxCompletionTokens: 160,
  temperature: 0.7,
  learningRate: 5e-5,
  schedule: 'constant',
  warmupSteps: 0,
  warmupRatio: null,
  minLrRatio: 0.1,
  weightDecay: 0,
  steps: 50,
  klCoef: 0,
  advantageEps: 1e-6,
  adapter: { type: 'none', r: 8, alpha: 16, dropout: 0, targetModules: [...DECODER_PROJECTIONS] },
  warmStartSteps: 0,
  evalEvery: 10,
  checkpointEvery: 10,
  keepCheckpoints: 2,
  device: 'cpu',
  computeDtype: 'fp32'
}

export const trainPresets: Record<PresetName, TrainConfig> = {
  // The paper's runs are 7B in bf16 on 80 GB GPUs: bf16 compute, activations recomputed in the backward and one
  // prompt's group per micro-batch (the update is the whole batch's, up to summation order), which is what
  // `recode plan` needs to fit them (README: Memory).
  'grpo-paper': {
    ...common,
    preset: 'grpo-paper',
    model: '',
    data: '',
    computeDtype: 'bf16',
    activationRecomputation: true,
    gradAccumulation: 8
  },
  'dapo-paper': {
    ...common,
    preset: 'dapo-paper',
    algorithm: 'dapo',
    // full fine-tuning of 7B over 8 GPUs with ZeRO-1: one sequence per micro-batch keeps training below generation's peak
    computeDtype: 'bf16',
    activationRecomputation: true,
    gradAccumulation: 64,
    model: '',
    data: '',
    learningRate: 1e-6,
    schedule: 'constant',
    warmupSteps: 10,
    warmupRatio: null,
    weightDecay: 0.1,
    gradClip: 1.0,
    klCoef: 0,
    clipEpsLow: 0.2,
    clipEpsHigh: 0.28,
    dualClip: 10,
    lossAggregation: 'token-mean',
    advantageEps: 1e-6,
    dynamicSampling: true,
    maxGenerationBatches: 10,
    overlongBufferTokens: 0,
    evalTemperature: 1.0,
    evalTopP: 0.7,
    adapter: { type: 'none', r: 64, alpha: 64, dropout: 0, targetModules: [...DECODER_PROJECTIONS] }
  },
  tiny: {
    ...common,
    preset: 'tiny',
    model: 'tiny',
    data: 'synthetic',
    synthetic: { seed: 1, train: 2000, heldOut: 64 },
    promptsPerStep: 4,
    samplesPerPrompt: 8,
    maxPromptTokens: 320,
    maxCompletionTokens: 128,
    temperature: 0.7,
    learningRate: 1e-3,
    schedule: 'cosine',
    warmupSteps: 2,
    warmupRatio: null,
    minLrRatio: 0.1,
    weightDecay: 0,
    steps: 60,
    klCoef: 0,
    advantageEps: 1e-6,
    adapter: { type: 'none', r: 8, alpha: 16, dropout: 0, targetModules: [...DECODER_PROJECTIONS] },
    warmStartSteps: 600,
    warmStartLearningRate: 2e-3,
    checkpointEvery: 20,
    keepCheckpoints: 2,
    device: 'cpu',
    computeDtype: 'fp32'
  },
  demo: demoPreset
}

export function trainPreset(name: PresetName): TrainConfig {
  const p = trainPresets[name]
  if (!p) throw new RecodeError('ERR_CONFIG', `unknown preset ${JSON.stringify(name)} (${Object.keys(trainPresets).join(', ')})`)
  return structuredClone(p)
}
