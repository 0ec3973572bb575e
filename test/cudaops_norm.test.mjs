// RMSNorm and RoPE kernels (cuda/norm.cu) forward and backward against float64 references (checked by finite
// differences), fp32 and bf16, emulated (and on a GPU when usable).
import t from 'tap'
import { native } from '../dist/cjs/native.js'
import { rng } from './helpers.mjs'
import { kernelDevices, randomTensor, valuesOf, normRelError, tol, checkFiniteDifferences, dot } from './cudaops_ref.mjs'

const addon = native()

function rmsnormRef(x, w, rows, dim, eps) {
  const y = new Float64Array(rows * dim),
    rstd = new Float64Array(rows)
  for (let r = 0; r < rows; r++) {
    let ss = 0
    for (let c = 0; c < dim; c++) ss += x[r * dim + c] ** 2
    rstd[r] = 1 / Math.sqrt(ss / dim + eps)
    for (let c = 0; c < dim; c++) y[r * dim + c] = x[r * dim + c] * rstd[r] * w[c]
  }
  return { y, rstd }
}
// dx = rstd * (w dy) - x rstd^3 mean(w dy x);  dw = sum_rows dy x rstd
function rmsnormBackwardRef(x, w, dy, rows, dim, eps) {
  const { rstd } = rmsnormRef(x, w, rows, dim, eps)
  const dx = new Float64Array(rows * dim),
    dw = new Float64Array(dim)
  for (let r = 0; r < rows; r++) {
    let m = 0
    for (let c = 0; c < dim; c++) m += w[c] * dy[r * dim + c] * x[r * dim + c]
    m /= dim
    for (let c = 0; c < dim; c++) {
      dx[r * dim + c] = rstd[r] * w[c] * dy[r * dim + c] - x[r * dim + c] * rstd[r] ** 3 * m
      dw[c] += dy[r * dim + c] * x[r * dim + c] * rstd[r]
    }
  }
  return { dx, dw }
}

// Rotate-half RoPE; the angle is the fp32 product position * invFreq (as HF computes it), sign -1 = backward.
function ropeRef(x, tokens, heads, D, positions, invFreq, sign = 1) {
  const y = new Float64Array(x.length),
    half = D / 2
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * D
      for (let i = 0; i < half; i++) {
        const a = Math.fround(positions[t] * invFreq[i])
        const c = Math.cos(a),
          s = sign * Math.sin(a)
        y[base + i] = x[base + i] * c - x[base + i + half] * s
        y[base + i + half] = x[base + i + half] * c + x[base + i] * s
      }
    }
  }
  return y
}

t.test('reference backwards match finite differences', async (t) => {
  const r = rng(t, 'norm fd')
  const rows = 3,
    dim = 7,
    eps = 1e-5
  const x = Float64Array.from({ length: rows * dim }, r.normal),
    w = Float64Array.from({ length: dim }, r.normal)
  const W = Float64Array.from({ length: rows * dim }, r.normal)
  const g = rmsnormBackwardRef(x, w, W, rows, dim, eps)
  const loss = () => dot(rmsnormRef(x, w, rows, dim, eps).y, W)
  checkFiniteDifferences(t, 'rmsnorm dx', loss, x, g.dx, r)
  checkFiniteDifferences(t, 'rmsnorm dweight', loss, w, g.dw, r)
  const tokens = 4,
    heads = 2,
    D = 6
  const pos = [0, 3, 11, 250],
    inv = Float32Array.from([1, 0.1, 0.01])
  const xr = Float64Array.from({ length: tokens * heads * D }, r.normal)
  const Wr = Float64Array.from({ length: xr.length }, r.normal)
  checkFiniteDifferences(
    t,
    'rope dx',
    () => dot(ropeRef(xr, tokens, heads, D, pos, inv), Wr),
    xr,
    ropeRef(Wr, tokens, heads, D, pos, inv, -1),
    r
  )
})

