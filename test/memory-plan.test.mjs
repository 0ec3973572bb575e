// The memory plan (`recode plan`, lib/train/memoryPlan.ts, src/model/memory_plan.cpp): the backend's and
// trainer's own allocation code on the counting device (src/device/memory_count.h) must plan exactly what the
// same workload allocates on the emulated device (its device_alloc tracks bytes like a GPU's), for full
// fine-tuning and adapters, fp32 and bf16; the parts add up; weights and KV cache match closed forms at the
// 7B shapes of Qwen2.5-Coder-7B-Instruct's config.json; ZeRO-1 divides the optimizer state; the CLI prints JSON.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { require, root, smallTrainModel } from './helpers.mjs'

const { initModel, validateTrainConfig } = require('../dist/cjs/index.js')
const { native } = require('../dist/cjs/native.js')
const { planMemory, readModelConfigFor } = require('../dist/cjs/train/memoryPlan.js')
const { weightFiles } = require('../dist/cjs/model/config.js')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-memory-plan-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const fixture7b = path.join(root, 'test', 'fixtures', 'qwen2.5-coder-7b-instruct')

const allProjections = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']
const sum = (parts) => Object.values(parts).reduce((a, b) => a + b, 0)

t.test('the counting device plans exactly the bytes the emulated device allocates for the same workload', async (t) => {
  const cases = [
    { name: 'qwen2 full fine-tuning fp32, KL pass', model: { arch: 'qwen2' }, bf16: false, referencePass: true },
    {
      name: 'qwen2 DoRA bf16 (dropout), KL pass',
      model: { arch: 'qwen2', dtype: 'bf16' },
      bf16: true,
      referencePass: true,
      adapter: { type: 'dora', r: 4, alpha: 8, dropout: 0.1, seed: 3, targetModules: allProjections }
    },
    {
      name: 'qwen3 tied LoRA fp32 on q,v',
      model: { arch: 'qwen3', tieWordEmbeddings: true },
      bf16: false,
      referencePass: false,
      adapter: { type: 'lora', r: 2, alpha: 4, dropout: 0, seed: 1, targetModules: ['q_proj', 'v_proj'] }
    },
    { name: 'llama full fine-tuning bf16', model: { arch: 'llama', kvHeads: 1, dtype: 'bf16' }, bf16: true, referencePass: false },
    {
      name: 'qwen2 DoRA fp32, recomputing activations',
      model: { arch: 'qwen2' },
      bf16: false,
      referencePass: true,
      recompute: true,
      adapter: { type: 'dora', r: 4, alpha: 8, dropout: 0.1, seed: 3, targetModules: allProjections }
    }
  ]
  for (const [i, c] of cases.entries()) {
    const dir = path.join(tmp, `m${i}`)
    initModel({ ...smallTrainModel, ...c.model, out: dir, seed: 100 + i })
    const config = readModelConfigFor(dir)
    // prompt 7 in chunks of 3 (three prefill steps, the last shorter), completion 5, micro-batch of 3 rows
    const opts = {
      bf16: c.bf16,
      slots: 3,
      context: 12,
      prefillChunk: 3,
      promptTokens: 7,
      completionTokens: 5,
      microRows: 3,
      referencePass: c.referencePass,
      activationRecomputation: c.recompute === true,
      ...(c.adapter ? { adapter: c.adapter } : {})
    }
    const planned = native().memoryPlan(config, { ...opts, device: 'counting' })
    const measured = native().memoryPlan(config, { ...opts, device: 'emulated', files: weightFiles(dir).files })
    t.ok(
      planned.generation.peakBytes > 0 && planned.training.peakBytes > 0,
      `${c.name}: both phases allocate (${planned.generation.peakBytes}, ${planned.training.peakBytes} B)`
    )
    t.equal(
      planned.generation.peakBytes,
      measured.generation.peakBytes,
      `${c.name}: generation peak ${planned.generation.peakBytes} B planned = measured`
    )
    t.equal(
      planned.training.peakBytes,
      measured.training.peakBytes,
      `${c.name}: training peak ${planned.training.peakBytes} B planned = measured`
    )
    t.equal(sum(planned.generation.parts), planned.generation.peakBytes, `${c.name}: generation parts add up to the peak`)
    t.equal(sum(planned.training.parts), planned.training.peakBytes, `${c.name}: training parts add up to the peak`)
    t.ok(planned.training.parts.activations > 0, `${c.name}: the training activations are counted`)
    t.equal(planned.generation.parts.activations, 0, `${c.name}: generation after an update holds none of the trainer's activations`)
    t.equal(planned.training.parts.generation, 0, `${c.name}: training holds none of generation's step buffers`)
    if (c.recompute) {
      const kept = native().memoryPlan(config, { ...opts, device: 'counting', activationRecomputation: false })
      t.ok(
        planned.training.parts.activations < kept.training.parts.activations,
        `${c.name}: fewer activation bytes than keeping them (${planned.training.parts.activations} < ${kept.training.parts.activations})`
      )
    }
  }
})

