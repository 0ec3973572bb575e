// Token log-probabilities and entropies (from logits, and from hidden states + output projection) and their
// backward passes, against a float64 reference written from the definitions, the reference gradients
// checked by finite differences, and cpu / emulated CUDA (/ CUDA) held to the same reference.
import t from 'tap'
import { tokenLogprobs, tokenLogprobsBackward } from '../dist/cjs/index.js'
import { native } from '../dist/cjs/native.js'
import { rng, backends, maxRelError, poison } from './helpers.mjs'

const addon = native()

// ---- float64 reference ----------------------------------------------------------------------------------

function logitsFromHidden(hidden, weight, T, H, V) {
  const z = new Float64Array(T * V)
  for (let t = 0; t < T; t++) {
    for (let v = 0; v < V; v++) {
      let s = 0
      for (let k = 0; k < H; k++) s += hidden[t * H + k] * weight[v * H + k]
      z[t * V + v] = s
    }
  }
  return z
}

/** logp, entropy and d(Σ dlogp·logp + dent·H)/dlogits, all in float64. */
function reference(logits, T, V, targets, temperature, dlogp, dent) {
  const logp = new Float64Array(T),
    entropy = new Float64Array(T),
    lseRef = new Float64Array(T),
    dlogits = new Float64Array(T * V)
  const prob = new Float64Array(T * V)
  for (let t = 0; t < T; t++) {
    const z = Array.from({ length: V }, (_, v) => logits[t * V + v] / temperature)
    let m = -Infinity
    for (const v of z) m = Math.max(m, v)
    const lse = m + Math.log(z.reduce((a, b) => a + Math.exp(b - m), 0))
    const p = z.map((x) => Math.exp(x - lse))
    lseRef[t] = lse
    logp[t] = z[targets[t]] - lse
    entropy[t] = -p.reduce((a, pi) => a + (pi > 0 ? pi * Math.log(pi) : 0), 0)
    prob.set(p, t * V)
    if (dlogp) {
      for (let v = 0; v < V; v++) {
        const dz = dlogp[t] * ((v === targets[t] ? 1 : 0) - p[v]) - (dent ? dent[t] : 0) * p[v] * (Math.log(p[v]) + entropy[t])
        dlogits[t * V + v] = dz / temperature
      }
    }
  }
  return { logp, entropy, lse: lseRef, dlogits, prob }
}

/**
 * Worst |got - ref| of dlogits over what fp32 arithmetic allows at each entry (<= 1 passes). dz_i =
 * (dlogp (onehot - p_i) - dent p_i (log p_i + H)) / T: p_i = exp(z_i/T - lse) carries a relative error of a few
 * units of u = 2^-24 times |z_i/T| + |lse| (the rounding of its argument), and log p_i + H cancels, so its error is
 * absolute, u times (|log p_i| + H). 8u per entry covers the few roundings on each path; a relative
 * 1e-5 of max(|ref|, 1% of the largest entry) covers summation order elsewhere.
 */
function dlogitsError(got, ref, c, T, V, temperature) {
  const u = 2 ** -24
  const floor = gradFloor(ref.dlogits)
  let worst = 0
  for (let t = 0; t < T; t++) {
    const dl = Math.abs(c.dlogp[t]),
      de = c.dent ? Math.abs(c.dent[t]) : 0
    for (let v = 0; v < V; v++) {
      const i = t * V + v,
        p = ref.prob[i]
      if (Number.isNaN(got[i])) return Infinity
      const argument = 1 + Math.abs(c.logits[i] / temperature) + Math.abs(ref.lse[t])
      const logTerm = p > 0 ? Math.abs(Math.log(p)) + ref.entropy[t] + 1 : 0
      const bound = 1e-5 * Math.max(Math.abs(ref.dlogits[i]), floor) + (8 * u * p * argument * (dl + de * logTerm)) / temperature
      worst = Math.max(worst, Math.abs(got[i] - ref.dlogits[i]) / bound)
    }
  }
  return worst
}

/**
 * fp32 check of logp (= z_target - lse) and entropy (= log s - a/s): their rounding error scales with |lse|
 * and log V, not with their own size, so the tolerance is 1e-5 of max(1, |lse|) (logp) or max(1, log V) (entropy).
 */
