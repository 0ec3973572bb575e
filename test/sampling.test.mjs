// Sampling: every mode against the exact filtered distribution written plainly here in float64 (kept set,
// renormalised probabilities, log-probabilities), chi-square goodness of fit of the draws, ties at the
// top-k / top-p boundary, all-equal logits, -inf entries, invalid input, and CPU (AVX2 and baseline) vs
// emulated CUDA (vs real CUDA when present) picking the same tokens for the same seed.
import t from 'tap'
import { sample, philox4x32, setSimdLevel } from '../dist/cjs/index.js'
import { native } from '../dist/cjs/native.js'
import { rng, backends, oddSizes } from './helpers.mjs'
import { chiSquare } from './sampling_stats.mjs'

const addon = native()
const ALPHA = 1e-4 // significance level of the goodness-of-fit tests: false alarms stay negligible

// ---- the float64 reference, from the definitions in src/sampling/sampling.h ------------------------------------

/** Unfiltered tempered probabilities and the filtered, renormalised ones. */
function reference(x, opts) {
  const V = x.length
  const T = opts.temperature ?? 1
  if (T === 0) {
    // greedy: point mass on the first argmax; logprob under T = 1
    let arg = 0
    for (let i = 1; i < V; i++) if (x[i] > x[arg]) arg = i
    const full = softmax(x, 1)
    const filtered = new Float64Array(V)
    filtered[arg] = 1
    return { full, filtered, greedy: arg }
  }
  const full = softmax(x, T)
  let max = -Infinity
  for (const v of x) max = Math.max(max, v)
  const w = Array.from(x, (v) => (v === -Infinity ? 0 : Math.exp((v - max) / T)))
  const keep = new Array(V).fill(true)
  const sorted = Array.from(x).sort((a, b) => b - a)
  const k = opts.topK ?? 0
  if (k > 0 && k < V) {
    const kth = sorted[k - 1]
    for (let i = 0; i < V; i++) keep[i] = x[i] >= kth
  }
  const p = opts.topP ?? 1
  if (p < 1) {
    let zk = 0
    for (let i = 0; i < V; i++) if (keep[i]) zk += w[i]
    const values = [...new Set(x.filter((_, i) => keep[i]))].sort((a, b) => b - a)
    let cum = 0,
      thr = values[values.length - 1]
    for (const v of values) {
      // whole tie groups, largest first
      for (let i = 0; i < V; i++) if (keep[i] && x[i] === v) cum += w[i] / zk
      if (cum >= p) {
        thr = v
        break
      }
    }
    for (let i = 0; i < V; i++) keep[i] = keep[i] && x[i] >= thr
  }
  const minP = opts.minP ?? 0
  if (minP > 0) for (let i = 0; i < V; i++) keep[i] = keep[i] && w[i] >= minP
  let zs = 0
  for (let i = 0; i < V; i++) if (keep[i]) zs += w[i]
  const filtered = Float64Array.from(w, (wi, i) => (keep[i] ? wi / zs : 0))
  return { full, filtered }
}

function softmax(x, T) {
  let max = -Infinity
  for (const v of x) max = Math.max(max, v)
  const w = Array.from(x, (v) => (v === -Infinity ? 0 : Math.exp((v - max) / T)))
  const z = w.reduce((a, b) => a + b, 0)
  return Float64Array.from(w, (v) => v / z)
}

function toBf16(f32) {
  const u = new Uint32Array(Float32Array.from(f32).buffer)
  return Uint16Array.from(u, (b) => (b + 0x7fff + ((b >>> 16) & 1)) >>> 16)
}
function fromBf16(bits) {
  return new Float32Array(Uint32Array.from(bits, (b) => b << 16).buffer)
}

function repeatRows(row, rows) {
  const out = new row.constructor(row.length * rows)
  for (let r = 0; r < rows; r++) out.set(row, r * row.length)
  return out
}

