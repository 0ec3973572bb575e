// CPU transformer ops (src/ops): every fast path against its float64 reference at odd sizes on both SIMD
// levels; every backward against the reference backward, central finite differences, and torch autograd
// (Debian's python3-torch, float64) on tiny sizes; the whole decoder layer forward+backward against torch.
import t from 'tap'
import { execFileSync } from 'child_process'
import * as fs from 'fs'
import { require, rng, poison, oddSizes, relErr } from './helpers.mjs'

const addon = require('../build/Release/recode.node')
const TORCH_PYTHON = '/usr/bin/python3'

function randArray(r, n, scale = 1) {
  const a = new Float32Array(n)
  for (let i = 0; i < n; i++) a[i] = scale * r.normal()
  return a
}
const LEVELS = ['avx2', 'baseline']
function eachLevel(t, fn) {
  for (const level of LEVELS) {
    const got = addon.setSimdLevel(level)
    if (got !== level) t.comment(`SIMD level ${level} unavailable on this CPU (running ${got})`)
    fn(got)
  }
  addon.setSimdLevel('auto')
}

t.test('GEMM: fast (packed, threaded) equals the float64 reference at odd sizes, with transposes', async (t) => {
  const r = rng(t)
  const shapes = []
  for (const m of oddSizes) shapes.push([m, 17, 33], [17, m, 19], [5, 7, m])
  shapes.push([130, 70, 300], [1, 1000, 1000])
  eachLevel(t, (level) => {
    for (const [M, N, K] of shapes) {
      const ta = r.next() < 0.5
      const tb = r.next() < 0.5
      const acc = r.next() < 0.5
      const A = randArray(r, M * K)
      const B = randArray(r, N * K)
      const C0 = randArray(r, M * N)
      const ref = C0.slice()
      const fast = acc ? C0.slice() : poison(new Float32Array(M * N))
      addon.opGemm('ref', ref, A, B, M, N, K, ta, tb, acc)
      addon.opGemm('fast', fast, A, B, M, N, K, ta, tb, acc)
      t.ok(
        relErr(fast, ref) < 1e-5,
        `${level} M=${M} N=${N} K=${K} transA=${ta} transB=${tb} acc=${acc}: rel err ${relErr(fast, ref).toExponential(2)}`
      )
    }
  })
})

