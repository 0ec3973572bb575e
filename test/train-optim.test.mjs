// AdamW (torch.optim.AdamW semantics, fp32 master weights and moments) and global gradient-norm clipping,
// against a float64 reference written here, the single-threaded native reference loop, and torch itself.
import t from 'tap'
import { native } from '../dist/cjs/native.js'
import { adamwStep, adamwStepAsync, gradNorm, clipGradNorm } from '../dist/cjs/train/optim.js'
import { rng, poison, maxRelError, tolerance, oddSizes } from './helpers.mjs'
import { torchUnavailable, runTorch } from './train-torch.mjs'

const addon = native()

function randomTensors(r, sizes, scale = 1) {
  return sizes.map((n) => Float32Array.from({ length: n }, () => r.normal() * scale))
}

// Plain float64 AdamW, the formulas of torch.optim.AdamW.
function adamwReference(p, g, m, v, h, decay, gradScale) {
  const bc1 = 1 - h.beta1 ** h.step
  const bc2 = 1 - h.beta2 ** h.step
  for (let i = 0; i < p.length; i++) {
    const gi = g[i] * gradScale
    p[i] *= 1 - h.lr * (decay ? h.weightDecay : 0)
    m[i] = m[i] * h.beta1 + (1 - h.beta1) * gi
    v[i] = v[i] * h.beta2 + (1 - h.beta2) * gi * gi
    p[i] += -(h.lr / bc1) * (m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + h.eps))
  }
}

function bf16Bits(x) {
  const f = new Float32Array([x])
  const u = new Uint32Array(f.buffer)[0]
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff
}

t.test('AdamW over many tensors matches a float64 reference over several steps', async (t) => {
  const r = rng(t)
  const sizes = [...oddSizes, 40000]
  const params = randomTensors(r, sizes)
  const m = sizes.map((n) => new Float32Array(n))
  const v = sizes.map((n) => new Float32Array(n))
  const refP = params.map((p) => Float64Array.from(p))
  const refM = sizes.map((n) => new Float64Array(n))
  const refV = sizes.map((n) => new Float64Array(n))
  const decay = sizes.map((_, i) => i % 2 === 0)
  const bf16 = sizes.map((n) => poison(new Uint16Array(n)))
  for (let step = 1; step <= 4; step++) {
    const grads = randomTensors(r, sizes, 0.1 * step)
    const h = { lr: 1e-2 / step, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step }
    const gradScale = step === 3 ? 0.5 : 1
    adamwStep(
      sizes.map((_, i) => ({ param: params[i], grad: grads[i], expAvg: m[i], expAvgSq: v[i], decay: decay[i], bf16: bf16[i] })),
      h,
      { gradScale }
    )
    sizes.forEach((_, i) => adamwReference(refP[i], grads[i], refM[i], refV[i], h, decay[i], gradScale))
  }
  // Relative errors, floored at 5% of the tensor's largest value (moments near zero carry cancellation).
  const floor = (ref) => 0.05 * Math.max(...Array.from(ref, Math.abs))
  sizes.forEach((n, i) => {
    t.ok(maxRelError(params[i], refP[i], 1e-3) < tolerance.f32, `params, n=${n} (${maxRelError(params[i], refP[i], 1e-3)})`)
    t.ok(maxRelError(m[i], refM[i], floor(refM[i])) < tolerance.f32, `exp_avg, n=${n} (${maxRelError(m[i], refM[i], floor(refM[i]))})`)
    t.ok(maxRelError(v[i], refV[i], floor(refV[i])) < tolerance.f32, `exp_avg_sq, n=${n} (${maxRelError(v[i], refV[i], floor(refV[i]))})`)
    let same = true
    for (let k = 0; k < n; k++)
      if (bf16[i][k] !== bf16Bits(params[i][k])) {
        same = false
        break
      }
    t.ok(same, `bf16 copy is the rounded master weight, n=${n}`)
  })
})

