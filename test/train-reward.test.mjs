// The rollout trains on the configured reward (config.reward: format + ES*, ES, EM*, EM, or format alone): the
// rewards it hands to the advantages are those lib/reward documents, on completions whose scores are known.
import t from 'tap'
import { require } from './helpers.mjs'

const { validateTrainConfig, syntheticTasks, rewards, trainingReward, closePythonWorkers } = require('../dist/cjs/index.js')
const { rollout } = require('../dist/cjs/train/rollout.js')

t.teardown(() => closePythonWorkers())

const { train: rows } = syntheticTasks({ seed: 11, train: 2, heldOut: 0 })
const fence = (code) => `\`\`\`python\n${code}\n\`\`\``
// Four samples per prompt whose scores differ in every component: exact, old code (a near miss), no block, bad format.
const answers = (row) => [
  ` ok</think>\n<answer>\n${fence(row.new_code)}\n</answer>`,
  ` ok</think>\n<answer>\n${fence(row.old_code)}\n</answer>`,
  ' ok</think>\n<answer>\nno code\n</answer>',
  ` no format\n${fence(row.new_code)}`
]

/** A generator that answers each prompt with the four samples above (token ids are the characters' codes). */
const canned = {
  generate: async (prompts, opts) =>
    prompts.map((p) => {
      const row = rows[Number(/^task (\d+)$/.exec(p)[1])]
      return answers(row)
        .slice(0, opts.n)
        .map((text) => ({
          text,
          tokenIds: [...text].slice(0, 4).map((c) => c.charCodeAt(0)),
          logprobs: [-1, -1, -1, -1].slice(0, Math.min(4, text.length)),
          finishReason: 'stop'
        }))
    })
}

t.test('each config.reward gives the rollout its documented rewards', async (t) => {
  const completions = rows.flatMap(answers)
  const targets = rows.flatMap((r) => answers(r).map(() => r.new_code))
  const components = await rewards.score(completions, targets)
  const seen = new Map()
  for (const reward of ['es*', 'es', 'em*', 'em', 'format']) {
    const config = validateTrainConfig({ reward, promptsPerStep: 2, samplesPerPrompt: 4, gradAccumulation: 1, dynamicSampling: false })
    const prompts = {
      rows,
      text: rows.map((_, i) => `task ${i}`),
      ids: rows.map(() => [1, 2, 3]),
      usable: [0, 1],
      cursor: { next: (n) => Array.from({ length: n }, (_, k) => k % 2) }
    }
    const r = await rollout(canned, config, 0, prompts)
    const expected = trainingReward(reward, components)
    const mean = expected.reduce((a, b) => a + b, 0) / expected.length
    t.ok(Math.abs(r.metrics.rewardMean - mean) < 1e-6, `${reward}: mean reward ${r.metrics.rewardMean} = ${mean}`)
    seen.set(reward, r.metrics.rewardMean)
  }
  // the five differ here, so a rollout that ignored config.reward would fail above
  t.equal(new Set([...seen.values()].map((v) => v.toFixed(6))).size, 5, 'five different mean rewards')
})
