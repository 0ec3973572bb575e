// LoRA / DoRA forward and backward for one linear layer, against torch autograd on PEFT's definitions
// (test/reference/train_adapters.py, float64), against finite differences of our own forward, and the
// Philox dropout mask against the Random123 known answers.
import t from 'tap'
import { native } from '../dist/cjs/native.js'
import {
  adapterForward,
  adapterBackward,
  adapterSavedBuffers,
  doraWeightNorm,
  mergeAdapter,
  dropoutMask,
  philox4x32
} from '../dist/cjs/train/adapters.js'
import { rng, poison, maxRelError } from './helpers.mjs'
import { torchUnavailable, runTorch } from './train-torch.mjs'

const addon = native()

t.test('Philox4x32-10 matches the Random123 known-answer vectors', async (t) => {
  const kat = [
    [
      [0, 0, 0, 0],
      [0, 0],
      [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
    ],
    [
      [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
      [0xffffffff, 0xffffffff],
      [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
    ],
    [
      [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
      [0xa4093822, 0x299f31d0],
      [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
    ]
  ]
  for (const [ctr, key, want] of kat) {
    t.same(
      Array.from(philox4x32(Uint32Array.from(ctr), Uint32Array.from(key))),
      want,
      `counter ${ctr.map((x) => x.toString(16)).join(' ')}`
    )
  }
})

t.test('dropout mask: deterministic, counter-addressed, keeps about 1 - p', async (t) => {
  const r = rng(t)
  const seed = r.int(0, 2 ** 31)
  for (const p of [0.01, 0.1, 0.5]) {
    const n = 20000
    const a = dropoutMask(n, p, seed, 0)
    t.same(dropoutMask(n, p, seed, 0), a, 'same seed, same mask')
    const off = r.int(1, 5000)
    t.same(dropoutMask(100, p, seed, off), a.subarray(off, off + 100), 'offset addresses the same counters')
    const kept = a.reduce((s, x) => s + x, 0)
    const sd = Math.sqrt(n * p * (1 - p))
    t.ok(Math.abs(kept - n * (1 - p)) < 5 * sd, `p=${p}: kept ${kept} of ${n} (expected ${n * (1 - p)} +- ${(5 * sd).toFixed(0)})`)
    const other = dropoutMask(n, p, seed + 1, 0)
    t.not(Buffer.from(other).equals(Buffer.from(a)), 'another seed gives another mask')
  }
  t.ok(
    dropoutMask(1000, 0, seed, 0).every((x) => x === 1),
    'p = 0 keeps everything'
  )
})

function randomLayer(r, dims, { dora, bias, dropout }) {
  const rand = (n, s = 1) => Float32Array.from({ length: n }, () => r.normal() * s)
  const layer = {
    weight: rand(dims.out * dims.in, 1 / Math.sqrt(dims.in)),
    loraA: rand(dims.rank * dims.in, 1 / Math.sqrt(dims.in)),
    loraB: rand(dims.out * dims.rank, 0.3),
    scaling: 16 / dims.rank,
    dropout,
    seed: r.int(0, 2 ** 31),
    offset: r.int(0, 1e6)
  }
  if (bias) layer.bias = rand(dims.out)
  if (dora) layer.magnitude = Float32Array.from({ length: dims.out }, () => 0.5 + r.next())
  return layer
}

function poisonedRun(x, dy, dims, layer) {
  const dora = layer.magnitude !== undefined
  const y = poison(new Float32Array(dims.rows * dims.out))
  const saved = adapterSavedBuffers(dims, dora)
  for (const b of Object.values(saved)) poison(b)
  adapterForward(x, dims, layer, y, saved)
  const grads = {
    input: poison(new Float32Array(dims.rows * dims.in)),
    loraA: poison(new Float32Array(dims.rank * dims.in)),
    loraB: poison(new Float32Array(dims.out * dims.rank)),
    ...(dora ? { magnitude: poison(new Float32Array(dims.out)) } : {})
  }
  adapterBackward(x, dy, dims, layer, saved, grads)
  return { y, saved, grads }
}

const SHAPES = [
  { rows: 1, in: 1, out: 1, rank: 1 },
  { rows: 17, in: 17, out: 13, rank: 4 },
  { rows: 1000, in: 24, out: 17, rank: 8 },
  { rows: 3, in: 4097, out: 5, rank: 2 }
]
const VARIANTS = [
  { dora: false, bias: true, dropout: 0 },
  { dora: false, bias: false, dropout: 0.3 },
  { dora: true, bias: true, dropout: 0 },
  { dora: true, bias: true, dropout: 0.25 }
]

t.test("forward and backward agree with torch autograd on PEFT's definitions", { skip: torchUnavailable() }, async (t) => {
  const r = rng(t)
  const cases = []
  for (const dims of SHAPES) {
    for (const v of VARIANTS) {
      const layer = randomLayer(r, dims, v)
      const x = Float32Array.from({ length: dims.rows * dims.in }, () => r.normal())
      const dy = Float32Array.from({ length: dims.rows * dims.out }, () => r.normal())
      const got = poisonedRun(x, dy, dims, layer)
      const mask = v.dropout > 0 ? Array.from(dropoutMask(dims.rows * dims.in, v.dropout, layer.seed, layer.offset)) : null
      cases.push({
        dims,
        v,
        got,
        job: {
          ...dims,
          x: Array.from(x),
          dy: Array.from(dy),
          weight: Array.from(layer.weight),
          bias: layer.bias ? Array.from(layer.bias) : null,
          loraA: Array.from(layer.loraA),
          loraB: Array.from(layer.loraB),
          magnitude: layer.magnitude ? Array.from(layer.magnitude) : null,
          scaling: layer.scaling,
          dropout: v.dropout,
          mask
        }
      })
    }
  }
  const refs = runTorch(
    'train_adapters.py',
    cases.map((c) => c.job)
  )
  cases.forEach(({ dims, v, got }, k) => {
    const ref = refs[k]
    const label = `${v.dora ? 'DoRA' : 'LoRA'} p=${v.dropout} ${dims.rows}x${dims.in}->${dims.out} r=${dims.rank}`
    // Relative error floored at 1% of the largest reference value (entries near zero carry cancellation).
    const check = (name, a, b) => {
      const floor = 0.01 * Math.max(...b.map(Math.abs), 1e-30)
      const e = maxRelError(a, b, floor)
      t.ok(e < 2e-5, `${label}: ${name} (${e.toExponential(2)})`)
    }
    check('y', got.y, ref.y)
    check('dx', got.grads.input, ref.dx)
    check('dA', got.grads.loraA, ref.dA)
    check('dB', got.grads.loraB, ref.dB)
    if (v.dora) {
      check('dm', got.grads.magnitude, ref.dm)
      check('weight norm', got.saved.weightNorm, ref.weightNorm)
    }
  })
})

// L(theta) = sum(y * dy) computed from our fp32 forward; central differences in float64.
function lossOf(x, dy, dims, layer) {
  const { y } = adapterForward(x, dims, layer)
  let s = 0
  for (let i = 0; i < y.length; i++) s += y[i] * dy[i]
  return s
}

t.test('gradients agree with finite differences of the forward', async (t) => {
  const r = rng(t)
  const dims = { rows: 5, in: 7, out: 6, rank: 3 }
  for (const v of VARIANTS) {
    const layer = randomLayer(r, dims, v)
    const x = Float32Array.from({ length: dims.rows * dims.in }, () => r.normal())
    const dy = Float32Array.from({ length: dims.rows * dims.out }, () => r.normal())
    const { saved } = adapterForward(x, dims, layer)
    const g = adapterBackward(x, dy, dims, layer, saved)
    // DoRA treats the weight norm as a constant in backward (PEFT's detach), so its dA and dB are not the
    // derivatives of the forward: only dm and dx are checked against finite differences there.
    const targets = [
      ['x', x, g.input],
      ['magnitude', layer.magnitude, g.magnitude]
    ]
    if (!v.dora) targets.push(['loraA', layer.loraA, g.loraA], ['loraB', layer.loraB, g.loraB])
    for (const [name, arr, grad] of targets) {
      if (!arr) continue
      // The loss is linear in each of these entries, so central differences have no truncation error; the
      // error left is fp32 rounding of y, hence the floor at 5% of the largest gradient entry.
      let worst = 0
      const floor = Math.max(1e-2, 0.05 * Math.max(...Array.from(grad, Math.abs)))
      for (let k = 0; k < 6; k++) {
        const i = r.int(0, arr.length - 1)
        const h = 5e-2 * Math.max(1, Math.abs(arr[i]))
        const orig = arr[i]
        arr[i] = orig + h
        const lp = lossOf(x, dy, dims, layer)
        arr[i] = orig - h
        const lm = lossOf(x, dy, dims, layer)
        arr[i] = orig
        const fd = (lp - lm) / (2 * h)
        worst = Math.max(worst, Math.abs(fd - grad[i]) / Math.max(Math.abs(fd), floor))
      }
      t.ok(worst < 2e-3, `${v.dora ? 'DoRA' : 'LoRA'} p=${v.dropout} d${name}: worst relative difference ${worst.toExponential(2)}`)
    }
  }
})

t.test('DoRA: fresh magnitude = weight norm makes the layer equal the base layer; backward accumulates', async (t) => {
  const r = rng(t)
  const dims = { rows: 17, in: 17, out: 13, rank: 4 }
  const layer = randomLayer(r, dims, { dora: true, bias: true, dropout: 0 })
  layer.magnitude = doraWeightNorm(dims, layer)
  // Reference norm in float64.
  for (let o = 0; o < dims.out; o++) {
    let sq = 0
    for (let i = 0; i < dims.in; i++) {
      let ba = 0
      for (let j = 0; j < dims.rank; j++) ba += layer.loraB[o * dims.rank + j] * layer.loraA[j * dims.in + i]
      const w = layer.weight[o * dims.in + i] + layer.scaling * ba
      sq += w * w
    }
    t.ok(Math.abs(layer.magnitude[o] - Math.sqrt(sq)) / Math.sqrt(sq) < 1e-6, `norm of row ${o}`)
  }
  // With m = ||W + sBA|| the DoRA layer computes (W + sBA) x + b exactly like an unnormalised LoRA layer.
  const x = Float32Array.from({ length: dims.rows * dims.in }, () => r.normal())
  const dora = adapterForward(x, dims, layer).y
  const lora = adapterForward(x, dims, { ...layer, magnitude: undefined }).y
  t.ok(maxRelError(dora, lora, 1e-3) < 1e-5, 'DoRA with m = norm equals LoRA')
  const dy = Float32Array.from({ length: dims.rows * dims.out }, () => r.normal())
  const { saved } = adapterForward(x, dims, layer)
  const once = adapterBackward(x, dy, dims, layer, saved)
  const acc = adapterBackward(x, dy, dims, layer, saved, {
    loraA: once.loraA.slice(),
    loraB: once.loraB.slice(),
    magnitude: once.magnitude.slice(),
    accumulate: true
  })
  t.ok(
    maxRelError(
      acc.loraA,
      once.loraA.map((v) => 2 * v),
      1e-6
    ) < 1e-6,
    'accumulate adds dA'
  )
  t.ok(
    maxRelError(
      acc.magnitude,
      once.magnitude.map((v) => 2 * v),
      1e-6
    ) < 1e-6,
    'accumulate adds dm'
  )
})

t.test('merged weights compute what the adapter layer computes (inference)', async (t) => {
  const r = rng(t)
  for (const dims of [
    { rows: 17, in: 17, out: 13, rank: 4 },
    { rows: 1, in: 1000, out: 3, rank: 8 }
  ]) {
    for (const dora of [false, true]) {
      const layer = randomLayer(r, dims, { dora, bias: true, dropout: 0 })
      const x = Float32Array.from({ length: dims.rows * dims.in }, () => r.normal())
      const merged = poison(new Float32Array(dims.out * dims.in))
      merged.set(mergeAdapter(dims, layer))
      const want = adapterForward(x, dims, layer).y
      const got = new Float64Array(dims.rows * dims.out)
      for (let i = 0; i < dims.rows; i++) {
        for (let o = 0; o < dims.out; o++) {
          let s = layer.bias[o]
          for (let k = 0; k < dims.in; k++) s += x[i * dims.in + k] * merged[o * dims.in + k]
          got[i * dims.out + o] = s
        }
      }
      const e = maxRelError(got, want, 0.01 * Math.max(...Array.from(want, Math.abs)))
      t.ok(e < 1e-5, `${dora ? 'DoRA' : 'LoRA'} ${dims.in}->${dims.out}: x W'^T + b = adapter output (${e.toExponential(2)})`)
    }
  }
})

t.test('results do not depend on the thread count', async (t) => {
  const r = rng(t)
  const dims = { rows: 64, in: 33, out: 29, rank: 8 }
  const layer = randomLayer(r, dims, { dora: true, bias: true, dropout: 0.1 })
  const x = Float32Array.from({ length: dims.rows * dims.in }, () => r.normal())
  const dy = Float32Array.from({ length: dims.rows * dims.out }, () => r.normal())
  const hw = addon.systemInfo().hardwareThreads
  addon.setNumThreads(1)
  const a = poisonedRun(x, dy, dims, layer)
  addon.setNumThreads(Math.max(2, hw))
  const b = poisonedRun(x, dy, dims, layer)
  addon.setNumThreads(hw)
  for (const k of ['input', 'loraA', 'loraB', 'magnitude'])
    t.ok(Buffer.from(a.grads[k].buffer).equals(Buffer.from(b.grads[k].buffer)), `d${k} identical`)
  t.ok(Buffer.from(a.y.buffer).equals(Buffer.from(b.y.buffer)), 'y identical')
})

t.test('bad arguments are errors, not crashes', async (t) => {
  const dims = { rows: 2, in: 3, out: 4, rank: 2 }
  const layer = { weight: new Float32Array(12), loraA: new Float32Array(6), loraB: new Float32Array(8), scaling: 1 }
  const x = new Float32Array(6)
  t.throws(() => adapterForward(new Float32Array(5), dims, layer), { code: 'ERR_INVALID_ARG', message: /x must have 6/ })
  t.throws(() => adapterForward(x, dims, { ...layer, loraB: new Float32Array(7) }), { code: 'ERR_INVALID_ARG', message: /loraB/ })
  t.throws(() => adapterForward(x, dims, { ...layer, dropout: 1 }), { code: 'ERR_INVALID_ARG', message: /dropout/ })
  t.throws(() => adapterForward(x, { ...dims, rank: 0 }, layer), { code: 'ERR_INVALID_ARG', message: /rank/ })
  t.throws(() => adapterForward(x, dims, { ...layer, magnitude: new Float32Array(4) }, undefined, adapterSavedBuffers(dims, false)), {
    code: 'ERR_INVALID_ARG',
    message: /weightNorm/
  })
  t.throws(() => addon.adapterBackward(x, new Float32Array(8), dims, layer, adapterSavedBuffers(dims, false), {}), {
    code: 'ERR_INVALID_ARG',
    message: /loraA/
  })
  t.throws(() => dropoutMask(10, 1.5, 0, 0), { code: 'ERR_INVALID_ARG' })
  t.throws(() => philox4x32(new Uint32Array(3), new Uint32Array(2)), { code: 'ERR_INVALID_ARG' })
})
