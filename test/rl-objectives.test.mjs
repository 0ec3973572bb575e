// TRL GRPOTrainer's objectives in policyLoss (issue 16): loss_type grpo / bnpo / dr_grpo / dapo / cispo / sapo /
// luspo, importance_sampling_level 'sequence' (GSPO), delta two-sided clipping, mask_truncated_completions,
// top_entropy_quantile, the entropy bonus and the rollout-mismatch correction. Each against a float64 reference
// written here from TRL v1.9's _compute_loss (its definitions, not its code), gradients against central finite
// differences of that reference (detached factors held fixed), on random batches with odd lengths, padding and
// empty completions; cpu (AVX2 and baseline) and emulated CUDA (and CUDA when present) held to the same reference.
import t from 'tap'
import { policyLoss, setSimdLevel } from '../dist/cjs/index.js'
import { native } from '../dist/cjs/native.js'
import { rng, backends, maxRelError } from './helpers.mjs'

const addon = native()
const sigmoid = (x) => 1 / (1 + Math.exp(-x))

/** torch.quantile(x, q) with linear interpolation. */
function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b)
  const pos = q * (s.length - 1)
  const lo = Math.floor(pos),
    hi = Math.min(lo + 1, s.length - 1)
  return s[lo] + (s[hi] - s[lo]) * (pos - lo)
}

/**
 * TRL v1.9 GRPOTrainer._compute_loss in float64. `lp` is the differentiated log-probability, `lp0` its detached
 * value (CISPO's weight); entropy masks and correction weights depend on no log-probability of the policy.
 */
