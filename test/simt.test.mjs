// The SIMT emulation runs conformance kernels (shared memory + barriers, shuffles, ballots, atomics,
// dynamic shared memory, 2-D blocks) and must agree with plain host arithmetic; on a GPU the same kernels
// run for real, holding the emulation to the hardware.
import t from 'tap'
import { native } from '../dist/cjs/native.js'
import { rng, oddSizes, backends } from './helpers.mjs'

const addon = native()

function expected(input, block, bins, floats) {
  const n = input.length
  const grid = Math.ceil(n / block)
  const blockSums = []
  for (let b = 0; b < grid; b++) {
    let s = 0
    for (let i = b * block; i < Math.min(n, (b + 1) * block); i++) s += input[i]
    blockSums.push(s)
  }
  const scan = []
  for (let i = 0; i < n; i++) {
    let s = 0
    for (let j = i - (i % 32); j <= i; j++) s += input[j]
    scan.push(s)
  }
  const ballots = []
  for (let w = 0; w < Math.ceil(n / 32); w++) {
    let bits = 0
    for (let l = 0; l < 32; l++) if (w * 32 + l < n && input[w * 32 + l] & 1) bits |= 1 << l
    ballots.push(bits >>> 0)
  }
  const histogram = new Array(bins).fill(0)
  for (const v of input) histogram[((v % bins) + bins) % bins]++
  const reversed = []
  for (let b = 0; b < grid; b++) {
    const lo = b * block,
      count = Math.min(block, n - lo)
    for (let k = 0; k < count; k++) reversed.push(floats[lo + count - 1 - k])
  }
  return { blockSums, scan, ballots, histogram, reversed }
}

for (const device of backends(t, addon).filter((d) => d !== 'cpu')) {
  t.test(`conformance kernels on ${device}`, async (t) => {
    const r = rng(t, device)
    for (const block of [32, 96, 256, 1024]) {
      for (const n of oddSizes) {
        const input = Int32Array.from({ length: n }, () => r.int(-1000, 1000))
        const floats = Float32Array.from({ length: n }, () => r.normal())
        const bins = r.int(1, 13)
        const got = addon.simtConformance(device, input, block, bins, floats)
        const want = expected(input, block, bins, floats)
        t.same(Array.from(got.blockSums), want.blockSums, `block sums, block ${block}, n ${n}`)
        t.same(Array.from(got.scan), want.scan, `warp scans, block ${block}, n ${n}`)
        t.same(Array.from(got.ballots), want.ballots, `ballots, block ${block}, n ${n}`)
        t.same(Array.from(got.histogram), want.histogram, `atomic histogram, block ${block}, n ${n}`)
        t.same(Array.from(got.reversed), want.reversed, `dynamic shared reverse, block ${block}, n ${n}`)
      }
    }
  })
}

t.test('invalid arguments throw with a code, never crash', async (t) => {
  t.throws(() => addon.simtConformance('emulated', new Int32Array(4), 31, 2, new Float32Array(4)), { code: 'ERR_INVALID_ARG' })
  t.throws(() => addon.simtConformance('gpu', new Int32Array(4), 32, 2, new Float32Array(4)), { code: 'ERR_INVALID_ARG' })
  t.throws(() => addon.simtConformance('emulated', [1, 2], 32, 2, new Float32Array(2)), { code: 'ERR_INVALID_ARG' })
  if (!addon.systemInfo().cuda.available) {
    t.throws(() => addon.simtConformance('cuda', new Int32Array(4), 32, 2, new Float32Array(4)), { code: 'ERR_CUDA_UNAVAILABLE' })
  }
})
