// train() end to end on the built-in tiny model and synthetic tasks: configuration errors before any work,
// an exact resume (after a checkpoint and after an AbortSignal), the run folder's files, trainer state
// round trips, and resident memory staying flat over 200 steps.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require } from './helpers.mjs'

const { train, ModelTrainer, loadModel, initModel, readMetrics } = require('../dist/cjs/index.js')
const { loadAdapter } = require('../dist/cjs/train/checkpoint.js')
const { tensorToFloat32 } = require('../dist/cjs/safetensors.js')
const { DECODER_PROJECTIONS: ALL } = require('../dist/cjs/model/projections.js')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-train-run-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

// Small enough for CI: 3 SFT warm-start steps, then GRPO with 2 prompts x 4 samples of up to 24 tokens.
const small = (extra = {}) => ({
  warmStartSteps: 3,
  warmStartLearningRate: 2e-3,
  steps: 4,
  warmupSteps: 1,
  promptsPerStep: 2,
  samplesPerPrompt: 4,
  maxCompletionTokens: 24,
  checkpointEvery: 2,
  klCoef: 0.001, // exercises the reference forward (base weights swapped in)
  synthetic: { seed: 3, train: 40, heldOut: 4 },
  ...extra
})

const bytes = (file) => fs.readFileSync(file)
const metricsWithoutTime = (dir) =>
  readMetrics(path.join(dir, 'metrics.jsonl')).records.map((r) => {
    const { time, tokensPerSecond, phaseSeconds, stepSeconds, ...rest } = r
    return rest
  })

t.test('configuration errors name the field and come before any work', async (t) => {
  const dir = path.join(tmp, 'bad')
  await t.rejects(train({ learningRate: -1 }, { runDir: dir }), { code: 'ERR_CONFIG', message: /config\.learningRate/ })
  await t.rejects(train({ lerningRate: 1e-3 }, { runDir: dir }), { code: 'ERR_CONFIG', message: /learningRate/ })
  await t.rejects(train({ adapter: { type: 'dora', targetModules: ['qkv_proj'] } }, { runDir: dir }), {
    code: 'ERR_CONFIG',
    message: /config\.adapter\.targetModules/
  })
  await t.rejects(train({ model: path.join(tmp, 'no-such-model') }, { runDir: dir }), { code: 'ERR_CONFIG', message: /config\.model/ })
  await t.rejects(train(undefined, { resume: path.join(tmp, 'not-a-run') }), { code: 'ERR_CONFIG', message: /config\.json/ })
  t.notOk(fs.existsSync(dir), 'nothing was written')
})