t.test('the multi-threaded path equals the plain reference loop bit for bit, for any thread count', async (t) => {
  const r = rng(t)
  const sizes = [1, 17, 100000, 4097]
  const start = randomTensors(r, sizes)
  const grads = randomTensors(r, sizes)
  const run = (options, threads) => {
    addon.setNumThreads(threads)
    const p = start.map((x) => x.slice())
    const m = sizes.map((n) => new Float32Array(n).fill(0.01))
    const v = sizes.map((n) => new Float32Array(n).fill(0.02))
    adamwStep(
      sizes.map((_, i) => ({ param: p[i], grad: grads[i], expAvg: m[i], expAvgSq: v[i] })),
      { lr: 1e-3, weightDecay: 0.01, step: 7 },
      options
    )
    return [p, m, v]
  }
  const hw = addon.systemInfo().hardwareThreads
  const ref = run({ reference: true }, 1)
  for (const level of ['baseline', 'auto']) {
    const active = addon.setSimdLevel(level)
    for (const threads of [1, 2, 3]) {
      const fast = run({}, threads)
      for (let k = 0; k < 3; k++) {
        sizes.forEach((n, i) =>
          t.ok(
            Buffer.from(fast[k][i].buffer).equals(Buffer.from(ref[k][i].buffer)),
            `${['param', 'exp_avg', 'exp_avg_sq'][k]} n=${n}, ${active}, ${threads} threads`
          )
        )
      }
    }
  }
  addon.setNumThreads(hw)
})

t.test('AdamW agrees with torch.optim.AdamW (python3-torch)', { skip: torchUnavailable() }, async (t) => {
  const r = rng(t)
  const sizes = [1, 17, 1000]
  const params = randomTensors(r, sizes)
  const start = params.map((p) => Array.from(p))
  const decay = [true, false, true]
  const m = sizes.map((n) => new Float32Array(n))
  const v = sizes.map((n) => new Float32Array(n))
  const allGrads = []
  const lrs = [1e-3, 5e-4, 2e-3]
  for (let s = 0; s < 3; s++) {
    const grads = randomTensors(r, sizes, 0.5)
    allGrads.push(grads.map((g) => Array.from(g)))
    adamwStep(
      sizes.map((_, i) => ({ param: params[i], grad: grads[i], expAvg: m[i], expAvgSq: v[i], decay: decay[i] })),
      { lr: lrs[s], beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: s + 1 }
    )
  }
  const [ref] = runTorch('train_optim.py', [
    { op: 'adamw', params: start, grads: allGrads, lrs, decay, lr: lrs[0], beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 }
  ])
  const floor = (x) => 0.05 * Math.max(...x.map(Math.abs))
  sizes.forEach((n, i) => {
    const e = [
      maxRelError(params[i], ref.params[i], 1e-3),
      maxRelError(m[i], ref.expAvg[i], floor(ref.expAvg[i])),
      maxRelError(v[i], ref.expAvgSq[i], floor(ref.expAvgSq[i]))
    ]
    t.ok(e[0] < 1e-5, `params n=${n}: ${e[0]}`)
    t.ok(e[1] < 1e-5, `exp_avg n=${n}: ${e[1]}`)
    t.ok(e[2] < 1e-5, `exp_avg_sq n=${n}: ${e[2]}`)
  })
})

t.test('global gradient norm and clipping', async (t) => {
  const r = rng(t)
  const grads = randomTensors(r, [...oddSizes, 50000])
  let sq = 0
  for (const g of grads) for (const x of g) sq += x * x
  const want = Math.sqrt(sq)
  t.ok(Math.abs(gradNorm(grads) - want) / want < 1e-12, 'norm matches float64')
  // Below the limit: untouched. Above: scaled by max / (norm + 1e-6).
  const copy = grads.map((g) => g.slice())
  t.equal(clipGradNorm(copy, want * 2), gradNorm(grads), 'returns the norm')
  copy.forEach((g, i) => t.ok(Buffer.from(g.buffer).equals(Buffer.from(grads[i].buffer)), 'no clipping below the limit'))
  const maxNorm = want / 4
  const returned = clipGradNorm(copy, maxNorm)
  t.ok(Math.abs(returned - want) / want < 1e-12, 'returns the pre-clip norm')
  const coef = Math.fround(maxNorm / (want + 1e-6))
  copy.forEach((g, i) => {
    const exp = Float32Array.from(grads[i], (x) => Math.fround(x * coef))
    t.ok(Buffer.from(g.buffer).equals(Buffer.from(exp.buffer)), `clipped tensor ${i} = grad * coef`)
  })
  t.ok(Math.abs(gradNorm(copy) - maxNorm) / maxNorm < 1e-5, 'norm after clipping is the limit')
  const withNan = [Float32Array.from([1, NaN, 2])]
  t.ok(Number.isNaN(clipGradNorm(withNan, 1)), 'non-finite norm is reported')
  t.same(Array.from(withNan[0]).map(String), ['1', 'NaN', '2'], 'and the gradients are left untouched')
  t.equal(gradNorm([]), 0, 'no tensors: norm 0')
})

