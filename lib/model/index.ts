/**
 * loadModel(dir): a Hugging Face model folder (Qwen2 / Llama / Qwen3) run by the native engine. The model
 * implements LanguageModel (renderChat, generate, dispose) and adds logits() for tests and references.
 *
 * Generation is continuous batching over the native KV-cache slots: every step is ONE native async job
 * (prefill chunks of new prompts and one decode token of each running sequence, batched together, sampled
 * in the same job); a sequence that stops (EOS id, stop string, maxNewTokens, full context) frees its slot
 * for the next prompt at once.
 */
import * as path from 'path'
import { cancelFlag, throwIfAborted } from '../abort'
import { loadChatTemplate, renderChatTemplate } from '../chat'
import { cudaAvailable, resolveDevice, systemInfo } from '../device'
import { RecodeError, invalidArg, optionsArg } from '../errors'
import { temperatureProblem, topKProblem } from '../rl/sampling'
import { native } from '../native'
import { eosIds, parseModelConfig, readJsonFile, weightFiles, type NativeModelConfig } from './config'
import { readSafetensorsHeader } from '../safetensors'
import { loadTokenizer, type ModelTokenizer } from './tokenizer'
import type { ChatMessage, GenerateOptions, Generation, LanguageModel } from './types'

export type { NativeModelConfig } from './config'
export type { ModelTokenizer } from './tokenizer'

export interface LoadModelOptions {
  /** 'auto': 'cuda' when a usable GPU is present, else 'cpu'; 'emulated' runs the CUDA kernels through the SIMT emulation (slow; tests). */
  device?: 'auto' | 'cpu' | 'cuda' | 'emulated'
  /**
   * Weights as computed: 'f32' (default on CPU) or 'bf16' (weights rounded to bfloat16, as a bf16 model
   * holds them; the CPU computes in float32 either way). On 'cuda'/'emulated', 'bf16' also stores activations
   * and the KV cache in bf16 and runs GEMM and prefill attention on tensor cores (fp32 accumulation).
   */
  dtype?: 'f32' | 'bf16'
  /** Sequences generated at once = KV-cache slots (default 8). */
  maxBatch?: number
  /** Tokens per sequence, prompt included (default min(max_position_embeddings, 4096)). */
  maxContext?: number
  /** Prompt tokens fed per sequence per step (bounds activation memory; default 512). */
  prefillChunk?: number
}

export interface ModelMemory {
  device: string
  weightBytes: number
  /** KV cache, allocated at load: slots x context x layers x 2 x kv_heads x head_dim x 4 bytes (2 for dtype bf16 on cuda/emulated). */
  kvCacheBytes: number
  slots: number
  context: number
}

/** One entry of a low-level step: feed `tokens` to KV-cache slot `slot` (after emptying it when `reset`). */
export interface StepEntry {
  slot: number
  tokens: number[]
  reset?: boolean
}

export class Model implements LanguageModel {
  readonly dir: string
  readonly config: NativeModelConfig
  readonly tokenizer: ModelTokenizer
  readonly eosTokenIds: number[]
  readonly chatTemplate: string | null
  private handle: unknown
  private lock: Promise<void> = Promise.resolve()
  private readonly prefillChunk: number

  /** @internal use loadModel */
  constructor(dir: string, config: NativeModelConfig, tokenizer: ModelTokenizer, eos: number[], handle: unknown, prefillChunk: number) {
    this.dir = dir
    this.config = config
    this.tokenizer = tokenizer
    this.eosTokenIds = eos
    this.handle = handle
    this.prefillChunk = prefillChunk
    let template: string | null = null
    try {
      template = loadChatTemplate(tokenizer.config)
    } catch {
      template = null
    }
    this.chatTemplate = template
  }

  get memory(): ModelMemory {
    const i = native().modelInfo(this.live())
    return { device: i.device, weightBytes: i.weightBytes, kvCacheBytes: i.kvCacheBytes, slots: i.slots, context: i.context }
  }

  private live(): unknown {
    if (this.handle === undefined) throw invalidArg('the model was disposed')
    return this.handle
  }

