/**
 * Reading a Hugging Face model folder's JSON files: config.json (validated into the plain struct the native
 * model takes), generation_config.json (EOS ids) and the safetensors file list (single file or shards
 * through model.safetensors.index.json). Every error is ERR_MODEL and names the file and field.
 */
import * as fs from 'fs'
import * as path from 'path'
import { RecodeError } from '../errors'

export type Architecture = 'qwen2' | 'llama' | 'qwen3'

/** The native model's view of config.json. */
export interface NativeModelConfig {
  arch: Architecture
  vocab: number
  hidden: number
  layers: number
  heads: number
  kvHeads: number
  headDim: number
  intermediate: number
  eps: number
  ropeTheta: number
  ropeScaling: null | { factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPosition: number }
  tieEmbeddings: boolean
  qkvBias: boolean
  oBias: boolean
  mlpBias: boolean
  qkNorm: boolean
  maxPositions: number
}

const ARCHITECTURES: Record<string, Architecture> = {
  Qwen2ForCausalLM: 'qwen2',
  LlamaForCausalLM: 'llama',
  Qwen3ForCausalLM: 'qwen3'
}

const LIMITS: Record<string, number> = {
  vocab_size: 1 << 24,
  hidden_size: 1 << 16,
  num_hidden_layers: 1024,
  num_attention_heads: 1024,
  num_key_value_heads: 1024,
  head_dim: 1024,
  intermediate_size: 1 << 18,
  max_position_embeddings: 1 << 24
}

function modelError(file: string, what: string): RecodeError {
  return new RecodeError('ERR_MODEL', `${file}: ${what}`)
}

