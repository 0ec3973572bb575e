/**
 * Validation that checks every field of a raw configuration before any work starts, throwing RecodeError
 * ERR_CONFIG with the field's name (`config.weightDecay must be a number in [0, 1000], got -1`) and a did-you-mean
 * for unknown fields, then the cross-field rules.
 */
import * as fs from 'fs'
import { RecodeError } from '../../errors'
import { DECODER_PROJECTIONS } from '../../model/projections'
import { temperatureProblem } from '../../rl/sampling'
import { trainPreset, trainPresets } from './presets'
import { demoBaseDir } from '../../demo/models'
import type { AdapterConfig, PresetName, SyntheticDataConfig, TrainConfig } from './schema'

type Check = (value: unknown, field: string, all: Record<string, unknown>) => void

function fail(field: string, what: string, value: unknown): never {
  throw new RecodeError('ERR_CONFIG', `config.${field} must be ${what}, got ${show(value)}`)
}
/** A value as configuration errors quote it (JSON, cut at 80 characters). */
export function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v)
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v)
  try {
    return JSON.stringify(v).slice(0, 80)
  } catch {
    return typeof v
  }
}
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v)
const nonNegative: Check = (v, f) => {
  if (!isNum(v) || v < 0) fail(f, 'a non-negative number', v)
}
const posInt =
  (max = 2 ** 31): Check =>
  (v, f) => {
    if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > max) fail(f, `an integer in [1, ${max}]`, v)
  }
const nonNegInt =
  (max = 2 ** 31): Check =>
  (v, f) => {
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > max) fail(f, `an integer in [0, ${max}]`, v)
  }
const unit =
  (lo: number, hi: number, loOpen: boolean, hiOpen: boolean): Check =>
  (v, f) => {
    const ok = isNum(v) && (loOpen ? v > lo : v >= lo) && (hiOpen ? v < hi : v <= hi)
    if (!ok) fail(f, `a number in ${loOpen ? '(' : '['}${lo}, ${hi}${hiOpen ? ')' : ']'}`, v)
  }
const oneOf =
  (values: readonly string[]): Check =>
  (v, f) => {
    if (typeof v !== 'string' || !values.includes(v)) fail(f, `one of ${values.map((x) => `'${x}'`).join(', ')}`, v)
  }
/** temperature as the native sampler takes it: 1/T must fit in float32 (lib/rl/sampling.ts). */
const samplingTemperature =
  (lo: number, loOpen: boolean): Check =>
  (v, f, all) => {
    unit(lo, 100, loOpen, false)(v, f, all)
    const problem = temperatureProblem(v as number)
    if (problem !== null) throw new RecodeError('ERR_CONFIG', `config.${f} ${problem}`)
  }
/**
 * The ranges the native AdamW takes (trainerApplyAdamW in src/node/train_step_binding.cpp): a value outside
 * them would pass here and then fail at the first step that uses it.
 */
export const ADAMW_LIMITS = { lr: 1e3, beta: 0.999999999, eps: 1, weightDecay: 1e3 } as const
const positive: Check = (v, f) => {
  if (!isNum(v) || v <= 0) fail(f, 'a positive number', v)
}
const learningRate: Check = (v, f) => {
  if (!isNum(v) || v <= 0 || v > ADAMW_LIMITS.lr) fail(f, `a positive number no greater than ${ADAMW_LIMITS.lr} (the optimizer's limit)`, v)
}
const bool: Check = (v, f) => {
  if (typeof v !== 'boolean') fail(f, 'true or false', v)
}
const nonEmptyString: Check = (v, f) => {
  if (typeof v !== 'string' || v.length === 0) fail(f, 'a non-empty string', v)
}

