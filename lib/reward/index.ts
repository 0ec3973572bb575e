/**
 * The ReCode reward (recode.md section 3), batched: format (+1/-1), ES* (3.5 * sim - 1.5, or -2 with no
 * ```python block or code CPython cannot parse), EM* (+2 equal / -1.5 different / -2), and their sum
 * format + ES* (range [-3, 3]), the reward ReCode trains with. The plain components of the paper's reward
 * ablation (Table 2) come with them: EM (1 equal / 0) and ES (the similarity, 0 without valid code).
 */
import type { Device } from '../device'
import { similarities } from '../editdist'
import { abortError, optionsArg, RecodeError } from '../errors'
import { pythonParses } from './python'
import { completionCode, formatOk, normalizeCode } from './text'

export { formatOk, extractFence, normalizeCode, completionCode, pythonStrip, isPythonSpace } from './text'
export { pythonParses, pythonParsesOne, closePythonWorkers, startPythonWorkers, pythonCommand } from './python'
export type { PythonOptions } from './python'

export interface RewardOptions {
  /** Python interpreter for the syntax check (default: RECODE_PYTHON, else `python3`). */
  python?: string
  signal?: AbortSignal
  /** Where the edit distances run (see editDistance). */
  device?: Device
  /**
   * Longest completion or target accepted, in UTF-16 code units (default DEFAULT_MAX_REWARD_CHARS = 2^20;
   * Infinity = no cap). The edit distance costs |completion| x |target| / 64 word operations, so one pair at
   * the cap takes tens of seconds on a CPU core and a 5 MB pair about ten minutes; ReCode's code pairs are a
   * few kilobytes. A longer input is an ERR_INVALID_ARG naming its index instead of a silent stall.
   */
  maxChars?: number
}

/** 2^20 code units (1 MiB of ASCII) per completion or target: far above any real code pair, low enough that
 * one pair cannot stall a batch for more than about half a minute. */
export const DEFAULT_MAX_REWARD_CHARS = 1 << 20

/** The cap from options (validated), for callers that check their inputs before scoring. */
export function rewardMaxChars(options: RewardOptions, what: string): number {
  const cap = options.maxChars ?? DEFAULT_MAX_REWARD_CHARS
  if (typeof cap !== 'number' || !(cap === Infinity || (Number.isInteger(cap) && cap >= 1))) {
    throw new RecodeError('ERR_INVALID_ARG', `${what}: maxChars must be a positive integer or Infinity, got ${String(cap)}`)
  }
  return cap
}

function checkLengths(xs: string[], name: string, cap: number, what: string): void {
  if (cap === Infinity) return
  for (let i = 0; i < xs.length; i++) {
    if (xs[i].length > cap) {
      throw new RecodeError(
        'ERR_INVALID_ARG',
        `${what}: ${name}[${i}] is ${xs[i].length} characters, above the cap of ${cap} (maxChars; the edit distance grows with the product of the lengths)`
      )
    }
  }
}

/** Every component of the reward for each completion, computed in one pass. */
export interface RewardComponents {
  /** +1 when the completion has the think/answer format, else -1. */
  format: Float64Array
  /** ES*: 3.5 * similarity - 1.5, or -2 without a python block or with code that does not parse. */
  esStar: Float64Array
  /** EM*: +2 when the normalised code equals the normalised target, -1.5 when not, -2 as for ES*. */
  emStar: Float64Array
  /** format + esStar: ReCode's training reward. */
  reward: Float64Array
  /** Plain EM: 1 when the completion has a python block whose normalised code equals the normalised target, else 0
   * (no penalty for missing or invalid code). */
  em: Float64Array
  /** Plain ES: the similarity in [0, 1] where the code parses, else 0. */
  es: Float64Array
  /** Code-point Levenshtein similarity of the normalised code and target (NaN where ES* is -2). */
  similarity: Float64Array
  /** 1 when the completion has a ```python fenced block. */
  hasBlock: Uint8Array
  /** 1 when the normalised block parses with CPython's ast.parse. */
  validPython: Uint8Array
}

const NO_CODE = -2.0
/** Completions normalised between two hand-offs to the python workers. */
const TEXT_CHUNK = 256

function checkStrings(xs: unknown, name: string, what: string): asserts xs is string[] {
  if (!Array.isArray(xs)) throw new RecodeError('ERR_INVALID_ARG', `${what}: ${name} must be an array of strings`)
  for (let i = 0; i < xs.length; i++) {
    if (typeof xs[i] !== 'string') throw new RecodeError('ERR_INVALID_ARG', `${what}: ${name}[${i}] is not a string (got ${typeof xs[i]})`)
  }
}

