// The native model end to end on tiny random models written by init-model: logits against an independent
// torch implementation (test/reference/transformer.py, float64) for every architecture and option, KV-cache
// decode against recomputing the prefix, greedy/sampled reproducibility, batched == one-at-a-time,
// stopping (EOS, stop strings, length), AbortSignal, memory report, and device selection.
import t from 'tap'
import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require, rng, relErr } from './helpers.mjs'

const { loadModel, initModel, setSimdLevel } = require('../dist/cjs/index.js')
const TORCH_PYTHON = '/usr/bin/python3'
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-model-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

const llama3 = { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPosition: 32 }
const variants = [
  { name: 'qwen2 (qkv bias, untied, GQA 4:2)', opts: { preset: 'tiny', arch: 'qwen2' } },
  { name: 'qwen2 tied embeddings, bf16 on disk', opts: { preset: 'tiny', arch: 'qwen2', tieWordEmbeddings: true, dtype: 'bf16' } },
  {
    name: 'llama (llama3 rope scaling, MQA 4:1, untied)',
    opts: { preset: 'tiny', arch: 'llama', kvHeads: 1, ropeScaling: llama3, ropeTheta: 10000 }
  },
  {
    name: 'llama attention_bias, tied, no GQA',
    opts: { preset: 'tiny', arch: 'llama', kvHeads: 4, attentionBias: true, tieWordEmbeddings: true }
  },
  { name: 'qwen3 (q/k norm, tied)', opts: { preset: 'tiny', arch: 'qwen3', tieWordEmbeddings: true } },
  { name: 'qwen3 attention_bias, untied', opts: { preset: 'tiny', arch: 'qwen3', attentionBias: true } },
  { name: 'qwen2 small preset', opts: { preset: 'small', arch: 'qwen2' } }
]
variants.forEach((v, i) => {
  v.dir = path.join(tmp, `m${i}`)
  initModel({ ...v.opts, out: v.dir, seed: 100 + i })
})
const base = variants[0].dir

function torchLogits(jobs) {
  execFileSync(TORCH_PYTHON, [new URL('./reference/transformer.py', import.meta.url).pathname], {
    input: JSON.stringify(jobs),
    maxBuffer: 1 << 26
  })
  return jobs.map((j) => new Float64Array(fs.readFileSync(j.out).buffer.slice(0)))
}

t.test('logits equal the torch reference for every architecture (fp32 < 1e-4; bf16 rounding within bf16 tolerance)', async (t) => {
  if (!fs.existsSync(TORCH_PYTHON)) {
    t.comment(`skipped: ${TORCH_PYTHON} (Debian python3-torch) not found`)
    return
  }
  const r = rng(t)
  const jobs = variants.map((v, i) => {
    const V = JSON.parse(fs.readFileSync(path.join(v.dir, 'config.json'))).vocab_size
    const lens = v.opts.preset === 'small' ? [150, 1] : [1, 17, 70]
    return { dir: v.dir, ids: lens.map((n) => Array.from({ length: n }, () => r.int(0, V - 1))), out: path.join(tmp, `ref${i}.f64`) }
  })
  const refs = torchLogits(jobs)
  for (const [i, v] of variants.entries()) {
    const m = await loadModel(v.dir, { device: 'cpu', maxBatch: 2, maxContext: 256 })
    const levels = i === 0 ? ['avx2', 'baseline'] : ['avx2']
    for (const level of levels) {
      setSimdLevel(level)
      const ours = await m.logits(jobs[i].ids)
      let row = 0
      for (const [s, seq] of jobs[i].ids.entries()) {
        const ref = refs[i].subarray(row * m.config.vocab, (row + seq.length) * m.config.vocab)
        row += seq.length
        t.equal(ours[s].length, seq.length * m.config.vocab, 'T x V logits')
        const e = relErr(ours[s], ref)
        t.ok(e < 1e-4, `${v.name} [${level}] T=${seq.length}: rel err ${e.toExponential(2)}`)
      }
    }
    setSimdLevel('auto')
    m.dispose()
  }
  // an fp32 model computed with weights rounded to bf16: within bf16 tolerance of the fp32 reference
  const m = await loadModel(variants[0].dir, { device: 'cpu', dtype: 'bf16', maxBatch: 2, maxContext: 128 })
  const ours = await m.logits([jobs[0].ids[1]])
  const V = m.config.vocab
  const ref = refs[0].subarray(V, (1 + jobs[0].ids[1].length) * V)
  const e = relErr(ours[0], ref)
  t.ok(
    e < 2e-2 && e > 1e-6,
    `dtype bf16 (weights rounded): rel err ${e.toExponential(2)} within bf16 tolerance (and not exact: rounding happened)`
  )
  m.dispose()
})

