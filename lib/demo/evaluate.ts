/**
 * General ability of a model, apart from API updates: greedy answers to held-out plain-Python editing tasks
 * (lib/demo/corpus.ts generalTasks), scored like the migration tasks (format, ES*, exact match of the normalised
 * code). The paper measures this with HumanEval; the demo base model is too small for HumanEval, and editing
 * plain Python is what it can do before any RL, so this is what SFT or RL on migrations may take away.
 */
import { optionsArg } from '../errors'
import type { LanguageModel } from '../model/types'
import { buildMessages, renderPrompt } from '../prompts'
import { scorePrompts, type HeldOutDetail, type HeldOutOptions } from '../train/heldout'
import { EDIT_PROMPT, type EditTask } from './corpus'

export async function evaluateEdits(model: LanguageModel, tasks: EditTask[], options: HeldOutOptions = {}): Promise<HeldOutDetail> {
  options = optionsArg(options, 'evaluateEdits')
  const prompts = tasks.map((t) => renderPrompt(buildMessages(EDIT_PROMPT, { instruction: t.instruction, old_code: t.old_code }), model))
  return await scorePrompts(
    model,
    prompts,
    tasks.map((t) => t.new_code),
    options
  )
}