function checkForward(t, fwd, ref, V, label, tol = 1e-5) {
  let worstLp = 0,
    worstEnt = 0
  const entScale = Math.max(1, Math.log(V))
  for (let i = 0; i < ref.logp.length; i++) {
    worstLp = Math.max(worstLp, Math.abs(fwd.logp[i] - ref.logp[i]) / Math.max(1, Math.abs(ref.lse[i])))
    worstEnt = Math.max(worstEnt, Math.abs(fwd.entropy[i] - ref.entropy[i]) / entScale)
    if (Number.isNaN(fwd.logp[i]) || Number.isNaN(fwd.entropy[i])) worstLp = Infinity
  }
  t.ok(worstLp < tol, `${label}: logp (scaled error ${worstLp.toExponential(2)})`)
  t.ok(worstEnt < tol, `${label}: entropy (scaled error ${worstEnt.toExponential(2)})`)
}

function scalarLoss(logits, T, V, targets, temperature, dlogp, dent) {
  const r = reference(logits, T, V, targets, temperature)
  let s = 0
  for (let t = 0; t < T; t++) s += dlogp[t] * r.logp[t] + dent[t] * r.entropy[t]
  return s
}

/** Entries far below the largest gradient are compared in absolute terms (fp32 cancellation in dz). */
function gradFloor(ref) {
  let m = 0
  for (const v of ref) m = Math.max(m, Math.abs(v))
  return 1e-2 * Math.max(m, 1e-9)
}

function randomCase(r, T, V, H) {
  const targets = Int32Array.from({ length: T }, () => r.int(0, V - 1))
  const dlogp = Float32Array.from({ length: T }, () => r.normal())
  const dent = Float32Array.from({ length: T }, () => r.normal())
  if (H) {
    const hidden = Float32Array.from({ length: T * H }, () => (r.normal() / Math.sqrt(H)) * 3)
    const weight = Float32Array.from({ length: V * H }, () => r.normal())
    return { hidden, weight, targets, dlogp, dent }
  }
  const logits = Float32Array.from({ length: T * V }, () => 3 * r.normal())
  return { logits, targets, dlogp, dent }
}

// ---- tests ----------------------------------------------------------------------------------------------

t.test('the reference gradient itself matches finite differences', async (t) => {
  const r = rng(t, 'reference fd')
  const T = 3,
    V = 7,
    temperature = 0.7
  const c = randomCase(r, T, V)
  const x = Float64Array.from(c.logits)
  const ref = reference(x, T, V, c.targets, temperature, c.dlogp, c.dent)
  const h = 1e-6
  let worst = 0
  for (let i = 0; i < T * V; i++) {
    const v = x[i]
    x[i] = v + h
    const up = scalarLoss(x, T, V, c.targets, temperature, c.dlogp, c.dent)
    x[i] = v - h
    const down = scalarLoss(x, T, V, c.targets, temperature, c.dlogp, c.dent)
    x[i] = v
    worst = Math.max(worst, Math.abs((up - down) / (2 * h) - ref.dlogits[i]))
  }
  t.ok(worst < 1e-6, `analytic d/dlogits agrees with finite differences (worst ${worst.toExponential(2)})`)
})

t.test('from logits: forward and backward on every backend', async (t) => {
  const r = rng(t, 'logits')
  const devs = backends(t, addon)
  const shapes = [
    [1, 1],
    [17, 17],
    [1000, 17],
    [4097, 5],
    [17, 1000],
    [3, 4097],
    [1, 151936],
    [2, 151936]
  ]
  for (const [T, V] of shapes) {
    const c = randomCase(r, T, V)
    const temperature = r.pick([1, 0.6, 1.3])
    const ref = reference(c.logits, T, V, c.targets, temperature, c.dlogp, c.dent)
    for (const device of devs) {
      if (device === 'emulated' && T * V > 200000 && V !== 151936) continue // keep emulated big cases few
      if (device === 'emulated' && V === 151936 && T > 1) continue
      const label = `${device} T=${T} V=${V} temperature ${temperature}`
      const fwd = await tokenLogprobs({ logits: c.logits, positions: T, vocab: V }, c.targets, { temperature, device })
      checkForward(t, fwd, ref, V, label)
      const { dlogits } = await tokenLogprobsBackward(
        { logits: c.logits, positions: T, vocab: V },
        c.targets,
        fwd,
        { dlogp: c.dlogp, dentropy: c.dent },
        { temperature, device }
      )
      const err = dlogitsError(dlogits, ref, c, T, V, temperature)
      t.ok(err <= 1, `${label}: dlogits within the fp32 bound (worst ${err.toExponential(2)} of it)`)
    }
  }
})

