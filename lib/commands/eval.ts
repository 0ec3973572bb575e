import * as path from 'path'
import { parseArgs } from 'util'
import { RecodeError } from '../errors'
import { writeFileAtomic } from '../data/jsonl'
import { makeDir } from '../atomicFile'
import { evaluate, formatEvaluation } from '../eval/evaluate'
import type { Benchmark, EvaluateOptions } from '../eval/evaluate'
import type { IsolationKind } from '../eval/sandbox'
import type { LanguageModel } from '../model/types'
import { loadModel } from '../model/index'
import type { Command } from './types'

const usage =
  'recode eval codeupdatearena|humaneval --data FILE (--completions FILE.jsonl | --model DIR) [--output OUT.json] ' +
  '[--python P] [--k 1,5] [--samples N] [--temperature T] [--top-p P] [--max-new-tokens N] [--timeout SECONDS] ' +
  '[--concurrency N] [--memory-mb N] [--isolation auto|bwrap|unshare|rlimits] [--allow-weak-isolation] [--limit N] [--no-upass] [--quiet]'

function num(v: string | undefined, name: string, integer = false): number | undefined {
  if (v === undefined) return undefined
  const x = Number(v)
  if (v.trim() === '' || !Number.isFinite(x) || (integer && !Number.isInteger(x)))
    throw new RecodeError('ERR_INVALID_ARG', `--${name} must be a${integer ? 'n integer' : ' number'}, got '${v}'`)
  return x
}

/** A number in [min, max], so that no value switches a limit off or overflows it. */
function bounded(v: string | undefined, name: string, min: number, max: number, integer = false): number | undefined {
  const x = num(v, name, integer)
  if (x !== undefined && (x < min || x > max))
    throw new RecodeError('ERR_INVALID_ARG', `--${name} must be from ${min} to ${max}, got '${v as string}'`)
  return x
}

export const evalCommand: Command = {
  name: 'eval',
  summary: 'score completions (or a model) on CodeUpdateArena (pass@k, UPass@k) or HumanEval (pass@k) in a sandbox',
  usage,
  async run(argv) {
    let parsed
    try {
      parsed = parseArgs({
        args: argv,
        allowPositionals: true,
        options: {
          data: { type: 'string' },
          completions: { type: 'string' },
          model: { type: 'string' },
          output: { type: 'string' },
          python: { type: 'string' },
          k: { type: 'string' },
          samples: { type: 'string' },
          temperature: { type: 'string' },
          'top-p': { type: 'string' },
          'max-new-tokens': { type: 'string' },
          timeout: { type: 'string' },
          concurrency: { type: 'string' },
          'memory-mb': { type: 'string' },
          isolation: { type: 'string' },
          limit: { type: 'string' },
          'allow-weak-isolation': { type: 'boolean' },
          'no-upass': { type: 'boolean' },
          quiet: { type: 'boolean' }
        }
      })
    } catch (err) {
      throw new RecodeError('ERR_INVALID_ARG', `${(err as Error).message}; usage: ${usage}`)
    }
    const v = parsed.values
    const [benchmark, ...extra] = parsed.positionals
    if ((benchmark !== 'codeupdatearena' && benchmark !== 'humaneval') || extra.length > 0)
      throw new RecodeError('ERR_INVALID_ARG', `usage: ${usage}`)
    if (v.data === undefined) throw new RecodeError('ERR_INVALID_ARG', `--data FILE is required; usage: ${usage}`)
    if ((v.completions === undefined) === (v.model === undefined))
      throw new RecodeError('ERR_INVALID_ARG', 'give exactly one of --completions FILE.jsonl and --model DIR')
    const isolation = v.isolation ?? 'auto'
    if (!['auto', 'bwrap', 'unshare', 'rlimits'].includes(isolation))
      throw new RecodeError('ERR_INVALID_ARG', `--isolation must be auto, bwrap, unshare or rlimits, got '${isolation}'`)
    const k = v.k === undefined ? [1, 5] : v.k.split(',').map((s) => num(s.trim(), 'k', true) as number)
    // The sandbox checks its options too; here the message names the flag.
    const timeout = bounded(v.timeout, 'timeout', 0.001, Math.floor((2 ** 31 - 1) / 1000))
    const memoryMb = bounded(v['memory-mb'], 'memory-mb', 64, 2 ** 32, true)
    const options: EvaluateOptions = {
      benchmark: benchmark as Benchmark,
      data: v.data,
      k,
      samples: num(v.samples, 'samples', true),
      temperature: num(v.temperature, 'temperature'),
      topP: num(v['top-p'], 'top-p'),
      maxNewTokens: num(v['max-new-tokens'], 'max-new-tokens', true),
      limit: num(v.limit, 'limit', true),
      upass: v['no-upass'] !== true,
      sandbox: {
        python: v.python,
        timeoutMs: timeout === undefined ? undefined : timeout * 1000,
        memoryBytes: memoryMb === undefined ? undefined : memoryMb * 2 ** 20,
        concurrency: bounded(v.concurrency, 'concurrency', 1, 4096, true),
        isolation: isolation as 'auto' | IsolationKind,
        allowWeakIsolation: v['allow-weak-isolation'] === true
      }
    }
    let model: LanguageModel | undefined
    if (v.model !== undefined) {
      model = await loadModel(v.model)
      options.model = model
    } else {
      options.completions = v.completions
    }
    // Ctrl-C and SIGTERM stop the evaluation (no output file is written) with the conventional 130 / 143.
    const controller = new AbortController()
    let received: NodeJS.Signals | undefined
    const onSignal = (sig: NodeJS.Signals): void => {
      received ??= sig
      controller.abort()
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
    options.signal = controller.signal
    let lastPrint = 0
    if (v.quiet !== true) {
      options.onProgress = (p) => {
        const now = Date.now()
        if (now - lastPrint < 2000 && p.done !== p.total) return
        lastPrint = now
        process.stderr.write(`\r${p.phase}: ${p.done}/${p.total}   `)
        if (p.done === p.total) process.stderr.write('\n')
      }
    }
    try {
      const result = await evaluate(options)
      if (v.output !== undefined) {
        makeDir(path.dirname(path.resolve(v.output)), 'recode eval')
        writeFileAtomic(v.output, JSON.stringify(result, null, 2) + '\n')
      }
      console.log(formatEvaluation(result))
      if (v.output !== undefined) console.log(`-> ${v.output}`)
      return 0
    } catch (err) {
      if (received !== undefined && (err as RecodeError).code === 'ABORT_ERR') {
        process.stderr.write(`recode eval: interrupted (${received}); nothing written\n`)
        return received === 'SIGTERM' ? 143 : 130
      }
      throw err
    } finally {
      process.removeListener('SIGINT', onSignal)
      process.removeListener('SIGTERM', onSignal)
      model?.dispose()
    }
  }
}
