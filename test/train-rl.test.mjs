// Short GRPO, DAPO and GRPO-with-DoRA runs raise the held-out reward: one shared SFT warm start of the built-in tiny
// model on synthetic API-update tasks, then, for three seeds per algorithm, 12-step RL runs from it; the held-out reward
// (ReCode's format + ES*, greedy, 32 tasks) must rise on average by a margin and in at least two seeds.
// The seeds are 1, 2, 3 (runs are deterministic on CPU, so CI checks the same trajectories); RECODE_TEST_SEED
// draws three others. At this budget a single run falls back in roughly one seed of four, so freshly drawn
// seeds would make the per-seed check flaky; the mean over seeds is the claim.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require, rng } from './helpers.mjs'

const { train } = require('../dist/cjs/index.js')
const { DECODER_PROJECTIONS: ALL } = require('../dist/cjs/model/projections.js')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-train-rl-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

const base = { synthetic: { seed: 2, train: 400, heldOut: 32 }, checkpointEvery: 0, maxCompletionTokens: 96 }
const MARGIN = 0.1 // reward units (format alone is worth 2 between -1 and +1)

let sft
t.before(async () => {
  sft = await train(
    { ...base, algorithm: 'sft', steps: 150, learningRate: 2e-3, schedule: 'constant', warmupSteps: 2 },
    { runDir: path.join(tmp, 'sft') }
  )
})

// GRPO and DAPO with full fine-tuning, and GRPO training a DoRA adapter (the paper's parameterisation, at a
// higher learning rate as adapters take) on every projection of the SFT model.
const DORA = { adapter: { type: 'dora', r: 8, alpha: 16, dropout: 0.01, targetModules: ALL }, learningRate: 1e-2 }
for (const [label, algorithm, extra] of [
  ['grpo', 'grpo', {}],
  ['dapo', 'dapo', { dynamicSampling: true, maxGenerationBatches: 3, clipEpsHigh: 0.28, lossAggregation: 'token-mean', klCoef: 0 }],
  ['grpo with DoRA', 'grpo', DORA]
]) {
  t.test(`${label} raises the held-out reward over three seeds`, async (t) => {
    const r = process.env.RECODE_TEST_SEED ? rng(t, label) : null
    const gains = []
    for (let k = 0; k < 3; k++) {
      const seed = r ? r.int(0, 2 ** 31) : k + 1
      const run = await train(
        {
          ...base,
          algorithm,
          model: sft.modelDir,
          warmStartSteps: 0,
          steps: 12,
          seed,
          promptsPerStep: 4,
          samplesPerPrompt: 4,
          learningRate: 1e-3,
          warmupSteps: 1,
          ...extra
        },
        { runDir: path.join(tmp, `${label.replace(/ /g, '-')}-${k}`) }
      )
      const gain = run.summary.after.reward - run.summary.before.reward
      t.comment(
        `seed ${seed}: held-out reward ${run.summary.before.reward.toFixed(3)} -> ${run.summary.after.reward.toFixed(3)} (format ${run.summary.before.formatRate} -> ${run.summary.after.formatRate})`
      )
      gains.push(gain)
    }
    const mean = gains.reduce((a, b) => a + b, 0) / gains.length
    t.ok(mean > MARGIN, `mean gain ${mean.toFixed(3)} > ${MARGIN}`)
    t.ok(gains.filter((g) => g > 0).length >= 2, `gains ${gains.map((g) => g.toFixed(3)).join(', ')}: at least two of three positive`)
  })
}
