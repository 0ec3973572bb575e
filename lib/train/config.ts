/**
 * The training configuration: its type, the presets that reproduce the paper's two settings (recode.md §4)
 * plus the tiny CPU preset of the embedded default, and validation that checks every field before any work
 * starts, throwing RecodeError ERR_CONFIG with the field's name (`config.learningRate must be a positive
 * number, got -1`) and a did-you-mean for unknown fields.
 *
 * A raw configuration (a JSON file, CLI flags, a `train()` argument) names a `preset` (default 'tiny') and
 * overrides any of its fields; validateTrainConfig returns the complete, checked configuration.
 */
import * as fs from 'fs'
import * as path from 'path'
import { createHash } from 'crypto'
import { RecodeError } from '../errors'

export type Algorithm = 'grpo' | 'dapo' | 'sft'
export type ScheduleName = 'constant' | 'linear' | 'cosine'
export type KlEstimator = 'k1' | 'k2' | 'k3'
/** verl's loss_agg_mode names: token-mean (DAPO), seq-mean-token-mean (original GRPO), seq-mean-token-sum, seq-mean-token-sum-norm (Dr. GRPO). */
export type LossAggregation = 'token-mean' | 'seq-mean-token-mean' | 'seq-mean-token-sum' | 'seq-mean-token-sum-norm'
/** Advantage normalisation: per group (GRPO), over the batch, or none (Dr. GRPO: r - group mean only). */
export type AdvantageScaling = 'group' | 'batch' | 'none'
export type RewardName = 'es*' | 'em*' | 'format'
export type AdapterType = 'none' | 'lora' | 'dora'
export type DeviceName = 'auto' | 'cpu' | 'cuda' | 'emulated'
export type ComputeDtype = 'auto' | 'fp32' | 'bf16'
export type PresetName = 'grpo-paper' | 'dapo-paper' | 'tiny'

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
  /** A Hugging Face model folder, or 'tiny' for the built-in tiny model of the embedded default. */
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
}

// ---- presets --------------------------------------------------------------------------------------------

/** The Qwen2 projection names PEFT targets when asked for all linear layers of the decoder. */
export const QWEN2_PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']

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
  adapter: { type: 'dora', r: 64, alpha: 64, dropout: 0.01, targetModules: QWEN2_PROJECTIONS },
  warmStartSteps: 0,
  warmStartLearningRate: null,
  checkpointEvery: 500,
  keepCheckpoints: 3,
  outputDir: 'runs',
  seed: 42,
  device: 'auto',
  computeDtype: 'auto',
  activationRecomputation: false
}

/**
 * grpo-paper: TRL GRPOTrainer as ReCode ran it (DoRA r=64 alpha=64 dropout 0.01, lr 5e-5 cosine with warmup
 * ratio 0.03, 8 prompts x 8 generations, KL 0.001 with k3, TRL's default temperature 1.0 and clip 0.2, TRL's
 * advantage eps 1e-4, max prompt 2048 / completion 1024 tokens, 5000 steps, TRL's default max_grad_norm 1.0).
 * dapo-paper: verl's DAPO recipe (full fine-tuning, lr 1e-6 constant after 10 warmup steps, weight decay 0.1,
 * grad clip 1.0, no KL, clip 0.2/0.28, dual clip 10, token-mean, dynamic sampling up to 10 generation batches,
 * overlong shaping off, 8 x 8, rollout temperature 1.0 / top_p 1.0, validation top_p 0.7, advantage eps 1e-6).
 * tiny: the embedded default, GRPO on the synthetic tasks with the built-in tiny model on 2 CPU cores: 600 SFT
 * warm-start steps (lr 2e-3), then 60 GRPO steps of 4 prompts x 8 samples (lr 1e-3 cosine, rollout temperature
 * 0.7: the tiny model's samples at 1.0 rarely parse, which leaves ES* no signal), no KL, full fine-tuning.
 */