t.test('a run writes its folder; resuming from a checkpoint reproduces the uninterrupted run exactly', async (t) => {
  const full = path.join(tmp, 'full')
  const events = []
  const r = await train(small({ evalEvery: 2 }), { runDir: full, onEvent: (e) => events.push(e) })
  t.equal(r.summary.steps, 7)
  for (const f of [
    'config.json',
    'summary.json',
    'metrics.jsonl',
    'report.html',
    'model/model.safetensors',
    'model/config.json',
    'model/tokenizer.json'
  ])
    t.ok(fs.existsSync(path.join(full, f)), f)
  const summary = JSON.parse(fs.readFileSync(path.join(full, 'summary.json'), 'utf8'))
  for (const k of ['before', 'after', 'afterWarmStart'])
    for (const f of ['formatRate', 'esStar', 'exactMatch']) t.type(summary[k][f], 'number', `${k}.${f}`)
  t.equal(summary.oldCode.exactMatch, 0, 'the old-code reference: never exact')
  t.ok(summary.oldCode.esStar > -1.5 && summary.oldCode.esStar <= 2, `the old-code reference ES* ${summary.oldCode.esStar}`)
  t.match(
    fs.readFileSync(path.join(full, 'report.html'), 'utf8'),
    /<th>old code unchanged<\/th><th>base model<\/th>/,
    'the report opens its table with it'
  )
  // held-out evaluations: before, every evalEvery (2) steps, after the warm start (step 3), after
  t.same(
    summary.evaluations.map((e) => [e.step, e.label]),
    [
      [0, 'before'],
      [2, 'periodic'],
      [3, 'after-warm-start'],
      [4, 'periodic'],
      [6, 'periodic'],
      [7, 'after']
    ]
  )
  t.same(summary.evaluations[0], {
    step: 0,
    label: 'before',
    formatRate: summary.before.formatRate,
    esStar: summary.before.esStar,
    exactMatch: summary.before.exactMatch
  })
  t.same(summary.evaluations[5].esStar, summary.after.esStar, 'the last point is the after score')
  t.same(
    events.filter((e) => e.type === 'eval').map((e) => e.step),
    [0, 2, 3, 4, 6, 7],
    'an eval event for each'
  )
  t.equal(summary.examples.length, 4, 'four held-out tasks side by side')
  for (const ex of summary.examples) {
    for (const k of ['before', 'afterWarmStart', 'after']) t.type(ex.answers[k]?.completion, 'string', `task ${ex.task}: answer ${k}`)
    t.type(ex.oldCode, 'string')
    t.type(ex.target, 'string')
  }
  const html = fs.readFileSync(path.join(full, 'report.html'), 'utf8')
  t.match(html, /data-chart="held-out-rates"/, 'the report plots the held-out points')
  t.match(html, /<table class="examples"/, 'and shows the examples')
  t.match(html, /klCoef|KL to the reference/, 'and the KL')
  const records = readMetrics(path.join(full, 'metrics.jsonl')).records
  t.same(
    records.map((x) => x.step),
    [1, 2, 3, 4, 5, 6, 7]
  )
  t.same(
    records.map((x) => x.stage),
    ['warm-start', 'warm-start', 'warm-start', 'grpo', 'grpo', 'grpo', 'grpo']
  )
  for (const x of records.slice(3)) {
    for (const k of [
      'rewardMean',
      'rewardStd',
      'formatRate',
      'esStar',
      'kl',
      'clipFraction',
      'entropy',
      'responseLength',
      'tokensPerSecond',
      'loss',
      'gradNorm'
    ])
      t.ok(Number.isFinite(x[k]), `step ${x.step} ${k} = ${x[k]}`)
    for (const p of ['generation', 'reward', 'logprobs', 'backward', 'optimizer']) t.ok(x.phaseSeconds[p] >= 0, `phase ${p}`)
  }
  t.ok(
    events.some((e) => e.type === 'checkpoint' && e.step === 2),
    'checkpoint event at step 2'
  )
  t.ok(events.filter((e) => e.type === 'step').length === 7)

  // The same run stopped after step 5 (checkpoints at 2, 4 and 5), then resumed.
  const split = path.join(tmp, 'split')
  const first = await train(small({ evalEvery: 2 }), { runDir: split, stopAfterStep: 5 })
  t.equal(first.summary.steps, 5)
  const resumed = await train(undefined, { resume: split })
  t.equal(resumed.summary.steps, 7)
  t.ok(
    bytes(path.join(full, 'model/model.safetensors')).equals(bytes(path.join(split, 'model/model.safetensors'))),
    'trained weights are bit-identical'
  )
  t.same(metricsWithoutTime(split), metricsWithoutTime(full), 'metrics.jsonl continues exactly (rewards, losses, KL, clip fractions)')
  t.same(resumed.summary.after, r.summary.after, 'held-out scores after training are equal')
  t.same(resumed.summary.before, r.summary.before, 'the before scores come back from the checkpoint')
  t.same(resumed.summary.evaluations, r.summary.evaluations, 'so do the evaluations over the run')
  t.same(resumed.summary.examples, r.summary.examples, 'and the examples (the base answers come from the checkpoint)')
})

t.test('an AbortSignal stops the run with a checkpoint that resumes to the same result', async (t) => {
  const full = path.join(tmp, 'full')
  const dir = path.join(tmp, 'aborted')
  const controller = new AbortController()
  const err = await train(small({ checkpointEvery: 0 }), {
    runDir: dir,
    signal: controller.signal,
    onEvent: (e) => {
      if (e.type === 'step' && e.step === 4) controller.abort()
    }
  }).catch((e) => e)
  t.equal(err.code, 'ABORT_ERR')
  t.match(err.checkpoint, /step-4$/, 'checkpoint of the last finished step')
  t.notOk(fs.existsSync(path.join(dir, 'summary.json')), 'no summary for an unfinished run')
  // checkpointEvery differs from the full run, so compare the weights only (the config hash pins resume to this run).
  const resumed = await train(undefined, { resume: dir })
  t.equal(resumed.summary.steps, 7)
  t.ok(
    bytes(path.join(full, 'model/model.safetensors')).equals(bytes(path.join(dir, 'model/model.safetensors'))),
    'same weights as the uninterrupted run'
  )
})

