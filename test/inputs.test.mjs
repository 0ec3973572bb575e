// Bad inputs from issue 11 (writers, values, errors), one test per finding: each asserts the RecodeError
// code and that the message names the file, line, field or index, and that nothing was written or left.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawn, spawnSync } from 'child_process'
import { root, require } from './helpers.mjs'

const lib = require('../dist/cjs/index.js')
const { native } = require('../dist/cjs/native.js')
const { readSafetensors, writeSafetensors } = require('../dist/cjs/safetensors.js')
const { readJsonl } = require('../dist/cjs/data/jsonl.js')
const { DEFAULT_MAX_REWARD_CHARS } = require('../dist/cjs/reward/index.js')
const cli = path.join(root, 'dist', 'cjs', 'cli.js')

const python = process.env.RECODE_PYTHON || 'python3'
const probe = spawnSync(python, ['--version'], { encoding: 'utf8' })
const noPython = probe.status === 0 ? false : `no usable Python interpreter ('${python}': ${probe.error?.message ?? probe.stderr})`
if (noPython) t.comment(`skipping the tests that run Python: ${noPython}`)

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-inputs-'))
t.teardown(() => {
  lib.closePythonWorkers()
  fs.rmSync(tmp, { recursive: true, force: true })
})

function runCli(args, options = {}) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120000, ...options })
}

async function rejects(t, promiseOrFn, code, match, what) {
  try {
    await (typeof promiseOrFn === 'function' ? promiseOrFn() : promiseOrFn)
    t.fail(`${what}: did not throw`)
  } catch (err) {
    t.equal(err.code, code, `${what}: code ${code} (${err.message})`)
    if (match) t.match(err.message, match, `${what}: the message says what and where`)
  }
}

const fenced = (code) => `<think>x</think>\n<answer>\n\`\`\`python\n${code}\n\`\`\`\n</answer>`

t.test('init-model refuses a folder that holds files unless --force; fails fast where it cannot create', async (t) => {
  const dir = path.join(tmp, 'model')
  let r = runCli(['init-model', '--out', dir, '--seed', '1'])
  t.equal(r.status, 0, r.stderr)
  const before = fs.readFileSync(path.join(dir, 'model.safetensors'))
  r = runCli(['init-model', '--out', dir, '--seed', '2'])
  t.equal(r.status, 1, 'a second run into the same folder fails')
  t.match(r.stderr, /ERR_OUTPUT_EXISTS/)
  t.match(r.stderr, dir, 'the error names the folder')
  t.match(r.stderr, /--force/, 'and says how to overwrite')
  t.ok(before.equals(fs.readFileSync(path.join(dir, 'model.safetensors'))), 'the existing weights are untouched')
  await rejects(t, () => lib.initModel({ preset: 'tiny', arch: 'qwen2', out: dir }), 'ERR_OUTPUT_EXISTS', dir, 'initModel()')
  r = runCli(['init-model', '--out', dir, '--seed', '2', '--force'])
  t.equal(r.status, 0, `--force overwrites: ${r.stderr}`)
  t.notOk(before.equals(fs.readFileSync(path.join(dir, 'model.safetensors'))), "with --force the weights are the new seed's")
  const empty = path.join(tmp, 'empty')
  fs.mkdirSync(empty)
  t.equal(runCli(['init-model', '--out', empty]).status, 0, 'an existing empty folder is fine')

  // /proc refuses mkdir with ENOENT for a parent that exists: fs.mkdirSync({ recursive }) spins on it forever.
  r = runCli(['init-model', '--out', '/proc/recode-test/model'], { timeout: 60000 })
  t.equal(r.error, undefined, 'init-model under /proc ends by itself')
  t.equal(r.status, 1)
  t.match(r.stderr, /ERR_OUTPUT/)
  t.match(r.stderr, '/proc/recode-test', 'the error names the folder it could not create')
  await rejects(
    t,
    () => lib.train({ preset: 'tiny', outputDir: '/proc/recode-test/runs', steps: 1 }),
    'ERR_OUTPUT',
    /\/proc\/recode-test/,
    'train() with an output folder under /proc'
  )
})

