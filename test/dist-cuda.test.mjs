// Data parallelism of the CUDA trainer: gradients summed on the device through NCCL. This machine has neither a GPU
// nor NCCL, so the path runs on device 'emulated' (the CUDA kernels through the SIMT emulation, on host memory) with
// recode's test NCCL (test/fixtures/nccl_mpi.c: NCCL's C API over MPI on host memory, built here with mpicc and
// loaded through RECODE_NCCL_LIBRARY): `mpirun -np 2` must give bit for bit the weights and per-step metrics of one
// process running the same global batch with gradAccumulation 2. The same trainer code on a real GPU through real
// NCCL is checked by `npm run gpu-check` (bench/gpu-check.mjs: a world of one, and two ranks on two GPUs).
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { require } from './helpers.mjs'
import {
  buildTestNccl,
  EMULATED_BASE,
  haveMpicc,
  haveMpirun,
  metricsOf,
  mpirunArgs,
  trainChild as child,
  weights
} from './dist_helpers.mjs'

const { distInfo, probeEngine } = require('../dist/cjs/index.js')
const root = path.join(path.dirname(new URL(import.meta.url).pathname), '..')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-dist-cuda-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

const info = distInfo()
const why = !info.mpi.loaded
  ? `the MPI shim is not loaded: ${info.mpi.error}`
  : !haveMpirun
    ? 'mpirun is not on PATH'
    : !haveMpicc
      ? 'mpicc is not on PATH (it builds the test NCCL)'
      : ''
if (why) t.comment(`skipping the multi-rank tests: ${why}`)

// the test NCCL, built once for this run
const testNccl = why ? path.join(tmp, 'libnccl-test.so') : buildTestNccl(tmp)

function runRanks(ranks, config, dir, ncclLibrary = testNccl, extra = []) {
  const args = [child, config === undefined ? '' : JSON.stringify(config), dir, ...extra]
  const env = { ...process.env, RECODE_NCCL_LIBRARY: ncclLibrary }
  return ranks === 1
    ? spawnSync(process.execPath, args, { encoding: 'utf8', env, timeout: 600000 })
    : spawnSync('mpirun', [...mpirunArgs(ranks), '-x', 'RECODE_NCCL_LIBRARY', process.execPath, ...args], {
        encoding: 'utf8',
        env,
        timeout: 600000
      })
}
function mustRun(ranks, config, dir, extra = []) {
  const r = runRanks(ranks, config, dir, testNccl, extra)
  if (r.status !== 0) throw new Error(`${ranks} rank(s) failed (${r.status}): ${r.stderr.slice(-2000)}`)
  return r
}

const base = EMULATED_BASE

t.test('emulated: accumulation adds each micro-batch gradient once per element, as the sum over ranks does', async (t) => {
  // what makes gradAccumulation 2 in one process and 2 ranks agree: after micro-batches A then B every gradient is
  // exactly fround(g_A + g_B), the tied embedding's rows of repeated tokens included (head + scatter added once)
  const { initModel, loadModel, ModelTrainer } = require('../dist/cjs/index.js')
  const seed = Number(process.env.RECODE_TEST_SEED ?? Date.now() % 1e9)
  t.comment(`seed ${seed} (RECODE_TEST_SEED reproduces it)`)
  let state = seed >>> 0
  const rand = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    return state / 2 ** 32
  }
  for (const [tie, dtype] of [
    [false, 'f32'],
    [true, 'f32'],
    [true, 'bf16']
  ]) {
    const dir = path.join(tmp, `accumulate-${tie ? 'tied' : 'untied'}-${dtype}`)
    initModel({ preset: 'tiny', arch: 'qwen2', out: dir, seed: seed % 1000, tieWordEmbeddings: tie })
    const model = await loadModel(dir, { device: 'emulated', dtype, maxBatch: 2, maxContext: 64 })
    const trainer = new ModelTrainer(model)
    try {
      // few distinct ids, so rows repeat within and across the micro-batches; odd lengths
      const batch = (lengths) =>
        lengths.map((n) => {
          const tokens = Array.from({ length: n }, () => 3 + Math.floor(rand() * 29))
          return { tokens, weights: tokens.map((_, i) => (i === 0 ? 0 : rand() - 0.4)) }
        })
      const A = batch([13, 7])
      const B = batch([11])
      const grads = async () => (await trainer.gradients()).map((g) => g.grad.slice())
      await trainer.step(A)
      const gA = await grads()
      await trainer.zeroGrad()
      await trainer.step(B)
      const gB = await grads()
      await trainer.zeroGrad()
      await trainer.step(A)
      await trainer.step(B)
      const gAB = await grads()
      const names = (await trainer.gradients()).map((g) => g.name)
      const off = []
      for (const [k, g] of gAB.entries()) {
        let n = 0
        for (let i = 0; i < g.length; i++) if (g[i] !== Math.fround(gA[k][i] + gB[k][i])) n++
        if (n > 0) off.push(`${names[k]}: ${n} of ${g.length}`)
      }
      const label = `${tie ? 'tied' : 'untied'} head, ${dtype}`
      t.same(off, [], `${label}: every element of ${names.length} gradients is fround(g_A + g_B)`)
      t.ok(
        gB.some((g) => g.some((x) => x !== 0)),
        `${label}: the micro-batches have gradients`
      )
    } finally {
      trainer.dispose()
      model.dispose()
    }
  }
})

t.test('the test NCCL loads as NCCL and says it reduces host memory', { skip: why || false }, async (t) => {
  const s = probeEngine('nccl', testNccl)
  t.equal(s.loaded, true, s.error)
  t.equal(s.versionString, '2.18.0')
  t.equal(s.hostMemory, true, 'marked: host memory (device emulated only)')
  t.equal(typeof info.nccl.hostMemory, 'boolean', 'distInfo reports hostMemory too')
})

