/**
 * `recode init-model`: writes a complete Hugging Face-style folder with random weights (config.json,
 * model.safetensors, tokenizer.json, tokenizer_config.json with a ChatML template, generation_config.json),
 * so tests, benchmarks and the embedded default run on real files of the real kind.
 */
import * as fs from 'fs'
import * as path from 'path'
import { makeDir, writeFileAtomic } from '../atomicFile'
import { invalidArg, RecodeError } from '../errors'
import type { Architecture } from './config'
import { buildByteLevelBpe, PYTHON_CORPUS } from './bpe'
import { writeFloat32Safetensors, type TensorToWrite } from '../safetensors'

export type Preset = 'tiny' | 'small' | 'qwen2.5-0.5b-shape' | 'qwen2.5-1.5b-shape'

interface Dims {
  hidden: number
  layers: number
  heads: number
  kvHeads: number
  headDim: number
  intermediate: number
  merges: number
  vocab?: number
  tie: boolean
}

/** tiny: ~0.2M parameters (fast tests); small: ~5M; qwen2.5-0.5b-shape / qwen2.5-1.5b-shape: those models' dimensions (benchmarks). */
export const PRESETS: Record<Preset, Dims> = {
  tiny: { hidden: 64, layers: 3, heads: 4, kvHeads: 2, headDim: 16, intermediate: 160, merges: 160, tie: false },
  small: { hidden: 256, layers: 6, heads: 8, kvHeads: 2, headDim: 32, intermediate: 768, merges: 4096, tie: false },
  'qwen2.5-0.5b-shape': {
    hidden: 896,
    layers: 24,
    heads: 14,
    kvHeads: 2,
    headDim: 64,
    intermediate: 4864,
    merges: 4096,
    vocab: 151936,
    tie: true
  },
  'qwen2.5-1.5b-shape': {
    hidden: 1536,
    layers: 28,
    heads: 12,
    kvHeads: 2,
    headDim: 128,
    intermediate: 8960,
    merges: 4096,
    vocab: 151936,
    tie: true
  }
}

/** ChatML, as Qwen's templates write it (default system prompt when the conversation has none). */
export const CHATML_TEMPLATE =
  '{%- for message in messages %}' +
  "{%- if loop.first and message['role'] != 'system' %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}" +
  "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  '{%- endfor %}' +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"

export interface InitModelOptions {
  preset: Preset
  arch: Architecture
  out: string
  /** Write into `out` even when it already holds files (default false: ERR_OUTPUT_EXISTS). */
  force?: boolean
  seed?: number
  dtype?: 'bf16' | 'f32'
  /** Overrides of the preset (tests use these to cover tied/untied, GQA, biases, rope scaling). */
  tieWordEmbeddings?: boolean
  kvHeads?: number
  attentionBias?: boolean
  /** Llama only: biases on gate/up/down (config mlp_bias). */
  mlpBias?: boolean
  ropeScaling?: null | { factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPosition: number }
  ropeTheta?: number
  /** Text the tokenizer's merges are learned from (default: the embedded Python corpus) and how many merges. */
  tokenizerCorpus?: string
  merges?: number
  /** Dimension overrides of the preset. */
  hidden?: number
  layers?: number
  intermediate?: number
}

/**
 * A fast reproducible stream of uniform values in [-1, 1) (xorshift128 seeded through splitmix32): weights
 * are uniform with the variance asked for, which keeps writing a 0.5B-parameter model to seconds.
 */
function uniformStream(seed: number): () => number {
  let s = seed >>> 0
  const split = (): number => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
    return (z ^ (z >>> 16)) >>> 0
  }
  let x = split() | 1
  let y = split()
  let z = split()
  let w = split()
  return () => {
    const t = x ^ (x << 11)
    x = y
    y = z
    z = w
    w = (w ^ (w >>> 19) ^ (t ^ (t >>> 8))) >>> 0
    return w / 2147483648 - 1
  }
}

/**
 * Creates `out` (failing fast where it cannot be created) and refuses one that already holds files unless
 * `force`: init-model writes config.json and model.safetensors, and would otherwise replace a trained model.
 */
function prepareOutput(out: string, force: boolean): void {
  let entries: string[] = []
  try {
    entries = fs.readdirSync(out)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOTDIR') throw new RecodeError('ERR_OUTPUT', `init-model: ${out} exists and is not a folder`)
    if (code !== 'ENOENT') throw new RecodeError('ERR_OUTPUT', `init-model: cannot read ${out} (${code ?? (err as Error).message})`)
  }
  if (entries.length > 0 && !force) {
    throw new RecodeError(
      'ERR_OUTPUT_EXISTS',
      `init-model: ${out} is not empty (${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}, e.g. ${entries[0]}); choose an empty folder or pass --force (force: true) to overwrite`
    )
  }
  makeDir(out, 'init-model')
}

