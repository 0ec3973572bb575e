// GEMM kernels (cuda/gemm.cu): forward C = A.B^T + bias and both backward products, fp32 (SIMT kernel) and
// bf16 (tensor-core wmma kernel, emulated by src/simt/simt_wmma.h), against a float64 reference; the
// reference backward against finite differences of the reference forward.
import t from 'tap'
import { native } from '../dist/cjs/native.js'
import { rng } from './helpers.mjs'
import {
  kernelDevices,
  randomTensor,
  valuesOf,
  normRelError,
  tol,
  gemmRef,
  gemmBackwardRef,
  checkFiniteDifferences,
  dot,
  tensorOf
} from './cudaops_ref.mjs'

const addon = native()
// [136, 64, 72] and [24, 200, 40] have every dimension a multiple of 8: the bf16 kernel then takes its
// pipelined 16-byte vector loads; [40, 24, 17] mixes a vector-loaded operand with a scalar-loaded one.
const shapes = [
  [1, 1, 1],
  [17, 17, 17],
  [100, 17, 129],
  [129, 100, 1],
  [1, 129, 100],
  [65, 130, 33],
  [136, 64, 72],
  [24, 200, 40],
  [40, 24, 17]
]

t.test('reference backward matches finite differences', async (t) => {
  const r = rng(t, 'gemm fd')
  const M = 3,
    N = 4,
    K = 5
  const A = Float64Array.from({ length: M * K }, r.normal),
    B = Float64Array.from({ length: N * K }, r.normal)
  const bias = Float64Array.from({ length: N }, r.normal),
    W = Float64Array.from({ length: M * N }, r.normal)
  const loss = () => dot(gemmRef(A, B, M, N, K, bias), W)
  const g = gemmBackwardRef(W, A, B, M, N, K)
  checkFiniteDifferences(t, 'dA', loss, A, g.dA, r)
  checkFiniteDifferences(t, 'dB', loss, B, g.dB, r)
  checkFiniteDifferences(t, 'dbias', loss, bias, g.dbias, r)
})

for (const device of kernelDevices(t, addon)) {
  for (const dtype of ['f32', 'bf16']) {
    t.test(`gemm forward and backward, ${dtype}, ${device}`, async (t) => {
      const r = rng(t, `${device} ${dtype}`)
      for (const [M, N, K] of shapes) {
        const label = `${dtype} M=${M} N=${N} K=${K}`
        const A = randomTensor(r, M * K, dtype),
          B = randomTensor(r, N * K, dtype)
        const bias = randomTensor(r, N, 'f32')
        // Output dtype: same as input, and fp32 output from bf16 input (the weight-gradient case).
        for (const outDtype of dtype === 'bf16' ? ['bf16', 'f32'] : ['f32']) {
          const tl = outDtype === 'bf16' || dtype === 'bf16' ? tol.bf16 : tol.f32
          const want = gemmRef(A.values, B.values, M, N, K, bias.values)
          const C = addon.cudaOpsGemm(device, { M, N, K, dtype, outDtype, a: A.data, b: B.data, bias: bias.data })
          t.ok(normRelError(valuesOf(C), want) < tl, `forward ${label} -> ${outDtype}: ${normRelError(valuesOf(C), want).toExponential(2)}`)
          // accumulate: C0 + A.B^T
          const C0 = randomTensor(r, M * N, outDtype)
          const C2 = addon.cudaOpsGemm(device, { M, N, K, dtype, outDtype, a: A.data, b: B.data, out: C0.data })
          const want2 = gemmRef(A.values, B.values, M, N, K).map((x, i) => x + C0.values[i])
          t.ok(normRelError(valuesOf(C2), want2) < tl, `forward accumulate ${label} -> ${outDtype}`)
        }
        const dC = randomTensor(r, M * N, dtype)
        const g = gemmBackwardRef(dC.values, A.values, B.values, M, N, K)
        const tl = dtype === 'bf16' ? tol.bf16 : tol.f32
        const dA = addon.cudaOpsGemmBackwardInput(device, { M, N, K, dtype, outDtype: dtype, dC: dC.data, b: B.data })
        t.ok(normRelError(valuesOf(dA), g.dA) < tl, `dA ${label}: ${normRelError(valuesOf(dA), g.dA).toExponential(2)}`)
        // Weight gradient accumulated in fp32 into an existing buffer, with the bias gradient.
        const dB0 = randomTensor(r, N * K, 'f32'),
          dbias0 = randomTensor(r, N, 'f32')
        const w = addon.cudaOpsGemmBackwardWeight(device, {
          M,
          N,
          K,
          dtype,
          outDtype: 'f32',
          dC: dC.data,
          a: A.data,
          out: dB0.data,
          dbias: dbias0.data
        })
        const wantB = g.dB.map((x, i) => x + dB0.values[i]),
          wantBias = g.dbias.map((x, i) => x + dbias0.values[i])
        t.ok(normRelError(valuesOf(w.dB), wantB) < tl, `dB (accumulated) ${label}: ${normRelError(valuesOf(w.dB), wantB).toExponential(2)}`)
        t.ok(normRelError(valuesOf(w.dbias), wantBias) < tl, `dbias ${label}`)
      }
    })
  }
}

