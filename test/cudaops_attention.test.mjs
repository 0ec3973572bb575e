// Fused attention kernels (cuda/attention.cu): causal/non-causal prefill forward (o and lse), backward
// (dq, dk, dv with GQA summing over the group), the KV cache write and decode with split-KV, against the
// float64 reference in cudaops_ref.mjs, in fp32 and bf16, emulated (and on a GPU when usable).
import t from 'tap'
import { native } from '../dist/cjs/native.js'
import { rng } from './helpers.mjs'
import {
  kernelDevices,
  randomTensor,
  valuesOf,
  normRelError,
  tol,
  attentionRef,
  attentionBackwardRef,
  checkFiniteDifferences,
  dot
} from './cudaops_ref.mjs'

const addon = native()

// [B, T, Hq, Hkv, D, causal]: sizes 1, 17, 100, 150 (several query and key tiles); head dims 16/32/64/128;
// MHA and GQA; causal and not.
const configs = [
  [1, 1, 1, 1, 16, true],
  [1, 17, 2, 1, 64, true],
  [2, 100, 4, 2, 16, true],
  [1, 100, 2, 2, 128, true],
  [1, 33, 2, 1, 32, false],
  [1, 70, 4, 1, 128, true],
  [1, 150, 2, 1, 64, true]
]

t.test('reference attention backward matches finite differences', async (t) => {
  const r = rng(t, 'attention fd')
  for (const causal of [true, false]) {
    const s = { B: 1, T: 5, Hq: 2, Hkv: 1, D: 3, scale: 0.7, causal }
    const q = Float64Array.from({ length: 5 * 2 * 3 }, r.normal)
    const k = Float64Array.from({ length: 5 * 1 * 3 }, r.normal)
    const v = Float64Array.from({ length: 5 * 1 * 3 }, r.normal)
    const W = Float64Array.from({ length: q.length }, r.normal)
    const loss = () => dot(attentionRef(s, q, k, v).o, W)
    const g = attentionBackwardRef(s, q, k, v, W)
    checkFiniteDifferences(t, `dq causal=${causal}`, loss, q, g.dq, r)
    checkFiniteDifferences(t, `dk causal=${causal}`, loss, k, g.dk, r)
    checkFiniteDifferences(t, `dv causal=${causal}`, loss, v, g.dv, r)
  }
})

