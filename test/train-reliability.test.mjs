// What a training run guarantees when things go wrong (issue 11): a diverging run stops with ERR_DIVERGED naming
// the step and keeps its last good checkpoint (which resumes); config.divergencePatience; a model gone NaN inside
// the policy update is a divergence, a NaN reward an ERR_REWARD; a corrupt newest checkpoint falls back to the
// previous one with a message; a run that fails up-front checks leaves no folder; SIGTERM saves a checkpoint and
// exits 143.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawn } from 'child_process'
import { createHash } from 'crypto'
import { require, root } from './helpers.mjs'

const { train, loadModel, ModelTrainer, validateTrainConfig } = require('../dist/cjs/index.js')
const { policyUpdate } = require('../dist/cjs/train/policyUpdate.js')
const { listCheckpoints, loadCheckpoint, verifyCheckpoint } = require('../dist/cjs/train/checkpoint.js')
const { writeSafetensors, tensorToFloat32 } = require('../dist/cjs/safetensors.js')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-train-reliability-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

const small = (extra = {}) => ({
  warmStartSteps: 3,
  warmStartLearningRate: 2e-3,
  steps: 4,
  warmupSteps: 0,
  promptsPerStep: 2,
  samplesPerPrompt: 2,
  maxCompletionTokens: 8,
  checkpointEvery: 1,
  keepCheckpoints: 1,
  synthetic: { seed: 3, train: 20, heldOut: 2 },
  ...extra
})
// The optimizer's largest learning rate, unclipped: the third warm-start step's gradient norm is NaN.
const diverging = (extra = {}) => small({ warmStartLearningRate: 1000, learningRate: 1000, gradClip: 0, ...extra })

const allFinite = (dir) => {
  for (const [file, tensors] of Object.entries(loadCheckpoint(dir).tensors)) {
    for (const [name, x] of Object.entries(tensors)) if (!tensorToFloat32(x).every(Number.isFinite)) return `${file} ${name}`
  }
  return true
}

t.test('a diverging run stops with ERR_DIVERGED naming the step; the last good checkpoint stays and resumes', async (t) => {
  const dir = path.join(tmp, 'diverge')
  const steps = []
  const err = await train(diverging(), {
    runDir: dir,
    onEvent: (e) => {
      if (e.type === 'step') steps.push([e.step, e.metrics.gradNorm])
    }
  }).catch((e) => e)
  t.equal(err.code, 'ERR_DIVERGED', err.message)
  t.match(err.message, /training diverged at step 3 \(warm-start\): the gradient norm is NaN; the last good checkpoint is .*step-2/)
  t.equal(err.step, 3)
  t.equal(err.stage, 'warm-start')
  t.equal(err.checkpoint, path.join(dir, 'checkpoints', 'step-2'))
  t.ok(Number.isFinite(steps[1][1]) && Number.isNaN(steps[2][1]), `steps 1-2 finite, step 3 not: ${JSON.stringify(steps)}`)
  t.same(
    listCheckpoints(path.join(dir, 'checkpoints')).map((c) => c.step),
    [2],
    'no checkpoint of the NaN step, the good one not pruned (keep 1)'
  )
  t.equal(allFinite(err.checkpoint), true, 'the kept checkpoint is finite')
  t.doesNotThrow(() => verifyCheckpoint(err.checkpoint), 'and matches its checksums')
  t.notOk(fs.existsSync(path.join(dir, 'summary.json')))
  // Resuming reproduces the run from step 2 exactly, so it diverges again at step 3.
  let resumedFrom
  const again = await train(undefined, {
    resume: dir,
    onEvent: (e) => {
      if (e.type === 'start') resumedFrom = e.resumedFrom
    }
  }).catch((e) => e)
  t.equal(resumedFrom, 2, 'resumed from the last good checkpoint')
  t.equal(again.code, 'ERR_DIVERGED')
  t.match(again.message, /step 3 \(warm-start\)/)
  t.same(
    listCheckpoints(path.join(dir, 'checkpoints')).map((c) => c.step),
    [2]
  )
})

t.test('config.divergencePatience tolerates that many non-finite steps in a row', async (t) => {
  const dir = path.join(tmp, 'patience')
  const logs = []
  const err = await train(diverging({ divergencePatience: 2 }), {
    runDir: dir,
    onEvent: (e) => {
      if (e.type === 'log') logs.push(e.message)
    }
  }).catch((e) => e)
  t.equal(err.code, 'ERR_DIVERGED', err.message)
  t.match(err.message, /step 5 \(grpo\): .*\(3 non-finite steps in a row; config\.divergencePatience is 2\)/)
  t.same(
    logs.filter((m) => /tolerated/.test(m)).map((m) => m.slice(0, 7)),
    ['step 3 ', 'step 4 ']
  )
  t.same(
    listCheckpoints(path.join(dir, 'checkpoints')).map((c) => c.step),
    [2],
    'no checkpoint during the non-finite streak'
  )
  await t.rejects(train(small({ divergencePatience: -1 }), { runDir: path.join(tmp, 'p2') }), {
    code: 'ERR_CONFIG',
    message: /config\.divergencePatience/
  })
})

