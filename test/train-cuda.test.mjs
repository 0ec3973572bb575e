// Full fine-tuning on the CUDA backend (src/model/cuda_train_step.cpp) held to the CPU trainer
// (src/model/train_step.cpp, itself checked against torch autograd in train-step.test.mjs) on tiny random
// models: logp, loss and the gradient of every tensor; clipping and AdamW (parameters and moments after
// apply); a non-finite norm skipping the update; state round trips; inference following the updated weights;
// the loss falling on a fixed batch; forward + backward in two calls; abort and bad input. Device 'emulated'
// runs the CUDA kernels through the SIMT emulation (always); device 'cuda' is held to the same checks when a
// GPU is usable. Models stay tiny: the emulation runs each CUDA thread as a fiber.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import {
  require,
  rng,
  relErr,
  randomTrainBatch,
  logSoftmaxAt,
  trainMatchesCpu,
  trainModelVariants,
  trainDevices,
  smallTrainModel,
  twoCallsEqualStep,
  abortLeavesTrainerUsable,
  BF16_TRAIN_LOGP_TOL,
  BF16_TRAIN_GRAD_TOL
} from './helpers.mjs'

const { loadModel, initModel, ModelTrainer } = require('../dist/cjs/index.js')
const { native } = require('../dist/cjs/native.js')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-train-cuda-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

const variants = trainModelVariants(tmp, 500)

const devices = trainDevices(t)

// Relative error bounds against the CPU trainer. fp32: both sides compute in fp32 with different summation
// orders (measured ~1e-6). bf16: the CUDA trainer computes activations in bf16 (8-bit mantissa) through the
// whole forward and backward, the CPU one in fp32 on the same bf16-rounded weights (measured ~1-2e-2).
const tol = { f32: { grad: 1e-4, logp: 1e-4 }, bf16: { grad: BF16_TRAIN_GRAD_TOL, logp: BF16_TRAIN_LOGP_TOL } }

async function pair(v, device, maxBatch = 4) {
  const load = { maxBatch, maxContext: 64, ...(v.dtype ? { dtype: v.dtype } : {}) }
  const cpuModel = await loadModel(v.dir, { device: 'cpu', ...load })
  const devModel = await loadModel(v.dir, { device, ...load })
  const cpu = new ModelTrainer(cpuModel)
  const dev = new ModelTrainer(devModel)
  return {
    cpu,
    dev,
    devModel,
    dispose: () => {
      cpu.dispose()
      dev.dispose()
      cpuModel.dispose()
      devModel.dispose()
    }
  }
}

