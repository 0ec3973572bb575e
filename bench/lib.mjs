// Benchmark plumbing shared by bench/*.bench.mjs: timings through benchmark.js (median of its samples),
// machine details, and results written to bench/results/<name>.json (atomically).
import Benchmark from 'benchmark'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { fileURLToPath } from 'url'
import { createRequire } from 'module'

export const require = createRequire(import.meta.url)
export const benchDir = path.dirname(fileURLToPath(import.meta.url))
export const root = path.join(benchDir, '..')
export const shared = path.join(root, '..', 'shared')

/** Median seconds per call of a synchronous fn, measured by benchmark.js. */
export function timeSync(name, fn, { minSamples = 10, maxTime = 3 } = {}) {
  const b = new Benchmark(name, fn, { minSamples, maxTime })
  b.run()
  if (b.error) throw b.error
  return median(b.stats.sample)
}

/** Median seconds per call of an async fn (deferred benchmark.js run). */
export function timeAsync(name, fn, { minSamples = 5, maxTime = 3 } = {}) {
  return new Promise((resolve, reject) => {
    const b = new Benchmark(name, {
      defer: true,
      minSamples,
      maxTime,
      fn: (deferred) => {
        fn().then(() => deferred.resolve(), reject)
      },
      onComplete: () => (b.error ? reject(b.error) : resolve(median(b.stats.sample))),
      onError: (e) => reject(e.target?.error ?? e)
    })
    b.run({ async: true })
  })
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** Machine description stored with every result file. */
export function machine() {
  let doctor = {}
  try {
    doctor = require('../dist/cjs/commands/doctor.js').doctorReport()
  } catch (e) {
    doctor = { error: String(e) }
  }
  return {
    date: new Date().toISOString(),
    hostname: os.hostname(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    doctor
  }
}

export function writeResult(name, result) {
  const dir = process.env.RECODE_BENCH_RESULTS || path.join(benchDir, 'results') // tests write elsewhere
  fs.mkdirSync(dir, { recursive: true })
  const file = path.join(dir, `${name}.json`)
  const tmp = `${file}.tmp-${process.pid}`
  fs.writeFileSync(tmp, JSON.stringify({ machine: machine(), ...result }, null, 2) + '\n')
  fs.renameSync(tmp, file)
  return file
}

/**
 * A trainer's step and its AdamW update, timed separately after one warm-up step (workspace allocation, packing):
 * [step seconds, AdamW seconds], medians as timeAsync gives them.
 */
export async function timeTrainerStep(tr, batch, { label, lr, minSamples, stepTime, adamTime }) {
  await tr.step(batch)
  await tr.zeroGrad()
  const stepSec = await timeAsync(
    `${label} step`,
    async () => {
      await tr.step(batch)
    },
    { minSamples, maxTime: stepTime }
  )
  const adamSec = await timeAsync(
    `${label} adamw`,
    async () => {
      await tr.applyAdamW({ lr, weightDecay: 0.01, maxGradNorm: 1 })
    },
    { minSamples, maxTime: adamTime }
  )
  return [stepSec, adamSec]
}
