// One case of test/native-boundary.test.mjs, run in its own process (node --expose-gc) so that a native crash
// fails that case instead of killing the test runner. Each case starts an async native job, then detaches
// the ArrayBuffers of its inputs or outputs while the job runs (structuredClone with `transfer`, or
// postMessage to a worker that exits at once, freeing the memory) and churns the heap so freed memory is
// reused. The job must still give the result it gives without the transfer (inputs), or reject with
// ERR_INVALID_ARG (an output that can no longer receive it). Prints one JSON line: [{ name, ok, detail }].
// Usage: node --expose-gc test/native_boundary_child.mjs <case> <seed>
import { Worker } from 'node:worker_threads'
import { once } from 'node:events'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const lib = require('../dist/cjs/index.js')
const { native } = require('../dist/cjs/native.js')

const [which, seedArg] = process.argv.slice(2)
let state = Number(seedArg) >>> 0 || 1
function random() {
  // xorshift32: reproducible inputs from the printed seed
  state ^= state << 13
  state >>>= 0
  state ^= state >>> 17
  state ^= state << 5
  state >>>= 0
  return state / 4294967296
}
const floats = (n, scale = 1) => Float32Array.from({ length: n }, () => (random() * 2 - 1) * scale)
const ints = (n, hi) => Int32Array.from({ length: n }, () => Math.floor(random() * hi))

const checks = []
const check = (name, ok, detail = '') => checks.push({ name, ok: !!ok, detail: String(detail) })
const same = (a, b) =>
  a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))

// Frees what was collected and fills the heap with NaN-filled arrays, so freed memory is reused.
function churn() {
  const junk = []
  for (let i = 0; i < 6; i++) {
    globalThis.gc()
    junk.push(new Float64Array(1 << 20).fill(NaN))
  }
  return junk.length
}

// Detaches the buffers of `arrays` by `mode`: 'clone' (structuredClone with transfer, the clone dropped) or
// 'worker' (postMessage to a worker that exits at once, taking the memory with it).
async function detach(mode, ...arrays) {
  const buffers = [...new Set(arrays.map((a) => a.buffer))]
  if (mode === 'clone') {
    structuredClone(buffers, { transfer: buffers })
  } else {
    const w = new Worker("require('node:worker_threads').parentPort.once('message', () => process.exit(0))", { eval: true })
    w.postMessage(buffers, buffers)
    await once(w, 'exit')
  }
  if (!arrays.every((a) => a.length === 0)) throw new Error('detach: a buffer is still attached')
  churn()
}

// Awaits `promise` (handled at once, so a rejection while a transfer is awaited is not unhandled); returns
// { value } or { error }.
async function settle(promise) {
  try {
    return { value: await promise }
  } catch (error) {
    return { error }
  }
}

const invalid = (r) => r.error !== undefined && r.error.code === 'ERR_INVALID_ARG'
const why = (r) => (r.error ? `${r.error.code}: ${r.error.message}` : 'resolved')

