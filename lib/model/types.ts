/**
 * What evaluation and training need from a loaded language model. `loadModel` (lib/model) returns an
 * object that implements it; tests may implement it with canned outputs.
 */

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant'
  content: string
}

export interface GenerateOptions {
  /** Maximum tokens generated per sample (default 512). */
  maxNewTokens?: number
  /** 0 = greedy. Default 1. */
  temperature?: number
  topK?: number
  topP?: number
  minP?: number
  /** Generation of a sample stops after any of these strings (the string is kept in the text). */
  stop?: string[]
  /** Seed for reproducible sampling (Philox keyed by seed, sequence and step). */
  seed?: number
  /** Samples per prompt (default 1). */
  n?: number
  /** Sampling stream of the first sample (default 0): sample s of prompt p draws from stream firstRow + p * n + s,
   * so a batch split into pieces (data-parallel ranks) samples what the whole batch would. */
  firstRow?: number
  signal?: AbortSignal
  onProgress?: (p: { done: number; total: number; generatedTokens: number }) => void
}

export interface Generation {
  /** Decoded continuation (without the prompt). */
  text: string
  tokenIds: number[]
  /** Log-probability of each generated token under the unfiltered temperature-scaled distribution. */
  logprobs: number[]
  finishReason: 'eos' | 'stop' | 'length'
}

export interface LanguageModel {
  /** Renders chat messages with the model's chat template; with continueFinalMessage the text ends inside the last (assistant) message, ready to be continued. */
  renderChat: (messages: ChatMessage[], options?: { continueFinalMessage?: boolean; addGenerationPrompt?: boolean }) => string
  /** One entry per prompt, each with `n` samples. Prompts are already-rendered text. */
  generate: (prompts: string[], options?: GenerateOptions) => Promise<Generation[][]>
  dispose: () => void
}