/** Checks every draw against the reference: kept set, log-probabilities; returns the token counts. */
function checkDraws(t, got, refs, rows, label) {
  const V = refs[0].filtered.length
  const counts = new Float64Array(V)
  let worstLp = 0,
    worstFlp = 0,
    outside = 0
  for (let r = 0; r < rows; r++) {
    const ref = refs[refs.length === 1 ? 0 : r]
    const tok = got.tokens[r]
    if (!(tok >= 0 && tok < V) || ref.filtered[tok] === 0) {
      outside++
      continue
    }
    counts[tok]++
    worstLp = Math.max(worstLp, Math.abs(got.logprobs[r] - Math.log(ref.full[tok])))
    worstFlp = Math.max(worstFlp, Math.abs(got.filteredLogprobs[r] - Math.log(ref.filtered[tok])))
  }
  t.equal(outside, 0, `${label}: every token lies in the kept set`)
  t.ok(worstLp < 2e-4, `${label}: logprob matches the float64 reference (worst abs error ${worstLp.toExponential(2)})`)
  t.ok(worstFlp < 2e-4, `${label}: filtered logprob matches the float64 reference (worst abs error ${worstFlp.toExponential(2)})`)
  return counts
}

function goodnessOfFit(t, counts, probs, draws, label) {
  const c = chiSquare(counts, probs, draws)
  t.comment(`${label}: chi2 ${c.stat.toFixed(1)}, df ${c.df}, p ${c.p.toExponential(2)} (${draws} draws)`)
  t.equal(c.outside, 0, `${label}: no draw outside the filtered support`)
  t.ok(c.p > ALPHA, `${label}: draws fit the exact filtered distribution (p = ${c.p.toExponential(2)} > ${ALPHA})`)
}

const modes = [
  { name: 'temperature 1', opts: { temperature: 1 } },
  { name: 'temperature 0.6', opts: { temperature: 0.6 } },
  { name: 'top-k 5', opts: { topK: 5 } },
  { name: 'top-p 0.7', opts: { topP: 0.7 } },
  { name: 'min-p 0.2', opts: { minP: 0.2 } },
  { name: 'top-k 10 + top-p 0.8 + min-p 0.05, T 0.8', opts: { topK: 10, topP: 0.8, minP: 0.05, temperature: 0.8 } }
]