t.test('clipping agrees with torch.nn.utils.clip_grad_norm_', { skip: torchUnavailable() }, async (t) => {
  const r = rng(t)
  const grads = randomTensors(r, [3, 17, 1000])
  const [ref] = runTorch('train_optim.py', [{ op: 'clip', grads: grads.map((g) => Array.from(g)), maxNorm: 1.0 }])
  const norm = clipGradNorm(grads, 1.0)
  t.ok(Math.abs(norm - ref.norm) / ref.norm < 1e-6, `norm ${norm} vs torch ${ref.norm}`)
  grads.forEach((g, i) => t.ok(maxRelError(g, ref.grads[i], 1e-6) < 1e-6, `clipped grads ${i}`))
})

t.test('async AdamW equals the synchronous one and honours AbortSignal', async (t) => {
  const r = rng(t)
  const p1 = randomTensors(r, [1000, 17])
  const p2 = p1.map((p) => p.slice())
  const g = randomTensors(r, [1000, 17])
  const mk = (p) => p.map((x, i) => ({ param: x, grad: g[i], expAvg: new Float32Array(x.length), expAvgSq: new Float32Array(x.length) }))
  adamwStep(mk(p1), { lr: 1e-2, step: 1 })
  await adamwStepAsync(mk(p2), { lr: 1e-2, step: 1 })
  p1.forEach((p, i) => t.ok(Buffer.from(p2[i].buffer).equals(Buffer.from(p.buffer)), `tensor ${i}`))
  const ac = new AbortController()
  ac.abort()
  await t.rejects(adamwStepAsync(mk(p2), { lr: 1e-2, step: 1 }, { signal: ac.signal }), { code: 'ABORT_ERR' })
})

t.test('bad arguments are errors, not crashes', async (t) => {
  const a = new Float32Array(4)
  const ok = () => ({ param: new Float32Array(4), grad: new Float32Array(4), expAvg: new Float32Array(4), expAvgSq: new Float32Array(4) })
  t.throws(() => adamwStep([{ ...ok(), grad: new Float32Array(3) }], { lr: 1, step: 1 }), {
    code: 'ERR_INVALID_ARG',
    message: /same length/
  })
  t.throws(() => adamwStep([{ ...ok(), grad: a, expAvg: a }], { lr: 1, step: 1 }), { code: 'ERR_INVALID_ARG', message: /distinct/ })
  t.throws(() => adamwStep([ok()], { lr: 1, step: 0 }), { code: 'ERR_INVALID_ARG', message: /step/ })
  t.throws(() => adamwStep([ok()], { lr: 1, step: 1, beta2: 1 }), { code: 'ERR_INVALID_ARG', message: /beta2/ })
  t.throws(() => adamwStep([{ ...ok(), param: new Float64Array(4) }], { lr: 1, step: 1 }), {
    code: 'ERR_INVALID_ARG',
    message: /Float32Array/
  })
  t.throws(() => adamwStep([{ ...ok(), bf16: new Uint16Array(2) }], { lr: 1, step: 1 }), { code: 'ERR_INVALID_ARG', message: /bf16/ })
  t.throws(() => clipGradNorm([a], -1), { code: 'ERR_INVALID_ARG' })
  t.throws(() => addon.gradNormSq('x'), { code: 'ERR_INVALID_ARG' })
})