export function initModel(opts: InitModelOptions): { dir: string; parameters: number; vocabSize: number } {
  if (opts === null || typeof opts !== 'object') throw invalidArg('initModel: options { preset, arch, out } are required')
  if (typeof opts.out !== 'string' || opts.out === '')
    throw invalidArg(`initModel: out must be a folder path, got ${JSON.stringify(opts.out)}`)
  const preset = PRESETS[opts.preset]
  if (preset === undefined)
    throw invalidArg(`init-model: preset must be one of ${Object.keys(PRESETS).join(', ')}, got ${JSON.stringify(opts.preset)}`)
  if (!['qwen2', 'llama', 'qwen3'].includes(opts.arch))
    throw invalidArg(`init-model: arch must be qwen2, llama or qwen3, got ${JSON.stringify(opts.arch)}`)
  const dtype = opts.dtype ?? 'f32'
  if (dtype !== 'f32' && dtype !== 'bf16') throw invalidArg(`init-model: dtype must be bf16 or f32, got ${JSON.stringify(opts.dtype)}`)
  const seed = opts.seed ?? 0
  if (!Number.isSafeInteger(seed) || seed < 0) throw invalidArg(`init-model: seed must be a non-negative integer, got ${String(opts.seed)}`)
  // The output folder first: refusing to overwrite a model, or a path the kernel cannot create in, should not
  // wait for the weights to be generated.
  prepareOutput(opts.out, opts.force === true)
  const rand = uniformStream(seed)
  const SQRT3 = Math.sqrt(3) // uniform on [-sqrt(3), sqrt(3)] has unit variance
  const dims: Dims = { ...preset }
  for (const k of ['merges', 'hidden', 'layers', 'intermediate'] as const) {
    const v = opts[k]
    if (v === undefined) continue
    if (!Number.isInteger(v) || v < 1 || v > 1 << 20) throw invalidArg(`init-model: ${k} must be a positive integer, got ${String(v)}`)
    dims[k] = v
  }
  if (dims.hidden !== preset.hidden && dims.heads * dims.headDim !== dims.hidden) dims.headDim = dims.hidden / dims.heads
  if (!Number.isInteger(dims.headDim) || dims.headDim % 2 !== 0)
    throw invalidArg(`init-model: hidden ${dims.hidden} must split into ${dims.heads} heads of an even size`)
  const tok = buildByteLevelBpe(opts.tokenizerCorpus ?? PYTHON_CORPUS, dims.merges)
  const V = Math.max(dims.vocab ?? tok.vocabSize, tok.vocabSize)
  const C = dims.hidden
  const H = dims.heads
  const Hkv = opts.kvHeads ?? dims.kvHeads
  const D = dims.headDim
  const F = dims.intermediate
  if (H % Hkv !== 0) throw invalidArg(`init-model: kvHeads ${Hkv} must divide heads ${H}`)
  const tie = opts.tieWordEmbeddings ?? dims.tie
  const attentionBias = opts.attentionBias ?? false
  const qkvBias = opts.arch === 'qwen2' || attentionBias
  const oBias = opts.arch !== 'qwen2' && attentionBias
  if (opts.mlpBias && opts.arch !== 'llama') throw invalidArg('initModel: mlpBias is a Llama option')
  const mlpBias = opts.mlpBias ?? false

  // Weights with variance 1/fan_in keep activations O(1) through the layers, so every part of the network
  // visibly moves the logits; norm weights are 1 + noise so a dropped norm weight shows.
  const tensors: TensorToWrite[] = []
  let parameters = 0
  const add = (name: string, shape: number[], std: number, mean = 0): void => {
    const n = shape.reduce((a, b) => a * b, 1)
    const data = new Float32Array(n)
    const scale = std * SQRT3
    for (let i = 0; i < n; i++) data[i] = mean + scale * rand()
    tensors.push({ name, shape, data })
    parameters += n
  }
  add('model.embed_tokens.weight', [V, C], 1)
  for (let l = 0; l < dims.layers; l++) {
    const p = `model.layers.${l}.`
    add(p + 'input_layernorm.weight', [C], 0.1, 1)
    add(p + 'self_attn.q_proj.weight', [H * D, C], 1 / Math.sqrt(C))
    add(p + 'self_attn.k_proj.weight', [Hkv * D, C], 1 / Math.sqrt(C))
    add(p + 'self_attn.v_proj.weight', [Hkv * D, C], 1 / Math.sqrt(C))
    if (qkvBias) {
      add(p + 'self_attn.q_proj.bias', [H * D], 0.1)
      add(p + 'self_attn.k_proj.bias', [Hkv * D], 0.1)
      add(p + 'self_attn.v_proj.bias', [Hkv * D], 0.1)
    }
    add(p + 'self_attn.o_proj.weight', [C, H * D], 1 / Math.sqrt(H * D))
    if (oBias) add(p + 'self_attn.o_proj.bias', [C], 0.1)
    if (opts.arch === 'qwen3') {
      add(p + 'self_attn.q_norm.weight', [D], 0.1, 1)
      add(p + 'self_attn.k_norm.weight', [D], 0.1, 1)
    }
    add(p + 'post_attention_layernorm.weight', [C], 0.1, 1)
    add(p + 'mlp.gate_proj.weight', [F, C], 1 / Math.sqrt(C))
    if (mlpBias) add(p + 'mlp.gate_proj.bias', [F], 0.1)
    add(p + 'mlp.up_proj.weight', [F, C], 1 / Math.sqrt(C))
    if (mlpBias) add(p + 'mlp.up_proj.bias', [F], 0.1)
    add(p + 'mlp.down_proj.weight', [C, F], 1 / Math.sqrt(F))
    if (mlpBias) add(p + 'mlp.down_proj.bias', [C], 0.1)
  }
  add('model.norm.weight', [C], 0.1, 1)
  if (!tie) add('lm_head.weight', [V, C], 1 / Math.sqrt(C))

  const eos = tok.specialIds['<|im_end|>']
  const eot = tok.specialIds['<|endoftext|>']
  const modelType = opts.arch
  const config: Record<string, unknown> = {
    architectures: [{ qwen2: 'Qwen2ForCausalLM', llama: 'LlamaForCausalLM', qwen3: 'Qwen3ForCausalLM' }[opts.arch]],
    model_type: modelType,
    vocab_size: V,
    hidden_size: C,
    intermediate_size: F,
    num_hidden_layers: dims.layers,
    num_attention_heads: H,
    num_key_value_heads: Hkv,
    head_dim: D,
    hidden_act: 'silu',
    max_position_embeddings: 32768,
    rms_norm_eps: 1e-6,
    rope_theta: opts.ropeTheta ?? (opts.arch === 'llama' ? 500000 : 1000000),
    rope_scaling: opts.ropeScaling
      ? {
          rope_type: 'llama3',
          factor: opts.ropeScaling.factor,
          low_freq_factor: opts.ropeScaling.lowFreqFactor,
          high_freq_factor: opts.ropeScaling.highFreqFactor,
          original_max_position_embeddings: opts.ropeScaling.originalMaxPosition
        }
      : null,
    tie_word_embeddings: tie,
    bos_token_id: eot,
    eos_token_id: eos,
    torch_dtype: dtype === 'bf16' ? 'bfloat16' : 'float32',
    use_cache: true
  }
  if (opts.arch !== 'qwen2') config.attention_bias = attentionBias
  if (opts.arch === 'llama') config.mlp_bias = mlpBias
  const addedTokensDecoder: Record<string, unknown> = {}
  for (const [content, id] of Object.entries(tok.specialIds)) {
    addedTokensDecoder[String(id)] = { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true }
  }
  const tokenizerConfig = {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: addedTokensDecoder,
    additional_special_tokens: ['<|im_start|>', '<|im_end|>'],
    bos_token: null,
    chat_template: CHATML_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    errors: 'replace',
    model_max_length: 32768,
    pad_token: '<|endoftext|>',
    split_special_tokens: false,
    tokenizer_class: 'Qwen2Tokenizer',
    unk_token: null
  }
  const generationConfig = {
    bos_token_id: eot,
    eos_token_id: [eos, eot],
    pad_token_id: eot,
    do_sample: true,
    temperature: 0.7,
    top_p: 0.8,
    top_k: 20
  }

  const writeJson = (name: string, value: unknown): void => {
    writeFileAtomic(path.join(opts.out, name), JSON.stringify(value, null, 2) + '\n')
  }
  writeFloat32Safetensors(path.join(opts.out, 'model.safetensors'), tensors, dtype === 'bf16' ? 'BF16' : 'F32')
  writeJson('config.json', config)
  writeJson('generation_config.json', generationConfig)
  writeJson('tokenizer.json', tok.tokenizerJson)
  writeJson('tokenizer_config.json', tokenizerConfig)
  return { dir: opts.out, parameters, vocabSize: V }
}
