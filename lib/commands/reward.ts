/**
 * `recode reward --input IN.jsonl [--output OUT.jsonl] [--python P]`: scores each line's `completion`
 * against its `target` and writes the line back with `format`, `es_star`, `em_star` and `reward`
 * (= format + es_star). The whole input is checked before anything is written (UTF-8, JSON, fields,
 * the length cap); the output goes to a temporary file in the same folder, renamed into place at the end,
 * and removed on any error, Ctrl-C or SIGTERM. To stdout, lines are written batch by batch.
 */
import * as fs from 'fs'
import * as path from 'path'
import { tempNameFor, fsyncDir } from '../atomicFile'
import { decodeUtf8 } from '../data/jsonl'
import { RecodeError } from '../errors'
import { DEFAULT_MAX_REWARD_CHARS, score } from '../reward'
import type { Command } from './types'

interface RewardRow {
  fields: Record<string, unknown>
  completion: string
  target: string
}

interface RewardArgs {
  input: string
  output?: string
  python?: string
  maxChars: number
}

function parseArgs(argv: string[]): RewardArgs {
  const values: Record<string, string> = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const eq = arg.indexOf('=')
    const name = eq >= 0 ? arg.slice(0, eq) : arg
    if (name !== '--input' && name !== '--output' && name !== '--python' && name !== '--max-chars') {
      throw new RecodeError('ERR_INVALID_ARG', `recode reward: unknown argument '${arg}' (usage: ${reward.usage})`)
    }
    const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i]
    if (value === undefined || value === '') throw new RecodeError('ERR_INVALID_ARG', `recode reward: ${name} needs a value`)
    values[name.slice(2)] = value
  }
  if (values.input === undefined) throw new RecodeError('ERR_INVALID_ARG', `recode reward: --input is required (usage: ${reward.usage})`)
  let maxChars = DEFAULT_MAX_REWARD_CHARS
  if (values['max-chars'] !== undefined) {
    const v = values['max-chars']
    maxChars = v === 'inf' || v === 'Infinity' ? Infinity : /^[0-9]+$/.test(v) ? Number(v) : NaN
    if (!(maxChars === Infinity || (Number.isSafeInteger(maxChars) && maxChars >= 1))) {
      throw new RecodeError('ERR_INVALID_ARG', `recode reward: --max-chars must be a positive integer or 'inf', got '${v}'`)
    }
  }
  return { input: values.input, output: values.output, python: values.python, maxChars }
}

/**
 * Every non-blank line of a JSONL file as {completion, target}; the first bad line (invalid UTF-8, not JSON,
 * wrong fields, a completion or target longer than maxChars) is an ERR_DATA naming file:line.
 */
export function readRewardRows(file: string, maxChars = DEFAULT_MAX_REWARD_CHARS): RewardRow[] {
  let bytes: Buffer
  try {
    bytes = fs.readFileSync(file)
  } catch (err) {
    throw new RecodeError('ERR_DATA', `${file}: cannot read (${(err as Error).message})`)
  }
  const text = decodeUtf8(bytes, file)
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
      if (typeof fields[name] !== 'string')
        throw new RecodeError(
          'ERR_DATA',
          `${where}: field "${name}" must be a string, got ${fields[name] === null ? 'null' : typeof fields[name]}`
        )
      const n = (fields[name] as string).length
      if (n > maxChars)
        throw new RecodeError(
          'ERR_DATA',
          `${where}: field "${name}" is ${n} characters, above the cap of ${maxChars} (--max-chars; the edit distance grows with the product of the lengths)`
        )
    }
    // The line is written back with the scores added: a value JSON.stringify cannot write (nesting deeper
    // than the stack) is refused now, naming the line, rather than as a RangeError after the scoring.
    try {
      JSON.stringify(fields)
    } catch (err) {
      throw new RecodeError('ERR_DATA', `${where}: cannot be written back (${(err as Error).message}; is it nested too deeply?)`)
    }
    rows.push({ fields, completion: fields.completion as string, target: fields.target as string })
  }
  return rows
}

/** Rows per scoring call, and the edit-distance work (sum of |completion| x |target|) that ends a batch early. */
const BATCH = 4096
const BATCH_CELLS = 4e9
/** Above this much edit-distance work in all, progress is reported even when the output goes to stdout. */
const PROGRESS_CELLS = 2e10

/**
 * Ctrl-C (SIGINT) and SIGTERM abort the scoring instead of killing the process in the middle of a write:
 * the command then removes its temporary file and exits with the usual 130 / 143.
 */
