// LoRA / DoRA adapters inside the model (src/ops/adapter_linear.cpp, src/model/train_step.cpp): the trainer's fast
// adapted linear against the plain single-layer reference (src/train/adapters.cpp), every adapter gradient of a whole
// model against torch autograd through test/reference/transformer.py with PEFT's layers (float64), and the
// trainer's behaviour: a fresh adapter changes nothing, the frozen base gets no gradient, generation runs the
// merged weights, adapters off give the base (the KL reference), dropout streams, the loss falls, bad options.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { execFileSync } from 'child_process'
import { require, rng, maxRelError, oddSizes, root, randomTrainBatch, logSoftmaxAt, randomAdapterTensors } from './helpers.mjs'
import { torchUnavailable } from './train-torch.mjs'

const { loadModel, initModel, ModelTrainer } = require('../dist/cjs/index.js')
const { native } = require('../dist/cjs/native.js')
const { adapterForward, adapterBackward, doraWeightNorm, mergeAdapter } = require('../dist/cjs/train/adapters.js')
const { writeSafetensors } = require('../dist/cjs/safetensors.js')

const addon = native()
const TORCH_PYTHON = process.env.RECODE_TORCH_PYTHON || '/usr/bin/python3'
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-train-lora-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const { DECODER_PROJECTIONS: ALL } = require('../dist/cjs/model/projections.js')

// ---- the fast adapted linear against the plain reference ---------------------------------------------------

t.test('fast adapted linear (forward, backward, DoRA norm, merge) equals the plain reference', async (t) => {
  const r = rng(t)
  const shapes = oddSizes.map((rows, i) => ({ rows, in: [17, 33, 24, 9][i], out: [13, 17, 31, 5][i], rank: [1, 4, 8, 2][i] }))
  for (const dims of shapes) {
    for (const dora of [false, true]) {
      for (const dropout of [0, 0.2]) {
        const rand = (n, s = 1) => Float32Array.from({ length: n }, () => r.normal() * s)
        const layer = {
          weight: rand(dims.out * dims.in, 1 / Math.sqrt(dims.in)),
          bias: rand(dims.out, 0.1),
          loraA: rand(dims.rank * dims.in, 1 / Math.sqrt(dims.in)),
          loraB: rand(dims.out * dims.rank, 0.3),
          scaling: 2,
          dropout,
          seed: r.int(0, 2 ** 31),
          offset: r.int(0, 1e6)
        }
        if (dora) layer.magnitude = Float32Array.from({ length: dims.out }, () => 0.5 + r.next())
        const x = rand(dims.rows * dims.in)
        const dy = rand(dims.rows * dims.out)
        const ref = adapterForward(x, dims, layer)
        const refGrads = adapterBackward(x, dy, dims, layer, ref.saved)
        const got = addon.adapterLinear(x, dy, dims, layer)
        const label = `${dora ? 'DoRA' : 'LoRA'} p=${dropout} ${dims.rows}x${dims.in}->${dims.out} r=${dims.rank}`
        const check = (name, a, b) => {
          // floored at 1% of the largest reference value: fp32 GEMM sums (entries near zero carry cancellation)
          const floor = 1e-2 * Math.max(...Array.from(b, Math.abs), 1e-30)
          const e = maxRelError(a, b, floor)
          if (!(e < 1e-4)) t.fail(`${label}: ${name} rel err ${e}`)
          return e
        }
        let worst = 0
        worst = Math.max(worst, check('y', got.y, ref.y))
        worst = Math.max(worst, check('dx', got.dx, refGrads.input))
        worst = Math.max(worst, check('dA', got.loraA, refGrads.loraA))
        worst = Math.max(worst, check('dB', got.loraB, refGrads.loraB))
        if (dora) {
          worst = Math.max(worst, check('dm', got.magnitude, refGrads.magnitude))
          worst = Math.max(worst, check('weight norm', got.weightNorm, doraWeightNorm(dims, layer)))
        }
        worst = Math.max(worst, check('merged', got.merged, mergeAdapter(dims, layer)))
        t.ok(worst < 1e-4, `${label}: every output within 1e-4 of the reference (worst ${worst.toExponential(2)})`)
      }
    }
  }
})

