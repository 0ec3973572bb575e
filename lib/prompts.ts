/**
 * Prompts: ReCode's training prompt (code migration), its CodeUpdateArena evaluation prompt, and a
 * HumanEval prompt in the same think/answer style. A prompt is a system message, a user message and an
 * assistant prefill that generation continues (`Let me solve this step by step.\n<think>`), written as
 * templates with `{field}` placeholders; custom templates use the same placeholders.
 */
import { renderChatTemplate } from './chat'
import type { RenderChatOptions } from './chat'
import { RecodeError, invalidArg, optionsArg } from './errors'
import type { ChatMessage, LanguageModel } from './model/types'
import type { MigrationExample } from './data/recode'
import type { CodeUpdateArenaProblem } from './data/codeupdatearena'
import type { HumanEvalProblem } from './data/humaneval'

export interface PromptTemplate {
  name: string
  /** System message; omitted when empty. */
  system: string
  user: string
  /** Start of the assistant's answer, continued by generation (no end-of-turn after it). */
  prefill?: string
}

export const RECODE_PREFILL = 'Let me solve this step by step.\n<think>'

export const RECODE_ANSWER_INSTRUCTION =
  'Show your work in <think> </think> tags. And return the final code in <answer> </answer>, the code within <answer></answer> should be enclosed in ```python ``` tags.'

/** ReCode's training prompt (src/GRPO/data.py and src/DAPO/data_process.py of the original). */
export const RECODE_TRAIN_PROMPT: PromptTemplate = {
  name: 'recode-train',
  system:
    'You are a helpful coding assistant. Your task is to transform the old version of the code into the new version specified, based on the update information. You first thinks about the reasoning process in the mind and then provides the solution.',
  user:
    '\n{dependency} performed an API update in version {version}, and the update content includes:\n<doc>\n{update_info}\n</doc>\nThe old version of the code is:\n```python\n{old_code}\n```\n\n' +
    RECODE_ANSWER_INSTRUCTION +
    '\n',
  prefill: RECODE_PREFILL
}

/**
 * ReCode's CodeUpdateArena evaluation prompt. The paper gives the wording; the line layout (breaks
 * around <doc>, leading newline, instruction after a blank line) follows the training prompt.
 */
export const RECODE_CODEUPDATEARENA_PROMPT: PromptTemplate = {
  name: 'recode-codeupdatearena',
  system:
    'You are a helpful code assistant. You first think about the reasoning process in the mind and then provide a Python solution to a problem in a real-world scenario.',
  user:
    "\nUpdate Note: There's an recent update to a function {api_path} \u2013 {description}. The function now has a new function signature \u2013 {signature}. Here is a detailed documentation about the update:\n<doc>\n{docstring}\n</doc>\nScenario: {scenario}\nProblem: {problem}\nSolution Signature: {solution_signature}\n\n" +
    RECODE_ANSWER_INSTRUCTION +
    '\n',
  prefill: RECODE_PREFILL
}

/** HumanEval in the same think/answer format (this library's wording: the paper does not print its HumanEval prompt). */
export const HUMANEVAL_PROMPT: PromptTemplate = {
  name: 'humaneval',
  system: 'You are a helpful code assistant. You first think about the reasoning process in the mind and then provide a Python solution.',
  user:
    '\nComplete the following Python function. Return the whole function, with any imports it needs.\n```python\n{prompt}\n```\n\n' +
    RECODE_ANSWER_INSTRUCTION +
    '\n',
  prefill: RECODE_PREFILL
}

export const promptPresets: Record<string, PromptTemplate> = {
  'recode-train': RECODE_TRAIN_PROMPT,
  'recode-codeupdatearena': RECODE_CODEUPDATEARENA_PROMPT,
  humaneval: HUMANEVAL_PROMPT
}

/** A preset by name, or a custom template checked for shape. */
export function resolvePromptTemplate(t: string | PromptTemplate): PromptTemplate {
  if (typeof t === 'string') {
    const p = promptPresets[t]
    if (p === undefined) throw invalidArg(`unknown prompt preset '${t}' (presets: ${Object.keys(promptPresets).join(', ')})`)
    return p
  }
  if (
    t === null ||
    typeof t !== 'object' ||
    typeof t.user !== 'string' ||
    typeof t.system !== 'string' ||
    (t.prefill !== undefined && typeof t.prefill !== 'string')
  ) {
    throw invalidArg('a prompt template is {name, system: string, user: string, prefill?: string}')
  }
  return t
}

/**
 * Replaces `{name}` placeholders with `fields[name]`; `{{` and `}}` stand for literal braces. A
 * placeholder without a field is an error (so a misspelt field never reaches a model).
 */
export function fillTemplate(text: string, fields: Record<string, string>, templateName = 'template'): string {
  return text.replace(/\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (m, name: string | undefined) => {
    if (m === '{{') return '{'
    if (m === '}}') return '}'
    const v = fields[name as string]
    if (v === undefined)
      throw new RecodeError('ERR_INVALID_ARG', `${templateName}: no field '${name}' (fields: ${Object.keys(fields).join(', ')})`)
    return v
  })
}