export const trainPresets: Record<PresetName, TrainConfig> = {
  'grpo-paper': { ...common, preset: 'grpo-paper', model: '', data: '' },
  'dapo-paper': {
    ...common,
    preset: 'dapo-paper',
    algorithm: 'dapo',
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
    adapter: { type: 'none', r: 64, alpha: 64, dropout: 0, targetModules: QWEN2_PROJECTIONS }
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
    adapter: { type: 'none', r: 8, alpha: 16, dropout: 0, targetModules: QWEN2_PROJECTIONS },
    warmStartSteps: 600,
    warmStartLearningRate: 2e-3,
    checkpointEvery: 20,
    keepCheckpoints: 2,
    device: 'cpu',
    computeDtype: 'fp32'
  }
}

export function trainPreset (name: PresetName): TrainConfig {
  const p = trainPresets[name]
  if (!p) throw new RecodeError('ERR_CONFIG', `unknown preset ${JSON.stringify(name)} (${Object.keys(trainPresets).join(', ')})`)
  return structuredClone(p)
}

// ---- validation -----------------------------------------------------------------------------------------

type Check = (value: unknown, field: string, all: Record<string, unknown>) => void

function fail (field: string, what: string, value: unknown): never {
  throw new RecodeError('ERR_CONFIG', `config.${field} must be ${what}, got ${show(value)}`)
}
function show (v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v)
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v)
  try { return JSON.stringify(v).slice(0, 80) } catch { return typeof v }
}
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v)
const positive: Check = (v, f) => { if (!isNum(v) || v <= 0) fail(f, 'a positive number', v) }
const nonNegative: Check = (v, f) => { if (!isNum(v) || v < 0) fail(f, 'a non-negative number', v) }
const posInt = (max = 2 ** 31): Check => (v, f) => { if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > max) fail(f, `an integer in [1, ${max}]`, v) }
const nonNegInt = (max = 2 ** 31): Check => (v, f) => { if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > max) fail(f, `an integer in [0, ${max}]`, v) }
const unit = (lo: number, hi: number, loOpen: boolean, hiOpen: boolean): Check => (v, f) => {
  const ok = isNum(v) && (loOpen ? v > lo : v >= lo) && (hiOpen ? v < hi : v <= hi)
  if (!ok) fail(f, `a number in ${loOpen ? '(' : '['}${lo}, ${hi}${hiOpen ? ')' : ']'}`, v)
}
const oneOf = (values: readonly string[]): Check => (v, f) => {
  if (typeof v !== 'string' || !values.includes(v)) fail(f, `one of ${values.map((x) => `'${x}'`).join(', ')}`, v)
}
const bool: Check = (v, f) => { if (typeof v !== 'boolean') fail(f, 'true or false', v) }
const nonEmptyString: Check = (v, f) => { if (typeof v !== 'string' || v.length === 0) fail(f, 'a non-empty string', v) }

const topLevelChecks: Record<keyof Omit<TrainConfig, 'adapter' | 'synthetic'>, Check> = {
  preset: oneOf(Object.keys(trainPresets)),
  algorithm: oneOf(['grpo', 'dapo', 'sft']),
  model: nonEmptyString,
  data: nonEmptyString,
  reward: oneOf(['es*', 'em*', 'format']),
  promptsPerStep: posInt(1 << 16),
  samplesPerPrompt: posInt(1 << 12),
  maxPromptTokens: posInt(1 << 20),
  maxCompletionTokens: posInt(1 << 20),
  temperature: unit(0, 100, true, false),
  topP: unit(0, 1, true, false),
  evalTemperature: unit(0, 100, false, false),
  evalTopP: unit(0, 1, true, false),
  evalEvery: nonNegInt(),
  learningRate: positive,
  schedule: oneOf(['constant', 'linear', 'cosine']),
  warmupSteps: (v, f) => { if (v !== null) nonNegInt()(v, f, {}) },
  warmupRatio: (v, f) => { if (v !== null) unit(0, 1, false, true)(v, f, {}) },
  minLrRatio: unit(0, 1, false, false),
  weightDecay: nonNegative,
  adamBeta1: unit(0, 1, false, true),
  adamBeta2: unit(0, 1, false, true),
  adamEps: positive,
  gradClip: nonNegative,
  gradAccumulation: posInt(1 << 16),
  steps: posInt(),
  policyUpdatesPerBatch: posInt(64),
  clipEpsLow: unit(0, 1, true, true),
  clipEpsHigh: unit(0, 10, true, false),
  dualClip: (v, f) => { if (v !== null && (!isNum(v) || v <= 1)) fail(f, 'a number greater than 1, or null for off', v) },
  klCoef: nonNegative,
  klEstimator: oneOf(['k1', 'k2', 'k3']),
  lossAggregation: oneOf(['token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm']),
  advantageEps: positive,
  advantageScaling: oneOf(['group', 'batch', 'none']),
  dynamicSampling: bool,
  maxGenerationBatches: posInt(1000),
  overlongBufferTokens: nonNegInt(),
  overlongPenalty: nonNegative,
  warmStartSteps: nonNegInt(),
  warmStartLearningRate: (v, f) => { if (v !== null) positive(v, f, {}) },
  checkpointEvery: nonNegInt(),
  keepCheckpoints: posInt(1000),
  outputDir: nonEmptyString,
  seed: (v, f) => { if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > 0xffffffff) fail(f, 'an integer in [0, 4294967295]', v) },
  device: oneOf(['auto', 'cpu', 'cuda', 'emulated']),
  computeDtype: oneOf(['auto', 'fp32', 'bf16']),
  activationRecomputation: bool
}

