// The CUDA model backend (src/model/cuda_backend.cpp) against the CPU backend on tiny random models: logits of
// every position, KV-cache decode (batched, per-slot, and chunked prefill onto a non-empty cache) against
// recomputing the prefix, greedy and seeded sampled generation token for token. Device 'emulated' runs the CUDA kernels through
// the SIMT emulation (always); device 'cuda' is held to the same checks when a GPU is usable.
// Sizes stay tiny: the emulation runs each CUDA thread as a fiber.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require, rng, tolerance, relErr } from './helpers.mjs'

const { loadModel, initModel, systemInfo } = require('../dist/cjs/index.js')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-model-cuda-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

const llama3 = { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPosition: 32 }
const variants = [
  { name: 'qwen2 (qkv bias, untied, GQA 4:2)', opts: { preset: 'tiny', arch: 'qwen2' } },
  { name: 'qwen3 (q/k norm, tied)', opts: { preset: 'tiny', arch: 'qwen3', tieWordEmbeddings: true } },
  {
    name: 'llama (llama3 rope scaling, MQA 4:1)',
    opts: { preset: 'tiny', arch: 'llama', kvHeads: 1, ropeScaling: llama3, ropeTheta: 10000 }
  },
  { name: 'qwen2 bf16 weights', opts: { preset: 'tiny', arch: 'qwen2', dtype: 'bf16' }, dtype: 'bf16' }
]
variants.forEach((v, i) => {
  v.dir = path.join(tmp, `m${i}`)
  initModel({ ...v.opts, out: v.dir, seed: 300 + i })
})

const info = systemInfo()
const devices = ['emulated']
if (info.cuda.available) devices.push('cuda')
else t.comment(`device 'cuda' skipped: ${info.cuda.reason}`)

// dtype 'f32': both backends compute in float32 from the same weights (bound 1e-4, as the issue sets);
// dtype 'bf16': the CPU rounds weights to bf16 and computes in fp32, the CUDA backend also stores activations
// and the KV cache in bf16 (tensor cores, fp32 accumulation), so they agree within bf16 tolerance.
const TOL = { f32: 1e-4, bf16: tolerance.bf16 }