/** Reads and parses a JSON file; missing file or bad JSON -> ERR_MODEL naming the file. */
export function readJsonFile(file: string): any {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw modelError(file, `cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
  }
  try {
    return JSON.parse(text)
  } catch (err) {
    throw modelError(file, `is not valid JSON (${(err as Error).message})`)
  }
}

export function parseModelConfig(raw: any, file = 'config.json'): NativeModelConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw modelError(file, 'must be a JSON object')
  const archs = raw.architectures
  if (!Array.isArray(archs) || archs.length === 0 || typeof archs[0] !== 'string')
    throw modelError(file, '"architectures" must be a non-empty list of names')
  const arch = ARCHITECTURES[archs[0]]
  if (arch === undefined) {
    throw modelError(
      file,
      `architecture ${JSON.stringify(archs[0])} is not supported (recode runs ${Object.keys(ARCHITECTURES).join(', ')})`
    )
  }
  // Upper bounds are what the native model accepts (src/node/model_binding.cpp), far above any released
  // model: a value beyond them is a corrupt config.json and is reported against it, not as a bad argument.
  const int = (name: string, fallback?: number): number => {
    const v = raw[name] ?? fallback
    const max = LIMITS[name] ?? Number.MAX_SAFE_INTEGER
    if (!Number.isInteger(v) || v <= 0 || v > max)
      throw modelError(
        file,
        `"${name}" must be a positive integer${max < Number.MAX_SAFE_INTEGER ? ` up to ${max}` : ''}, got ${JSON.stringify(raw[name])}`
      )
    return v
  }
  const num = (name: string, fallback?: number): number => {
    const v = raw[name] ?? fallback
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
      throw modelError(file, `"${name}" must be a positive number, got ${JSON.stringify(raw[name])}`)
    return v
  }
  const bool = (name: string, fallback: boolean): boolean => {
    const v = raw[name] ?? fallback
    if (typeof v !== 'boolean') throw modelError(file, `"${name}" must be true or false, got ${JSON.stringify(raw[name])}`)
    return v
  }
  const act = raw.hidden_act ?? 'silu'
  if (act !== 'silu') throw modelError(file, `"hidden_act" ${JSON.stringify(act)} is not supported (only silu)`)
  const hidden = int('hidden_size')
  const heads = int('num_attention_heads')
  const kvHeads = int('num_key_value_heads', heads)
  if (heads % kvHeads !== 0)
    throw modelError(file, `"num_attention_heads" (${heads}) must be a multiple of "num_key_value_heads" (${kvHeads})`)
  const headDim = raw.head_dim == null ? hidden / heads : int('head_dim')
  if (!Number.isInteger(headDim) || headDim % 2 !== 0 || headDim > LIMITS.head_dim)
    throw modelError(file, `head dim ${headDim} must be an even integer (hidden_size / num_attention_heads, or "head_dim")`)
  let ropeScaling: NativeModelConfig['ropeScaling'] = null
  const rs = raw.rope_scaling
  if (rs != null) {
    if (typeof rs !== 'object') throw modelError(file, '"rope_scaling" must be null or an object')
    const type = rs.rope_type ?? rs.type
    if (type === 'default') {
      ropeScaling = null
    } else if (type === 'llama3') {
      const f = (k: string): number => {
        if (typeof rs[k] !== 'number' || !(rs[k] > 0) || !Number.isFinite(rs[k]))
          throw modelError(file, `"rope_scaling.${k}" must be a positive number`)
        return rs[k]
      }
      ropeScaling = {
        factor: f('factor'),
        lowFreqFactor: f('low_freq_factor'),
        highFreqFactor: f('high_freq_factor'),
        originalMaxPosition: f('original_max_position_embeddings')
      }
      if (ropeScaling.highFreqFactor <= ropeScaling.lowFreqFactor)
        throw modelError(file, '"rope_scaling.high_freq_factor" must exceed low_freq_factor')
    } else {
      throw modelError(file, `"rope_scaling" type ${JSON.stringify(type)} is not supported (null or llama3)`)
    }
  }
  const attentionBias = bool('attention_bias', false)
  return {
    arch,
    vocab: int('vocab_size'),
    hidden,
    layers: int('num_hidden_layers'),
    heads,
    kvHeads,
    headDim,
    intermediate: int('intermediate_size'),
    eps: num('rms_norm_eps', 1e-6),
    ropeTheta: num('rope_theta', 10000),
    ropeScaling,
    tieEmbeddings: bool('tie_word_embeddings', false), // the default of Qwen2Config, LlamaConfig and Qwen3Config
    // Qwen2 always has q/k/v biases and no o bias; Llama and Qwen3 put `attention_bias` on all four.
    qkvBias: arch === 'qwen2' ? true : attentionBias,
    oBias: arch === 'qwen2' ? false : attentionBias,
    mlpBias: arch === 'llama' ? bool('mlp_bias', false) : false,
    qkNorm: arch === 'qwen3',
    maxPositions: int('max_position_embeddings', 32768)
  }
}

/** EOS ids from generation_config.json (int or list), falling back to config.json's eos_token_id. */
export function eosIds(dir: string, config: any): number[] {
  const file = path.join(dir, 'generation_config.json')
  let v: unknown
  if (fs.existsSync(file)) {
    const g = readJsonFile(file)
    if (g === null || typeof g !== 'object') throw modelError(file, 'must be a JSON object')
    v = g.eos_token_id
    if (v == null) v = config.eos_token_id
  } else {
    v = config.eos_token_id
  }
  if (v == null) return []
  const list = Array.isArray(v) ? v : [v]
  for (const id of list)
    if (!Number.isInteger(id) || id < 0)
      throw modelError(file, `eos_token_id must be an integer or a list of integers, got ${JSON.stringify(v)}`)
  return list as number[]
}

/** The safetensors files of a folder: the shards named by model.safetensors.index.json, else model.safetensors. */
export function weightFiles(dir: string): { files: string[]; weightMap: Map<string, string> | null } {
  const index = path.join(dir, 'model.safetensors.index.json')
  if (fs.existsSync(index)) {
    const j = readJsonFile(index)
    const map = j?.weight_map
    if (map === null || typeof map !== 'object' || Array.isArray(map))
      throw modelError(index, '"weight_map" must be an object of tensor name -> file')
    const weightMap = new Map<string, string>()
    for (const [name, f] of Object.entries(map)) {
      if (typeof f !== 'string' || f.includes('/') || f.includes('\\') || !f.endsWith('.safetensors'))
        throw modelError(index, `weight_map["${name}"] must be a .safetensors file name in the folder, got ${JSON.stringify(f)}`)
      weightMap.set(name, f)
    }
    const files = [...new Set(weightMap.values())].sort().map((f) => path.join(dir, f))
    for (const f of files) if (!fs.existsSync(f)) throw modelError(index, `names shard ${path.basename(f)}, which is missing from ${dir}`)
    if (files.length === 0) throw modelError(index, 'weight_map is empty')
    return { files, weightMap }
  }
  const single = path.join(dir, 'model.safetensors')
  if (!fs.existsSync(single)) throw new RecodeError('ERR_MODEL', `${dir}: no model.safetensors or model.safetensors.index.json`)
  return { files: [single], weightMap: null }
}