const topLevelChecks: Record<keyof Omit<TrainConfig, 'adapter' | 'synthetic'>, Check> = {
  preset: oneOf(Object.keys(trainPresets)),
  algorithm: oneOf(['grpo', 'dapo', 'sft']),
  model: nonEmptyString,
  data: nonEmptyString,
  reward: oneOf(['es*', 'es', 'em*', 'em', 'format']),
  promptsPerStep: posInt(1 << 16),
  samplesPerPrompt: posInt(1 << 12),
  maxPromptTokens: posInt(1 << 20),
  maxCompletionTokens: posInt(1 << 20),
  temperature: samplingTemperature(0, true),
  topP: unit(0, 1, true, false),
  evalTemperature: samplingTemperature(0, false),
  evalTopP: unit(0, 1, true, false),
  evalEvery: nonNegInt(),
  learningRate,
  schedule: oneOf(['constant', 'linear', 'cosine']),
  warmupSteps: (v, f) => {
    if (v !== null) nonNegInt()(v, f, {})
  },
  warmupRatio: (v, f) => {
    if (v !== null) unit(0, 1, false, true)(v, f, {})
  },
  minLrRatio: unit(0, 1, false, false),
  weightDecay: unit(0, ADAMW_LIMITS.weightDecay, false, false),
  adamBeta1: unit(0, ADAMW_LIMITS.beta, false, false),
  adamBeta2: unit(0, ADAMW_LIMITS.beta, false, false),
  adamEps: unit(0, ADAMW_LIMITS.eps, true, false),
  gradClip: nonNegative,
  gradAccumulation: posInt(1 << 16),
  steps: posInt(),
  policyUpdatesPerBatch: posInt(64),
  clipEpsLow: unit(0, 1, true, true),
  clipEpsHigh: unit(0, 10, true, false),
  dualClip: (v, f) => {
    if (v !== null && (!isNum(v) || v <= 1 || v > 1e6)) fail(f, 'a number in (1, 1000000], or null for off', v)
  },
  // the loss kernel takes its coefficients as float32
  klCoef: unit(0, 1e6, false, false),
  klEstimator: oneOf(['k1', 'k2', 'k3']),
  lossAggregation: oneOf(['token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm']),
  advantageEps: unit(0, 1, true, false),
  advantageScaling: oneOf(['group', 'batch', 'none']),
  dynamicSampling: bool,
  maxGenerationBatches: posInt(1000),
  overlongBufferTokens: nonNegInt(),
  overlongPenalty: unit(0, 1e6, false, false),
  warmStartSteps: nonNegInt(),
  warmStartLearningRate: (v, f) => {
    if (v !== null) learningRate(v, f, {})
  },
  checkpointEvery: nonNegInt(),
  keepCheckpoints: posInt(1000),
  outputDir: nonEmptyString,
  seed: (v, f) => {
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > 0xffffffff) fail(f, 'an integer in [0, 4294967295]', v)
  },
  device: oneOf(['auto', 'cpu', 'cuda', 'emulated']),
  computeDtype: oneOf(['auto', 'fp32', 'bf16']),
  activationRecomputation: bool,
  zero1: (v, f) => {
    if (v !== null) bool(v, f, {})
  },
  divergencePatience: nonNegInt(1 << 20),
  // TRL's objectives (issue 16)
  lossType: (v, f) => {
    if (v !== null) oneOf(['grpo', 'bnpo', 'dr_grpo', 'dapo', 'cispo', 'sapo', 'luspo'])(v, f, {})
  },
  importanceSamplingLevel: oneOf(['token', 'sequence']),
  delta: (v, f) => {
    if (v !== null && (!isNum(v) || v <= 0)) fail(f, 'a positive number (TRL advises > 1 + clipEpsHigh), or null for off', v)
  },
  sapoTemperaturePos: positive,
  sapoTemperatureNeg: positive,
  maskTruncatedCompletions: bool,
  topEntropyQuantile: unit(0, 1, false, false),
  entropyCoef: (v, f) => {
    if (!isNum(v)) fail(f, 'a finite number', v)
  },
  rolloutCorrection: (v, f) => {
    if (v === null) return
    if (!isPlainObject(v)) fail(f, "null or an object { mode: 'truncate' | 'mask', level: 'token' | 'sequence', c }", v)
    checkKnown(v, ['mode', 'level', 'c'], `${f}.`)
    oneOf(['truncate', 'mask'])(v.mode, `${f}.mode`, {})
    oneOf(['token', 'sequence'])(v.level, `${f}.level`, {})
    if (!isNum(v.c) || v.c <= 1) fail(`${f}.c`, 'a number greater than 1', v.c)
  }
}

const adapterChecks: Record<keyof AdapterConfig, Check> = {
  type: oneOf(['none', 'lora', 'dora']),
  r: posInt(1 << 14),
  // the native trainer's ranges (adapter_spec in src/node/train_step_binding.cpp)
  alpha: unit(1e-9, 1e9, false, false),
  dropout: unit(0, 0.99, false, false),
  targetModules: (v, f) => {
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string' && /^[A-Za-z_][A-Za-z0-9_.]*$/.test(x))) {
      fail(f, 'a non-empty array of module names (e.g. ["q_proj", "v_proj"])', v)
    }
    if (new Set(v).size !== v.length) fail(f, 'an array without duplicates', v)
    const unknown = (v as string[]).find((x) => !DECODER_PROJECTIONS.includes(x))
    if (unknown !== undefined) fail(f, `projection names among ${DECODER_PROJECTIONS.join(', ')} (got ${JSON.stringify(unknown)})`, v)
  }
}

const syntheticChecks: Record<keyof SyntheticDataConfig, Check> = {
  seed: topLevelChecks.seed,
  train: posInt(1 << 20),
  heldOut: posInt(1 << 20)
}