t.test('without an entropy gradient the backward is dlogp (onehot - p)', async (t) => {
  const r = rng(t, 'no entropy')
  const T = 5,
    V = 33
  const c = randomCase(r, T, V)
  const ref = reference(c.logits, T, V, c.targets, 1, c.dlogp, null)
  for (const device of backends(t, addon)) {
    const fwd = await tokenLogprobs({ logits: c.logits, positions: T, vocab: V }, c.targets, { device })
    const { dlogits } = await tokenLogprobsBackward(
      { logits: c.logits, positions: T, vocab: V },
      c.targets,
      fwd,
      { dlogp: c.dlogp },
      { device }
    )
    t.ok(maxRelError(dlogits, ref.dlogits, gradFloor(ref.dlogits)) < 1e-4, `${device}: dlogits without entropy term`)
  }
})

t.test('from hidden states and the output projection: forward and backward', async (t) => {
  const r = rng(t, 'hidden')
  const devs = backends(t, addon)
  const shapes = [
    [1, 8, 1],
    [17, 33, 1000],
    [1, 16, 4097],
    [1000, 16, 17],
    [4, 12, 151936],
    [37, 20, 9001]
  ] // the last two: the GEMM path
  for (const [T, H, V] of shapes) {
    const c = randomCase(r, T, V, H)
    const temperature = r.pick([1, 0.8])
    const logits = logitsFromHidden(c.hidden, c.weight, T, H, V)
    const ref = reference(logits, T, V, c.targets, temperature, c.dlogp, c.dent)
    // chain rule in float64: dhidden = dlogits W, dW = dlogitsᵀ hidden
    const dh = new Float64Array(T * H),
      dw = new Float64Array(V * H)
    const dhMagnitude = new Float64Array(T * H) // sum of |terms|: bounds fp32 rounding in a V-long sum that cancels
    for (let tt = 0; tt < T; tt++) {
      for (let v = 0; v < V; v++) {
        const g = ref.dlogits[tt * V + v]
        if (g === 0) continue
        for (let k = 0; k < H; k++) {
          dh[tt * H + k] += g * c.weight[v * H + k]
          dhMagnitude[tt * H + k] += Math.abs(g * c.weight[v * H + k])
          dw[v * H + k] += g * c.hidden[tt * H + k]
        }
      }
    }
    for (const device of devs) {
      if (device === 'emulated' && T * V * H > 5e6) continue // emulation is slow: the largest shape on cpu (and cuda)
      const label = `${device} T=${T} H=${H} V=${V}`
      const input = { hidden: c.hidden, weight: c.weight, positions: T, hiddenSize: H, vocab: V }
      const fwd = await tokenLogprobs(input, c.targets, { temperature, device })
      checkForward(t, fwd, ref, V, label, 1e-4) // fp32 GEMM logits first
      const g = await tokenLogprobsBackward(input, c.targets, fwd, { dlogp: c.dlogp, dentropy: c.dent }, { temperature, device })
      const eh = maxRelError(g.dhidden, dh, gradFloor(dh)),
        ew = maxRelError(g.dweight, dw, gradFloor(dw))
      // fp32 summation over V terms: allow 1e-3 relative, or a few ulps of the summed magnitudes times sqrt(V)
      let dhBad = 0
      for (let i = 0; i < dh.length; i++) {
        const allowed = 1e-3 * Math.max(Math.abs(dh[i]), gradFloor(dh)) + 4 * 2 ** -24 * Math.sqrt(V) * dhMagnitude[i]
        if (!(Math.abs(g.dhidden[i] - dh[i]) <= allowed)) dhBad++
      }
      t.equal(dhBad, 0, `${label}: dhidden within fp32 summation error (max rel err ${eh.toExponential(2)})`)
      t.ok(ew < 1e-3, `${label}: dweight (rel err ${ew.toExponential(2)})`)
    }
  }
})