const cases = {
  async editdist(mode) {
    const a = []
    const b = []
    for (let i = 0; i < 64; i++) {
      const n = 6000 + Math.floor(random() * 2000)
      a.push(Array.from({ length: n }, () => String.fromCharCode(97 + Math.floor(random() * 4))).join(''))
      b.push(Array.from({ length: n }, () => String.fromCharCode(97 + Math.floor(random() * 4))).join(''))
    }
    const expected = lib.editDistanceSync(a, b)
    // a caller-owned output transferred mid-job: a clean rejection, never a write into freed memory
    const out = new Int32Array(a.length)
    const p = settle(lib.editDistance(a, b, { out, device: 'cpu' }))
    await detach(mode, out)
    const r = await p
    check(`editDistance: out transferred (${mode}) rejects ERR_INVALID_ARG`, invalid(r), why(r))
    // pre-encoded code points transferred mid-job: the distances are still those of the original input
    const chars = []
    const offsets = [0]
    for (let i = 0; i < a.length; i++) {
      for (const s of [a[i], b[i]]) {
        for (const c of s) chars.push(c.codePointAt(0))
        offsets.push(chars.length)
      }
    }
    const enc = Uint32Array.from(chars)
    const out2 = new Int32Array(a.length)
    const p2 = settle(native().editDistanceEncoded('cpu', enc, Int32Array.from(offsets), out2))
    await detach(mode, enc)
    const r2 = await p2
    check(`editDistanceEncoded: chars transferred (${mode}) gives the same distances`, r2.value && same(r2.value, expected), why(r2))
  },

  async sample(mode) {
    const rows = 256
    const vocab = 65536
    const logits = floats(rows * vocab, 8)
    const options = { seed: 7, temperature: 0.9, topP: 0.95, topK: 1000, device: 'cpu' }
    const expected = await lib.sample(logits.slice(), rows, options)
    const p = settle(lib.sample(logits, rows, options))
    await detach(mode, logits)
    const r = await p
    check(
      `sample: logits transferred (${mode}) gives the same tokens`,
      r.value && same(r.value.tokens, expected.tokens) && same(r.value.logprobs, expected.logprobs),
      why(r)
    )
  },

  async logprob(mode) {
    const T = 48
    const V = 8000
    const H = 64
    const logits = floats(T * V, 4)
    const targets = ints(T, V)
    const expected = await lib.tokenLogprobs({ logits: logits.slice(), positions: T, vocab: V }, targets.slice(), { device: 'cpu' })
    const p = settle(lib.tokenLogprobs({ logits, positions: T, vocab: V }, targets, { device: 'cpu' }))
    await detach(mode, logits, targets)
    const r = await p
    check(
      `tokenLogprobs: logits and targets transferred (${mode}) give the same result`,
      r.value && same(r.value.logp, expected.logp) && same(r.value.entropy, expected.entropy),
      why(r)
    )

    const hidden = floats(T * H)
    const weight = floats(V * H, 0.2)
    const t2 = ints(T, V)
    const input = () => ({ hidden: hidden.slice(), weight: weight.slice(), positions: T, hiddenSize: H, vocab: V })
    const fwd = await lib.tokenLogprobs(input(), t2, { device: 'cpu' })
    const dlogp = floats(T)
    const ref = await lib.tokenLogprobsBackward(input(), t2, fwd, { dlogp: dlogp.slice() }, { device: 'cpu' })
    const live = input()
    const lse = fwd.lse.slice()
    const ent = fwd.entropy.slice()
    const pb = settle(lib.tokenLogprobsBackward(live, t2, { ...fwd, lse, entropy: ent }, { dlogp }, { device: 'cpu' }))
    await detach(mode, live.hidden, live.weight, lse, ent, dlogp)
    const rb = await pb
    check(
      `tokenLogprobsBackward: hidden, weight and upstream transferred (${mode}) give the same gradients`,
      rb.value && same(rb.value.dhidden, ref.dhidden) && same(rb.value.dweight, ref.dweight),
      why(rb)
    )
  },

  async rl(mode) {
    const B = 256
    const T = 2048
    const n = B * T
    const make = () => ({
      batch: B,
      length: T,
      logp: floats(n, 2),
      oldLogp: floats(n, 2),
      refLogp: floats(n, 2),
      advantages: floats(B),
      mask: Float32Array.from({ length: n }, () => (random() < 0.8 ? 1 : 0))
    })
    const inputs = make()
    const copy = Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, typeof v === 'number' ? v : v.slice()]))
    const options = { klCoef: 0.01, klEstimator: 'k3', device: 'cpu' }
    const expected = await lib.policyLoss(copy, options)
    const p = settle(lib.policyLoss(inputs, options))
    await detach(mode, inputs.logp, inputs.oldLogp, inputs.refLogp, inputs.advantages, inputs.mask)
    const r = await p
    check(
      `policyLoss: inputs transferred (${mode}) give the same loss and gradient`,
      r.value && r.value.metrics.loss === expected.metrics.loss && same(r.value.grad, expected.grad),
      why(r)
    )
    const gradOut = new Float32Array(n)
    const p2 = settle(lib.policyLoss(copy, { ...options, gradOut }))
    await detach(mode, gradOut)
    const r2 = await p2
    check(`policyLoss: gradOut transferred (${mode}) rejects ERR_INVALID_ARG`, invalid(r2), why(r2))
  },

  async adamw(mode) {
    const sizes = [1 << 20, 4097, 1 << 19]
    const tensors = () =>
      sizes.map((s) => ({ param: floats(s), grad: floats(s), expAvg: floats(s, 0.01), expAvgSq: floats(s, 0.01).map(Math.abs) }))
    const copy = (ts) => ts.map((x) => Object.fromEntries(Object.entries(x).map(([k, v]) => [k, v.slice()])))
    const a = tensors()
    const ref = copy(a)
    lib.adamwStep(ref, { lr: 1e-3, step: 3 })
    const live = copy(a)
    const p = settle(lib.adamwStepAsync(live, { lr: 1e-3, step: 3 }))
    await detach(mode, ...live.map((x) => x.grad))
    const r = await p
    check(
      `adamwStepAsync: grads transferred (${mode}) give the same update`,
      r.value === undefined &&
        !r.error &&
        live.every((x, i) => same(x.param, ref[i].param) && same(x.expAvg, ref[i].expAvg) && same(x.expAvgSq, ref[i].expAvgSq)),
      why(r)
    )
    const live2 = copy(a)
    const p2 = settle(lib.adamwStepAsync(live2, { lr: 1e-3, step: 3 }))
    await detach(mode, live2[0].param)
    const r2 = await p2
    check(`adamwStepAsync: a param transferred (${mode}) rejects ERR_INVALID_ARG`, invalid(r2), why(r2))
    check(
      `adamwStepAsync: after the rejection no other array changed (${mode})`,
      live2.every((x, i) => (i === 0 || same(x.param, a[i].param)) && same(x.expAvg, a[i].expAvg) && same(x.expAvgSq, a[i].expAvgSq))
    )
  },

  async model(mode) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-boundary-'))
    try {
      lib.initModel({ preset: 'tiny', arch: 'qwen2', out: path.join(dir, 'm'), seed: 11 })
      const vocab = JSON.parse(fs.readFileSync(path.join(dir, 'm', 'config.json'))).vocab_size
      const m = await lib.loadModel(path.join(dir, 'm'), { device: 'cpu', maxBatch: 2, maxContext: 256 })
      const handle = m.handle
      const tokens = ints(200, vocab)
      native().modelResetSlot(handle, 0)
      const expected = await native().modelStep(handle, Int32Array.of(0), Int32Array.of(200), tokens.slice(), 'all')
      native().modelResetSlot(handle, 0)
      const p = settle(native().modelStep(handle, Int32Array.of(0), Int32Array.of(200), tokens, 'all'))
      await detach(mode, tokens)
      const r = await p
      check(`modelStep: tokens transferred (${mode}) give the same logits`, r.value && same(r.value, expected), why(r))

      const trA = new lib.FullFineTuner(m)
      const batch = ints(120, vocab)
      const weights = floats(120).map(Math.abs)
      weights[0] = 0 // the first token has no prediction
      const ref = await native().trainerStep(trA.handle, Int32Array.of(120), batch.slice(), weights.slice())
      trA.dispose()
      const trB = new lib.FullFineTuner(m)
      const liveTokens = batch.slice()
      const liveWeights = weights.slice()
      const p2 = settle(native().trainerStep(trB.handle, Int32Array.of(120), liveTokens, liveWeights))
      await detach(mode, liveTokens, liveWeights)
      const r2 = await p2
      check(
        `trainerStep: tokens and weights transferred (${mode}) give the same log-probs and loss`,
        r2.value && r2.value.loss === ref.loss && same(r2.value.logp, ref.logp),
        why(r2)
      )
      await native().trainerForward(trB.handle, Int32Array.of(120), batch.slice())
      const w3 = weights.slice()
      const p3 = settle(native().trainerBackward(trB.handle, w3))
      await detach(mode, w3)
      const r3 = await p3
      check(`trainerBackward: weights transferred (${mode}) give the same loss`, r3.value === ref.loss, why(r3))
      trB.dispose()
      m.dispose()
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  },

  // Arrays already detached when the call is made: ERR_INVALID_ARG naming the argument, never a crash.
  async detached() {
    const gone = (a) => {
      structuredClone(a.buffer, { transfer: [a.buffer] })
      return a
    }
    const throwsInvalid = async (name, fn) => {
      const r = await settle((async () => fn())())
      check(`${name}: a detached array gives ERR_INVALID_ARG`, invalid(r), why(r))
    }
    await throwsInvalid('editDistanceBatch out', () => native().editDistanceBatch('cpu', ['ab'], ['ba'], gone(new Int32Array(1))))
    await throwsInvalid('editDistanceEncoded chars', () =>
      native().editDistanceEncoded('cpu', gone(Uint32Array.of(1, 2)), Int32Array.of(0, 1, 2), new Int32Array(1))
    )
    await throwsInvalid('sample logits', () => lib.sample(gone(floats(8)), 1))
    await throwsInvalid('tokenLogprobs logits', () =>
      lib.tokenLogprobs({ logits: gone(floats(8)), positions: 1, vocab: 8 }, Int32Array.of(0))
    )
    await throwsInvalid('policyLoss logp', () =>
      lib.policyLoss({ batch: 1, length: 2, logp: gone(floats(2)), oldLogp: floats(2), advantages: floats(1), mask: floats(2) })
    )
    await throwsInvalid('adamwStepAsync param', () =>
      lib.adamwStepAsync([{ param: gone(floats(4)), grad: floats(4), expAvg: floats(4), expAvgSq: floats(4) }], { lr: 1e-3, step: 1 })
    )
    await throwsInvalid('fromBf16 bits', () => lib.fromBf16(gone(new Uint16Array(4))))
    await throwsInvalid('cancel flag not shared', () =>
      native().editDistanceBatch('cpu', ['ab'], ['ba'], new Int32Array(1), new Int32Array(1))
    )
  }
}

const [name, mode] = which.split(':')
await cases[name](mode)
process.stdout.write(JSON.stringify(checks) + '\n')