// ---- whole models ------------------------------------------------------------------------------------------

const variants = [
  { name: 'qwen2 (qkv bias, untied, GQA 4:2)', opts: { preset: 'tiny', arch: 'qwen2' } },
  { name: 'qwen3 (q/k norm, tied embeddings)', opts: { preset: 'tiny', arch: 'qwen3', tieWordEmbeddings: true } },
  { name: 'llama (MQA 4:1, untied)', opts: { preset: 'tiny', arch: 'llama', kvHeads: 1 } }
]
variants.forEach((v, i) => {
  v.dir = path.join(tmp, `m${i}`)
  initModel({ ...v.opts, out: v.dir, seed: 700 + i })
  const cfg = JSON.parse(fs.readFileSync(path.join(v.dir, 'config.json')))
  v.vocab = cfg.vocab_size
  v.layers = cfg.num_hidden_layers
})

/** Replaces every adapter tensor with random values (B non-zero, m near the row norms), so gradients of A see B. */
async function randomizeAdapters(r, tr) {
  const tensors = randomAdapterTensors(r, await tr.parameters())
  await tr.setState({ tensors: tensors.map(({ name, data }) => ({ name, data })) })
  return tensors
}

t.test("adapter gradients of whole models equal torch autograd through PEFT's layers", { skip: torchUnavailable() }, async (t) => {
  const r = rng(t)
  const cases = []
  for (const [i, v] of variants.entries()) {
    for (const [type, targets] of [
      ['lora', ALL],
      ['dora', ALL],
      ['dora', ['q_proj', 'v_proj', 'down_proj']]
    ]) {
      const m = await loadModel(v.dir, { device: 'cpu', maxBatch: 4, maxContext: 64 })
      const tr = new ModelTrainer(m, { adapter: { type, r: 4, alpha: 8, targetModules: targets, seed: r.int(0, 1e6) } })
      const tensors = await randomizeAdapters(r, tr)
      const batch = randomTrainBatch(r, v.vocab, [1, 9, 17, 30])
      const res = await tr.step(batch)
      const grads = await tr.gradients()
      const file = path.join(tmp, `adapter-${i}-${cases.length}.safetensors`)
      writeSafetensors(file, Object.fromEntries(tensors.map((x) => [x.name, { dtype: 'F32', shape: x.shape, data: x.data }])))
      cases.push({
        label: `${v.name}, ${type} on ${targets.join(',')}`,
        res,
        grads,
        targets,
        layers: v.layers,
        job: {
          dir: v.dir,
          ids: batch.map((s) => s.tokens),
          weights: batch.map((s) => s.weights),
          names: grads.map((g) => g.name),
          out: path.join(tmp, `ref-${cases.length}.f64`),
          adapter: { file, type, scaling: 2 }
        }
      })
      tr.dispose()
      m.dispose()
    }
  }
  execFileSync(TORCH_PYTHON, [path.join(root, 'test', 'reference', 'train_step.py')], {
    input: JSON.stringify(cases.map((c) => c.job)),
    maxBuffer: 1 << 26
  })
  for (const c of cases) {
    const ref = new Float64Array(fs.readFileSync(c.job.out).buffer.slice(0))
    let o = 0
    const refLoss = ref[o++]
    t.ok(
      Math.abs(c.res.loss - refLoss) <= 1e-4 * Math.max(1, Math.abs(refLoss)),
      `${c.label}: loss ${c.res.loss.toFixed(6)} vs torch ${refLoss.toFixed(6)}`
    )
    let lpErr = 0
    for (const [s, ids] of c.job.ids.entries())
      for (let j = 0; j < ids.length; j++) lpErr = Math.max(lpErr, Math.abs(c.res.logp[s][j] - ref[o++]))
    t.ok(lpErr < 1e-4, `${c.label}: logp vs torch max abs err ${lpErr.toExponential(2)}`)
    const perModule = c.job.adapter.type === 'dora' ? 3 : 2
    t.equal(c.grads.length, perModule * c.targets.length * c.layers, `${c.label}: only adapter tensors are trainable (${c.grads.length})`)
    let worst = 0
    let worstName = ''
    for (const g of c.grads) {
      const n = g.grad.length
      const refG = ref.subarray(o, o + n)
      o += n
      let mag = 0
      for (const x of refG) mag = Math.max(mag, Math.abs(x))
      if (mag === 0) {
        t.fail(`${c.label}: torch gradient of ${g.name} is zero: the test would not see an error`)
        continue
      }
      const e = maxRelError(g.grad, refG, 1e-2 * mag)
      if (e > worst) {
        worst = e
        worstName = g.name
      }
    }
    t.equal(o, ref.length, `${c.label}: the reference holds exactly the ${c.grads.length} adapter gradients`)
    t.ok(worst < 1e-3, `${c.label}: every adapter gradient within 1e-3 of torch (worst ${worst.toExponential(2)} in ${worstName})`)
  }
})

