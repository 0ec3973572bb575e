/**
 * Chat-template rendering: the Jinja template a model ships in tokenizer_config.json turns a list of
 * messages into the prompt text, the way transformers' `apply_chat_template` does (rendered with
 * @huggingface/jinja). `continueFinalMessage` leaves the text open inside the final assistant message, so
 * generation continues ReCode's prefill `Let me solve this step by step.\n<think>` instead of starting a
 * new turn.
 */
import { Template } from '@huggingface/jinja'
import { RecodeError, invalidArg, optionsArg } from './errors'
import type { ChatMessage } from './model/types'

export type { ChatMessage }

export interface RenderChatOptions {
  /** Append the template's opening of an assistant turn (`add_generation_prompt`). */
  addGenerationPrompt?: boolean
  /** Cut the text right after the final message's content (no end-of-turn token): generation continues it. */
  continueFinalMessage?: boolean
  /** Values such as bos_token / eos_token that templates refer to by name. */
  specialTokens?: Record<string, string>
}

/**
 * The chat template of a tokenizer_config.json object. `chat_template` is either one template string or a
 * list of `{ name, template }`; `name` picks one from the list (default: the one named "default", else the
 * only one).
 */
export function loadChatTemplate(tokenizerConfig: Record<string, unknown>, name?: string): string {
  if (tokenizerConfig === null || typeof tokenizerConfig !== 'object')
    throw invalidArg('tokenizerConfig must be an object (the parsed tokenizer_config.json)')
  const field = tokenizerConfig.chat_template
  if (field === undefined || field === null) {
    throw new RecodeError(
      'ERR_MODEL',
      'tokenizer_config.json has no chat_template: this model has no chat format (a base model?); pass a template explicitly'
    )
  }
  if (typeof field === 'string') {
    if (name !== undefined && name !== 'default')
      throw new RecodeError('ERR_MODEL', `tokenizer_config.json has a single chat_template, not one named '${name}'`)
    return field
  }
  if (!Array.isArray(field))
    throw new RecodeError('ERR_MODEL', 'tokenizer_config.json chat_template must be a string or a list of {name, template}')
  const named = new Map<string, string>()
  for (const [i, entry] of field.entries()) {
    const e = entry as Record<string, unknown>
    if (e === null || typeof e !== 'object' || typeof e.name !== 'string' || typeof e.template !== 'string') {
      throw new RecodeError('ERR_MODEL', `tokenizer_config.json chat_template[${i}] must be {name: string, template: string}`)
    }
    named.set(e.name, e.template)
  }
  const wanted = name ?? (named.has('default') ? 'default' : undefined)
  if (wanted === undefined) {
    if (named.size === 1) return [...named.values()][0]
    throw new RecodeError(
      'ERR_MODEL',
      `tokenizer_config.json has several chat templates (${[...named.keys()].join(', ')}) and none named 'default'; pick one by name`
    )
  }
  const template = named.get(wanted)
  if (template === undefined)
    throw new RecodeError(
      'ERR_MODEL',
      `tokenizer_config.json has no chat template named '${wanted}' (it has: ${[...named.keys()].join(', ')})`
    )
  return template
}

// Parsing a template is the costly part and the same template renders thousands of prompts.
const parsed = new Map<string, Template>()

function compile(template: string): Template {
  let t = parsed.get(template)
  if (t === undefined) {
    try {
      t = new Template(template)
    } catch (err) {
      throw new RecodeError('ERR_MODEL', `chat template does not parse: ${(err as Error).message}`, { cause: err })
    }
    if (parsed.size > 16) parsed.clear()
    parsed.set(template, t)
  }
  return t
}

/** Renders messages with a chat template (the text of `loadChatTemplate` or a custom one). */
export function renderChatTemplate(template: string, messages: ChatMessage[], options: RenderChatOptions = {}): string {
  if (typeof template !== 'string') throw invalidArg('template must be a string')
  options = optionsArg(options, 'renderChatTemplate')
  if (!Array.isArray(messages) || messages.length === 0) throw invalidArg('messages must be a non-empty array of {role, content}')
  for (const [i, m] of messages.entries()) {
    if (m === null || typeof m !== 'object' || typeof m.role !== 'string' || typeof m.content !== 'string') {
      throw invalidArg(`messages[${i}] must be {role: string, content: string}`)
    }
  }
  const continueFinal = options.continueFinalMessage === true
  const addGenerationPrompt = options.addGenerationPrompt === true
  if (continueFinal && addGenerationPrompt) {
    throw invalidArg(
      'continueFinalMessage and addGenerationPrompt exclude each other: one continues the last message, the other opens a new turn'
    )
  }
  const final = messages[messages.length - 1]
  if (continueFinal && final.role !== 'assistant') throw invalidArg("continueFinalMessage needs the final message to be the assistant's")

  // raise_exception and strftime_now are provided by @huggingface/jinja itself.
  const context: Record<string, unknown> = {
    ...(options.specialTokens ?? {}),
    messages: messages.map((m) => ({ role: m.role, content: m.content })),
    add_generation_prompt: addGenerationPrompt
  }
  let text: string
  try {
    text = compile(template).render(context)
  } catch (err) {
    if (err instanceof RecodeError) throw err
    throw new RecodeError('ERR_MODEL', `chat template failed to render: ${(err as Error).message}`, { cause: err })
  }
  if (!continueFinal) return text

  // Cut after the last occurrence of the final message's content. Templates may strip the content, so
  // search for the stripped text and keep the content's trailing whitespace only when the template kept it.
  const content = final.content
  const core = content.trim()
  const at = text.lastIndexOf(core)
  if (core.length === 0 || at < 0) {
    throw new RecodeError(
      'ERR_MODEL',
      'continueFinalMessage: the final message does not appear in the rendered chat (the template drops or rewrites it)'
    )
  }
  const leftTrimmed = content.replace(/^\s+/, '')
  if (text.slice(at, at + leftTrimmed.length) === leftTrimmed) return text.slice(0, at + leftTrimmed.length)
  return text.slice(0, at + core.length)
}
