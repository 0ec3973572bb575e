// Full fine-tuning step of the CPU model (src/model/train_step.cpp, lib/model/train.ts) on tiny random models:
// the gradient of every parameter tensor against torch autograd through test/reference/transformer.py's
// independent model (test/reference/train_step.py, float64), logp against the model's own logits'
// log-softmax, a few SFT steps with AdamW clearly lowering the loss (and the re-packed inference weights
// following the update), AbortSignal, and bad input.
import t from 'tap'
import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require, rng, randomTrainBatch, logSoftmaxAt, relErr, twoCallsEqualStep, abortLeavesTrainerUsable } from './helpers.mjs'

const { loadModel, initModel, ModelTrainer, applyAdamW } = require('../dist/cjs/index.js')
const { native } = require('../dist/cjs/native.js')
const { DECODER_PROJECTIONS: ALL } = require('../dist/cjs/model/projections.js')
const TORCH_PYTHON = '/usr/bin/python3'
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-train-step-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

const variants = [
  { name: 'qwen2 (qkv bias, untied, GQA 4:2)', opts: { preset: 'tiny', arch: 'qwen2' } },
  { name: 'qwen3 (q/k norm, tied embeddings)', opts: { preset: 'tiny', arch: 'qwen3', tieWordEmbeddings: true } },
  { name: 'llama (MQA 4:1, untied)', opts: { preset: 'tiny', arch: 'llama', kvHeads: 1 } },
  {
    name: 'qwen2 tied, bf16 on disk, loaded as bf16',
    opts: { preset: 'tiny', arch: 'qwen2', tieWordEmbeddings: true, dtype: 'bf16' },
    load: { dtype: 'bf16' }
  },
  { name: 'llama (attention and MLP biases, untied)', opts: { preset: 'tiny', arch: 'llama', attentionBias: true, mlpBias: true } }
]
variants.forEach((v, i) => {
  v.dir = path.join(tmp, `m${i}`)
  initModel({ ...v.opts, out: v.dir, seed: 300 + i })
  v.vocab = JSON.parse(fs.readFileSync(path.join(v.dir, 'config.json'))).vocab_size
})