function checkPairs(completions: unknown, targets: unknown, what: string): void {
  checkStrings(completions, 'completions', what)
  checkStrings(targets, 'targets', what)
  if ((completions as string[]).length !== (targets as string[]).length) {
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `${what}: ${(completions as string[]).length} completions but ${(targets as string[]).length} targets`
    )
  }
}

/** Format reward per completion: +1 / -1 ('<think>' is prepended: the prompt ended inside it). */
export async function format(completions: string[]): Promise<Float64Array> {
  return formatSync(completions)
}

export function formatSync(completions: string[]): Float64Array {
  checkStrings(completions, 'completions', 'rewards.format')
  const out = new Float64Array(completions.length)
  for (let i = 0; i < completions.length; i++) out[i] = formatOk(completions[i]) ? 1 : -1
  return out
}

/**
 * All components for each (completion, target) pair. The syntax checks (python workers) and the edit
 * distances run at the same time; targets repeated across a group are normalised once.
 */
export async function score(completions: string[], targets: string[], options: RewardOptions = {}): Promise<RewardComponents> {
  return await scoreComponents(completions, targets, options, 'rewards.score', true)
}

async function scoreComponents(
  completions: string[],
  targets: string[],
  options: RewardOptions,
  what: string,
  needSimilarity: boolean
): Promise<RewardComponents> {
  options = optionsArg(options, what)
  checkPairs(completions, targets, what)
  const cap = rewardMaxChars(options, what)
  checkLengths(completions, 'completions', cap, what)
  checkLengths(targets, 'targets', cap, what)
  if (options.signal?.aborted) throw abortError()
  const n = completions.length
  const format = formatSync(completions)
  const hasBlock = new Uint8Array(n)
  const codes: Array<string | null> = new Array(n)
  const normalizedTargets: string[] = new Array(n)
  const targetCache = new Map<string, string>()
  const withCode: number[] = []
  // Each distinct code is parsed once. The text pass goes in chunks and hands each chunk's new codes to
  // the python workers at once, so that they parse while the rest is normalised.
  const uniqueSlot = new Map<string, number>()
  const uniqueCodes: string[] = []
  const slotOf = new Int32Array(n)
  const parseJobs: Array<Promise<Uint8Array>> = []
  const pythonOptions = { python: options.python, signal: options.signal }
  for (let chunkStart = 0; chunkStart < n; chunkStart += TEXT_CHUNK) {
    const firstNew = uniqueCodes.length
    for (let i = chunkStart; i < Math.min(n, chunkStart + TEXT_CHUNK); i++) {
      const code = completionCode(completions[i])
      codes[i] = code
      if (code === null) continue
      hasBlock[i] = 1
      withCode.push(i)
      let slot = uniqueSlot.get(code)
      if (slot === undefined) {
        slot = uniqueCodes.length
        uniqueSlot.set(code, slot)
        uniqueCodes.push(code)
      }
      slotOf[i] = slot
      let t = targetCache.get(targets[i])
      if (t === undefined) {
        t = normalizeCode(targets[i])
        targetCache.set(targets[i], t)
      }
      normalizedTargets[i] = t
    }
    if (uniqueCodes.length > firstNew) {
      const job = pythonParses(uniqueCodes.slice(firstNew), pythonOptions)
      // Observed now, so that a failure while the next chunk is prepared is not an unhandled rejection;
      // Promise.all below still reports it.
      job.catch(() => {})
      parseJobs.push(job)
    }
    if (chunkStart + TEXT_CHUNK < n) {
      // Let I/O (the workers' replies) and timers through between chunks, and stop here on abort.
      await new Promise<void>((resolve) => setImmediate(resolve))
      if (options.signal?.aborted) throw abortError()
    }
  }
  const parsing = Promise.all(parseJobs)
  let sims: Promise<Float64Array | null> = Promise.resolve(null)
  try {
    if (needSimilarity)
      sims = similarities(
        withCode.map((i) => codes[i] as string),
        withCode.map((i) => normalizedTargets[i]),
        { device: options.device, signal: options.signal }
      )
  } catch (err) {
    parsing.catch(() => {
      /* the first error is the one reported */
    })
    throw err
  }
  // The syntax checks and the distances run at the same time; Promise.all observes both.
  const [parsedChunks, sim] = await Promise.all([parsing, sims])
  const uniqueParses = new Uint8Array(uniqueCodes.length)
  let offset = 0
  for (const chunk of parsedChunks) {
    uniqueParses.set(chunk, offset)
    offset += chunk.length
  }
  const parses = withCode.map((i) => uniqueParses[slotOf[i]])

  const esStar = new Float64Array(n).fill(NO_CODE)
  const emStar = new Float64Array(n).fill(NO_CODE)
  const similarity = new Float64Array(n).fill(NaN)
  const validPython = new Uint8Array(n)
  for (let k = 0; k < withCode.length; k++) {
    if (parses[k] !== 1) continue
    const i = withCode[k]
    validPython[i] = 1
    emStar[i] = codes[i] === normalizedTargets[i] ? 2.0 : -1.5
    if (sim !== null) {
      similarity[i] = sim[k]
      esStar[i] = sim[k] * 3.5 - 1.5
    }
  }
  const reward = new Float64Array(n)
  const em = new Float64Array(n)
  const es = new Float64Array(n)
  for (let i = 0; i < n; i++) {
    reward[i] = format[i] + esStar[i]
    em[i] = codes[i] !== null && codes[i] === normalizedTargets[i] ? 1 : 0
    es[i] = Number.isNaN(similarity[i]) ? 0 : similarity[i]
  }
  return { format, esStar, emStar, reward, em, es, similarity, hasBlock, validPython }
}

