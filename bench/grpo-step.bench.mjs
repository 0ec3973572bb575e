// One GRPO step of the embedded default's setting (built-in tiny model, ReCode prompts of ~300 tokens,
// 4 prompts x 8 samples of up to 128 tokens, full fine-tuning on the CPU) broken down by phase: generation,
// reward, log-probs (the forward that keeps activations), backward, optimizer. Medians over 8 steps after
// one warm-up step, from the run's own metrics.jsonl. Target (issue 6): reward scoring well under the step.
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require, median } from './lib.mjs'

const { train, readMetrics } = require('../dist/cjs/index.js')

export default async function () {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-grpo-step-bench-'))
  try {
    const runDir = path.join(tmp, 'run')
    await train(
      { warmStartSteps: 1, steps: 9, warmupSteps: 1, checkpointEvery: 0, synthetic: { seed: 1, train: 200, heldOut: 2 } },
      { runDir }
    )
    const records = readMetrics(path.join(runDir, 'metrics.jsonl'))
      .records.filter((r) => r.stage === 'grpo')
      .slice(1)
    const phases = ['generation', 'reward', 'logprobs', 'backward', 'optimizer']
    const phaseSeconds = Object.fromEntries(phases.map((p) => [p, median(records.map((r) => r.phaseSeconds[p]))]))
    const stepSeconds = median(records.map((r) => r.stepSeconds))
    const results = {
      setting: 'tiny preset: qwen2 tiny (hidden 64, 3 layers), 4 prompts x 8 samples, <= 128 new tokens, cpu, full fine-tuning',
      threads: os.cpus().length,
      steps: records.length,
      stepSeconds,
      phaseSeconds,
      rewardShare: phaseSeconds.reward / stepSeconds,
      trainingTokensPerSecond: median(records.map((r) => r.tokensPerSecond)),
      responseLength: median(records.map((r) => r.responseLength))
    }
    const summary = [
      `GRPO step (tiny preset, 4 x 8 samples, ${os.cpus().length} threads): ${stepSeconds.toFixed(2)} s median;`,
      '  ' + phases.map((p) => `${p} ${phaseSeconds[p].toFixed(3)} s (${((100 * phaseSeconds[p]) / stepSeconds).toFixed(0)}%)`).join(', '),
      `  training phases ${results.trainingTokensPerSecond.toFixed(0)} tokens/s; reward scoring ${(100 * results.rewardShare).toFixed(2)}% of the step`
    ].join('\n')
    return { name: 'grpo-step', results, summary, note: 'CPU shared with other processes while measured' }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true })
  }
}