t.test("gradients of every parameter equal torch autograd; logp equals the logits' log-softmax", async (t) => {
  if (!fs.existsSync(TORCH_PYTHON)) {
    t.comment(`skipped: ${TORCH_PYTHON} (Debian python3-torch) not found`)
    return
  }
  const r = rng(t)
  const batches = variants.map((v) => randomTrainBatch(r, v.vocab, [1, 3, 17, 40]))
  const models = []
  const jobs = []
  const results = []
  for (const [i, v] of variants.entries()) {
    const m = await loadModel(v.dir, { device: 'cpu', maxBatch: 4, maxContext: 64, ...v.load })
    const tr = new ModelTrainer(m)
    const res = await tr.step(batches[i])
    const grads = await tr.gradients()
    models.push({ m, tr })
    results.push({ res, grads })
    jobs.push({
      dir: v.dir,
      ids: batches[i].map((s) => s.tokens),
      weights: batches[i].map((s) => s.weights),
      names: grads.map((g) => g.name),
      out: path.join(tmp, `ref${i}.f64`)
    })
  }
  execFileSync(TORCH_PYTHON, [new URL('./reference/train_step.py', import.meta.url).pathname], {
    input: JSON.stringify(jobs),
    maxBuffer: 1 << 26
  })
  for (const [i, v] of variants.entries()) {
    const ref = new Float64Array(fs.readFileSync(jobs[i].out).buffer.slice(0))
    const { res, grads } = results[i]
    let o = 0
    const refLoss = ref[o++]
    t.ok(Math.abs(res.loss - refLoss) <= 1e-4 * Math.max(1, Math.abs(refLoss)), `${v.name}: loss ${res.loss} vs torch ${refLoss}`)
    let lpErr = 0
    for (const [s, seq] of batches[i].entries()) {
      for (let j = 0; j < seq.tokens.length; j++) lpErr = Math.max(lpErr, Math.abs(res.logp[s][j] - ref[o++]))
    }
    t.ok(lpErr < 1e-4, `${v.name}: logp vs torch max abs err ${lpErr.toExponential(2)}`)
    const expectedNames = v.opts.tieWordEmbeddings ? 0 : 1
    t.equal(grads.filter((g) => g.name === 'lm_head.weight').length, expectedNames, `${v.name}: lm_head present only when untied`)
    let worst = 0
    let worstName = ''
    for (const g of grads) {
      const n = g.grad.length
      t.equal(
        n,
        g.shape.reduce((a, b) => a * b, 1),
        `${g.name}: size matches shape`
      )
      const e = relErr(g.grad, ref.subarray(o, o + n))
      let refMag = 0
      for (let k = o; k < o + n; k++) refMag = Math.max(refMag, Math.abs(ref[k]))
      if (refMag === 0) t.fail(`${v.name}: torch gradient of ${g.name} is zero: the test would not see an error`)
      if (e > worst) {
        worst = e
        worstName = g.name
      }
      if (!(e < 1e-4)) t.fail(`${v.name}: ${g.name} gradient rel err ${e}`)
      o += n
    }
    t.equal(o, ref.length, `${v.name}: the reference holds exactly the gradients of the ${grads.length} tensors`)
    t.ok(
      worst < 1e-4,
      `${v.name}: all ${grads.length} gradient tensors within 1e-4 of torch (worst ${worst.toExponential(2)} in ${worstName})`
    )

    // logp against the model's own inference logits (packed GEMM path)
    const { m } = models[i]
    const logits = await m.logits(batches[i].map((s) => s.tokens))
    let ownErr = 0
    for (const [s, seq] of batches[i].entries()) {
      t.equal(res.logp[s][0], 0, 'the first token of a sequence has logp 0')
      for (let j = 1; j < seq.tokens.length; j++)
        ownErr = Math.max(ownErr, Math.abs(res.logp[s][j] - logSoftmaxAt(logits[s], v.vocab, j - 1, seq.tokens[j])))
    }
    t.ok(ownErr < 1e-4, `${v.name}: logp vs log-softmax of model.logits: max abs err ${ownErr.toExponential(2)}`)
  }
  // a second step accumulates: gradients double
  const { tr } = models[0]
  const before = results[0].grads
  await tr.step(batches[0])
  const twice = await tr.gradients()
  let accErr = 0
  for (const [k, g] of twice.entries())
    accErr = Math.max(
      accErr,
      relErr(
        g.grad,
        before[k].grad.map((x) => 2 * x)
      )
    )
  t.ok(accErr < 1e-5, `a second step adds into the gradients (rel err vs 2x ${accErr.toExponential(2)})`)
  await tr.zeroGrad()
  t.ok(
    (await tr.gradients()).every((g) => g.grad.every((x) => x === 0)),
    'zeroGrad clears every gradient'
  )
  for (const { m, tr } of models) {
    tr.dispose()
    m.dispose()
  }
})

t.test('SFT steps with AdamW lower the loss on a fixed batch; inference follows the updated weights', async (t) => {
  const r = rng(t)
  const v = variants[0]
  const m = await loadModel(v.dir, { device: 'cpu', maxBatch: 4, maxContext: 64 })
  const tr = new ModelTrainer(m)
  const seqs = Array.from({ length: 4 }, () => Array.from({ length: 24 }, () => r.int(0, v.vocab - 1)))
  const N = seqs.reduce((a, s) => a + s.length - 1, 0)
  const batch = seqs.map((tokens) => ({ tokens, weights: tokens.map((_, j) => (j === 0 ? 0 : 1 / N)) }))
  const losses = []
  let norm = 0
  for (let step = 0; step < 30; step++) {
    const res = await tr.step(batch)
    losses.push(res.loss)
    let sq = 0
    if (step === 0) for (const g of await tr.gradients()) for (const x of g.grad) sq += x * x
    norm = await applyAdamW(tr, { lr: 1e-2, weightDecay: 0.01, maxGradNorm: 1.0 })
    if (step === 0) {
      t.ok(
        Math.abs(norm - Math.sqrt(sq)) <= 1e-5 * Math.sqrt(sq),
        `applyAdamW returns the global gradient norm before clipping (${norm.toFixed(4)} vs ${Math.sqrt(sq).toFixed(4)})`
      )
      t.ok(
        (await tr.gradients()).every((g) => g.grad.every((x) => x === 0)),
        'applyAdamW zeroes the gradients'
      )
    }
    if (!(Number.isFinite(norm) && norm > 0)) t.fail(`step ${step}: grad norm ${norm}`)
  }
  const final = (await tr.step(batch)).loss
  await tr.zeroGrad()
  t.comment(`loss ${losses[0].toFixed(3)} -> ${final.toFixed(3)}; last grad norm ${norm.toFixed(3)}`)
  let rises = 0
  for (let i = 1; i < losses.length; i++) if (losses[i] > losses[i - 1]) rises++
  t.ok(final < 0.5 * losses[0], `final loss ${final.toFixed(3)} < half the initial ${losses[0].toFixed(3)}`)
  t.ok(rises <= 6, `the loss rose in only ${rises} of 29 steps`)
  // re-packed inference weights: the model's logits give the trainer's logp
  const res = await tr.step(batch)
  await tr.zeroGrad()
  const logits = await m.logits(seqs)
  let err = 0
  for (const [s, tokens] of seqs.entries())
    for (let j = 1; j < tokens.length; j++)
      err = Math.max(err, Math.abs(res.logp[s][j] - logSoftmaxAt(logits[s], v.vocab, j - 1, tokens[j])))
  t.ok(err < 1e-4, `after the updates model.logits matches the trainer's logp (max abs err ${err.toExponential(2)})`)
  tr.dispose()
  m.dispose()
})

