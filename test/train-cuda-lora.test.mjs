// LoRA / DoRA adapters on the CUDA trainer (src/model/cuda_train_step.cpp, cuda/adapters.cu) held to the CPU
// trainer's adapter mode (src/model/train_step.cpp, itself checked against torch autograd through PEFT's layers
// in train-lora.test.mjs) with the same AdapterSpec: the same initial tensors bit for bit, logp, loss and every
// adapter gradient (with and without dropout: the same Philox masks), the AdamW update, state round trips,
// adapters off = the base (trainer forward and generation), generation after updates = the trainer's logp,
// the merged weights, bad input, and train() with a DoRA adapter against the cpu run. Device 'emulated' runs the
// CUDA kernels through the SIMT emulation (always); 'cuda' is held to the same checks when a GPU is usable.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import {
  require,
  rng,
  maxRelError,
  randomTrainBatch,
  logSoftmaxAt,
  randomAdapterTensors,
  trainMatchesCpu,
  trainModelVariants,
  trainDevices,
  BF16_TRAIN_LOGP_TOL,
  BF16_TRAIN_GRAD_TOL
} from './helpers.mjs'

const { loadModel, ModelTrainer } = require('../dist/cjs/index.js')
const { native } = require('../dist/cjs/native.js')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-train-cuda-lora-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const { DECODER_PROJECTIONS: ALL } = require('../dist/cjs/model/projections.js')

const variants = trainModelVariants(tmp, 900)
// adapter settings per variant: every projection and a subset, LoRA and DoRA, with and without dropout
const settings = [
  { type: 'lora', targets: ALL, dropout: 0 },
  { type: 'dora', targets: ALL, dropout: 0 },
  { type: 'dora', targets: ['q_proj', 'v_proj', 'down_proj'], dropout: 0.3 },
  { type: 'lora', targets: ['k_proj', 'o_proj', 'up_proj'], dropout: 0.3 }
]

const devices = trainDevices(t)

// Relative error bounds against the CPU trainer (per tensor, floored at 1% of the largest entry of the model's
// gradients). fp32: the same math in a different summation order. bf16: the CUDA trainer runs activations and
// the adapter products in bf16, the CPU one in fp32 on the same bf16-rounded base weights.
const tol = {
  f32: { grad: 1e-4, logp: 1e-4, param: 1e-5, adam: 2e-3 },
  bf16: { grad: BF16_TRAIN_GRAD_TOL, logp: BF16_TRAIN_LOGP_TOL, param: 2e-3, adam: 5e-2 }
}

/** max over tensors of the relative error per tensor, floored at 1% of the largest entry of `ref`. */
function worstTensorError(got, ref, key) {
  const globalMag = Math.max(...ref.map((g) => g[key].reduce((m, x) => Math.max(m, Math.abs(x)), 0)))
  let worst = 0
  let name = ''
  for (const [k, g] of ref.entries()) {
    const mag = g[key].reduce((m, x) => Math.max(m, Math.abs(x)), 0)
    const e = maxRelError(got[k][key], g[key], Math.max(mag, 0.01 * globalMag))
    if (!(e <= worst)) {
      worst = e
      name = g.name
    }
  }
  return { worst, name }
}

function logpError(a, b) {
  let err = 0
  for (const [s, row] of a.entries())
    for (let j = 0; j < row.length; j++) err = Math.max(err, Math.abs(b[s][j] - row[j]) / Math.max(1, Math.abs(row[j])))
  return err
}

