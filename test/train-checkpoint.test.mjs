// Checkpoints (atomic folders, keep-last-K, resume finds the newest complete one, a crash mid-write leaves the
// previous checkpoint usable, checksums with fallback from a corrupt newest one, no NaN checkpoint, nothing pruned
// before the new one reads back as written), the PEFT adapter folder, the safetensors writer, metrics.jsonl and the report.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { createHash } from 'crypto'
import { createRequire } from 'module'
import {
  saveCheckpoint,
  latestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  saveAdapter,
  loadAdapter,
  peftTensorNames,
  decoderModulePath
} from '../dist/cjs/train/checkpoint.js'
import { writeSafetensors, readSafetensors, encodeSafetensors, tensorToFloat32 } from '../dist/cjs/safetensors.js'
import { toBf16, toF16 } from '../dist/cjs/dtype.js'
import { MetricsWriter, readMetrics } from '../dist/cjs/train/metrics.js'
import { writeReport, renderReport } from '../dist/cjs/train/report.js'
import { writeFileAtomic } from '../dist/cjs/atomicFile.js'
import { rng, root } from './helpers.mjs'
import { torchUnavailable } from './train-torch.mjs'

function tmpdir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-train-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

function save(root, step, r, keep = 3) {
  const w = Float32Array.from({ length: 1000 }, () => r.normal())
  return {
    w,
    dir: saveCheckpoint(root, {
      step,
      configHash: 'abc',
      rng: { state: [step, 7] },
      dataCursor: { index: step * 8 },
      tensors: { 'model.safetensors': { w: { dtype: 'F32', shape: [10, 100], data: w } } },
      json: { 'trainer.json': { step } },
      keep
    })
  }
}

t.test('save, keep the last K, find and load the newest', async (t) => {
  const r = rng(t)
  const dir = tmpdir(t)
  t.equal(latestCheckpoint(dir), undefined, 'nothing yet')
  let last
  for (let step = 1; step <= 5; step++) last = save(dir, step * 10, r)
  t.same(
    listCheckpoints(dir).map((c) => c.step),
    [50, 40, 30],
    'the newest three remain'
  )
  const latest = latestCheckpoint(dir)
  t.equal(latest.manifest.step, 50)
  t.same(latest.manifest.rng, { state: [50, 7] })
  t.same(latest.manifest.dataCursor, { index: 400 })
  t.equal(latest.manifest.configHash, 'abc')
  t.equal(latestCheckpoint(dir, { expectConfigHash: 'abc' }).manifest.step, 50, 'same configuration: resumable')
  t.throws(() => latestCheckpoint(dir, { expectConfigHash: 'def' }), {
    code: 'ERR_CONFIG',
    message: /step-50: this checkpoint was written with a different training configuration/
  })
  const loaded = loadCheckpoint(latest.dir)
  t.same(tensorToFloat32(loaded.tensors['model.safetensors'].w), last.w, 'tensor round trip')
  t.same(loaded.tensors['model.safetensors'].w.shape, [10, 100])
  t.same(loaded.json['trainer.json'], { step: 50 })
  // Re-saving an existing step replaces it.
  const again = save(dir, 50, r)
  t.same(tensorToFloat32(loadCheckpoint(again.dir).tensors['model.safetensors'].w), again.w, 're-save replaces the step')
  t.same(fs.readdirSync(dir).sort(), ['step-30', 'step-40', 'step-50'], 'no temporary folders left')
  t.throws(() => saveCheckpoint(dir, { step: -1 }), { code: 'ERR_INVALID_ARG' })
  t.throws(() => saveCheckpoint(dir, { step: 1, json: { '../x.json': {} } }), { code: 'ERR_INVALID_ARG' })
})

t.test('extra files written through the write hook are listed and checked', async (t) => {
  const dir = tmpdir(t)
  const spec = { type: 'lora', r: 1, alpha: 1, dropout: 0, targetModules: ['q_proj'], baseModel: 'x' }
  const saved = saveCheckpoint(dir, {
    step: 3,
    configHash: 'h',
    rng: null,
    dataCursor: null,
    write: (d) =>
      saveAdapter(path.join(d, 'adapter'), spec, [
        { module: decoderModulePath(0, 'q_proj'), inFeatures: 2, outFeatures: 2, loraA: new Float32Array(2), loraB: new Float32Array(2) }
      ])
  })
  const names = latestCheckpoint(dir)
    .manifest.files.map((f) => f.name)
    .sort()
  t.same(names, ['adapter/adapter_config.json', 'adapter/adapter_model.safetensors'])
  t.equal(loadAdapter(path.join(saved, 'adapter')).spec.r, 1)
  fs.truncateSync(path.join(saved, 'adapter', 'adapter_model.safetensors'), 10)
  t.throws(
    () => latestCheckpoint(dir),
    { code: 'ERR_DATA', message: /adapter\/adapter_model\.safetensors: checkpoint file has 10 bytes/ },
    'a damaged hook file makes the only checkpoint unusable, named'
  )
})

