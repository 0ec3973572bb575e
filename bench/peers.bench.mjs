// recode on the CPU beside what a CPU user would otherwise run (issue 15), 2 threads each, in one run:
//   - training step (forward + backward, no optimizer) of init-model's `small` model and of the Qwen2.5-0.5B
//     shape cut to 4 layers, recode vs a plain eager PyTorch Qwen2 (bench/peers/qwen2_torch.py), and recode's
//     share of the measured fp32 FMA peak;
//   - every GEMM shape the trainer (forward x W^T, backward dy W and dy^T x) and the generator (packed weights,
//     decode batch 1 and 8) run on those two models, recode vs OpenBLAS sgemm;
//   - decode tokens/s at batch 1 and 8 vs the eager peer with a KV cache; decode attention at 16k context
//     against the measured memory bandwidth;
//   - sampling over 151,936 logits at batch 1, 64, 256 against one copy of the logits;
//   - the GRPO step of the embedded default (bench/grpo-step.bench.mjs) against the 2.38 s baseline.
// The peer's logits are checked against recode's on the same weights before it is timed (bench/peers/torch.mjs);
// a peer that disagrees is not timed and its ratios are reported as refused. RECODE_BENCH_QUICK=1 runs one
// repetition of everything (a check of the bench itself, not a measurement).
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require, median, measuredFmaPeak, copyBandwidth, openblasSgemmSeconds, modelShape, sftBatch } from './lib.mjs'
import { checkPeerLogits, runPeer, torchUnavailable } from './peers/torch.mjs'

const { loadModel, initModel, ModelTrainer, sample, setNumThreads, systemInfo } = require('../dist/cjs/index.js')
const { native } = require('../dist/cjs/native.js')

const THREADS = 2
const QUICK = process.env.RECODE_BENCH_QUICK === '1'
const VOCAB = 151936
const TARGETS = {
  trainVsTorch: 2,
  trainPeakShare: 0.35,
  gemmVsOpenblas: 1,
  decodeVsTorch: 3,
  attentionBandwidthShare: 0.5,
  samplingCopies: 3,
  grpoSpeedup: 1.5
}
const GRPO_BASELINE_SECONDS = 2.38 // bench/results/grpo-step.json when issue 15 was filed

/** Median seconds of fn over at least minReps calls (after one warm-up), more while under budget seconds. */
function timeReps(fn, { minReps = 3, budget = 0.5 } = {}) {
  fn()
  const t = []
  const end = Date.now() + budget * 1000
  while (t.length < (QUICK ? 1 : minReps) || (!QUICK && Date.now() < end && t.length < 50)) {
    const t0 = process.hrtime.bigint()
    fn()
    t.push(Number(process.hrtime.bigint() - t0) / 1e9)
  }
  return median(t)
}

async function timeRepsAsync(fn, minReps) {
  await fn()
  const t = []
  for (let i = 0; i < (QUICK ? 1 : minReps); i++) {
    const t0 = process.hrtime.bigint()
    await fn()
    t.push(Number(process.hrtime.bigint() - t0) / 1e9)
  }
  return median(t)
}

const fmt = (x, d = 2) => (x === null || x === undefined || Number.isNaN(x) ? '-' : x.toFixed(d))

/** The two model folders (written once to a temp dir, kept for reruns like bench/model.bench.mjs does). */
function models() {
  const root = path.join(os.tmpdir(), 'recode-bench-models')
  fs.mkdirSync(root, { recursive: true })
  const small = path.join(root, 'small-qwen2')
  if (!fs.existsSync(path.join(small, 'config.json'))) initModel({ preset: 'small', arch: 'qwen2', out: small, seed: 1 })
  const mid = path.join(root, 'qwen2.5-0.5b-shape-4layers-f32')
  if (!fs.existsSync(path.join(mid, 'config.json')))
    initModel({ preset: 'qwen2.5-0.5b-shape', arch: 'qwen2', out: mid, seed: 1, layers: 4, dtype: 'f32' })
  return [
    { name: 'small', dir: small, B: 4, S: 128, decodeSteps: 24 },
    { name: 'qwen2.5-0.5b shape, 4 layers', dir: mid, B: 1, S: 256, decodeSteps: 6 }
  ]
}