t.test('applyAdamW: clipping by the global norm and one torch-style AdamW update of every tensor', async (t) => {
  const r = rng(t)
  const v = variants[0]
  const m = await loadModel(v.dir, { device: 'cpu', maxBatch: 2, maxContext: 64 })
  const tr = new ModelTrainer(m)
  const batch = randomTrainBatch(r, v.vocab, [20, 12])
  const hyper = { lr: 3e-3, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.1, maxGradNorm: 0.05 }
  const moments = [] // the reference's AdamW state per tensor, across the two steps
  for (let step = 1; step <= 2; step++) {
    await tr.step(batch)
    const grads = await tr.gradients()
    const before = await tr.parameters()
    if (step === 1)
      t.ok(
        before.every((p) => p.decay === (p.shape.length === 2)),
        'weight decay on matrices only'
      )
    let sq = 0
    for (const g of grads) for (const x of g.grad) sq += x * x
    const norm = Math.sqrt(sq)
    const coef = Math.min(1, hyper.maxGradNorm / (norm + 1e-6))
    t.ok(coef < 1, `the gradient (norm ${norm.toExponential(2)}) is clipped (coef ${coef.toExponential(2)})`)
    const got = await tr.applyAdamW(hyper)
    t.ok(Math.abs(got - norm) <= 1e-5 * norm, 'returns the norm before clipping')
    const after = await tr.parameters()
    // float64 torch.optim.AdamW on the clipped gradient; moments tracked here across the two steps
    let worst = 0
    for (const [k, p] of before.entries()) {
      const st = (moments[k] ??= { m: new Float64Array(p.data.length), v: new Float64Array(p.data.length) })
      for (let i = 0; i < p.data.length; i++) {
        const g = grads[k].grad[i] * coef
        st.m[i] = hyper.beta1 * st.m[i] + (1 - hyper.beta1) * g
        st.v[i] = hyper.beta2 * st.v[i] + (1 - hyper.beta2) * g * g
        let w = p.data[i] * (p.decay ? 1 - hyper.lr * hyper.weightDecay : 1)
        const mh = st.m[i] / (1 - hyper.beta1 ** step)
        const vh = st.v[i] / (1 - hyper.beta2 ** step)
        w -= (hyper.lr * mh) / (Math.sqrt(vh) + hyper.eps)
        worst = Math.max(worst, Math.abs(after[k].data[i] - w) / (hyper.lr + Math.abs(w) * 1e-3))
      }
    }
    t.ok(worst < 1e-3, `step ${step}: every weight within 1e-3 of lr of the float64 AdamW reference (worst ${worst.toExponential(2)})`)
  }
  tr.dispose()
  m.dispose()
})

