import * as path from 'path'
import { parseArgs } from 'util'
import { makeDir, writeFileAtomic } from '../atomicFile'
import { loadModel } from '../model/index'
import { initModel } from '../model/init'
import { closePythonWorkers } from '../reward'
import { evaluateHeldOut } from '../train/heldout'
import { syntheticTasks } from '../train/synthetic'
import type { Command } from './types'

/**
 * The embedded default's evaluation on a fresh machine: a tiny model (made here, or --model DIR), the
 * bundled synthetic API-update tasks, ReCode's prompt, batched generation and the ReCode reward. Writes
 * <run>/summary.json as {"before": {formatRate, esStar, exactMatch, reward}} and says where the run is.
 */
export const demo: Command = {
  name: 'demo',
  summary: 'embedded default: score a tiny model on held-out synthetic API-update tasks with the ReCode reward',
  usage: 'recode demo [--model DIR] [--out RUN_DIR] [--tasks N] [--seed S] [--max-new-tokens N]',
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        model: { type: 'string' },
        out: { type: 'string' },
        tasks: { type: 'string', default: '48' },
        seed: { type: 'string', default: '1' },
        'max-new-tokens': { type: 'string', default: '160' }
      }
    })
    const seed = Number(values.seed)
    const tasks = Number(values.tasks)
    const maxNewTokens = Number(values['max-new-tokens'])
    for (const [name, v] of [
      ['--seed', seed],
      ['--tasks', tasks],
      ['--max-new-tokens', maxNewTokens]
    ] as const) {
      if (!Number.isInteger(v) || v < (name === '--seed' ? 0 : 1)) throw new Error(`recode demo: ${name} must be a positive integer`)
    }
    const runDir = path.resolve(values.out ?? path.join('runs', `demo-${new Date().toISOString().replace(/[:.]/g, '-')}`))
    makeDir(runDir, 'recode demo')
    let modelDir = values.model
    if (modelDir === undefined) {
      modelDir = path.join(runDir, 'model')
      const made = initModel({ preset: 'tiny', arch: 'qwen2', out: modelDir, seed })
      console.log(
        `model:    tiny qwen2-architecture model with random weights (${made.parameters.toLocaleString()} parameters) in ${modelDir}`
      )
    } else {
      console.log(`model:    ${modelDir}`)
    }
    const { heldOut } = syntheticTasks({ seed, train: 0, heldOut: tasks })
    console.log(`tasks:    ${heldOut.length} held-out synthetic API updates (seed ${seed})`)
    const model = await loadModel(modelDir)
    try {
      const started = Date.now()
      const before = await evaluateHeldOut(model, heldOut, {
        maxNewTokens,
        onProgress: (p) => {
          if (process.stderr.isTTY) process.stderr.write(`\rgenerating ${p.done}/${p.total} (${p.generatedTokens} tokens)`)
        }
      })
      if (process.stderr.isTTY) process.stderr.write('\n')
      const summary = { before, tasks: heldOut.length, seed, model: modelDir, seconds: (Date.now() - started) / 1000 }
      const file = path.join(runDir, 'summary.json')
      writeFileAtomic(file, JSON.stringify(summary, null, 2) + '\n')
      console.log(
        `format rate ${(before.formatRate * 100).toFixed(1)}%   ES* ${before.esStar.toFixed(3)}   exact match ${(before.exactMatch * 100).toFixed(1)}%   reward ${before.reward.toFixed(3)}`
      )
      console.log(`run folder: ${runDir} (summary.json)`)
    } finally {
      model.dispose()
      closePythonWorkers()
    }
    return 0
  }
}