/** Messages of a template filled with `fields`: system (when non-empty), user, and the prefill as an assistant message. */
export function buildMessages(template: PromptTemplate, fields: Record<string, string>): ChatMessage[] {
  const messages: ChatMessage[] = []
  const system = fillTemplate(template.system, fields, template.name)
  if (system !== '') messages.push({ role: 'system', content: system })
  messages.push({ role: 'user', content: fillTemplate(template.user, fields, template.name) })
  if (template.prefill !== undefined && template.prefill !== '')
    messages.push({ role: 'assistant', content: fillTemplate(template.prefill, fields, template.name) })
  return messages
}

/** Python's str() of an optional text, as the original's f-strings write it (null prints as `None`). */
function pyStr(v: string | null): string {
  return v === null ? 'None' : v
}

/**
 * Fields of a migration example: dependency, version, new_version, description, update_info, old_code,
 * new_code. `version` is the version number (the `==` prefix removed); `originalVersionSlice` reproduces
 * the original's `new_version[2:]` instead (which turns `2.0.0` into `0.0`).
 */
export function migrationFields(example: MigrationExample, options: { originalVersionSlice?: boolean } = {}): Record<string, string> {
  options = optionsArg(options, 'migrationFields')
  const version = options.originalVersionSlice === true ? pyStr(example.newVersion).slice(2) : example.version
  return {
    dependency: example.dependency,
    version,
    new_version: pyStr(example.newVersion),
    description: pyStr(example.description),
    update_info: pyStr(example.updateInfo),
    old_code: pyStr(example.oldCode),
    new_code: pyStr(example.newCode)
  }
}

/** Fields of a CodeUpdateArena problem: api_path, description, signature, docstring, rationale, update_type, package, scenario, problem, solution_signature, imports. */
export function codeUpdateArenaFields(p: CodeUpdateArenaProblem): Record<string, string> {
  return {
    api_path: p.update.functionPath,
    description: p.update.description,
    signature: p.update.signature,
    docstring: p.update.docstring,
    rationale: p.update.rationale,
    update_type: p.update.updateType,
    package: p.update.package,
    scenario: p.scenario,
    problem: p.problem,
    solution_signature: p.solutionSignature,
    imports: p.imports
  }
}

/** Fields of a HumanEval problem: prompt, entry_point, task_id. */
export function humanEvalFields(p: HumanEvalProblem): Record<string, string> {
  return { prompt: p.prompt, entry_point: p.entryPoint, task_id: p.taskId }
}

export function migrationPrompt(
  example: MigrationExample,
  template: string | PromptTemplate = RECODE_TRAIN_PROMPT,
  options: { originalVersionSlice?: boolean } = {}
): ChatMessage[] {
  return buildMessages(resolvePromptTemplate(template), migrationFields(example, options))
}

export function codeUpdateArenaPrompt(
  problem: CodeUpdateArenaProblem,
  template: string | PromptTemplate = RECODE_CODEUPDATEARENA_PROMPT
): ChatMessage[] {
  return buildMessages(resolvePromptTemplate(template), codeUpdateArenaFields(problem))
}

export function humanEvalPrompt(problem: HumanEvalProblem, template: string | PromptTemplate = HUMANEVAL_PROMPT): ChatMessage[] {
  return buildMessages(resolvePromptTemplate(template), humanEvalFields(problem))
}

/**
 * The text a model is given: messages rendered through a chat template (text, or a LanguageModel's own
 * renderChat). A conversation ending with the assistant prefill is continued (continueFinalMessage);
 * otherwise a generation prompt opens the assistant turn.
 */
export function renderPrompt(
  messages: ChatMessage[],
  chat: string | Pick<LanguageModel, 'renderChat'>,
  options: { specialTokens?: RenderChatOptions['specialTokens'] } = {}
): string {
  options = optionsArg(options, 'renderPrompt')
  if (!Array.isArray(messages)) throw invalidArg('renderPrompt: messages must be an array of {role, content}')
  const continueFinal = messages.length > 0 && messages[messages.length - 1].role === 'assistant'
  const opts = continueFinal ? { continueFinalMessage: true } : { addGenerationPrompt: true }
  if (typeof chat === 'string') return renderChatTemplate(chat, messages, { ...opts, specialTokens: options.specialTokens })
  if (chat === null || typeof chat !== 'object' || typeof chat.renderChat !== 'function')
    throw invalidArg('renderPrompt needs a chat template string or an object with renderChat')
  return chat.renderChat(messages, opts)
}

/**
 * The chat template ReCode's GRPO script passes explicitly: plain ChatML turns, no default system
 * message, no generation prompt. With a system message it renders like Qwen2.5's own template.
 */
export const RECODE_CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
