// Training configuration: presets reproduce the paper's settings, every field is checked with an error that
// names it, unknown fields get a did-you-mean, JSON files give file-named errors; LR schedules match the
// transformers formulas at sample points.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { validateTrainConfig, trainPreset, loadTrainConfigFile, configHash, didYouMean } from '../dist/cjs/train/config/index.js'
import { learningRateAt, lrMultiplier, warmupStepsFor } from '../dist/cjs/train/schedule.js'
import { require } from './helpers.mjs'

const { initModel, loadModel, ModelTrainer } = require('../dist/cjs/index.js')

const noPaths = { checkPaths: false }

t.test('presets reproduce recode.md section 4', async (t) => {
  const g = trainPreset('grpo-paper')
  t.match(g, {
    algorithm: 'grpo',
    learningRate: 5e-5,
    schedule: 'cosine',
    warmupRatio: 0.03,
    warmupSteps: null,
    promptsPerStep: 8,
    samplesPerPrompt: 8,
    klCoef: 0.001,
    klEstimator: 'k3',
    maxPromptTokens: 2048,
    maxCompletionTokens: 1024,
    temperature: 1,
    clipEpsLow: 0.2,
    clipEpsHigh: 0.2,
    steps: 5000,
    advantageEps: 1e-4,
    adapter: { type: 'dora', r: 64, alpha: 64, dropout: 0.01 }
  })
  t.equal(warmupStepsFor(g.steps, g.warmupSteps, g.warmupRatio), 150, "ratio 0.03 of 5000 steps = the paper's 150 warmup steps")
  const d = trainPreset('dapo-paper')
  t.match(d, {
    algorithm: 'dapo',
    learningRate: 1e-6,
    warmupSteps: 10,
    weightDecay: 0.1,
    gradClip: 1,
    klCoef: 0,
    clipEpsLow: 0.2,
    clipEpsHigh: 0.28,
    dualClip: 10,
    lossAggregation: 'token-mean',
    dynamicSampling: true,
    maxGenerationBatches: 10,
    overlongBufferTokens: 0,
    promptsPerStep: 8,
    samplesPerPrompt: 8,
    temperature: 1,
    topP: 1,
    evalTopP: 0.7,
    advantageEps: 1e-6,
    adapter: { type: 'none' }
  })
  const tiny = validateTrainConfig({}, noPaths)
  t.equal(tiny.preset, 'tiny', 'the default preset is tiny')
  t.match(tiny, { model: 'tiny', data: 'synthetic', device: 'cpu' })
  t.throws(() => validateTrainConfig({ preset: 'grpo-paper' }, noPaths), { code: 'ERR_CONFIG', message: /config\.model must be set/ })
  const full = validateTrainConfig({ preset: 'dapo-paper', model: '/m', data: '/d.jsonl' }, noPaths)
  t.equal(full.learningRate, 1e-6)
  t.not(trainPreset('tiny'), trainPreset('tiny'), 'presets are fresh copies')
})

