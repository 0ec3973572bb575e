// The method, shown working at CI size (issue 12): from the shipped demo base model, a few GRPO steps with ReCode's
// reward raise exact match on held-out tasks of updates absent from training. Fixed seeds; the CPU trainer's sums do
// not depend on the thread count, so the outcome is one number per SIMD path, not a draw.
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import t from 'tap'
import { require } from './helpers.mjs'

const { train, closePythonWorkers } = require('../dist/cjs/index.js')

t.teardown(() => closePythonWorkers())

t.test('a few GRPO steps from the shipped base raise held-out exact match', async (t) => {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-demo-rl-'))
  t.teardown(() => fs.rmSync(runDir, { recursive: true, force: true }))
  // the demo preset (64 held-out tasks, 8 prompts x 4 samples at temperature 0.7, lr 5e-5), 12 of its 50 steps
  const config = { preset: 'demo', steps: 12, evalEvery: 0, checkpointEvery: 0 }
  const r = await train(config, { runDir: path.join(runDir, 'run') })
  const { before, after } = r.summary
  t.comment(
    `held-out (64 tasks of unseen updates, greedy): exact match ${(before.exactMatch * 100).toFixed(1)}% -> ${(after.exactMatch * 100).toFixed(1)}%, ES* ${before.esStar.toFixed(3)} -> ${after.esStar.toFixed(3)}`
  )
  t.ok(before.formatRate >= 0.9, `the base already answers in the format (${(before.formatRate * 100).toFixed(0)}%)`)
  t.ok(after.exactMatch > before.exactMatch, 'exact match rises')
  t.ok(after.esStar > before.esStar, 'ES* rises')
})