function roundBf16(a) {
  const out = new Float32Array(a.length)
  const u = new Uint32Array(out.buffer)
  out.set(a)
  for (let i = 0; i < u.length; i++) u[i] = (((u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16) << 16) >>> 0
  return out
}

t.test('packed weights (inference): f32 and bf16 panels equal the reference at odd sizes', async (t) => {
  const r = rng(t)
  eachLevel(t, (level) => {
    for (const [M, N, K] of [
      [1, 17, 1000],
      [17, 1000, 17],
      [4097, 17, 33],
      [7, 33, 4097]
    ]) {
      const x = randArray(r, M * K)
      const W = randArray(r, N * K)
      const b = randArray(r, N)
      const ref = poison(new Float32Array(M * N))
      const y = poison(new Float32Array(M * N))
      addon.opLinearForward('ref', ref, x, W, b, M, N, K)
      addon.opLinearForward('fast', y, x, W, b, M, N, K, 'f32')
      t.ok(relErr(y, ref) < 1e-5, `${level} f32 panels ${M}x${N}x${K}`)
      const Wb = roundBf16(W)
      addon.opLinearForward('ref', ref, x, Wb, b, M, N, K)
      addon.opLinearForward('fast', poison(y), x, W, b, M, N, K, 'bf16')
      t.ok(
        relErr(y, ref) < 1e-5,
        `${level} bf16 panels ${M}x${N}x${K} equal the reference on bf16-rounded weights: ${relErr(y, ref).toExponential(2)}`
      )
    }
  })
})

t.test('linear forward/backward: fast equals reference', async (t) => {
  const r = rng(t)
  eachLevel(t, (level) => {
    for (const [M, N, K] of [
      [1, 17, 1000],
      [17, 1000, 17],
      [33, 65, 129]
    ]) {
      const x = randArray(r, M * K)
      const W = randArray(r, N * K)
      const b = randArray(r, N)
      const dy = randArray(r, M * N)
      const y1 = poison(new Float32Array(M * N))
      const y2 = poison(new Float32Array(M * N))
      addon.opLinearForward('ref', y1, x, W, b, M, N, K)
      addon.opLinearForward('fast', y2, x, W, b, M, N, K)
      t.ok(relErr(y2, y1) < 1e-5, `${level} forward ${M}x${N}x${K}`)
      const g1 = [new Float32Array(M * K), new Float32Array(N * K), new Float32Array(N)]
      const g2 = [new Float32Array(M * K), new Float32Array(N * K), new Float32Array(N)]
      addon.opLinearBackward('ref', ...g1, dy, x, W, M, N, K)
      addon.opLinearBackward('fast', ...g2, dy, x, W, M, N, K)
      for (let i = 0; i < 3; i++) t.ok(relErr(g2[i], g1[i]) < 1e-5, `${level} backward ${['dx', 'dW', 'db'][i]} ${M}x${N}x${K}`)
    }
  })
})

t.test('RMSNorm, SwiGLU, RoPE (llama3 scaling too), embedding: fast equals reference at odd sizes', async (t) => {
  const r = rng(t)
  eachLevel(t, (level) => {
    for (const C of oddSizes) {
      const N = 3
      const x = randArray(r, N * C)
      const w = randArray(r, C)
      const dout = randArray(r, N * C)
      const o1 = poison(new Float32Array(N * C))
      const o2 = poison(new Float32Array(N * C))
      const r1 = poison(new Float32Array(N))
      const r2 = poison(new Float32Array(N))
      addon.opRmsnormForward('ref', o1, r1, x, w, N, C, 1e-6)
      addon.opRmsnormForward('fast', o2, r2, x, w, N, C, 1e-6)
      t.ok(relErr(o2, o1) < 1e-5 && relErr(r2, r1) < 1e-5, `${level} rmsnorm forward C=${C}`)
      const dx1 = new Float32Array(N * C)
      const dw1 = new Float32Array(C)
      const dx2 = new Float32Array(N * C)
      const dw2 = new Float32Array(C)
      addon.opRmsnormBackward('ref', dx1, dw1, dout, x, w, null, N, C, 1e-6)
      addon.opRmsnormBackward('fast', dx2, dw2, dout, x, w, r2, N, C, 1e-6)
      // at C = 1 the true dx is ~eps-sized (x * rstd is +-1), and dw = sum over rows of +-dout can cancel to far below
      // its terms (seed 139174123: 0.0061 from terms near 1, off by 1.2e-7 = a few float32 ulps of the terms): measure
      // both against the gradient's natural scale, 1
      t.ok(relErr(dx2, dx1, 1) < 1e-5 && relErr(dw2, dw1, 1) < 1e-5, `${level} rmsnorm backward C=${C}`)

      const n = C * 3
      const g = randArray(r, n, 3)
      const u = randArray(r, n)
      const d = randArray(r, n)
      const s1 = poison(new Float32Array(n))
      const s2 = poison(new Float32Array(n))
      addon.opSwigluForward('ref', s1, g, u)
      addon.opSwigluForward('fast', s2, g, u)
      t.ok(relErr(s2, s1) < 1e-5, `${level} swiglu forward n=${n}`)
      const dg1 = new Float32Array(n)
      const du1 = new Float32Array(n)
      const dg2 = new Float32Array(n)
      const du2 = new Float32Array(n)
      addon.opSwigluBackward('ref', dg1, du1, d, g, u)
      addon.opSwigluBackward('fast', dg2, du2, d, g, u)
      t.ok(relErr(dg2, dg1) < 1e-5 && relErr(du2, du1) < 1e-5, `${level} swiglu backward n=${n}`)
    }
    const scaling = { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPosition: 64 }
    for (const [T, H, D, sc] of [
      [1, 1, 2, null],
      [17, 3, 64, scaling],
      [1000, 2, 18, null],
      [4097, 1, 8, scaling]
    ]) {
      const x = randArray(r, T * H * D)
      const pos = Int32Array.from({ length: T }, (_, i) => i * 3 + 1)
      const a = poison(new Float32Array(T * H * D))
      const b = poison(new Float32Array(T * H * D))
      addon.opRopeForward('ref', a, x, pos, T, H, D, 10000, sc)
      addon.opRopeForward('fast', b, x, pos, T, H, D, 10000, sc)
      t.ok(relErr(b, a) < 1e-5, `${level} rope T=${T} H=${H} D=${D} ${sc ? 'llama3' : 'plain'}: ${relErr(b, a).toExponential(2)}`)
      addon.opRopeBackward(b, pos, T, H, D, 10000, sc) // the inverse rotation brings x back
      t.ok(relErr(b, x) < 1e-5, `${level} rope backward undoes forward T=${T}`)
    }
  })
  const V = 1000
  const C = 17
  const T = 40
  const table = randArray(r, V * C)
  const ids = Int32Array.from({ length: T }, () => r.int(0, V - 1))
  const out = poison(new Float32Array(T * C))
  addon.opEmbeddingForward(out, ids, table, T, C)
  let ok = true
  for (let i = 0; i < T; i++) for (let c = 0; c < C; c++) ok &&= out[i * C + c] === table[ids[i] * C + c]
  t.ok(ok, 'embedding gathers rows')
  const dt = new Float32Array(V * C)
  const dout = randArray(r, T * C)
  addon.opEmbeddingBackward(dt, dout, ids, T, C)
  const expect = new Float64Array(V * C)
  for (let i = 0; i < T; i++) for (let c = 0; c < C; c++) expect[ids[i] * C + c] += dout[i * C + c]
  t.ok(relErr(dt, expect) < 1e-6, 'embedding backward scatters (repeated ids add up)')
  t.throws(
    () =>
      addon.opEmbeddingForward(
        out,
        Int32Array.from({ length: T }, () => V),
        table,
        T,
        C
      ),
    { code: 'ERR_INVALID_ARG' },
    'out-of-range id rejected'
  )
})

const attnShapes = [
  { T: 1, S: 1, H: 1, Hkv: 1, D: 1, qPos0: 0 },
  { T: 17, S: 17, H: 4, Hkv: 2, D: 16, qPos0: 0 },
  { T: 200, S: 200, H: 6, Hkv: 2, D: 17, qPos0: 0 },
  { T: 5, S: 1000, H: 4, Hkv: 1, D: 32, qPos0: 995 },
  { T: 1, S: 4097, H: 2, Hkv: 2, D: 64, qPos0: 4096 },
  { T: 70, S: 150, H: 2, Hkv: 1, D: 8, qPos0: 80 },
  { T: 130, S: 130, H: 2, Hkv: 1, D: 128, qPos0: 0 }, // full 64-key tiles, head dim in 64-wide blocks
  { T: 3, S: 700, H: 8, Hkv: 2, D: 64, qPos0: 697 } // decode of a GQA group sharing one K tile
]

t.test('attention: flash (tiled, online softmax) and split-context decode equal the reference; GQA; lse', async (t) => {
  const r = rng(t)
  eachLevel(t, (level) => {
    for (const s of attnShapes) {
      const qn = s.T * s.H * s.D
      const kn = s.S * s.Hkv * s.D
      const q = randArray(r, qn)
      const k = randArray(r, kn)
      const v = randArray(r, kn)
      const o1 = poison(new Float32Array(qn))
      const l1 = poison(new Float32Array(s.T * s.H))
      addon.opAttentionForward('ref', o1, l1, q, k, v, s)
      for (const variant of ['flash', 'decode']) {
        const o2 = poison(new Float32Array(qn))
        const l2 = poison(new Float32Array(s.T * s.H))
        addon.opAttentionForward(variant, o2, l2, q, k, v, s)
        t.ok(
          relErr(o2, o1) < 1e-5 && relErr(l2, l1) < 1e-5,
          `${level} ${variant} ${JSON.stringify(s)}: out ${relErr(o2, o1).toExponential(2)} lse ${relErr(l2, l1).toExponential(2)}`
        )
      }
      if (s.T * s.S <= 40000) {
        const dout = randArray(r, qn)
        const g1 = [new Float32Array(qn), new Float32Array(kn), new Float32Array(kn)]
        const g2 = [new Float32Array(qn), new Float32Array(kn), new Float32Array(kn)]
        addon.opAttentionBackward('ref', ...g1, dout, q, k, v, null, null, s)
        addon.opAttentionBackward('fast', ...g2, dout, q, k, v, o1, l1, s)
        for (let i = 0; i < 3; i++)
          t.ok(
            relErr(g2[i], g1[i]) < 1e-4,
            `${level} backward ${['dq', 'dk', 'dv'][i]} ${JSON.stringify(s)}: ${relErr(g2[i], g1[i]).toExponential(2)}`
          )
      }
    }
  })
  t.throws(
    () =>
      addon.opAttentionForward('flash', new Float32Array(4), null, new Float32Array(4), new Float32Array(4), new Float32Array(4), {
        T: 1,
        S: 1,
        H: 3,
        Hkv: 2,
        D: 4,
        qPos0: 0
      }),
    { code: 'ERR_INVALID_ARG' },
    'H not a multiple of Hkv is rejected'
  )
  t.throws(
    () =>
      addon.opAttentionForward('flash', new Float32Array(3), null, new Float32Array(4), new Float32Array(4), new Float32Array(4), {
        T: 1,
        S: 1,
        H: 1,
        Hkv: 1,
        D: 4,
        qPos0: 0
      }),
    { code: 'ERR_INVALID_ARG' },
    'wrong buffer length is rejected'
  )
})

// Central differences of L = sum(out * dout) on the float64-accumulating references.
function finiteDiff(f, x, dout, idx, h = 1e-2) {
  const orig = x[idx]
  x[idx] = orig + h
  const p = f()
  x[idx] = orig - h
  const m = f()
  x[idx] = orig
  let s = 0
  for (let i = 0; i < dout.length; i++) s += (p[i] - m[i]) * dout[i]
  return s / (2 * h)
}

t.test('backwards agree with central finite differences (tiny sizes)', async (t) => {
  const r = rng(t)
  const check = (name, f, inputs, dout, grads) => {
    let worst = 0
    let mag = 0
    for (const [key, x] of Object.entries(inputs)) {
      for (let k = 0; k < 6; k++) {
        const idx = r.int(0, x.length - 1)
        const fd = finiteDiff(f, x, dout, idx)
        worst = Math.max(worst, Math.abs(fd - grads[key][idx]))
        mag = Math.max(mag, Math.abs(grads[key][idx]))
      }
    }
    t.ok(worst <= 2e-3 * Math.max(1, mag), `${name}: max |fd - analytic| ${worst.toExponential(2)} (gradient scale ${mag.toFixed(3)})`)
  }
  {
    // linear
    const M = 3
    const N = 4
    const K = 5
    const x = randArray(r, M * K)
    const W = randArray(r, N * K)
    const b = randArray(r, N)
    const dout = randArray(r, M * N)
    const f = () => {
      const y = new Float32Array(M * N)
      addon.opLinearForward('ref', y, x, W, b, M, N, K)
      return y
    }
    const g = { x: new Float32Array(M * K), W: new Float32Array(N * K), b: new Float32Array(N) }
    addon.opLinearBackward('fast', g.x, g.W, g.b, dout, x, W, M, N, K)
    check('linear', f, { x, W, b }, dout, g)
  }
  {
    // rmsnorm
    const N = 3
    const C = 7
    const x = randArray(r, N * C)
    const w = randArray(r, C)
    const dout = randArray(r, N * C)
    const rstd = new Float32Array(N)
    const f = () => {
      const y = new Float32Array(N * C)
      addon.opRmsnormForward('ref', y, rstd, x, w, N, C, 1e-6)
      return y
    }
    f()
    const g = { x: new Float32Array(N * C), w: new Float32Array(C) }
    addon.opRmsnormBackward('fast', g.x, g.w, dout, x, w, rstd, N, C, 1e-6)
    check('rmsnorm', f, { x, w }, dout, g)
  }
  {
    // swiglu
    const n = 11
    const gate = randArray(r, n, 2)
    const up = randArray(r, n)
    const dout = randArray(r, n)
    const f = () => {
      const y = new Float32Array(n)
      addon.opSwigluForward('ref', y, gate, up)
      return y
    }
    const g = { gate: new Float32Array(n), up: new Float32Array(n) }
    addon.opSwigluBackward('fast', g.gate, g.up, dout, gate, up)
    check('swiglu', f, { gate, up }, dout, g)
  }
  {
    // rope: forward is linear in x, so its adjoint is the backward
    const T = 3
    const H = 2
    const D = 6
    const x = randArray(r, T * H * D)
    const dout = randArray(r, T * H * D)
    const pos = Int32Array.from([0, 5, 9])
    const f = () => {
      const y = new Float32Array(T * H * D)
      addon.opRopeForward('ref', y, x, pos, T, H, D, 100, null)
      return y
    }
    const gx = dout.slice()
    addon.opRopeBackward(gx, pos, T, H, D, 100, null)
    check('rope', f, { x }, dout, { x: gx })
  }
  {
    // attention
    const s = { T: 4, S: 6, H: 2, Hkv: 1, D: 3, qPos0: 2 }
    const q = randArray(r, 24)
    const k = randArray(r, 18)
    const v = randArray(r, 18)
    const dout = randArray(r, 24)
    const f = () => {
      const y = new Float32Array(24)
      addon.opAttentionForward('ref', y, null, q, k, v, s)
      return y
    }
    const out = f()
    const lse = new Float32Array(8)
    addon.opAttentionForward('ref', new Float32Array(24), lse, q, k, v, s)
    const g = { q: new Float32Array(24), k: new Float32Array(18), v: new Float32Array(18) }
    addon.opAttentionBackward('fast', g.q, g.k, g.v, dout, q, k, v, out, lse, s)
    check('attention', f, { q, k, v }, dout, g)
  }
})

t.test('forwards and backwards agree with torch autograd (float64), the decoder layer included', async (t) => {
  if (!fs.existsSync(TORCH_PYTHON)) {
    t.comment(`skipped: ${TORCH_PYTHON} not found`)
    return
  }
  try {
    execFileSync(TORCH_PYTHON, ['-c', 'import torch'], { stdio: 'ignore' })
  } catch {
    t.comment('skipped: python3 has no torch')
    return
  }
  const r = rng(t)
  const L = (a) => Array.from(a)
  const cases = []
  const ours = []
  {
    const M = 3
    const N = 5
    const K = 7
    const x = randArray(r, M * K)
    const W = randArray(r, N * K)
    const b = randArray(r, N)
    const dout = randArray(r, M * N)
    const y = new Float32Array(M * N)
    addon.opLinearForward('fast', y, x, W, b, M, N, K)
    const g = { x: new Float32Array(M * K), W: new Float32Array(N * K), b: new Float32Array(N) }
    addon.opLinearBackward('fast', g.x, g.W, g.b, dout, x, W, M, N, K)
    cases.push({ op: 'linear', M, N, K, x: L(x), W: L(W), b: L(b), dout: L(dout) })
    ours.push({ out: y, grads: g })
  }
  {
    const N = 4
    const C = 9
    const x = randArray(r, N * C)
    const w = randArray(r, C)
    const dout = randArray(r, N * C)
    const y = new Float32Array(N * C)
    const rstd = new Float32Array(N)
    addon.opRmsnormForward('fast', y, rstd, x, w, N, C, 1e-5)
    const g = { x: new Float32Array(N * C), w: new Float32Array(C) }
    addon.opRmsnormBackward('fast', g.x, g.w, dout, x, w, rstd, N, C, 1e-5)
    cases.push({ op: 'rmsnorm', N, C, eps: 1e-5, x: L(x), w: L(w), dout: L(dout) })
    ours.push({ out: y, grads: g })
  }
  {
    const n = 13
    const gate = randArray(r, n, 2)
    const up = randArray(r, n)
    const dout = randArray(r, n)
    const y = new Float32Array(n)
    addon.opSwigluForward('fast', y, gate, up)
    const g = { gate: new Float32Array(n), up: new Float32Array(n) }
    addon.opSwigluBackward('fast', g.gate, g.up, dout, gate, up)
    cases.push({ op: 'swiglu', gate: L(gate), up: L(up), dout: L(dout) })
    ours.push({ out: y, grads: g })
  }
  {
    const T = 5
    const H = 3
    const D = 8
    const pos = [0, 1, 7, 20, 33]
    const x = randArray(r, T * H * D)
    const dout = randArray(r, T * H * D)
    const y = new Float32Array(T * H * D)
    addon.opRopeForward('fast', y, x, Int32Array.from(pos), T, H, D, 10000, null)
    const gx = dout.slice()
    addon.opRopeBackward(gx, Int32Array.from(pos), T, H, D, 10000, null)
    cases.push({ op: 'rope', T, H, D, pos, theta: 10000, x: L(x), dout: L(dout) })
    ours.push({ out: y, grads: { x: gx } })
  }
  {
    const s = { T: 9, S: 12, H: 4, Hkv: 2, D: 5, qPos0: 3 }
    const q = randArray(r, 180)
    const k = randArray(r, 120)
    const v = randArray(r, 120)
    const dout = randArray(r, 180)
    const y = new Float32Array(180)
    const lse = new Float32Array(36)
    addon.opAttentionForward('flash', y, lse, q, k, v, s)
    const g = { q: new Float32Array(180), k: new Float32Array(120), v: new Float32Array(120) }
    addon.opAttentionBackward('fast', g.q, g.k, g.v, dout, q, k, v, y, lse, s)
    cases.push({ op: 'attention', shape: s, q: L(q), k: L(k), v: L(v), dout: L(dout) })
    ours.push({ out: y, grads: g })
  }
  for (const qkNorm of [false, true]) {
    const dims = { C: 16, H: 4, Hkv: 2, D: 6, F: 24, eps: 1e-6, qkNorm, theta: 10000 }
    const qd = dims.H * dims.D
    const kd = dims.Hkv * dims.D
    const T = 7
    const w = {
      input_norm: randArray(r, 16, 0.2).map((x) => 1 + x),
      post_attention_norm: randArray(r, 16, 0.2).map((x) => 1 + x),
      q_w: randArray(r, qd * 16, 0.25),
      q_b: randArray(r, qd, 0.1),
      k_w: randArray(r, kd * 16, 0.25),
      k_b: randArray(r, kd, 0.1),
      v_w: randArray(r, kd * 16, 0.25),
      v_b: randArray(r, kd, 0.1),
      o_w: randArray(r, 16 * qd, 0.2),
      gate_w: randArray(r, 24 * 16, 0.25),
      up_w: randArray(r, 24 * 16, 0.25),
      down_w: randArray(r, 16 * 24, 0.2)
    }
    if (qkNorm) {
      w.q_norm = randArray(r, 6, 0.2).map((x) => 1 + x)
      w.k_norm = randArray(r, 6, 0.2).map((x) => 1 + x)
    }
    const x = randArray(r, T * 16)
    const pos = Array.from({ length: T }, (_, i) => i)
    const dy = randArray(r, T * 16)
    const res = addon.opDecoderLayer(dims, w, x, Int32Array.from(pos), dy)
    const weights = {}
    for (const [kk, vv] of Object.entries(w)) weights[kk] = L(vv)
    cases.push({ op: 'layer', dims, weights, x: L(x), pos, dout: L(dy) })
    ours.push({ out: res.y, grads: { ...res.grads, x: res.dx } })
  }
  const outText = execFileSync(TORCH_PYTHON, [new URL('./reference/ops_autograd.py', import.meta.url).pathname], {
    input: JSON.stringify(cases),
    maxBuffer: 1 << 28
  }).toString()
  const torchRes = JSON.parse(outText)
  torchRes.forEach((ref, i) => {
    const name = cases[i].op + (cases[i].op === 'layer' ? (cases[i].dims.qkNorm ? ' (qwen3 q/k norm)' : ' (qkv bias)') : '')
    t.ok(relErr(ours[i].out, ref.out) < 1e-5, `${name} forward vs torch: ${relErr(ours[i].out, ref.out).toExponential(2)}`)
    for (const [k, g] of Object.entries(ref.grads)) {
      t.ok(ours[i].grads[k] !== undefined, `${name}: gradient ${k} present`)
      t.ok(relErr(ours[i].grads[k], g) < 1e-4, `${name} d${k} vs torch autograd: ${relErr(ours[i].grads[k], g).toExponential(2)}`)
    }
  })
})