t.test('every field is checked and the error names it', async (t) => {
  const bad = {
    preset: 'huge',
    algorithm: 'ppo',
    model: '',
    data: 3,
    reward: 'bleu',
    promptsPerStep: 0,
    samplesPerPrompt: 2.5,
    maxPromptTokens: -1,
    maxCompletionTokens: 'many',
    temperature: 0,
    topP: 1.5,
    evalTemperature: -1,
    evalTopP: 0,
    evalEvery: -3,
    learningRate: -1,
    schedule: 'step',
    warmupSteps: -2,
    warmupRatio: 1,
    minLrRatio: 2,
    weightDecay: -0.1,
    adamBeta1: 1,
    adamBeta2: -0.5,
    adamEps: 0,
    gradClip: -1,
    gradAccumulation: 0,
    steps: 0,
    policyUpdatesPerBatch: 0,
    clipEpsLow: 0,
    clipEpsHigh: -1,
    dualClip: 0.5,
    klCoef: -1,
    klEstimator: 'k4',
    lossAggregation: 'sum',
    advantageEps: 0,
    advantageScaling: 'global',
    dynamicSampling: 'yes',
    maxGenerationBatches: 0,
    overlongBufferTokens: -1,
    overlongPenalty: -1,
    warmStartSteps: -1,
    checkpointEvery: 1.5,
    keepCheckpoints: 0,
    outputDir: '',
    seed: -1,
    device: 'tpu',
    computeDtype: 'fp8',
    activationRecomputation: 1,
    divergencePatience: -1
  }
  for (const [field, value] of Object.entries(bad)) {
    t.throws(
      () => validateTrainConfig({ [field]: value }, noPaths),
      { code: 'ERR_CONFIG', message: new RegExp(`^config\\.${field} `) },
      `${field} = ${JSON.stringify(value)}`
    )
  }
  t.throws(() => validateTrainConfig({ learningRate: -1 }, noPaths), {
    message: "config.learningRate must be a positive number no greater than 1000 (the optimizer's limit), got -1"
  })
  const adapterBad = { type: 'qlora', r: 0, alpha: -1, dropout: 1, targetModules: [] }
  for (const [field, value] of Object.entries(adapterBad)) {
    t.throws(
      () => validateTrainConfig({ adapter: { [field]: value } }, noPaths),
      { code: 'ERR_CONFIG', message: new RegExp(`^config\\.adapter\\.${field} `) },
      `adapter.${field}`
    )
  }
  t.throws(() => validateTrainConfig({ adapter: { targetModules: ['q_proj', 'q_proj'] } }, noPaths), { message: /duplicates/ })
  for (const [field, value] of Object.entries({ seed: 'x', train: 0, heldOut: -1 })) {
    t.throws(
      () => validateTrainConfig({ synthetic: { [field]: value } }, noPaths),
      { code: 'ERR_CONFIG', message: new RegExp(`^config\\.synthetic\\.${field} `) },
      `synthetic.${field}`
    )
  }
  t.throws(() => validateTrainConfig('x'), { code: 'ERR_CONFIG', message: /config must be an object/ })
  t.throws(() => validateTrainConfig({ adapter: 3 }, noPaths), { code: 'ERR_CONFIG', message: /config\.adapter must be an object/ })
})

t.test('values the optimizer, the sampler or the loss kernel would refuse later are refused up front, naming the field', async (t) => {
  const refused = {
    learningRate: 1e4,
    warmStartLearningRate: 2000,
    adamBeta1: 0.9999999999,
    adamBeta2: 1,
    adamEps: 2,
    weightDecay: 1e4,
    gradClip: Infinity,
    temperature: 1e-45,
    evalTemperature: 1e-40,
    topP: 0,
    evalTopP: 1.5,
    klCoef: 1e39,
    dualClip: 1e39,
    advantageEps: 2,
    overlongPenalty: 1e39,
    maxPromptTokens: 2 ** 21,
    maxCompletionTokens: 1e12,
    promptsPerStep: 1e12,
    samplesPerPrompt: 2.5,
    divergencePatience: 0.5,
    steps: -3,
    evalEvery: NaN,
    checkpointEvery: Infinity
  }
  for (const [field, value] of Object.entries(refused)) {
    t.throws(
      () => validateTrainConfig({ [field]: value }, noPaths),
      { code: 'ERR_CONFIG', message: new RegExp(`^config\\.${field} `) },
      `${field} = ${value}`
    )
  }
  for (const [field, value] of Object.entries({ alpha: 1e10, dropout: 0.995, r: 1e6 })) {
    t.throws(
      () => validateTrainConfig({ adapter: { [field]: value } }, noPaths),
      { code: 'ERR_CONFIG', message: new RegExp(`^config\\.adapter\\.${field} `) },
      `adapter.${field} = ${value}`
    )
  }
  t.equal(validateTrainConfig({}, noPaths).divergencePatience, 0, 'divergencePatience defaults to 0 (stop at the first non-finite step)')
  t.equal(
    configHash(validateTrainConfig({ divergencePatience: 3 }, noPaths)),
    configHash(validateTrainConfig({}, noPaths)),
    'and is not part of the configuration hash (a run may resume with another)'
  )

  // The limits are the native AdamW's: the largest accepted values step, one beyond is refused by both.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-train-config-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  initModel({ preset: 'tiny', arch: 'qwen2', out: dir, seed: 1 })
  const model = await loadModel(dir, { maxBatch: 1, maxContext: 16 })
  const trainer = new ModelTrainer(model)
  t.teardown(() => {
    trainer.dispose()
    model.dispose()
  })
  const max = { learningRate: 1000, adamBeta1: 0.999999999, adamBeta2: 0.999999999, adamEps: 1, weightDecay: 1000 }
  const c = validateTrainConfig(max, noPaths)
  await trainer.step([{ tokens: [1, 2, 3, 4], weights: [0, 1, 1, 1] }])
  const norm = await trainer.applyAdamW({
    lr: c.learningRate,
    beta1: c.adamBeta1,
    beta2: c.adamBeta2,
    eps: c.adamEps,
    weightDecay: c.weightDecay,
    maxGradNorm: c.gradClip
  })
  t.ok(Number.isFinite(norm), 'the optimizer takes the largest values the configuration accepts')
  const native = { learningRate: 'lr', adamBeta1: 'beta1', adamBeta2: 'beta2', adamEps: 'eps', weightDecay: 'weightDecay' }
  for (const [field, value] of Object.entries(max)) {
    const over = value < 1 ? (1 + value) / 2 + 5e-10 : value * 1.001
    t.throws(
      () => validateTrainConfig({ [field]: over }, noPaths),
      { code: 'ERR_CONFIG', message: new RegExp(`^config\\.${field} `) },
      `config refuses ${field} = ${over}`
    )
    await t.rejects(
      trainer.applyAdamW({ lr: 1e-3, [native[field]]: over }),
      { code: 'ERR_INVALID_ARG' },
      `and so does the optimizer (${native[field]})`
    )
  }
})