t.test('Philox-4x32-10 known answers (Random123 test vectors)', async (t) => {
  const hex = (a) => Array.from(a, (v) => v.toString(16).padStart(8, '0'))
  t.same(hex(philox4x32(new Uint32Array(4), new Uint32Array(2))), ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8'])
  t.same(hex(philox4x32(new Uint32Array(4).fill(0xffffffff), new Uint32Array(2).fill(0xffffffff))), [
    '408f276d',
    '41c83b0e',
    'a20bc7c6',
    '6d5451fd'
  ])
  t.same(hex(philox4x32(new Uint32Array([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344]), new Uint32Array([0xa4093822, 0x299f31d0]))), [
    'd16cfe09',
    '94fdcceb',
    '5001e420',
    '24126ea1'
  ])
})

t.test('each mode on the CPU: exact kept set, log-probabilities and chi-square fit', async (t) => {
  const r = rng(t, 'cpu modes')
  const V = 64,
    draws = 40000
  for (const mode of modes) {
    const row = Float32Array.from({ length: V }, () => 2 * r.normal())
    const seed = r.int(0, 2 ** 31)
    t.comment(`${mode.name}: sample seed ${seed}`)
    const got = await sample(repeatRows(row, draws), draws, { ...mode.opts, seed, device: 'cpu' })
    const ref = reference(Array.from(row), mode.opts)
    const counts = checkDraws(t, got, [ref], draws, mode.name)
    goodnessOfFit(t, counts, ref.filtered, draws, mode.name)
  }
})

t.test('bf16 logits', async (t) => {
  const r = rng(t, 'bf16')
  const V = 50,
    draws = 30000
  const bits = toBf16(Float32Array.from({ length: V }, () => 2 * r.normal()))
  const opts = { topP: 0.9, temperature: 0.9 }
  const ref = reference(Array.from(fromBf16(bits)), opts)
  const got = await sample(repeatRows(bits, draws), draws, { ...opts, seed: r.int(0, 1e9), device: 'cpu' })
  goodnessOfFit(t, checkDraws(t, got, [ref], draws, 'bf16 top-p'), ref.filtered, draws, 'bf16 top-p')
  const emu = await sample(repeatRows(bits, 200), 200, { ...opts, seed: 7, device: 'emulated' })
  const cpu = await sample(repeatRows(bits, 200), 200, { ...opts, seed: 7, device: 'cpu' })
  t.same(Array.from(emu.tokens), Array.from(cpu.tokens), 'bf16: emulated CUDA picks the CPU tokens')
})

t.test('ties at the top-k and top-p boundaries, all-equal logits, -inf entries', async (t) => {
  const draws = 20000
  // top-k 3 with the 3rd..5th largest tied: all five are kept (ties kept together)
  const tiedK = Float32Array.from([0.5, 5, 4, 3, 3, 3, 1, -2])
  let ref = reference(Array.from(tiedK), { topK: 3 })
  t.equal(ref.filtered.filter((p) => p > 0).length, 5, 'reference keeps the whole tie group')
  let got = await sample(repeatRows(tiedK, draws), draws, { topK: 3, seed: 11, device: 'cpu' })
  goodnessOfFit(t, checkDraws(t, got, [ref], draws, 'top-k tie'), ref.filtered, draws, 'top-k tie')
  for (const tok of [3, 4, 5]) t.ok(got.tokens.includes(tok), `tied token ${tok} is drawn`)
  // top-p boundary inside a tie group: the whole group is kept
  const tiedP = Float32Array.from([2, 1, 1, 1, 0, 0])
  const w = Array.from(tiedP, (v) => Math.exp(v - 2))
  const z = w.reduce((a, b) => a + b)
  const topP = (w[0] + 1.5 * w[1]) / z // reached half-way through the group of 1s
  ref = reference(Array.from(tiedP), { topP })
  t.same(
    Array.from(ref.filtered, (p) => p > 0),
    [true, true, true, true, false, false],
    'reference keeps the tie group whole'
  )
  got = await sample(repeatRows(tiedP, draws), draws, { topP, seed: 12, device: 'cpu' })
  goodnessOfFit(t, checkDraws(t, got, [ref], draws, 'top-p tie'), ref.filtered, draws, 'top-p tie')
  // all-equal logits: every filter keeps everything (one tie group), uniform draws
  const flat = new Float32Array(10).fill(1.25)
  for (const opts of [{}, { topK: 3 }, { topP: 0.3 }, { minP: 0.9 }]) {
    ref = reference(Array.from(flat), opts)
    got = await sample(repeatRows(flat, draws), draws, { ...opts, seed: 13, device: 'cpu' })
    goodnessOfFit(
      t,
      checkDraws(t, got, [ref], draws, `all equal ${JSON.stringify(opts)}`),
      ref.filtered,
      draws,
      `all equal ${JSON.stringify(opts)}`
    )
  }
  // -inf entries are never drawn, with and without top-k larger than the finite count
  const withInf = Float32Array.from([-Infinity, 0.3, -Infinity, 1, -0.5, -Infinity])
  for (const opts of [{}, { topK: 5 }, { topP: 0.95 }]) {
    ref = reference(Array.from(withInf), opts)
    got = await sample(repeatRows(withInf, draws), draws, { ...opts, seed: 14, device: 'cpu' })
    goodnessOfFit(t, checkDraws(t, got, [ref], draws, `-inf ${JSON.stringify(opts)}`), ref.filtered, draws, `-inf ${JSON.stringify(opts)}`)
  }
})

t.test('greedy (temperature 0)', async (t) => {
  const r = rng(t, 'greedy')
  for (const device of backends(t, addon)) {
    const V = 33,
      rows = 17
    const logits = Float32Array.from({ length: V * rows }, () => r.normal())
    logits[5 * V + 3] = 10
    logits[5 * V + 7] = 10 // a tie: the first index wins
    const got = await sample(logits, rows, { temperature: 0, topK: 3, topP: 0.5, seed: 1, device })
    for (let row = 0; row < rows; row++) {
      const x = Array.from(logits.subarray(row * V, (row + 1) * V))
      const ref = reference(x, { temperature: 0 })
      t.equal(got.tokens[row], ref.greedy, `${device} row ${row}: first argmax`)
      t.ok(Math.abs(got.logprobs[row] - Math.log(ref.full[ref.greedy])) < 1e-5, `${device} row ${row}: logprob under T = 1`)
      t.equal(got.filteredLogprobs[row], 0, `${device} row ${row}: filtered logprob 0`)
    }
  }
})

t.test('per-row parameters and odd row counts (CPU)', async (t) => {
  const r = rng(t, 'per-row')
  for (const rows of oddSizes) {
    const V = r.pick([1, 17, 100])
    const logits = Float32Array.from({ length: rows * V }, () => 1.5 * r.normal())
    const params = Array.from({ length: rows }, () => ({
      temperature: r.pick([0, 0.5, 1, 1.7]),
      topK: r.pick([0, 1, 3, 20]),
      topP: r.pick([1, 0.9, 0.5]),
      minP: r.pick([0, 0.05, 0.3])
    }))
    const options = {
      temperature: params.map((p) => p.temperature),
      topK: params.map((p) => p.topK),
      topP: params.map((p) => p.topP),
      minP: params.map((p) => p.minP),
      seed: r.int(0, 1e9),
      step: 3
    }
    const got = await sample(logits, rows, { ...options, device: 'cpu' })
    const refs = params.map((p, row) => reference(Array.from(logits.subarray(row * V, (row + 1) * V)), p))
    const greedyRows = params.map((p) => p.temperature === 0)
    let bad = 0
    for (let row = 0; row < rows; row++) {
      const ref = refs[row],
        tok = got.tokens[row]
      if (greedyRows[row]) {
        if (tok !== ref.greedy) bad++
        continue
      }
      if (
        ref.filtered[tok] === 0 ||
        Math.abs(got.filteredLogprobs[row] - Math.log(ref.filtered[tok])) > 2e-4 ||
        Math.abs(got.logprobs[row] - Math.log(ref.full[tok])) > 2e-4
      )
        bad++
    }
    t.equal(bad, 0, `${rows} rows x vocab ${V}: every row follows its own parameters`)
    if (rows <= 1000) {
      // the kernel reads the same per-row parameters
      for (const device of backends(t, addon).filter((d) => d !== 'cpu')) {
        const other = await sample(logits, rows, { ...options, device })
        t.same(Array.from(other.tokens), Array.from(got.tokens), `${device}: ${rows} rows with per-row parameters pick the CPU tokens`)
      }
    }
  }
})

t.test('CPU, emulated CUDA (and CUDA) pick identical tokens for the same seed', async (t) => {
  const r = rng(t, 'cross-backend')
  const devs = backends(t, addon)
  const cases = [
    { rows: 300, V: 40 },
    { rows: 17, V: 1000 },
    { rows: 3, V: 4097 },
    { rows: 1, V: 17 },
    { rows: 2, V: 151936 }
  ]
  for (const { rows, V } of cases) {
    const logits = Float32Array.from({ length: rows * V }, () => 3 * r.normal())
    // top-k 1500 takes the radix-select path on the CPU (small k uses a heap): both must agree with the kernel
    const extra = [
      { name: 'greedy', opts: { temperature: 0 } },
      { name: 'top-k 1500 + top-p 0.9', opts: { topK: 1500, topP: 0.9 } },
      // top-k and top-p without min-p: the CPU picks from the weights its top-p pass stored
      { name: 'top-k 50 + top-p 0.95', opts: { topK: 50, topP: 0.95 } }
    ]
    for (const mode of [...modes, ...extra]) {
      if (V === 151936 && !['top-k 10 + top-p 0.8 + min-p 0.05, T 0.8', 'temperature 1', 'top-k 1500 + top-p 0.9'].includes(mode.name))
        continue
      const seed = r.int(0, 2 ** 31)
      const cpu = await sample(logits, rows, { ...mode.opts, seed, step: 9, device: 'cpu' })
      for (const device of devs.filter((d) => d !== 'cpu')) {
        const other = await sample(logits, rows, { ...mode.opts, seed, step: 9, device })
        t.same(Array.from(other.tokens), Array.from(cpu.tokens), `${device} vs cpu, ${rows} x ${V}, ${mode.name}: same tokens`)
        let worst = 0
        for (let i = 0; i < rows; i++) {
          worst = Math.max(
            worst,
            Math.abs(other.logprobs[i] - cpu.logprobs[i]),
            Math.abs(other.filteredLogprobs[i] - cpu.filteredLogprobs[i])
          )
        }
        t.ok(worst < 1e-5, `${device} vs cpu, ${rows} x ${V}, ${mode.name}: same log-probabilities (worst ${worst.toExponential(2)})`)
      }
      if (rows <= 17) {
        // hold these rows to the reference as well (big vocabularies included)
        const refs = Array.from({ length: rows }, (_, i) => reference(Array.from(logits.subarray(i * V, (i + 1) * V)), mode.opts))
        if (mode.name !== 'greedy') checkDraws(t, cpu, refs, rows, `${rows} x ${V} ${mode.name} vs reference`)
      }
    }
  }
})

t.test('emulated CUDA fits the exact distribution directly', async (t) => {
  const r = rng(t, 'emulated fit')
  const V = 24,
    draws = 3000
  const row = Float32Array.from({ length: V }, () => 1.5 * r.normal())
  const opts = { topK: 12, topP: 0.9, minP: 0.02, temperature: 0.9 }
  const ref = reference(Array.from(row), opts)
  const got = await sample(repeatRows(row, draws), draws, { ...opts, seed: r.int(0, 1e9), device: 'emulated' })
  goodnessOfFit(t, checkDraws(t, got, [ref], draws, 'emulated combined'), ref.filtered, draws, 'emulated combined')
})

t.test('the portable CPU path (baseline SIMD) matches the AVX2 path token for token', async (t) => {
  const r = rng(t, 'simd')
  const rows = 64,
    V = 5003
  const logits = Float32Array.from({ length: rows * V }, () => 2 * r.normal())
  // beyond `modes`: the radix top-k, a heap top-k near its 1024 limit with min-p (kept mass chunk by chunk), and
  // top-k + top-p without min-p (the pick over the weights stored by the top-p pass)
  const extra = [
    { name: 'top-k 1500', opts: { topK: 1500 } },
    { name: 'top-k 1000 + min-p 0.01', opts: { topK: 1000, minP: 0.01 } },
    { name: 'top-k 50 + top-p 0.95', opts: { topK: 50, topP: 0.95 } }
  ]
  for (const mode of [...modes, ...extra]) {
    const seed = r.int(0, 1e9)
    setSimdLevel('baseline')
    let base
    try {
      base = await sample(logits, rows, { ...mode.opts, seed, device: 'cpu' })
    } finally {
      setSimdLevel('auto')
    }
    const fast = await sample(logits, rows, { ...mode.opts, seed, device: 'cpu' })
    t.same(Array.from(fast.tokens), Array.from(base.tokens), `${mode.name}: identical tokens`)
    t.same(Array.from(fast.logprobs), Array.from(base.logprobs), `${mode.name}: identical logprobs`)
  }
})

t.test('seeds, steps and row ids select independent streams', async (t) => {
  const V = 1000,
    rows = 200
  const logits = new Float32Array(rows * V) // uniform rows
  const a = await sample(logits, rows, { seed: 1, device: 'cpu' })
  const b = await sample(logits, rows, { seed: 1, device: 'cpu' })
  const c = await sample(logits, rows, { seed: 2, device: 'cpu' })
  const d = await sample(logits, rows, { seed: 1, step: 1, device: 'cpu' })
  const e = await sample(logits, rows, { seed: 1, rowIds: Array.from({ length: rows }, (_, i) => i + 1), device: 'cpu' })
  t.same(Array.from(a.tokens), Array.from(b.tokens), 'same seed, same tokens')
  const same = (x, y) => x.tokens.filter((v, i) => v === y.tokens[i]).length
  t.ok(same(a, c) < 10, 'another seed gives other tokens')
  t.ok(same(a, d) < 10, 'another step gives other tokens')
  t.same(Array.from(e.tokens.subarray(0, rows - 1)), Array.from(a.tokens.subarray(1)), 'row ids key the stream, not row positions')
  const big = await sample(logits.subarray(0, V), 1, { seed: 2n ** 64n - 1n, device: 'cpu' })
  t.ok(big.tokens[0] >= 0 && big.tokens[0] < V, 'a 64-bit BigInt seed works')
})

t.test('invalid input is rejected with a code', async (t) => {
  for (const device of backends(t, addon)) {
    const nan = Float32Array.from([0, 1, NaN, 2])
    await t.rejects(sample(nan, 1, { device }), { code: 'ERR_INVALID_ARG', message: /NaN at index 2/ }, `${device}: NaN`)
    await t.rejects(
      sample(Float32Array.from([0, Infinity]), 1, { device }),
      { code: 'ERR_INVALID_ARG', message: /\+Infinity/ },
      `${device}: +inf`
    )
    const rows2 = Float32Array.from([0, 1, -Infinity, -Infinity])
    await t.rejects(
      sample(rows2, 2, { device }),
      { code: 'ERR_INVALID_ARG', message: /row 1 is entirely -Infinity/ },
      `${device}: all -inf row`
    )
  }
  const late = new Float32Array(600 * 10)
  late[599 * 10 + 3] = NaN
  await t.rejects(
    sample(late, 600, { device: 'cpu' }),
    { code: 'ERR_INVALID_ARG', message: /row 599 holds NaN at index 3/ },
    'the error names the row past the first chunk'
  )
  const ac = new AbortController()
  const pending = sample(new Float32Array(3000 * 20000), 3000, { topP: 0.9, signal: ac.signal, device: 'cpu' })
  setTimeout(() => ac.abort(), 20)
  await t.rejects(pending, { code: 'ABORT_ERR' }, 'an AbortSignal stops a long call')
  const ok = new Float32Array(8)
  await t.rejects(sample(ok, 3), { code: 'ERR_INVALID_ARG' }, 'rows must divide the length')
  await t.rejects(sample([1, 2], 1), { code: 'ERR_INVALID_ARG' }, 'logits must be typed')
  await t.rejects(sample(ok, 1, { temperature: -1 }), { code: 'ERR_INVALID_ARG' }, 'negative temperature')
  await t.rejects(sample(ok, 1, { topP: 0 }), { code: 'ERR_INVALID_ARG' }, 'topP 0')
  await t.rejects(sample(ok, 1, { topP: 1.5 }), { code: 'ERR_INVALID_ARG' }, 'topP > 1')
  await t.rejects(sample(ok, 1, { minP: 2 }), { code: 'ERR_INVALID_ARG' }, 'minP > 1')
  await t.rejects(sample(ok, 1, { topK: 1.5 }), { code: 'ERR_INVALID_ARG' }, 'fractional topK')
  await t.rejects(sample(ok, 1, { topK: -1 }), { code: 'ERR_INVALID_ARG' }, 'negative topK')
  await t.rejects(sample(ok, 2, { topK: [1, 2, 3] }), { code: 'ERR_INVALID_ARG' }, 'per-row array of the wrong length')
  await t.rejects(sample(ok, 1, { seed: -1 }), { code: 'ERR_INVALID_ARG' }, 'negative seed')
  await t.rejects(sample(ok, 1, { device: 'gpu' }), { code: 'ERR_INVALID_ARG' }, 'unknown device')
  if (!addon.systemInfo().cuda.available) await t.rejects(sample(ok, 1, { device: 'cuda' }), { code: 'ERR_CUDA_UNAVAILABLE' })
})
