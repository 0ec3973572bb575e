// Malformed model folders and safetensors files give clear ERR_MODEL errors naming the file and tensor,
// never a crash: header checks (length, JSON, dtype, shape, offsets, overlaps), missing/truncated files,
// wrong shapes, unknown architecture, bad JSON, shards through model.safetensors.index.json.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require } from './helpers.mjs'

const { loadModel, initModel } = require('../dist/cjs/index.js')
const { writeFloat32Safetensors, readSafetensorsHeader } = require('../dist/cjs/safetensors.js')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-st-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const good = path.join(tmp, 'good')
initModel({ preset: 'tiny', arch: 'qwen2', out: good, seed: 7 })

/** A raw safetensors file from a header object and a data section length. */
function rawFile(name, header, dataBytes, { lengthOverride } = {}) {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header))
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(lengthOverride ?? json.length))
  const file = path.join(tmp, name)
  fs.writeFileSync(file, Buffer.concat([len, json, Buffer.alloc(dataBytes)]))
  return file
}

t.test('writer/reader round trip and header fields', async (t) => {
  const file = path.join(tmp, 'rt.safetensors')
  writeFloat32Safetensors(
    file,
    [
      { name: 'a', shape: [2, 3], data: new Float32Array(6) },
      { name: 'b', shape: [5], data: new Float32Array(5) }
    ],
    'BF16',
    { note: 'x' }
  )
  const h = readSafetensorsHeader(file)
  t.same(
    h.map((x) => [x.name, x.dtype, x.shape, x.end - x.begin]),
    [
      ['a', 'BF16', [2, 3], 12],
      ['b', 'BF16', [5], 10]
    ],
    '__metadata__ is skipped; sizes match'
  )
  t.notOk(
    fs.readdirSync(tmp).some((f) => f.includes('.tmp-')),
    'no temp file left behind'
  )
})

t.test('every header field is validated, with the file and tensor named', async (t) => {
  const cases = [
    ['short', null, /too short/],
    ['hugelen', 'len', /header length .* exceeds the file size/],
    ['badjson', '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]', /not valid JSON/],
    ['notobj', '[1, 2]', /must be a JSON object/],
    ['dtype', { w: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, /tensor 'w': dtype 'I64' is not supported/],
    ['shape', { w: { dtype: 'F32', shape: [2, -1], data_offsets: [0, 8] } }, /tensor 'w': shape entries must be non-negative integers/],
    ['size', { w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, /tensor 'w': 8 bytes but dtype F32 x shape needs 12/],
    [
      'past',
      { w: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } },
      /tensor 'w': data_offsets \[8, 24\) run past the data section \(16 bytes/
    ],
    ['order', { w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, /begin 8 > end 4/],
    [
      'overlap',
      { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F16', shape: [4], data_offsets: [4, 12] } },
      /tensors 'a' and 'b' overlap/
    ],
    ['offsets', { w: { dtype: 'F32', shape: [1], data_offsets: [0] } }, /tensor 'w': 'data_offsets' must be an array/],
    ['nodtype', { w: { shape: [1], data_offsets: [0, 4] } }, /tensor 'w': missing or non-string 'dtype'/],
    [
      'dup',
      '{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
      /tensor 'w' appears twice/
    ]
  ]
  for (const [name, header, re] of cases) {
    let file
    if (header === null) {
      file = path.join(tmp, name)
      fs.writeFileSync(file, Buffer.alloc(5))
    } else if (header === 'len') file = rawFile(name, {}, 16, { lengthOverride: 1e6 })
    else file = rawFile(name, header, 16)
    t.throws(() => readSafetensorsHeader(file), { code: 'ERR_MODEL', message: re }, `${name}: ${re}`)
    try {
      readSafetensorsHeader(file)
    } catch (e) {
      t.ok(e.message.includes(file), `${name}: the message names the file`)
    }
  }
  t.throws(() => readSafetensorsHeader(path.join(tmp, 'missing.safetensors')), { code: 'ERR_MODEL', message: /cannot open/ })
})

function copyGood(name) {
  const dir = path.join(tmp, `folder-${name}`)
  fs.cpSync(good, dir, { recursive: true })
  return dir
}

t.test('malformed model folders', async (t) => {
  const opts = { device: 'cpu', maxBatch: 1, maxContext: 16 }
  let dir = copyGood('noweights')
  fs.rmSync(path.join(dir, 'model.safetensors'))
  await t.rejects(loadModel(dir, opts), { code: 'ERR_MODEL', message: /no model.safetensors/ }, 'missing safetensors')

  dir = copyGood('truncated')
  const f = path.join(dir, 'model.safetensors')
  fs.truncateSync(f, fs.statSync(f).size - 100)
  await t.rejects(loadModel(dir, opts), { code: 'ERR_MODEL', message: /run past the data section.*truncated/ }, 'truncated safetensors')

  dir = copyGood('badjson')
  fs.writeFileSync(path.join(dir, 'config.json'), '{"architectures": ["Qwen2ForCausalLM"],')
  await t.rejects(loadModel(dir, opts), { code: 'ERR_MODEL', message: /config.json: is not valid JSON/ }, 'bad JSON')

  dir = copyGood('noconfig')
  fs.rmSync(path.join(dir, 'config.json'))
  await t.rejects(loadModel(dir, opts), { code: 'ERR_MODEL', message: /config.json: cannot read/ }, 'missing config.json')

  const cfg = JSON.parse(fs.readFileSync(path.join(good, 'config.json')))
  dir = copyGood('arch')
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, architectures: ['MistralForCausalLM'] }))
  await t.rejects(
    loadModel(dir, opts),
    { code: 'ERR_MODEL', message: /architecture "MistralForCausalLM" is not supported/ },
    'unknown architecture'
  )

  dir = copyGood('field')
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, num_key_value_heads: 3 }))
  await t.rejects(loadModel(dir, opts), { code: 'ERR_MODEL', message: /multiple of "num_key_value_heads"/ }, 'inconsistent heads')

  dir = copyGood('scaling')
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, rope_scaling: { rope_type: 'yarn', factor: 4 } }))
  await t.rejects(loadModel(dir, opts), { code: 'ERR_MODEL', message: /rope_scaling" type "yarn" is not supported/ })

  dir = copyGood('shape')
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, intermediate_size: cfg.intermediate_size + 1 }))
  await t.rejects(
    loadModel(dir, opts),
    {
      code: 'ERR_MODEL',
      message: /tensor 'model.layers.0.mlp.gate_proj.weight' has shape \[160, 64\] but config.json implies \[161, 64\]/
    },
    'wrong shape names tensor and file'
  )

  dir = copyGood('missingtensor')
  const keep = readSafetensorsHeader(path.join(good, 'model.safetensors')).filter((x) => x.name !== 'model.norm.weight')
  writeFloat32Safetensors(
    path.join(dir, 'model.safetensors'),
    keep.map((x) => ({ name: x.name, shape: x.shape, data: new Float32Array(x.shape.reduce((a, b) => a * b, 1)) })),
    'F32'
  )
  await t.rejects(
    loadModel(dir, opts),
    { code: 'ERR_MODEL', message: /tensor 'model.norm.weight' is missing from .*model.safetensors/ },
    'missing tensor'
  )

  dir = copyGood('tokenizer')
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{}')
  await t.rejects(loadModel(dir, opts), { code: 'ERR_MODEL', message: /tokenizer.json/ }, 'broken tokenizer.json')

  dir = copyGood('genconfig')
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: 'x' }))
  await t.rejects(loadModel(dir, opts), { code: 'ERR_MODEL', message: /eos_token_id must be an integer or a list/ })
})

