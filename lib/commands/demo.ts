import * as path from 'path'
import { parseArgs } from 'util'
import { makeDir, writeFileAtomic } from '../atomicFile'
import { loadModel } from '../model/index'
import { demoBaseDir } from '../demo/models'
import { closePythonWorkers } from '../reward'
import { evaluateHeldOutDetailed, examplesText, oldCodeLine, oldCodeScores, pickExamples } from '../train/heldout'
import { syntheticTasks } from '../train/synthetic'
import type { Command } from './types'

/**
 * The embedded default's evaluation on a fresh machine: the shipped demo base model (or --model DIR), the
 * held-out synthetic API-update tasks of the demo preset (updates absent from training), ReCode's prompt, batched generation and the ReCode reward. With --trained DIR
 * a trained model (a run's model/ folder) is scored on the same tasks as "after". Prints a few tasks side by side
 * (old code, update note, target, each model's answer) and writes <run>/summary.json as
 * {"before": {formatRate, esStar, exactMatch, reward}, "after"?: {...}, "examples": [...]} and says where the run is.
 */
export const demo: Command = {
  name: 'demo',
  summary: 'embedded default: score the demo base model (and --trained DIR) on held-out API-update tasks, side by side',
  usage: 'recode demo [--model DIR] [--trained DIR] [--out RUN_DIR] [--tasks N] [--examples N] [--seed S] [--max-new-tokens N]',
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        model: { type: 'string' },
        trained: { type: 'string' },
        out: { type: 'string' },
        examples: { type: 'string', default: '3' },
        tasks: { type: 'string', default: '64' },
        seed: { type: 'string', default: '1' },
        'max-new-tokens': { type: 'string', default: '160' }
      }
    })
    const seed = Number(values.seed)
    const tasks = Number(values.tasks)
    const maxNewTokens = Number(values['max-new-tokens'])
    const exampleCount = Number(values.examples)
    for (const [name, v] of [
      ['--examples', exampleCount],
      ['--seed', seed],
      ['--tasks', tasks],
      ['--max-new-tokens', maxNewTokens]
    ] as const) {
      if (!Number.isInteger(v) || v < (name === '--seed' || name === '--examples' ? 0 : 1))
        throw new Error(
          `recode demo: ${name} must be a ${name === '--seed' || name === '--examples' ? 'non-negative' : 'positive'} integer`
        )
    }
    const runDir = path.resolve(values.out ?? path.join('runs', `demo-${new Date().toISOString().replace(/[:.]/g, '-')}`))
    makeDir(runDir, 'recode demo')
    const modelDir = values.model ?? demoBaseDir()
    console.log(
      `model:    ${modelDir}${values.model === undefined ? ' (the shipped demo base model: old nova API, code editing, no update notes)' : ''}`
    )
    const { heldOut } = syntheticTasks({ seed, train: 0, heldOut: tasks })
    console.log(`tasks:    ${heldOut.length} held-out synthetic API updates (seed ${seed})`)
    const started = Date.now()
    const progress = (p: { done: number; total: number; generatedTokens: number }): void => {
      if (process.stderr.isTTY) process.stderr.write(`\r\x1b[Kgenerating ${p.done}/${p.total} (${p.generatedTokens} tokens)`)
    }
    const scoreOf = async (dir: string): Promise<Awaited<ReturnType<typeof evaluateHeldOutDetailed>>> => {
      const model = await loadModel(dir)
      try {
        const d = await evaluateHeldOutDetailed(model, heldOut, { maxNewTokens, onProgress: progress })
        if (process.stderr.isTTY) process.stderr.write('\r\x1b[K')
        return d
      } finally {
        model.dispose()
      }
    }
    const line = (s: { formatRate: number; esStar: number; exactMatch: number; reward: number }): string =>
      `format rate ${(s.formatRate * 100).toFixed(1)}%   ES* ${s.esStar.toFixed(3)}   exact match ${(s.exactMatch * 100).toFixed(1)}%   reward ${s.reward.toFixed(3)}`
    try {
      const before = await scoreOf(modelDir)
      const after = values.trained !== undefined ? await scoreOf(values.trained) : undefined
      const oldCode = await oldCodeScores(heldOut)
      const examples = pickExamples(heldOut, { before: before.answers, ...(after ? { after: after.answers } : {}) }, exampleCount)
      if (examples.length > 0) console.log(examplesText(examples) + '\n')
      const summary = {
        before: before.scores,
        ...(after ? { after: after.scores, trained: values.trained } : {}),
        oldCode,
        tasks: heldOut.length,
        seed,
        model: modelDir,
        seconds: (Date.now() - started) / 1000,
        examples
      }
      const file = path.join(runDir, 'summary.json')
      writeFileAtomic(file, JSON.stringify(summary, null, 2) + '\n')
      console.log(`${after ? 'before: ' : ''}${line(before.scores)}`)
      if (after) console.log(`after:  ${line(after.scores)}`)
      console.log(oldCodeLine(oldCode))
      console.log(`run folder: ${runDir} (summary.json)`)
    } finally {
      closePythonWorkers()
    }
    return 0
  }
}
