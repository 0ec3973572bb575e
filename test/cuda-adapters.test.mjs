// The LoRA / DoRA kernels of the CUDA trainer (cuda/adapters.cu) against plainly written float64 references, on
// 'emulated' (SIMT emulation, always) and 'cuda' (when a GPU is usable): the dropout mask identical to the CPU's
// dropout_keep (src/train/adapters.cpp, through the addon's dropoutMask), the masked add of the backward, the forward
// combination (LoRA and DoRA, with and without dropout, bias), the gradient scaling, DoRA's dm reduction, the row
// norms of W + s B A and the merged weight. Random inputs with a printed seed, odd sizes, bad options.
import t from 'tap'
import { require, rng, maxRelError, oddSizes, tolerance } from './helpers.mjs'

const { native } = require('../dist/cjs/native.js')
const addon = native()
const info = addon.systemInfo()
const devices = ['emulated']
if (info.cuda.available) devices.push('cuda')
else t.comment(`device 'cuda' skipped: ${info.cuda.reason}`)

const tol = tolerance.f32 * 10 // fp32 kernels against float64 references (single products and short sums)
// relative error floored at 1% of the reference's largest entry (sums of fp32 terms that nearly cancel)
const relErr = (got, ref) => maxRelError(got, ref, 1e-2 * ref.reduce((m, v) => Math.max(m, Math.abs(v)), 1e-30))
const rand = (r, n, s = 1) => Float32Array.from({ length: n }, () => r.normal() * s)
const shapes = [
  [1, 17],
  [17, 1000],
  [1000, 17],
  [4097, 1]
] // [rows, columns]: every odd size on both axes