t.test('a fresh adapter leaves the model unchanged; merged generation, adapters off, loss falls', async (t) => {
  const r = rng(t)
  const v = variants[0]
  const m = await loadModel(v.dir, { device: 'cpu', maxBatch: 4, maxContext: 64 })
  const seqs = Array.from({ length: 3 }, () => Array.from({ length: 20 }, () => r.int(0, v.vocab - 1)))
  const baseLogits = await m.logits(seqs)
  const full = new ModelTrainer(m)
  const baseLogp = await full.forward(seqs)
  full.dispose()
  for (const type of ['lora', 'dora']) {
    const tr = new ModelTrainer(m, { adapter: { type, r: 8, alpha: 16, targetModules: ALL, seed: 11 } })
    t.same(
      (await tr.forward(seqs)).map((x) => Array.from(x)),
      baseLogp.map((x) => Array.from(x)),
      `${type}: a fresh adapter (B = 0${type === 'dora' ? ', m = ||W||' : ''}) gives exactly the base logp`
    )
    const params = await tr.parameters()
    t.ok(
      params.every(
        (p) =>
          /\.(lora_A\.weight|lora_B\.weight|lora_magnitude_vector)$/.test(p.name) && p.name.startsWith('base_model.model.model.layers.')
      ),
      `${type}: trainable tensors carry PEFT's names`
    )
    t.ok(
      params.filter((p) => p.name.endsWith('lora_B.weight')).every((p) => p.data.every((x) => x === 0)),
      `${type}: B starts at 0`
    )
    const a = params.find((p) => p.name.endsWith('q_proj.lora_A.weight'))
    const bound = 1 / Math.sqrt(a.shape[1])
    t.ok(
      a.data.every((x) => Math.abs(x) <= bound) && a.data.some((x) => Math.abs(x) > bound / 2),
      `${type}: A drawn from U(-1/sqrt(in), 1/sqrt(in))`
    )
    const again = new ModelTrainer(m, { adapter: { type, r: 8, alpha: 16, targetModules: ALL, seed: 11 } })
    t.same(Array.from((await again.parameters())[0].data), Array.from(params[0].data), `${type}: the same seed draws the same A`)
    again.dispose()

    const N = seqs.reduce((s, x) => s + x.length - 1, 0)
    const batch = seqs.map((tokens) => ({ tokens, weights: tokens.map((_, j) => (j === 0 ? 0 : 1 / N)) }))
    const losses = []
    for (let step = 0; step < 25; step++) {
      losses.push((await tr.step(batch)).loss)
      await tr.applyAdamW({ lr: 1e-2, maxGradNorm: 1 })
    }
    const res = await tr.step(batch)
    await tr.zeroGrad()
    t.ok(res.loss < 0.5 * losses[0], `${type}: loss ${losses[0].toFixed(3)} -> ${res.loss.toFixed(3)} on a fixed batch`)
    const logits = await m.logits(seqs)
    let err = 0
    for (const [s, tokens] of seqs.entries())
      for (let j = 1; j < tokens.length; j++)
        err = Math.max(err, Math.abs(res.logp[s][j] - logSoftmaxAt(logits[s], v.vocab, j - 1, tokens[j])))
    t.ok(err < 1e-4, `${type}: inference (merged weights) gives the trainer's logp (max abs err ${err.toExponential(2)})`)

    await tr.setAdaptersEnabled(false)
    t.same(
      (await tr.forward(seqs)).map((x) => Array.from(x)),
      baseLogp.map((x) => Array.from(x)),
      `${type}: adapters off: the trainer's forward is the base model exactly`
    )
    const offLogits = await m.logits(seqs)
    t.ok(
      offLogits.every((l, s) => l.every((x, k) => x === baseLogits[s][k])),
      `${type}: adapters off: generation runs the base weights`
    )
    await tr.setAdaptersEnabled(true)
    const onLogits = await m.logits(seqs)
    t.ok(
      onLogits.every((l, s) => l.every((x, k) => x === logits[s][k])),
      `${type}: adapters on again: back to the merged weights`
    )

    const merged = await tr.mergedWeights()
    t.equal(merged.length, ALL.length * 3, `${type}: one merged weight per adapted module`)
    t.match(merged[0].name, /^model\.layers\.0\.self_attn\.q_proj\.weight$/, 'merged weights carry the Hugging Face names')
    tr.dispose()
  }
  m.dispose()
})