t.test('decode with the KV cache gives the logits of recomputing the whole prefix', async (t) => {
  const r = rng(t)
  const m = await loadModel(base, { device: 'cpu', maxBatch: 3, maxContext: 128 })
  const V = m.config.vocab
  const seq = Array.from({ length: 40 }, () => r.int(0, V - 1))
  const [full] = await m.logits([seq])
  // slot 0: prefill 7 then one token per step; slot 1: uneven chunks; slot 2 stays busy with another sequence
  let step = await m.step([
    { slot: 0, tokens: seq.slice(0, 7), reset: true },
    { slot: 1, tokens: seq.slice(0, 3), reset: true },
    { slot: 2, tokens: [1, 2, 3], reset: true }
  ])
  t.ok(relErr(step[0], full.subarray(6 * V, 7 * V)) < 1e-5, 'prefill of 7 matches row 6')
  let worst = 0
  let fed1 = 3
  for (let p = 7; p < seq.length; p++) {
    const entries = [
      { slot: 0, tokens: [seq[p]] },
      { slot: 2, tokens: [r.int(0, V - 1)] }
    ]
    const chunk = Math.min(1 + (p % 4), seq.length - fed1)
    if (chunk > 0) entries.push({ slot: 1, tokens: seq.slice(fed1, fed1 + chunk) })
    step = await m.step(entries)
    worst = Math.max(worst, relErr(step[0], full.subarray(p * V, (p + 1) * V)))
    if (chunk > 0) {
      fed1 += chunk
      worst = Math.max(worst, relErr(step[2], full.subarray((fed1 - 1) * V, fed1 * V)))
    }
  }
  t.ok(worst < 1e-5, `token-by-token and chunked decode vs full recompute: worst rel err ${worst.toExponential(2)}`)
  const info = m.memory
  const c = m.config
  t.equal(
    info.kvCacheBytes,
    3 * 128 * c.layers * 2 * c.kvHeads * c.headDim * 4,
    'KV cache bytes = slots x context x layers x 2 x kv heads x head dim x 4'
  )
  t.ok(info.weightBytes > 0, `weights ${info.weightBytes} bytes`)
  await t.rejects(m.step([{ slot: 0, tokens: new Array(100).fill(1) }]), { code: 'ERR_INVALID_ARG' }, 'overfilling a slot is an error')
  await t.rejects(m.step([{ slot: 1, tokens: [V] }]), { code: 'ERR_INVALID_ARG' }, 'token id outside the vocabulary is an error')
  m.dispose()
})

