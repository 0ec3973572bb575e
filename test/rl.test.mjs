// GRPO / DAPO advantages, dynamic-sampling mask, overlong shaping and the clipped policy loss: every formula
// against a float64 reference written here from the definitions (verl core_algos / TRL), gradients against
// finite differences of that reference, and cpu / emulated CUDA (/ CUDA) held to the same reference.
import t from 'tap'
import { grpoAdvantages, dapoDynamicMask, overlongPenalty, policyLoss, setSimdLevel } from '../dist/cjs/index.js'
import { native } from '../dist/cjs/native.js'
import { rng, backends, maxRelError, tolerance } from './helpers.mjs'

const addon = native()

// ---- float64 references ------------------------------------------------------------------------------

function mean(xs) {
  return xs.reduce((a, b) => a + b, 0) / xs.length
}
function stdUnbiased(xs) {
  const m = mean(xs)
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1))
}

function refAdvantages(rewards, G, convention, scale) {
  const r = Array.from(rewards)
  const eps = convention === 'verl' ? 1e-6 : 1e-4
  const batchStd = r.length > 1 ? stdUnbiased(r) : 0
  const out = []
  for (let g = 0; g < r.length / G; g++) {
    const grp = r.slice(g * G, (g + 1) * G)
    let m, s
    if (G === 1) {
      if (convention === 'trl') {
        out.push(0)
        continue
      }
      m = 0
      s = 1 // verl: a group of one has mean 0 and std 1
    } else {
      m = mean(grp)
      s = stdUnbiased(grp)
    }
    const denom = scale === 'group' ? s + eps : scale === 'batch' ? batchStd + eps : 1
    for (const x of grp) out.push((x - m) / denom)
  }
  return out
}

const clamp = (x, lo, hi) => Math.min(Math.max(x, lo), hi)

/** verl compute_policy_loss (vanilla) + kl_penalty + agg_loss, in float64. Returns loss and metrics. */
function refLoss(inp, opts, logpOverride) {
  const { batch: B, length: T } = inp
  const logp = logpOverride ?? inp.logp
  const lo = 1 - (opts.clipLow ?? 0.2),
    hi = 1 + (opts.clipHigh ?? 0.2),
    c = opts.clipRatioC ?? 0
  const klCoef = opts.klCoef ?? 0
  const est = opts.klEstimator ?? (klCoef !== 0 ? 'k3' : undefined)
  const agg = opts.aggregation ?? 'token-mean'
  const pg = new Float64Array(B * T),
    kl = new Float64Array(B * T)
  const m = { clipLow: 0, clipHigh: 0, dual: 0, negLr: 0, ratio: 0, ratioMin: Infinity, ratioMax: -Infinity, ent: 0, count: 0, kl: 0 }
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const i = b * T + t
      const w = inp.mask[i]
      const A = inp.advantages.length === B ? inp.advantages[b] : inp.advantages[i]
      const lr = clamp(logp[i] - inp.oldLogp[i], -20, 20)
      const ratio = Math.exp(lr)
      const pg1 = -A * ratio,
        pg2 = -A * clamp(ratio, lo, hi)
      let loss = Math.max(pg1, pg2)
      if (c > 0 && A < 0 && loss > -A * c) {
        loss = -A * c
        if (w) m.dual += w
      }
      pg[i] = loss
      if (est === 'k1') kl[i] = logp[i] - inp.refLogp[i]
      else if (est === 'k2') kl[i] = 0.5 * (logp[i] - inp.refLogp[i]) ** 2
      else if (est === 'k3') {
        const k = clamp(inp.refLogp[i] - logp[i], -20, 20)
        kl[i] = clamp(Math.exp(k) - k - 1, -10, 10)
      }
      if (!w) continue
      if (pg2 > pg1 && A > 0) m.clipHigh += w
      if (pg2 > pg1 && A < 0) m.clipLow += w
      m.negLr += w * -lr
      m.ratio += w * ratio
      m.ratioMin = Math.min(m.ratioMin, ratio)
      m.ratioMax = Math.max(m.ratioMax, ratio)
      if (inp.entropy) m.ent += w * inp.entropy[i]
      m.count += w
      m.kl += w * kl[i]
    }
  }
  const aggregate = (mat) => {
    const rowSum = (b) => {
      let s = 0
      for (let t = 0; t < T; t++) s += mat[b * T + t] * inp.mask[b * T + t]
      return s
    }
    const rowCount = (b) => {
      let s = 0
      for (let t = 0; t < T; t++) s += inp.mask[b * T + t]
      return s
    }
    let s = 0
    if (agg === 'token-mean') {
      for (let b = 0; b < B; b++) s += rowSum(b)
      return s / (m.count + 1e-8)
    }
    if (agg === 'seq-mean-token-sum') {
      for (let b = 0; b < B; b++) s += rowSum(b)
      return s / B
    }
    if (agg === 'seq-mean-token-mean') {
      for (let b = 0; b < B; b++) {
        const n = rowCount(b)
        s += n > 0 ? rowSum(b) / n : 0
      }
      return s / B
    }
    for (let b = 0; b < B; b++) s += rowSum(b)
    return s / (opts.normLength || T)
  }
  const pgLoss = aggregate(pg)
  const klLoss = est ? aggregate(kl) : 0
  const d = m.count + 1e-8
  return {
    loss: pgLoss + (est ? klCoef * klLoss : 0),
    pgLoss,
    klLoss,
    clipFracLow: m.clipLow / d,
    clipFracHigh: m.clipHigh / d,
    clipFrac: (m.clipLow + m.clipHigh) / d,
    clipFracDual: m.dual / d,
    approxKl: m.negLr / d,
    klMean: est ? m.kl / d : 0,
    entropyMean: m.ent / d,
    ratioMean: m.ratio / d,
    ratioMin: m.count ? m.ratioMin : 0,
    ratioMax: m.count ? m.ratioMax : 0,
    tokens: m.count
  }
}

