/**
 * `recode reward --input IN.jsonl [--output OUT.jsonl] [--python P]`: scores each line's `completion`
 * against its `target` and writes the line back with `format`, `es_star`, `em_star` and `reward`
 * (= format + es_star). The whole input is checked before anything is written; the output goes to a
 * temporary file in the same folder, renamed into place at the end.
 */
import * as fs from 'fs'
import * as path from 'path'
import { writeFileAtomic } from '../atomicFile'
import { RecodeError } from '../errors'
import { score } from '../reward'
import type { Command } from './types'

interface RewardRow {
  fields: Record<string, unknown>
  completion: string
  target: string
}

function parseArgs (argv: string[]): { input: string, output?: string, python?: string } {
  const values: Record<string, string> = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const eq = arg.indexOf('=')
    const name = eq >= 0 ? arg.slice(0, eq) : arg
    if (name !== '--input' && name !== '--output' && name !== '--python') {
      throw new RecodeError('ERR_INVALID_ARG', `recode reward: unknown argument '${arg}' (usage: ${reward.usage})`)
    }
    const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i]
    if (value === undefined || value === '') throw new RecodeError('ERR_INVALID_ARG', `recode reward: ${name} needs a value`)
    values[name.slice(2)] = value
  }
  if (values.input === undefined) throw new RecodeError('ERR_INVALID_ARG', `recode reward: --input is required (usage: ${reward.usage})`)
  return { input: values.input, output: values.output, python: values.python }
}

/** Every non-blank line of a JSONL file as {completion, target}; the first bad line is an ERR_DATA naming file:line. */
export function readRewardRows (file: string): RewardRow[] {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw new RecodeError('ERR_DATA', `${file}: cannot read (${(err as Error).message})`)
  }
  const rows: RewardRow[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() === '') continue
    const where = `${file}:${i + 1}`
    let value: unknown
    try {
      value = JSON.parse(lines[i])
    } catch (err) {
      throw new RecodeError('ERR_DATA', `${where}: not a JSON line (${(err as Error).message})`)
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new RecodeError('ERR_DATA', `${where}: expected a JSON object with "completion" and "target"`)
    }
    const fields = value as Record<string, unknown>
    for (const name of ['completion', 'target']) {
      if (!(name in fields)) throw new RecodeError('ERR_DATA', `${where}: field "${name}" is missing`)
      if (typeof fields[name] !== 'string') throw new RecodeError('ERR_DATA', `${where}: field "${name}" must be a string, got ${fields[name] === null ? 'null' : typeof fields[name]}`)
    }
    rows.push({ fields, completion: fields.completion as string, target: fields.target as string })
  }
  return rows
}

const BATCH = 4096

export const reward: Command = {
  name: 'reward',
  summary: 'score completions against targets with the ReCode reward (format, ES*, EM*)',
  usage: 'recode reward --input IN.jsonl [--output OUT.jsonl] [--python P]',
  async run (argv) {
    const args = parseArgs(argv)
    const rows = readRewardRows(args.input)
    const out: string[] = new Array(rows.length)
    for (let start = 0; start < rows.length; start += BATCH) {
      const batch = rows.slice(start, start + BATCH)
      const r = await score(batch.map((x) => x.completion), batch.map((x) => x.target), { python: args.python })
      for (let k = 0; k < batch.length; k++) {
        out[start + k] = JSON.stringify({ ...batch[k].fields, format: r.format[k], es_star: r.esStar[k], em_star: r.emStar[k], reward: r.reward[k] })
      }
      if (args.output !== undefined && rows.length > BATCH) process.stderr.write(`recode reward: ${Math.min(start + BATCH, rows.length)}/${rows.length} scored\n`)
    }
    const text = out.length > 0 ? out.join('\n') + '\n' : ''
    if (args.output === undefined) {
      await new Promise<void>((resolve, reject) => process.stdout.write(text, (err) => (err ? reject(err) : resolve())))
      return 0
    }
    const target = path.resolve(args.output)
    try {
      writeFileAtomic(target, text)
    } catch (err) {
      throw new RecodeError('ERR_DATA', `${args.output}: cannot write (${(err as Error).message})`)
    }
    process.stderr.write(`recode reward: ${rows.length} lines scored -> ${args.output}\n`)
    return 0
  }
}