t.test('incomplete folders are skipped: resume uses the newest complete checkpoint', async (t) => {
  const r = rng(t)
  const dir = tmpdir(t)
  save(dir, 1, r)
  const good = save(dir, 2, r)
  // A save interrupted before its rename: step-3.tmp with a partial file and no manifest.
  fs.mkdirSync(path.join(dir, 'step-3.tmp'))
  fs.writeFileSync(path.join(dir, 'step-3.tmp', 'model.safetensors'), 'partial')
  // A folder named like a checkpoint but without a manifest, and one whose file was truncated.
  fs.mkdirSync(path.join(dir, 'step-4'))
  fs.cpSync(good.dir, path.join(dir, 'step-5'), { recursive: true })
  const m5 = JSON.parse(fs.readFileSync(path.join(dir, 'step-5', 'manifest.json')))
  m5.step = 5
  fs.writeFileSync(path.join(dir, 'step-5', 'manifest.json'), JSON.stringify(m5))
  fs.truncateSync(path.join(dir, 'step-5', 'model.safetensors'), 100)
  const latest = latestCheckpoint(dir)
  t.equal(latest.manifest.step, 2, 'step 2 is the newest complete checkpoint')
  save(dir, 6, r, 10)
  t.notOk(fs.existsSync(path.join(dir, 'step-3.tmp')), 'the next save removes the interrupted one')
})

t.test('a process killed mid-write leaves the previous checkpoint usable', async (t) => {
  const r = rng(t)
  const dir = tmpdir(t)
  const prev = save(dir, 1, r)
  // The child writes a 64 MB checkpoint and is SIGKILLed after its second write call.
  const script = `
    const fs = require('fs')
    const orig = fs.writeSync
    let calls = 0
    fs.writeSync = function (...args) { if (++calls === 2) process.kill(process.pid, 'SIGKILL'); return orig.apply(this, args) }
    const { saveCheckpoint } = require(${JSON.stringify(path.join(root, 'dist/cjs/train/checkpoint.js'))})
    const big = new Float32Array(16 << 20)
    saveCheckpoint(${JSON.stringify(dir)}, { step: 2, configHash: 'abc', rng: null, dataCursor: null,
      tensors: { 'model.safetensors': { w: { dtype: 'F32', shape: [big.length], data: big } } } })
  `
  const res = spawnSync(process.execPath, ['-e', script])
  t.equal(res.signal, 'SIGKILL', 'the writer died mid-save')
  t.ok(fs.existsSync(path.join(dir, 'step-2.tmp')), 'it left a temporary folder')
  const latest = latestCheckpoint(dir)
  t.equal(latest.manifest.step, 1, 'resume finds the previous checkpoint')
  t.same(tensorToFloat32(loadCheckpoint(latest.dir).tensors['model.safetensors'].w), prev.w, 'with its data intact')
})