t.test('forward + backward in two calls equals the one-call step (weights computed from the returned logp)', async (t) => {
  const r = rng(t)
  const v = variants[1]
  const batch = randomTrainBatch(r, v.vocab, [5, 30])
  const mA = await loadModel(v.dir, { device: 'cpu', maxBatch: 2, maxContext: 64 })
  const mB = await loadModel(v.dir, { device: 'cpu', maxBatch: 2, maxContext: 64 })
  const A = new ModelTrainer(mA)
  const B = new ModelTrainer(mB)
  const weights = await twoCallsEqualStep(t, A, B, batch)
  await B.forward(batch.map((s) => s.tokens))
  await t.rejects(B.backward([weights[0]]), { code: 'ERR_INVALID_ARG' }, 'weights must cover every sequence of the forward')
  await t.rejects(
    native().trainerBackward(B.handle, new Float32Array(3)),
    { code: 'ERR_INVALID_ARG', message: /one weight per token/ },
    'the native side checks the count too'
  )
  await B.applyAdamW({ lr: 1e-3 })
  await t.rejects(
    native().trainerBackward(B.handle, new Float32Array(35)),
    { code: 'ERR_INVALID_ARG', message: /no pending forward/ },
    'applyAdamW drops a pending forward'
  )
  A.dispose()
  B.dispose()
  mA.dispose()
  mB.dispose()
})

t.test('AbortSignal, bad input, unsupported models', async (t) => {
  const r = rng(t)
  const v = variants[0]
  const m = await loadModel(v.dir, { device: 'cpu', maxBatch: 1, maxContext: 64 })
  const tr = new ModelTrainer(m)
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
  await t.rejects(tr.step([{ tokens: [1, 2], weights: [0] }]), { code: 'ERR_INVALID_ARG' }, 'weights of the wrong length are refused')
  await t.rejects(tr.step([]), { code: 'ERR_INVALID_ARG' }, 'an empty batch is refused')
  await t.rejects(tr.applyAdamW({ lr: -1 }), { code: 'ERR_INVALID_ARG', message: /lr/ }, 'a negative lr is refused')
  await t.rejects(
    tr.step([{ tokens: [1, 2], weights: [0, NaN] }]),
    { code: 'ERR_INVALID_ARG', message: /not finite/ },
    'a NaN weight is refused'
  )
  tr.dispose()
  await t.rejects(tr.step(batch), { code: 'ERR_INVALID_ARG', message: /disposed/ }, 'a disposed trainer is refused')
  m.dispose()
  t.throws(() => new ModelTrainer(m), { code: 'ERR_INVALID_ARG' }, 'a disposed model is refused')

  const mBias = await loadModel(variants[4].dir, { device: 'cpu', maxBatch: 1, maxContext: 16 })
  const biases = new ModelTrainer(mBias)
  const names = (await biases.parameters()).map((p) => p.name)
  for (const n of ['self_attn.o_proj.bias', 'mlp.gate_proj.bias', 'mlp.up_proj.bias', 'mlp.down_proj.bias'])
    t.ok(names.includes(`model.layers.0.${n}`), `${n} is trainable (Llama with attention_bias / mlp_bias)`)
  biases.dispose()
  mBias.dispose()
})

t.test('activation recomputation gives the same gradients bit for bit (full fine-tuning and DoRA with dropout)', async (t) => {
  const r = rng(t)
  const v = variants[1]
  const batch = randomTrainBatch(r, v.vocab, [7, 33, 2])
  const adapter = { type: 'dora', r: 4, alpha: 8, dropout: 0.1, seed: 3, targetModules: ALL }
  for (const options of [{}, { adapter }]) {
    const label = options.adapter ? 'DoRA' : 'full fine-tuning'
    const runs = []
    for (const activationRecomputation of [false, true]) {
      const m = await loadModel(v.dir, { device: 'cpu', maxBatch: 3, maxContext: 64 })
      const tr = new ModelTrainer(m, { ...options, activationRecomputation })
      const res = []
      for (let step = 0; step < 2; step++) {
        res.push(await tr.step(batch))
        if (step === 0) await tr.applyAdamW({ lr: 1e-2 })
      }
      runs.push({ res, grads: await tr.gradients() })
      tr.dispose()
      m.dispose()
    }
    const [a, b] = runs
    t.same(
      b.res.map((x) => x.loss),
      a.res.map((x) => x.loss),
      `${label}: same losses`
    )
    t.ok(
      a.grads.length > 0 && a.grads.every((g, k) => g.name === b.grads[k].name && g.grad.every((x, j) => x === b.grads[k].grad[j])),
      `${label}: identical gradients for all ${a.grads.length} tensors`
    )
  }
  const m = await loadModel(v.dir, { device: 'cpu', maxBatch: 1, maxContext: 16 })
  t.throws(
    () => new ModelTrainer(m, { activationRecomputation: 'yes' }),
    { code: 'ERR_INVALID_ARG', message: /activationRecomputation/ },
    'the option must be a boolean'
  )
  m.dispose()
})
