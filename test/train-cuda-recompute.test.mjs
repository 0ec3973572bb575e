// Activation recomputation on the CUDA trainer (src/model/cuda_train_step.cpp): only each layer's input kept,
// the layer's forward redone just before its backward (DoRA's pre and the adapters' u with it, one set per
// projection instead of one per layer). The kernels are deterministic, so the gradients must equal those of the
// kept-activations path bit for bit; and they stay within fp32 rounding of the CPU trainer's recomputation.
// Device 'emulated' always; 'cuda' too when a GPU is usable.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require, rng, relErr, randomTrainBatch, trainModelVariants, trainDevices } from './helpers.mjs'

const { loadModel, ModelTrainer } = require('../dist/cjs/index.js')
const { native } = require('../dist/cjs/native.js')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-train-cuda-recompute-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const variants = trainModelVariants(tmp, 900)
const devices = trainDevices(t)
const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']

async function run(v, device, options, batch) {
  const meter = device === 'cpu' ? null : device
  const base = meter ? native().deviceMemoryStats(meter, true).currentBytes : 0
  const m = await loadModel(v.dir, { device, maxBatch: 3, maxContext: 64, ...(v.dtype ? { dtype: v.dtype } : {}) })
  const tr = new ModelTrainer(m, options)
  const res = []
  for (let step = 0; step < 2; step++) {
    res.push(await tr.step(batch))
    // eps 1e-3: Adam's first update is lr·g/(|g|+eps); at the default 1e-8 a gradient entry that is only rounding
    // noise moves by ±lr on its sign alone (seed 1499729413: 3e-3 apart after it). This keeps the update within
    // lr/eps times the gradients' own difference, so step 2 compares the trainers, not the sign of noise.
    if (step === 0) await tr.applyAdamW({ lr: 1e-2, eps: 1e-3 })
  }
  const grads = await tr.gradients()
  const peak = meter ? native().deviceMemoryStats(meter).peakBytes - base : 0
  tr.dispose()
  m.dispose()
  return { res, grads, peak }
}

const same = (a, b) =>
  a.grads.length > 0 &&
  a.grads.every(
    (g, k) =>
      g.name === b.grads[k].name && g.grad.length === b.grads[k].grad.length && g.grad.every((x, j) => Object.is(x, b.grads[k].grad[j]))
  )

for (const device of devices) {
  t.test(
    `${device}: recomputation gives the kept-activations gradients bit for bit, and the CPU trainer's within fp32 rounding`,
    async (t) => {
      const r = rng(t)
      const adapter = { type: 'dora', r: 4, alpha: 8, dropout: 0.1, seed: 3, targetModules: ALL }
      for (const vi of [0, 3]) {
        // qwen2 fp32; qwen2 tied loaded as bf16
        const v = variants[vi]
        const batch = randomTrainBatch(r, v.vocab, [7, 13, 2])
        for (const options of [{}, { adapter }]) {
          const label = `${v.name}, ${options.adapter ? 'DoRA with dropout' : 'full fine-tuning'}`
          const kept = await run(v, device, { ...options, activationRecomputation: false }, batch)
          const redo = await run(v, device, { ...options, activationRecomputation: true }, batch)
          t.same(
            redo.res.map((x) => x.loss),
            kept.res.map((x) => x.loss),
            `${label}: the same losses over two steps`
          )
          t.same(
            redo.res.map((x) => x.logp),
            kept.res.map((x) => x.logp),
            `${label}: the same logp`
          )
          t.ok(same(kept, redo), `${label}: identical gradients for all ${kept.grads.length} tensors after an update`)
          t.ok(redo.peak < kept.peak, `${label}: and it did recompute: device peak ${redo.peak} B < ${kept.peak} B`)
          if (v.dtype) continue // bf16 compute is held to the CPU trainer by train-cuda*.test.mjs
          const cpu = await run(v, 'cpu', { ...options, activationRecomputation: true }, batch)
          // relative to each tensor's largest entry, floored at 1% of the model's (a gradient that nearly cancels,
          // like k_proj.bias's, is not judged on rounding noise alone)
          const globalMag = Math.max(...cpu.grads.map((g) => g.grad.reduce((m, x) => Math.max(m, Math.abs(x)), 0)))
          let worst = 0
          for (const [k, g] of cpu.grads.entries()) worst = Math.max(worst, relErr(redo.grads[k].grad, g.grad, 0.01 * globalMag))
          t.ok(worst <= 1e-3, `${label}: within ${worst.toExponential(2)} of the CPU trainer's recomputation (bound 1e-3)`)
        }
      }
    }
  )
}