for (const device of devices) {
  t.test(`${device}: logits of every position equal the cpu backend's`, async (t) => {
    const r = rng(t)
    for (const v of variants) {
      const V = JSON.parse(fs.readFileSync(path.join(v.dir, 'config.json'))).vocab_size
      const opts = { maxBatch: 3, maxContext: 32, dtype: v.dtype ?? 'f32' }
      const cpu = await loadModel(v.dir, { ...opts, device: 'cpu' })
      const dev = await loadModel(v.dir, { ...opts, device })
      t.equal(dev.memory.device, device, `${v.name}: runs on '${device}'`)
      const ids = (lens) => lens.map((n) => Array.from({ length: n }, () => r.int(0, V - 1)))
      // unequal lengths (one prefill per sequence) and equal lengths (one batched prefill)
      for (const batch of [ids([1, 9, 13]), ids([6, 6])]) {
        const want = await cpu.logits(batch)
        const got = await dev.logits(batch)
        for (const [i, s] of batch.entries()) {
          t.equal(got[i].length, s.length * V)
          const e = relErr(got[i], want[i])
          t.ok(
            e < TOL[opts.dtype],
            `${v.name}: sequence of ${s.length} tokens (batch ${batch.map((s) => s.length)}) rel err ${e.toExponential(2)}`
          )
        }
      }
      cpu.dispose()
      dev.dispose()
    }
  })

  for (const dtype of ['f32', 'bf16'])
    t.test(`${device} ${dtype}: KV-cache decode equals recomputing the prefix`, async (t) => {
      const r = rng(t)
      const v = variants[dtype === 'f32' ? 0 : 3]
      const V = JSON.parse(fs.readFileSync(path.join(v.dir, 'config.json'))).vocab_size
      // a capacity of 1024 makes decode split the context (recode_decode_num_splits gives 4 here), so the
      // split-KV path and its scratch are covered; the greedy test below (capacity 40) covers the unsplit one
      const m = await loadModel(v.dir, { device, dtype, maxBatch: 3, maxContext: 1024 })
      const seqs = [0, 1, 2].map(() => Array.from({ length: 12 }, () => r.int(0, V - 1)))
      // the prefix recomputed from scratch on the same device by a second instance (logits() resets its slots)
      const ref = await loadModel(v.dir, { device, dtype, maxBatch: 1, maxContext: 32 })
      const lastOf = async (prefix) => {
        const l = (await ref.logits([prefix]))[0]
        return l.slice(l.length - V)
      }
      const check = async (got, slotSeq, n, what) => {
        const e = relErr(got, await lastOf(slotSeq.slice(0, n)))
        t.ok(e < TOL[dtype], `${what}: after ${n} tokens rel err ${e.toExponential(2)}`)
      }
      // prompts of different lengths: 4, 6, 5 tokens
      const start = [4, 6, 5]
      const first = await m.step([0, 1, 2].map((s) => ({ slot: s, tokens: seqs[s].slice(0, start[s]), reset: true })))
      for (const s of [0, 1, 2]) await check(first[s], seqs[s], start[s], `prefill slot ${s}`)
      // chunked prefill onto a non-empty cache (decode per token inside the chunk)
      let got = await m.step([{ slot: 0, tokens: seqs[0].slice(4, 7) }])
      await check(got[0], seqs[0], 7, 'chunk of 3 appended to slot 0')
      const lens = [7, 6, 5]
      // decode runs: slots 0..2 in one batch; 2 alone then 0..1 as a run; 1..2 (a run not starting at 0)
      for (const order of [
        [0, 1, 2],
        [2, 0, 1],
        [1, 2]
      ]) {
        got = await m.step(order.map((s) => ({ slot: s, tokens: [seqs[s][lens[s]]] })))
        for (const [i, s] of order.entries()) {
          lens[s]++
          await check(got[i], seqs[s], lens[s], `decode slots [${order}], slot ${s}`)
        }
      }
      m.dispose()
      ref.dispose()
    })

  t.test(`${device}: greedy and seeded sampled generation are identical to the cpu backend's`, async (t) => {
    for (const v of [variants[0], variants[1]]) {
      const opts = { maxBatch: 2, maxContext: 40 }
      const cpu = await loadModel(v.dir, { ...opts, device: 'cpu' })
      const dev = await loadModel(v.dir, { ...opts, device })
      const prompts = ['def add(a, b):', 'x = 1']
      const gOpts = { maxNewTokens: 10, temperature: 0 }
      const want = await cpu.generate(prompts, gOpts)
      const got = await dev.generate(prompts, gOpts)
      for (const [i, p] of prompts.entries()) {
        t.same(got[i][0].tokenIds, want[i][0].tokenIds, `${v.name}: ${JSON.stringify(p)} greedy tokens`)
        t.ok(want[i][0].tokenIds.length > 0, 'generated something')
        const e = relErr(got[i][0].logprobs, want[i][0].logprobs)
        t.ok(e < 1e-3, `${v.name}: log-probabilities agree (rel err ${e.toExponential(2)})`)
      }
      // sampling runs on the host from the device's logits, so a seeded run draws the same tokens
      const sOpts = { maxNewTokens: 8, temperature: 0.9, topK: 20, seed: 7 }
      const wantS = await cpu.generate(prompts, sOpts)
      const gotS = await dev.generate(prompts, sOpts)
      for (const [i, p] of prompts.entries())
        t.same(gotS[i][0].tokenIds, wantS[i][0].tokenIds, `${v.name}: ${JSON.stringify(p)} sampled tokens (seed 7)`)
      cpu.dispose()
      dev.dispose()
    }
  })
}

t.test('device selection', async (t) => {
  const m = await loadModel(variants[0].dir, { device: 'emulated', maxBatch: 1, maxContext: 8 })
  t.equal(m.memory.device, 'emulated')
  const cfg = JSON.parse(fs.readFileSync(path.join(variants[0].dir, 'config.json')))
  const kvBytes = 2 * cfg.num_hidden_layers * 1 * 8 * cfg.num_key_value_heads * (cfg.hidden_size / cfg.num_attention_heads) * 4
  t.equal(m.memory.kvCacheBytes, kvBytes, 'device KV cache: slots x context x layers x 2 x kv_heads x head_dim x 4 bytes')
  const f32WeightBytes = m.memory.weightBytes
  m.dispose()
  const mb = await loadModel(variants[0].dir, { device: 'emulated', dtype: 'bf16', maxBatch: 1, maxContext: 8 })
  t.equal(mb.memory.kvCacheBytes, kvBytes / 2, 'bf16 KV cache: 2 bytes per value')
  t.ok(
    mb.memory.weightBytes < f32WeightBytes * 0.6,
    `bf16 weights on the device: ${mb.memory.weightBytes} bytes vs ${f32WeightBytes} in f32`
  )
  mb.dispose()
  if (!info.cuda.available) {
    await t.rejects(loadModel(variants[0].dir, { device: 'cuda' }), { code: 'ERR_CUDA_UNAVAILABLE' }, 'cuda without a GPU says why')
  }
})
