// The adapter folders we write, read by PEFT itself (PeftModel.from_pretrained on a tiny random Qwen2): the
// weights land in the right modules, PEFT's LoRA / DoRA layer computes what adapterForward computes, and
// merge_and_unload gives what mergeAdapter gives. Needs a python with torch, transformers and peft: set
// RECODE_PEFT_PYTHON to it (default /usr/bin/python3); skipped with the reason otherwise.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { saveAdapter } from '../dist/cjs/train/checkpoint.js'
import { adapterForward, adapterBackward, mergeAdapter } from '../dist/cjs/train/adapters.js'
import { rng, root, maxRelError } from './helpers.mjs'

const PYTHON = process.env.RECODE_PEFT_PYTHON || '/usr/bin/python3'
const probe = spawnSync(PYTHON, ['-c', 'import peft, transformers, torch'], { encoding: 'utf8' })
const unavailable =
  probe.status === 0
    ? undefined
    : `${PYTHON} cannot import peft/transformers (${(probe.stderr || probe.error?.message || '').trim().split('\n').pop()}); set RECODE_PEFT_PYTHON`

function runPeft(jobs) {
  const r = spawnSync(PYTHON, [path.join(root, 'test', 'reference', 'train_peft.py')], {
    input: JSON.stringify(jobs),
    encoding: 'utf8',
    maxBuffer: 1 << 28
  })
  if (r.status !== 0) throw new Error(`train_peft.py failed: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

t.test('PEFT loads our LoRA and DoRA folders and computes what we compute', { skip: unavailable }, async (t) => {
  const r = rng(t)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-peft-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const baseDir = path.join(dir, 'base')
  const [{ shapes }] = runPeft([{ op: 'base', dir: baseDir }])
  const targets = ['q_proj', 'v_proj', 'down_proj']
  const modules = Object.keys(shapes)
    .filter((m) => targets.includes(m.split('.').pop()))
    .sort()
  t.equal(modules.length, 6, 'three projections in two layers')
  for (const type of ['lora', 'dora']) {
    const rank = 4
    const spec = { type, r: rank, alpha: 8, dropout: 0.05, targetModules: targets, baseModel: baseDir }
    const layers = modules.map((module) => {
      const [out, inF] = shapes[module]
      return {
        module,
        inFeatures: inF,
        outFeatures: out,
        loraA: Float32Array.from({ length: rank * inF }, () => r.normal() * 0.2),
        loraB: Float32Array.from({ length: out * rank }, () => r.normal() * 0.2),
        ...(type === 'dora' ? { magnitude: Float32Array.from({ length: out }, () => 0.5 + r.next()) } : {})
      }
    })
    const adapterDir = path.join(dir, type)
    saveAdapter(adapterDir, spec, layers)
    const x = {}
    const dy = {}
    for (const l of layers) {
      x[l.module] = Array.from({ length: 3 }, () => Array.from({ length: l.inFeatures }, () => r.normal()))
      dy[l.module] = Array.from({ length: 3 }, () => Array.from({ length: l.outFeatures }, () => r.normal()))
    }
    const [got] = runPeft([{ op: 'check', base: baseDir, adapter: adapterDir, modules, x, dy }])
    for (const l of layers) {
      const p = got[l.module]
      const label = `${type} ${l.module}`
      t.same(Float32Array.from(p.loraA), l.loraA, `${label}: PEFT loaded our lora_A`)
      t.same(Float32Array.from(p.loraB), l.loraB, `${label}: PEFT loaded our lora_B`)
      if (type === 'dora') t.same(Float32Array.from(p.magnitude), l.magnitude, `${label}: PEFT loaded our magnitude`)
      t.equal(p.scaling, 2, `${label}: scaling alpha / r`)
      const dims = { rows: 3, in: l.inFeatures, out: l.outFeatures, rank }
      const layer = {
        weight: Float32Array.from(p.weight),
        ...(p.bias ? { bias: Float32Array.from(p.bias) } : {}),
        loraA: l.loraA,
        loraB: l.loraB,
        ...(l.magnitude ? { magnitude: l.magnitude } : {}),
        scaling: p.scaling,
        dropout: 0
      }
      const xs = Float32Array.from(x[l.module].flat())
      const { y: ours, saved } = adapterForward(xs, dims, layer)
      // PEFT runs in float32 (our kernels accumulate in float64), so the tolerance is float32 rounding over
      // the reductions, relative to 1% of the largest value.
      const close = (a, b, what) => {
        const floor = 0.01 * Math.max(...b.map(Math.abs))
        const e = maxRelError(a, b, floor)
        t.ok(e < 5e-5, `${label}: ${what} (${e.toExponential(2)})`)
      }
      close(ours, p.y, "same output as PEFT's layer")
      const g = adapterBackward(xs, Float32Array.from(dy[l.module].flat()), dims, layer, saved)
      close(g.input, p.dx, 'same dx as PEFT autograd')
      close(g.loraA, p.dA, 'same dA as PEFT autograd')
      close(g.loraB, p.dB, 'same dB as PEFT autograd')
      if (type === 'dora') close(g.magnitude, p.dm, 'same dm as PEFT autograd (weight norm detached)')
      const merged = mergeAdapter(dims, layer)
      const mfloor = 0.01 * Math.max(...p.merged.map(Math.abs))
      t.ok(
        maxRelError(merged, p.merged, mfloor) < 5e-5,
        `${label}: same merged weight as merge_and_unload (${maxRelError(merged, p.merged, mfloor).toExponential(2)})`
      )
    }
  }
})
