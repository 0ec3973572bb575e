/**
 * The ReCode reward (recode.md section 3), batched: format (+1/-1), ES* (3.5 * sim - 1.5, or -2 with no
 * ```python block or code CPython cannot parse), EM* (+2 equal / -1.5 different / -2), and their sum
 * format + ES* (range [-3, 3]), the reward ReCode trains with.
 */
import type { Device } from '../device'
import { similarities } from '../editDistance'
import { abortError, RecodeError } from '../errors'
import { pythonParses } from './python'
import { completionCode, formatOk, normalizeCode } from './text'

export { formatOk, extractFence, normalizeCode, completionCode, pythonStrip, isPythonSpace } from './text'
export { pythonParses, pythonParsesOne, closePythonWorkers, pythonCommand } from './python'
export type { PythonOptions } from './python'

export interface RewardOptions {
  /** Python interpreter for the syntax check (default: RECODE_PYTHON, else `python3`). */
  python?: string
  signal?: AbortSignal
  /** Where the edit distances run (see editDistance). */
  device?: Device
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
  /** Code-point Levenshtein similarity of the normalised code and target (NaN where ES* is -2). */
  similarity: Float64Array
  /** 1 when the completion has a ```python fenced block. */
  hasBlock: Uint8Array
  /** 1 when the normalised block parses with CPython's ast.parse. */
  validPython: Uint8Array
}

const NO_CODE = -2.0

function checkStrings (xs: unknown, name: string, what: string): asserts xs is string[] {
  if (!Array.isArray(xs)) throw new RecodeError('ERR_INVALID_ARG', `${what}: ${name} must be an array of strings`)
  for (let i = 0; i < xs.length; i++) {
    if (typeof xs[i] !== 'string') throw new RecodeError('ERR_INVALID_ARG', `${what}: ${name}[${i}] is not a string (got ${typeof xs[i]})`)
  }
}

function checkPairs (completions: unknown, targets: unknown, what: string): void {
  checkStrings(completions, 'completions', what)
  checkStrings(targets, 'targets', what)
  if ((completions as string[]).length !== (targets as string[]).length) {
    throw new RecodeError('ERR_INVALID_ARG', `${what}: ${(completions as string[]).length} completions but ${(targets as string[]).length} targets`)
  }
}

/** Format reward per completion: +1 / -1 ('<think>' is prepended: the prompt ended inside it). */
export async function format (completions: string[]): Promise<Float64Array> {
  return formatSync(completions)
}

export function formatSync (completions: string[]): Float64Array {
  checkStrings(completions, 'completions', 'rewards.format')
  const out = new Float64Array(completions.length)
  for (let i = 0; i < completions.length; i++) out[i] = formatOk(completions[i]) ? 1 : -1
  return out
}

/**
 * All components for each (completion, target) pair. The syntax checks (python workers) and the edit
 * distances run at the same time; targets repeated across a group are normalised once.
 */
export async function score (completions: string[], targets: string[], options: RewardOptions = {}): Promise<RewardComponents> {
  return await scoreComponents(completions, targets, options, 'rewards.score', true)
}

async function scoreComponents (completions: string[], targets: string[], options: RewardOptions, what: string, needSimilarity: boolean): Promise<RewardComponents> {
  checkPairs(completions, targets, what)
  if (options.signal?.aborted) throw abortError()
  const n = completions.length
  const format = formatSync(completions)
  const hasBlock = new Uint8Array(n)
  const codes: Array<string | null> = new Array(n)
  const normalizedTargets: string[] = new Array(n)
  const targetCache = new Map<string, string>()
  const withCode: number[] = []
  for (let i = 0; i < n; i++) {
    codes[i] = completionCode(completions[i])
    if (codes[i] === null) continue
    hasBlock[i] = 1
    withCode.push(i)
    let t = targetCache.get(targets[i])
    if (t === undefined) {
      t = normalizeCode(targets[i])
      targetCache.set(targets[i], t)
    }
    normalizedTargets[i] = t
  }
  const blockCodes = withCode.map((i) => codes[i] as string)
  const parsing = pythonParses(blockCodes, { python: options.python, signal: options.signal })
  const sims = needSimilarity
    ? similarities(blockCodes, withCode.map((i) => normalizedTargets[i]), { device: options.device, signal: options.signal })
    : Promise.resolve(null)
  // Both run before either is awaited; a failure of one must not leave the other unobserved.
  const [parses, sim] = await Promise.all([parsing, sims])

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
  for (let i = 0; i < n; i++) reward[i] = format[i] + esStar[i]
  return { format, esStar, emStar, reward, similarity, hasBlock, validPython }
}

/** ES* per (completion, target) pair, in [-1.5, 2], or -2 (no python block / does not parse). */
export async function esStar (completions: string[], targets: string[], options: RewardOptions = {}): Promise<Float64Array> {
  return (await scoreComponents(completions, targets, options, 'rewards.esStar', true)).esStar
}

/** EM* per pair: +2 normalised code equals normalised target, -1.5 parses but differs, -2 otherwise. */
export async function emStar (completions: string[], targets: string[], options: RewardOptions = {}): Promise<Float64Array> {
  return (await scoreComponents(completions, targets, options, 'rewards.emStar', false)).emStar
}

/** ReCode's reward: format + ES*, in [-3, 3]. */
export async function recode (completions: string[], targets: string[], options: RewardOptions = {}): Promise<Float64Array> {
  return (await scoreComponents(completions, targets, options, 'rewards.recode', true)).reward
}

/** The reward functions as one namespace: `rewards.recode(completions, targets)`. */
export const rewards = { format, esStar, emStar, recode, score }
