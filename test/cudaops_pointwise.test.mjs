// Pointwise kernels (cuda/pointwise.cu): SwiGLU forward/backward, embedding forward/backward, residual add,
// fp32<->bf16 casts, sum of squares (global-norm clipping) and AdamW, against float64 references, with the odd
// sizes 1, 17, 1000, 4097, emulated (and on a GPU when usable).
import t from 'tap'
import { native } from '../dist/cjs/native.js'
import { rng, oddSizes } from './helpers.mjs'
import { kernelDevices, randomTensor, valuesOf, normRelError, tol, checkFiniteDifferences, dot, toBf16Bits } from './cudaops_ref.mjs'

const addon = native()

const sigmoid = (x) => 1 / (1 + Math.exp(-x))
const swigluRef = (g, u) => g.map((x, i) => x * sigmoid(x) * u[i])
function swigluBackwardRef(g, u, d) {
  const dg = new Float64Array(g.length),
    du = new Float64Array(g.length)
  for (let i = 0; i < g.length; i++) {
    const s = sigmoid(g[i])
    dg[i] = d[i] * u[i] * s * (1 + g[i] * (1 - s))
    du[i] = d[i] * g[i] * s
  }
  return { dg, du }
}

t.test('reference swiglu backward matches finite differences', async (t) => {
  const r = rng(t, 'swiglu fd')
  const n = 9
  const g = Float64Array.from({ length: n }, () => 3 * r.normal()),
    u = Float64Array.from({ length: n }, r.normal)
  const W = Float64Array.from({ length: n }, r.normal)
  const ref = swigluBackwardRef(g, u, W)
  const loss = () => dot(swigluRef(g, u), W)
  checkFiniteDifferences(t, 'dgate', loss, g, ref.dg, r)
  checkFiniteDifferences(t, 'dup', loss, u, ref.du, r)
})

for (const device of kernelDevices(t, addon)) {
  for (const dtype of ['f32', 'bf16']) {
    t.test(`swiglu, residual add, embedding, ${dtype}, ${device}`, async (t) => {
      const r = rng(t, `${device} ${dtype}`)
      const tl = tol[dtype]
      for (const n of oddSizes) {
        const g = randomTensor(r, n, dtype, 3),
          u = randomTensor(r, n, dtype),
          d = randomTensor(r, n, dtype)
        const out = addon.cudaOpsSwigluForward(device, { dtype, gate: g.data, up: u.data })
        t.ok(normRelError(valuesOf(out), swigluRef(g.values, u.values)) < tl, `swiglu forward n=${n}`)
        const b = addon.cudaOpsSwigluBackward(device, { dtype, gate: g.data, up: u.data, dout: d.data })
        const ref = swigluBackwardRef(g.values, u.values, d.values)
        t.ok(normRelError(valuesOf(b.dgate), ref.dg) < tl, `swiglu dgate n=${n}`)
        t.ok(normRelError(valuesOf(b.dup), ref.du) < tl, `swiglu dup n=${n}`)
        const sum = addon.cudaOpsResidualAdd(device, { dtype, a: g.data, b: u.data })
        t.ok(
          normRelError(
            valuesOf(sum),
            g.values.map((x, i) => x + u.values[i])
          ) < tl,
          `residual add n=${n}`
        )
      }
      for (const [tokens, dim, vocab] of [
        [1, 1, 1],
        [17, 17, 5],
        [100, 1000, 37],
        [3, 4097, 2]
      ]) {
        const label = `tokens=${tokens} dim=${dim} vocab=${vocab}`
        const ids = Int32Array.from({ length: tokens }, () => r.int(0, vocab - 1)) // repeats on purpose
        const table = randomTensor(r, vocab * dim, dtype)
        const out = addon.cudaOpsEmbeddingForward(device, { dim, vocab, dtype, ids, table: table.data })
        const want = new Float64Array(tokens * dim)
        for (let i = 0; i < tokens; i++) for (let c = 0; c < dim; c++) want[i * dim + c] = table.values[ids[i] * dim + c]
        t.same(Array.from(valuesOf(out)), Array.from(want), `embedding forward (exact copy) ${label}`)
        const dout = randomTensor(r, tokens * dim, dtype),
          dtable0 = randomTensor(r, vocab * dim, 'f32')
        const dtable = addon.cudaOpsEmbeddingBackward(device, { dim, vocab, dtype, ids, dout: dout.data, dtable: dtable0.data })
        const wantD = Float64Array.from(dtable0.values)
        for (let i = 0; i < tokens; i++) for (let c = 0; c < dim; c++) wantD[ids[i] * dim + c] += dout.values[i * dim + c]
        t.ok(normRelError(dtable, wantD) < 1e-6, `embedding backward (accumulated scatter) ${label}`)
        const again = addon.cudaOpsEmbeddingBackward(device, { dim, vocab, dtype, ids, dout: dout.data, dtable: dtable0.data })
        t.same(Array.from(again), Array.from(dtable), `embedding backward is deterministic ${label}`)
      }
    })
  }

  t.test(`casts, sum of squares, AdamW, ${device}`, async (t) => {
    const r = rng(t, device)
    for (const n of oddSizes) {
      const x = randomTensor(r, n, 'f32', 100)
      if (n > 4) {
        x.data[0] = NaN
        x.data[1] = Infinity
        x.data[2] = -0
        x.data[3] = 3.4e38
      }
      const bits = addon.cudaOpsCast(device, { x: x.data })
      t.ok(bits instanceof Uint16Array, 'f32 -> bf16 gives bf16 bits')
      t.same(Array.from(bits), Array.from(x.data, toBf16Bits), `f32 -> bf16 rounds to nearest even n=${n}`)
      const back = addon.cudaOpsCast(device, { x: bits })
      t.same(
        Array.from(back, (v) => toBf16Bits(v)),
        Array.from(bits),
        `bf16 -> f32 is exact n=${n}`
      )
    }
    for (const n of [...oddSizes, 100003]) {
      const g = randomTensor(r, n, 'f32')
      let want = 0.5
      for (const v of g.values) want += v * v
      const got = addon.cudaOpsSumSquares(device, { g: g.data, init: 0.5 })
      t.ok(Math.abs(got - want) / want < 1e-5, `sum of squares n=${n}: ${got} vs ${want}`)
      t.equal(addon.cudaOpsSumSquares(device, { g: g.data, init: 0.5 }), got, `sum of squares is deterministic n=${n}`)
    }
    for (const n of oddSizes) {
      const param = randomTensor(r, n, 'f32'),
        m = randomTensor(r, n, 'f32', 0.01)
      const v = Float32Array.from({ length: n }, () => r.next() * 1e-4)
      const grad = randomTensor(r, n, 'f32', 0.1)
      const opts = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradScale: 0.5 }
      for (const step of [1, 2, 50]) {
        const res = addon.cudaOpsAdamw(device, { param: param.data, grad: grad.data, m: m.data, v, step, bf16Copy: true, ...opts })
        // torch.optim.AdamW: decoupled decay, then the bias-corrected Adam step
        const wantP = new Float64Array(n),
          wantM = new Float64Array(n),
          wantV = new Float64Array(n)
        for (let i = 0; i < n; i++) {
          const gi = grad.values[i] * opts.gradScale
          wantM[i] = opts.beta1 * m.values[i] + (1 - opts.beta1) * gi
          wantV[i] = opts.beta2 * v[i] + (1 - opts.beta2) * gi * gi
          const mh = wantM[i] / (1 - opts.beta1 ** step),
            vh = wantV[i] / (1 - opts.beta2 ** step)
          wantP[i] = param.values[i] * (1 - opts.lr * opts.weightDecay) - (opts.lr * mh) / (Math.sqrt(vh) + opts.eps)
        }
        t.ok(normRelError(res.m, wantM) < 1e-5 && normRelError(res.v, wantV) < 1e-5, `adamw moments n=${n} step=${step}`)
        const dp = wantP.map((p, i) => p - param.values[i]),
          gotDp = Array.from(res.param, (p, i) => p - param.values[i])
        // the update is read back through an fp32 parameter: allow 1e-3 of the update plus the parameter's rounding
        let badP = 0
        for (let i = 0; i < n; i++) {
          if (!(Math.abs(res.param[i] - wantP[i]) <= 1e-3 * Math.abs(dp[i]) + 2 ** -22 * Math.abs(wantP[i]))) badP++
        }
        t.equal(badP, 0, `adamw parameter update n=${n} step=${step}: norm rel err ${normRelError(gotDp, dp).toExponential(2)}`)
        t.same(Array.from(res.paramBf16), Array.from(res.param, toBf16Bits), `adamw bf16 copy n=${n} step=${step}`)
      }
    }
  })
}

