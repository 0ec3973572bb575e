// Model engine on the CPU: GEMM GFLOP/s beside the cores' fp32 FMA peak (clock-based and measured) and beside
// OpenBLAS (Debian's libopenblas through ctypes); causal attention GFLOP/s (prefill and split-context
// decode); prefill and decode tokens/s of the tiny and small presets and of a random model with
// Qwen2.5-0.5B's dimensions (written to a temp dir on first use, kept for reruns).
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require, timeSync, timeAsync, measuredFmaPeak, openblasSgemmSeconds } from './lib.mjs'

const addon = require('../build/Release/recode.node')
const { loadModel, initModel } = require('../dist/cjs/index.js')

function rand(n) {
  const a = new Float32Array(n)
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1
  return a
}

function clockGHz() {
  const m = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/cpu MHz\s*:\s*([\d.]+)/)
  return m ? Number(m[1]) / 1000 : NaN
}

export default async function () {
  const results = {}
  const lines = []
  const threads = os.cpus().length
  addon.setSimdLevel('auto')

  // ---- peak ----------------------------------------------------------------------------------------
  const ghz = clockGHz()
  const clockPeak = threads * 2 * 8 * 2 * ghz // cores x FMA pipes x fp32 lanes x 2 flops x GHz
  const measuredPeak = measuredFmaPeak(addon, threads)
  results.peak = { clockGHz: ghz, cores: threads, clockPeakGflops: clockPeak, measuredFmaPeakGflops: measuredPeak }
  lines.push(
    `fp32 FMA peak: ${clockPeak.toFixed(1)} GFLOP/s from the clock (${threads} cores x 2 FMA pipes x 8 lanes x 2 flops x ${ghz.toFixed(3)} GHz, /proc/cpuinfo);` +
      ` measured now with independent FMA chains on ${threads} threads: ${measuredPeak.toFixed(1)} GFLOP/s`
  )

  // ---- GEMM ----------------------------------------------------------------------------------------
  const shapes = [
    [1024, 1024, 1024],
    [512, 4864, 896],
    [512, 896, 4864],
    [1, 4864, 896]
  ]
  let blas = null
  try {
    blas = openblasSgemmSeconds(shapes, threads)
  } catch (e) {
    lines.push(`OpenBLAS comparison skipped: ${String(e.message).split('\n')[0]}`)
  }
  results.gemm = []
  for (const [i, [M, N, K]] of shapes.entries()) {
    const flops = 2 * M * N * K
    const row = { M, N, K }
    for (const level of ['avx2', 'baseline']) {
      if (level === 'baseline' && M * N * K > 6e8) continue
      addon.setSimdLevel(level)
      // W packed once, as inference runs every linear layer
      row[level] = flops / addon.opGemmPackedTime(M, N, K, M === 1 ? 200 : 7) / 1e9
    }
    addon.setSimdLevel('auto')
    row.avx2Bf16Weights = flops / addon.opGemmPackedTime(M, N, K, M === 1 ? 200 : 7, true) / 1e9
    if (blas) row.openblas = flops / blas[i] / 1e9
    results.gemm.push(row)
    lines.push(
      `GEMM ${M}x${N}x${K} (C = A W^T, W prepacked): ${row.avx2.toFixed(1)} GFLOP/s avx2 = ${((100 * row.avx2) / clockPeak).toFixed(0)}% of clock peak, ${((100 * row.avx2) / measuredPeak).toFixed(0)}% of measured peak` +
        `; bf16 panels ${row.avx2Bf16Weights.toFixed(1)}` +
        (row.baseline ? `; portable ${row.baseline.toFixed(1)}` : '') +
        (row.openblas ? `; OpenBLAS sgemm ${row.openblas.toFixed(1)} (ours/OpenBLAS ${(row.avx2 / row.openblas).toFixed(2)})` : '')
    )
  }
  {
    // the general entry (training's products: packs both operands every call)
    const n = 1024
    const A = rand(n * n)
    const B = rand(n * n)
    const C = new Float32Array(n * n)
    const s = timeSync('gemm unpacked', () => addon.opGemm('fast', C, A, B, n, n, n, false, false, false), { minSamples: 5, maxTime: 2 })
    results.gemmUnpacked1024 = (2 * n ** 3) / s / 1e9
    lines.push(`GEMM 1024^3 through the general strided entry (packs B per call): ${results.gemmUnpacked1024.toFixed(1)} GFLOP/s`)
  }

  // ---- attention -----------------------------------------------------------------------------------
  results.attention = []
  for (const s of [
    { T: 1024, S: 1024, H: 14, Hkv: 2, D: 64, qPos0: 0 },
    { T: 1, S: 4096, H: 14, Hkv: 2, D: 64, qPos0: 4095 },
    { T: 1, S: 16384, H: 14, Hkv: 2, D: 64, qPos0: 16383 }
  ]) {
    const q = rand(s.T * s.H * s.D)
    const k = rand(s.S * s.Hkv * s.D)
    const v = rand(s.S * s.Hkv * s.D)
    const out = new Float32Array(s.T * s.H * s.D)
    const lse = new Float32Array(s.T * s.H)
    const variant = s.T === 1 ? 'decode' : 'flash'
    const sec = timeSync(`attention ${variant}`, () => addon.opAttentionForward(variant, out, lse, q, k, v, s), {
      minSamples: 5,
      maxTime: 2
    })
    // anchors.md convention: 4 * H * S * S * d, halved when causal; decode: 4 * H * S * d for its one query
    const flops = s.T === 1 ? 4 * s.H * s.S * s.D : (4 * s.H * s.T * s.S * s.D) / 2
    const kvBytes = 2 * s.S * s.Hkv * s.D * 4
    results.attention.push({ ...s, variant, seconds: sec, gflops: flops / sec / 1e9, kvGBps: kvBytes / sec / 1e9 })
    lines.push(
      `attention ${variant} T=${s.T} S=${s.S} H=${s.H}/${s.Hkv} D=${s.D}: ${(flops / sec / 1e9).toFixed(1)} GFLOP/s` +
        (s.T === 1 ? ` (${(kvBytes / sec / 1e9).toFixed(1)} GB/s of KV cache read)` : '')
    )
  }

  // ---- model tokens/s ------------------------------------------------------------------------------
  const cacheRoot = path.join(os.tmpdir(), 'recode-bench-models')
  fs.mkdirSync(cacheRoot, { recursive: true })
  results.models = []
  for (const [preset, dtype] of [
    ['tiny', 'f32'],
    ['small', 'f32'],
    ['qwen2.5-0.5b-shape', 'f32'],
    ['qwen2.5-0.5b-shape', 'bf16']
  ]) {
    const dir = path.join(cacheRoot, `${preset}-qwen2`)
    if (!fs.existsSync(path.join(dir, 'config.json'))) {
      const t0 = Date.now()
      initModel({ preset, arch: 'qwen2', out: dir, seed: 1, dtype: preset === 'qwen2.5-0.5b-shape' ? 'bf16' : 'f32' })
      lines.push(`init-model ${preset}: ${((Date.now() - t0) / 1000).toFixed(1)} s`)
    }
    const big = preset === 'qwen2.5-0.5b-shape'
    const t0 = Date.now()
    const m = await loadModel(dir, { device: 'cpu', dtype, maxBatch: 8, maxContext: 1024 })
    const loadS = (Date.now() - t0) / 1000
    const V = m.config.vocab
    const promptLen = big ? 256 : 512
    const prompt = Array.from({ length: promptLen }, (_, i) => (i * 7919) % Math.min(V, 400))
    const prefillS = await timeAsync('prefill', () => m.step([{ slot: 0, tokens: prompt, reset: true }]), {
      minSamples: big ? 2 : 5,
      maxTime: big ? 1 : 2
    })
    const row = {
      preset,
      dtype,
      parameters: null,
      loadSeconds: loadS,
      weightBytes: m.memory.weightBytes,
      kvCacheBytes: m.memory.kvCacheBytes,
      prefillTokens: promptLen,
      prefillTokensPerS: promptLen / prefillS
    }
    for (const batch of [1, 8]) {
      const entries = Array.from({ length: batch }, (_, b) => ({ slot: b, tokens: prompt.slice(0, 32 + b), reset: true }))
      await m.step(entries)
      const steps = big ? 6 : 40
      const t1 = process.hrtime.bigint()
      for (let s = 0; s < steps; s++) await m.step(entries.map((e) => ({ slot: e.slot, tokens: [(s * 31 + e.slot) % 300] })))
      const sec = Number(process.hrtime.bigint() - t1) / 1e9
      row[`decodeBatch${batch}TokensPerS`] = (batch * steps) / sec
    }
    const c = m.config
    row.parameters =
      c.vocab * c.hidden * (c.tieEmbeddings ? 1 : 2) +
      c.layers * (c.hidden * (c.heads + 2 * c.kvHeads) * c.headDim + c.heads * c.headDim * c.hidden + 3 * c.hidden * c.intermediate)
    m.dispose()
    results.models.push(row)
    lines.push(
      `${preset} ${dtype} weights (${(row.parameters / 1e6).toFixed(1)}M params, weights ${(row.weightBytes / 2 ** 20).toFixed(0)} MiB, KV cache ${(row.kvCacheBytes / 2 ** 20).toFixed(0)} MiB for 8 x 1024): ` +
        `prefill ${row.prefillTokensPerS.toFixed(0)} tok/s (${promptLen} tokens), decode ${row.decodeBatch1TokensPerS.toFixed(1)} tok/s at batch 1, ${row.decodeBatch8TokensPerS.toFixed(1)} tok/s at batch 8; load ${loadS.toFixed(1)} s`
    )
  }
  results.note =
    'CPU shared with other processes while measured: see machine.loadavg; the measured FMA peak was taken in the same conditions'
  results.loadavg = os.loadavg()
  return { name: 'model', results, summary: lines.join('\n') }
}