t.test('bf16 tensor-core path is exact on small integers (checks fragment loads and layouts)', async (t) => {
  for (const device of kernelDevices(t, addon)) {
    const r = rng(t, device)
    for (const [M, N, K] of [
      [37, 150, 70],
      [136, 48, 72]
    ]) {
      const A = tensorOf(
        Float64Array.from({ length: M * K }, () => r.int(-4, 4)),
        'bf16'
      )
      const B = tensorOf(
        Float64Array.from({ length: N * K }, () => r.int(-4, 4)),
        'bf16'
      )
      const C = addon.cudaOpsGemm(device, { M, N, K, dtype: 'bf16', outDtype: 'f32', a: A.data, b: B.data })
      t.same(Array.from(C), Array.from(gemmRef(A.values, B.values, M, N, K)), `exact integer products ${M}x${N}x${K} on ${device}`)
      const dC = tensorOf(
        Float64Array.from({ length: M * N }, () => r.int(-3, 3)),
        'bf16'
      )
      const g = gemmBackwardRef(dC.values, A.values, B.values, M, N, K)
      const dA = addon.cudaOpsGemmBackwardInput(device, { M, N, K, dtype: 'bf16', outDtype: 'f32', dC: dC.data, b: B.data })
      t.same(Array.from(dA), Array.from(g.dA), `exact dA on ${device}`)
      const w = addon.cudaOpsGemmBackwardWeight(device, { M, N, K, dtype: 'bf16', outDtype: 'f32', dC: dC.data, a: A.data })
      t.same(Array.from(w.dB), Array.from(g.dB), `exact dB on ${device}`)
    }
  }
})

t.test('unaligned operands take the scalar load path and give the same results', async (t) => {
  for (const device of kernelDevices(t, addon)) {
    const r = rng(t, device)
    const M = 136,
      N = 48,
      K = 72
    const A = randomTensor(r, M * K, 'bf16'),
      B = randomTensor(r, N * K, 'bf16'),
      dC = randomTensor(r, M * N, 'bf16')
    const args = { M, N, K, dtype: 'bf16', outDtype: 'f32', a: A.data, b: B.data, dC: dC.data }
    t.same(
      Array.from(addon.cudaOpsGemm(device, { ...args, misalign: true })),
      Array.from(addon.cudaOpsGemm(device, args)),
      `forward on ${device}`
    )
    t.same(
      Array.from(addon.cudaOpsGemmBackwardInput(device, { ...args, misalign: true })),
      Array.from(addon.cudaOpsGemmBackwardInput(device, args)),
      `backward input on ${device}`
    )
    t.same(
      Array.from(addon.cudaOpsGemmBackwardWeight(device, { ...args, misalign: true }).dB),
      Array.from(addon.cudaOpsGemmBackwardWeight(device, args).dB),
      `backward weight on ${device}`
    )
  }
})

t.test('bad arguments throw ERR_INVALID_ARG, never crash', async (t) => {
  const a = new Float32Array(6),
    b = new Float32Array(6)
  t.throws(() => addon.cudaOpsGemm('emulated', { M: 2, N: 2, K: 3, a, b: new Float32Array(5) }), {
    code: 'ERR_INVALID_ARG',
    message: /options\.b/
  })
  t.throws(() => addon.cudaOpsGemm('emulated', { M: 2, N: 2, K: 3, a, b, dtype: 'bf16' }), {
    code: 'ERR_INVALID_ARG',
    message: /Uint16Array/
  })
  t.throws(() => addon.cudaOpsGemm('emulated', { M: -1, N: 2, K: 3, a, b }), { code: 'ERR_INVALID_ARG', message: /options\.M/ })
  t.throws(() => addon.cudaOpsGemm('emulated', { M: 2, N: 2, K: 3, a, b, dtype: 'f16' }), { code: 'ERR_INVALID_ARG', message: /dtype/ })
  t.throws(() => addon.cudaOpsGemm('cpu', { M: 2, N: 2, K: 3, a, b }), { code: 'ERR_INVALID_ARG' })
  t.throws(() => addon.cudaOpsGemm('emulated'), { code: 'ERR_INVALID_ARG' })
  t.throws(
    () => addon.cudaOpsGemmBackwardWeight('emulated', { M: 2, N: 2, K: 3, dC: new Float32Array(4), a, dbias: new Float32Array(3) }),
    { code: 'ERR_INVALID_ARG', message: /dbias/ }
  )
  if (!addon.systemInfo().cuda.available) {
    t.throws(() => addon.cudaOpsGemm('cuda', { M: 2, N: 2, K: 3, a, b }), { code: 'ERR_CUDA_UNAVAILABLE' })
  }
})