/** Compares logp, loss and every gradient of one step on both trainers; returns the worst errors. */
async function compareStep(t, label, cpu, dev, batch, tl) {
  const a = await cpu.step(batch)
  const b = await dev.step(batch)
  let lpErr = 0
  for (const [s, seq] of batch.entries()) {
    t.equal(b.logp[s][0], 0, `${label}: the first token of sequence ${s} has logp 0`)
    for (let j = 1; j < seq.tokens.length; j++)
      lpErr = Math.max(lpErr, Math.abs(b.logp[s][j] - a.logp[s][j]) / Math.max(1, Math.abs(a.logp[s][j])))
  }
  t.ok(lpErr <= tl.logp, `${label}: logp within ${tl.logp} of the cpu trainer (worst ${lpErr.toExponential(2)})`)
  // the loss sums weighted logp of both signs: its error bound is the logp bound carried through the weights
  let lossBound = 0
  for (const [s, seq] of batch.entries())
    for (let j = 1; j < seq.tokens.length; j++) lossBound += tl.logp * Math.abs(seq.weights[j]) * Math.max(1, Math.abs(a.logp[s][j]))
  t.ok(
    Math.abs(b.loss - a.loss) <= lossBound + 1e-6,
    `${label}: loss ${b.loss.toFixed(6)} vs cpu ${a.loss.toFixed(6)} (bound ${lossBound.toExponential(2)})`
  )
  const ga = await cpu.gradients()
  const gb = await dev.gradients()
  t.same(
    gb.map((g) => [g.name, g.shape]),
    ga.map((g) => [g.name, g.shape]),
    `${label}: the same ${ga.length} tensors, names and shapes`
  )
  // per tensor: max |a - b| / max(max |b|, 1% of the largest gradient entry of the model), so a tensor whose
  // exact gradient nearly cancels (k_proj.bias: softmax is invariant to a key shift up to RoPE) is not judged
  // on rounding noise alone
  let worst = 0
  let worstName = ''
  const globalMag = Math.max(...ga.map((g) => g.grad.reduce((m, x) => Math.max(m, Math.abs(x)), 0)))
  for (const [k, g] of ga.entries()) {
    if (!g.grad.some((x) => x !== 0) && g.name !== 'lm_head.weight')
      t.fail(`${label}: cpu gradient of ${g.name} is zero: the test would not see an error`)
    const mag = g.grad.reduce((m, x) => Math.max(m, Math.abs(x)), 0)
    const e = (relErr(gb[k].grad, g.grad) * mag) / Math.max(mag, 0.01 * globalMag)
    if (!(e <= tl.grad)) t.fail(`${label}: ${g.name} gradient rel err ${e}`)
    if (e > worst) {
      worst = e
      worstName = g.name
    }
  }
  t.ok(worst <= tl.grad, `${label}: every gradient within ${tl.grad} of the cpu trainer (worst ${worst.toExponential(2)} in ${worstName})`)
  return { lpErr, worst }
}