t.test('a DoRA run (dropout, KL against the adapters-off base) resumes exactly and exports PEFT + merged folders', async (t) => {
  const dora = (extra = {}) =>
    small({ adapter: { type: 'dora', r: 4, alpha: 8, dropout: 0.05, targetModules: ALL }, warmStartLearningRate: 1e-2, ...extra })
  const full = path.join(tmp, 'dora-full')
  const r = await train(dora(), { runDir: full })
  t.equal(r.summary.steps, 7)
  t.equal(r.summary.adapterDir, path.join(full, 'adapter'))
  for (const f of ['adapter/adapter_config.json', 'adapter/adapter_model.safetensors', 'model/model.safetensors', 'model/config.json'])
    t.ok(fs.existsSync(path.join(full, f)), f)
  const records = readMetrics(path.join(full, 'metrics.jsonl')).records
  t.ok(
    records.slice(3).every((x) => Number.isFinite(x.kl)),
    'KL against the adapters-off base is reported'
  )
  t.ok(
    records.slice(3).some((x) => x.kl !== 0),
    'and is not identically zero once the adapter moved'
  )

  const split = path.join(tmp, 'dora-split')
  await train(dora(), { runDir: split, stopAfterStep: 5 })
  await train(undefined, { resume: split })
  t.ok(
    bytes(path.join(full, 'adapter/adapter_model.safetensors')).equals(bytes(path.join(split, 'adapter/adapter_model.safetensors'))),
    'resumed adapter weights are bit-identical (dropout masks replayed)'
  )
  t.same(metricsWithoutTime(split), metricsWithoutTime(full), 'metrics continue exactly')

  // The PEFT folder, put back on the base through our trainer, gives the logits of the exported merged folder.
  const { spec, tensors } = loadAdapter(path.join(full, 'adapter'))
  t.equal(spec.type, 'dora')
  t.equal(spec.r, 4)
  const base = await loadModel(path.join(full, 'base-model'), { maxBatch: 1, maxContext: 32 })
  const tr = new ModelTrainer(base, { adapter: { type: 'dora', r: 4, alpha: 8, targetModules: spec.targetModules } })
  const names = (await tr.parameters()).map((p) => p.name)
  t.same(Object.keys(tensors).sort(), [...names].sort(), "the PEFT file holds exactly the trainer's adapter tensors")
  await tr.setState({ tensors: names.map((name) => ({ name, data: tensorToFloat32(tensors[name]) })) })
  const merged = await loadModel(path.join(full, 'model'), { maxBatch: 1, maxContext: 32 })
  const ids = [[3, 17, 42, 99, 7, 250, 1, 64]]
  const a = (await base.logits(ids))[0]
  const b = (await merged.logits(ids))[0]
  let err = 0
  let mag = 0
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]))
    mag = Math.max(mag, Math.abs(b[i]))
  }
  t.ok(
    err <= 1e-4 * mag,
    `merged folder logits equal base + adapter (max abs err ${err.toExponential(2)}, |logit| up to ${mag.toFixed(2)})`
  )
  await tr.setAdaptersEnabled(false)
  const c = (await base.logits(ids))[0]
  t.ok(
    c.some((x, i) => Math.abs(x - b[i]) > 1e-3),
    'and the adapter changed the model'
  )
  tr.dispose()
  base.dispose()
  merged.dispose()
})