t.test('bad arguments throw ERR_INVALID_ARG, never crash', async (t) => {
  t.throws(() => addon.cudaOpsSwigluForward('emulated', { gate: new Float32Array(3), up: new Float32Array(2) }), {
    code: 'ERR_INVALID_ARG',
    message: /up/
  })
  t.throws(() => addon.cudaOpsSwigluForward('emulated', { gate: new Float32Array(3), up: new Float32Array(3), dtype: 'bf16' }), {
    code: 'ERR_INVALID_ARG',
    message: /gate/
  })
  t.throws(() => addon.cudaOpsEmbeddingForward('emulated', { dim: 2, vocab: 3, ids: Int32Array.of(0, 3), table: new Float32Array(6) }), {
    code: 'ERR_INVALID_ARG',
    message: /ids.*entry 1/
  })
  t.throws(() => addon.cudaOpsEmbeddingBackward('emulated', { dim: 2, vocab: 3, ids: Int32Array.of(-1), dout: new Float32Array(2) }), {
    code: 'ERR_INVALID_ARG',
    message: /ids/
  })
  t.throws(() => addon.cudaOpsCast('emulated', { x: new Int32Array(2) }), { code: 'ERR_INVALID_ARG', message: /options\.x/ })
  const p = new Float32Array(4)
  t.throws(() => addon.cudaOpsAdamw('emulated', { param: p, grad: p, m: p, v: p, step: 0 }), { code: 'ERR_INVALID_ARG', message: /step/ })
  t.throws(() => addon.cudaOpsAdamw('emulated', { param: p, grad: p, m: p, v: p, step: 1, beta2: 1 }), {
    code: 'ERR_INVALID_ARG',
    message: /beta2/
  })
  t.throws(() => addon.cudaOpsAdamw('emulated', { param: p, grad: new Float32Array(3), m: p, v: p, step: 1 }), {
    code: 'ERR_INVALID_ARG',
    message: /grad/
  })
})