/** Central finite differences of the reference loss with respect to each logp. */
function fdGrad(inp, opts) {
  const h = 1e-6
  const base = Float64Array.from(inp.logp)
  const g = new Float64Array(base.length)
  for (let i = 0; i < base.length; i++) {
    const x = base[i]
    base[i] = x + h
    const up = refLoss(inp, opts, base).loss
    base[i] = x - h
    const down = refLoss(inp, opts, base).loss
    base[i] = x
    g[i] = (up - down) / (2 * h)
  }
  return g
}

function makeInputs(r, B, T, { perToken = false, withRef = true, withEntropy = true, emptyRow = false, bigRatio = false } = {}) {
  const n = B * T
  const logp = Float32Array.from({ length: n }, () => -Math.abs(r.normal()) - 0.01)
  const oldLogp = Float32Array.from(logp, (x) => x + 0.35 * r.normal())
  // beyond the ±20 log-ratio clamp; a ratio of e^20 only with a dual clip, which bounds its loss (otherwise a
  // 5e8 loss term would swamp the finite differences of every other token)
  if (n > 3) {
    oldLogp[0] = logp[0] + 25
    oldLogp[1] = logp[1] + (bigRatio ? -25 : 25)
  }
  const refLogp = withRef ? Float32Array.from(logp, (x) => x + 0.5 * r.normal()) : undefined
  if (withRef && n > 3) refLogp[2] = logp[2] + 30 // k3 clamps
  const advantages = Float32Array.from({ length: perToken ? n : B }, () => 1.5 * r.normal())
  const mask = Uint8Array.from({ length: n }, () => (r.next() < 0.85 ? 1 : 0))
  if (emptyRow && B > 1) mask.fill(0, 0, T)
  const entropy = withEntropy ? Float32Array.from({ length: n }, () => 3 * r.next()) : undefined
  return { batch: B, length: T, logp, oldLogp, refLogp, advantages, mask, entropy }
}

// ---- tests -----------------------------------------------------------------------------------------------