t.test('generation: greedy reproducible, batched equals one at a time, seeded sampling reproducible', async (t) => {
  const m = await loadModel(base, { device: 'cpu', maxBatch: 3, maxContext: 256 })
  const prompts = ['def add(a, b):', 'import os\n', 'x', 'class Stack:\n    def push(self, value):', '# héllo wörld ✓\nprint(']
  const greedy = { maxNewTokens: 12, temperature: 0 }
  const a = await m.generate(prompts, greedy)
  const b = await m.generate(prompts, greedy)
  t.same(a, b, 'greedy generation is reproducible')
  for (const [i, p] of prompts.entries()) {
    const [single] = await m.generate([p], greedy)
    t.same(single[0].tokenIds, a[i][0].tokenIds, `prompt ${i}: batched (3 slots, 5 prompts) equals alone`)
    const d = Math.max(...single[0].logprobs.map((x, j) => Math.abs(x - a[i][0].logprobs[j])))
    t.ok(d < 1e-4, `prompt ${i}: logprobs agree (${d.toExponential(2)})`)
  }
  const eos = new Set(m.eosTokenIds)
  for (const g of a) {
    if (g[0].finishReason === 'eos') {
      // random weights may pick an EOS id
      t.ok(eos.has(g[0].tokenIds.at(-1)) && g[0].tokenIds.slice(0, -1).every((x) => !eos.has(x)), 'stopped at the first EOS id')
    } else {
      t.equal(g[0].finishReason, 'length')
      t.equal(g[0].tokenIds.length, 12)
    }
    t.equal(g[0].text, m.tokenizer.decode(g[0].tokenIds, { skipSpecialTokens: true }), 'text decodes the ids')
    t.ok(
      g[0].logprobs.every((x) => x <= 0 && Number.isFinite(x)),
      'logprobs are finite and <= 0'
    )
  }
  // the greedy logprob is the log-softmax of the logits at that position
  const ids = m.tokenizer.encode(prompts[0])
  const [lg] = await m.logits([[...ids, ...a[0][0].tokenIds]])
  const V = m.config.vocab
  let worst = 0
  for (let j = 0; j < a[0][0].tokenIds.length; j++) {
    const row = lg.subarray((ids.length - 1 + j) * V, (ids.length + j) * V)
    let mx = -Infinity
    for (const x of row) mx = Math.max(mx, x)
    let s = 0
    for (const x of row) s += Math.exp(x - mx)
    const expect = row[a[0][0].tokenIds[j]] - mx - Math.log(s)
    worst = Math.max(worst, Math.abs(expect - a[0][0].logprobs[j]))
    t.equal(a[0][0].tokenIds[j], row.indexOf(mx), `greedy token ${j} is the argmax`)
  }
  t.ok(worst < 1e-4, `logprobs equal log-softmax of the logits (${worst.toExponential(2)})`)

  const sampled = { maxNewTokens: 10, temperature: 1, topK: 50, topP: 0.95, seed: 1234, n: 3 }
  const s1 = await m.generate(prompts.slice(0, 2), sampled)
  const s2 = await m.generate(prompts.slice(0, 2), sampled)
  t.same(s1, s2, 'sampling with a seed is reproducible')
  t.equal(s1[0].length, 3, 'n samples per prompt')
  t.notSame(s1[0][0].tokenIds, s1[0][1].tokenIds, 'samples of one prompt differ')
  const s3 = await m.generate(prompts.slice(0, 2), { ...sampled, seed: 99 })
  t.notSame(s3, s1, 'another seed gives other samples')
  m.dispose()
})

t.test('stopping: EOS ids from generation_config.json, stop strings, maxNewTokens, context', async (t) => {
  const m = await loadModel(base, { device: 'cpu', maxBatch: 2, maxContext: 64 })
  const prompt = 'def fibonacci(n):'
  const [[g]] = await m.generate([prompt], { maxNewTokens: 20, temperature: 0 })
  // stop string: a piece of the greedy continuation
  const stop = g.text.slice(3, 6)
  const [[s]] = await m.generate([prompt], { maxNewTokens: 20, temperature: 0, stop: [stop, 'never-appears'] })
  t.equal(s.finishReason, 'stop')
  t.ok(s.text.endsWith(stop) && g.text.startsWith(s.text), `text cut after the stop string ${JSON.stringify(stop)}`)
  t.ok(
    s.tokenIds.length < g.tokenIds.length && s.tokenIds.every((x, i) => x === g.tokenIds[i]),
    'tokens stop where the stop string completed'
  )
  // EOS: a copy of the folder whose generation_config names the 4th greedy token as EOS
  const dir = path.join(tmp, 'eos')
  fs.cpSync(base, dir, { recursive: true })
  const eosId = g.tokenIds[3]
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [eosId] }))
  const me = await loadModel(dir, { device: 'cpu', maxBatch: 1, maxContext: 64 })
  t.same(me.eosTokenIds, [eosId])
  const [[e]] = await me.generate([prompt], { maxNewTokens: 20, temperature: 0 })
  const firstAt = g.tokenIds.indexOf(eosId)
  t.equal(e.finishReason, 'eos')
  t.same(e.tokenIds, g.tokenIds.slice(0, firstAt + 1), 'generation ends with the EOS token')
  me.dispose()
  // a prompt that leaves room for 4 tokens in a 64-token context
  // control bytes: no merges were learned for them, so one token each
  const long = m.tokenizer.decode(Array.from({ length: 60 }, (_, i) => 1 + (i % 26)))
  t.equal(m.tokenizer.encode(long).length, 60)
  const [[c]] = await m.generate([long], { maxNewTokens: 20, temperature: 0 })
  t.equal(c.finishReason, 'length')
  t.equal(c.tokenIds.length, 4, 'the context bounds the generation')
  const tooLong = m.tokenizer.decode(Array.from({ length: 64 }, () => 2))
  await t.rejects(m.generate([tooLong], { maxNewTokens: 2 }), { code: 'ERR_INVALID_ARG' }, 'a prompt filling the context is rejected')
  m.dispose()
})