t.test('unknown fields are rejected with a did-you-mean', async (t) => {
  t.throws(() => validateTrainConfig({ learningrate: 1 }, noPaths), {
    code: 'ERR_CONFIG',
    message: /config\.learningrate is not a known field \(did you mean learningRate\?\)/
  })
  t.throws(() => validateTrainConfig({ learning_rate: 1 }, noPaths), { message: /did you mean learningRate\?/ })
  t.throws(() => validateTrainConfig({ sampelsPerPrompt: 1 }, noPaths), { message: /did you mean samplesPerPrompt\?/ })
  t.throws(() => validateTrainConfig({ adapter: { alpah: 1 } }, noPaths), {
    message: /config\.adapter\.alpah is not a known field \(did you mean adapter\.alpha\?\)/
  })
  t.throws(() => validateTrainConfig({ zzzzzzzz: 1 }, noPaths), { message: /^config\.zzzzzzzz is not a known field; known fields/ })
  t.equal(didYouMean('kl_coef', ['klCoef', 'seed']), 'klCoef')
})

t.test('cross-field rules', async (t) => {
  t.throws(() => validateTrainConfig({ warmupSteps: 3, warmupRatio: 0.1 }, noPaths), { message: /both set/ })
  const a = validateTrainConfig({ preset: 'dapo-paper', model: 'm', data: 'd', warmupRatio: 0.1 }, noPaths)
  t.equal(a.warmupSteps, null, "giving a ratio clears the preset's warmup steps")
  t.equal(a.warmupRatio, 0.1)
  t.throws(() => validateTrainConfig({ samplesPerPrompt: 1 }, noPaths), { message: /config\.samplesPerPrompt must be at least 2 for grpo/ })
  t.equal(validateTrainConfig({ algorithm: 'sft', samplesPerPrompt: 1 }, noPaths).samplesPerPrompt, 1, 'sft needs no group')
  t.throws(() => validateTrainConfig({ promptsPerStep: 6, gradAccumulation: 5 }, noPaths), {
    message: /config\.gradAccumulation must be a divisor/
  })
  t.equal(
    validateTrainConfig({ promptsPerStep: 2, samplesPerPrompt: 8, gradAccumulation: 4 }, noPaths).gradAccumulation,
    4,
    'RL micro-batches may be smaller than a group (16 sequences in 4 micro-batches of 4)'
  )
  t.throws(() => validateTrainConfig({ algorithm: 'sft', promptsPerStep: 6, gradAccumulation: 4 }, noPaths), {
    message: /config\.gradAccumulation must be a divisor of config\.promptsPerStep/
  })
  t.throws(() => validateTrainConfig({ algorithm: 'dapo', clipEpsLow: 0.3, clipEpsHigh: 0.2 }, noPaths), { message: /config\.clipEpsHigh/ })
  t.throws(() => validateTrainConfig({ algorithm: 'sft', dynamicSampling: true }, noPaths), { message: /config\.dynamicSampling/ })
  t.throws(() => validateTrainConfig({ overlongBufferTokens: 128 }, noPaths), { message: /config\.overlongBufferTokens must be smaller/ })
  t.throws(() => validateTrainConfig({ warmupSteps: 60 }, noPaths), { message: /config\.warmupSteps must be smaller than config\.steps/ })
  t.throws(() => validateTrainConfig({ computeDtype: 'bf16' }, noPaths), { message: /config\.computeDtype/ })
  t.throws(() => validateTrainConfig({ model: '/no/such/model/folder' }), {
    code: 'ERR_CONFIG',
    message: /config\.model .*no such directory/
  })
  t.throws(() => validateTrainConfig({ data: '/no/such/file.jsonl' }), { code: 'ERR_CONFIG', message: /config\.data .*no such file/ })
})