/** The decoder-layer projections an adapter can wrap (Qwen2 / Qwen3 / Llama names). */
const ADAPTABLE_PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']

const adapterChecks: Record<keyof AdapterConfig, Check> = {
  type: oneOf(['none', 'lora', 'dora']),
  r: posInt(1 << 14),
  alpha: positive,
  dropout: unit(0, 1, false, true),
  targetModules: (v, f) => {
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string' && /^[A-Za-z_][A-Za-z0-9_.]*$/.test(x))) {
      fail(f, 'a non-empty array of module names (e.g. ["q_proj", "v_proj"])', v)
    }
    if (new Set(v).size !== v.length) fail(f, 'an array without duplicates', v)
    const unknown = (v as string[]).find((x) => !ADAPTABLE_PROJECTIONS.includes(x))
    if (unknown !== undefined) fail(f, `projection names among ${ADAPTABLE_PROJECTIONS.join(', ')} (got ${JSON.stringify(unknown)})`, v)
  }
}

const syntheticChecks: Record<keyof SyntheticDataConfig, Check> = {
  seed: topLevelChecks.seed,
  train: posInt(1 << 20),
  heldOut: posInt(1 << 20)
}

/** Edit distance for did-you-mean suggestions (short strings only). */
function editDistance (a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]
    prev[0] = i
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1))
      diag = up
    }
  }
  return prev[b.length]
}

/** The closest known name, if close enough to be a likely typo (snake_case and case differences count as close). */
export function didYouMean (name: string, known: readonly string[]): string | undefined {
  const norm = (s: string): string => s.replace(/[_-]/g, '').toLowerCase()
  const exact = known.find((k) => norm(k) === norm(name))
  if (exact) return exact
  let best: string | undefined
  let bestD = Infinity
  for (const k of known) {
    const d = editDistance(norm(name), norm(k))
    if (d < bestD) { bestD = d; best = k }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(name.length / 3)) ? best : undefined
}

function checkKnown (obj: Record<string, unknown>, known: readonly string[], prefix: string): void {
  for (const key of Object.keys(obj)) {
    if (known.includes(key)) continue
    const hint = didYouMean(key, known)
    throw new RecodeError('ERR_CONFIG', `config.${prefix}${key} is not a known field${hint ? ` (did you mean ${prefix}${hint}?)` : ''}; known fields: ${known.join(', ')}`)
  }
}

