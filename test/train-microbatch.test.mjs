// Gradient accumulation inside a prompt's group (lib/train/policyUpdate.ts): splitting a step's sequences into
// micro-batches smaller than a group gives the same update as one micro-batch (advantages are per sequence and
// each micro-batch's loss is scaled to the batch), up to float summation order: loss, gradient norm and the
// updated parameters, for the token-mean and sequence-mean aggregations, with KL on.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require, rng, relErr, smallTrainModel } from './helpers.mjs'

const { initModel, loadModel, ModelTrainer, validateTrainConfig } = require('../dist/cjs/index.js')
const { policyUpdate } = require('../dist/cjs/train/policyUpdate.js')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-train-microbatch-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const dir = path.join(tmp, 'm')
initModel({ ...smallTrainModel, arch: 'qwen2', out: dir, seed: 11 })
const vocab = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'))).vocab_size

t.test('micro-batches smaller than a group give the whole-batch update', async (t) => {
  const r = rng(t)
  // 2 prompts x 4 samples; prompts of 5 and 7 tokens, completions of 2..9 tokens
  const sequences = []
  for (let p = 0; p < 2; p++) {
    const prompt = Array.from({ length: 5 + 2 * p }, () => r.int(0, vocab - 1))
    for (let s = 0; s < 4; s++)
      sequences.push({
        tokens: [...prompt, ...Array.from({ length: r.int(2, 9) }, () => r.int(0, vocab - 1))],
        promptLength: prompt.length
      })
  }
  const advantages = Float32Array.from(sequences, () => r.normal())
  const rollout = { sequences, advantages, metrics: {}, seconds: { generation: 0, reward: 0 } }
  for (const lossAggregation of ['token-mean', 'seq-mean-token-mean']) {
    const runs = []
    for (const gradAccumulation of [1, 2, 8]) {
      // 8, 4 (a group) and 1 sequence per micro-batch
      const config = validateTrainConfig(
        { promptsPerStep: 2, samplesPerPrompt: 4, gradAccumulation, lossAggregation, klCoef: 0.05, maxCompletionTokens: 16 },
        { checkPaths: false }
      )
      const model = await loadModel(dir, { device: 'cpu', maxBatch: 1, maxContext: 32 })
      const trainer = new ModelTrainer(model, {
        adapter: { type: 'lora', r: 2, alpha: 4, dropout: 0, seed: 2, targetModules: ['q_proj', 'v_proj', 'down_proj'] }
      })
      await trainer.step([{ tokens: sequences[0].tokens, weights: sequences[0].tokens.map((_, j) => (j === 0 ? 0 : 0.1)) }])
      await trainer.applyAdamW({ lr: 1e-2 }) // B != 0, so the policy differs from the KL reference
      const res = await policyUpdate(trainer, config, rollout, { lr: 1e-2 })
      runs.push({ gradAccumulation, res, params: await trainer.parameters(), state: await trainer.state() })
      trainer.dispose()
      model.dispose()
    }
    const [one, ...split] = runs
    for (const s of split) {
      const label = `${lossAggregation}, ${8 / s.gradAccumulation} sequence(s) per micro-batch`
      t.ok(
        Math.abs(s.res.loss - one.res.loss) <= 1e-5 * Math.max(1, Math.abs(one.res.loss)),
        `${label}: loss ${s.res.loss} vs ${one.res.loss}`
      )
      t.ok(
        Math.abs(s.res.gradNorm - one.res.gradNorm) <= 1e-5 * one.res.gradNorm && one.res.gradNorm > 0,
        `${label}: grad norm ${s.res.gradNorm} vs ${one.res.gradNorm}`
      )
      // The update itself: AdamW normalises each element's gradient (m / sqrt(v)), so an element whose gradient is
      // at rounding level in both summation orders can move by a different fraction of lr (up to the whole step, in
      // either direction); no element may differ by more than that, 2 lr. The loss and gradient norm above are what
      // hold the two summation orders to each other.
      let worst = 0
      for (const [k, p] of one.params.entries()) {
        for (let i = 0; i < p.data.length; i++) worst = Math.max(worst, Math.abs(s.params[k].data[i] - p.data[i]))
      }
      t.ok(worst <= 2 * 1e-2, `${label}: every updated parameter within 2 lr (worst ${(worst / 1e-2).toExponential(2)} lr)`)
      // AdamW's first moment is linear in the gradients (beta1 m + (1 - beta1) g), so it agrees to the gradients'
      // summation-order rounding, as the gradient norm does: every tensor's m within 1e-5 normwise.
      let worstM = 0
      for (const [k, m] of one.state.tensors.entries()) worstM = Math.max(worstM, relErr(s.state.tensors[k].expAvg, m.expAvg))
      t.ok(worstM <= 1e-5, `${label}: the first moments (linear in the gradients) agree (worst rel err ${worstM.toExponential(2)})`)
    }
  }
})