  /** Runs fn with exclusive use of the KV cache (generate, logits and step calls queue behind each other). */
  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.lock
    let release!: () => void
    this.lock = new Promise<void>((resolve) => {
      release = resolve
    })
    await prev
    try {
      return await fn()
    } finally {
      release()
    }
  }

  renderChat(messages: ChatMessage[], options: { continueFinalMessage?: boolean; addGenerationPrompt?: boolean } = {}): string {
    options = optionsArg(options, 'renderChat')
    if (this.chatTemplate === null)
      throw new RecodeError('ERR_MODEL', `${path.join(this.dir, 'tokenizer_config.json')}: has no chat_template`)
    const special: Record<string, string> = {}
    for (const k of ['bos_token', 'eos_token', 'pad_token', 'unk_token']) {
      const v = this.tokenizer.config[k]
      if (typeof v === 'string') special[k] = v
      else if (v && typeof v.content === 'string') special[k] = v.content
    }
    return renderChatTemplate(this.chatTemplate, messages, {
      addGenerationPrompt: options.addGenerationPrompt,
      continueFinalMessage: options.continueFinalMessage,
      specialTokens: special
    })
  }

  /** Float32 logits [T x V] of every position of every sequence (a fresh forward pass per sequence). */
  async logits(ids: number[][], options: { signal?: AbortSignal } = {}): Promise<Float32Array[]> {
    options = optionsArg(options, 'logits')
    if (!Array.isArray(ids) || ids.length === 0) throw invalidArg('logits: ids must be a non-empty array of token id arrays')
    const { slots, context } = this.memory
    for (const [i, s] of ids.entries()) {
      if (!Array.isArray(s) || s.length === 0) throw invalidArg(`logits: ids[${i}] must be a non-empty array`)
      if (s.length > context)
        throw invalidArg(`logits: ids[${i}] has ${s.length} tokens, over the context of ${context} (loadModel maxContext)`)
    }
    const V = this.config.vocab
    return await this.exclusive(async () => {
      const out: Float32Array[] = []
      for (let b = 0; b < ids.length; b += slots) {
        const batch = ids.slice(b, b + slots)
        const all = (await this.runStep(
          batch.map((tokens, slot) => ({ slot, tokens, reset: true })),
          'all',
          undefined,
          options.signal
        )) as Float32Array
        let row = 0
        for (const s of batch) {
          out.push(all.slice(row * V, (row + s.length) * V))
          row += s.length
        }
      }
      return out
    })
  }

  /**
   * Low-level batched step (tests, custom decoding loops): appends each entry's tokens to its slot's KV cache
   * and returns the logits of each entry's last token. Slots keep their contents between calls.
   */
  async step(entries: StepEntry[], options: { signal?: AbortSignal } = {}): Promise<Float32Array[]> {
    options = optionsArg(options, 'step')
    const V = this.config.vocab
    return await this.exclusive(async () => {
      const all = (await this.runStep(entries, 'last', undefined, options.signal)) as Float32Array
      return entries.map((_, i) => all.slice(i * V, (i + 1) * V))
    })
  }

  private async runStep(entries: StepEntry[], mode: 'last' | 'all' | 'sample', sampling?: unknown, signal?: AbortSignal): Promise<unknown> {
    const addon = native()
    const h = this.live()
    const { slots } = this.memory
    for (const e of entries) {
      if (!Number.isInteger(e.slot) || e.slot < 0 || e.slot >= slots) throw invalidArg(`step: slot ${e.slot} outside [0, ${slots})`)
      if (!Array.isArray(e.tokens) || e.tokens.length === 0) throw invalidArg('step: every entry needs at least one token')
    }
    for (const e of entries) if (e.reset) addon.modelResetSlot(h, e.slot)
    const tokens = Int32Array.from(entries.flatMap((e) => e.tokens))
    const cancel = cancelFlag(signal)
    try {
      const args: unknown[] = [
        h,
        Int32Array.from(entries.map((e) => e.slot)),
        Int32Array.from(entries.map((e) => e.tokens.length)),
        tokens,
        mode
      ]
      if (mode === 'sample') args.push(sampling)
      args.push(cancel.flag)
      return await addon.modelStep(...args)
    } finally {
      cancel.dispose()
    }
  }

  async generate(prompts: string[], options: GenerateOptions = {}): Promise<Generation[][]> {
    options = optionsArg(options, 'generate')
    if (!Array.isArray(prompts) || prompts.some((p) => typeof p !== 'string'))
      throw invalidArg('generate: prompts must be an array of strings')
    const maxNew = options.maxNewTokens ?? 512
    const n = options.n ?? 1
    const temperature = options.temperature ?? 1
    if (!Number.isInteger(maxNew) || maxNew < 1) throw invalidArg(`generate: maxNewTokens must be a positive integer, got ${maxNew}`)
    if (!Number.isInteger(n) || n < 1) throw invalidArg(`generate: n must be a positive integer, got ${n}`)
    const badT = temperatureProblem(temperature)
    if (badT !== null) throw invalidArg(`generate: temperature ${badT}`)
    const topK = options.topK ?? 0
    const topP = options.topP ?? 1
    const minP = options.minP ?? 0
    const badK = topKProblem(topK)
    if (badK !== null) throw invalidArg(`generate: topK ${badK}`)
    if (!(topP > 0 && topP <= 1)) throw invalidArg(`generate: topP must be in (0, 1], got ${topP}`)
    if (!(minP >= 0 && minP <= 1)) throw invalidArg(`generate: minP must be in [0, 1], got ${minP}`)
    const stops = options.stop ?? []
    if (!Array.isArray(stops) || stops.some((s) => typeof s !== 'string' || s.length === 0))
      throw invalidArg('generate: stop must be an array of non-empty strings')
    const seed = options.seed ?? Math.floor(Math.random() * 2 ** 32)
    if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 53)
      throw invalidArg(`generate: seed must be an integer in [0, 2^53), got ${seed}`)
    const firstRow = options.firstRow ?? 0
    if (!Number.isInteger(firstRow) || firstRow < 0 || firstRow >= 2 ** 40)
      throw invalidArg(`generate: firstRow must be an integer in [0, 2^40), got ${firstRow}`)
    const signal = options.signal
    throwIfAborted(signal)

    const { slots, context } = this.memory
    const eos = new Set(this.eosTokenIds)
    const maxStop = stops.reduce((m, s) => Math.max(m, s.length), 0)
    interface Job {
      prompt: number
      sample: number
      rowId: number
      input: number[]
      ids: number[]
      logprobs: number[]
      slot: number
    }
    const encoded = prompts.map((p, i) => {
      const ids = this.tokenizer.encode(p)
      if (ids.length === 0) throw invalidArg(`generate: prompt ${i} encodes to no tokens`)
      if (ids.length >= context)
        throw invalidArg(`generate: prompt ${i} has ${ids.length} tokens; the context holds ${context} (loadModel maxContext)`)
      return ids
    })
    const results: Generation[][] = prompts.map(() => new Array<Generation>(n))
    const pending: Job[] = []
    for (let p = 0; p < prompts.length; p++)
      for (let s = 0; s < n; s++)
        pending.push({ prompt: p, sample: s, rowId: firstRow + p * n + s, input: encoded[p], ids: [], logprobs: [], slot: -1 })
    const total = pending.length
    let done = 0
    let generatedTokens = 0
    const progress = options.onProgress

    const finish = (job: Job, reason: Generation['finishReason'], text: string): void => {
      results[job.prompt][job.sample] = { text, tokenIds: job.ids, logprobs: job.logprobs, finishReason: reason }
      done++
    }
    const stopAt = (job: Job): string | null => {
      // look in a window of recent tokens first (cheap), then locate the stop string in the full text
      const tail = this.tokenizer.decode(job.ids.slice(-(maxStop + 8)), { skipSpecialTokens: true })
      if (!stops.some((s) => tail.includes(s))) return null
      const text = this.tokenizer.decode(job.ids, { skipSpecialTokens: true })
      let cut = -1
      for (const s of stops) {
        const at = text.indexOf(s)
        if (at >= 0 && (cut < 0 || at + s.length < cut)) cut = at + s.length
      }
      return cut >= 0 ? text.slice(0, cut) : null
    }

    if (total === 0) return results
    await this.exclusive(async () => {
      const free: number[] = []
      for (let s = slots - 1; s >= 0; s--) free.push(s)
      const active: Job[] = []
      while (active.length > 0 || pending.length > 0) {
        throwIfAborted(signal)
        while (free.length > 0 && pending.length > 0) {
          const job = pending.shift() as Job
          job.slot = free.pop() as number
          native().modelResetSlot(this.live(), job.slot)
          active.push(job)
        }
        // each active job feeds its next prompt chunk, or its last sampled token
        const feeds = active.map((job) => {
          const chunk = job.input.slice(0, this.prefillChunk)
          return { job, chunk, final: chunk.length === job.input.length }
        })
        const params = new Float32Array(feeds.length * 4)
        const rowIds = new Float64Array(feeds.length)
        const steps = new Float64Array(feeds.length)
        feeds.forEach((f, i) => {
          params.set([temperature, topK, topP, minP], i * 4)
          rowIds[i] = f.job.rowId
          steps[i] = f.job.ids.length
        })
        const r = (await this.runStep(
          feeds.map((f) => ({ slot: f.job.slot, tokens: f.chunk })),
          'sample',
          { params, seed, rowIds, steps },
          signal
        )) as { tokens: Int32Array; logprobs: Float32Array }
        const still: Job[] = []
        feeds.forEach((f, i) => {
          const job = f.job
          job.input = job.input.slice(f.chunk.length)
          if (!f.final) {
            still.push(job)
            return
          }
          const token = r.tokens[i]
          job.ids.push(token)
          job.logprobs.push(r.logprobs[i])
          job.input = [token]
          generatedTokens++
          let reason: Generation['finishReason'] | null = null
          let text: string | null = null
          if (eos.has(token)) reason = 'eos'
          else if (stops.length > 0 && (text = stopAt(job)) !== null) reason = 'stop'
          else if (job.ids.length >= maxNew) reason = 'length'
          else if (encoded[job.prompt].length + job.ids.length >= context) reason = 'length'
          if (reason === null) {
            still.push(job)
            return
          }
          finish(job, reason, text ?? this.tokenizer.decode(job.ids, { skipSpecialTokens: true }))
          free.push(job.slot)
        })
        active.length = 0
        active.push(...still)
        progress?.({ done, total, generatedTokens })
      }
    })
    return results
  }

  dispose(): void {
    if (this.handle !== undefined) native().modelDispose(this.handle)
    this.handle = undefined
  }
}