t.test('a model gone NaN inside an RL step is ERR_DIVERGED naming the step, not an argument error', async (t) => {
  const dir = path.join(tmp, 'nan-policy')
  await train(small({ warmStartSteps: 0, steps: 3 }), { runDir: dir, stopAfterStep: 1 })
  // Poison one weight of the step-1 checkpoint with valid checksums (as a bad update would have left it).
  const ck = path.join(dir, 'checkpoints', 'step-1')
  const file = path.join(ck, 'trainer.safetensors')
  const { tensors } = loadCheckpoint(ck)
  const out = {}
  for (const [name, x] of Object.entries(tensors['trainer.safetensors']))
    out[name] = { dtype: x.dtype, shape: x.shape, data: tensorToFloat32(x) }
  const target = Object.keys(out).find((n) => /norm\.weight$/.test(n))
  out[target].data[0] = NaN
  writeSafetensors(file, out)
  const mf = path.join(ck, 'manifest.json')
  const m = JSON.parse(fs.readFileSync(mf))
  const entry = m.files.find((f) => f.name === 'trainer.safetensors')
  entry.bytes = fs.statSync(file).size
  entry.sha256 = createHash('sha256').update(fs.readFileSync(file)).digest('hex')
  fs.writeFileSync(mf, JSON.stringify(m))
  const err = await train(undefined, { resume: dir }).catch((e) => e)
  t.equal(err.code, 'ERR_DIVERGED', err.message)
  t.match(err.message, /training diverged at step 2 \(grpo\)/)
  t.same(
    listCheckpoints(path.join(dir, 'checkpoints')).map((c) => c.step),
    [1],
    'nothing new written'
  )

  // The policy update itself, on a real trainer whose weights hold a NaN: the loss kernel would refuse the
  // log-probabilities as a bad argument; the update reports the divergence instead (the trainer adds the step).
  const model = await loadModel(path.join(dir, 'base-model'), { maxBatch: 4, maxContext: 64 })
  const trainer = new ModelTrainer(model)
  t.teardown(() => {
    trainer.dispose()
    model.dispose()
  })
  const params = await trainer.parameters()
  const p = params.find((x) => /norm\.weight$/.test(x.name))
  p.data[0] = NaN
  await trainer.setState({ tensors: [{ name: p.name, data: p.data }] })
  const config = validateTrainConfig(small({ warmStartSteps: 0, klCoef: 0 }), { checkPaths: false })
  const seq = (n) => ({ tokens: Array.from({ length: 12 }, (_, i) => ((i * 7 + n) % 50) + 1), promptLength: 6 })
  const batch = { sequences: [seq(0), seq(1), seq(2), seq(3)], advantages: Float32Array.from([1, -1, 0.5, -0.5]), metrics: {}, seconds: {} }
  await t.rejects(policyUpdate(trainer, config, batch, { lr: 1e-3 }), {
    code: 'ERR_DIVERGED',
    message: /log-probability of response token 0 of sequence 0 is NaN/
  })
})

t.test('a NaN reward is ERR_REWARD naming the completion', async (t) => {
  const err = await train(small({ warmStartSteps: 0, steps: 2 }), {
    runDir: path.join(tmp, 'nan-reward'),
    rewardFunction: (texts) => texts.map((_, k) => (k === 3 ? NaN : 0.5 * k))
  }).catch((e) => e)
  t.equal(err.code, 'ERR_REWARD', err.message)
  t.match(err.message, /rewardFunction returned NaN for completion 3 \(training row \d+, sample 1\) of RL step 1/)
})

