// Benchmark plumbing shared by bench/*.bench.mjs: timings through benchmark.js (median of its samples),
// machine details, and results written to bench/results/<name>.json (atomically).
import Benchmark from 'benchmark'
import { execFileSync } from 'child_process'
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

/** The cores' measured fp32 FMA peak in GFLOP/s: median of three runs of independent FMA chains on `threads` threads. */
export function measuredFmaPeak(addon, threads) {
  return median([0, 1, 2].map(() => addon.opFmaPeak(3e7, threads)))
}

/**
 * Copy bandwidth of a large Float32Array.set (one thread): bytes copied per second; the memory traffic is twice
 * that (each byte read once and written once).
 */
export function copyBandwidth(bytes) {
  const src = new Float32Array(bytes / 4).fill(1.5)
  const dst = new Float32Array(bytes / 4)
  const s = timeSync('copy', () => dst.set(src), { minSamples: 5, maxTime: 2 })
  return bytes / s
}

// OpenBLAS sgemm (Debian's libopenblas through ctypes) in opGemm's convention: C[M,N] = op(A) op(B)^T with A
// [M,K] (or [K,M] when transA) and B [N,K] (or [K,N] when transB). Median seconds of each shape.
const OPENBLAS_PY = `
import ctypes, json, sys, time
import numpy as np
lib = ctypes.CDLL("/usr/lib/x86_64-linux-gnu/libopenblas.so.0")
lib.openblas_set_num_threads(int(sys.argv[1]))
I, F, P = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
lib.cblas_sgemm.argtypes = [I, I, I, I, I, I, F, P, I, P, I, F, P, I]
budget = float(sys.argv[3])
out = []
for M, N, K, ta, tb in json.loads(sys.argv[2]):
    A = np.random.rand(M * K).astype(np.float32); B = np.random.rand(N * K).astype(np.float32); C = np.zeros(M * N, np.float32)
    # row-major cblas: C = opA(A) opB(B), opB(B) = our B^T
    f = lambda: lib.cblas_sgemm(101, 112 if ta else 111, 111 if tb else 112, M, N, K, 1.0, A.ctypes.data, M if ta else K,
                                B.ctypes.data, N if tb else K, 0.0, C.ctypes.data, N)
    f()
    times = []
    deadline = time.time() + budget
    while len(times) < 3 or (time.time() < deadline and len(times) < 200):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    times.sort()
    out.append(times[len(times) // 2])
print(json.dumps(out))
`

/** OpenBLAS sgemm median seconds per shape [M, N, K, transA?, transB?], on `threads` threads. Throws when
 * python3 / numpy / libopenblas is missing (callers say so and go on). */
export function openblasSgemmSeconds(shapes, threads, budgetSeconds = 2) {
  return JSON.parse(
    execFileSync(
      '/usr/bin/python3',
      [
        '-c',
        OPENBLAS_PY,
        String(threads),
        JSON.stringify(shapes.map(([M, N, K, ta = false, tb = false]) => [M, N, K, ta ? 1 : 0, tb ? 1 : 0])),
        String(budgetSeconds)
      ],
      { encoding: 'utf8', env: { ...process.env, OPENBLAS_NUM_THREADS: String(threads) } }
    )
  )
}

/** A model folder's shape from its config.json, and its matrix parameters (layer projections + the head). */
export function modelShape(dir) {
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json')))
  const C = cfg.hidden_size
  const H = cfg.num_attention_heads
  const Hkv = cfg.num_key_value_heads
  const D = cfg.head_dim ?? C / H
  const F = cfg.intermediate_size
  const V = cfg.vocab_size
  const L = cfg.num_hidden_layers
  return { cfg, C, H, Hkv, D, F, V, L, matrixParams: L * (C * H * D + 2 * C * Hkv * D + H * D * C + 3 * C * F) + V * C }
}

let seed = 7
const rand = () => {
  seed = (seed * 1103515245 + 12345) >>> 0
  return seed
}
/** B sequences of S pseudo-random tokens below V, SFT weights (mean over the predicted tokens). */
export function sftBatch(B, S, V) {
  return Array.from({ length: B }, () => {
    const tokens = Array.from({ length: S }, () => rand() % V)
    return { tokens, weights: tokens.map((_, j) => (j === 0 ? 0 : 1 / (B * (S - 1)))) }
  })
}