t.test('every file carries its sha256, checked on resume: a corrupt newest checkpoint falls back to the previous good one', async (t) => {
  const r = rng(t)
  const sha = (file) => createHash('sha256').update(fs.readFileSync(file)).digest('hex')
  // Each way a newest checkpoint can be damaged, and the file its message must name.
  const damages = {
    'same size, garbage bytes': (d) => {
      const f = path.join(d, 'model.safetensors')
      const b = fs.readFileSync(f)
      for (let i = 200; i < 260; i++) b[i] ^= 0x5a
      fs.writeFileSync(f, b)
      return /model\.safetensors: checkpoint file is corrupt \(sha256/
    },
    truncated: (d) => {
      fs.truncateSync(path.join(d, 'model.safetensors'), 100)
      return /model\.safetensors: checkpoint file has 100 bytes/
    },
    'missing file': (d) => {
      fs.rmSync(path.join(d, 'trainer.json'))
      return /trainer\.json: checkpoint file is missing/
    },
    'manifest not JSON': (d) => {
      fs.writeFileSync(path.join(d, 'manifest.json'), '{"format": "recode-check')
      return /manifest\.json: missing or unreadable checkpoint manifest/
    },
    'manifest checksum edited': (d) => {
      const f = path.join(d, 'manifest.json')
      const m = JSON.parse(fs.readFileSync(f))
      m.files[0].sha256 = '0'.repeat(64)
      fs.writeFileSync(f, JSON.stringify(m))
      return /checkpoint file is corrupt/
    }
  }
  for (const [what, damage] of Object.entries(damages)) {
    const dir = tmpdir(t)
    const good = save(dir, 1, r)
    const bad = save(dir, 2, r)
    const m = JSON.parse(fs.readFileSync(path.join(bad.dir, 'manifest.json')))
    t.equal(m.version, 2)
    for (const f of m.files) t.equal(f.sha256, sha(path.join(bad.dir, f.name)), `${what}: manifest sha256 of ${f.name} is the file's`)
    const pattern = damage(bad.dir)
    const skipped = []
    const latest = latestCheckpoint(dir, { onSkip: (d, err) => skipped.push([d, err]) })
    t.equal(latest.manifest.step, 1, `${what}: falls back to step 1`)
    t.equal(skipped.length, 1, `${what}: the skipped checkpoint is reported`)
    t.equal(skipped[0][0], bad.dir)
    t.equal(skipped[0][1].code, 'ERR_DATA')
    t.match(skipped[0][1].message, pattern, `${what}: the reason names the file`)
    t.same(
      tensorToFloat32(loadCheckpoint(latest.dir).tensors['model.safetensors'].w),
      good.w,
      `${what}: the previous checkpoint loads intact`
    )
  }
  // loadCheckpoint checks the bytes it reads, too.
  const dir = tmpdir(t)
  const c = save(dir, 1, r)
  damages['same size, garbage bytes'](c.dir)
  t.throws(() => loadCheckpoint(c.dir), { code: 'ERR_DATA', message: /step-1\/model\.safetensors: checkpoint file is corrupt/ })
  // None good: an error naming every folder's bad file.
  t.throws(() => latestCheckpoint(dir), {
    code: 'ERR_DATA',
    message: /no usable checkpoint .*step-1\/model\.safetensors: checkpoint file is corrupt/
  })
  // A version-1 manifest (sizes only) is still read.
  const old = tmpdir(t)
  const v1 = save(old, 1, r)
  const f = path.join(v1.dir, 'manifest.json')
  const m = JSON.parse(fs.readFileSync(f))
  m.version = 1
  for (const e of m.files) delete e.sha256
  fs.writeFileSync(f, JSON.stringify(m))
  t.equal(latestCheckpoint(old).manifest.step, 1, 'version 1 checkpoints resume')
})

t.test('a NaN or Inf tensor is refused before anything is written, and nothing is pruned', async (t) => {
  const r = rng(t)
  const dir = tmpdir(t)
  const good = save(dir, 1, r, 1)
  const w = Float32Array.from({ length: 1000 }, () => r.normal())
  w[123] = NaN
  t.throws(
    () =>
      saveCheckpoint(dir, {
        step: 2,
        configHash: 'abc',
        rng: null,
        dataCursor: null,
        keep: 1,
        tensors: { 'model.safetensors': { w: { dtype: 'F32', shape: [1000], data: w } } }
      }),
    { code: 'ERR_DIVERGED', message: /step 2: model\.safetensors tensor w holds a non-finite value at index 123/ }
  )
  const bf = toBf16(Float32Array.from([1, 2, Infinity, 4]))
  t.throws(
    () =>
      saveCheckpoint(dir, {
        step: 3,
        configHash: 'abc',
        rng: null,
        dataCursor: null,
        keep: 1,
        tensors: { 'moments.safetensors': { m: { dtype: 'BF16', shape: [4], data: bf } } }
      }),
    { code: 'ERR_DIVERGED', message: /moments\.safetensors tensor m holds a non-finite value at index 2/ }
  )
  t.same(fs.readdirSync(dir), ['step-1'], 'no new folder, no temporary one, the old one kept (keep = 1)')
  t.same(tensorToFloat32(loadCheckpoint(latestCheckpoint(dir).dir).tensors['model.safetensors'].w), good.w)
})

t.test('a checkpoint that does not read back as written is not kept, and prunes nothing', async (t) => {
  const r = rng(t)
  const dir = tmpdir(t)
  save(dir, 1, r, 1)
  // A faulty disk: the tensor bytes reach the file with one byte changed (the writer hashes what it meant to write).
  const cjsFs = createRequire(import.meta.url)('fs') // the fs object lib/ calls through (an ESM namespace is read-only)
  const orig = cjsFs.writeSync
  cjsFs.writeSync = function (fd, buf, ...rest) {
    if (ArrayBuffer.isView(buf) && buf.byteLength === 4000) {
      const copy = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
      const b = Buffer.from(copy)
      b[17] ^= 1
      return orig.call(this, fd, b, ...rest)
    }
    return orig.call(this, fd, buf, ...rest)
  }
  try {
    t.throws(() => save(dir, 2, r, 1), {
      code: 'ERR_DATA',
      message: /step 2 did not read back as written .*model\.safetensors: checkpoint file is corrupt.*no older checkpoint was removed/
    })
  } finally {
    cjsFs.writeSync = orig
  }
  t.same(fs.readdirSync(dir), ['step-1'], 'the unverified one is gone, the previous one stays')
  // Pruning counts only checkpoints up to the one saved: newer folders (a run resumed from an older one) stay.
  save(dir, 3, r, 3)
  save(dir, 2, r, 1)
  t.same(fs.readdirSync(dir).sort(), ['step-2', 'step-3'])
})

t.test('null or malformed arguments are ERR_INVALID_ARG, not TypeErrors', async (t) => {
  const dir = tmpdir(t)
  t.throws(() => saveCheckpoint(dir, null), { code: 'ERR_INVALID_ARG', message: /saveCheckpoint: input/ })
  t.throws(() => saveCheckpoint(null, { step: 1 }), { code: 'ERR_INVALID_ARG', message: /saveCheckpoint: root/ })
  t.throws(() => saveCheckpoint(dir, { step: 1, tensors: null }), { code: 'ERR_INVALID_ARG', message: /tensors/ })
  t.throws(() => saveCheckpoint(dir, { step: 1, tensors: { 'a.safetensors': null } }), { code: 'ERR_INVALID_ARG' })
  t.throws(() => saveAdapter(path.join(dir, 'a'), null, []), { code: 'ERR_INVALID_ARG', message: /saveAdapter: spec/ })
  t.throws(() => saveAdapter(path.join(dir, 'a'), { type: 'lora', r: 1 }, null), {
    code: 'ERR_INVALID_ARG',
    message: /saveAdapter: layers/
  })
  t.throws(() => writeSafetensors(path.join(dir, 'x.safetensors'), null), { code: 'ERR_INVALID_ARG', message: /tensors must be an object/ })
  t.throws(() => writeSafetensors(path.join(dir, 'x.safetensors'), { w: null }), {
    code: 'ERR_INVALID_ARG',
    message: /tensor w must be an object/
  })
  t.throws(() => writeSafetensors(null, {}), { code: 'ERR_INVALID_ARG', message: /writeSafetensors: file/ })
  t.throws(() => writeSafetensors(path.join(dir, 'x.safetensors'), {}, undefined, null), {
    code: 'ERR_INVALID_ARG',
    message: /writeSafetensors: options/
  })
  t.same(fs.readdirSync(dir), [], 'nothing written')
})

t.test('safetensors writer: format details, dtypes, errors', async (t) => {
  const dir = tmpdir(t)
  const f32 = Float32Array.from([1, -2.5, 3.25, 0])
  const buf = encodeSafetensors(
    { b: { dtype: 'F32', shape: [2, 2], data: f32 }, a: { dtype: 'I32', shape: [3], data: Int32Array.from([1, 2, 3]) } },
    { format: 'pt' }
  )
  const n = Number(buf.readBigUInt64LE(0))
  t.equal(n % 8, 0, 'header padded to 8 bytes')
  const header = JSON.parse(buf.subarray(8, 8 + n).toString())
  t.same(header.__metadata__, { format: 'pt' })
  t.same(header.a, { dtype: 'I32', shape: [3], data_offsets: [0, 12] }, 'tensors in name order from offset 0')
  t.same(header.b, { dtype: 'F32', shape: [2, 2], data_offsets: [12, 28] })
  t.equal(buf.length, 8 + n + 28)
  const file = path.join(dir, 'x.safetensors')
  writeSafetensors(file, {
    w: { dtype: 'BF16', shape: [4], data: toBf16(f32) },
    h: { dtype: 'F16', shape: [4], data: toF16(f32) },
    i: { dtype: 'U8', shape: [1], data: Uint8Array.of(7) }
  })
  const back = readSafetensors(file).tensors
  t.same(tensorToFloat32(back.w), f32, 'bf16 round trip of exactly representable values (stored at an odd offset)')
  t.same(tensorToFloat32(back.h), f32, 'f16 round trip')
  t.throws(() => tensorToFloat32(back.i), { code: 'ERR_INVALID_ARG' })
  t.same(fs.readdirSync(dir), ['x.safetensors'], 'no temporary file left')
  t.throws(() => encodeSafetensors({ w: { dtype: 'F32', shape: [3], data: f32 } }), { code: 'ERR_INVALID_ARG', message: /needs 12 bytes/ })
  t.throws(() => encodeSafetensors({ w: { dtype: 'F8', shape: [4], data: f32 } }), { code: 'ERR_INVALID_ARG', message: /dtype/ })
  fs.writeFileSync(path.join(dir, 'bad.safetensors'), Buffer.from([255, 0, 0, 0, 0, 0, 0, 0, 1]))
  t.throws(() => readSafetensors(path.join(dir, 'bad.safetensors')), {
    code: 'ERR_DATA',
    message: /bad\.safetensors: not a valid safetensors file/
  })
})

t.test('PEFT adapter folder: config and tensor names', async (t) => {
  const r = rng(t)
  const dir = tmpdir(t)
  const rank = 4
  const layers = []
  for (let i = 0; i < 2; i++) {
    for (const proj of ['q_proj', 'down_proj']) {
      const inF = proj === 'q_proj' ? 16 : 24
      const outF = proj === 'q_proj' ? 16 : 16
      layers.push({
        module: decoderModulePath(i, proj),
        inFeatures: inF,
        outFeatures: outF,
        loraA: Float32Array.from({ length: rank * inF }, () => r.normal()),
        loraB: Float32Array.from({ length: outF * rank }, () => r.normal()),
        magnitude: Float32Array.from({ length: outF }, () => 1 + r.next())
      })
    }
  }
  t.equal(decoderModulePath(3, 'q_proj'), 'model.layers.3.self_attn.q_proj')
  t.equal(decoderModulePath(3, 'down_proj'), 'model.layers.3.mlp.down_proj')
  t.same(peftTensorNames('model.layers.0.self_attn.q_proj'), {
    loraA: 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight',
    loraB: 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight',
    magnitude: 'base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector'
  })
  const spec = {
    type: 'dora',
    r: rank,
    alpha: 8,
    dropout: 0.01,
    targetModules: ['q_proj', 'down_proj'],
    baseModel: 'Qwen/Qwen2.5-Coder-7B-Instruct'
  }
  saveAdapter(dir, spec, layers)
  t.same(fs.readdirSync(dir).sort(), ['adapter_config.json', 'adapter_model.safetensors'])
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json')))
  t.match(cfg, {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    use_dora: true,
    r: 4,
    lora_alpha: 8,
    lora_dropout: 0.01,
    target_modules: ['q_proj', 'down_proj'],
    base_model_name_or_path: 'Qwen/Qwen2.5-Coder-7B-Instruct',
    fan_in_fan_out: false,
    bias: 'none'
  })
  const { spec: back, tensors } = loadAdapter(dir)
  t.same(back, spec, 'config round trip')
  t.equal(Object.keys(tensors).length, 12, '3 tensors per DoRA module')
  const names = peftTensorNames('model.layers.1.mlp.down_proj')
  t.same(tensors[names.loraA].shape, [rank, 24], 'lora_A is [r, in]')
  t.same(tensors[names.loraB].shape, [16, rank], 'lora_B is [out, r]')
  t.same(tensors[names.magnitude].shape, [16], 'magnitude is [out]')
  t.same(tensorToFloat32(tensors[names.loraB]), layers[3].loraB)
  // LoRA (no magnitude), stored as bf16.
  const loraDir = path.join(dir, 'lora')
  saveAdapter(
    loraDir,
    { ...spec, type: 'lora' },
    layers.map(({ magnitude, ...l }) => l),
    'BF16'
  )
  const lora = loadAdapter(loraDir)
  t.equal(lora.spec.type, 'lora')
  t.equal(Object.keys(lora.tensors).length, 8, 'no magnitude for LoRA')
  t.equal(lora.tensors[names.loraA].dtype, 'BF16')
  t.throws(() => saveAdapter(dir, spec, [{ ...layers[0], loraA: new Float32Array(3) }]), { code: 'ERR_INVALID_ARG', message: /lora_A/ })
  t.throws(() => saveAdapter(dir, spec, [{ ...layers[0], magnitude: undefined }]), { code: 'ERR_INVALID_ARG', message: /magnitude/ })
  fs.writeFileSync(path.join(loraDir, 'adapter_config.json'), JSON.stringify({ peft_type: 'IA3' }))
  t.throws(() => loadAdapter(loraDir), { code: 'ERR_MODEL', message: /peft_type/ })
})

t.test('the adapter file reads in torch exactly as written', { skip: torchUnavailable() }, async (t) => {
  const r = rng(t)
  const dir = tmpdir(t)
  const loraA = Float32Array.from({ length: 2 * 3 }, () => r.normal())
  const loraB = Float32Array.from({ length: 5 * 2 }, () => r.normal())
  saveAdapter(dir, { type: 'lora', r: 2, alpha: 4, dropout: 0, targetModules: ['v_proj'], baseModel: 'x' }, [
    { module: decoderModulePath(0, 'v_proj'), inFeatures: 3, outFeatures: 5, loraA, loraB }
  ])
  // An independent parser of the safetensors layout (struct + json), values through torch.frombuffer.
  const py = `
import json, struct, sys, torch
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8 + n])
out = {}
for k, v in header.items():
    if k == '__metadata__':
        continue
    b, e = v['data_offsets']
    t = torch.frombuffer(bytearray(raw[8 + n + b:8 + n + e]), dtype=torch.float32).reshape(v['shape'])
    out[k] = {'shape': list(t.shape), 'values': t.flatten().tolist()}
print(json.dumps(out))
`
  const res = spawnSync('/usr/bin/python3', ['-c', py, path.join(dir, 'adapter_model.safetensors')], { encoding: 'utf8' })
  t.equal(res.status, 0, res.stderr)
  const got = JSON.parse(res.stdout)
  const names = peftTensorNames('model.layers.0.self_attn.v_proj')
  t.same(got[names.loraA].shape, [2, 3])
  t.same(got[names.loraA].values, Array.from(loraA))
  t.same(got[names.loraB].values, Array.from(loraB))
})

t.test('metrics.jsonl: appended records, torn last line, resume truncation', async (t) => {
  const dir = tmpdir(t)
  const file = path.join(dir, 'metrics.jsonl')
  let w = new MetricsWriter(file)
  for (let step = 1; step <= 5; step++) w.append({ step, rewardMean: step / 10, kl: step === 3 ? NaN : 0.01 })
  w.close()
  let read = readMetrics(file)
  t.equal(read.records.length, 5)
  t.equal(read.records[2].kl, null, 'non-finite numbers are written as null')
  t.notOk(read.tornTail)
  // A crash mid-write: a partial line at the end.
  fs.appendFileSync(file, '{"step": 6, "rewardM')
  read = readMetrics(file)
  t.equal(read.records.length, 5, 'the torn line is ignored')
  t.ok(read.tornTail)
  w = new MetricsWriter(file)
  w.append({ step: 6, rewardMean: 0.6 })
  w.close()
  read = readMetrics(file)
  t.same(
    read.records.map((x) => x.step),
    [1, 2, 3, 4, 5, 6],
    'the writer continues after cutting the torn line'
  )
  t.notOk(read.tornTail)
  // Resuming from the checkpoint of step 4 drops the records of steps 5 and 6.
  w = new MetricsWriter(file, { resumeFromStep: 4 })
  w.append({ step: 5, rewardMean: 0.55 })
  w.close()
  t.same(
    readMetrics(file).records.map((x) => [x.step, x.rewardMean]),
    [
      [1, 0.1],
      [2, 0.2],
      [3, 0.3],
      [4, 0.4],
      [5, 0.55]
    ]
  )
  fs.writeFileSync(file, '{"step":1}\nnot json\n{"step":2}\n')
  t.throws(() => readMetrics(file), { code: 'ERR_DATA', message: /metrics\.jsonl:2: not a metrics record/ })
  t.same(readMetrics(path.join(dir, 'none.jsonl')).records, [], 'missing file reads as empty')
  t.throws(() => new MetricsWriter(path.join(dir, 'm2.jsonl')).append({ rewardMean: 1 }), { code: 'ERR_INVALID_ARG' })
})

t.test('report: self-contained HTML with a chart per recorded metric, written atomically', async (t) => {
  const r = rng(t)
  const dir = tmpdir(t)
  const records = Array.from({ length: 40 }, (_, i) => ({
    step: i + 1,
    rewardMean: -1 + i / 20 + r.normal() * 0.05,
    rewardStd: 0.5,
    formatRate: Math.min(1, i / 30),
    esStar: i / 40,
    kl: 0.001 * i,
    clipFraction: 0.05,
    clipFractionHigh: 0.02,
    entropy: 2 - i / 40,
    responseLength: 80 + i,
    lr: 1e-3,
    phaseSeconds: { generation: 1 + r.next(), reward: 0.01, backward: 0.5, optimizer: 0.05 },
    ...(i % 10 === 0 ? { eval: { formatRate: i / 40, esStar: i / 50, exactMatch: i / 80 } } : {})
  }))
  const file = path.join(dir, 'report.html')
  fs.writeFileSync(file, 'old content')
  writeReport(file, records, { title: 'run <1> & "x"', facts: { preset: 'tiny', runFolder: dir } })
  const html = fs.readFileSync(file, 'utf8')
  t.match(html, /^<!DOCTYPE html>/)
  for (const id of [
    'reward',
    'reward-std',
    'format-rate',
    'es-star',
    'kl',
    'clip-fraction',
    'entropy',
    'response-length',
    'lr',
    'held-out',
    'phase-seconds'
  ]) {
    t.match(html, new RegExp(`<svg[^>]*data-chart="${id}"`), `chart ${id}`)
  }
  t.notMatch(html, /data-chart="loss"/, 'no chart for a metric never recorded')
  t.match(html, /<polygon[^>]*class="band"/, 'reward std band')
  t.match(html, /data-series="generation"/, 'a series per phase')
  t.match(html, /run &lt;1&gt; &amp; &quot;x&quot;/, 'title escaped')
  t.notMatch(html, /<script|<link|src=|href=|url\(/i, 'no scripts or external assets')
  t.same(fs.readdirSync(dir), ['report.html'], 'no temporary file left')
  const polyline = /data-chart="kl".*?<polyline points="([^"]+)"/s.exec(html)[1].split(' ')
  t.equal(polyline.length, 40, 'one point per step')
  t.match(renderReport([]), /0 steps recorded/, 'an empty run renders')
  t.throws(() => writeFileAtomic(path.join(dir, 'no', 'such', 'dir', 'x.html'), 'x'), { code: 'ENOENT' })
  t.same(fs.readdirSync(dir), ['report.html'], 'a failed write leaves nothing behind')
})