t.test('recode reward and the JSONL readers reject invalid UTF-8 with the line, never U+FFFD', async (t) => {
  const good = JSON.stringify({ completion: 'no code', target: 'x = 1' })
  const cases = [
    {
      name: 'stray 0xff',
      bytes: Buffer.concat([Buffer.from(good + '\n' + '{"completion": "a'), Buffer.from([0xff]), Buffer.from('", "target": "b"}\n')]),
      line: 2,
      byte: '0xff'
    },
    {
      name: 'overlong slash',
      bytes: Buffer.concat([
        Buffer.from(good + '\n\n' + '{"completion": "'),
        Buffer.from([0xc0, 0xaf]),
        Buffer.from('", "target": "b"}\n')
      ]),
      line: 3,
      byte: '0xc0'
    },
    {
      name: 'surrogate',
      bytes: Buffer.concat([Buffer.from('{"completion": "'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('", "target": "b"}\n')]),
      line: 1,
      byte: '0xed'
    },
    { name: 'truncated at the end', bytes: Buffer.concat([Buffer.from(good + '\n' + good + '\n'), Buffer.from([0xe2, 0x82])]), line: 3 }
  ]
  for (const c of cases) {
    const input = path.join(tmp, `utf8-${c.name.replace(/\W/g, '')}.jsonl`)
    fs.writeFileSync(input, c.bytes)
    const output = path.join(tmp, 'utf8.out.jsonl')
    const r = runCli(['reward', '--input', input, '--output', output])
    t.equal(r.status, 1, `${c.name}: refused`)
    t.match(r.stderr, `${input}:${c.line}: invalid UTF-8`, `${c.name}: names file and line`)
    if (c.byte) t.match(r.stderr, c.byte, `${c.name}: and the byte`)
    t.match(r.stderr, /ERR_DATA/)
    t.notOk(fs.existsSync(output), `${c.name}: nothing written`)
    await rejects(t, () => readJsonl(input), 'ERR_DATA', `${input}:${c.line}: invalid UTF-8`, `${c.name}: readJsonl`)
  }
  // Valid multi-byte text (and a BOM) still reads.
  const ok = path.join(tmp, 'utf8-ok.jsonl')
  fs.writeFileSync(ok, '\ufeff' + JSON.stringify({ completion: 'é → 😀', target: 'x' }) + '\n')
  t.same(
    readJsonl(ok).map((r) => r.value.completion),
    ['é → 😀']
  )
})

t.test('recode reward: deeply nested JSON is an ERR_DATA naming the line, not a RangeError', async (t) => {
  const input = path.join(tmp, 'deep.jsonl')
  const deep = '['.repeat(100000) + ']'.repeat(100000)
  fs.writeFileSync(
    input,
    JSON.stringify({ completion: 'a', target: 'b' }) + '\n' + `{"completion": "a", "target": "b", "extra": ${deep}}\n`
  )
  const r = runCli(['reward', '--input', input])
  t.equal(r.status, 1)
  t.match(r.stderr, `${input}:2: `)
  t.match(r.stderr, /ERR_DATA/)
  t.notMatch(r.stderr, /RangeError|at .*\.js:\d+/, 'no raw RangeError or stack trace')
})

t.test('recode reward | head ends quietly on EPIPE', async (t) => {
  // No ```python block: scoring needs no interpreter, and 60,000 lines overflow any pipe buffer.
  const input = path.join(tmp, 'many.jsonl')
  const line = JSON.stringify({ completion: 'no code here', target: 'x = 1' }) + '\n'
  fs.writeFileSync(input, line.repeat(60000))
  const r = spawnSync(
    'bash',
    ['-o', 'pipefail', '-c', `"${process.execPath}" "${cli}" reward --input "${input}" | head -c 100 > /dev/null`],
    { encoding: 'utf8', timeout: 120000 }
  )
  t.equal(r.stderr, '', 'nothing on stderr (no stack trace)')
  t.equal(r.status, 141, 'the writer ends as SIGPIPE would end it (128 + 13)')
})

t.test('recode reward interrupted by SIGINT or SIGTERM leaves no temporary file and no output', { skip: noPython }, async (t) => {
  // Long pairs make the scoring take a while; the test waits for the temporary file, then signals.
  const input = path.join(tmp, 'slow.jsonl')
  const code = 'x = 1\n'.repeat(25000)
  const rows = []
  for (let i = 0; i < 40; i++) rows.push(JSON.stringify({ completion: fenced(code + `y = ${i}\n`), target: code }))
  fs.writeFileSync(input, rows.join('\n') + '\n')
  for (const [sig, status] of [
    ['SIGINT', 130],
    ['SIGTERM', 143]
  ]) {
    const dir = fs.mkdtempSync(path.join(tmp, 'sig-'))
    const output = path.join(dir, 'out.jsonl')
    const child = spawn(process.execPath, [cli, 'reward', '--input', input, '--output', output], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d) => {
      stderr += d
    })
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
    let sawTmp = false
    const deadline = Date.now() + 60000 // a backstop only: the file appears as soon as the input is read
    while (!sawTmp && Date.now() < deadline) {
      sawTmp = fs.readdirSync(dir).some((f) => f.includes('.tmp-'))
      if (!sawTmp) await new Promise((resolve) => setTimeout(resolve, 20))
    }
    t.ok(sawTmp, `${sig}: the temporary output exists while scoring`)
    child.kill(sig)
    const end = await exited
    t.equal(end.code, status, `${sig}: exit status ${status} (${stderr.trim()})`)
    t.same(fs.readdirSync(dir), [], `${sig}: no temporary file and no output left`)
  }
})