/** ES* per (completion, target) pair, in [-1.5, 2], or -2 (no python block / does not parse). */
export async function esStar(completions: string[], targets: string[], options: RewardOptions = {}): Promise<Float64Array> {
  return (await scoreComponents(completions, targets, options, 'rewards.esStar', true)).esStar
}

/** EM* per pair: +2 normalised code equals normalised target, -1.5 parses but differs, -2 otherwise. */
export async function emStar(completions: string[], targets: string[], options: RewardOptions = {}): Promise<Float64Array> {
  return (await scoreComponents(completions, targets, options, 'rewards.emStar', false)).emStar
}

/** ReCode's reward: format + ES*, in [-3, 3]. */
export async function recode(completions: string[], targets: string[], options: RewardOptions = {}): Promise<Float64Array> {
  return (await scoreComponents(completions, targets, options, 'rewards.recode', true)).reward
}

/** Plain EM per pair: 1 when the normalised code equals the normalised target, else 0. */
export async function em(completions: string[], targets: string[], options: RewardOptions = {}): Promise<Float64Array> {
  return (await scoreComponents(completions, targets, options, 'rewards.em', false)).em
}

/** Plain ES per pair: the similarity in [0, 1], or 0 without a python block or with code that does not parse. */
export async function es(completions: string[], targets: string[], options: RewardOptions = {}): Promise<Float64Array> {
  return (await scoreComponents(completions, targets, options, 'rewards.es', true)).es
}

/**
 * The training rewards a run can choose (config.reward), each "format + that component": 'es*' (ReCode's),
 * 'es', 'em*', 'em', and 'format' alone. The reward ablation of the paper (Table 2) compares them.
 */
export const TRAINING_REWARDS = ['es*', 'es', 'em*', 'em', 'format'] as const
export type TrainingRewardName = (typeof TRAINING_REWARDS)[number]

/** The training reward `name` of each completion from its components. */
export function trainingReward(name: TrainingRewardName, c: RewardComponents): Float64Array {
  if (typeof c !== 'object' || c === null || !(c.format instanceof Float64Array))
    throw new RecodeError('ERR_INVALID_ARG', 'trainingReward: components must be what rewards.score returns')
  const n = c.format.length
  const out = new Float64Array(n)
  const parts: Record<TrainingRewardName, Float64Array | null> = { 'es*': c.esStar, es: c.es, 'em*': c.emStar, em: c.em, format: null }
  const part = Object.hasOwn(parts, name) ? parts[name] : undefined
  if (part === undefined)
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `trainingReward: unknown reward ${JSON.stringify(name)} (one of ${TRAINING_REWARDS.join(', ')})`
    )
  for (let i = 0; i < n; i++) out[i] = c.format[i] + (part === null ? 0 : part[i])
  return out
}

/** The reward functions as one namespace: `rewards.recode(completions, targets)`. */
export const rewards = { format, esStar, emStar, recode, score, em, es }