for (const device of kernelDevices(t, addon)) {
  for (const dtype of ['f32', 'bf16']) {
    t.test(`rmsnorm forward and backward, ${dtype}, ${device}`, async (t) => {
      const r = rng(t, `${device} ${dtype}`)
      const tl = tol[dtype]
      for (const [rows, dim] of [
        [1, 1],
        [17, 17],
        [100, 1000],
        [3, 4097],
        [70, 64]
      ]) {
        const label = `rows=${rows} dim=${dim}`
        const eps = 1e-6
        const x = randomTensor(r, rows * dim, dtype),
          w = randomTensor(r, dim, dtype),
          dy = randomTensor(r, rows * dim, dtype)
        const want = rmsnormRef(x.values, w.values, rows, dim, eps)
        const f = addon.cudaOpsRmsnormForward(device, { rows, dim, dtype, x: x.data, weight: w.data, eps })
        t.ok(normRelError(valuesOf(f.y), want.y) < tl, `y ${label}: ${normRelError(valuesOf(f.y), want.y).toExponential(2)}`)
        t.ok(normRelError(f.rstd, want.rstd) < 1e-5, `rstd ${label}`)
        const g = rmsnormBackwardRef(x.values, w.values, dy.values, rows, dim, eps)
        // dx is a difference of two terms that cancel almost exactly when dim = 1; its error is measured
        // against the size of the terms, rstd * w * dy.
        let termScale = 0
        for (let i = 0; i < rows * dim; i++)
          termScale = Math.max(termScale, Math.abs(want.rstd[Math.floor(i / dim)] * w.values[i % dim] * dy.values[i]))
        for (const twoStage of [true, false]) {
          const dw0 = randomTensor(r, dim, 'f32')
          const b = addon.cudaOpsRmsnormBackward(device, {
            rows,
            dim,
            dtype,
            x: x.data,
            weight: w.data,
            rstd: f.rstd,
            dy: dy.data,
            dweight: dw0.data,
            twoStage
          })
          t.ok(
            normRelError(valuesOf(b.dx), g.dx, termScale) < tl,
            `dx ${label}: ${normRelError(valuesOf(b.dx), g.dx, termScale).toExponential(2)}`
          )
          const wantDw = g.dw.map((v, i) => v + dw0.values[i])
          t.ok(
            normRelError(b.dweight, wantDw) < (dtype === 'bf16' ? tl : 1e-5),
            `dweight (accumulated, twoStage=${twoStage}) ${label}: ${normRelError(b.dweight, wantDw).toExponential(2)}`
          )
        }
        // dx accumulated into an existing gradient (the residual stream's)
        const dx0 = randomTensor(r, rows * dim, dtype)
        const b2 = addon.cudaOpsRmsnormBackward(device, {
          rows,
          dim,
          dtype,
          x: x.data,
          weight: w.data,
          rstd: f.rstd,
          dy: dy.data,
          dx: dx0.data
        })
        const wantDx = g.dx.map((v, i) => v + dx0.values[i])
        t.ok(normRelError(valuesOf(b2.dx), wantDx, termScale) < tl, `dx accumulated ${label}`)
      }
    })

    t.test(`rope forward and backward, ${dtype}, ${device}`, async (t) => {
      const r = rng(t, `${device} ${dtype} rope`)
      const tl = tol[dtype]
      for (const [tokens, heads, D] of [
        [1, 1, 2],
        [17, 3, 16],
        [100, 2, 128],
        [5, 4, 64]
      ]) {
        const label = `tokens=${tokens} heads=${heads} D=${D}`
        const x = randomTensor(r, tokens * heads * D, dtype)
        const positions = Int32Array.from({ length: tokens }, () => r.int(0, 4000))
        const theta = 1e6
        const invFreq = Float32Array.from({ length: D / 2 }, (_, i) => 1 / theta ** ((2 * i) / D))
        const want = ropeRef(x.values, tokens, heads, D, positions, invFreq)
        const y = addon.cudaOpsRopeForward(device, { tokens, heads, D, dtype, x: x.data, positions, invFreq })
        t.ok(normRelError(valuesOf(y), want) < tl, `forward ${label}: ${normRelError(valuesOf(y), want).toExponential(2)}`)
        const yIn = addon.cudaOpsRopeForward(device, { tokens, heads, D, dtype, x: x.data, positions, invFreq, inPlace: true })
        t.same(Array.from(yIn), Array.from(y), `in place equals out of place ${label}`)
        const wantB = ropeRef(x.values, tokens, heads, D, positions, invFreq, -1)
        const dx = addon.cudaOpsRopeBackward(device, { tokens, heads, D, dtype, x: x.data, positions, invFreq })
        t.ok(normRelError(valuesOf(dx), wantB) < tl, `backward ${label}: ${normRelError(valuesOf(dx), wantB).toExponential(2)}`)
      }
    })
  }
}

t.test('bad arguments throw ERR_INVALID_ARG, never crash', async (t) => {
  const x = new Float32Array(6)
  t.throws(() => addon.cudaOpsRmsnormForward('emulated', { rows: 2, dim: 3, x, weight: new Float32Array(2) }), {
    code: 'ERR_INVALID_ARG',
    message: /weight/
  })
  t.throws(() => addon.cudaOpsRmsnormForward('emulated', { rows: 2, dim: 3, x, weight: new Float32Array(3), eps: -1 }), {
    code: 'ERR_INVALID_ARG',
    message: /eps/
  })
  t.throws(() => addon.cudaOpsRmsnormBackward('emulated', { rows: 2, dim: 3, x, weight: new Float32Array(3), dy: x }), {
    code: 'ERR_INVALID_ARG',
    message: /rstd/
  })
  t.throws(
    () => addon.cudaOpsRopeForward('emulated', { tokens: 1, heads: 2, D: 3, x, positions: Int32Array.of(0), invFreq: new Float32Array(1) }),
    { code: 'ERR_INVALID_ARG', message: /even/ }
  )
  t.throws(
    () =>
      addon.cudaOpsRopeForward('emulated', { tokens: 1, heads: 3, D: 2, x, positions: Float32Array.of(0), invFreq: new Float32Array(1) }),
    { code: 'ERR_INVALID_ARG', message: /positions/ }
  )
})