t.test('reward inputs have a length cap (configurable) with a clear error', async (t) => {
  t.equal(DEFAULT_MAX_REWARD_CHARS, 1 << 20)
  const long = 'x'.repeat(DEFAULT_MAX_REWARD_CHARS + 1)
  await rejects(
    t,
    () => lib.rewards.score(['a', long], ['b', 'c']),
    'ERR_INVALID_ARG',
    /completions\[1\] is 1048577 characters, above the cap of 1048576/,
    'default cap'
  )
  await rejects(
    t,
    () => lib.rewards.recode(['a'], ['b'.repeat(11)], { maxChars: 10 }),
    'ERR_INVALID_ARG',
    /targets\[0\] is 11 characters/,
    'maxChars option'
  )
  await rejects(
    t,
    () => lib.rewards.score(['a'], ['b'], { maxChars: -5 }),
    'ERR_INVALID_ARG',
    /maxChars must be a positive integer or Infinity, got -5/,
    'a negative cap'
  )
  const r0 = await lib.rewards.score(['no code'], ['x'], { maxChars: Infinity })
  t.equal(r0.reward[0], -3, 'Infinity switches the cap off')

  const input = path.join(tmp, 'cap.jsonl')
  fs.writeFileSync(
    input,
    JSON.stringify({ completion: 'short', target: 'x' }) + '\n' + JSON.stringify({ completion: 'x'.repeat(50), target: 'x' }) + '\n'
  )
  let r = runCli(['reward', '--input', input, '--max-chars', '20'])
  t.equal(r.status, 1)
  t.match(r.stderr, `${input}:2: field "completion" is 50 characters, above the cap of 20`)
  t.match(r.stderr, /ERR_DATA/)
  for (const bad of ['-5', '1e3', 'abc', '0']) {
    r = runCli(['reward', '--input', input, '--max-chars', bad])
    t.match(r.stderr, `--max-chars must be a positive integer or 'inf', got '${bad}'`, `--max-chars ${bad} is refused`)
  }
  r = runCli(['reward', '--input', input, '--max-chars', 'inf'])
  t.equal(r.status, 0, r.stderr)
})

t.test('recode reward shows progress on long inputs, also when writing to stdout', { skip: noPython }, async (t) => {
  const input = path.join(tmp, 'progress.jsonl')
  const code = 'x = 1\n'.repeat(20000) // 120,000 characters a side: 1.4e10 cells a pair
  const rows = [0, 1].map((i) => JSON.stringify({ completion: fenced(code + `y = ${i}\n`), target: code }))
  fs.writeFileSync(input, rows.join('\n') + '\n')
  const r = runCli(['reward', '--input', input])
  t.equal(r.status, 0, r.stderr)
  t.equal(r.stdout.trim().split('\n').length, 2)
  t.match(r.stderr, /1\/2 scored \(50% of the edit-distance work\)/)
  t.match(r.stderr, /2\/2 scored \(100% of the edit-distance work\)/)
})