t.test(
  'report at a glance: before/after table, held-out points, smoothed curves, switched-off series in words, examples escaped',
  async (t) => {
    const r = rng(t)
    const dir = tmpdir(t)
    const warm = Array.from({ length: 30 }, (_, i) => ({ step: i + 1, stage: 'warm-start', loss: 3 - i / 15 + r.normal() * 0.1, lr: 2e-3 }))
    const rl = Array.from({ length: 30 }, (_, i) => ({
      step: 31 + i,
      stage: 'grpo',
      loss: r.normal() * 0.01,
      rewardMean: -1 + i / 15 + r.normal() * 0.3,
      rewardStd: 0.5,
      kl: 0,
      clipFraction: 0,
      clipFractionLow: 0,
      clipFractionHigh: 0,
      entropy: 1 + r.normal() * 0.1,
      lr: 1e-3
    }))
    const evaluations = [
      { step: 0, label: 'before', formatRate: 0, esStar: -2, exactMatch: 0 },
      { step: 30, label: 'after-warm-start', formatRate: 0.75, esStar: -1.25, exactMatch: 0.0625 },
      { step: 45, label: 'periodic', formatRate: 0.9, esStar: 0.5, exactMatch: 0.25 },
      { step: 60, label: 'after', formatRate: 0.97, esStar: 1.1, exactMatch: 0.4375 }
    ]
    const answer = (completion, esStar, exact) => ({ completion, format: true, esStar, exact })
    const examples = [
      {
        task: 2,
        dependency: 'nova<&>',
        updateInfo: 'load() was renamed to <load_v2> & "kept"',
        oldCode: "x = nova.load('<script>alert(1)</script>')",
        target: 'x = nova.load_v2(p)',
        answers: { before: answer(' hm</think>', -2, false), after: answer(' </think><answer>x = nova.load_v2(p)</answer>', 2, true) }
      }
    ]
    const file = path.join(dir, 'report.html')
    writeReport(file, [...warm, ...rl], {
      config: { klCoef: 0, policyUpdatesPerBatch: 1, entropyCoef: 0, algorithm: 'grpo' },
      evaluations,
      scores: {
        before: evaluations[0],
        afterWarmStart: evaluations[1],
        after: evaluations[3]
      },
      examples
    })
    const html = fs.readFileSync(file, 'utf8')
    const chart = (id) => new RegExp(`<figure id="${id}"[^>]*>.*?</figure>`, 's').exec(html)?.[0] ?? ''
    // the table: one column per model, the three scores in each
    const table = /<table class="scores".*?<\/table>/s.exec(html)?.[0] ?? ''
    t.match(table, /base model.*after the SFT warm start.*after GRPO/s, 'a column per model')
    t.match(table, /format rate<\/th><td>0\.0%<\/td><td>75\.0%<\/td><td>97\.0%<\/td>/, 'format rates')
    t.match(table, /exact match<\/th><td>0\.0%<\/td><td>6\.3%<\/td><td>43\.8%<\/td>/, 'exact match')
    t.match(table, /<td>-2\.000<\/td><td>-1\.250<\/td><td>1\.100<\/td>/, 'ES*')
    // held-out evaluations: a marker at each evaluation, connected in step order
    const rates = chart('held-out-rates')
    t.equal((rates.match(/class="marker"/g) ?? []).length, 8, 'format rate and exact match: a marker per evaluation each')
    t.equal(/<polyline points="([^"]+)"/.exec(rates)[1].split(' ').length, 4, 'the points connected')
    t.match(chart('held-out-es-star'), /step 60: 1\.1/, 'the after point is at the last step')
    t.match(chart('held-out-es-star'), /class="mark"\/><text[^>]*>RL starts</, 'the end of the warm start is marked')
    t.notMatch(renderReport(rl, { evaluations }), /class="mark"/, 'no mark without a warm start')
    t.notMatch(html, /data-chart="held-out"/, 'no second held-out chart from the metrics')
    // smoothed over faint raw values
    const reward = chart('reward')
    const raw = /<polyline points="([^"]+)"[^>]*class="raw"/.exec(reward)?.[1].split(' ')
    const smooth = /<polyline points="([^"]+)"[^>]*class="smoothed"/.exec(reward)?.[1].split(' ')
    t.equal(raw?.length, 30, 'raw reward: a point per RL step')
    t.equal(smooth?.length, 30, 'smoothed reward: as many points')
    t.not(raw.join(' '), smooth.join(' '), 'the smoothed line differs from the raw one')
    t.match(reward, /stroke-opacity="0\.25" class="raw"/, 'the raw series is faint')
    // the warm-start loss is its own chart; the policy loss another
    t.equal(
      /<polyline points="([^"]+)"[^>]*class="raw"/.exec(chart('sft-loss'))?.[1].split(' ').length,
      30,
      'SFT loss: the 30 warm-start steps'
    )
    t.equal(/<polyline points="([^"]+)"[^>]*class="raw"/.exec(chart('loss'))?.[1].split(' ').length, 30, 'policy loss: the 30 RL steps')
    // switched off: said in words, not drawn flat
    t.notMatch(html, /<svg[^>]*data-chart="kl"/, 'no flat KL chart')
    t.match(chart('kl'), /klCoef is 0/, 'KL off, said why')
    t.notMatch(html, /<svg[^>]*data-chart="clip-fraction"/, 'no flat clip chart')
    t.match(chart('clip-fraction'), /one policy update per batch.*ratio is exactly 1/, 'clipping off, said why')
    t.match(html, /Entropy bonus: off \(entropyCoef 0\)/, 'the entropy bonus is said to be off')
    t.match(html, /<svg[^>]*data-chart="entropy"/, 'the measured entropy is still drawn')
    // examples side by side, escaped
    const ex = /<table class="examples".*?<\/table>/s.exec(html)?.[0] ?? ''
    t.match(ex, /old code<\/th><th>update note<\/th><th>target<\/th><th>answer base model<\/th><th>answer after training<\/th>/, 'columns')
    t.match(ex, /&lt;script&gt;alert\(1\)&lt;\/script&gt;/, 'old code escaped')
    t.match(ex, /&lt;load_v2&gt; &amp; &quot;kept&quot;/, 'update note escaped')
    t.match(ex, /nova&lt;&amp;&gt;/, 'dependency escaped')
    t.match(ex, /&lt;think&gt; hm&lt;\/think&gt;/, 'the answer shown with its <think> prefill, escaped')
    t.match(ex, /<td class="exact">.*ES\* 2\.00, exact match/s, 'the exact answer is marked')
    t.notMatch(html, /<script|<link|src=|href=|url\(/i, 'still no scripts or external assets')

    // with the KL term on and non-zero values, the chart is drawn
    const on = renderReport(
      rl.map((x, i) => ({ ...x, kl: 0.001 * (i + 1), clipFraction: 0.01 })),
      { config: { klCoef: 0.001, policyUpdatesPerBatch: 2 } }
    )
    t.match(on, /<svg[^>]*data-chart="kl"/, 'KL drawn when on')
    t.match(on, /<svg[^>]*data-chart="clip-fraction"/, 'clip fraction drawn when there is clipping')
    t.notMatch(on, /Switched off/, 'nothing said to be off')
    // without a configuration, an all-zero series is still said in words
    t.match(renderReport(rl), /data-off="kl"[\s\S]*0 at every step/, 'an all-zero KL without a config')
  }
)