t.test('GRPO advantages: verl and TRL conventions, group / batch / none scaling', async (t) => {
  const r = rng(t, 'advantages')
  for (const device of backends(t, addon)) {
    for (const G of [1, 2, 8, 17]) {
      for (const groups of [1, 3, 64]) {
        const rewards = Float32Array.from({ length: G * groups }, () => (r.next() < 0.3 ? r.pick([0, 1]) : r.next()))
        if (groups > 1) rewards.fill(0.5, 0, G) // a group of equal rewards: std 0
        for (const convention of ['verl', 'trl']) {
          for (const scale of ['group', 'batch', 'none']) {
            const got = grpoAdvantages(rewards, G, { convention, scale, device })
            const want = refAdvantages(rewards, G, convention, scale)
            const err = maxRelError(got, want, 1e-3)
            t.ok(err <= tolerance.f32, `${device} G=${G} groups=${groups} ${convention}/${scale}: rel err ${err.toExponential(2)}`)
          }
        }
      }
    }
  }
  t.same(
    Array.from(grpoAdvantages(Float32Array.from([2, -1]), 1, { convention: 'verl' })),
    [Math.fround(2 / (1 + 1e-6)), Math.fround(-1 / (1 + 1e-6))],
    'verl: a group of one uses mean 0 and std 1'
  )
  t.same(Array.from(grpoAdvantages(Float32Array.from([2, -1]), 1, { convention: 'trl' })), [0, 0], 'trl: a group of one gives 0')
  t.throws(() => grpoAdvantages(new Float32Array(5), 2), { code: 'ERR_INVALID_ARG' })
  t.throws(() => grpoAdvantages(new Float32Array(4), 2, { convention: 'x' }), { code: 'ERR_INVALID_ARG' })
  t.throws(() => grpoAdvantages(new Float32Array(4), 2, { scale: 'x' }), { code: 'ERR_INVALID_ARG' })
  t.throws(() => grpoAdvantages(Float32Array.from([NaN, 1]), 2), { code: 'ERR_INVALID_ARG' })
})

t.test('DAPO dynamic-sampling mask and overlong reward shaping', async (t) => {
  const rewards = Float32Array.from([1, 1, 1, 1, 0, 1, 0, 0, 0.5, 0.5, 0.5, 0.5])
  t.same(Array.from(dapoDynamicMask(rewards, 4)), [0, 1, 0], 'groups with all-equal rewards are dropped')
  t.same(Array.from(dapoDynamicMask(rewards, 1)), new Array(12).fill(1), 'groups of one are kept')
  const lengths = [0, 3000, 3072, 3500, 4096, 5000]
  const got = overlongPenalty(lengths, { maxLength: 4096, buffer: 1024, factor: 1 })
  const want = lengths.map((L) => (L <= 3072 ? 0 : L <= 4096 ? -(L - 3072) / 1024 : -1))
  t.ok(maxRelError(got, want, 1e-6) < 1e-6, 'DAPO overlong shaping: 0, linear ramp to -factor, then -factor')
  const half = overlongPenalty(Int32Array.from(lengths), { maxLength: 4096, buffer: 1024, factor: 0.5 })
  t.ok(
    maxRelError(
      half,
      want.map((x) => x * 0.5),
      1e-6
    ) < 1e-6,
    'penalty factor scales the shaping'
  )
  t.throws(() => overlongPenalty([1], { maxLength: 10, buffer: 11 }), { code: 'ERR_INVALID_ARG' })
  t.throws(() => overlongPenalty([-1], { maxLength: 10, buffer: 2 }), { code: 'ERR_INVALID_ARG' })
  t.throws(() => dapoDynamicMask(new Float32Array(3), 2), { code: 'ERR_INVALID_ARG' })
})

const configs = [
  { clipLow: 0.2, clipHigh: 0.2, aggregation: 'token-mean' },
  { clipLow: 0.2, clipHigh: 0.28, clipRatioC: 10, aggregation: 'token-mean' }, // DAPO as recode.md §4
  { clipLow: 0.2, clipHigh: 0.2, clipRatioC: 3, klCoef: 0.001, klEstimator: 'k3', aggregation: 'seq-mean-token-mean' }, // GRPO (TRL-like)
  { clipLow: 0.1, clipHigh: 0.3, klCoef: 0.05, klEstimator: 'k1', aggregation: 'seq-mean-token-sum' },
  { clipLow: 0.2, clipHigh: 0.2, klCoef: 0.1, klEstimator: 'k2', aggregation: 'seq-mean-token-sum-norm' },
  { clipLow: 0.2, clipHigh: 0.2, aggregation: 'seq-mean-token-sum-norm', normLength: 4096 }
]
const metricNames = [
  'loss',
  'pgLoss',
  'klLoss',
  'clipFrac',
  'clipFracLow',
  'clipFracHigh',
  'clipFracDual',
  'approxKl',
  'klMean',
  'entropyMean',
  'ratioMean',
  'ratioMin',
  'ratioMax',
  'tokens'
]

