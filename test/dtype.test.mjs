// bf16 / fp16 conversions against independent references: bf16 by exact float64 rounding to 8 significant
// bits (ties to even), fp16 against numpy's float16 when Debian's numpy is present.
import t from 'tap'
import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { toBf16, fromBf16, toF16, fromF16 } from '../dist/cjs/index.js'
import { rng } from './helpers.mjs'

function randomFloats(r, n) {
  const out = new Float32Array(n)
  const u = new Uint32Array(out.buffer)
  for (let i = 0; i < n; i++) u[i] = (r.next() * 2 ** 32) >>> 0 // every bit pattern: normals, subnormals, inf, NaN
  const specials = [
    0,
    -0,
    1,
    -1,
    65504,
    65520,
    65519.99,
    6.1e-5,
    5.96e-8,
    2.98e-8,
    2.99e-8,
    1e-45,
    Infinity,
    -Infinity,
    NaN,
    3.3895314e38,
    1.0039062,
    1.0078125,
    1.01171875
  ]
  specials.forEach((v, i) => {
    if (i < n) out[i] = v
  })
  return out
}

// bf16 reference: keep the top 16 bits after rounding the low 16 to nearest, ties to even.
function bf16Ref(f) {
  const u = new Uint32Array(new Float32Array([f]).buffer)[0]
  if (Number.isNaN(f)) return NaN
  const hi = u >>> 16,
    lo = u & 0xffff
  let r = hi
  if (lo > 0x8000 || (lo === 0x8000 && hi & 1)) r = hi + 1
  return new Float32Array(new Uint32Array([(r << 16) >>> 0]).buffer)[0]
}

t.test('bf16 round trip equals exact round-to-nearest-even', async (t) => {
  const r = rng(t)
  const xs = randomFloats(r, 100000)
  const back = fromBf16(toBf16(xs))
  let bad = 0
  for (let i = 0; i < xs.length; i++) {
    const want = bf16Ref(xs[i])
    if (!(Object.is(back[i], want) || (Number.isNaN(back[i]) && Number.isNaN(want)))) bad++
  }
  t.equal(bad, 0, 'all 100,000 values round like the reference')
})

t.test('fp16 conversions equal numpy float16', async (t) => {
  const py = '/usr/bin/python3'
  try {
    execFileSync(py, ['-c', 'import numpy'], { stdio: 'ignore' })
  } catch {
    t.skip(`${py} cannot import numpy (apt-get install python3-numpy)`)
    return
  }
  const r = rng(t)
  const xs = randomFloats(r, 50000)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-f16-'))
  fs.writeFileSync(path.join(dir, 'in.f32'), Buffer.from(xs.buffer))
  execFileSync(py, [
    '-c',
    `import numpy as np, sys; d=sys.argv[1]; x=np.fromfile(d+'/in.f32', dtype=np.float32)
import warnings; warnings.simplefilter('ignore')
h=x.astype(np.float16); h.view(np.uint16).tofile(d+'/bits.u16'); h.astype(np.float32).tofile(d+'/back.f32')`,
    dir
  ])
  const wantBits = new Uint16Array(fs.readFileSync(path.join(dir, 'bits.u16')).buffer.slice(0))
  const gotBits = toF16(xs)
  let bad = 0
  for (let i = 0; i < xs.length; i++) {
    const nanBoth = Number.isNaN(xs[i]) && (gotBits[i] & 0x7c00) === 0x7c00 && (gotBits[i] & 0x3ff) !== 0
    if (gotBits[i] !== wantBits[i] && !nanBoth) bad++
  }
  t.equal(bad, 0, 'float32 -> float16 bits equal numpy for 50,000 values')
  const all = new Uint16Array(65536).map((_, i) => i)
  fs.writeFileSync(path.join(dir, 'all.u16'), Buffer.from(all.buffer))
  execFileSync(py, [
    '-c',
    'import numpy as np, sys; d=sys.argv[1]; np.fromfile(d+"/all.u16", dtype=np.uint16).view(np.float16).astype(np.float32).tofile(d+"/all.f32")',
    dir
  ])
  const want = new Float32Array(fs.readFileSync(path.join(dir, 'all.f32')).buffer.slice(0))
  const got = fromF16(all)
  let badBack = 0
  for (let i = 0; i < 65536; i++) if (!(Object.is(got[i], want[i]) || (Number.isNaN(got[i]) && Number.isNaN(want[i])))) badBack++
  t.equal(badBack, 0, 'all 65,536 float16 bit patterns widen like numpy')
  fs.rmSync(dir, { recursive: true, force: true })
})

t.test('bad input throws ERR_INVALID_ARG', async (t) => {
  t.throws(() => toBf16([1, 2]), { code: 'ERR_INVALID_ARG' })
  t.throws(() => fromF16(new Float32Array(2)), { code: 'ERR_INVALID_ARG' })
})