t.test('adapter dropout: one mask per forward, replayed by the backward, fixed by (seed, update, forward)', async (t) => {
  const r = rng(t)
  const v = variants[1]
  const seqs = [Array.from({ length: 24 }, () => r.int(0, v.vocab - 1))]
  const adapter = { type: 'dora', r: 4, alpha: 8, dropout: 0.3, targetModules: ALL, seed: 5 }
  let tensors
  const run = async () => {
    const m = await loadModel(v.dir, { device: 'cpu', maxBatch: 1, maxContext: 64 })
    const tr = new ModelTrainer(m, { adapter })
    tensors ??= randomAdapterTensors(r, await tr.parameters())
    await tr.setState({ tensors: tensors.map(({ name, data }) => ({ name, data })) })
    const first = await tr.forward(seqs)
    const second = await tr.forward(seqs)
    await tr.backward([seqs[0].map((_, j) => (j === 0 ? 0 : 0.1))])
    const g = await tr.gradients()
    await tr.applyAdamW({ lr: 1e-3 })
    const third = await tr.forward(seqs)
    await tr.setAdaptersEnabled(false)
    const off = await tr.forward(seqs)
    tr.dispose()
    m.dispose()
    return { first, second, third, off, g }
  }
  const a = await run()
  const b = await run()
  t.notSame(Array.from(a.first[0]), Array.from(a.second[0]), 'two forwards in one update draw different masks')
  t.notSame(Array.from(a.third[0]), Array.from(a.first[0]), 'the next update draws new masks')
  t.same(
    [a.first, a.second, a.third].map((x) => Array.from(x[0])),
    [b.first, b.second, b.third].map((x) => Array.from(x[0])),
    'the same seed replays the same masks'
  )
  t.ok(
    a.g.every((x, k) => x.grad.every((y, j) => y === b.g[k].grad[j])),
    'and the same gradients'
  )
  const m = await loadModel(v.dir, { device: 'cpu', maxBatch: 1, maxContext: 64 })
  const full = new ModelTrainer(m)
  t.same(Array.from(a.off[0]), Array.from((await full.forward(seqs))[0]), 'adapters off: no dropout, the base model')
  full.dispose()
  m.dispose()
})