function refLoss(inp, o, lp = inp.logp, lp0 = inp.logp) {
  const { batch: B, length: T } = inp
  const lossType = o.lossType ?? 'dapo'
  const epsLow = o.clipLow ?? 0.2,
    epsHigh = o.clipHigh ?? 0.2
  const mask = Float64Array.from(inp.mask)
  if (o.maskTruncatedCompletions) for (let b = 0; b < B; b++) if (inp.truncated[b]) mask.fill(0, b * T, (b + 1) * T)
  const adv = (b, t) => (inp.advantages.length === B ? inp.advantages[b] : inp.advantages[b * T + t])
  const rowCount = (b) => {
    let s = 0
    for (let t = 0; t < T; t++) s += mask[b * T + t]
    return s
  }
  // importance weights
  const logW = (b, t, x) => {
    if (o.importanceSamplingLevel !== 'sequence') return x[b * T + t] - inp.oldLogp[b * T + t]
    let s = 0
    for (let u = 0; u < T; u++) s += (x[b * T + u] - inp.oldLogp[b * T + u]) * mask[b * T + u]
    return s / Math.max(rowCount(b), 1)
  }
  // top-entropy mask
  let keep = () => 1
  if ((o.topEntropyQuantile ?? 1) < 1) {
    const hs = []
    for (let i = 0; i < B * T; i++) if (mask[i] > 0) hs.push(inp.entropy[i])
    const thr = hs.length ? quantile(hs, 1 - o.topEntropyQuantile) : Infinity
    keep = (i) => (mask[i] > 0 && inp.entropy[i] * mask[i] >= thr ? 1 : 0)
  }
  // rollout correction (TRL's vllm importance sampling, with the lower bound 1/C for 'mask')
  let corr = () => 1
  const rc = o.rolloutCorrection
  if (rc) {
    const ratio = (b, t) => {
      if (rc.level === 'token') return Math.exp((inp.oldLogp[b * T + t] - inp.rolloutLogp[b * T + t]) * mask[b * T + t])
      let s = 0
      for (let u = 0; u < T; u++) s += (inp.oldLogp[b * T + u] - inp.rolloutLogp[b * T + u]) * mask[b * T + u]
      return Math.exp(s)
    }
    corr = (b, t) => {
      const w = ratio(b, t)
      if (rc.mode === 'truncate') return Math.min(w, rc.c)
      return w < 1 / rc.c || w > rc.c ? 0 : w
    }
  }
  const ptl = new Float64Array(B * T)
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const i = b * T + t
      if (!mask[i]) continue
      const A = adv(b, t)
      const coef1 = Math.exp(logW(b, t, lp))
      let l
      if (lossType === 'cispo') {
        l = -Math.min(Math.exp(logW(b, t, lp0)), epsHigh) * A * lp[i]
      } else if (lossType === 'sapo') {
        const tau = A > 0 ? (o.sapoTemperaturePos ?? 1) : (o.sapoTemperatureNeg ?? 1.05)
        l = ((-sigmoid(tau * (coef1 - 1)) * 4) / tau) * A
      } else {
        const coef2 = Math.min(Math.max(coef1, 1 - epsLow), 1 + epsHigh)
        const c1 = o.delta !== undefined ? Math.min(coef1, o.delta) : coef1
        l = -Math.min(c1 * A, coef2 * A)
      }
      l *= keep(i)
      l *= corr(b, t)
      if (o.klCoef) {
        const d = inp.refLogp[i] - lp[i]
        l += o.klCoef * (Math.exp(d) - d - 1)
      }
      ptl[i] = l
    }
  }
  let sum = 0,
    N = 0
  for (let i = 0; i < B * T; i++) {
    sum += ptl[i] * mask[i]
    N += mask[i]
  }
  let loss
  if (lossType === 'grpo' || lossType === 'sapo') {
    loss = 0
    for (let b = 0; b < B; b++) {
      let s = 0
      for (let t = 0; t < T; t++) s += ptl[b * T + t] * mask[b * T + t]
      loss += s / Math.max(rowCount(b), 1)
    }
    loss /= B
  } else if (lossType === 'bnpo' || lossType === 'dapo' || lossType === 'cispo') {
    loss = sum / Math.max(N, 1)
  } else if (lossType === 'dr_grpo') {
    loss = sum / (B * (o.normLength ?? T))
  } else {
    // luspo: each sequence's loss times its length, averaged over sequences (masked)
    loss = sum / B
  }
  let bonus = 0
  if (o.entropyCoef) {
    let hs = 0,
      kept = 0
    for (let i = 0; i < B * T; i++) {
      const e = mask[i] * keep(i)
      hs += inp.entropy[i] * e
      kept += e
    }
    bonus = hs / Math.max(lossType === 'dapo' || lossType === 'cispo' ? N : kept, 1)
    loss -= o.entropyCoef * bonus
  }
  let mis = 0,
    corrected = 0,
    kept = 0
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const i = b * T + t
      if (!mask[i]) continue
      kept += keep(i) * mask[i]
      if (rc) {
        mis += Math.abs(inp.oldLogp[i] - inp.rolloutLogp[i]) * mask[i]
        const lr = rc.level === 'token' ? inp.oldLogp[i] - inp.rolloutLogp[i] : seqSum(b) // log of the weight
        const changed = rc.mode === 'truncate' ? lr > Math.log(rc.c) : Math.abs(lr) > Math.log(rc.c)
        if (changed) corrected += mask[i]
      }
    }
  }
  function seqSum(b) {
    let s = 0
    for (let u = 0; u < T; u++) s += (inp.oldLogp[b * T + u] - inp.rolloutLogp[b * T + u]) * mask[b * T + u]
    return s
  }
  const d = N + 1e-8
  return {
    loss,
    tokens: N,
    entropyBonus: bonus,
    entropyKeptFrac: (o.topEntropyQuantile ?? 1) < 1 ? kept / d : 1,
    rolloutLogRatioAbs: rc ? mis / d : 0,
    rolloutCorrectedFrac: rc ? corrected / d : 0,
    mask
  }
}

function fdGrad(inp, o) {
  const h = 1e-6
  const x = Float64Array.from(inp.logp)
  const g = new Float64Array(x.length)
  for (let i = 0; i < x.length; i++) {
    const v = x[i]
    x[i] = v + h
    const up = refLoss(inp, o, x).loss
    x[i] = v - h
    const down = refLoss(inp, o, x).loss
    x[i] = v
    g[i] = (up - down) / (2 * h)
  }
  return g
}

/** d loss / d entropy of the bonus (the entropy mask is a step function: it carries no gradient). */
function entropyGrad(inp, o, ref) {
  const { batch: B, length: T } = inp
  const g = new Float64Array(B * T)
  if (!o.entropyCoef) return g
  const q = o.topEntropyQuantile ?? 1
  let thr = -Infinity
  if (q < 1) {
    const hs = []
    for (let i = 0; i < B * T; i++) if (ref.mask[i] > 0) hs.push(inp.entropy[i])
    thr = hs.length ? quantile(hs, 1 - q) : Infinity
  }
  let kept = 0
  for (let i = 0; i < B * T; i++) if (ref.mask[i] > 0 && inp.entropy[i] >= thr) kept += ref.mask[i]
  const global = o.lossType === 'dapo' || o.lossType === 'cispo'
  const D = Math.max(global ? ref.tokens : kept, 1)
  for (let i = 0; i < B * T; i++) if (ref.mask[i] > 0 && inp.entropy[i] >= thr) g[i] = (-o.entropyCoef * ref.mask[i]) / D
  return g
}