function isPlainObject (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export interface ValidateOptions {
  /** Check that the model folder and data file exist (default true). */
  checkPaths?: boolean
}

/**
 * Checks a raw configuration and returns the complete one: unknown fields (with a did-you-mean), each field's
 * type and range, then the cross-field rules. Missing fields come from `raw.preset` (default 'tiny').
 */
export function validateTrainConfig (raw: unknown, options: ValidateOptions = {}): TrainConfig {
  if (raw === undefined || raw === null) raw = {}
  if (!isPlainObject(raw)) throw new RecodeError('ERR_CONFIG', `config must be an object, got ${show(raw)}`)
  const topKnown = [...Object.keys(topLevelChecks), 'adapter', 'synthetic']
  checkKnown(raw, topKnown, '')
  const presetName = raw.preset ?? 'tiny'
  topLevelChecks.preset(presetName, 'preset', raw)
  const cfg = trainPreset(presetName as PresetName) as unknown as Record<string, unknown>

  // Warmup is given as steps or as a ratio: setting one clears the other that the preset had.
  if (raw.warmupSteps != null && raw.warmupRatio != null) {
    throw new RecodeError('ERR_CONFIG', `config.warmupSteps and config.warmupRatio are both set (${show(raw.warmupSteps)}, ${show(raw.warmupRatio)}); give one of them`)
  }
  if (raw.warmupSteps != null) cfg.warmupRatio = null
  if (raw.warmupRatio != null) cfg.warmupSteps = null

  for (const [key, value] of Object.entries(raw)) {
    if (key === 'adapter' || key === 'synthetic') continue
    if (value === undefined) continue
    topLevelChecks[key as keyof typeof topLevelChecks](value, key, raw)
    cfg[key] = value
  }
  for (const [name, checks] of [['adapter', adapterChecks], ['synthetic', syntheticChecks]] as const) {
    const sub = raw[name]
    if (sub === undefined) continue
    if (!isPlainObject(sub)) fail(name, 'an object', sub)
    checkKnown(sub, Object.keys(checks), `${name}.`)
    const merged = { ...(cfg[name] as Record<string, unknown>) }
    for (const [key, value] of Object.entries(sub)) {
      if (value === undefined) continue
      ;(checks as Record<string, Check>)[key](value, `${name}.${key}`, sub)
      merged[key] = Array.isArray(value) ? [...value] : value
    }
    cfg[name] = merged
  }
  const c = cfg as unknown as TrainConfig

  // Cross-field rules.
  if (c.model === '') throw new RecodeError('ERR_CONFIG', `config.model must be set (a Hugging Face model folder) for preset '${c.preset}'`)
  if (c.data === '') throw new RecodeError('ERR_CONFIG', `config.data must be set ('synthetic' or a ReCode JSONL file) for preset '${c.preset}'`)
  if (c.warmupSteps === null && c.warmupRatio === null) c.warmupSteps = 0
  if (c.warmupSteps !== null && c.warmupSteps >= c.steps && c.steps > 1) {
    throw new RecodeError('ERR_CONFIG', `config.warmupSteps must be smaller than config.steps (${c.steps}), got ${c.warmupSteps}`)
  }
  if (c.algorithm !== 'sft' && c.samplesPerPrompt < 2) {
    fail('samplesPerPrompt', `at least 2 for ${c.algorithm} (group-relative advantages need a group)`, c.samplesPerPrompt)
  }
  if (c.promptsPerStep % c.gradAccumulation !== 0) {
    fail('gradAccumulation', `a divisor of config.promptsPerStep (${c.promptsPerStep})`, c.gradAccumulation)
  }
  if (c.clipEpsHigh < c.clipEpsLow && c.algorithm === 'dapo') {
    fail('clipEpsHigh', `at least config.clipEpsLow (${c.clipEpsLow}) for dapo (clip-higher)`, c.clipEpsHigh)
  }
  if (c.dynamicSampling && c.algorithm === 'sft') fail('dynamicSampling', 'false for sft (it needs rewards)', true)
  if (!c.dynamicSampling && c.maxGenerationBatches !== 1 && raw.maxGenerationBatches !== undefined) {
    fail('maxGenerationBatches', '1 when config.dynamicSampling is false', c.maxGenerationBatches)
  }
  if (c.overlongBufferTokens >= c.maxCompletionTokens) {
    fail('overlongBufferTokens', `smaller than config.maxCompletionTokens (${c.maxCompletionTokens})`, c.overlongBufferTokens)
  }
  if (c.keepCheckpoints < 1) fail('keepCheckpoints', 'at least 1', c.keepCheckpoints)
  if (c.computeDtype === 'bf16' && c.device === 'cpu') fail('computeDtype', "'fp32' or 'auto' on device 'cpu'", c.computeDtype)
  if (options.checkPaths !== false) {
    if (c.model !== 'tiny' && !isDirectory(c.model)) {
      throw new RecodeError('ERR_CONFIG', `config.model must be 'tiny' or an existing model folder, got ${show(c.model)} (no such directory)`)
    }
    if (c.data !== 'synthetic' && !isFile(c.data)) {
      throw new RecodeError('ERR_CONFIG', `config.data must be 'synthetic' or an existing JSONL file, got ${show(c.data)} (no such file)`)
    }
  }
  return c
}

function isDirectory (p: string): boolean {
  try { return fs.statSync(p).isDirectory() } catch { return false }
}
function isFile (p: string): boolean {
  try { return fs.statSync(p).isFile() } catch { return false }
}

/**
 * Reads a JSON configuration file and validates it. Errors name the file (and line:column for JSON syntax
 * errors). Relative `model`, `data` and `outputDir` paths are resolved against the file's folder.
 */
export function loadTrainConfigFile (file: string, overrides: Record<string, unknown> = {}, options: ValidateOptions = {}): TrainConfig {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw new RecodeError('ERR_CONFIG', `${file}: cannot read the configuration file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    const msg = (err as Error).message
    const pos = /position (\d+)/.exec(msg)?.[1] ?? jsonErrorOffset(text)
    let where = ''
    if (pos !== undefined) {
      const before = text.slice(0, Number(pos))
      const line = before.split('\n').length
      const col = Number(pos) - before.lastIndexOf('\n')
      where = `:${line}:${col}`
    }
    throw new RecodeError('ERR_CONFIG', `${file}${where}: invalid JSON (${msg})`)
  }
  if (!isPlainObject(raw)) throw new RecodeError('ERR_CONFIG', `${file}: the configuration must be a JSON object, got ${show(raw)}`)
  const dir = path.dirname(path.resolve(file))
  const merged: Record<string, unknown> = { ...raw, ...overrides }
  for (const key of ['model', 'data', 'outputDir']) {
    const v = merged[key]
    if (typeof v === 'string' && v !== '' && key in raw && !(key in overrides) && !path.isAbsolute(v) &&
        !(key === 'model' && v === 'tiny') && !(key === 'data' && v === 'synthetic')) {
      merged[key] = path.join(dir, v)
    }
  }
  try {
    return validateTrainConfig(merged, options)
  } catch (err) {
    if (err instanceof RecodeError) throw new RecodeError(err.code, `${file}: ${err.message}`)
    throw err
  }
}

/**
 * Offset of the first character at which `text` stops being JSON (for line:column in errors; some Node
 * versions do not report a position). A small recursive-descent scan of the JSON grammar.
 */
export function jsonErrorOffset (text: string): number | undefined {
  let i = 0
  const ws = (): void => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++ }
  const fail = (): never => { throw i }
  const literal = (word: string): void => { if (text.startsWith(word, i)) i += word.length; else fail() }
  const str = (): void => {
    if (text[i] !== '"') fail()
    i++
    while (i < text.length && text[i] !== '"') {
      if (text[i] === '\\') i++
      else if (text.charCodeAt(i) < 0x20) fail()
      i++
    }
    if (i >= text.length) fail()
    i++
  }
  const number = (): void => {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i))
    if (!m) fail()
    i += m![0].length
  }
  const value = (): void => {
    ws()
    const c = text[i]
    if (c === '{') {
      i++; ws()
      if (text[i] === '}') { i++; return }
      for (;;) {
        ws(); str(); ws()
        if (text[i] !== ':') fail()
        i++; value(); ws()
        if (text[i] === ',') { i++; continue }
        if (text[i] === '}') { i++; return }
        fail()
      }
    } else if (c === '[') {
      i++; ws()
      if (text[i] === ']') { i++; return }
      for (;;) {
        value(); ws()
        if (text[i] === ',') { i++; continue }
        if (text[i] === ']') { i++; return }
        fail()
      }
    } else if (c === '"') str()
    else if (c === 't') literal('true')
    else if (c === 'f') literal('false')
    else if (c === 'n') literal('null')
    else number()
  }
  try {
    value(); ws()
    return i < text.length ? i : undefined
  } catch (at) {
    return typeof at === 'number' ? Math.min(at, text.length) : undefined
  }
}

/** Canonical JSON of the configuration (sorted keys) and its SHA-256, stored in checkpoint manifests. */
export function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (isPlainObject(value)) {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`
  }
  return JSON.stringify(value) ?? 'null'
}

/** Hash of the fields that decide the training trajectory (where and how often it is saved excluded: a run may be moved). */
export function configHash (config: TrainConfig): string {
  const { outputDir, checkpointEvery, keepCheckpoints, evalEvery, ...rest } = config
  return createHash('sha256').update(canonicalJson(rest)).digest('hex')
}

// ---- command-line flags -------------------------------------------------------------------------------------

const kebab = (s: string): string => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
const camel = (s: string): string => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())

