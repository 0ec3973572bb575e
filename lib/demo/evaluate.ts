/**
 * General ability of a model, apart from API updates: greedy answers to held-out plain-Python editing tasks
 * (lib/demo/corpus.ts generalTasks), scored like the migration tasks (format, ES*, exact match of the normalised
 * code). The paper measures this with HumanEval; the demo base model is too small for HumanEval, and editing
 * plain Python is what it can do before any RL, so this is what SFT or RL on migrations may take away.
 */
import { optionsArg } from '../errors'
import type { LanguageModel } from '../model/types'
import { buildMessages, renderPrompt } from '../prompts'
import { rewards } from '../reward'
import type { HeldOutOptions, HeldOutScores } from '../train/heldout'
import { EDIT_PROMPT, type EditTask } from './corpus'

export async function evaluateEdits(
  model: LanguageModel,
  tasks: EditTask[],
  options: HeldOutOptions = {}
): Promise<HeldOutScores & { answers: string[] }> {
  options = optionsArg(options, 'evaluateEdits')
  const prompts = tasks.map((t) => renderPrompt(buildMessages(EDIT_PROMPT, { instruction: t.instruction, old_code: t.old_code }), model))
  const generations = await model.generate(prompts, {
    maxNewTokens: options.maxNewTokens ?? 160,
    temperature: options.temperature ?? 0,
    seed: options.seed ?? 0,
    n: 1,
    signal: options.signal,
    onProgress: options.onProgress
  })
  const answers = generations.map((g) => g[0].text)
  const s = await rewards.score(
    answers,
    tasks.map((t) => t.new_code),
    { python: options.python, signal: options.signal }
  )
  const n = answers.length
  const mean = (xs: Float64Array): number => (n === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / n)
  return {
    formatRate: n === 0 ? 0 : s.format.filter((f) => f > 0).length / n,
    esStar: mean(s.esStar),
    exactMatch: n === 0 ? 0 : s.emStar.filter((e) => e === 2).length / n,
    reward: mean(s.reward),
    completions: n,
    answers
  }
}