t.test('--python /bin/false gives a non-empty reason (reward and evaluate)', async (t) => {
  const input = path.join(tmp, 'py.jsonl')
  fs.writeFileSync(input, JSON.stringify({ completion: fenced('x = 1'), target: 'x = 1' }) + '\n')
  const r = runCli(['reward', '--input', input, '--python', '/bin/false'])
  t.equal(r.status, 1)
  t.match(r.stderr, /ERR_PYTHON/)
  t.match(r.stderr, /exited with code 1/)
  const data = path.join(tmp, 'humaneval.jsonl')
  fs.writeFileSync(
    data,
    JSON.stringify({
      task_id: 'T/0',
      prompt: 'def f():\n',
      entry_point: 'f',
      canonical_solution: '    return 1\n',
      test: 'def check(c):\n    assert c() == 1\n'
    }) + '\n'
  )
  try {
    await lib.evaluate({
      benchmark: 'humaneval',
      data,
      completions: [{ id: 'T/0', completion: '    return 1\n' }],
      sandbox: { python: '/bin/false' }
    })
    t.fail('evaluate with /bin/false did not throw')
  } catch (err) {
    t.equal(err.code, 'ERR_PYTHON', err.message)
    t.match(err.message, /\/bin\/false': exited with status 1, no message/, 'the reason is stated')
  }
  const e = runCli(['eval', 'humaneval', '--data', data, '--completions', input, '--python', '/bin/false'])
  t.equal(e.status, 1)
  t.match(e.stderr, /exited with status 1/, `recode eval says why (${e.stderr.trim()})`)
})

t.test('numbers are range-checked before the native call and printed as given', async (t) => {
  const logits = new Float32Array([0, 1, 2, 3])
  await rejects(
    t,
    () => lib.sample(logits, 1, { topK: 1e12 }),
    'ERR_INVALID_ARG',
    /topK must be an integer in \[0, 2147483647\] \(0 = off\), got 1000000000000/,
    'topK 1e12'
  )
  await rejects(t, () => lib.sample(logits, 1, { topK: [2 ** 31] }), 'ERR_INVALID_ARG', /got 2147483648/, 'topK 2^31 per row')
  await rejects(t, () => lib.sample(logits, 1, { topK: 1e12 }), 'ERR_INVALID_ARG', /^(?!.*-727379968)/, 'no wrapped value')
  // The native argument parser checks the double before any conversion and prints it as JavaScript would.
  const addon = native()
  const call = (rows) =>
    addon.sampleRows('cpu', {
      logits,
      rows,
      vocab: 4,
      temperature: new Float32Array(1),
      topK: new Int32Array(1),
      topP: new Float32Array([1]),
      minP: new Float32Array(1),
      seed: 0,
      rowIds: new Float64Array(1),
      steps: new Float64Array(1)
    })
  for (const [rows, shown] of [
    [1e12, '1000000000000'],
    [2 ** 32 + 1, '4294967297'],
    [1.5, '1.5'],
    [-3, '-3'],
    [NaN, 'NaN'],
    [1e300, '1e+300']
  ]) {
    try {
      await call(rows)
      t.fail(`rows ${rows} accepted`)
    } catch (err) {
      t.equal(err.code, 'ERR_INVALID_ARG')
      t.match(err.message, `(options.rows) must be an integer in [1, 16777216], got ${shown}`, `rows ${shown} is reported as given`)
    }
  }
})

t.test('sample: a temperature whose reciprocal overflows float32 is rejected, not NaN', async (t) => {
  const logits = new Float32Array([0.5, 1, 3, 3, -2])
  for (const temp of [1e-45, 1e-40, 1e-50, 2 ** -127]) {
    await rejects(
      t,
      () => lib.sample(logits, 1, { temperature: temp }),
      'ERR_INVALID_ARG',
      /too small: 1\/T overflows float32/,
      `temperature ${temp}`
    )
  }
  await rejects(t, () => lib.sample(logits, 1, { temperature: 1e39 }), 'ERR_INVALID_ARG', /beyond float32's range/, 'temperature 1e39')
  // The native check holds for callers that skip the TypeScript one (float32 1e-45 is the subnormal 1.4e-45).
  const addon = native()
  await rejects(
    t,
    () =>
      addon.sampleRows('cpu', {
        logits,
        rows: 1,
        vocab: 5,
        temperature: new Float32Array([1e-45]),
        topK: new Int32Array(1),
        topP: new Float32Array([1]),
        minP: new Float32Array(1),
        seed: 0,
        rowIds: new Float64Array(1),
        steps: new Float64Array(1)
      }),
    'ERR_INVALID_ARG',
    /temperature 1\.4\d*e-45 is too small/,
    'native sampleRows'
  )
  // At the smallest accepted temperature the distribution is a point mass on the first maximum... of its
  // tie: both 3s keep weight 1, so the draw is one of them with log-probability log(1/2).
  for (const device of ['cpu', 'emulated']) {
    const r = await lib.sample(logits, 1, { temperature: 2 ** -126, seed: 3, device })
    t.ok(r.tokens[0] === 2 || r.tokens[0] === 3, `${device}: one of the tied maxima`)
    t.ok(Math.abs(r.logprobs[0] - Math.log(0.5)) < 1e-6, `${device}: log-probability log(1/2), finite (${r.logprobs[0]})`)
    t.ok(Number.isFinite(r.filteredLogprobs[0]), `${device}: filtered log-probability finite`)
  }
  const g = await lib.sample(logits, 1, { temperature: 0 })
  t.equal(g.tokens[0], 2, 'temperature 0 is still greedy')
})

t.test('NaN and Infinity are rejected at the RL-kernel boundary with the index', async (t) => {
  const B = 2
  const T = 3
  const base = () => ({
    batch: B,
    length: T,
    logp: new Float32Array(B * T).fill(-1),
    oldLogp: new Float32Array(B * T).fill(-1),
    advantages: new Float32Array([1, -1]),
    mask: new Float32Array(B * T).fill(1)
  })
  const ok = await lib.policyLoss(base())
  t.ok(Number.isFinite(ok.metrics.loss), 'finite inputs pass')
  for (const [name, index, value] of [
    ['logp', 4, NaN],
    ['oldLogp', 0, -Infinity],
    ['advantages', 1, Infinity],
    ['mask', 5, NaN]
  ]) {
    const inputs = base()
    inputs[name][index] = value
    await rejects(
      t,
      () => lib.policyLoss(inputs),
      'ERR_INVALID_ARG',
      `policyLoss: ${name}[${index}] is ${value}`,
      `${name}[${index}] = ${value}`
    )
  }
  const withRef = { ...base(), refLogp: new Float32Array(B * T).fill(-1) }
  withRef.refLogp[2] = NaN
  await rejects(t, () => lib.policyLoss(withRef, { klCoef: 0.1 }), 'ERR_INVALID_ARG', 'refLogp[2] is NaN', 'refLogp')
  await rejects(
    t,
    () => lib.policyLoss(base(), { clipLow: NaN }),
    'ERR_INVALID_ARG',
    'clipLow must be a finite number, got NaN',
    'clipLow NaN'
  )

  const rewards = new Float32Array([1, 2, 3, 4, 5, 6])
  t.equal(lib.grpoAdvantages(rewards, 3).length, 6)
  rewards[4] = NaN
  t.throws(() => lib.grpoAdvantages(rewards, 3), { code: 'ERR_INVALID_ARG', message: /grpoAdvantages: rewards\[4\] is NaN/ })
  const nanGroup = new Float32Array([NaN, NaN, 1, 2])
  t.throws(
    () => lib.dapoDynamicMask(nanGroup, 2),
    { code: 'ERR_INVALID_ARG', message: /dapoDynamicMask: rewards\[0\] is NaN/ },
    'a group of NaN rewards is not kept silently'
  )
  t.throws(() => lib.dapoDynamicMask(new Float32Array([1, Infinity]), 2), { code: 'ERR_INVALID_ARG', message: /rewards\[1\] is Infinity/ })
  t.throws(() => lib.overlongPenalty([1, 2], { maxLength: NaN, buffer: 1 }), {
    code: 'ERR_INVALID_ARG',
    message: /maxLength must be a finite number/
  })
})

t.test('safetensors: a bad \\u escape in the header is an ERR_MODEL naming the file', async (t) => {
  const entry = '{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
  const cases = [
    ['zzzz', '"a\\uzzzz"'],
    ['short', '"a\\u12"'],
    ['partly hex', '"a\\u12zz"'],
    ['lone low surrogate', '"a\\udc00"'],
    ['high surrogate alone', '"a\\ud800x"'],
    ['high then non-low', '"a\\ud800\\u0041"']
  ]
  for (const [name, key] of cases) {
    const json = Buffer.from(`{${key}: ${entry}}`)
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(BigInt(json.length))
    const file = path.join(tmp, `esc-${name.replace(/\W/g, '')}.safetensors`)
    fs.writeFileSync(file, Buffer.concat([len, json, Buffer.alloc(4)]))
    t.throws(
      () => native().safetensorsHeader(file),
      {
        code: 'ERR_MODEL',
        message: new RegExp(`^${file.replace(/[.]/g, '\\.')}: header is not valid JSON \\((bad|unpaired) .*\\\\u escape`)
      },
      name
    )
  }
  // Valid escapes decode: a BMP character and a surrogate pair.
  const json = Buffer.from(`{"\\u00e9\\ud83d\\ude00": ${entry}}`)
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(json.length))
  const file = path.join(tmp, 'esc-ok.safetensors')
  fs.writeFileSync(file, Buffer.concat([len, json, Buffer.alloc(4)]))
  t.same(
    native()
      .safetensorsHeader(file)
      .map((x) => x.name),
    ['é😀']
  )
})

t.test('loadModel: absurd config.json values are ERR_MODEL naming config.json; NaN weights fail at load', async (t) => {
  const good = path.join(tmp, 'cfg-good')
  lib.initModel({ preset: 'tiny', arch: 'qwen2', out: good, seed: 3 })
  const copy = (name) => {
    const dir = path.join(tmp, name)
    fs.cpSync(good, dir, { recursive: true })
    return dir
  }
  const config = JSON.parse(fs.readFileSync(path.join(good, 'config.json'), 'utf8'))
  for (const [field, value] of [
    ['num_hidden_layers', 1e9],
    ['num_hidden_layers', 2 ** 40],
    ['hidden_size', 1e7],
    ['vocab_size', 2 ** 31],
    ['intermediate_size', 1e12],
    ['num_attention_heads', 5000],
    ['head_dim', 4096],
    ['max_position_embeddings', 1e15]
  ]) {
    const dir = copy(`cfg-${field}-${value}`)
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, [field]: value }))
    await rejects(
      t,
      () => lib.loadModel(dir),
      'ERR_MODEL',
      new RegExp(`config\\.json: .*${field === 'head_dim' ? 'head' : `"${field}"`}`),
      `${field} = ${value}`
    )
  }

  for (const [dtype, bad, shown] of [
    ['F32', NaN, 'NaN'],
    ['BF16', Infinity, 'an infinite value']
  ]) {
    const dir = copy(`nan-${dtype}`)
    const file = path.join(dir, 'model.safetensors')
    const { tensors } = readSafetensors(file)
    const out = {}
    for (const [name, x] of Object.entries(tensors)) {
      const values =
        x.dtype === 'BF16'
          ? lib.fromBf16(new Uint16Array(x.bytes.buffer.slice(x.bytes.byteOffset, x.bytes.byteOffset + x.bytes.byteLength)))
          : new Float32Array(x.bytes.buffer.slice(x.bytes.byteOffset, x.bytes.byteOffset + x.bytes.byteLength))
      if (name === 'model.layers.0.mlp.up_proj.weight') values[77] = bad
      out[name] =
        dtype === 'BF16' ? { dtype: 'BF16', shape: x.shape, data: lib.toBf16(values) } : { dtype: 'F32', shape: x.shape, data: values }
    }
    writeSafetensors(file, out, { format: 'pt' })
    await rejects(
      t,
      () => lib.loadModel(dir),
      'ERR_MODEL',
      `${file}: tensor 'model.layers.0.mlp.up_proj.weight' holds ${shown} at index 77`,
      `${dtype} weights with ${shown}`
    )
  }
})