t.test('adapter options are checked at the boundary', async (t) => {
  const v = variants[0]
  const m = await loadModel(v.dir, { device: 'cpu', maxBatch: 1, maxContext: 16 })
  const bad = [
    [{ type: 'qlora', r: 4, alpha: 8, targetModules: ALL }, /type/],
    [{ type: 'lora', r: 0, alpha: 8, targetModules: ALL }, /\.r\)/],
    [{ type: 'lora', r: 2.5, alpha: 8, targetModules: ALL }, /\.r\)/],
    [{ type: 'lora', r: 4, alpha: 8, targetModules: [] }, /targetModules/],
    [{ type: 'lora', r: 4, alpha: 8, targetModules: ['qkv_proj'] }, /targetModules\[0\]/],
    [{ type: 'dora', r: 4, alpha: 8, dropout: 1, targetModules: ALL }, /dropout/],
    [{ type: 'dora', r: 4, alpha: -1, targetModules: ALL }, /alpha/]
  ]
  for (const [adapter, message] of bad) {
    t.throws(() => new ModelTrainer(m, { adapter }), { code: 'ERR_INVALID_ARG', message }, `refused: ${JSON.stringify(adapter)}`)
  }
  const tr = new ModelTrainer(m, { adapter: { type: 'lora', r: 2, alpha: 2, targetModules: ['v_proj'] } })
  t.equal((await tr.parameters()).length, 2 * v.layers, 'only v_proj of each layer is adapted')
  await t.rejects(
    tr.setState({ tensors: [{ name: 'model.layers.0.self_attn.v_proj.weight', data: new Float32Array(1) }] }),
    { code: 'ERR_INVALID_ARG', message: /not a parameter/ },
    'the frozen base cannot be set through the trainer'
  )
  t.throws(() => native().trainerSetAdaptersEnabled(tr.handle, 'yes'), { code: 'ERR_INVALID_ARG' }, 'enabled must be a boolean')
  t.throws(() => native().trainerMergedWeight(tr.handle, -1), { code: 'ERR_INVALID_ARG' }, 'a negative module index is refused')
  t.equal(native().trainerMergedWeight(tr.handle, v.layers), undefined, 'past the last module: undefined')
  tr.dispose()
  const full = new ModelTrainer(m)
  t.same(await full.mergedWeights(), [], 'full fine-tuning has no adapters to merge')
  await full.setAdaptersEnabled(false)
  full.dispose()
  m.dispose()
})

t.test('saveAdapter / loadAdapter: a PEFT folder round trip, and mismatches named before anything changes', async (t) => {
  const r = rng(t)
  const v = variants[2]
  const m = await loadModel(v.dir, { device: 'cpu', maxBatch: 1, maxContext: 32 })
  const adapter = { type: 'dora', r: 4, alpha: 8, dropout: 0.05, targetModules: ['q_proj', 'v_proj', 'up_proj'], seed: 9 }
  const a = new ModelTrainer(m, { adapter })
  const tensors = await randomizeAdapters(r, a)
  const dir = path.join(tmp, 'peft-roundtrip')
  await a.saveAdapter(dir, { baseModel: v.dir })
  t.ok(
    fs.existsSync(path.join(dir, 'adapter_config.json')) && fs.existsSync(path.join(dir, 'adapter_model.safetensors')),
    'PEFT files written'
  )
  t.notOk(fs.existsSync(`${dir}.tmp`), 'no temporary folder left')
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'))
  t.same(
    [cfg.peft_type, cfg.r, cfg.lora_alpha, cfg.use_dora, cfg.lora_dropout, cfg.base_model_name_or_path],
    ['LORA', 4, 8, true, 0.05, v.dir],
    'adapter_config.json fields'
  )
  a.dispose()

  const b = new ModelTrainer(m, { adapter: { ...adapter, seed: 10 } })
  await b.loadAdapter(dir)
  const loaded = await b.parameters()
  t.ok(
    loaded.every((p, k) => p.name === tensors[k].name && p.data.every((x, j) => x === tensors[k].data[j])),
    'every adapter tensor comes back bit for bit'
  )
  b.dispose()

  const before = async (tr) => (await tr.parameters()).map((p) => Array.from(p.data))
  for (const [other, field] of [
    [{ ...adapter, r: 8 }, /\br is 4/],
    [{ ...adapter, alpha: 16 }, /lora_alpha/],
    [{ ...adapter, type: 'lora' }, /use_dora/],
    [{ ...adapter, targetModules: ['q_proj'] }, /target_modules/]
  ]) {
    const c = new ModelTrainer(m, { adapter: other })
    const p0 = await before(c)
    await t.rejects(c.loadAdapter(dir), { code: 'ERR_MODEL', message: field }, `a mismatch is named: ${field}`)
    t.same(await before(c), p0, 'and nothing changed')
    c.dispose()
  }
  const full = new ModelTrainer(m)
  await t.rejects(full.saveAdapter(dir), { code: 'ERR_INVALID_ARG' }, 'full fine-tuning has no adapter to save')
  full.dispose()
  m.dispose()
})