/** Relative error of one metric (floored at 1e-3). A clip fraction may differ by two tokens whose ratio sits on the
 * clip boundary (fp32 against float64, or two exp implementations, decide them differently; the loss is continuous
 * there, so only the counts see it). */
function metricError(name, got, want, tokens) {
  const slack = name.startsWith('clipFrac') ? 2 / Math.max(tokens, 1) : 0
  return Math.max(0, Math.abs(got - want) - slack) / Math.max(Math.abs(want), 1e-3)
}

t.test('policy loss, metrics and gradient against the float64 reference and finite differences', async (t) => {
  const r = rng(t, 'policy loss')
  const devs = backends(t, addon)
  for (const [ci, opts] of configs.entries()) {
    for (const [B, T] of [
      [1, 1],
      [17, 17],
      [3, 1000],
      [1, 4097],
      [4097, 3]
    ]) {
      const inp = makeInputs(r, B, T, {
        perToken: ci % 2 === 1,
        emptyRow: ci === 2,
        withRef: opts.klEstimator !== undefined,
        bigRatio: (opts.clipRatioC ?? 0) > 0
      })
      const want = refLoss(inp, opts)
      const small = B * T <= 400
      const fd = small ? fdGrad(inp, opts) : null
      for (const device of devs) {
        if (device === 'emulated' && B * T > 20000 && ci > 1) continue // emulation is slow: big shapes on two configs
        const got = await policyLoss(inp, { ...opts, device })
        const label = `${device} cfg ${ci} ${B}x${T}`
        // The KL estimators are fp32 functions of exp(log-ratio): with the large ratios of these inputs and a single
        // token (no averaging) they carry ~1e-5 relative error; everything else is held to 1e-5 absolutely.
        const errs = metricNames.map(
          (k) => metricError(k, got.metrics[k], want[k], want.tokens) / (k === 'klLoss' || k === 'klMean' ? 10 : 1)
        )
        const worst = Math.max(...errs)
        t.ok(
          worst < 1e-5,
          `${label}: loss and metrics match (worst scaled rel err ${worst.toExponential(2)} in ${metricNames[errs.indexOf(worst)]})`
        )
        if (fd) {
          const floor = 1e-3 * Math.max(...fd.map(Math.abs), 1e-6)
          const err = maxRelError(got.grad, fd, floor)
          let at = 0
          for (let i = 0; i < fd.length; i++) if (Math.abs(got.grad[i] - fd[i]) > Math.abs(got.grad[at] - fd[at])) at = i
          t.ok(
            err < 1e-3,
            `${label}: gradient matches finite differences (rel err ${err.toExponential(2)}; worst at ${at}: ${got.grad[at]} vs ${fd[at]})`
          )
        }
        // every masked-out token has gradient 0
        let leak = 0
        for (let i = 0; i < B * T; i++) if (!inp.mask[i] && got.grad[i] !== 0) leak++
        t.equal(leak, 0, `${label}: masked-out tokens get no gradient`)
      }
    }
  }
})

t.test('gradient of large shapes: cpu and emulated agree', async (t) => {
  const r = rng(t, 'agree')
  const inp = makeInputs(r, 64, 513, { perToken: false })
  const opts = { clipLow: 0.2, clipHigh: 0.28, clipRatioC: 10, klCoef: 0.01, klEstimator: 'k3', aggregation: 'token-mean' }
  const cpu = await policyLoss(inp, { ...opts, device: 'cpu' })
  for (const device of backends(t, addon).filter((d) => d !== 'cpu')) {
    const other = await policyLoss(inp, { ...opts, device })
    // relative to the gradient's scale: single entries can cancel (policy term vs KL term) to ~1e-9
    const scale = cpu.grad.reduce((m, g) => Math.max(m, Math.abs(g)), 0)
    t.ok(maxRelError(other.grad, cpu.grad, 1e-3 * scale) < 1e-5, `${device}: same gradient as cpu`)
  }
})