t.test('a corrupt newest checkpoint: resume falls back to the previous one with a message, and the run completes', async (t) => {
  const dir = path.join(tmp, 'corrupt')
  await train(small({ checkpointEvery: 2, keepCheckpoints: 3 }), { runDir: dir, stopAfterStep: 4 })
  const ckRoot = path.join(dir, 'checkpoints')
  t.same(
    listCheckpoints(ckRoot).map((c) => c.step),
    [4, 2]
  )
  const f = path.join(ckRoot, 'step-4', 'trainer.safetensors')
  const b = fs.readFileSync(f)
  for (let i = b.length - 4096; i < b.length; i++) b[i] = 0xff // same size, garbage (NaN bit patterns) at the end
  fs.writeFileSync(f, b)
  const logs = []
  let resumedFrom
  const r = await train(undefined, {
    resume: dir,
    onEvent: (e) => {
      if (e.type === 'log') logs.push(e.message)
      if (e.type === 'start') resumedFrom = e.resumedFrom
    }
  })
  t.equal(resumedFrom, 2, 'resumed after step 2')
  t.ok(
    logs.some((m) =>
      /step-4 is unusable \(.*step-4\/trainer\.safetensors: checkpoint file is corrupt.*falling back to the previous checkpoint/.test(m)
    ),
    logs.join('\n')
  )
  t.equal(r.summary.steps, 7)
  t.doesNotThrow(() => verifyCheckpoint(path.join(ckRoot, 'step-4')), 'step 4 was saved again, verified')
  t.equal(allFinite(r.checkpoint), true)
  // Every checkpoint damaged: an error naming the files; nothing changes.
  for (const c of listCheckpoints(ckRoot))
    fs.writeFileSync(path.join(c.dir, 'trainer.json'), '{"stepsTaken": 99}\n'.padEnd(fs.statSync(path.join(c.dir, 'trainer.json')).size))
  await t.rejects(train(undefined, { resume: dir }), {
    code: 'ERR_DATA',
    message: /no usable checkpoint .*trainer\.json: checkpoint file is corrupt/
  })
})

t.test('a run that fails its up-front checks leaves no run folder', async (t) => {
  const data = path.join(tmp, 'bad.jsonl')
  fs.writeFileSync(data, '{"not": "closed"\n')
  const a = path.join(tmp, 'no-run-a')
  await t.rejects(train(small({ data }), { runDir: a }), { code: 'ERR_DATA' })
  t.notOk(fs.existsSync(a), 'bad data: no folder')
  const model = path.join(tmp, 'bad-model')
  fs.mkdirSync(model)
  fs.writeFileSync(path.join(model, 'config.json'), '{"model_type": ')
  const b = path.join(tmp, 'no-run-b')
  await t.rejects(train(small({ model }), { runDir: b }), { code: 'ERR_MODEL', message: /config\.json/ })
  t.notOk(fs.existsSync(b), 'unreadable model config: no folder')
  const c = path.join(tmp, 'no-run-c')
  await t.rejects(train(small(), { runDir: c, python: '/bin/false' }), { code: 'ERR_PYTHON', message: /\/bin\/false/ })
  t.notOk(fs.existsSync(c), 'unusable python: no folder')
  const d = path.join(tmp, 'no-run-d')
  await t.rejects(train(small({ learningRate: 1e4 }), { runDir: d }), {
    code: 'ERR_CONFIG',
    message: /config\.learningRate must be a positive number no greater than 1000/
  })
  t.notOk(fs.existsSync(d), 'a learning rate the optimizer refuses: no folder')
})

t.test('recode train: SIGTERM saves a checkpoint of the last finished step and exits 143', async (t) => {
  const dir = path.join(tmp, 'sigterm')
  const child = spawn(
    process.execPath,
    [
      path.join(root, 'dist/cjs/cli.js'),
      'train',
      '--run-dir',
      dir,
      '--warm-start-steps',
      '3',
      '--warm-start-learning-rate',
      '2e-3',
      '--steps',
      '20',
      '--warmup-steps',
      '0',
      '--prompts-per-step',
      '2',
      '--samples-per-prompt',
      '2',
      '--max-completion-tokens',
      '8',
      '--checkpoint-every',
      '0',
      '--synthetic.train',
      '20',
      '--synthetic.held-out',
      '2'
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] }
  )
  let stdout = ''
  let stderr = ''
  let sent = false
  child.stdout.on('data', (b) => {
    stdout += b
  })
  // The signal goes once the first step line is printed: bounded by what is checked, not by time.
  child.stderr.on('data', (b) => {
    stderr += b
    if (!sent && /step 1\/23/.test(stderr)) {
      sent = true
      child.kill('SIGTERM')
    }
  })
  const backstop = setTimeout(() => child.kill('SIGKILL'), 600_000)
  const [code, signal] = await new Promise((resolve) => child.on('exit', (c, s) => resolve([c, s])))
  clearTimeout(backstop)
  t.ok(sent, `the first step line appeared (stderr: ${stderr.slice(-400)})`)
  t.equal(signal, null, 'the process was not killed by the signal')
  t.equal(code, 143, `exit status 143 (stdout: ${stdout.slice(-400)})`)
  t.match(stderr, /interrupted \(SIGTERM\)/)
  const m = /stopped; checkpoint (.*step-(\d+))/.exec(stdout)
  t.ok(m, 'it names the checkpoint')
  t.ok(Number(m[2]) >= 1, `a finished step was saved (step ${m[2]})`)
  t.doesNotThrow(() => verifyCheckpoint(m[1]))
  const r = await train(undefined, { resume: dir, stopAfterStep: Number(m[2]) + 1 })
  t.equal(r.summary.steps, Number(m[2]) + 1, 'and the run resumes from it')
})
