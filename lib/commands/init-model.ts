import { invalidArg } from '../errors'
import { initModel, PRESETS, type Preset } from '../model/init'
import type { Architecture } from '../model/config'
import type { Command } from './types'

function parse(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith('--')) throw invalidArg(`init-model: unexpected argument ${JSON.stringify(a)}`)
    if (a === '--force') {
      out.force = 'true'
      continue
    }
    const eq = a.indexOf('=')
    if (eq > 0) {
      out[a.slice(2, eq)] = a.slice(eq + 1)
      continue
    }
    const v = argv[i + 1]
    if (v === undefined || v.startsWith('--')) throw invalidArg(`init-model: ${a} needs a value`)
    out[a.slice(2)] = v
    i++
  }
  return out
}

export const initModelCommand: Command = {
  name: 'init-model',
  summary: 'write a model folder (config, random safetensors weights, BPE tokenizer, ChatML template) for tests and benchmarks',
  usage: `recode init-model --preset ${Object.keys(PRESETS).join('|')} --arch qwen2|llama|qwen3 --out DIR [--force] [--seed S] [--dtype bf16|f32]`,
  async run(argv) {
    const a = parse(argv)
    for (const k of Object.keys(a))
      if (!['preset', 'arch', 'out', 'seed', 'dtype', 'force'].includes(k)) throw invalidArg(`init-model: unknown option --${k}`)
    if (!a.out) throw invalidArg('init-model: --out DIR is required')
    const seed = a.seed === undefined ? 0 : /^[0-9]+$/.test(a.seed) ? Number(a.seed) : NaN
    if (!Number.isSafeInteger(seed) || seed < 0) throw invalidArg(`init-model: --seed must be a non-negative integer, got ${a.seed}`)
    const r = initModel({
      preset: (a.preset ?? 'tiny') as Preset,
      arch: (a.arch ?? 'qwen2') as Architecture,
      out: a.out,
      force: a.force === 'true',
      seed,
      dtype: (a.dtype ?? 'f32') as 'f32' | 'bf16'
    })
    console.log(`wrote ${r.dir}: ${r.parameters.toLocaleString('en-US')} parameters, vocabulary ${r.vocabSize}`)
    return 0
  }
}
