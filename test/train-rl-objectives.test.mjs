// TRL's objectives in the trainer (issue 16): the config fields are checked with errors naming them, and short
// GRPO runs with GSPO (sequence-level ratios) and with CISPO raise the held-out reward over seeds, the same kind of
// check as train-rl.test.mjs (one shared SFT warm start of the built-in tiny model, then 12-step runs from it for
// seeds 1, 2, 3; RECODE_TEST_SEED draws three others). A short run corrects the rollout mismatch from the
// generator's recorded log-probabilities and records it in metrics.jsonl.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require, rng } from './helpers.mjs'

const { train } = require('../dist/cjs/index.js')
const { validateTrainConfig, trainFlagsToConfig } = require('../dist/cjs/train/config/index.js')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-train-rl-objectives-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

const noPaths = { checkPaths: false }

t.test('the objective fields: defaults, checks naming the field, flags', async (t) => {
  const d = validateTrainConfig({}, noPaths)
  t.match(d, {
    lossType: null,
    importanceSamplingLevel: 'token',
    delta: null,
    sapoTemperaturePos: 1,
    sapoTemperatureNeg: 1.05,
    maskTruncatedCompletions: false,
    topEntropyQuantile: 1,
    entropyCoef: 0,
    rolloutCorrection: null
  })
  const bad = {
    lossType: 'ppo',
    importanceSamplingLevel: 'seq',
    delta: -1,
    sapoTemperaturePos: 0,
    sapoTemperatureNeg: 'x',
    maskTruncatedCompletions: 1,
    topEntropyQuantile: 1.5,
    entropyCoef: 'x',
    rolloutCorrection: 'mask'
  }
  for (const [field, value] of Object.entries(bad)) {
    t.throws(
      () => validateTrainConfig({ [field]: value }, noPaths),
      { code: 'ERR_CONFIG', message: new RegExp(`^config\\.${field} `) },
      `${field} = ${JSON.stringify(value)}`
    )
  }
  for (const [rc, field] of [
    [{ mode: 'clip', level: 'token', c: 2 }, 'mode'],
    [{ mode: 'mask', level: 'row', c: 2 }, 'level'],
    [{ mode: 'mask', level: 'token', c: 1 }, 'c'],
    [{ mode: 'mask', level: 'token', c: 2, cap: 3 }, 'cap']
  ]) {
    t.throws(
      () => validateTrainConfig({ rolloutCorrection: rc }, noPaths),
      { code: 'ERR_CONFIG', message: new RegExp(`^config\\.rolloutCorrection\\.${field} `) },
      `rolloutCorrection.${field}`
    )
  }
  t.throws(() => validateTrainConfig({ lossType: 'dapo', lossAggregation: 'token-mean' }, noPaths), {
    code: 'ERR_CONFIG',
    message: /^config\.lossAggregation must be left out/
  })
  t.throws(() => validateTrainConfig({ entropyCoef: 0.01 }, noPaths), {
    code: 'ERR_CONFIG',
    message: /^config\.entropyCoef must be 0 for now/
  })
  t.throws(() => validateTrainConfig({ topEntropyQuantile: 0.2 }, noPaths), {
    code: 'ERR_CONFIG',
    message: /^config\.topEntropyQuantile must be 1 for now/
  })
  const ok = validateTrainConfig(
    {
      lossType: 'cispo',
      clipEpsHigh: 5,
      importanceSamplingLevel: 'sequence',
      delta: 1.5,
      maskTruncatedCompletions: true,
      rolloutCorrection: { mode: 'truncate', level: 'sequence', c: 3 }
    },
    noPaths
  )
  t.match(ok, { lossType: 'cispo', delta: 1.5, rolloutCorrection: { mode: 'truncate', level: 'sequence', c: 3 } })
  t.same(
    trainFlagsToConfig([
      '--loss-type',
      'grpo',
      '--importance-sampling-level',
      'sequence',
      '--delta',
      '1.5',
      '--rollout-correction',
      'mask,token,2',
      '--mask-truncated-completions'
    ]),
    {
      lossType: 'grpo',
      importanceSamplingLevel: 'sequence',
      delta: 1.5,
      rolloutCorrection: { mode: 'mask', level: 'token', c: 2 },
      maskTruncatedCompletions: true
    }
  )
  t.same(trainFlagsToConfig(['--loss-type', 'off', '--delta', 'off', '--rollout-correction', 'off']), {
    lossType: null,
    delta: null,
    rolloutCorrection: null
  })
})

const base = { synthetic: { seed: 2, train: 400, heldOut: 32 }, checkpointEvery: 0, maxCompletionTokens: 96 }
const MARGIN = 0.1 // reward units, as train-rl.test.mjs

let sft
t.before(async () => {
  sft = await train(
    { ...base, algorithm: 'sft', steps: 150, learningRate: 2e-3, schedule: 'constant', warmupSteps: 2 },
    { runDir: path.join(tmp, 'sft') }
  )
})

// GSPO: TRL's setup for the paper (loss_type grpo, sequence level); two policy updates per batch so that the
// sequence ratio moves off 1. CISPO: the weight cap epsilon_high = 5 (ScaleRL).
for (const [label, extra] of [
  ['gspo', { lossType: 'grpo', importanceSamplingLevel: 'sequence', policyUpdatesPerBatch: 2, clipEpsLow: 0.2, clipEpsHigh: 0.2 }],
  ['cispo', { lossType: 'cispo', clipEpsHigh: 5 }]
]) {
  t.test(`${label} raises the held-out reward over three seeds`, async (t) => {
    const r = process.env.RECODE_TEST_SEED ? rng(t, label) : null
    const gains = []
    for (let k = 0; k < 3; k++) {
      const seed = r ? r.int(0, 2 ** 31) : k + 1
      const runDir = path.join(tmp, `${label}-${k}`)
      const run = await train(
        {
          ...base,
          algorithm: 'grpo',
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
        { runDir }
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

t.test("the rollout correction reads the generator's log-probabilities and metrics.jsonl records the mismatch", async (t) => {
  const read = (dir) =>
    fs
      .readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .filter((m) => m.loss !== undefined)
  const common = {
    ...base,
    algorithm: 'grpo',
    model: sft.modelDir,
    warmStartSteps: 0,
    steps: 2,
    seed: 5,
    promptsPerStep: 2,
    samplesPerPrompt: 4,
    learningRate: 1e-3,
    warmupSteps: 1,
    evalEvery: 0
  }
  const dir = path.join(tmp, 'rc')
  await train({ ...common, maskTruncatedCompletions: true, rolloutCorrection: { mode: 'truncate', level: 'token', c: 2 } }, { runDir: dir })
  const steps = read(dir)
  t.ok(steps.length > 0, 'steps were recorded')
  for (const m of steps) {
    // the trainer scores at temperature 1 and the generator samples at the config's 0.7: a real mismatch
    t.ok(m.rolloutLogRatioAbs > 0 && Number.isFinite(m.rolloutLogRatioAbs), `step ${m.step}: mean |log-ratio| ${m.rolloutLogRatioAbs}`)
    t.ok(
      m.rolloutCorrectedFraction >= 0 && m.rolloutCorrectedFraction <= 1,
      `step ${m.step}: fraction truncated ${m.rolloutCorrectedFraction}`
    )
  }
  const plainDir = path.join(tmp, 'plain')
  await train({ ...common, steps: 1 }, { runDir: plainDir })
  t.ok(
    read(plainDir).every((m) => !('rolloutLogRatioAbs' in m)),
    'without the correction the records are as before'
  )
})