/** Random batch: log-ratios inside ±20 (TRL does not clamp them), some padding, an empty completion, rollout
 * log-probabilities off by generator noise (a few far off, so corrections engage). */
function makeInputs(r, B, T, { perToken = false, withRef = false } = {}) {
  const n = B * T
  const logp = Float32Array.from({ length: n }, () => -Math.abs(r.normal()) - 0.01)
  const oldLogp = Float32Array.from(logp, (x) => x + 0.3 * r.normal())
  const rolloutLogp = Float32Array.from(oldLogp, (x) => x + (r.next() < 0.1 ? 1.5 : 0.08) * r.normal())
  const refLogp = withRef ? Float32Array.from(logp, (x) => x + 0.3 * r.normal()) : undefined
  const advantages = Float32Array.from({ length: perToken ? n : B }, () => (r.next() < 0.1 ? 0 : 1.5 * r.normal()))
  const mask = new Uint8Array(n)
  for (let b = 0; b < B; b++) mask.fill(1, b * T, b * T + r.int(1, T)) // right padding
  if (B > 2) mask.fill(0, T, 2 * T) // an empty completion
  const entropy = Float32Array.from({ length: n }, () => 3 * r.next())
  const truncated = Uint8Array.from({ length: B }, () => (r.next() < 0.3 ? 1 : 0))
  return { batch: B, length: T, logp, oldLogp, rolloutLogp, refLogp, advantages, mask, entropy, truncated }
}

const variants = [
  { lossType: 'grpo' },
  { lossType: 'bnpo', clipHigh: 0.28 },
  { lossType: 'dr_grpo', normLength: 41 },
  { lossType: 'dapo', clipHigh: 0.28 },
  { lossType: 'cispo', clipHigh: 1.2 },
  { lossType: 'sapo' },
  { lossType: 'sapo', sapoTemperaturePos: 0.5, sapoTemperatureNeg: 2, perToken: true },
  { lossType: 'luspo', importanceSamplingLevel: 'sequence' },
  { lossType: 'grpo', importanceSamplingLevel: 'sequence' }, // GSPO
  { lossType: 'dapo', importanceSamplingLevel: 'sequence', clipLow: 0.0003, clipHigh: 0.0004 }, // GSPO's paper clips
  { lossType: 'cispo', importanceSamplingLevel: 'sequence', clipHigh: 1.1 },
  { lossType: 'sapo', importanceSamplingLevel: 'sequence' },
  { lossType: 'grpo', delta: 1.15, clipHigh: 0.05 },
  { lossType: 'dapo', delta: 1.1, clipHigh: 0.28, perToken: true },
  { lossType: 'dapo', maskTruncatedCompletions: true },
  { lossType: 'grpo', topEntropyQuantile: 0.2 },
  { lossType: 'dapo', topEntropyQuantile: 0, entropyCoef: 0.05 },
  { lossType: 'grpo', entropyCoef: 0.1 },
  { lossType: 'cispo', clipHigh: 1.5, entropyCoef: 0.02, topEntropyQuantile: 0.5, maskTruncatedCompletions: true },
  { lossType: 'dapo', rolloutCorrection: { mode: 'truncate', level: 'token', c: 1.5 } },
  { lossType: 'grpo', rolloutCorrection: { mode: 'mask', level: 'token', c: 1.5 } },
  { lossType: 'dapo', rolloutCorrection: { mode: 'truncate', level: 'sequence', c: 1.5 } },
  { lossType: 'bnpo', rolloutCorrection: { mode: 'mask', level: 'sequence', c: 2 }, importanceSamplingLevel: 'sequence' },
  { lossType: 'dapo', klCoef: 0.05, klEstimator: 'k3', withRef: true, delta: 1.2 },
  { lossType: 'grpo', importanceSamplingLevel: 'sequence', klCoef: 0.05, klEstimator: 'k3', withRef: true, topEntropyQuantile: 0.3 }
]