for (const device of devices) {
  t.test(`${device}: dropout mask and masked add equal the CPU's Philox mask`, async (t) => {
    const r = rng(t)
    for (const n of oddSizes) {
      for (const p of [0, 0.3, 0.9]) {
        const seed = r.int(0, 2 ** 40)
        const offset = r.int(0, 2 ** 40)
        const x = rand(r, n)
        const keep = addon.dropoutMask(n, p, seed, offset)
        const out = addon.cudaAdapterKernel(device, 'dropout', { x, seed, offset, p })
        const ref = Float32Array.from(x, (v, i) => (keep[i] ? v / (1 - p) : 0))
        t.ok(maxRelError(out, ref, 1e-6) <= 1e-6, `n=${n} p=${p} seed ${seed} offset ${offset}: drop(x) = the CPU mask / (1 - p)`)
        const dx = rand(r, n)
        const adx = rand(r, n)
        const got = addon.cudaAdapterKernel(device, 'dropoutAdd', { dx, adx, seed, offset, p })
        const want = Float32Array.from(dx, (v, i) => v + (keep[i] ? adx[i] / (1 - p) : 0))
        t.ok(relErr(got, want) <= tol, `n=${n} p=${p}: dx += mask / (1 - p) adx`)
        if (p === 0.3 && n === 4097) {
          const kept = keep.reduce((s, k) => s + k, 0) / n
          t.ok(Math.abs(kept - 0.7) < 0.05, `keep rate ${kept.toFixed(3)} near 1 - p`)
        }
      }
    }
  })

  t.test(`${device}: forward combination, gradient scaling and DoRA's dm equal float64 references`, async (t) => {
    const r = rng(t)
    for (const [M, N] of shapes) {
      for (const dora of [false, true]) {
        for (const drop of [false, true]) {
          if (drop && !dora) continue // LoRA's combination has no dropout term (drop(x) enters through u)
          const label = `${dora ? 'DoRA' : 'LoRA'}${drop ? ' dropout' : ''} M=${M} N=${N}`
          const y0 = rand(r, M * N)
          const lora = rand(r, M * N)
          const baseDrop = drop ? rand(r, M * N) : undefined
          const bias = r.next() < 0.5 ? rand(r, N, 0.1) : undefined
          const magnitude = dora ? Float32Array.from({ length: N }, () => 0.5 + r.next()) : undefined
          const norm = dora ? Float32Array.from({ length: N }, () => 0.5 + r.next()) : undefined
          const scaling = 2
          const got = addon.cudaAdapterKernel(device, 'combine', { M, N, y0, baseDrop, lora, magnitude, norm, scaling, bias })
          const y = new Float64Array(M * N)
          const pre = new Float64Array(M * N)
          for (let i = 0; i < M * N; i++) {
            const o = i % N
            const sl = scaling * lora[i]
            if (!dora) y[i] = y0[i] + sl
            else {
              const c = magnitude[o] / norm[o]
              const bd = drop ? baseDrop[i] : y0[i]
              pre[i] = bd + sl
              y[i] = drop ? y0[i] + c * pre[i] - bd : c * pre[i]
            }
            if (bias) y[i] += bias[o]
          }
          t.ok(relErr(got.y, y) <= tol, `${label}: y (bias ${bias ? 'yes' : 'no'})`)
          if (dora) t.ok(relErr(got.pre, pre) <= tol, `${label}: pre = drop(x) W^T + s lora`)

          const dy = rand(r, M * N)
          const gs = addon.cudaAdapterKernel(device, 'gradScale', { M, N, dy, magnitude, norm, scaling })
          const c = (o) => (dora ? magnitude[o] / norm[o] : 1)
          t.ok(
            relErr(
              gs.gs,
              Float64Array.from(dy, (g, i) => scaling * c(i % N) * g)
            ) <= tol,
            `${label}: gs = s c dy`
          )
          if (dora)
            t.ok(
              relErr(
                gs.e,
                Float64Array.from(dy, (g, i) => (c(i % N) - 1) * g)
              ) <= tol,
              `${label}: e = (c - 1) dy`
            )
          else t.equal(gs.e, undefined, `${label}: no e for LoRA`)

          if (dora) {
            const dm0 = rand(r, N)
            const preF = Float32Array.from(pre)
            const dm = addon.cudaAdapterKernel(device, 'magnitudeGrad', { M, N, dy, pre: preF, norm, dm: dm0 })
            const ref = Float64Array.from(dm0)
            for (let i = 0; i < M * N; i++) ref[i % N] += (dy[i] * preF[i]) / norm[i % N]
            t.ok(relErr(dm, ref) <= tol, `${label}: dm += sum_t dy pre / n (accumulating)`)
          }
        }
      }
    }
  })

  t.test(`${device}: DoRA row norms and merged weights equal float64 references`, async (t) => {
    const r = rng(t)
    for (const [N, K] of shapes) {
      const W = rand(r, N * K, 0.2)
      const ba = rand(r, N * K, 0.1)
      const scaling = 1.5
      const rows = Float64Array.from(W, (w, i) => w + Math.fround(scaling * ba[i]))
      const norm = new Float64Array(N)
      for (let o = 0; o < N; o++) {
        let s = 0
        for (let i = 0; i < K; i++) s += rows[o * K + i] ** 2
        norm[o] = Math.sqrt(s)
      }
      t.ok(
        maxRelError(addon.cudaAdapterKernel(device, 'weightNorm', { N, K, W, ba, scaling }), norm, 1e-6) <= tol,
        `N=${N} K=${K}: ||W + s B A|| per row`
      )
      t.ok(relErr(addon.cudaAdapterKernel(device, 'merge', { N, K, W, ba, scaling }), rows) <= tol, `N=${N} K=${K}: LoRA merge W + s B A`)
      const magnitude = Float32Array.from({ length: N }, () => 0.5 + r.next())
      const merged = Float64Array.from(rows, (v, i) => (v * magnitude[Math.floor(i / K)]) / norm[Math.floor(i / K)])
      t.ok(
        relErr(addon.cudaAdapterKernel(device, 'merge', { N, K, W, ba, scaling, magnitude }), merged) <= tol,
        `N=${N} K=${K}: DoRA merge (m / n) (W + s B A)`
      )
    }
  })

  t.test(`${device}: bad options are refused before any device work`, async (t) => {
    const x = new Float32Array(4)
    t.throws(() => addon.cudaAdapterKernel(device, 'nope', {}), { code: 'ERR_INVALID_ARG', message: /op/ }, 'unknown op')
    t.throws(
      () => addon.cudaAdapterKernel(device, 'dropout', { x, seed: 1, offset: 0, p: 1 }),
      { code: 'ERR_INVALID_ARG', message: /options\.p/ },
      'p = 1'
    )
    t.throws(
      () => addon.cudaAdapterKernel(device, 'dropout', { x, seed: -1, offset: 0, p: 0.1 }),
      { code: 'ERR_INVALID_ARG', message: /options\.seed/ },
      'negative seed'
    )
    t.throws(
      () => addon.cudaAdapterKernel(device, 'dropoutAdd', { dx: x, adx: new Float32Array(3), seed: 1, offset: 0, p: 0.1 }),
      { code: 'ERR_INVALID_ARG', message: /options\.adx/ },
      'length mismatch'
    )
    t.throws(
      () => addon.cudaAdapterKernel(device, 'combine', { M: 2, N: 2, y0: x, lora: x, scaling: 1, magnitude: new Float32Array(2) }),
      { code: 'ERR_INVALID_ARG', message: /options\.norm/ },
      'DoRA without norm'
    )
    t.throws(
      () => addon.cudaAdapterKernel(device, 'merge', { N: 2, K: 2, W: new Float64Array(4), ba: x, scaling: 1 }),
      { code: 'ERR_INVALID_ARG', message: /options\.W/ },
      'wrong array type'
    )
    t.throws(
      () => addon.cudaAdapterKernel(device, 'weightNorm', { N: 0, K: 2, W: x, ba: x, scaling: 1 }),
      { code: 'ERR_INVALID_ARG', message: /options\.N/ },
      'N = 0'
    )
    t.throws(() => addon.cudaAdapterKernel('cpu', 'merge', {}), { code: 'ERR_INVALID_ARG' }, 'device cpu')
  })
}