for (const device of devices) {
  t.test(`${device}: logp, loss and every gradient equal the cpu trainer's`, async (t) => {
    const r = rng(t)
    for (const v of variants) {
      const tl = tol[v.dtype ?? 'f32']
      const { cpu, dev, dispose } = await pair(v, device)
      // unequal lengths (per-sequence attention), one of 1 token (no prediction), then equal lengths (one
      // batched attention call), then a single sequence
      await compareStep(t, `${v.name} [1, 17, 5, 2]`, cpu, dev, randomTrainBatch(r, v.vocab, [1, 17, 5, 2]), tl)
      await cpu.zeroGrad()
      await dev.zeroGrad()
      await compareStep(t, `${v.name} [17, 17, 17]`, cpu, dev, randomTrainBatch(r, v.vocab, [17, 17, 17]), tl)
      await cpu.zeroGrad()
      await dev.zeroGrad()
      const one = randomTrainBatch(r, v.vocab, [33])
      await compareStep(t, `${v.name} [33]`, cpu, dev, one, tl)
      // a second step accumulates
      const before = await dev.gradients()
      await dev.step(one)
      const twice = await dev.gradients()
      let accErr = 0
      for (const [k, g] of twice.entries())
        accErr = Math.max(
          accErr,
          relErr(
            g.grad,
            before[k].grad.map((x) => 2 * x)
          )
        )
      t.ok(accErr < 1e-5, `${v.name}: a second step adds into the gradients (rel err vs 2x ${accErr.toExponential(2)})`)
      await dev.zeroGrad()
      t.ok(
        (await dev.gradients()).every((g) => g.grad.every((x) => x === 0)),
        `${v.name}: zeroGrad clears every gradient`
      )
      // sequences of one token predict nothing: loss 0, logp 0, no gradient
      const ones = await dev.step(randomTrainBatch(r, v.vocab, [1, 1]))
      t.ok(ones.loss === 0 && ones.logp.every((x) => x[0] === 0), `${v.name}: one-token sequences give loss 0 and logp 0`)
      t.ok(
        (await dev.gradients()).every((g) => g.grad.every((x) => x === 0)),
        `${v.name}: and no gradient`
      )
      dispose()
    }
  })

  t.test(`${device}: clipping and AdamW equal the cpu trainer's; a non-finite norm skips the update`, async (t) => {
    const r = rng(t)
    for (const v of [variants[0], variants[1], variants[3]]) {
      const tl = tol[v.dtype ?? 'f32']
      const { cpu, dev, dispose } = await pair(v, device)
      const batch = randomTrainBatch(r, v.vocab, [20, 12])
      const moments = [] // the reference's AdamW state per tensor, across the two steps
      for (const [step, hyper] of [
        { lr: 3e-3, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.1, maxGradNorm: 0.05 },
        { lr: 1e-3, weightDecay: 0.01 }
      ].entries()) {
        await cpu.step(batch)
        await dev.step(batch)
        const grads = await dev.gradients()
        const before = await dev.parameters()
        let sq = 0
        for (const g of grads) for (const x of g.grad) sq += x * x
        const norm = Math.sqrt(sq)
        const normA = await cpu.applyAdamW(hyper)
        const normB = await dev.applyAdamW(hyper)
        t.ok(
          Math.abs(normB - norm) <= 1e-5 * norm,
          `${v.name} step ${step + 1}: the returned norm ${normB.toExponential(4)} is that of the gradients (${norm.toExponential(4)})`
        )
        t.ok(
          Math.abs(normB - normA) <= tl.grad * normA,
          `${v.name} step ${step + 1}: norm ${normB.toExponential(4)} vs cpu ${normA.toExponential(4)}`
        )
        const coef = hyper.maxGradNorm ? Math.min(1, hyper.maxGradNorm / (norm + 1e-6)) : 1
        if (step === 0) t.ok(coef < 1, `the first update is clipped (coef ${coef.toExponential(2)})`)
        const sb = await dev.state()
        t.equal(sb.stepsTaken, step + 1, 'stepsTaken counts the updates')
        // float64 torch.optim.AdamW on the trainer's own clipped gradient (Adam divides by sqrt(v), so tiny
        // gradient entries make the cpu trainer's update a poor yardstick; its own gradient is the exact one)
        const b1 = hyper.beta1 ?? 0.9
        const b2 = hyper.beta2 ?? 0.999
        const eps = hyper.eps ?? 1e-8
        const wd = hyper.weightDecay ?? 0
        let worst = 0
        let worstMoment = 0
        for (const [k, p] of before.entries()) {
          const st = (moments[k] ??= { m: new Float64Array(p.data.length), v: new Float64Array(p.data.length) })
          const q = sb.tensors[k]
          let mErr = 0
          let mMag = 0
          for (let i = 0; i < p.data.length; i++) {
            const g = grads[k].grad[i] * coef
            st.m[i] = b1 * st.m[i] + (1 - b1) * g
            st.v[i] = b2 * st.v[i] + (1 - b2) * g * g
            let w = p.data[i] * (p.decay ? 1 - hyper.lr * wd : 1)
            w -= (hyper.lr * (st.m[i] / (1 - b1 ** (step + 1)))) / (Math.sqrt(st.v[i] / (1 - b2 ** (step + 1))) + eps)
            worst = Math.max(worst, Math.abs(q.data[i] - w) / (hyper.lr + Math.abs(w) * 1e-3))
            mErr = Math.max(mErr, Math.abs(q.expAvg[i] - st.m[i]) / 1e-3, Math.abs(q.expAvgSq[i] - st.v[i]) / 1e-3)
            mMag = Math.max(mMag, Math.abs(st.m[i]) / 1e-3, Math.abs(st.v[i]) / 1e-3)
          }
          worstMoment = Math.max(worstMoment, mErr / mMag)
        }
        t.ok(
          worst < 1e-3,
          `${v.name} step ${step + 1}: every weight within 1e-3 of lr of the float64 AdamW reference (worst ${worst.toExponential(2)})`
        )
        t.ok(
          worstMoment < 1e-5,
          `${v.name} step ${step + 1}: AdamW moments match the reference (worst rel err ${worstMoment.toExponential(2)})`
        )
        t.ok(
          (await dev.gradients()).every((g) => g.grad.every((x) => x === 0)),
          'applyAdamW zeroes the gradients'
        )
      }
      // a non-finite norm skips the update: an infinite weight makes every gradient NaN
      const st = await dev.state()
      const idx = st.tensors.findIndex((x) => x.name === 'model.norm.weight')
      const bad = Float32Array.from(st.tensors[idx].data)
      bad[0] = Infinity
      await dev.setState({ tensors: [{ name: 'model.norm.weight', data: bad }] })
      await dev.step(batch)
      const norm = await dev.applyAdamW({ lr: 1e-2 })
      t.notOk(Number.isFinite(norm), `${v.name}: gradient norm ${norm} is not finite`)
      const after = await dev.state()
      t.equal(after.stepsTaken, st.stepsTaken, 'the skipped update does not count')
      t.ok(
        after.tensors.every((x, k) => k === idx || x.data.every((y, i) => y === st.tensors[k].data[i])),
        'and changes no weight'
      )
      t.ok(
        (await dev.gradients()).every((g) => g.grad.every((x) => x === 0)),
        'the gradients are still zeroed'
      )
      dispose()
    }
  })

  t.test(`${device}: state round trip, inference follows the updates, loss falls on a fixed batch`, async (t) => {
    const r = rng(t)
    for (const v of [variants[0], variants[3]]) {
      const { cpu, dev, devModel, dispose } = await pair(v, device)
      cpu.dispose()
      const seqs = Array.from({ length: 3 }, () => Array.from({ length: 16 }, () => r.int(0, v.vocab - 1)))
      const N = seqs.reduce((a, s) => a + s.length - 1, 0)
      const batch = seqs.map((tokens) => ({ tokens, weights: tokens.map((_, j) => (j === 0 ? 0 : 1 / N)) }))
      const losses = []
      // generation through the same backend reads the updated weights (bf16: the rounded copy of the masters)
      const bound = v.dtype ? 1e-3 : 1e-4
      const followErr = async () => {
        const lp = await dev.forward(seqs)
        const logits = await devModel.logits(seqs)
        let err = 0
        for (const [s, tokens] of seqs.entries())
          for (let j = 1; j < tokens.length; j++)
            err = Math.max(err, Math.abs(lp[s][j] - logSoftmaxAt(logits[s], v.vocab, j - 1, tokens[j])) / Math.max(1, Math.abs(lp[s][j])))
        return { err, logits }
      }
      for (let step = 0; step < 12; step++) {
        losses.push((await dev.step(batch)).loss)
        const norm = await dev.applyAdamW({ lr: 1e-2, weightDecay: 0.01, maxGradNorm: 1.0 })
        if (!(Number.isFinite(norm) && norm > 0)) t.fail(`step ${step}: grad norm ${norm}`)
        if (step === 0) {
          const { err } = await followErr()
          t.ok(err < bound, `${v.name}: after one update model.logits gives the trainer's logp (max rel err ${err.toExponential(2)})`)
        }
      }
      const res = await dev.step(batch)
      await dev.zeroGrad()
      t.comment(`${v.name}: loss ${losses[0].toFixed(3)} -> ${res.loss.toFixed(3)}`)
      t.ok(res.loss < 0.7 * losses[0], `${v.name}: final loss ${res.loss.toFixed(3)} < 0.7 x the initial ${losses[0].toFixed(3)}`)
      const { err, logits } = await followErr()
      t.ok(err < bound, `${v.name}: after 12 updates model.logits gives the trainer's logp (max rel err ${err.toExponential(2)})`)
      // state round trip into a fresh trainer on a fresh model: same weights, moments and steps; the same step
      // and update then give the same weights
      const state = await dev.state()
      const m2 = await loadModel(v.dir, { device, maxBatch: 4, maxContext: 64, ...(v.dtype ? { dtype: v.dtype } : {}) })
      const dev2 = new ModelTrainer(m2)
      await dev2.setState(state)
      const s2 = await dev2.state()
      t.equal(s2.stepsTaken, state.stepsTaken, 'stepsTaken restored')
      t.ok(
        s2.tensors.every((x, k) => ['data', 'expAvg', 'expAvgSq'].every((f) => x[f].every((y, i) => y === state.tensors[k][f][i]))),
        'weights and moments restored exactly'
      )
      const logits2 = await m2.logits(seqs)
      t.ok(
        logits2.every((l, s) => l.every((y, i) => y === logits[s][i])),
        'the restored model generates from the restored weights'
      )
      const ra = await dev.step(batch)
      const rb = await dev2.step(batch)
      t.equal(rb.loss, ra.loss, 'the restored trainer computes the same loss')
      await dev.applyAdamW({ lr: 1e-2 })
      await dev2.applyAdamW({ lr: 1e-2 })
      const pa = await dev.parameters()
      const pb = await dev2.parameters()
      t.ok(
        pa.every((p, k) => p.data.every((y, i) => y === pb[k].data[i])),
        'and the same update'
      )
      // a bad state changes nothing
      const before = await dev2.state()
      await t.rejects(
        dev2.setState({
          stepsTaken: 99,
          tensors: [
            { name: 'model.norm.weight', data: new Float32Array(before.tensors.at(-1).data.length) },
            { name: 'no.such.tensor', data: new Float32Array(1) }
          ]
        }),
        { code: 'ERR_INVALID_ARG' },
        'an unknown tensor name is refused'
      )
      await t.rejects(
        dev2.setState({ tensors: [{ name: 'model.norm.weight', data: new Float32Array(3) }] }),
        { code: 'ERR_INVALID_ARG' },
        'a wrong size is refused'
      )
      const still = await dev2.state()
      t.ok(
        still.stepsTaken === before.stepsTaken && still.tensors.every((x, k) => x.data.every((y, i) => y === before.tensors[k].data[i])),
        'a refused state leaves the trainer as it was'
      )
      dev2.dispose()
      m2.dispose()
      dispose()
    }
  })

  t.test(`${device}: forward + backward in two calls equals the one-call step`, async (t) => {
    const r = rng(t)
    const v = variants[1]
    const batch = randomTrainBatch(r, v.vocab, [5, 30])
    const { dev: A, dispose: dispA } = await pair(v, device, 2)
    const { dev: B, dispose: dispB } = await pair(v, device, 2)
    await twoCallsEqualStep(t, A, B, batch)
    await B.forward(batch.map((s) => s.tokens))
    await t.rejects(
      native().trainerBackward(B.handle, new Float32Array(3)),
      { code: 'ERR_INVALID_ARG', message: /one weight per token/ },
      'the native side checks the count'
    )
    await B.applyAdamW({ lr: 1e-3 })
    await t.rejects(
      native().trainerBackward(B.handle, new Float32Array(35)),
      { code: 'ERR_INVALID_ARG', message: /no pending forward/ },
      'applyAdamW drops a pending forward'
    )
    dispA()
    dispB()
  })

  t.test(`${device}: abort, bad input, unsupported options`, async (t) => {
    const r = rng(t)
    const v = variants[0]
    const { dev: tr, dispose } = await pair(v, device, 1)
    const batch = randomTrainBatch(r, v.vocab, [40])
    await abortLeavesTrainerUsable(t, tr, batch)

    await t.rejects(
      tr.step([{ tokens: [1, 2], weights: [0.5, 1] }]),
      { code: 'ERR_INVALID_ARG', message: /first token/ },
      'a weight on a first token is refused'
    )
    await t.rejects(
      tr.step([{ tokens: [1, v.vocab], weights: [0, 1] }]),
      { code: 'ERR_INVALID_ARG', message: /vocabulary/ },
      'an out-of-range token is refused'
    )
    await t.rejects(
      native().trainerStep(
        tr.handle,
        Int32Array.of(2),
        Int32Array.of(1, -1),
        Float32Array.of(0, 1),
        new Int32Array(new SharedArrayBuffer(4))
      ),
      { code: 'ERR_INVALID_ARG', message: /vocabulary/ },
      'a negative token is refused natively'
    )
    await t.rejects(tr.step([{ tokens: [1, 2], weights: [0] }]), { code: 'ERR_INVALID_ARG' }, 'weights of the wrong length are refused')
    await t.rejects(tr.step([]), { code: 'ERR_INVALID_ARG' }, 'an empty batch is refused')
    await t.rejects(
      tr.step([{ tokens: [1, 2], weights: [0, NaN] }]),
      { code: 'ERR_INVALID_ARG', message: /not finite/ },
      'a NaN weight is refused'
    )
    tr.dispose()
    await t.rejects(tr.step(batch), { code: 'ERR_INVALID_ARG', message: /disposed/ }, 'a disposed trainer is refused')
    dispose()
  })

  t.test(`${device}: o_proj and MLP biases (llama attention_bias + mlp_bias) train like the cpu trainer, full and DoRA`, async (t) => {
    const r = rng(t)
    const biasDir = path.join(tmp, 'llama-bias')
    if (!fs.existsSync(biasDir)) initModel({ ...smallTrainModel, arch: 'llama', attentionBias: true, mlpBias: true, out: biasDir, seed: 1 })
    const vocab = JSON.parse(fs.readFileSync(path.join(biasDir, 'config.json'))).vocab_size
    const dora = {
      type: 'dora',
      r: 4,
      alpha: 8,
      dropout: 0,
      seed: 5,
      targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']
    }
    for (const options of [{}, { adapter: dora }]) {
      const cpuModel = await loadModel(biasDir, { device: 'cpu', maxBatch: 4, maxContext: 64 })
      const devModel = await loadModel(biasDir, { device, maxBatch: 4, maxContext: 64 })
      const cpu = new ModelTrainer(cpuModel, options)
      const dev = new ModelTrainer(devModel, options)
      const label = options.adapter ? 'DoRA' : 'full fine-tuning'
      if (!options.adapter) {
        const names = (await dev.parameters()).map((p) => p.name)
        for (const n of ['self_attn.o_proj.bias', 'mlp.gate_proj.bias', 'mlp.up_proj.bias', 'mlp.down_proj.bias'])
          t.ok(names.includes(`model.layers.0.${n}`), `${label}: ${n} is trained`)
      }
      if (options.adapter) {
        // B starts at 0, which leaves A without a gradient: one update first
        const first = randomTrainBatch(r, vocab, [6, 5])
        for (const tr of [cpu, dev]) {
          await tr.step(first)
          await tr.applyAdamW({ lr: 1e-2, eps: 1e-3 }) // eps: a near-zero gradient entry must not flip B by ±lr on rounding
        }
      }
      await compareStep(t, `${label} [9, 4]`, cpu, dev, randomTrainBatch(r, vocab, [9, 4]), tol.f32)
      cpu.dispose()
      dev.dispose()
      cpuModel.dispose()
      devModel.dispose()
    }
  })
}

t.test('train() end to end on the CUDA trainer: the warm-start steps equal the cpu run, GRPO runs with the KL reference', async (t) => {
  // the built-in tiny model and synthetic tasks (fixed seeds): 2 SFT warm-start steps then one GRPO step
  const config = (device) => ({
    device,
    warmStartSteps: 2,
    warmStartLearningRate: 2e-3,
    steps: 1,
    warmupSteps: 1,
    promptsPerStep: 1,
    samplesPerPrompt: 2,
    maxCompletionTokens: 8,
    checkpointEvery: 10,
    klCoef: 0.001,
    synthetic: { seed: 3, train: 10, heldOut: 1 }
  })
  await trainMatchesCpu(t, {
    dir: tmp,
    devices,
    config,
    written: ['model/model.safetensors', 'the trained model is written'],
    gradNormTol: 1e-4,
    grpo: 'GRPO step'
  })
})