for (const device of kernelDevices(t, addon)) {
  for (const dtype of ['f32', 'bf16']) {
    t.test(`attention forward and backward, ${dtype}, ${device}`, async (t) => {
      const r = rng(t, `${device} ${dtype}`)
      const tl = tol[dtype]
      for (const [B, T, Hq, Hkv, D, causal] of configs) {
        const label = `B=${B} T=${T} Hq=${Hq} Hkv=${Hkv} D=${D} causal=${causal}`
        const scale = 1 / Math.sqrt(D)
        const s = { B, T, Hq, Hkv, D, scale, causal }
        const q = randomTensor(r, B * T * Hq * D, dtype),
          k = randomTensor(r, B * T * Hkv * D, dtype)
        const v = randomTensor(r, B * T * Hkv * D, dtype),
          dout = randomTensor(r, B * T * Hq * D, dtype)
        const want = attentionRef(s, q.values, k.values, v.values)
        const f = addon.cudaOpsAttentionForward(device, { B, T, Hq, Hkv, D, dtype, q: q.data, k: k.data, v: v.data, scale, causal })
        const eo = normRelError(valuesOf(f.o), want.o),
          el = normRelError(valuesOf(f.lse), want.lse)
        t.ok(eo < tl, `o ${label}: ${eo.toExponential(2)}`)
        t.ok(el < (dtype === 'bf16' ? 1e-2 : 1e-5), `lse ${label}: ${el.toExponential(2)}`)
        const g = attentionBackwardRef(s, q.values, k.values, v.values, dout.values)
        const b = addon.cudaOpsAttentionBackward(device, {
          B,
          T,
          Hq,
          Hkv,
          D,
          dtype,
          q: q.data,
          k: k.data,
          v: v.data,
          o: f.o,
          lse: f.lse,
          dout: dout.data,
          scale,
          causal
        })
        for (const name of ['dq', 'dk', 'dv']) {
          const e = normRelError(valuesOf(b[name]), g[name], 1) // inputs ~N(0,1): gradients have unit scale
          t.ok(e < (dtype === 'bf16' ? 3e-2 : 1e-4), `${name} ${label}: ${e.toExponential(2)}`)
        }
      }
    })

    t.test(`KV cache write and decode (split-KV), ${dtype}, ${device}`, async (t) => {
      const r = rng(t, `${device} ${dtype} decode`)
      for (const [B, Hq, Hkv, D, capacity, lens] of [
        [1, 1, 1, 16, 1, [1]],
        [3, 4, 2, 64, 300, [1, 17, 300]],
        [2, 8, 1, 128, 130, [129, 64]],
        [2, 16, 1, 32, 520, [520, 257]]
      ]) {
        const label = `B=${B} Hq=${Hq} Hkv=${Hkv} D=${D} lens=${lens}`
        // Fill the cache through kv_cache_write in two chunks per sequence, as prefill then decode would.
        let kCache, vCache
        const kAll = [],
          vAll = []
        for (let b = 0; b < B; b++) {
          kAll.push(randomTensor(r, lens[b] * Hkv * D, dtype))
          vAll.push(randomTensor(r, lens[b] * Hkv * D, dtype))
        }
        // Two writes per sequence: tokens [0, half) then [half, len), batched with a common T; the padding of
        // shorter sequences writes copies of their last token at positions >= len, which decode never reads.
        const halves = lens.map((l) => Math.floor(l / 2))
        for (const [starts, ends] of [
          [lens.map(() => 0), halves],
          [halves, lens]
        ]) {
          const T = Math.max(1, ...ends.map((e, b) => e - starts[b]))
          const k = dtype === 'bf16' ? new Uint16Array(B * T * Hkv * D) : new Float32Array(B * T * Hkv * D)
          const v = k.slice()
          for (let b = 0; b < B; b++) {
            for (let tt = 0; tt < T; tt++) {
              const src = Math.min(starts[b] + tt, lens[b] - 1)
              for (let i = 0; i < Hkv * D; i++) {
                k[(b * T + tt) * Hkv * D + i] = kAll[b].data[src * Hkv * D + i]
                v[(b * T + tt) * Hkv * D + i] = vAll[b].data[src * Hkv * D + i]
              }
            }
          }
          const w = addon.cudaOpsKvCacheWrite(device, {
            B,
            T,
            Hkv,
            D,
            capacity,
            dtype,
            k,
            v,
            start: Int32Array.from(starts),
            kCache,
            vCache
          })
          kCache = w.kCache
          vCache = w.vCache
        }
        // The cache holds token i of sequence b, head h at [b, h, i].
        let cacheOk = true
        for (let b = 0; b < B; b++) {
          for (let i = 0; i < lens[b]; i++) {
            for (let h = 0; h < Hkv; h++) {
              for (let d = 0; d < D; d++) {
                const at = ((b * Hkv + h) * capacity + i) * D + d
                if (kCache[at] !== kAll[b].data[(i * Hkv + h) * D + d] || vCache[at] !== vAll[b].data[(i * Hkv + h) * D + d])
                  cacheOk = false
              }
            }
          }
        }
        t.ok(cacheOk, `kv_cache_write placed every token, ${label}`)
        // Decode reference: softmax over the sequence's context for each query head.
        const q = randomTensor(r, B * Hq * D, dtype)
        const scale = 1 / Math.sqrt(D)
        const want = new Float64Array(B * Hq * D)
        for (let b = 0; b < B; b++) {
          for (let h = 0; h < Hq; h++) {
            const hk = Math.floor(h / (Hq / Hkv))
            const sc = []
            for (let j = 0; j < lens[b]; j++) {
              let x = 0
              for (let d = 0; d < D; d++) x += q.values[(b * Hq + h) * D + d] * kAll[b].values[(j * Hkv + hk) * D + d]
              sc.push(x * scale)
            }
            const mx = Math.max(...sc)
            const p = sc.map((x) => Math.exp(x - mx))
            const sum = p.reduce((a, x) => a + x, 0)
            for (let d = 0; d < D; d++) {
              let x = 0
              for (let j = 0; j < lens[b]; j++) x += p[j] * vAll[b].values[(j * Hkv + hk) * D + d]
              want[(b * Hq + h) * D + d] = x / sum
            }
          }
        }
        for (const numSplits of [1, 3, 8, undefined]) {
          const o = addon.cudaOpsAttentionDecode(device, {
            B,
            Hq,
            Hkv,
            D,
            capacity,
            dtype,
            q: q.data,
            kCache,
            vCache,
            contextLens: Int32Array.from(lens),
            numSplits
          })
          const e = normRelError(valuesOf(o), want)
          t.ok(e < tol[dtype], `decode ${label} splits=${numSplits ?? 'auto'}: ${e.toExponential(2)}`)
        }
      }
    })
  }
}