t.test('hidden-state gradients against finite differences of the float64 loss', async (t) => {
  const r = rng(t, 'hidden fd')
  const T = 3,
    H = 4,
    V = 6
  const c = randomCase(r, T, V, H)
  const loss = (hidden, weight) => scalarLoss(logitsFromHidden(hidden, weight, T, H, V), T, V, c.targets, 1, c.dlogp, c.dent)
  const h = Float64Array.from(c.hidden),
    w = Float64Array.from(c.weight)
  const fd = (arr) =>
    Array.from(arr, (v, i) => {
      arr[i] = v + 1e-6
      const up = loss(h, w)
      arr[i] = v - 1e-6
      const down = loss(h, w)
      arr[i] = v
      return (up - down) / 2e-6
    })
  const fdH = fd(h),
    fdW = fd(w)
  for (const device of backends(t, addon)) {
    const input = { hidden: c.hidden, weight: c.weight, positions: T, hiddenSize: H, vocab: V }
    const fwd = await tokenLogprobs(input, c.targets, { device })
    const g = await tokenLogprobsBackward(input, c.targets, fwd, { dlogp: c.dlogp, dentropy: c.dent }, { device })
    t.ok(maxRelError(g.dhidden, fdH, 1e-3) < 1e-3, `${device}: dhidden vs finite differences`)
    t.ok(maxRelError(g.dweight, fdW, 1e-3) < 1e-3, `${device}: dweight vs finite differences`)
  }
})

t.test('-inf logits are allowed (probability 0, zero gradient)', async (t) => {
  const logits = Float32Array.from([0, -Infinity, 1, -Infinity, 2])
  const targets = Int32Array.from([2])
  const ref = reference(logits, 1, 5, targets, 1, Float32Array.from([1]), Float32Array.from([0.5]))
  for (const device of backends(t, addon)) {
    const fwd = await tokenLogprobs({ logits, positions: 1, vocab: 5 }, targets, { device })
    t.ok(Math.abs(fwd.logp[0] - ref.logp[0]) < 1e-6, `${device}: logp`)
    t.ok(Math.abs(fwd.entropy[0] - ref.entropy[0]) < 1e-6, `${device}: entropy`)
    const { dlogits } = await tokenLogprobsBackward(
      { logits, positions: 1, vocab: 5 },
      targets,
      fwd,
      { dlogp: Float32Array.from([1]), dentropy: Float32Array.from([0.5]) },
      { device }
    )
    t.equal(dlogits[1], 0, `${device}: no gradient to a -inf logit`)
    t.ok(Math.abs(dlogits[4] - ref.dlogits[4]) < 1e-6, `${device}: gradient of a finite logit`)
  }
})

t.test('argument checks', async (t) => {
  const logits = poison(new Float32Array(6))
  await t.rejects(tokenLogprobs({ logits, positions: 2, vocab: 3 }, Int32Array.from([0, 3])), {
    code: 'ERR_INVALID_ARG',
    message: /outside \[0, 3\)/
  })
  await t.rejects(tokenLogprobs({ logits, positions: 2, vocab: 4 }, Int32Array.from([0, 1])), { code: 'ERR_INVALID_ARG' })
  await t.rejects(tokenLogprobs({ logits, positions: 2, vocab: 3 }, [0, 1]), { code: 'ERR_INVALID_ARG' })
  await t.rejects(tokenLogprobs({ logits, positions: 2, vocab: 3 }, Int32Array.from([0, 1]), { temperature: 0 }), {
    code: 'ERR_INVALID_ARG'
  })
  await t.rejects(
    tokenLogprobs(
      { hidden: new Float32Array(4), weight: new Float32Array(5), positions: 2, hiddenSize: 2, vocab: 3 },
      Int32Array.from([0, 1])
    ),
    { code: 'ERR_INVALID_ARG' }
  )
})
