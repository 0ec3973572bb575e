// Float64 references for the transformer kernel tests (test/cudaops_*.test.mjs), written plainly from the
// definitions, plus bf16 conversions, a normwise error measure and a finite-difference gradient check.
import { backends, relErr } from './helpers.mjs'

/** Devices the CUDA kernels run on here: the SIMT emulation always, a real GPU when one is usable. */
export function kernelDevices(t, addon) {
  return backends(t, addon).filter((d) => d !== 'cpu')
}

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)
/** float -> bf16 bits, round to nearest even (as the kernels and numeric.h do). */
export function toBf16Bits(x) {
  f32[0] = x
  const u = u32[0]
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff
}
export function fromBf16Bits(b) {
  u32[0] = (b & 0xffff) << 16
  return f32[0]
}

/**
 * A random tensor in the test's dtype: `data` is what the kernel receives (Float32Array or Uint16Array of
 * bf16 bits) and `values` the same numbers as float64 (after rounding to the dtype) for the reference.
 */
export function randomTensor(r, n, dtype, scale = 1) {
  const values = new Float64Array(n)
  for (let i = 0; i < n; i++) values[i] = r.normal() * scale
  return tensorOf(values, dtype)
}
export function tensorOf(vals, dtype) {
  const n = vals.length
  if (dtype === 'bf16') {
    const data = new Uint16Array(n)
    const values = new Float64Array(n)
    for (let i = 0; i < n; i++) {
      data[i] = toBf16Bits(vals[i])
      values[i] = fromBf16Bits(data[i])
    }
    return { data, values }
  }
  const data = Float32Array.from(vals)
  return { data, values: Float64Array.from(data) }
}
/** Kernel output (Float32Array or Uint16Array bf16 bits) as numbers. */
export function valuesOf(out) {
  if (out instanceof Uint16Array) return Float64Array.from(out, fromBf16Bits)
  return Float64Array.from(out)
}

/** helpers.relErr (normwise: errors against the tensor's scale, or `floor` where the reference is exactly zero, as
 * gradients through a softmax over a single key are), and Infinity where the lengths differ. */
export function normRelError(actual, expected, floor = 1e-30) {
  return actual.length === expected.length ? relErr(actual, expected, floor) : Infinity
}

/** Per-dtype tolerances for kernels vs the float64 reference (normwise; see normRelError). */
export const tol = { f32: 2e-5, bf16: 2e-2 }

/** Checks the analytic gradient `grad` of scalar `loss(x)` at a few coordinates by central differences. */
export function checkFiniteDifferences(t, label, loss, x, grad, r, count = 6, h = 1e-6) {
  let worst = 0
  for (let c = 0; c < count; c++) {
    const i = r.int(0, x.length - 1)
    const keep = x[i]
    x[i] = keep + h
    const up = loss()
    x[i] = keep - h
    const down = loss()
    x[i] = keep
    const fd = (up - down) / (2 * h)
    const err = Math.abs(fd - grad[i]) / Math.max(1, Math.abs(fd))
    worst = Math.max(worst, err)
  }
  t.ok(worst < 1e-5, `${label}: reference gradient matches finite differences (worst ${worst.toExponential(2)})`)
}

export function dot(a, b) {
  let s = 0
  for (let i = 0; i < a.length; i++) s += a[i] * b[i]
  return s
}

// ---- GEMM -------------------------------------------------------------------------------------------------
/** C[M,N] = A[M,K] . B[N,K]^T (+ bias) */
export function gemmRef(A, B, M, N, K, bias) {
  const C = new Float64Array(M * N)
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n] : 0
      for (let k = 0; k < K; k++) s += A[m * K + k] * B[n * K + k]
      C[m * N + n] = s
    }
  }
  return C
}
/** dA = dC . B, dB = dC^T . A, dbias = column sums of dC */
export function gemmBackwardRef(dC, A, B, M, N, K) {
  const dA = new Float64Array(M * K),
    dB = new Float64Array(N * K),
    dbias = new Float64Array(N)
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const g = dC[m * N + n]
      dbias[n] += g
      for (let k = 0; k < K; k++) {
        dA[m * K + k] += g * B[n * K + k]
        dB[n * K + k] += g * A[m * K + k]
      }
    }
  }
  return { dA, dB, dbias }
}