/** Fields that may be null (given as `null`, `none` or `off` on the command line). */
const NULLABLE = new Set(['warmupSteps', 'warmupRatio', 'dualClip'])

/**
 * Turns command-line flags into raw configuration overrides (for validateTrainConfig or loadTrainConfigFile):
 * `--learning-rate 1e-5`, `--learning-rate=1e-5`, `--adapter.r 8`, `--adapter.target-modules q_proj,v_proj`,
 * `--dynamic-sampling` / `--no-dynamic-sampling`, `--dual-clip off`. Values are typed after the field they set;
 * range checks are validateTrainConfig's. Unknown flags are ERR_CONFIG errors with a did-you-mean.
 */
export function trainFlagsToConfig (argv: readonly string[]): Record<string, unknown> {
  const shape = trainPreset('tiny') as unknown as Record<string, unknown>
  const known: string[] = []
  for (const [k, v] of Object.entries(shape)) {
    if (isPlainObject(v)) for (const sub of Object.keys(v)) known.push(`${k}.${sub}`)
    else known.push(k)
  }
  const out: Record<string, unknown> = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (!arg.startsWith('--')) throw new RecodeError('ERR_CONFIG', `unexpected argument ${JSON.stringify(arg)} (options look like --learning-rate 1e-5)`)
    let [name, value] = arg.slice(2).split(/=(.*)/s, 2) as [string, string | undefined]
    let negated = false
    if (name.startsWith('no-') && !known.includes(camelPath(name)) && known.includes(camelPath(name.slice(3)))) {
      negated = true
      name = name.slice(3)
    }
    const key = camelPath(name)
    if (!known.includes(key)) {
      const hint = didYouMean(key, known)
      throw new RecodeError('ERR_CONFIG', `unknown option --${name}${hint ? ` (did you mean --${kebabPath(hint)}?)` : ''}`)
    }
    const [top, sub] = key.split('.')
    const current = sub ? (shape[top] as Record<string, unknown>)[sub] : shape[top]
    if (typeof current === 'boolean') {
      if (value === undefined && argv[i + 1] !== undefined && /^(true|false)$/.test(argv[i + 1])) value = argv[++i]
      if (value !== undefined && !/^(true|false)$/.test(value)) throw new RecodeError('ERR_CONFIG', `option --${name} takes true or false, got ${JSON.stringify(value)}`)
      const b = value === undefined ? true : value === 'true'
      set(out, top, sub, negated ? !b : b)
      continue
    }
    if (negated) throw new RecodeError('ERR_CONFIG', `option --no-${name}: only true/false options can be negated`)
    if (value === undefined) {
      if (i + 1 >= argv.length || (argv[i + 1].startsWith('--') && !/^--?\d/.test(argv[i + 1]))) throw new RecodeError('ERR_CONFIG', `option --${name} needs a value`)
      value = argv[++i]
    }
    let parsed: unknown = value
    if (NULLABLE.has(key) && /^(null|none|off)$/i.test(value)) parsed = null
    else if (typeof current === 'number' || (current === null && NULLABLE.has(key))) {
      parsed = Number(value)
      if (value.trim() === '' || !Number.isFinite(parsed)) throw new RecodeError('ERR_CONFIG', `option --${name} takes a number, got ${JSON.stringify(value)}`)
    } else if (Array.isArray(current)) parsed = value.split(',').map((x) => x.trim()).filter((x) => x !== '')
    set(out, top, sub, parsed)
  }
  return out
}

function camelPath (name: string): string {
  return name.split('.').map(camel).join('.')
}
function kebabPath (name: string): string {
  return name.split('.').map(kebab).join('.')
}
function set (out: Record<string, unknown>, top: string, sub: string | undefined, value: unknown): void {
  if (sub === undefined) { out[top] = value; return }
  const obj = (out[top] ?? {}) as Record<string, unknown>
  obj[sub] = value
  out[top] = obj
}