t.test('the 7B plan: weights and KV cache match their closed forms; ZeRO-1 divides the optimizer state', async (t) => {
  const cfg = readModelConfigFor(fixture7b)
  t.same(
    [cfg.hidden, cfg.intermediate, cfg.layers, cfg.heads, cfg.kvHeads, cfg.vocab, cfg.tieEmbeddings],
    [3584, 18944, 28, 28, 4, 152064, false],
    'the fixture holds the public shapes'
  )
  const C = 3584
  const F = 18944
  const L = 28
  const V = 152064
  const kd = 4 * 128
  const params = 2 * V * C + C + L * (2 * C + C * C + 2 * kd * C + C + 2 * kd + C * C + 3 * C * F)
  const grpo = validateTrainConfig(
    { preset: 'grpo-paper', model: fixture7b, data: 'synthetic', computeDtype: 'bf16' },
    { checkPaths: false }
  )
  const plan = planMemory(cfg, grpo)
  // biases and RoPE frequencies are fp32 on the device: 3 biases per layer plus D/2 frequencies
  const biases = L * (C + 2 * kd)
  const fp32Extra = biases * 2 + 64 * 4
  t.equal(plan.generation.parts.weights, params * 2 + fp32Extra, `weights: ${params} bf16 parameters (+ fp32 biases and RoPE frequencies)`)
  t.equal(
    plan.generation.parts.kvCache,
    2 * L * 64 * 3072 * kd * 2,
    'KV cache: K and V, 28 layers x 64 slots x 3072 positions x 4 heads x 128 x bf16'
  )
  t.equal(plan.peakBytes, Math.max(plan.generation.peakBytes, plan.training.peakBytes), 'the peak is the larger phase')
  t.equal(plan.fits, plan.peakBytes <= 80 * 2 ** 30, 'fits compares with 80 GiB')
  const dapo = validateTrainConfig(
    { preset: 'dapo-paper', model: fixture7b, data: 'synthetic', computeDtype: 'bf16' },
    { checkPaths: false }
  )
  const one = planMemory(cfg, dapo)
  const eight = planMemory(cfg, dapo, { nproc: 8 })
  t.equal(
    one.training.parts.optimizer,
    (params - biases) * 12 + biases * 8,
    'full fine-tuning bf16: an fp32 master and two moments per bf16 parameter; the fp32 biases are their own masters'
  )
  t.equal(eight.training.parts.optimizer, Math.ceil(one.training.parts.optimizer / 8), 'ZeRO-1 over 8: the optimizer state / 8')
  t.equal(
    one.training.peakBytes - eight.training.peakBytes,
    one.training.parts.optimizer - eight.training.parts.optimizer,
    'and nothing else changes'
  )
  t.throws(() => planMemory(cfg, dapo, { nproc: 0 }), { code: 'ERR_CONFIG' }, 'nproc 0 refused')
})

t.test('recode plan --json prints one object with peakBytes, fits and parts', async (t) => {
  const r = spawnSync(
    process.execPath,
    [
      path.join(root, 'dist', 'cjs', 'cli.js'),
      'plan',
      '--model',
      path.join(fixture7b, 'config.json'),
      '--preset',
      'grpo-paper',
      '--compute-dtype',
      'bf16',
      '--gpu-memory',
      '80',
      '--json'
    ],
    { encoding: 'utf8', timeout: 120000 }
  )
  t.equal(r.status, 0, `exit 0 (${r.stderr})`)
  const out = JSON.parse(r.stdout)
  t.equal(typeof out.peakBytes, 'number', 'peakBytes')
  t.equal(typeof out.fits, 'boolean', 'fits')
  t.equal(sum(out.parts), out.peakBytes, 'parts add up to peakBytes')
  const bad = spawnSync(process.execPath, [path.join(root, 'dist', 'cjs', 'cli.js'), 'plan', '--preset', 'grpo-paper'], {
    encoding: 'utf8',
    timeout: 120000
  })
  t.not(bad.status, 0, 'no --model: refused')
  t.match(bad.stderr, /--model/, 'saying what is missing')
})