/** Edit distance for did-you-mean suggestions (short strings only). */
function editDistance(a: string, b: string): number {
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
export function didYouMean(name: string, known: readonly string[]): string | undefined {
  const norm = (s: string): string => s.replace(/[_-]/g, '').toLowerCase()
  const exact = known.find((k) => norm(k) === norm(name))
  if (exact) return exact
  let best: string | undefined
  let bestD = Infinity
  for (const k of known) {
    const d = editDistance(norm(name), norm(k))
    if (d < bestD) {
      bestD = d
      best = k
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(name.length / 3)) ? best : undefined
}

function checkKnown(obj: Record<string, unknown>, known: readonly string[], prefix: string): void {
  for (const key of Object.keys(obj)) {
    if (known.includes(key)) continue
    const hint = didYouMean(key, known)
    throw new RecodeError(
      'ERR_CONFIG',
      `config.${prefix}${key} is not a known field${hint ? ` (did you mean ${prefix}${hint}?)` : ''}; known fields: ${known.join(', ')}`
    )
  }
}

/** A JSON object (not an array, not null). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
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
export function validateTrainConfig(raw: unknown, options: ValidateOptions = {}): TrainConfig {
  if (raw === undefined || raw === null) raw = {}
  if (!isPlainObject(raw)) throw new RecodeError('ERR_CONFIG', `config must be an object, got ${show(raw)}`)
  const topKnown = [...Object.keys(topLevelChecks), 'adapter', 'synthetic']
  checkKnown(raw, topKnown, '')
  const presetName = raw.preset ?? 'tiny'
  topLevelChecks.preset(presetName, 'preset', raw)
  const cfg = trainPreset(presetName as PresetName) as unknown as Record<string, unknown>

  // Warmup is given as steps or as a ratio: setting one clears the other that the preset had.
  if (raw.warmupSteps != null && raw.warmupRatio != null) {
    throw new RecodeError(
      'ERR_CONFIG',
      `config.warmupSteps and config.warmupRatio are both set (${show(raw.warmupSteps)}, ${show(raw.warmupRatio)}); give one of them`
    )
  }
  if (raw.warmupSteps != null) cfg.warmupRatio = null
  if (raw.warmupRatio != null) cfg.warmupSteps = null

  for (const [key, value] of Object.entries(raw)) {
    if (key === 'adapter' || key === 'synthetic') continue
    if (value === undefined) continue
    topLevelChecks[key as keyof typeof topLevelChecks](value, key, raw)
    cfg[key] = value
  }
  for (const [name, checks] of [
    ['adapter', adapterChecks],
    ['synthetic', syntheticChecks]
  ] as const) {
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
  if (c.data === '')
    throw new RecodeError('ERR_CONFIG', `config.data must be set ('synthetic' or a ReCode JSONL file) for preset '${c.preset}'`)
  if (c.warmupSteps === null && c.warmupRatio === null) c.warmupSteps = 0
  if (c.warmupSteps !== null && c.warmupSteps >= c.steps && c.steps > 1) {
    throw new RecodeError('ERR_CONFIG', `config.warmupSteps must be smaller than config.steps (${c.steps}), got ${c.warmupSteps}`)
  }
  if (c.algorithm !== 'sft' && c.samplesPerPrompt < 2) {
    fail('samplesPerPrompt', `at least 2 for ${c.algorithm} (group-relative advantages need a group)`, c.samplesPerPrompt)
  }
  // RL micro-batches may split a prompt's group (advantages are per sequence, the loss scaled per micro-batch)
  const stepRows = c.algorithm === 'sft' ? c.promptsPerStep : c.promptsPerStep * c.samplesPerPrompt
  if (stepRows % c.gradAccumulation !== 0) {
    fail(
      'gradAccumulation',
      `a divisor of ${c.algorithm === 'sft' ? 'config.promptsPerStep' : 'config.promptsPerStep x config.samplesPerPrompt'} (${stepRows})`,
      c.gradAccumulation
    )
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
  // TRL's objectives (issue 16)
  if (c.lossType !== null && raw.lossAggregation !== undefined) {
    fail('lossAggregation', `left out when config.lossType is set ('${c.lossType}' sets the normalisation)`, raw.lossAggregation)
  }
  // ModelTrainer's forward returns log-probabilities only: entropy terms would need its per-token entropies.
  if (c.entropyCoef !== 0)
    fail('entropyCoef', '0 for now (the trainer does not compute per-token entropies; policyLoss() takes them)', c.entropyCoef)
  if (c.topEntropyQuantile !== 1)
    fail(
      'topEntropyQuantile',
      '1 for now (the trainer does not compute per-token entropies; policyLoss() takes them)',
      c.topEntropyQuantile
    )
  if (c.computeDtype === 'bf16' && c.device === 'cpu') fail('computeDtype', "'fp32' or 'auto' on device 'cpu'", c.computeDtype)
  if (options.checkPaths !== false) {
    if (c.model === 'nova-base' && !isDirectory(demoBaseDir()))
      throw new RecodeError(
        'ERR_CONFIG',
        `config.model 'nova-base': the shipped demo model is missing (${demoBaseDir()}); reinstall the package or run npm run demo-base`
      )
    if (c.model !== 'tiny' && c.model !== 'nova-base' && !isDirectory(c.model)) {
      throw new RecodeError(
        'ERR_CONFIG',
        `config.model must be 'nova-base', 'tiny' or an existing model folder, got ${show(c.model)} (no such directory)`
      )
    }
    if (c.data !== 'synthetic' && !isFile(c.data)) {
      throw new RecodeError('ERR_CONFIG', `config.data must be 'synthetic' or an existing JSONL file, got ${show(c.data)} (no such file)`)
    }
  }
  return c
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory()
  } catch {
    return false
  }
}
function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile()
  } catch {
    return false
  }
}