t.test('generation runs off the event loop, reports progress and stops on AbortSignal', async (t) => {
  const m = await loadModel(variants[6].dir, { device: 'cpu', maxBatch: 2, maxContext: 512 })
  let ticks = 0
  const timer = setInterval(() => {
    ticks++
  }, 1)
  const seen = []
  const res = await m.generate(['a', 'b', 'c'], { maxNewTokens: 30, temperature: 0, onProgress: (p) => seen.push(p) })
  const produced = res.reduce((n, g) => n + g[0].tokenIds.length, 0)
  clearInterval(timer)
  t.ok(ticks > 3, `event loop kept running during generation (${ticks} timer ticks)`)
  t.ok(
    seen.length > 1 && seen.at(-1).done === 3 && seen.at(-1).total === 3 && seen.at(-1).generatedTokens === produced,
    'progress reaches done == total with every token counted'
  )
  const ac = new AbortController()
  const p = m.generate(['x', 'y'], {
    maxNewTokens: 400,
    temperature: 0,
    signal: ac.signal,
    onProgress: (q) => {
      if (q.generatedTokens >= 4) ac.abort()
    }
  })
  await t.rejects(p, { code: 'ABORT_ERR' }, 'aborting rejects with ABORT_ERR')
  const after = await m.generate(['x'], { maxNewTokens: 3, temperature: 0 })
  t.equal(after[0][0].tokenIds.length, 3, 'the model is usable after an abort')
  m.dispose()
  await t.rejects(m.generate(['x']), { code: 'ERR_INVALID_ARG' }, 'a disposed model refuses work')
})

t.test('chat template rendering, continuing a final assistant message', async (t) => {
  const m = await loadModel(base, { device: 'cpu', maxBatch: 1, maxContext: 64 })
  const text = m.renderChat(
    [
      { role: 'user', content: 'Fix the bug.' },
      { role: 'assistant', content: 'Let me solve this step by step.\n<think>' }
    ],
    { continueFinalMessage: true }
  )
  t.equal(
    text,
    '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nFix the bug.<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think>'
  )
  const gen = m.renderChat([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true })
  t.ok(gen.endsWith('<|im_start|>assistant\n'))
  const ids = m.tokenizer.encode(gen)
  t.equal(ids[0], m.tokenizer.tokenToId('<|im_start|>'), 'special tokens encode to their ids')
  m.dispose()
})

t.test('device selection', async (t) => {
  const info = require('../dist/cjs/index.js').systemInfo()
  if (!info.cuda.available) {
    await t.rejects(
      loadModel(base, { device: 'cuda' }),
      { code: 'ERR_CUDA_UNAVAILABLE', message: new RegExp(info.cuda.reason.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').slice(0, 40)) },
      'cuda requested without a GPU: the reason is given'
    )
  }
  const m = await loadModel(base, { device: 'auto', maxBatch: 1, maxContext: 16 })
  t.equal(m.memory.device, info.cuda.available ? 'cuda' : 'cpu', "'auto' runs on the GPU when one is usable, else the CPU")
  m.dispose()
  await t.rejects(loadModel(base, { device: 'tpu' }), { code: 'ERR_INVALID_ARG' })
})