t.test(
  "gpu-check's NCCL world of one, on device emulated through the test NCCL; a bad id is ERR_NCCL",
  { skip: why || false },
  async (t) => {
    // a child process: NCCL is probed once per process, and this one has already probed it without the override
    const script = `
    import { worldOfOne } from ${JSON.stringify(path.join(root, 'bench/nccl-check.mjs'))}
    import { createRequire } from 'module'
    const require = createRequire(import.meta.url)
    const { initModel, loadModel, ModelTrainer } = require(${JSON.stringify(path.join(root, 'dist/cjs/index.js'))})
    const result = await worldOfOne('emulated', process.argv[1])
    initModel({ preset: 'tiny', arch: 'qwen2', out: process.argv[1] + '/bad', seed: 1 })
    const model = await loadModel(process.argv[1] + '/bad', { device: 'emulated', maxBatch: 1, maxContext: 16 })
    const trainer = new ModelTrainer(model)
    let bad
    try { await trainer.initNccl(new Uint8Array(128), 0, 1) } catch (err) { bad = { code: err.code, message: err.message } }
    console.log(JSON.stringify({ result, bad }))
    trainer.dispose()
    model.dispose()`
    const dir = fs.mkdtempSync(path.join(tmp, 'one-'))
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, dir], {
      encoding: 'utf8',
      env: { ...process.env, RECODE_NCCL_LIBRARY: testNccl },
      timeout: 300000
    })
    t.equal(r.status, 0, r.stderr.slice(-2000))
    const { result, bad } = JSON.parse(r.stdout.trim().split('\n').pop())
    t.equal(result.torchrunWorld, true, 'the world joined torchrun style: id over the rendezvous, host collectives through NCCL exact')
    t.equal(result.gradientsUnchanged, true, 'the sum over a world of one leaves the gradients as they were, bit for bit')
    t.ok(result.ok && result.gradNorm > 0, `an update from them (gradNorm ${result.gradNorm})`)
    t.match(
      bad,
      { code: 'ERR_NCCL', message: /^ncclCommInitRank failed on rank 0: test NCCL: invalid usage .*\(ncclResult_t 5\)/ },
      'an NCCL failure names the call, the rank and ncclGetErrorString'
    )
  }
)

const cases = [
  ['GRPO, full fine-tuning, KL to the base, clipping, ZeRO-1 (default)', { algorithm: 'grpo', klCoef: 0.001, gradClip: 0.5 }],
  ['GRPO, full fine-tuning, clipping, ZeRO-1 off', { algorithm: 'grpo', gradClip: 0.5, zero1: false }],
  ['GRPO, DoRA with dropout', { algorithm: 'grpo', adapter: { type: 'dora', r: 4, alpha: 8, dropout: 0.05 } }],
  ['DAPO with dynamic sampling, full fine-tuning', { algorithm: 'dapo', dynamicSampling: true, maxGenerationBatches: 3 }],
  ['SFT, full fine-tuning', { algorithm: 'sft' }]
]
for (const [name, extra] of cases) {
  t.test(`emulated: mpirun -np 2 through NCCL equals one process with gradAccumulation 2: ${name}`, { skip: why || false }, async (t) => {
    const config = { ...base, ...extra }
    const tag = `${config.algorithm}-${config.adapter ? 'dora' : 'full'}`
    const one = path.join(tmp, `${tag}-one`)
    const two = path.join(tmp, `${tag}-two`)
    mustRun(1, config, one)
    const out = mustRun(2, config, two).stdout
    const zero = config.zero1 ?? !config.adapter
    t.match(
      out,
      new RegExp(`data parallel: 2 ranks \\(mpirun\\), 1 micro-batch\\(es\\) each, ZeRO-1 ${zero ? 'on' : 'off'}, gradients through NCCL`),
      `ZeRO-1 ${zero ? 'on' : 'off'}`
    )
    const m1 = metricsOf(one)
    t.equal(m1.length, base.steps)
    t.ok(
      m1.some((r) => r.gradNorm > 0 && r.lr > 0),
      'the run learns (non-zero gradients at a non-zero learning rate)'
    )
    t.same(metricsOf(two), m1, 'per-step metrics are identical')
    t.ok(weights(two).equals(weights(one)), 'the trained weights are identical, bit for bit')
  })
}

t.test(
  'emulated, ZeRO-1: a 2-rank checkpoint (moments gathered from their owners) resumes on 1 rank exactly',
  { skip: why || false },
  async (t) => {
    const config = { ...base, algorithm: 'grpo', gradClip: 0.5, steps: 4 }
    const whole = path.join(tmp, 'resume-whole')
    mustRun(1, config, whole)
    const dir = path.join(tmp, 'resume-2-1')
    mustRun(2, config, dir, ['2'])
    mustRun(1, undefined, dir, ['resume'])
    t.same(metricsOf(dir), metricsOf(whole), 'the same metrics as the uninterrupted run')
    t.ok(weights(dir).equals(weights(whole)), 'the same weights, bit for bit')
  }
)

t.test('emulated with several ranks and no NCCL: a clear error', { skip: why || false }, async (t) => {
  const config = { ...base, algorithm: 'sft', steps: 1 }
  const missing = runRanks(2, config, path.join(tmp, 'no-nccl'), path.join(tmp, 'no-such-libnccl.so.2'))
  t.not(missing.status, 0)
  t.match(
    missing.stderr,
    /ERR_NCCL_UNAVAILABLE config\.device 'emulated' with 2 ranks: the CUDA trainer sums gradients through NCCL, which is unavailable: NCCL could not be loaded/
  )
})
