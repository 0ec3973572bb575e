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
import { spawn } from 'child_process'
import { fileURLToPath } from 'url'
import { machine, require } from './lib.mjs'

const { train, loadModel } = require('../dist/cjs/index.js')
const { evaluateEdits, generalTasks, demoBaseDir } = require('../dist/cjs/demo/index.js')
const { evaluateHeldOut } = require('../dist/cjs/train/heldout.js')
const { syntheticTasks } = require('../dist/cjs/train/synthetic.js')
const { closePythonWorkers } = require('../dist/cjs/reward/index.js')

export const explicitOnly = true

// The budget of every arm: the demo preset's batch (8 prompts x 4 samples) for PAPER_TABLES_STEPS steps (default 12
// of npm start's 50: 21 runs fit in about 20 minutes on 2 cores).
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

async function scoreGeneral(dir) {
  const model = await loadModel(dir, { device: 'cpu', maxBatch: 64, maxContext: 480 })
  try {
    return (await evaluateEdits(model, generalTasks(64))).scores
  } finally {
    model.dispose()
  }
}

/** One run (a child process): train the arm with the seed, score the result on general editing, print JSON. */
async function runOne(armId, seed) {
  const arm = ARMS.find((a) => a.id === armId)
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), `recode-paper-tables-${armId.replace('*', 'star')}-${seed}-`))
  try {
    const t0 = performance.now()
    const r = await train({ ...arm.config, seed }, { runDir: path.join(runDir, 'run'), onEvent: () => {} })
    const general = await scoreGeneral(r.modelDir)
    process.stdout.write(
      JSON.stringify({
        arm: armId,
        seed,
        heldOut: r.summary.after,
        before: r.summary.before,
        general,
        seconds: (performance.now() - t0) / 1000
      }) + '\n'
    )
  } finally {
    closePythonWorkers()
    fs.rmSync(runDir, { recursive: true, force: true })
  }
}

/** Runs `node <this file> --run ARM SEED` with one thread; resolves to its JSON line. */
function spawnRun(armId, seed) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--run', armId, String(seed)], {
      env: { ...process.env, RECODE_NUM_THREADS: '1' },
      stdio: ['ignore', 'pipe', 'inherit']
    })
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
    })
    child.on('error', reject)
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`paper-tables: run ${armId} seed ${seed} exited with ${code}`))
      resolve(JSON.parse(out.trim().split('\n').pop()))
    })
  })
}

export default async function paperTables() {
  const seeds = Array.from({ length: Number(process.env.PAPER_TABLES_SEEDS ?? 3) }, (_, i) => i + 1)
  const only = process.env.PAPER_TABLES_ARMS ? process.env.PAPER_TABLES_ARMS.split(',') : null
  const arms = ARMS.filter((a) => only === null || only.includes(a.id))
  const parallel = Number(process.env.PAPER_TABLES_PARALLEL ?? 2)
  const started = performance.now()
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
    // every (arm, seed) in its own process, `parallel` at a time with one thread each (small models generate faster
    // as two single-threaded processes than as one with two threads)
    const queue = arms.flatMap((arm) => seeds.map((seed) => [arm.id, seed]))
    const runs = []
    await Promise.all(
      Array.from({ length: Math.max(1, parallel) }, async () => {
        for (let job = queue.shift(); job !== undefined; job = queue.shift()) {
          const r = await spawnRun(job[0], job[1])
          runs.push(r)
          console.log(
            `${r.arm} seed ${r.seed}: held-out EM ${(r.heldOut.exactMatch * 100).toFixed(1)}% ES* ${r.heldOut.esStar.toFixed(3)} format ${(r.heldOut.formatRate * 100).toFixed(0)}%; general editing EM ${(r.general.exactMatch * 100).toFixed(1)}% (${r.seconds.toFixed(0)} s)`
          )
        }
      })
    )
    runs.sort((a, b) => ARMS.findIndex((x) => x.id === a.arm) - ARMS.findIndex((x) => x.id === b.arm) || a.seed - b.seed)
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
      `paper tables in miniature: ${seeds.length} seed(s) per arm, ${STEPS} steps of the demo preset's batch each, 64 held-out migrations (unseen updates, greedy), 64 held-out plain-Python edits`,
      `base model: held-out EM ${(base.exactMatch * 100).toFixed(1)}%, ES* ${base.esStar.toFixed(2)}; general editing EM ${(baseGeneral.exactMatch * 100).toFixed(1)}%, ES* ${baseGeneral.esStar.toFixed(2)}`,
      '| arm | held-out EM % | held-out ES* | format % | general editing EM % (base ' + (baseGeneral.exactMatch * 100).toFixed(1) + ') |',
      '| --- | --- | --- | --- | --- |',
      ...table.map(
        (t) =>
          `| ${t.label} | ${pct(t.heldOutExactMatch)} | ${num(t.heldOutEsStar)} | ${pct(t.heldOutFormat)} | ${pct(t.generalExactMatch)} |`
      ),
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
  }
}

if (process.argv[2] === '--run') await runOne(process.argv[3], Number(process.argv[4]))