t.test('sharded weights through model.safetensors.index.json', async (t) => {
  const headers = readSafetensorsHeader(path.join(good, 'model.safetensors'))
  const { loadModel: _l } = require('../dist/cjs/index.js')
  const ref = await _l(good, { device: 'cpu', maxBatch: 1, maxContext: 16 })
  const [want] = await ref.logits([[1, 2, 3, 4, 5]])
  ref.dispose()
  // rebuild the weights from the good file's bytes, split over three shards
  const raw = fs.readFileSync(path.join(good, 'model.safetensors'))
  const dataStart = 8 + Number(raw.readBigUInt64LE(0))
  const tensors = headers.map((h) => ({
    name: h.name,
    shape: h.shape,
    data: new Float32Array(raw.buffer.slice(raw.byteOffset + dataStart + h.begin, raw.byteOffset + dataStart + h.end))
  }))
  const dir = path.join(tmp, 'sharded')
  fs.mkdirSync(dir)
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json'])
    fs.copyFileSync(path.join(good, f), path.join(dir, f))
  const weightMap = {}
  for (let s = 0; s < 3; s++) {
    const part = tensors.filter((_, i) => i % 3 === s)
    const name = `model-0000${s + 1}-of-00003.safetensors`
    writeFloat32Safetensors(path.join(dir, name), part, 'F32')
    for (const p of part) weightMap[p.name] = name
  }
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }))
  const m = await loadModel(dir, { device: 'cpu', maxBatch: 1, maxContext: 16 })
  const [got] = await m.logits([[1, 2, 3, 4, 5]])
  t.same(Array.from(got), Array.from(want), 'three shards give the logits of the single file')
  m.dispose()

  const other = ['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors'].find((n) => n !== weightMap['model.norm.weight'])
  const moved = { ...weightMap, 'model.norm.weight': other }
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: moved }))
  await t.rejects(loadModel(dir, { device: 'cpu' }), {
    code: 'ERR_MODEL',
    message: /weight_map puts 'model.norm.weight' in model-0000\d-of-00003.safetensors, which does not hold it/
  })
  fs.rmSync(path.join(dir, 'model-00003-of-00003.safetensors'))
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }))
  await t.rejects(loadModel(dir, { device: 'cpu' }), {
    code: 'ERR_MODEL',
    message: /names shard model-00003-of-00003.safetensors, which is missing/
  })
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{"weight_map": 3}')
  await t.rejects(loadModel(dir, { device: 'cpu' }), { code: 'ERR_MODEL', message: /weight_map" must be an object/ })
})