/** Loads a model folder (config.json, *.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json). */
export async function loadModel(dir: string, options: LoadModelOptions = {}): Promise<Model> {
  if (typeof dir !== 'string' || dir === '')
    throw invalidArg(`loadModel: dir must be a folder path, got ${dir === null ? 'null' : typeof dir}`)
  options = optionsArg(options, 'loadModel')
  const device = resolveDevice(options.device, 'loadModel')
  if (device === 'cuda' && !cudaAvailable())
    throw new RecodeError('ERR_CUDA_UNAVAILABLE', `loadModel: device 'cuda' requested but CUDA is unavailable: ${systemInfo().cuda.reason}`)
  const dtype = options.dtype ?? 'f32'
  if (dtype !== 'f32' && dtype !== 'bf16') throw invalidArg(`loadModel: dtype must be 'f32' or 'bf16', got ${JSON.stringify(dtype)}`)
  const rawConfig = readJsonFile(path.join(dir, 'config.json'))
  const config = parseModelConfig(rawConfig, path.join(dir, 'config.json'))
  const { files, weightMap } = weightFiles(dir)
  if (weightMap !== null) {
    // every tensor the index names must be in the shard it names (headers are validated on the way)
    const byFile = new Map<string, Set<string>>()
    for (const f of files) byFile.set(path.basename(f), new Set(readSafetensorsHeader(f).map((t) => t.name)))
    for (const [name, f] of weightMap) {
      if (!byFile.get(f)?.has(name))
        throw new RecodeError(
          'ERR_MODEL',
          `${path.join(dir, 'model.safetensors.index.json')}: weight_map puts '${name}' in ${f}, which does not hold it`
        )
    }
  }
  const tokenizer = loadTokenizer(dir)
  if (tokenizer.size > config.vocab)
    throw new RecodeError(
      'ERR_MODEL',
      `${path.join(dir, 'tokenizer.json')}: has ${tokenizer.size} ids but config.json vocab_size is ${config.vocab}`
    )
  const eos = eosIds(dir, rawConfig)
  const maxBatch = options.maxBatch ?? 8
  const maxContext = options.maxContext ?? Math.min(config.maxPositions, 4096)
  const prefillChunk = options.prefillChunk ?? 512
  if (!Number.isInteger(maxBatch) || maxBatch < 1 || maxBatch > 4096)
    throw invalidArg(`loadModel: maxBatch must be an integer in [1, 4096], got ${maxBatch}`)
  if (!Number.isInteger(maxContext) || maxContext < 2) throw invalidArg(`loadModel: maxContext must be an integer >= 2, got ${maxContext}`)
  if (!Number.isInteger(prefillChunk) || prefillChunk < 1)
    throw invalidArg(`loadModel: prefillChunk must be a positive integer, got ${prefillChunk}`)
  const handle = await native().modelLoad(config, files, { device, slots: maxBatch, context: maxContext, roundBf16: dtype === 'bf16' })
  return new Model(dir, config, tokenizer, eos, handle, prefillChunk)
}
