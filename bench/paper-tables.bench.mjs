// The paper's tables in miniature (issue 12), from the shipped demo base model (models/nova-base) with the demo
// preset's budget, 3 seeds per arm:
//   Table 2 (reward ablation): GRPO with format only, format + EM, format + EM*, format + ES, format + ES*.
//   Table 1 (general ability): SFT on the same migration tasks (same prompts per step, same steps: the same tasks)
//     versus GRPO, each scored on held-out migrations and on held-out plain-Python editing tasks before and after.
//   DAPO versus GRPO on the same number of steps.
// Held-out migrations are the demo's 64 tasks of updates absent from training, greedy. About 45 minutes on 2 cores;
// `npm run bench` skips it unless named: `npm run bench paper-tables` (PAPER_TABLES_SEEDS=1 for a quick look).
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { machine, require } from './lib.mjs'

const { train, loadModel } = require('../dist/cjs/index.js')
const { evaluateEdits, generalTasks, demoBaseDir } = require('../dist/cjs/demo/index.js')
const { evaluateHeldOut } = require('../dist/cjs/train/heldout.js')
const { syntheticTasks } = require('../dist/cjs/train/synthetic.js')
const { closePythonWorkers } = require('../dist/cjs/reward/index.js')

export const explicitOnly = true

// The budget of every arm: the demo preset's batch (4 prompts x 8 samples) for PAPER_TABLES_STEPS steps (default 12:
// 21 runs fit in about 45 minutes on 2 cores).
const STEPS = Number(process.env.PAPER_TABLES_STEPS ?? 12)
const GRPO = { preset: 'demo', algorithm: 'grpo', steps: STEPS, evalEvery: 0, checkpointEvery: 0 }
export const ARMS = [
  { id: 'grpo-format', table: 2, label: 'GRPO, format only', config: { ...GRPO, reward: 'format' } },
  { id: 'grpo-em', table: 2, label: 'GRPO, format + EM', config: { ...GRPO, reward: 'em' } },
  { id: 'grpo-em*', table: 2, label: 'GRPO, format + EM*', config: { ...GRPO, reward: 'em*' } },
  { id: 'grpo-es', table: 2, label: 'GRPO, format + ES', config: { ...GRPO, reward: 'es' } },
  { id: 'grpo-es*', table: 2, label: 'GRPO, format + ES* (ReCode)', config: { ...GRPO, reward: 'es*' } },
  { id: 'sft', table: 1, label: 'SFT on the same tasks', config: { ...GRPO, algorithm: 'sft' } },
  {
    id: 'dapo',
    table: 3,
    label: 'DAPO, format + ES*',
    // DAPO's objective (verl recipe: decoupled clip, token-mean, dynamic sampling) at the demo's sizes
    config: {
      ...GRPO,
      algorithm: 'dapo',
      reward: 'es*',
      clipEpsLow: 0.2,
      clipEpsHigh: 0.28,
      lossAggregation: 'token-mean',
      dynamicSampling: true,
      maxGenerationBatches: 2
    }
  }
]

const meanStd = (xs) => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length
  const s = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1)) : 0
  return { mean: m, std: s, values: xs }
}
const pct = (x) => `${(x.mean * 100).toFixed(1)} ± ${(x.std * 100).toFixed(1)}`
const num = (x) => `${x.mean.toFixed(2)} ± ${x.std.toFixed(2)}`

