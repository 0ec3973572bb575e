/**
 * Command-line flags as raw configuration overrides: one flag per field, named after it in kebab case.
 */
import { RecodeError } from '../../errors'
import { trainPreset } from './presets'
import { didYouMean, isPlainObject } from './validate'

const kebab = (s: string): string => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
const camel = (s: string): string => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())

/** Fields that may be null (given as `null`, `none` or `off` on the command line). */
const NULLABLE = new Set(['warmupSteps', 'warmupRatio', 'dualClip', 'delta'])
/** Nullable fields given as text (`--loss-type cispo`, `--loss-type off`). */
const NULLABLE_TEXT = new Set(['lossType'])
/** Object fields given as mode,level,c (`--rollout-correction truncate,token,2`; `off` for null). */
const ROLLOUT_CORRECTION = 'rolloutCorrection'
/** true/false fields whose null default means "decide from the rest" (given as `auto` or `null`). */
const BOOL_OR_AUTO = new Set(['zero1'])

/**
 * Turns command-line flags into raw configuration overrides (for validateTrainConfig or loadTrainConfigFile):
 * `--learning-rate 1e-5`, `--learning-rate=1e-5`, `--adapter.r 8`, `--adapter.target-modules q_proj,v_proj`,
 * `--dynamic-sampling` / `--no-dynamic-sampling`, `--dual-clip off`. Values are typed after the field they set;
 * range checks are validateTrainConfig's. Unknown flags are ERR_CONFIG errors with a did-you-mean.
 */
export function trainFlagsToConfig(argv: readonly string[]): Record<string, unknown> {
  if (!Array.isArray(argv) || !argv.every((x) => typeof x === 'string'))
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `trainFlagsToConfig: argv must be an array of strings, got ${argv === null ? 'null' : Array.isArray(argv) ? 'an array with a non-string' : typeof argv}`
    )
  const shape = trainPreset('tiny') as unknown as Record<string, unknown>
  const known: string[] = []
  for (const [k, v] of Object.entries(shape)) {
    if (isPlainObject(v)) for (const sub of Object.keys(v)) known.push(`${k}.${sub}`)
    else known.push(k)
  }
  const out: Record<string, unknown> = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (!arg.startsWith('--'))
      throw new RecodeError('ERR_CONFIG', `unexpected argument ${JSON.stringify(arg)} (options look like --learning-rate 1e-5)`)
    let [name, value] = arg.slice(2).split(/=(.*)/s, 2) as [string, string | undefined]
    let negated = false
    if (name.startsWith('no-') && !known.includes(camelPath(name)) && known.includes(camelPath(name.slice(3)))) {
      negated = true
      name = name.slice(3)
    }
    const key = camelPath(name)
    if (!known.includes(key)) {
      const hint = didYouMean(key, known)
      throw new RecodeError('ERR_CONFIG', `unknown option --${name}${hint ? ` (did you mean --${kebabPath(hint)}?)` : ''}`)
    }
    const [top, sub] = key.split('.')
    const current = sub ? (shape[top] as Record<string, unknown>)[sub] : shape[top]
    if (BOOL_OR_AUTO.has(key) && value === undefined && /^(auto|null)$/.test(argv[i + 1] ?? '')) {
      i++
      set(out, top, sub, null)
      continue
    }
    if (BOOL_OR_AUTO.has(key) && value !== undefined && /^(auto|null)$/.test(value)) {
      set(out, top, sub, null)
      continue
    }
    if (typeof current === 'boolean' || BOOL_OR_AUTO.has(key)) {
      if (value === undefined && argv[i + 1] !== undefined && /^(true|false)$/.test(argv[i + 1])) value = argv[++i]
      if (value !== undefined && !/^(true|false)$/.test(value))
        throw new RecodeError('ERR_CONFIG', `option --${name} takes true or false, got ${JSON.stringify(value)}`)
      const b = value === undefined ? true : value === 'true'
      set(out, top, sub, negated ? !b : b)
      continue
    }
    if (negated) throw new RecodeError('ERR_CONFIG', `option --no-${name}: only true/false options can be negated`)
    if (value === undefined) {
      if (i + 1 >= argv.length || (argv[i + 1].startsWith('--') && !/^--?\d/.test(argv[i + 1])))
        throw new RecodeError('ERR_CONFIG', `option --${name} needs a value`)
      value = argv[++i]
    }
    let parsed: unknown = value
    if ((NULLABLE_TEXT.has(key) || key === ROLLOUT_CORRECTION) && /^(null|none|off)$/i.test(value)) parsed = null
    else if (key === ROLLOUT_CORRECTION) {
      const [mode, level, c] = value.split(',').map((x) => x.trim())
      parsed = { mode, level, c: Number(c) }
    } else if (NULLABLE.has(key) && /^(null|none|off)$/i.test(value)) parsed = null
    else if (typeof current === 'number' || (current === null && NULLABLE.has(key))) {
      parsed = Number(value)
      if (value.trim() === '' || !Number.isFinite(parsed))
        throw new RecodeError('ERR_CONFIG', `option --${name} takes a number, got ${JSON.stringify(value)}`)
    } else if (Array.isArray(current))
      parsed = value
        .split(',')
        .map((x) => x.trim())
        .filter((x) => x !== '')
    set(out, top, sub, parsed)
  }
  return out
}

function camelPath(name: string): string {
  return name.split('.').map(camel).join('.')
}
function kebabPath(name: string): string {
  return name.split('.').map(kebab).join('.')
}
function set(out: Record<string, unknown>, top: string, sub: string | undefined, value: unknown): void {
  if (sub === undefined) {
    out[top] = value
    return
  }
  const obj = (out[top] ?? {}) as Record<string, unknown>
  obj[sub] = value
  out[top] = obj
}