// ---- attention --------------------------------------------------------------------------------------------
// q/o [B,T,Hq,D], k/v [B,T,Hkv,D], lse [B,Hq,T]; query head h uses kv head floor(h / (Hq/Hkv)).
const qi = (s, b, t, h, d) => ((b * s.T + t) * s.Hq + h) * s.D + d
const ki = (s, b, t, h, d) => ((b * s.T + t) * s.Hkv + h) * s.D + d

/** Probabilities of one (b, h) as a T x T array (reference only). */
function attentionProbs(s, q, k, b, h) {
  const { T, D, scale, causal } = s
  const hk = Math.floor(h / (s.Hq / s.Hkv))
  const P = [],
    lse = []
  for (let t = 0; t < T; t++) {
    const row = new Float64Array(T)
    let mx = -Infinity
    for (let j = 0; j < T; j++) {
      if (causal && j > t) {
        row[j] = -Infinity
        continue
      }
      let x = 0
      for (let d = 0; d < D; d++) x += q[qi(s, b, t, h, d)] * k[ki(s, b, j, hk, d)]
      row[j] = x * scale
      mx = Math.max(mx, row[j])
    }
    let sum = 0
    for (let j = 0; j < T; j++) {
      row[j] = row[j] === -Infinity ? 0 : Math.exp(row[j] - mx)
      sum += row[j]
    }
    for (let j = 0; j < T; j++) row[j] /= sum
    P.push(row)
    lse.push(mx + Math.log(sum))
  }
  return { P, lse, hk }
}

export function attentionRef(s, q, k, v) {
  const { B, T, Hq, D } = s
  const o = new Float64Array(B * T * Hq * D),
    lse = new Float64Array(B * Hq * T)
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const { P, lse: l, hk } = attentionProbs(s, q, k, b, h)
      for (let t = 0; t < T; t++) {
        lse[(b * Hq + h) * T + t] = l[t]
        for (let d = 0; d < D; d++) {
          let x = 0
          for (let j = 0; j < T; j++) x += P[t][j] * v[ki(s, b, j, hk, d)]
          o[qi(s, b, t, h, d)] = x
        }
      }
    }
  }
  return { o, lse }
}

/** Softmax-attention backward in float64: dV = P^T dO, dP = dO V^T, dS = P (dP - rowsum(dP P)), dQ = scale dS K. */
export function attentionBackwardRef(s, q, k, v, dout) {
  const { B, T, Hq, D, scale } = s
  const dq = new Float64Array(q.length),
    dk = new Float64Array(k.length),
    dv = new Float64Array(v.length)
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const { P, hk } = attentionProbs(s, q, k, b, h)
      for (let t = 0; t < T; t++) {
        const dP = new Float64Array(T)
        let rowDot = 0
        for (let j = 0; j < T; j++) {
          let x = 0
          for (let d = 0; d < D; d++) x += dout[qi(s, b, t, h, d)] * v[ki(s, b, j, hk, d)]
          dP[j] = x
          rowDot += P[t][j] * x
        }
        for (let j = 0; j < T; j++) {
          const dS = P[t][j] * (dP[j] - rowDot)
          for (let d = 0; d < D; d++) {
            dv[ki(s, b, j, hk, d)] += P[t][j] * dout[qi(s, b, t, h, d)]
            dq[qi(s, b, t, h, d)] += scale * dS * k[ki(s, b, j, hk, d)]
            dk[ki(s, b, j, hk, d)] += scale * dS * q[qi(s, b, t, h, d)]
          }
        }
      }
    }
  }
  return { dq, dk, dv }
}