t.test('JSON files: file-named errors, relative paths against the file', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-config-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'train.json')
  fs.writeFileSync(file, '{\n  "steps": 10,\n  "learningRate": ,\n}\n')
  t.throws(() => loadTrainConfigFile(file), {
    code: 'ERR_CONFIG',
    message: new RegExp(`^${file.replace(/[.]/g, '\\.')}:3:\\d+: invalid JSON`)
  })
  fs.writeFileSync(file, JSON.stringify({ steps: 10, learningRate: -1 }))
  t.throws(() => loadTrainConfigFile(file), {
    message: `${file}: config.learningRate must be a positive number no greater than 1000 (the optimizer's limit), got -1`
  })
  fs.writeFileSync(file, '[1]')
  t.throws(() => loadTrainConfigFile(file), { message: /must be a JSON object/ })
  t.throws(() => loadTrainConfigFile(path.join(dir, 'missing.json')), { code: 'ERR_CONFIG', message: /missing\.json: cannot read/ })
  fs.writeFileSync(path.join(dir, 'tasks.jsonl'), '{}\n')
  fs.writeFileSync(file, JSON.stringify({ data: 'tasks.jsonl', outputDir: 'out', steps: 10 }))
  const c = loadTrainConfigFile(file, { seed: 3 })
  t.equal(c.data, path.join(dir, 'tasks.jsonl'), 'data resolved against the file')
  t.equal(c.outputDir, path.join(dir, 'out'))
  t.equal(c.seed, 3, 'overrides apply')
})

t.test('config hash: canonical, sensitive to training fields only', async (t) => {
  const a = validateTrainConfig({ learningRate: 1e-3, seed: 5 }, noPaths)
  const b = validateTrainConfig({ seed: 5, learningRate: 1e-3 }, noPaths)
  t.equal(configHash(a), configHash(b))
  t.not(configHash(a), configHash(validateTrainConfig({ learningRate: 2e-3, seed: 5 }, noPaths)))
  t.equal(configHash(a), configHash({ ...a, outputDir: '/elsewhere' }), 'moving the run does not change it')
})

t.test('schedules match the transformers formulas', async (t) => {
  const base = { learningRate: 2, totalSteps: 110, warmupSteps: 10 }
  const close = (a, b, msg) => t.ok(Math.abs(a - b) < 1e-12, `${msg}: ${a} vs ${b}`)
  for (const kind of ['constant', 'linear', 'cosine']) {
    close(learningRateAt({ ...base, kind }, 0), 0, `${kind} starts at 0 (first update of a warmup)`)
    close(learningRateAt({ ...base, kind }, 5), 1, `${kind} halfway through warmup`)
    close(learningRateAt({ ...base, kind }, 10), 2, `${kind} peak at the end of warmup`)
  }
  close(lrMultiplier({ ...base, kind: 'constant' }, 109), 1, 'constant stays')
  close(lrMultiplier({ ...base, kind: 'linear' }, 60), 0.5, 'linear: (110 - 60) / 100')
  close(lrMultiplier({ ...base, kind: 'linear' }, 110), 0, 'linear reaches 0')
  close(lrMultiplier({ ...base, kind: 'cosine' }, 35), 0.5 * (1 + Math.cos(Math.PI * 0.25)), 'cosine at progress 0.25')
  close(lrMultiplier({ ...base, kind: 'cosine' }, 60), 0.5, 'cosine at progress 0.5')
  close(lrMultiplier({ ...base, kind: 'cosine' }, 110), 0, 'cosine reaches 0')
  close(lrMultiplier({ ...base, kind: 'cosine', minLrRatio: 0.1 }, 110), 0.1, 'cosine floor')
  close(lrMultiplier({ ...base, kind: 'cosine', minLrRatio: 0.1 }, 60), 0.1 + 0.9 * 0.5, 'cosine with floor at the middle')
  close(lrMultiplier({ learningRate: 1, totalSteps: 5000, warmupRatio: 0.03, kind: 'cosine' }, 75), 0.5, 'ratio warmup: 75 / ceil(150)')
  close(lrMultiplier({ learningRate: 1, totalSteps: 10, kind: 'linear' }, 0), 1, 'no warmup: full rate at once')
  t.throws(() => lrMultiplier({ ...base, kind: 'cosine' }, -1), { code: 'ERR_INVALID_ARG' })
  t.throws(() => lrMultiplier({ ...base, kind: 'exp' }, 1), { code: 'ERR_INVALID_ARG' })
})