t.test('unaligned tensors take the scalar load paths and give the same results', async (t) => {
  for (const device of kernelDevices(t, addon)) {
    const r = rng(t, device)
    for (const dtype of ['bf16', 'f32']) {
      const B = 1,
        T = 70,
        Hq = 2,
        Hkv = 1,
        D = 64
      const q = randomTensor(r, B * T * Hq * D, dtype),
        k = randomTensor(r, B * T * Hkv * D, dtype)
      const v = randomTensor(r, B * T * Hkv * D, dtype),
        dout = randomTensor(r, B * T * Hq * D, dtype)
      const args = { B, T, Hq, Hkv, D, dtype, q: q.data, k: k.data, v: v.data }
      const a = addon.cudaOpsAttentionForward(device, args)
      const u = addon.cudaOpsAttentionForward(device, { ...args, misalign: true })
      t.same(Array.from(u.o), Array.from(a.o), `forward ${dtype} on ${device}`)
      const ba = addon.cudaOpsAttentionBackward(device, { ...args, o: a.o, lse: a.lse, dout: dout.data })
      const bu = addon.cudaOpsAttentionBackward(device, { ...args, o: a.o, lse: a.lse, dout: dout.data, misalign: true })
      t.same(Array.from(bu.dq), Array.from(ba.dq), `backward dq ${dtype} on ${device}`)
      t.same(Array.from(bu.dk), Array.from(ba.dk), `backward dk ${dtype} on ${device}`)
      const capacity = 80
      const w = addon.cudaOpsKvCacheWrite(device, { B, T, Hkv, D, capacity, dtype, k: k.data, v: v.data, start: Int32Array.of(0) })
      const dec = {
        B,
        Hq,
        Hkv,
        D,
        capacity,
        dtype,
        q: q.data.slice(0, Hq * D),
        kCache: w.kCache,
        vCache: w.vCache,
        contextLens: Int32Array.of(T),
        numSplits: 2
      }
      t.same(
        Array.from(addon.cudaOpsAttentionDecode(device, { ...dec, misalign: true })),
        Array.from(addon.cudaOpsAttentionDecode(device, dec)),
        `decode ${dtype} on ${device}`
      )
    }
  }
})

t.test('decode of the last position equals the prefill forward row', async (t) => {
  for (const device of kernelDevices(t, addon)) {
    const r = rng(t, device)
    const B = 1,
      T = 45,
      Hq = 4,
      Hkv = 2,
      D = 64,
      capacity = 64
    const q = randomTensor(r, B * T * Hq * D, 'f32'),
      k = randomTensor(r, B * T * Hkv * D, 'f32'),
      v = randomTensor(r, B * T * Hkv * D, 'f32')
    const f = addon.cudaOpsAttentionForward(device, { B, T, Hq, Hkv, D, q: q.data, k: k.data, v: v.data })
    const w = addon.cudaOpsKvCacheWrite(device, { B, T, Hkv, D, capacity, k: k.data, v: v.data, start: Int32Array.of(0) })
    const qLast = q.data.slice((T - 1) * Hq * D)
    const o = addon.cudaOpsAttentionDecode(device, {
      B,
      Hq,
      Hkv,
      D,
      capacity,
      q: qLast,
      kCache: w.kCache,
      vCache: w.vCache,
      contextLens: Int32Array.of(T),
      numSplits: 2
    })
    const e = normRelError(o, f.o.slice((T - 1) * Hq * D))
    t.ok(e < 1e-5, `decode == prefill row T-1 on ${device}: ${e.toExponential(2)}`)
  }
})

t.test('bad arguments throw ERR_INVALID_ARG, never crash', async (t) => {
  const q = new Float32Array(2 * 4 * 16),
    k = new Float32Array(2 * 2 * 16)
  const base = { B: 1, T: 2, Hq: 4, Hkv: 2, D: 16, q, k, v: k }
  t.throws(() => addon.cudaOpsAttentionForward('emulated', { ...base, D: 24 }), { code: 'ERR_INVALID_ARG', message: /options\.D/ })
  t.throws(() => addon.cudaOpsAttentionForward('emulated', { ...base, Hkv: 3 }), { code: 'ERR_INVALID_ARG', message: /Hq/ })
  t.throws(() => addon.cudaOpsAttentionForward('emulated', { ...base, v: new Float32Array(3) }), {
    code: 'ERR_INVALID_ARG',
    message: /options\.v/
  })
  t.throws(() => addon.cudaOpsAttentionForward('emulated', { ...base, causal: 1 }), { code: 'ERR_INVALID_ARG', message: /causal/ })
  t.throws(() => addon.cudaOpsAttentionBackward('emulated', { ...base, o: q, dout: q }), { code: 'ERR_INVALID_ARG', message: /lse/ })
  const dec = {
    B: 1,
    Hq: 4,
    Hkv: 2,
    D: 16,
    capacity: 8,
    q: new Float32Array(64),
    kCache: new Float32Array(256),
    vCache: new Float32Array(256)
  }
  t.throws(() => addon.cudaOpsAttentionDecode('emulated', { ...dec, contextLens: Int32Array.of(9) }), {
    code: 'ERR_INVALID_ARG',
    message: /contextLens/
  })
  t.throws(() => addon.cudaOpsAttentionDecode('emulated', { ...dec, contextLens: Int32Array.of(0) }), {
    code: 'ERR_INVALID_ARG',
    message: /contextLens/
  })
  t.throws(() => addon.cudaOpsAttentionDecode('emulated', { ...dec, contextLens: Int32Array.of(4), numSplits: 0 }), {
    code: 'ERR_INVALID_ARG',
    message: /numSplits/
  })
  t.throws(() => addon.cudaOpsKvCacheWrite('emulated', { B: 1, T: 2, Hkv: 2, D: 16, capacity: 8, k, v: k, start: Int32Array.of(7) }), {
    code: 'ERR_INVALID_ARG',
    message: /start/
  })
})