function abortOnSignals(): { signal: AbortSignal; received: () => NodeJS.Signals | null; dispose: () => void } {
  const controller = new AbortController()
  let received: NodeJS.Signals | null = null
  const handler = (sig: NodeJS.Signals): void => {
    if (received !== null) return
    received = sig
    process.stderr.write(`recode reward: ${sig}, stopping\n`)
    controller.abort()
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
  return {
    signal: controller.signal,
    received: () => received,
    dispose: () => {
      process.off('SIGINT', handler)
      process.off('SIGTERM', handler)
    }
  }
}

export const reward: Command = {
  name: 'reward',
  summary: 'score completions against targets with the ReCode reward (format, ES*, EM*)',
  usage: 'recode reward --input IN.jsonl [--output OUT.jsonl] [--python P] [--max-chars N|inf]',
  async run(argv) {
    const args = parseArgs(argv)
    const rows = readRewardRows(args.input, args.maxChars)
    const signals = abortOnSignals()
    let tmp: string | undefined
    let fd: number | undefined
    try {
      let totalCells = 0
      for (const r of rows) totalCells += r.completion.length * r.target.length
      const showProgress = rows.length > BATCH || totalCells > PROGRESS_CELLS
      const target = args.output === undefined ? undefined : path.resolve(args.output)
      if (target !== undefined) {
        tmp = tempNameFor(target)
        try {
          fd = fs.openSync(tmp, 'w')
        } catch (err) {
          tmp = undefined
          throw new RecodeError('ERR_DATA', `${args.output}: cannot write (${(err as Error).message})`)
        }
      }
      let done = 0
      let doneCells = 0
      for (let start = 0; start < rows.length; ) {
        // A batch ends at BATCH rows or BATCH_CELLS of edit-distance work, so that progress and Ctrl-C are
        // seen between batches even when single pairs are long.
        let end = start
        let cells = 0
        while (
          end < rows.length &&
          end - start < BATCH &&
          (end === start || cells + rows[end].completion.length * rows[end].target.length <= BATCH_CELLS)
        ) {
          cells += rows[end].completion.length * rows[end].target.length
          end++
        }
        const batch = rows.slice(start, end)
        const r = await score(
          batch.map((x) => x.completion),
          batch.map((x) => x.target),
          { python: args.python, signal: signals.signal, maxChars: args.maxChars }
        )
        const lines: string[] = new Array(batch.length)
        for (let k = 0; k < batch.length; k++) {
          lines[k] =
            JSON.stringify({ ...batch[k].fields, format: r.format[k], es_star: r.esStar[k], em_star: r.emStar[k], reward: r.reward[k] }) +
            '\n'
        }
        const text = lines.join('')
        if (fd !== undefined) fs.writeSync(fd, text)
        else await writeStdout(text)
        done = end
        doneCells += cells
        start = end
        if (showProgress) {
          const pct = totalCells > 0 ? ` (${((100 * doneCells) / totalCells).toFixed(0)}% of the edit-distance work)` : ''
          process.stderr.write(`recode reward: ${done}/${rows.length} scored${pct}\n`)
        }
      }
      if (fd !== undefined && tmp !== undefined && target !== undefined) {
        fs.fsyncSync(fd)
        fs.closeSync(fd)
        fd = undefined
        fs.renameSync(tmp, target)
        tmp = undefined
        fsyncDir(path.dirname(target))
        process.stderr.write(`recode reward: ${rows.length} lines scored -> ${args.output}\n`)
      }
      return 0
    } catch (err) {
      const sig = signals.received()
      if (sig !== null && (err as { code?: string }).code === 'ABORT_ERR') {
        process.stderr.write(
          `recode reward: interrupted; ${args.output === undefined ? 'the lines written so far are complete' : `nothing written to ${args.output}`}\n`
        )
        return sig === 'SIGINT' ? 130 : 143
      }
      throw err
    } finally {
      signals.dispose()
      if (fd !== undefined) fs.closeSync(fd)
      if (tmp !== undefined) fs.rmSync(tmp, { force: true })
    }
  }
}

/** Writes to stdout and waits for it to drain (a slow reader slows the scoring rather than filling memory). */
async function writeStdout(text: string): Promise<void> {
  await new Promise<void>((resolve, reject) => process.stdout.write(text, (err) => (err ? reject(err) : resolve())))
}