for (const device of devices) {
  t.test(`${device}: adapters equal the cpu trainer's (init, logp, loss, gradients, AdamW, merge, generation, adapters off)`, async (t) => {
    const r = rng(t)
    for (const v of variants) {
      const tl = tol[v.dtype ?? 'f32']
      const load = { maxBatch: 4, maxContext: 64, ...(v.dtype ? { dtype: v.dtype } : {}) }
      const cpuModel = await loadModel(v.dir, { device: 'cpu', ...load })
      const devModel = await loadModel(v.dir, { device, ...load })
      const seqs = [9, 14, 5].map((n) => Array.from({ length: n }, () => r.int(0, v.vocab - 1)))
      // the base: a full fine-tuning trainer's forward and the model's logits before any adapter
      const base = new ModelTrainer(devModel)
      const baseLogp = await base.forward(seqs)
      base.dispose()
      const baseLogits = await devModel.logits(seqs)
      for (const s of settings) {
        const seed = r.int(0, 2 ** 31)
        const label = `${v.name}, ${s.type} on ${s.targets.length === 7 ? 'all' : s.targets.join(',')}, p=${s.dropout}, seed ${seed}`
        const adapter = { type: s.type, r: 4, alpha: 8, dropout: s.dropout, targetModules: s.targets, seed }
        const cpu = new ModelTrainer(cpuModel, { adapter })
        const dev = new ModelTrainer(devModel, { adapter })
        const pa = await cpu.parameters()
        const pb = await dev.parameters()
        t.same(
          pb.map((p) => [p.name, p.shape, p.decay]),
          pa.map((p) => [p.name, p.shape, p.decay]),
          `${label}: the same ${pa.length} adapter tensors (names, shapes, decay)`
        )
        t.ok(
          pa.every((p, k) => p.data.every((x, j) => Object.is(x, pb[k].data[j]))),
          `${label}: the same initial values bit for bit (A from Philox, B = 0${s.type === 'dora' ? ', m = ||W||' : ''})`
        )

        const tensors = randomAdapterTensors(r, pa)
        await cpu.setState({ tensors })
        await dev.setState({ tensors })
        // two steps, each followed by an update (the second step draws new dropout masks); AdamW compared after the
        // first update, from (nearly) identical gradients. Adam's step is about lr * sign(g) for any entry, so an entry
        // whose gradient differs in sign between the two (rounding noise: fp32 rarely, bf16 often) moves up
        // to 2 lr = 2e-3 apart, against tensors whose largest entry is ~0.05-0.15: bounds 2e-3 (fp32) and 5e-2 (bf16;
        // measured up to ~2e-2). Such an entry would then carry into every later comparison (an H200 run saw step-1
        // gradients 3.5e-4 and merged weights 2.2e-4 apart in fp32), so after each update the device trainer takes
        // the cpu trainer's state: step 1 and the merge are compared from the same weights, at the first step's bounds.
        for (let step = 0; step < 2; step++) {
          const batch = randomTrainBatch(r, v.vocab, [1, 7, 12, 12])
          const a = await cpu.step(batch)
          const b = await dev.step(batch)
          const lpErr = logpError(a.logp, b.logp)
          t.ok(lpErr <= tl.logp, `${label} step ${step}: logp within ${tl.logp} (worst ${lpErr.toExponential(2)})`)
          let lossBound = 0
          for (const [k, seq] of batch.entries())
            for (let j = 1; j < seq.tokens.length; j++)
              lossBound += tl.logp * Math.abs(seq.weights[j]) * Math.max(1, Math.abs(a.logp[k][j]))
          t.ok(
            Math.abs(b.loss - a.loss) <= lossBound + 1e-6,
            `${label} step ${step}: loss ${b.loss.toFixed(6)} vs cpu ${a.loss.toFixed(6)}`
          )
          const ga = await cpu.gradients()
          const gb = await dev.gradients()
          t.same(
            gb.map((g) => g.name),
            ga.map((g) => g.name),
            `${label}: gradients of the adapter tensors only`
          )
          for (const g of ga)
            if (!g.grad.some((x) => x !== 0)) t.fail(`${label}: cpu gradient of ${g.name} is zero: the test would not see an error`)
          const ge = worstTensorError(gb, ga, 'grad')
          t.ok(
            ge.worst <= tl.grad,
            `${label} step ${step}: every adapter gradient within ${tl.grad} (worst ${ge.worst.toExponential(2)} in ${ge.name})`
          )
          const opts = { lr: 1e-3, weightDecay: 0.01, maxGradNorm: 0.5 }
          const na = await cpu.applyAdamW(opts)
          const nb = await dev.applyAdamW(opts)
          t.ok(Math.abs(nb - na) <= tl.grad * na, `${label} step ${step}: gradient norm ${nb.toFixed(6)} vs cpu ${na.toFixed(6)}`)
          const sa = await cpu.state()
          if (step === 0) {
            const sb = await dev.state()
            t.equal(sb.stepsTaken, 1, `${label}: one update taken`)
            for (const [key, bound] of [
              ['data', tl.adam],
              ['expAvg', tl.grad],
              ['expAvgSq', 2 * tl.grad]
            ]) {
              const e = worstTensorError(sb.tensors, sa.tensors, key)
              t.ok(
                e.worst <= bound,
                `${label}: AdamW ${key} within ${bound} of the cpu trainer (worst ${e.worst.toExponential(2)} in ${e.name})`
              )
            }
          }
          await dev.setState(sa)
        }
        const sb = await dev.state()
        // the merged weights (PEFT's merge) equal the cpu trainer's
        const ma = await cpu.mergedWeights()
        const mb = await dev.mergedWeights()
        t.same(
          mb.map((m) => [m.name, m.shape]),
          ma.map((m) => [m.name, m.shape]),
          `${label}: ${ma.length} merged weights under the Hugging Face names`
        )
        const me = worstTensorError(mb, ma, 'data')
        t.ok(
          me.worst <= tl.param * 10,
          `${label}: merged weights within ${tl.param * 10} of the cpu trainer's (worst ${me.worst.toExponential(2)})`
        )
        // generation through the same backend runs the adapters beside the base (the trainer's projection hook):
        // its logits give the trainer's logp
        const lp = await dev.forward(seqs)
        if (s.dropout === 0) {
          const logits = await devModel.logits(seqs)
          // relative to max(1, |logp|); bf16: generation and trainer both add the low-rank path in bf16 but the
          // backend's attention over the KV cache rounds differently (the cpu backend's own bf16 generation differs
          // from its trainer by ~0.2-0.5% of |logp| on these random models whose logp are ~ -40)
          let err = 0
          for (const [k, tokens] of seqs.entries())
            for (let j = 1; j < tokens.length; j++)
              err = Math.max(err, Math.abs(lp[k][j] - logSoftmaxAt(logits[k], v.vocab, j - 1, tokens[j])) / Math.max(1, Math.abs(lp[k][j])))
          const bound = tl.logp
          t.ok(
            err <= bound,
            `${label}: generation after the updates gives the trainer's logp (max rel err ${err.toExponential(2)}, bound ${bound})`
          )
        }
        // adapters off: the base exactly, in the trainer and in generation; on again: back to the merged weights
        await dev.setAdaptersEnabled(false)
        t.same(
          (await dev.forward(seqs)).map((x) => Array.from(x)),
          baseLogp.map((x) => Array.from(x)),
          `${label}: adapters off: the trainer's forward is the base model exactly`
        )
        const off = await devModel.logits(seqs)
        t.ok(
          off.every((l, k) => l.every((x, j) => x === baseLogits[k][j])),
          `${label}: adapters off: generation runs the base weights exactly`
        )
        await dev.setAdaptersEnabled(true)
        if (s.dropout === 0)
          t.same(
            (await dev.forward(seqs)).map((x) => Array.from(x)),
            lp.map((x) => Array.from(x)),
            `${label}: adapters on again: the same logp`
          )

        // state round trip: a fresh trainer given this state takes the same next step, bit for bit (setting the
        // step count restarts the dropout stream of the update on both: the forwards above drew from it)
        const batch = randomTrainBatch(r, v.vocab, [6, 11])
        const other = new ModelTrainer(devModel, { adapter })
        const restore = {
          stepsTaken: sb.stepsTaken,
          tensors: sb.tensors.map((x) => ({ name: x.name, data: x.data, expAvg: x.expAvg, expAvgSq: x.expAvgSq }))
        }
        await other.setState(restore)
        await dev.setState(restore)
        const st = await other.state()
        t.ok(
          st.tensors.every((x, k) => ['data', 'expAvg', 'expAvgSq'].every((f) => x[f].every((y, j) => y === sb.tensors[k][f][j]))),
          `${label}: setState then state round-trips every tensor`
        )
        const x1 = await dev.step(batch)
        const g1 = await dev.gradients()
        await dev.zeroGrad()
        const x2 = await other.step(batch)
        const g2 = await other.gradients()
        t.ok(
          x1.loss === x2.loss && g1.every((g, k) => g.grad.every((y, j) => y === g2[k].grad[j])),
          `${label}: a restored trainer takes the same step bit for bit (same weights, same dropout masks)`
        )
        other.dispose()
        cpu.dispose()
        dev.dispose()
        // the last adapter trainer gone, the backend's arrays hold the base again (a later trainer starts from it)
        const after = await devModel.logits(seqs)
        t.ok(
          after.every((l, k) => l.every((x, j) => x === baseLogits[k][j])),
          `${label}: after dispose, generation runs the base weights exactly`
        )
      }
      cpuModel.dispose()
      devModel.dispose()
    }
  })

  t.test(`${device}: adapter bad input`, async (t) => {
    const v = variants[0]
    const m = await loadModel(v.dir, { device, maxBatch: 1, maxContext: 16 })
    const bad = [
      [{ type: 'lora', r: 0, alpha: 8, targetModules: ALL }, /\.r\)/],
      [{ type: 'lora', r: 4, alpha: 8, targetModules: [] }, /targetModules/],
      [{ type: 'dora', r: 4, alpha: 8, dropout: 1, targetModules: ALL }, /dropout/]
    ]
    for (const [adapter, message] of bad)
      t.throws(() => new ModelTrainer(m, { adapter }), { code: 'ERR_INVALID_ARG', message }, `refused: ${JSON.stringify(adapter)}`)
    t.throws(
      () => native().trainerCreate(m.handle, { adapter: { type: 'lora', r: 0, alpha: 8, dropout: 0, seed: 1, targetModules: ['q_proj'] } }),
      { code: 'ERR_INVALID_ARG' },
      'rank 0 is refused natively'
    )
    const tr = new ModelTrainer(m, { adapter: { type: 'dora', r: 2, alpha: 2, targetModules: ['v_proj'] } })
    t.equal((await tr.parameters()).length, 3 * 2, 'only v_proj of each layer is adapted (A, B, m per layer)')
    await t.rejects(
      tr.setState({ tensors: [{ name: 'model.layers.0.self_attn.v_proj.weight', data: new Float32Array(1) }] }),
      { code: 'ERR_INVALID_ARG', message: /not a parameter/ },
      'the frozen base cannot be set through the trainer'
    )
    t.throws(() => native().trainerSetAdaptersEnabled(tr.handle, 'yes'), { code: 'ERR_INVALID_ARG' }, 'enabled must be a boolean')
    t.throws(() => native().trainerMergedWeight(tr.handle, -1), { code: 'ERR_INVALID_ARG' }, 'a negative module index is refused')
    t.equal(native().trainerMergedWeight(tr.handle, 2), undefined, 'past the last module: undefined')
    await t.rejects(
      tr.step([{ tokens: [1, v.vocab], weights: [0, 1] }]),
      { code: 'ERR_INVALID_ARG', message: /vocabulary/ },
      'an out-of-range token is refused'
    )
    t.ok(
      Number.isFinite((await tr.step([{ tokens: [1, 2, 3], weights: [0, 0.5, 0.5] }])).loss),
      'the trainer is usable after refused input'
    )
    tr.dispose()
    m.dispose()
  })
}

t.test('train() with a DoRA adapter on the CUDA trainer: the warm-start losses equal the cpu run', async (t) => {
  const config = (device) => ({
    device,
    adapter: { type: 'dora', r: 4, alpha: 8, dropout: 0.1, targetModules: ALL },
    warmStartSteps: 2,
    warmStartLearningRate: 5e-3,
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
    written: ['adapter/adapter_model.safetensors', 'the adapter folder is written'],
    gradNormTol: 1e-3,
    grpo: 'GRPO step (KL reference = adapters off)'
  })
})
