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
  return (await evaluateHeldOutDetailed(model, rows, optionsArg(options, 'evaluateHeldOut'))).scores
}

/** One model's answer to one held-out task, scored. */
export interface HeldOutAnswer {
  completion: string
  format: boolean
  esStar: number
  exact: boolean
}

export interface HeldOutDetail {
  scores: HeldOutScores
  /** Per task, in the order of the rows. */
  answers: HeldOutAnswer[]
}

/** evaluateHeldOut with each task's completion and scores (for the examples a report shows). */
export async function evaluateHeldOutDetailed(
  model: LanguageModel,
  rows: UpdateTaskRow[],
  options: HeldOutOptions = {}
): Promise<HeldOutDetail> {
  options = optionsArg(options, 'evaluateHeldOut')
  return await scorePrompts(
    model,
    migrationPrompts(model, rows),
    rows.map((r) => r.new_code),
    options
  )
}

/**
 * Greedy (or sampled) answers to rendered prompts, scored against the targets with ReCode's reward: the held-out
 * evaluation of any prompt family (migrations here, the demo's plain-Python edits in lib/demo/evaluate.ts).
 */
export async function scorePrompts(
  model: LanguageModel,
  prompts: string[],
  targets: string[],
  options: HeldOutOptions = {}
): Promise<HeldOutDetail> {
  const generations = await model.generate(prompts, {
    maxNewTokens: options.maxNewTokens ?? 160,
    temperature: options.temperature ?? 0,
    seed: options.seed ?? 0,
    n: 1,
    signal: options.signal,
    onProgress: options.onProgress
  })
  return await scoreCompletions(
    generations.map((g) => g[0].text),
    targets,
    options
  )
}

/** Completions scored against their targets with ReCode's reward: the mean scores and each answer's. */
async function scoreCompletions(
  completions: string[],
  targets: string[],
  options: Pick<HeldOutOptions, 'python' | 'signal'>
): Promise<HeldOutDetail> {
  const scores = await rewards.score(completions, targets, { python: options.python, signal: options.signal })
  const n = completions.length
  const mean = (xs: Float64Array): number => (n === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / n)
  return {
    scores: {
      formatRate: n === 0 ? 0 : scores.format.filter((f) => f > 0).length / n,
      esStar: mean(scores.esStar),
      exactMatch: n === 0 ? 0 : scores.emStar.filter((e) => e === 2).length / n,
      reward: mean(scores.reward),
      completions: n
    },
    answers: completions.map((completion, i) => ({
      completion,
      format: scores.format[i] > 0,
      esStar: scores.esStar[i],
      exact: scores.emStar[i] === 2
    }))
  }
}

/**
 * The scores of answering every task with its old code unchanged (format and answer fence correct): the reference a
 * model's ES* is read against. On data whose updates change little of the code (the synthetic tasks) this is already
 * high, and ES* ranks it above most wrong edits; on ReCode's data it is a similarity of about 0.72.
 */
export async function oldCodeScores(
  rows: UpdateTaskRow[],
  options: Pick<HeldOutOptions, 'python' | 'signal'> = {}
): Promise<HeldOutScores> {
  options = optionsArg(options, 'oldCodeScores')
  const answers = rows.map((r) => ` </think>\n<answer>\n\`\`\`python\n${r.old_code ?? ''}\n\`\`\`\n</answer>`)
  return (
    await scoreCompletions(
      answers,
      rows.map((r) => r.new_code),
      options
    )
  ).scores
}

/** The line the CLI prints under a run's scores: the old-code reference. */
export function oldCodeLine(s: Pick<HeldOutScores, 'esStar'>): string {
  return `(answering with the old code unchanged scores ES* ${s.esStar.toFixed(3)}: read ES* against that)`
}

/** One held-out evaluation of a run (summary.json `evaluations`). */
export interface EvaluationPoint {
  step: number
  label: 'before' | 'after-warm-start' | 'periodic' | 'after'
  formatRate: number
  esStar: number
  exactMatch: number
}

/** A held-out task shown side by side: the task, and each evaluated model's answer ('before', 'afterWarmStart', 'after'). */
export interface HeldOutExample {
  /** Index among the held-out tasks. */
  task: number
  dependency: string
  updateInfo: string
  oldCode: string
  target: string
  answers: Partial<Record<'before' | 'afterWarmStart' | 'after', HeldOutAnswer>>
}

/**
 * `count` held-out tasks to show: those whose answer became exact from the model RL started with (the warm start,
 * else the base) to the final one first, then the largest ES* gains, then task order; listed in task order.
 */
export function pickExamples(
  rows: UpdateTaskRow[],
  answers: Partial<Record<'before' | 'afterWarmStart' | 'after', HeldOutAnswer[]>>,
  count: number
): HeldOutExample[] {
  const start = answers.afterWarmStart ?? answers.before
  const end = answers.after
  const gain = (i: number): number =>
    start === undefined || end === undefined ? 0 : (end[i].exact && !start[i].exact ? 100 : 0) + end[i].esStar - start[i].esStar
  const order = rows.map((_, i) => i).sort((a, b) => gain(b) - gain(a) || a - b)
  return order
    .slice(0, Math.max(0, count))
    .sort((a, b) => a - b)
    .map((i) => {
      const row = rows[i]
      const picked: HeldOutExample['answers'] = {}
      for (const k of ['before', 'afterWarmStart', 'after'] as const) {
        const a = answers[k]?.[i]
        if (a !== undefined) picked[k] = a
      }
      return {
        task: i,
        dependency: row.dependency,
        updateInfo: row.update_info,
        oldCode: row.old_code,
        target: row.new_code,
        answers: picked
      }
    })
}

const ANSWER_TITLES = { before: 'before training', afterWarmStart: 'after the warm start', after: 'after training' } as const

/** One line of scores for an answer: format, ES*, exact or not. */
export function answerBadge(a: HeldOutAnswer): string {
  return `format ${a.format ? 'ok' : 'wrong'}, ES* ${a.esStar.toFixed(2)}${a.exact ? ', exact match' : ''}`
}

/** The examples as plain text for a terminal: each task's old code, update note and target, then each answer. */
export function examplesText(examples: HeldOutExample[]): string {
  const indent = (text: string): string =>
    text
      .trimEnd()
      .split('\n')
      .map((l) => `    ${l}`)
      .join('\n')
  const out: string[] = []
  for (const e of examples) {
    out.push(`--- held-out task ${e.task + 1} (${e.dependency}) ---`)
    out.push(`  update note:\n${indent(e.updateInfo)}`)
    out.push(`  old code:\n${indent(e.oldCode)}`)
    out.push(`  target:\n${indent(e.target)}`)
    for (const k of ['before', 'afterWarmStart', 'after'] as const) {
      const a = e.answers[k]
      if (a !== undefined) out.push(`  answer ${ANSWER_TITLES[k]} (${answerBadge(a)}):\n${indent(`<think>${a.completion}`)}`)
    }
  }
  return out.join('\n')
}
