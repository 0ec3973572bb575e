// The wmma emulation (src/simt/simt_wmma.h) against host arithmetic: D = alpha (A B + C) for every combination
// of row/col-major A, B, C and D, with an elementwise scaling through the fragment; on a GPU the same kernel runs
// on the tensor cores, holding the emulation to the hardware.
import t from 'tap'
import { native } from '../dist/cjs/native.js'
import { rng } from './helpers.mjs'
import { kernelDevices, tensorOf } from './cudaops_ref.mjs'

const addon = native()

for (const device of kernelDevices(t, addon)) {
  t.test(`wmma fragments, loads, stores and mma_sync on ${device}`, async (t) => {
    const r = rng(t, device)
    // Small integers: every product and sum is exact in fp32, so results must match exactly.
    const a = tensorOf(
      Float64Array.from({ length: 256 }, () => r.int(-8, 8)),
      'bf16'
    )
    const b = tensorOf(
      Float64Array.from({ length: 256 }, () => r.int(-8, 8)),
      'bf16'
    )
    const c = Float32Array.from({ length: 256 }, () => r.int(-100, 100))
    const alpha = 2
    const out = addon.cudaOpsWmmaConformance(device, { a: a.data, b: b.data, c, alpha })
    for (let variant = 0; variant < 16; variant++) {
      const aCol = variant & 1,
        bCol = (variant >> 1) & 1,
        cCol = (variant >> 2) & 1,
        dCol = (variant >> 3) & 1
      const want = new Float32Array(256)
      for (let i = 0; i < 16; i++) {
        for (let j = 0; j < 16; j++) {
          let s = c[cCol ? j * 16 + i : i * 16 + j]
          for (let k = 0; k < 16; k++) s += a.values[aCol ? k * 16 + i : i * 16 + k] * b.values[bCol ? j * 16 + k : k * 16 + j]
          want[dCol ? j * 16 + i : i * 16 + j] = alpha * s
        }
      }
      t.same(
        Array.from(out.subarray(variant * 256, variant * 256 + 256)),
        Array.from(want),
        `A ${aCol ? 'col' : 'row'}, B ${bCol ? 'col' : 'row'}, C ${cCol ? 'col' : 'row'}, D ${dCol ? 'col' : 'row'}-major`
      )
    }
  })
}

t.test('bad arguments throw ERR_INVALID_ARG', async (t) => {
  t.throws(() => addon.cudaOpsWmmaConformance('emulated', { a: new Uint16Array(255), b: new Uint16Array(256), c: new Float32Array(256) }), {
    code: 'ERR_INVALID_ARG',
    message: /options\.a/
  })
  t.throws(() => addon.cudaOpsWmmaConformance('emulated', { a: new Uint16Array(256), b: new Uint16Array(256), c: new Uint16Array(256) }), {
    code: 'ERR_INVALID_ARG',
    message: /options\.c/
  })
})