/** Every product the trainer and the generator run on a model with T training tokens. */
function gemmShapes(sh, T) {
  const { C, H, Hkv, D, F, V } = sh
  const weights = [
    ['q, o', H * D, C],
    ['k, v', Hkv * D, C],
    ['gate, up', F, C],
    ['down', C, F],
    ['head', V, C]
  ]
  if (H * D !== C) weights.push(['o', C, H * D])
  const out = []
  for (const [what, N, K] of weights) {
    out.push({ what, use: 'train forward x W^T', M: T, N, K, ta: false, tb: false, acc: false })
    out.push({ what, use: 'train backward dy W', M: T, N: K, K: N, ta: false, tb: true, acc: true })
    out.push({ what, use: 'train backward dy^T x', M: N, N: K, K: T, ta: true, tb: true, acc: true })
    for (const M of [1, 8]) out.push({ what, use: `decode batch ${M} (packed W)`, M, N, K, packed: true })
  }
  return out
}

export default async function () {
  const addon = native()
  setNumThreads(THREADS)
  addon.setSimdLevel('auto')
  const lines = []
  const ratios = [] // { what, value, target, better: 'higher'|'lower', met }
  const ratio = (what, value, target, better = 'higher') => {
    const met = value === null ? null : better === 'higher' ? value >= target : value <= target
    ratios.push({ what, value, target, better, met })
  }
  const load0 = os.loadavg()
  const peak = measuredFmaPeak(addon, THREADS)
  const copyBps = copyBandwidth(256 * 2 ** 20)
  const memBps = 2 * copyBps // read + write traffic of the copy
  lines.push(
    `measured fp32 FMA peak (${THREADS} threads): ${peak.toFixed(1)} GFLOP/s; memory: one-thread copy ${(copyBps / 1e9).toFixed(2)} GB/s copied = ${(memBps / 1e9).toFixed(2)} GB/s of traffic; load average ${load0.map((x) => x.toFixed(1)).join(' ')}`
  )
  const noTorch = torchUnavailable()
  if (noTorch) lines.push(`PyTorch peer not run: ${noTorch}`)
  const results = {
    threads: THREADS,
    quick: QUICK,
    measuredFmaPeakGflops: peak,
    copyGBps: copyBps / 1e9,
    memoryTrafficGBps: memBps / 1e9,
    models: [],
    gemm: []
  }

  // ---- training step and decode, recode vs the eager PyTorch peer ---------------------------------------
  for (const spec of models()) {
    const sh = modelShape(spec.dir)
    const row = { model: spec.name, dir: spec.dir, batch: { sequences: spec.B, tokensPerSequence: spec.S } }
    const m = await loadModel(spec.dir, { device: 'cpu', maxBatch: 8, maxContext: Math.max(spec.S, 64 + spec.decodeSteps) })
    // the agreement check on the same weights, before any timing
    const V = sh.V
    const checkIds = [Array.from({ length: 24 }, (_, i) => (i * 7919 + 11) % V), Array.from({ length: 9 }, (_, i) => (i * 104729 + 5) % V)]
    row.check = noTorch ? null : await checkPeerLogits(m, spec.dir, checkIds, THREADS)
    const peerOk = row.check?.ok === true
    if (row.check)
      lines.push(
        `${spec.name}: peer check ${row.check.ok ? 'passed' : 'FAILED (peer not timed)'}: max |recode - torch fp32| ${row.check.recodeVsTorch32.toExponential(2)}, |recode - fp64| ${row.check.recodeVsTorch64.toExponential(2)}, |torch fp32 - fp64| ${row.check.torch32VsTorch64.toExponential(2)}, tolerance ${row.check.tolerance.toExponential(2)} (max |logit| ${row.check.maxAbsLogit.toFixed(2)})`
      )

    // training step: recode
    const batch = sftBatch(spec.B, spec.S, V)
    const tr = new ModelTrainer(m)
    let loss = NaN
    const cpu = []
    const stepSec = await timeRepsAsync(
      async () => {
        const c0 = process.cpuUsage()
        loss = (await tr.step(batch)).loss // gradients accumulate; the peer's are reset (grad = None), both free
        const c = process.cpuUsage(c0)
        cpu.push((c.user + c.system) / 1e6)
      },
      spec.B * spec.S > 300 ? 5 : 3
    )
    const stepCpu = median(cpu.slice(1)) // the first call was the warm-up
    tr.dispose()
    const flops = 6 * sh.matrixParams * spec.B * spec.S + spec.B * 3 * 2 * spec.S * spec.S * sh.H * sh.D
    row.recode = {
      stepSeconds: stepSec,
      stepCpuSeconds: stepCpu,
      loss,
      stepGflops: flops / stepSec / 1e9,
      peakShare: flops / stepSec / 1e9 / peak
    }

    // decode: recode (prompt of 32 tokens per row, then one-token steps)
    row.recode.decode = {}
    for (const b of [1, 8]) {
      const entries = Array.from({ length: b }, (_, s) => ({
        slot: s,
        tokens: Array.from({ length: 32 }, (_, i) => (i * 7919 + s) % Math.min(V, 400)),
        reset: true
      }))
      const rates = []
      for (let rep = 0; rep < (QUICK ? 1 : 3); rep++) {
        await m.step(entries)
        const t0 = process.hrtime.bigint()
        for (let s = 0; s < spec.decodeSteps; s++) await m.step(entries.map((e) => ({ slot: e.slot, tokens: [(s * 31 + e.slot) % 300] })))
        rates.push((b * spec.decodeSteps) / (Number(process.hrtime.bigint() - t0) / 1e9))
      }
      row.recode.decode[`batch${b}TokensPerS`] = median(rates)
    }
    m.dispose()

    // the peer, same token ids, same threads
    if (peerOk) {
      const ids = batch.map((s) => s.tokens)
      const tasks = [
        { op: 'train', ids, reps: QUICK ? 1 : 3 },
        { op: 'decode', batch: 1, prompt: 32, steps: spec.decodeSteps },
        { op: 'decode', batch: 8, prompt: 32, steps: spec.decodeSteps }
      ]
      const peer = runPeer({ dir: spec.dir, threads: THREADS, tasks })
      const [t, d1, d8] = peer.results
      row.torch = {
        version: peer.torch,
        threads: peer.threads,
        stepSeconds: t.seconds,
        stepCpuSeconds: t.cpuSeconds,
        loss: t.loss,
        decode: {
          batch1TokensPerS: d1.tokensPerSecond,
          batch8TokensPerS: d8.tokensPerSecond,
          cacheError: Math.max(d1.cacheError, d8.cacheError)
        }
      }
      row.lossAgreement = Math.abs(t.loss - loss) / Math.abs(t.loss)
      // the peer's cached decode must compute what its checked uncached forward computes, else it is not counted
      if (!(row.torch.decode.cacheError <= row.check.tolerance)) {
        lines.push(`${spec.name}: the peer's cached decode differs from its forward by ${row.torch.decode.cacheError}: decode not compared`)
        row.torch.decode = { refused: true, cacheError: row.torch.decode.cacheError }
      }
    }
    results.models.push(row)
    const vsTorch = row.torch ? row.torch.stepSeconds / stepSec : null
    ratio(`training step, ${spec.name}: recode speed / eager PyTorch (wall clock)`, vsTorch, TARGETS.trainVsTorch)
    // CPU seconds as well: on a shared machine the two programs do not get the same share of the cores
    ratio(
      `training step, ${spec.name}: recode / eager PyTorch in process CPU seconds`,
      row.torch ? row.torch.stepCpuSeconds / stepCpu : null,
      TARGETS.trainVsTorch
    )
    ratio(`training step, ${spec.name}: share of measured fp32 FMA peak`, row.recode.peakShare, TARGETS.trainPeakShare)
    for (const b of [1, 8]) {
      const ours = row.recode.decode[`batch${b}TokensPerS`]
      const theirs = row.torch?.decode[`batch${b}TokensPerS`]
      ratio(
        `decode batch ${b}, ${spec.name}: recode tokens/s / eager PyTorch with KV cache`,
        theirs ? ours / theirs : null,
        TARGETS.decodeVsTorch
      )
    }
    lines.push(
      `${spec.name}, ${spec.B} x ${spec.S} tokens: training step recode ${fmt(stepSec * 1e3, 1)} ms (${fmt(100 * row.recode.peakShare, 0)}% of peak, loss ${fmt(loss, 4)})` +
        ` ${fmt(stepCpu, 2)} CPU s` +
        (row.torch
          ? `, eager PyTorch ${fmt(row.torch.stepSeconds * 1e3, 1)} ms ${fmt(row.torch.stepCpuSeconds, 2)} CPU s (loss ${fmt(row.torch.loss, 4)}): ${fmt(vsTorch)}x wall, ${fmt(row.torch.stepCpuSeconds / stepCpu)}x CPU`
          : '') +
        `; decode tokens/s batch 1 ${fmt(row.recode.decode.batch1TokensPerS, 1)}` +
        (row.torch ? ` vs ${fmt(row.torch.decode.batch1TokensPerS, 1)}` : '') +
        `, batch 8 ${fmt(row.recode.decode.batch8TokensPerS, 1)}` +
        (row.torch ? ` vs ${fmt(row.torch.decode.batch8TokensPerS, 1)}` : '')
    )

    // ---- GEMM: every product of this model, recode vs OpenBLAS ----
    const shapes = gemmShapes(sh, spec.B * spec.S)
    let blas = null
    try {
      blas = openblasSgemmSeconds(
        shapes.map((g) => [g.M, g.N, g.K, g.ta === true, g.tb === true]),
        THREADS,
        QUICK ? 0 : 0.4
      )
    } catch (e) {
      lines.push(`OpenBLAS comparison skipped: ${String(e.message).split('\n')[0]}`)
    }
    let worst = null
    for (const [i, g] of shapes.entries()) {
      const flop = 2 * g.M * g.N * g.K
      let sec
      if (g.packed) {
        sec = addon.opGemmPackedTime(g.M, g.N, g.K, QUICK ? 1 : g.M === 1 ? 50 : 20)
      } else {
        const A = new Float32Array(g.M * g.K).fill(0.25)
        const Bm = new Float32Array(g.N * g.K).fill(0.5)
        const Cm = new Float32Array(g.M * g.N)
        sec = timeReps(() => addon.opGemm('fast', Cm, A, Bm, g.M, g.N, g.K, g.ta, g.tb, g.acc), { minReps: 3, budget: 0.4 })
      }
      const r = { model: spec.name, ...g, recodeGflops: flop / sec / 1e9, openblasGflops: blas ? flop / blas[i] / 1e9 : null }
      r.ratio = blas ? blas[i] / sec : null
      results.gemm.push(r)
      if (r.ratio !== null && (worst === null || r.ratio < worst.ratio)) worst = r
      ratio(`GEMM ${spec.name} ${g.what} ${g.use} (${g.M}x${g.N}x${g.K}): recode / OpenBLAS`, r.ratio, TARGETS.gemmVsOpenblas)
    }
    if (worst)
      lines.push(
        `GEMM on ${spec.name}'s ${shapes.length} products: worst recode/OpenBLAS ${fmt(worst.ratio)} (${worst.what}, ${worst.use})`
      )
  }

  // ---- decode attention at 16k context vs memory bandwidth ----------------------------------------------
  {
    const s = { T: 1, S: 16384, H: 14, Hkv: 2, D: 64, qPos0: 16383 }
    const rnd = (n) => Float32Array.from({ length: n }, (_, i) => ((i * 2654435761) % 1000) / 1000 - 0.5)
    const q = rnd(s.H * s.D)
    const k = rnd(s.S * s.Hkv * s.D)
    const v = rnd(s.S * s.Hkv * s.D)
    const out = new Float32Array(s.H * s.D)
    const lse = new Float32Array(s.H)
    const sec = timeReps(() => addon.opAttentionForward('decode', out, lse, q, k, v, s), { minReps: 5, budget: 0.5 })
    const kvBytes = 2 * s.S * s.Hkv * s.D * 4
    results.decodeAttention16k = { ...s, seconds: sec, kvGBps: kvBytes / sec / 1e9, bandwidthShare: kvBytes / sec / memBps }
    ratio(
      'decode attention at 16k context: KV read rate / measured memory traffic rate',
      kvBytes / sec / memBps,
      TARGETS.attentionBandwidthShare
    )
    lines.push(
      `decode attention S=16384 H=14/2 D=64: ${fmt(sec * 1e6, 0)} us, KV cache read at ${fmt(kvBytes / sec / 1e9)} GB/s = ${fmt((100 * kvBytes) / sec / memBps, 0)}% of the copy's traffic rate`
    )
  }

  // ---- sampling over 151,936 logits ------------------------------------------------------------------
  {
    const logits = new Float32Array(256 * VOCAB)
    let x = 12345
    for (let i = 0; i < logits.length; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0
      logits[i] = (x / 4294967296) * 8 - 4
    }
    const copyDst = new Float32Array(256 * VOCAB)
    const modes = [
      ['unfiltered', { temperature: 1 }],
      ['top-k 50', { topK: 50 }],
      ['top-p 0.9', { topP: 0.9 }],
      ['min-p 0.05', { minP: 0.05 }],
      ['top-k 50 + top-p 0.95 + min-p 0.05', { topK: 50, topP: 0.95, minP: 0.05 }]
    ]
    results.sampling = []
    let step = 0
    for (const batch of [1, 64, 256]) {
      const view = logits.subarray(0, batch * VOCAB)
      const dst = copyDst.subarray(0, batch * VOCAB)
      const copySec = timeReps(() => dst.set(view), { minReps: 5, budget: 0.3 })
      const parts = []
      for (const [name, opts] of modes) {
        const sec = await timeRepsAsync(() => sample(view, batch, { ...opts, seed: 1, step: step++, device: 'cpu' }), batch === 1 ? 20 : 5)
        results.sampling.push({ mode: name, batch, seconds: sec, copySeconds: copySec, copies: sec / copySec })
        ratio(`sampling ${name}, batch ${batch}: time / one copy of the logits`, sec / copySec, TARGETS.samplingCopies, 'lower')
        parts.push(`${name} ${fmt(sec / copySec, 1)}x`)
      }
      lines.push(`sampling batch ${batch} (one copy ${fmt(copySec * 1e3, 3)} ms): ${parts.join(', ')}`)
    }
  }

  // ---- GRPO step of the embedded default -------------------------------------------------------------
  {
    const grpo = await (await import('./grpo-step.bench.mjs')).default()
    results.grpo = { ...grpo.results, baselineSeconds: GRPO_BASELINE_SECONDS }
    ratio('GRPO step of the embedded default: 2.38 s baseline / now', GRPO_BASELINE_SECONDS / grpo.results.stepSeconds, TARGETS.grpoSpeedup)
    lines.push(grpo.summary)
  }

  results.ratios = ratios
  results.loadavg = { start: load0, end: os.loadavg() }
  results.machineNote =
    os.loadavg()[0] > 0.5 || load0[0] > 0.5
      ? 'taken on a loaded machine (other processes shared the 2 cores): see loadavg; wall-clock medians, peers measured in the same conditions'
      : 'machine idle apart from this run'
  results.simd = systemInfo().simdActive
  const table = ratios.map(
    (r) =>
      `  ${r.met === null ? '  -    ' : r.met ? '  met  ' : 'not met'}  ${fmt(r.value).padStart(7)} (target ${r.better === 'higher' ? '>=' : '<='} ${r.target})  ${r.what}`
  )
  const summary = [...lines, `ratios vs targets (${results.machineNote}):`, ...table].join('\n')
  return { name: 'peers', results, summary }
}