t.test('trainer state round-trips and is checked before anything changes', async (t) => {
  const dir = path.join(tmp, 'state-model')
  initModel({ preset: 'tiny', arch: 'qwen2', out: dir, seed: 5 })
  const model = await loadModel(dir)
  const trainer = new ModelTrainer(model)
  t.teardown(() => {
    trainer.dispose()
    model.dispose()
  })
  const tokens = [1, 5, 9, 13, 17, 21]
  const weights = [0, 0.2, 0.2, 0.2, 0.2, 0.2]
  const before = await trainer.state()
  await trainer.step([{ tokens, weights }])
  await trainer.applyAdamW({ lr: 1e-2 })
  const after = await trainer.state()
  t.equal(after.stepsTaken, 1)
  t.notOk(Buffer.from(after.tensors[1].data.buffer).equals(Buffer.from(before.tensors[1].data.buffer)), 'the update changed the weights')
  const probe = async () => (await trainer.forward([tokens]))[0]
  const lpAfter = await probe()
  // Back to the initial state: the forward (through the re-packed inference weights too) matches again.
  await trainer.setState({
    stepsTaken: 0,
    tensors: before.tensors.map((x) => ({ name: x.name, data: x.data, expAvg: x.expAvg, expAvgSq: x.expAvgSq }))
  })
  const lpBefore = await probe()
  t.notSame(Array.from(lpBefore), Array.from(lpAfter))
  const logits = await model.logits([tokens])
  t.ok(Number.isFinite(logits[0][0]))
  await trainer.setState({
    stepsTaken: 1,
    tensors: after.tensors.map((x) => ({ name: x.name, data: x.data, expAvg: x.expAvg, expAvgSq: x.expAvgSq }))
  })
  t.same(Array.from(await probe()), Array.from(lpAfter), 'restoring the state restores the log-probs exactly')
  const s = await trainer.state()
  t.equal(s.stepsTaken, 1)
  // Bad input: a wrong size or name throws and changes nothing.
  const name = after.tensors[1].name
  t.throws(
    () =>
      require('../dist/cjs/native.js')
        .native()
        .trainerSetState(trainer.handle ?? null, {}),
    { code: 'ERR_INVALID_ARG' }
  )
  await t.rejects(
    trainer.setState({
      tensors: [
        { name: after.tensors[0].name, data: after.tensors[0].data },
        { name, data: new Float32Array(3) }
      ]
    }),
    { code: 'ERR_INVALID_ARG', message: new RegExp(`${name.replace(/\./g, '\\.')} must hold`) }
  )
  await t.rejects(trainer.setState({ tensors: [{ name: 'model.no_such.weight', data: new Float32Array(3) }] }), {
    code: 'ERR_INVALID_ARG',
    message: /not a parameter/
  })
  await t.rejects(trainer.setState({ stepsTaken: -1, tensors: [] }), { code: 'ERR_INVALID_ARG', message: /stepsTaken/ })
  t.same(Array.from(await probe()), Array.from(lpAfter), 'failed calls left the weights alone')
})

t.test('resident memory stays flat over 200 steps', async (t) => {
  const dir = path.join(tmp, 'rss')
  const rss = []
  await train(
    small({
      warmStartSteps: 100,
      steps: 100,
      promptsPerStep: 2,
      samplesPerPrompt: 2,
      maxCompletionTokens: 8,
      checkpointEvery: 50,
      keepCheckpoints: 1,
      warmupSteps: 2,
      synthetic: { seed: 4, train: 40, heldOut: 2 }
    }),
    {
      runDir: dir,
      onEvent: (e) => {
        if (e.type === 'step') rss.push(process.memoryUsage().rss)
      }
    }
  )
  t.equal(rss.length, 200)
  // After a warm-up of 50 steps (allocator pools, JIT), growth over the next 150 must stay under 24 MiB.
  const warm = Math.max(...rss.slice(40, 60))
  const end = Math.max(...rss.slice(180))
  t.comment(`rss at step 50: ${(warm / 2 ** 20).toFixed(1)} MiB, at step 200: ${(end / 2 ** 20).toFixed(1)} MiB`)
  t.ok(end - warm < 24 * 2 ** 20, `grew ${((end - warm) / 2 ** 20).toFixed(1)} MiB`)
})

t.test('the trainer runs its host-array kernels on the CPU whatever GPU is visible', async (t) => {
  // policyLoss and grpoAdvantages take and return host arrays; with device 'auto' they ran on a GPU where one was
  // visible, so on a one-GPU machine mpirun's rank 1 (CUDA_VISIBLE_DEVICES=1: none) rounded the KL metric
  // differently from rank 0 (seen on an H200). The trainer must name the CPU in every call.
  const loss = require('../dist/cjs/rl/loss.js')
  const seen = { policyLoss: [], grpoAdvantages: [] }
  const orig = { policyLoss: loss.policyLoss, grpoAdvantages: loss.grpoAdvantages }
  loss.policyLoss = (inputs, options) => {
    seen.policyLoss.push(options?.device)
    return orig.policyLoss(inputs, options)
  }
  loss.grpoAdvantages = (rewards, n, options) => {
    seen.grpoAdvantages.push(options?.device)
    return orig.grpoAdvantages(rewards, n, options)
  }
  try {
    await train(small({ warmStartSteps: 0, steps: 2, checkpointEvery: 0 }), { runDir: path.join(tmp, 'devices') })
  } finally {
    Object.assign(loss, orig)
  }
  for (const [name, devices] of Object.entries(seen)) {
    t.ok(devices.length > 0, `${name} was called (${devices.length} times)`)
    t.ok(
      devices.every((d) => d === 'cpu'),
      `${name}: device ${JSON.stringify([...new Set(devices)])}`
    )
  }
})