t.test('entry points given null options throw a RecodeError with a code', async (t) => {
  const model = path.join(tmp, 'null-model')
  lib.initModel({ preset: 'tiny', arch: 'qwen2', out: model, seed: 4 })
  const m = await lib.loadModel(model)
  t.teardown(() => m.dispose?.())
  const calls = {
    train: () => lib.train({}, null),
    evaluate: () => lib.evaluate(null),
    'evaluate sandbox': () => lib.evaluate({ benchmark: 'humaneval', data: 'x', completions: [], sandbox: null }),
    'rewards.score': () => lib.rewards.score(['a'], ['b'], null),
    'rewards.recode': () => lib.rewards.recode(['a'], ['b'], null),
    editDistance: () => lib.editDistance(['a'], ['b'], null),
    editDistanceSync: () => lib.editDistanceSync(['a'], ['b'], null),
    similarities: () => lib.similarities(['a'], ['b'], null),
    sample: () => lib.sample(new Float32Array(4), 1, null),
    'policyLoss inputs': () => lib.policyLoss(null),
    'policyLoss options': () =>
      lib.policyLoss(
        {
          batch: 1,
          length: 1,
          logp: new Float32Array(1),
          oldLogp: new Float32Array(1),
          advantages: new Float32Array(1),
          mask: new Float32Array(1)
        },
        null
      ),
    grpoAdvantages: () => lib.grpoAdvantages(new Float32Array(2), 2, null),
    overlongPenalty: () => lib.overlongPenalty([1], null),
    tokenLogprobs: () => lib.tokenLogprobs({ logits: new Float32Array(2), positions: 1, vocab: 2 }, new Int32Array(1), null),
    loadModel: () => lib.loadModel(model, null),
    'loadModel dir': () => lib.loadModel(null),
    generate: () => m.generate(['x'], null),
    'generate topK': () => m.generate(['x'], { topK: 1e12, maxNewTokens: 1 }),
    'generate temperature': () => m.generate(['x'], { temperature: 1e-45, maxNewTokens: 1 }),
    logits: () => m.logits([[1]], null),
    renderChat: () => m.renderChat([{ role: 'user', content: 'x' }], null),
    initModel: () => lib.initModel(null),
    loadMigrationData: () => lib.loadMigrationData('x', null),
    splitMigrationData: () => lib.splitMigrationData([], null),
    renderChatTemplate: () => lib.renderChatTemplate('x', [{ role: 'user', content: 'x' }], null),
    startPythonWorkers: () => lib.startPythonWorkers(null),
    pythonParses: () => lib.pythonParses(['x'], null),
    syntheticTasks: () => lib.syntheticTasks(null),
    evaluateHeldOut: () => lib.evaluateHeldOut(m, [], null),
    renderPrompt: () => lib.renderPrompt(null, 'x'),
    writeReport: () => lib.writeReport(path.join(tmp, 'r.html'), null),
    runPython: () => lib.runPython('print(1)', null),
    runPrograms: () => lib.runPrograms(['print(1)'], null),
    'runPrograms sources': () => lib.runPrograms(null),
    describeIsolation: () => lib.describeIsolation({ kind: 'rlimits', protections: {} }, null),
    writeSafetensors: () => lib.writeSafetensors(path.join(tmp, 'n.safetensors'), null),
    ModelTrainer: () => new lib.ModelTrainer(m, null),
    'ModelTrainer model': () => new lib.ModelTrainer(null),
    trainFlagsToConfig: () => lib.trainFlagsToConfig(null),
    saveCheckpoint: () => lib.saveCheckpoint(path.join(tmp, 'ck'), null),
    saveAdapter: () => lib.saveAdapter(path.join(tmp, 'ad'), null, [])
  }
  for (const [name, f] of Object.entries(calls)) {
    try {
      await f()
      t.fail(`${name}: did not throw`)
    } catch (err) {
      t.equal(typeof err.code, 'string', `${name}: ${err.name} with code ${err.code} (${err.message})`)
      t.ok(err instanceof lib.RecodeError, `${name}: a RecodeError`)
    }
  }
})

t.test('lib/errors.ts lists every error code thrown in lib/ and src/', async (t) => {
  const doc = fs.readFileSync(path.join(root, 'lib/errors.ts'), 'utf8').split('export class')[0]
  const walk = (dir) =>
    fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]))
  const used = new Map()
  for (const file of [...walk(path.join(root, 'lib')), ...walk(path.join(root, 'src'))].filter((f) => /\.(ts|cpp|h)$/.test(f))) {
    for (const m of fs.readFileSync(file, 'utf8').matchAll(/['"]((?:ERR_[A-Z_]+)|ABORT_ERR)['"]/g))
      if (!used.has(m[1])) used.set(m[1], path.relative(root, file))
  }
  t.ok(used.size >= 15, `${used.size} codes found`)
  for (const [code, file] of used) t.ok(new RegExp(`\\b${code}\\b`).test(doc), `${code} (used in ${file}) is listed`)
})