export default async function paperTables() {
  const seeds = Array.from({ length: Number(process.env.PAPER_TABLES_SEEDS ?? 3) }, (_, i) => i + 1)
  const only = process.env.PAPER_TABLES_ARMS ? process.env.PAPER_TABLES_ARMS.split(',') : null
  const arms = ARMS.filter((a) => only === null || only.includes(a.id))
  const general = generalTasks(64)
  const started = performance.now()
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-paper-tables-'))
  const scoreGeneral = async (dir) => {
    const model = await loadModel(dir, { device: 'cpu', maxBatch: 64, maxContext: 480 })
    try {
      const { answers, ...s } = await evaluateEdits(model, general)
      return s
    } finally {
      model.dispose()
    }
  }
  try {
    // the base, once: held-out migrations (what every run's summary calls "before") and general editing
    const baseGeneral = await scoreGeneral(demoBaseDir())
    const base = await (async () => {
      const model = await loadModel(demoBaseDir(), { device: 'cpu', maxBatch: 64, maxContext: 480 })
      try {
        return await evaluateHeldOut(model, syntheticTasks({ seed: 1, train: 0, heldOut: 64 }).heldOut, { maxNewTokens: 160 })
      } finally {
        model.dispose()
      }
    })()
    console.log(
      `base: held-out EM ${(base.exactMatch * 100).toFixed(1)}%, ES* ${base.esStar.toFixed(3)}; general editing EM ${(baseGeneral.exactMatch * 100).toFixed(1)}%`
    )
    const runs = []
    for (const arm of arms) {
      for (const seed of seeds) {
        const t0 = performance.now()
        const runDir = path.join(work, `${arm.id}-${seed}`)
        const r = await train({ ...arm.config, seed }, { runDir, onEvent: () => {} })
        const gen = await scoreGeneral(r.modelDir)
        const after = r.summary.after
        runs.push({ arm: arm.id, seed, heldOut: after, general: gen, seconds: (performance.now() - t0) / 1000 })
        console.log(
          `${arm.id} seed ${seed}: held-out EM ${(after.exactMatch * 100).toFixed(1)}% ES* ${after.esStar.toFixed(3)} format ${(after.formatRate * 100).toFixed(0)}%; general editing EM ${(gen.exactMatch * 100).toFixed(1)}% (${((performance.now() - t0) / 1000).toFixed(0)} s)`
        )
        fs.rmSync(runDir, { recursive: true, force: true })
      }
    }
    const table = arms.map((arm) => {
      const rs = runs.filter((r) => r.arm === arm.id)
      return {
        arm: arm.id,
        label: arm.label,
        table: arm.table,
        heldOutExactMatch: meanStd(rs.map((r) => r.heldOut.exactMatch)),
        heldOutEsStar: meanStd(rs.map((r) => r.heldOut.esStar)),
        heldOutFormat: meanStd(rs.map((r) => r.heldOut.formatRate)),
        generalExactMatch: meanStd(rs.map((r) => r.general.exactMatch)),
        generalEsStar: meanStd(rs.map((r) => r.general.esStar))
      }
    })
    const lines = [
      `paper tables in miniature: ${seeds.length} seed(s) per arm, demo preset budget, 64 held-out migrations (unseen updates, greedy), 64 held-out plain-Python edits`,
      `base model: held-out EM ${(base.exactMatch * 100).toFixed(1)}%, ES* ${base.esStar.toFixed(2)}; general editing EM ${(baseGeneral.exactMatch * 100).toFixed(1)}%, ES* ${baseGeneral.esStar.toFixed(2)}`,
      '| arm | held-out EM % | held-out ES* | format % | general editing EM % (base ' + (baseGeneral.exactMatch * 100).toFixed(1) + ') |',
      '| --- | --- | --- | --- | --- |',
      ...table.map((t) => `| ${t.label} | ${pct(t.heldOutExactMatch)} | ${num(t.heldOutEsStar)} | ${pct(t.heldOutFormat)} | ${pct(t.generalExactMatch)} |`),
      `(mean ± sample std over seeds; ${((performance.now() - started) / 60000).toFixed(1)} minutes)`
    ]
    return {
      name: 'paper-tables',
      machine: machine(),
      results: { seeds, base: { heldOut: base, general: baseGeneral }, table, runs },
      summary: lines.join('\n')
    }
  } finally {
    closePythonWorkers()
    fs.rmSync(work, { recursive: true, force: true })
  }
}