t.test('command-line flags become typed overrides', async (t) => {
  const { trainFlagsToConfig } = await import('../dist/cjs/train/config/index.js')
  const raw = trainFlagsToConfig([
    '--learning-rate',
    '1e-5',
    '--steps=20',
    '--algorithm',
    'dapo',
    '--adapter.r',
    '8',
    '--adapter.target-modules',
    'q_proj, v_proj',
    '--dynamic-sampling',
    '--no-activation-recomputation',
    '--dual-clip',
    'off',
    '--synthetic.seed',
    '9',
    '--model',
    'tiny',
    '--min-lr-ratio',
    '-0'
  ])
  t.same(raw, {
    learningRate: 1e-5,
    steps: 20,
    algorithm: 'dapo',
    adapter: { r: 8, targetModules: ['q_proj', 'v_proj'] },
    dynamicSampling: true,
    activationRecomputation: false,
    dualClip: null,
    synthetic: { seed: 9 },
    model: 'tiny',
    minLrRatio: -0
  })
  const c = validateTrainConfig(raw, noPaths)
  t.equal(c.learningRate, 1e-5)
  t.equal(c.adapter.r, 8)
  t.equal(c.adapter.alpha, 16, 'unset nested fields keep the preset value')
  t.throws(() => trainFlagsToConfig(['--learning-rat', '1']), {
    code: 'ERR_CONFIG',
    message: 'unknown option --learning-rat (did you mean --learning-rate?)'
  })
  t.throws(() => trainFlagsToConfig(['--steps']), { code: 'ERR_CONFIG', message: /--steps needs a value/ })
  t.throws(() => trainFlagsToConfig(['--steps', 'ten']), { code: 'ERR_CONFIG', message: /--steps takes a number/ })
  t.throws(() => trainFlagsToConfig(['--dynamic-sampling=maybe']), { code: 'ERR_CONFIG', message: /true or false/ })
  t.throws(() => trainFlagsToConfig(['--no-steps']), { code: 'ERR_CONFIG' })
  t.throws(() => trainFlagsToConfig(['steps']), { code: 'ERR_CONFIG', message: /unexpected argument/ })
  t.same(trainFlagsToConfig(['--warmup-steps', 'none', '--warmup-ratio', '0.1']), { warmupSteps: null, warmupRatio: 0.1 })
})

t.test('the reward names of the ablation (format + ES*, ES, EM*, EM, format alone) are accepted, others are not', async (t) => {
  const { trainFlagsToConfig } = await import('../dist/cjs/train/config/index.js')
  const { TRAINING_REWARDS } = require('../dist/cjs/index.js')
  for (const reward of ['es*', 'es', 'em*', 'em', 'format']) {
    t.equal(validateTrainConfig({ reward }).reward, reward, `reward '${reward}'`)
    t.equal(validateTrainConfig(trainFlagsToConfig(['--reward', reward])).reward, reward, `--reward ${reward}`)
    t.ok(TRAINING_REWARDS.includes(reward), `'${reward}' is one the trainer computes`)
  }
  t.throws(() => validateTrainConfig({ reward: 'es**' }), { code: 'ERR_CONFIG', message: /reward/ })
})
