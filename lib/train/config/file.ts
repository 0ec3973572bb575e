/**
 * The configuration as a JSON file (errors name the file, and line:column for syntax errors) and its identity:
 * the canonical JSON and hash that checkpoint manifests store.
 */
import * as fs from 'fs'
import * as path from 'path'
import { createHash } from 'crypto'
import { RecodeError } from '../../errors'
import type { TrainConfig } from './schema'
import { isPlainObject, show, validateTrainConfig, type ValidateOptions } from './validate'

/**
 * Reads a JSON configuration file and validates it. Errors name the file (and line:column for JSON syntax
 * errors). Relative `model`, `data` and `outputDir` paths are resolved against the file's folder.
 */
export function loadTrainConfigFile(file: string, overrides: Record<string, unknown> = {}, options: ValidateOptions = {}): TrainConfig {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw new RecodeError(
      'ERR_CONFIG',
      `${file}: cannot read the configuration file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`
    )
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    const msg = (err as Error).message
    const pos = /position (\d+)/.exec(msg)?.[1] ?? jsonErrorOffset(text)
    let where = ''
    if (pos !== undefined) {
      const before = text.slice(0, Number(pos))
      const line = before.split('\n').length
      const col = Number(pos) - before.lastIndexOf('\n')
      where = `:${line}:${col}`
    }
    throw new RecodeError('ERR_CONFIG', `${file}${where}: invalid JSON (${msg})`)
  }
  if (!isPlainObject(raw)) throw new RecodeError('ERR_CONFIG', `${file}: the configuration must be a JSON object, got ${show(raw)}`)
  const dir = path.dirname(path.resolve(file))
  const merged: Record<string, unknown> = { ...raw, ...overrides }
  for (const key of ['model', 'data', 'outputDir']) {
    const v = merged[key]
    if (
      typeof v === 'string' &&
      v !== '' &&
      key in raw &&
      !(key in overrides) &&
      !path.isAbsolute(v) &&
      !(key === 'model' && (v === 'tiny' || v === 'nova-base')) &&
      !(key === 'data' && v === 'synthetic')
    ) {
      merged[key] = path.join(dir, v)
    }
  }
  try {
    return validateTrainConfig(merged, options)
  } catch (err) {
    if (err instanceof RecodeError) throw new RecodeError(err.code, `${file}: ${err.message}`)
    throw err
  }
}

/**
 * Offset of the first character at which `text` stops being JSON (for line:column in errors; some Node
 * versions do not report a position). A small recursive-descent scan of the JSON grammar.
 */
export function jsonErrorOffset(text: string): number | undefined {
  let i = 0
  const ws = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++
  }
  const fail = (): never => {
    throw i
  }
  const literal = (word: string): void => {
    if (text.startsWith(word, i)) i += word.length
    else fail()
  }
  const str = (): void => {
    if (text[i] !== '"') fail()
    i++
    while (i < text.length && text[i] !== '"') {
      if (text[i] === '\\') i++
      else if (text.charCodeAt(i) < 0x20) fail()
      i++
    }
    if (i >= text.length) fail()
    i++
  }
  const number = (): void => {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i))
    if (!m) fail()
    i += m![0].length
  }
  const value = (): void => {
    ws()
    const c = text[i]
    if (c === '{') {
      i++
      ws()
      if (text[i] === '}') {
        i++
        return
      }
      for (;;) {
        ws()
        str()
        ws()
        if (text[i] !== ':') fail()
        i++
        value()
        ws()
        if (text[i] === ',') {
          i++
          continue
        }
        if (text[i] === '}') {
          i++
          return
        }
        fail()
      }
    } else if (c === '[') {
      i++
      ws()
      if (text[i] === ']') {
        i++
        return
      }
      for (;;) {
        value()
        ws()
        if (text[i] === ',') {
          i++
          continue
        }
        if (text[i] === ']') {
          i++
          return
        }
        fail()
      }
    } else if (c === '"') str()
    else if (c === 't') literal('true')
    else if (c === 'f') literal('false')
    else if (c === 'n') literal('null')
    else number()
  }
  try {
    value()
    ws()
    return i < text.length ? i : undefined
  } catch (at) {
    return typeof at === 'number' ? Math.min(at, text.length) : undefined
  }
}

/** Canonical JSON of the configuration (sorted keys) and its SHA-256, stored in checkpoint manifests. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (isPlainObject(value)) {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`)
      .join(',')}}`
  }
  return JSON.stringify(value) ?? 'null'
}

/** Hash of the fields that decide the training trajectory (where and how often it is saved excluded: a run may be moved). */
export function configHash(config: TrainConfig): string {
  const { outputDir, checkpointEvery, keepCheckpoints, evalEvery, divergencePatience, ...rest } = config
  return createHash('sha256')
    .update(canonicalJson(withoutDefaultObjectives(rest)))
    .digest('hex')
}

/** TRL's objective fields (issue 16) at their defaults leave the hash as it was before they existed, so runs
 * checkpointed earlier still resume. */
function withoutDefaultObjectives(c: Record<string, unknown>): Record<string, unknown> {
  const defaults: Record<string, unknown> = {
    lossType: null,
    importanceSamplingLevel: 'token',
    delta: null,
    sapoTemperaturePos: 1.0,
    sapoTemperatureNeg: 1.05,
    maskTruncatedCompletions: false,
    topEntropyQuantile: 1.0,
    entropyCoef: 0,
    rolloutCorrection: null
  }
  const out = { ...c }
  for (const [k, v] of Object.entries(defaults)) if (out[k] === v) delete out[k]
  return out
}
