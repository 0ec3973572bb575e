/**
 * Held-out evaluation of a model on migration tasks with ReCode's prompt and reward: the numbers the
 * embedded default reports before and after training (format rate, mean ES*, exact-match rate).
 */
import { optionsArg } from '../errors'
import type { LanguageModel } from '../model/types'
import { buildMessages, renderPrompt, RECODE_TRAIN_PROMPT } from '../prompts'
import { rewards } from '../reward'
import type { UpdateTaskRow } from './synthetic'

export interface HeldOutScores {
  /** Share of completions with the <think>…</think><answer>…</answer> format. */
  formatRate: number
  /** Mean ES* (in [-2, 2]). */
  esStar: number
  /** Share of completions whose normalised code equals the normalised target (EM* = +2). */
  exactMatch: number
  /** Mean total reward (format + ES*). */
  reward: number
  completions: number
}

export interface HeldOutOptions {
  maxNewTokens?: number
  /** 0 = greedy (default), else sampled with this temperature. */
  temperature?: number
  seed?: number
  python?: string
  signal?: AbortSignal
  onProgress?: (p: { done: number; total: number; generatedTokens: number }) => void
}

/** The prompt fields of a ReCode-format row (`new_version` may carry the `==` prefix; the version number is used). */
export function rowFields(row: UpdateTaskRow): Record<string, string> {
  const version = row.new_version.startsWith('==') ? row.new_version.slice(2) : row.new_version
  return {
    dependency: row.dependency,
    version,
    new_version: row.new_version,
    description: row.description,
    update_info: row.update_info,
    old_code: row.old_code,
    new_code: row.new_code
  }
}

/** Renders each row with ReCode's training prompt through the model's chat template (prefill continued). */
export function migrationPrompts(model: Pick<LanguageModel, 'renderChat'>, rows: UpdateTaskRow[]): string[] {
  return rows.map((row) => renderPrompt(buildMessages(RECODE_TRAIN_PROMPT, rowFields(row)), model))
}

export async function evaluateHeldOut(model: LanguageModel, rows: UpdateTaskRow[], options: HeldOutOptions = {}): Promise<HeldOutScores> {
  options = optionsArg(options, 'evaluateHeldOut')
  const prompts = migrationPrompts(model, rows)
  const generations = await model.generate(prompts, {
    maxNewTokens: options.maxNewTokens ?? 160,
    temperature: options.temperature ?? 0,
    seed: options.seed ?? 0,
    n: 1,
    signal: options.signal,
    onProgress: options.onProgress
  })
  const completions = generations.map((g) => g[0].text)
  const scores = await rewards.score(
    completions,
    rows.map((r) => r.new_code),
    { python: options.python, signal: options.signal }
  )
  const n = completions.length
  const mean = (xs: Float64Array): number => (n === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / n)
  return {
    formatRate: n === 0 ? 0 : scores.format.filter((f) => f > 0).length / n,
    esStar: mean(scores.esStar),
    exactMatch: n === 0 ? 0 : scores.emStar.filter((e) => e === 2).length / n,
    reward: mean(scores.reward),
    completions: n
  }
}