t.test('the portable CPU loss (baseline SIMD) matches the AVX2 one', async (t) => {
  const r = rng(t, 'simd')
  for (const [ci, opts] of configs.entries()) {
    const inp = makeInputs(r, 9, 203, {
      perToken: ci % 2 === 1,
      withRef: opts.klEstimator !== undefined,
      bigRatio: (opts.clipRatioC ?? 0) > 0
    })
    const gradOut = new Float32Array(9 * 203)
    setSimdLevel('baseline')
    let base
    try {
      base = await policyLoss(inp, { ...opts, device: 'cpu' })
    } finally {
      setSimdLevel('auto')
    }
    const fast = await policyLoss(inp, { ...opts, device: 'cpu', gradOut })
    t.equal(fast.grad, gradOut, `cfg ${ci}: the gradient is written into gradOut`)
    // relative to the gradient's scale: the two exp implementations differ in the last bits, and single entries
    // can cancel (policy term vs KL term) far below it
    const scale = base.grad.reduce((m, g) => Math.max(m, Math.abs(g)), 0)
    const err = maxRelError(fast.grad, base.grad, 1e-3 * scale)
    t.ok(err < 1e-5, `cfg ${ci}: same gradient (rel err ${err.toExponential(2)})`)
    const worst = Math.max(...metricNames.map((k) => metricError(k, fast.metrics[k], base.metrics[k], base.metrics.tokens)))
    t.ok(worst < 1e-5, `cfg ${ci}: same loss and metrics (worst ${worst.toExponential(2)})`)
  }
})

t.test('clip and dual-clip behaviour on hand-made tokens', async (t) => {
  // token 0: A > 0, ratio e^0.5 > 1.28 (clipped high, no gradient); token 1: A < 0, ratio e^-0.5 < 0.8
  // (clipped low); token 2: A < 0, ratio e^3 → dual clip at c = 10? -A*ratio = 20.1 > -A*c = 10: dual-clipped;
  // token 3: inside the trust region.
  const inp = {
    batch: 1,
    length: 4,
    logp: Float32Array.from([-1, -1, -1, -1]),
    oldLogp: Float32Array.from([-1.5, -0.5, -4, -1.1]),
    advantages: Float32Array.from([1, -1, -1, 2]),
    mask: Float32Array.from([1, 1, 1, 1])
  }
  const got = await policyLoss(inp, { clipLow: 0.2, clipHigh: 0.28, clipRatioC: 10, device: 'cpu' })
  t.equal(got.metrics.clipFracHigh, 0.25 / (1 + 2.5e-9), 'one of four tokens clipped high')
  t.ok(Math.abs(got.metrics.clipFracLow - 0.25) < 1e-8, 'one clipped low')
  t.ok(Math.abs(got.metrics.clipFracDual - 0.25) < 1e-8, 'one dual-clipped')
  t.same(Array.from(got.grad.subarray(0, 3)), [0, 0, 0], 'clipped tokens carry no gradient')
  t.ok(Math.abs(got.grad[3] - (-2 * Math.exp(0.1)) / 4) < 1e-6, 'the free token: -A ratio / tokens')
})

t.test('policy loss argument checks', async (t) => {
  const r = rng(t, 'args')
  const inp = makeInputs(r, 2, 3)
  await t.rejects(policyLoss({ ...inp, logp: new Float32Array(5) }), { code: 'ERR_INVALID_ARG' }, 'wrong logp length')
  await t.rejects(policyLoss({ ...inp, advantages: new Float32Array(4) }), { code: 'ERR_INVALID_ARG' }, 'wrong advantages length')
  await t.rejects(policyLoss({ ...inp, refLogp: undefined }, { klCoef: 0.1 }), { code: 'ERR_INVALID_ARG' }, 'KL without reference')
  await t.rejects(policyLoss(inp, { aggregation: 'mean' }), { code: 'ERR_INVALID_ARG' }, 'unknown aggregation')
  await t.rejects(policyLoss(inp, { clipRatioC: 0.5 }), { code: 'ERR_INVALID_ARG' }, 'dual clip constant must exceed 1')
  await t.rejects(policyLoss(inp, { clipLow: 1.5 }), { code: 'ERR_INVALID_ARG' }, 'clipLow out of range')
  await t.rejects(policyLoss(inp, { klEstimator: 'k4' }), { code: 'ERR_INVALID_ARG' }, 'unknown estimator')
  await t.rejects(policyLoss({ ...inp, batch: 0 }), { code: 'ERR_INVALID_ARG' }, 'batch 0')
  const ac = new AbortController()
  ac.abort()
  await t.rejects(policyLoss(inp, { signal: ac.signal }), { code: 'ABORT_ERR' }, 'aborted before start')
})