const label = (v) => JSON.stringify(v).replace(/"/g, '')

t.test('every TRL objective against the float64 reference: loss, metrics, gradients', async (t) => {
  const r = rng(t, 'objectives')
  const devs = backends(t, addon)
  for (const v of variants) {
    const { perToken, withRef, ...opts } = v
    for (const [B, T] of [
      [1, 1],
      [3, 5],
      [7, 13],
      [5, 33]
    ]) {
      const inp = makeInputs(r, B, T, { perToken, withRef })
      const want = refLoss(inp, opts)
      const fd = fdGrad(inp, opts)
      const gEnt = entropyGrad(inp, opts, want)
      for (const device of devs) {
        for (const simd of device === 'cpu' ? ['auto', 'baseline'] : ['auto']) {
          setSimdLevel(simd)
          let got
          try {
            got = await policyLoss(inp, { ...opts, device })
          } finally {
            setSimdLevel('auto')
          }
          const where = `${device}${simd === 'baseline' ? ' (baseline SIMD)' : ''} ${label(v)} ${B}x${T}`
          const lossErr = Math.abs(got.metrics.loss - want.loss) / Math.max(Math.abs(want.loss), 1e-3)
          t.ok(lossErr < 2e-5, `${where}: loss ${got.metrics.loss} vs ${want.loss} (rel err ${lossErr.toExponential(2)})`)
          for (const k of ['tokens', 'entropyBonus', 'entropyKeptFrac', 'rolloutLogRatioAbs', 'rolloutCorrectedFrac']) {
            const e = Math.abs(got.metrics[k] - want[k]) / Math.max(Math.abs(want[k]), 1e-3)
            if (!(e < 2e-5)) t.fail(`${where}: metric ${k} ${got.metrics[k]} vs ${want[k]}`)
          }
          const floor = 1e-3 * Math.max(...fd.map(Math.abs), 1e-6)
          const err = maxRelError(got.grad, fd, floor)
          t.ok(err < 2e-3, `${where}: gradient matches finite differences (rel err ${err.toExponential(2)})`)
          let leak = 0
          for (let i = 0; i < B * T; i++) if (!want.mask[i] && got.grad[i] !== 0) leak++
          if (leak) t.fail(`${where}: ${leak} masked-out tokens got a gradient`)
          if (opts.entropyCoef) {
            const e = maxRelError(got.gradEntropy, gEnt, 1e-6)
            if (!(e < 1e-5)) t.fail(`${where}: entropy gradient rel err ${e}`)
          } else if (got.gradEntropy !== undefined) t.fail(`${where}: gradEntropy without entropyCoef`)
        }
      }
    }
  }
})

t.test('larger batches: cpu, baseline SIMD and emulated CUDA agree', async (t) => {
  const r = rng(t, 'agree')
  t.comment(`cpu SIMD: ${addon.systemInfo().simdActive} (detected ${addon.systemInfo().simdDetected})`)
  for (const v of variants) {
    const { perToken, withRef, ...opts } = v
    const inp = makeInputs(r, 11, 301, { perToken, withRef })
    const cpu = await policyLoss(inp, { ...opts, device: 'cpu' })
    const want = refLoss(inp, opts)
    t.ok(Math.abs(cpu.metrics.loss - want.loss) / Math.max(Math.abs(want.loss), 1e-3) < 2e-5, `${label(v)}: cpu loss matches the reference`)
    const scale = cpu.grad.reduce((m, g) => Math.max(m, Math.abs(g)), 0)
    for (const device of ['baseline', ...backends(t, addon).filter((d) => d !== 'cpu')]) {
      let other
      if (device === 'baseline') {
        setSimdLevel('baseline')
        try {
          other = await policyLoss(inp, { ...opts, device: 'cpu' })
        } finally {
          setSimdLevel('auto')
        }
      } else other = await policyLoss(inp, { ...opts, device })
      t.ok(
        maxRelError(other.grad, cpu.grad, 1e-3 * scale) < 1e-5 &&
          Math.abs(other.metrics.loss - cpu.metrics.loss) <= 1e-6 * Math.max(1, Math.abs(cpu.metrics.loss)),
        `${device} ${label(v)}: same loss and gradient as cpu`
      )
    }
  }
})

t.test("defaults are today's objective: lossType dapo equals token-mean, grpo seq-mean-token-mean", async (t) => {
  const r = rng(t, 'defaults')
  const inp = makeInputs(r, 5, 17)
  for (const [lossType, aggregation] of [
    ['dapo', 'token-mean'],
    ['bnpo', 'token-mean'],
    ['grpo', 'seq-mean-token-mean'],
    ['luspo', 'seq-mean-token-sum']
  ]) {
    const a = await policyLoss(inp, { lossType, clipHigh: 0.28, device: 'cpu' })
    const b = await policyLoss(inp, { aggregation, clipHigh: 0.28, device: 'cpu' })
    t.same(Array.from(a.grad), Array.from(b.grad), `${lossType}: the same gradient as aggregation ${aggregation}`)
    t.equal(a.metrics.loss, b.metrics.loss, `${lossType}: the same loss`)
  }
})

t.test("hand-made tokens: GSPO couples a sequence, CISPO keeps clipped tokens' gradient, delta caps the ratio", async (t) => {
  // one sequence, two tokens with log-ratios 0.1 and 0.3: GSPO's ratio is e^0.2 for both
  const inp = {
    batch: 1,
    length: 2,
    logp: Float32Array.from([-1, -1]),
    oldLogp: Float32Array.from([-1.1, -1.3]),
    advantages: Float32Array.from([1]),
    mask: Float32Array.from([1, 1])
  }
  const gspo = await policyLoss(inp, { lossType: 'grpo', importanceSamplingLevel: 'sequence', clipHigh: 0.5, device: 'cpu' })
  t.ok(Math.abs(gspo.metrics.ratioMean - Math.exp(0.2)) < 1e-6, 'one ratio per sequence: exp(mean log-ratio)')
  t.ok(
    Math.abs(gspo.grad[0] - gspo.grad[1]) < 1e-7 && Math.abs(gspo.grad[0] + Math.exp(0.2) / 2) < 1e-6,
    'each token gets -A ratio / length'
  )
  const cispo = await policyLoss(inp, { lossType: 'cispo', clipHigh: 1.05, device: 'cpu' })
  t.ok(Math.abs(cispo.grad[1] + 1.05 / 2) < 1e-6, 'CISPO: a capped token still gets -min(ratio, cap) A / tokens')
  t.ok(Math.abs(cispo.metrics.clipFracHigh - 1) < 1e-6, 'both tokens exceed the cap (ratios e^0.1, e^0.3 > 1.05)')
  const neg = { ...inp, advantages: Float32Array.from([-1]), oldLogp: Float32Array.from([-1.1, -2]) }
  const plain = await policyLoss(neg, { lossType: 'dapo', device: 'cpu' })
  const capped = await policyLoss(neg, { lossType: 'dapo', delta: 1.5, device: 'cpu' })
  t.ok(Math.abs(plain.metrics.loss - (Math.exp(0.1) + Math.exp(1)) / 2) < 1e-6, 'A < 0: an unbounded ratio e^1 without delta')
  t.ok(Math.abs(capped.metrics.loss - (Math.exp(0.1) + 1.5) / 2) < 1e-6 && capped.grad[1] === 0, 'delta caps it at 1.5, with no gradient')
})

t.test('objective argument checks name the option', async (t) => {
  const r = rng(t, 'args')
  const inp = makeInputs(r, 2, 3)
  const bad = [
    [{ lossType: 'ppo' }, /lossType/],
    [{ lossType: 'dapo', aggregation: 'token-mean' }, /aggregation/],
    [{ importanceSamplingLevel: 'seq' }, /importanceSamplingLevel/],
    [{ delta: -1 }, /delta/],
    [{ topEntropyQuantile: 1.5 }, /topEntropyQuantile/],
    [{ rolloutCorrection: { mode: 'clip', level: 'token', c: 2 } }, /rolloutCorrection.mode/],
    [{ rolloutCorrection: { mode: 'mask', level: 'row', c: 2 } }, /rolloutCorrection.level/],
    [{ rolloutCorrection: { mode: 'mask', level: 'token', c: 1 } }, /rolloutCorrection.c/],
    [{ maskTruncatedCompletions: 'yes' }, /maskTruncatedCompletions/],
    [{ sapoTemperatureNeg: 0, lossType: 'sapo' }, /sapoTemperatureNeg/],
    [{ delta: 0 }, /delta/]
  ]
  for (const [opts, re] of bad) await t.rejects(policyLoss(inp, opts), { code: 'ERR_INVALID_ARG', message: re }, JSON.stringify(opts))
  await t.rejects(
    policyLoss({ ...inp, entropy: undefined }, { entropyCoef: 0.1 }),
    { code: 'ERR_INVALID_ARG', message: /entropy/ },
    'the bonus needs entropies'
  )
  await t.rejects(
    policyLoss({ ...inp, rolloutLogp: undefined }, { rolloutCorrection: { mode: 'mask', level: 'token', c: 2 } }),
    { code: 'ERR_INVALID_ARG', message: /rolloutLogp/ },
    'the correction needs rollout log-probs'
  )
  await t.rejects(
    policyLoss({ ...inp, truncated: undefined }, { maskTruncatedCompletions: true }),
    { code: 'ERR_INVALID_ARG', message: /truncated/ },
    'masking needs the flags'
  )
  const before = Float32Array.from(inp.mask)
  const m = { ...inp, mask: Float32Array.from(inp.mask), truncated: [1, 1] }
  await policyLoss(m, { maskTruncatedCompletions: true })
  t.same(Array.from(m.mask), Array.from(before), "the caller's mask is left as it was")
})
