// `npm run gpu-check [-- --device emulated]`: everything a GPU has to confirm, in one call that fits the few
// minutes a lent GPU is available (budget 8 minutes; what would run past it is recorded as skipped, not run):
//   1. builds what is missing (the addon and librecode_cuda.so, the TypeScript output);
//   2. runs every CUDA test file on the device (they hold 'cuda' to the same checks as 'emulated' when a GPU is
//      usable);
//   3. planned versus measured peak memory: the memory plan's workload (src/model/memory_plan.cpp) on the counting
//      device and for real on the device, which must agree to the byte;
//   4. NCCL (bench/nccl-check.mjs): the CUDA trainer's gradient sum through NCCL itself -- a world of one, and
//      two ranks where the machine has two GPUs -- or, printed, why it is skipped (no NCCL found, one GPU, emulated);
//   5. the GPU benches: attention forward/backward, decode and GEMM (cudaops), sampling, edit distance, and a
//      training step of the Qwen2.5-1.5B shape with DoRA r = 64 (train-cuda).
// Results: bench/results/gpu-check.json (the summary) beside each bench's own bench/results/<name>.json. With
// --device emulated (no GPU: CI, this repository's sessions) the same files are written from the SIMT emulation on
// reduced shapes, each marked "emulated": true: they check this script's logic, not GPU speed.
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { benchDir, root, require, writeResult } from './lib.mjs'

const argv = process.argv.slice(2)
const flag = (name, dflt) => {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : dflt
}
// `npm run gpu-check --device emulated` reaches here as npm_config_device=true plus a bare `emulated`
const npmDevice = process.env.npm_config_device
const device =
  flag('--device', undefined) ??
  argv.find((a) => a === 'emulated' || a === 'cuda') ??
  (npmDevice && npmDevice !== 'true' ? npmDevice : 'cuda')
if (device !== 'cuda' && device !== 'emulated') {
  console.error(`gpu-check: --device must be cuda or emulated, got ${device}`)
  process.exit(2)
}
const emulated = device === 'emulated'
const budget = Number(flag('--budget', '480')) * 1000
const started = Date.now()
const left = () => budget - (Date.now() - started)
const log = (s) => console.log(`[gpu-check ${((Date.now() - started) / 1000).toFixed(0)}s] ${s}`)
const report = { device, emulated, budgetSeconds: budget / 1000, build: [], tests: [], memory: [], benches: [], skipped: [] }

// 1. build what is missing (node itself may be a carried binary: every step runs through process.execPath)
function step(what, args, env = {}) {
  log(what)
  const r = spawnSync(process.execPath, args, {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: Math.max(1000, left())
  })
  report.build.push({ what, status: r.status })
  if (r.status !== 0) {
    console.error(r.stdout, r.stderr)
    throw new Error(`gpu-check: ${what} failed`)
  }
}
const addon = path.join(root, 'build', 'Release', 'recode.node')
const cudaLib = path.join(root, 'build', 'Release', 'librecode_cuda.so')
if (!fs.existsSync(addon) || (!emulated && !fs.existsSync(cudaLib)))
  step('building the addon and librecode_cuda.so', [path.join(root, 'lib', 'tools', 'install.cjs'), '--force'])
if (!fs.existsSync(path.join(root, 'dist', 'cjs', 'index.js'))) {
  step('compiling TypeScript', [require.resolve('typescript/bin/tsc'), '-p', root])
  step('writing the ESM entry points', [path.join(root, 'lib', 'tools', 'esm.cjs')])
}
const { native } = require('../dist/cjs/native.js')
const { systemInfo } = require('../dist/cjs/index.js')
const info = systemInfo()
report.cuda = info.cuda
if (!emulated && !info.cuda.available) {
  report.error = `no usable GPU: ${info.cuda.reason}`
  writeResult('gpu-check', report)
  console.error(`gpu-check: ${report.error}`)
  process.exit(1)
}

// 2. the CUDA test files (emulated: the quick ones; the others are CI's)
const allCudaTests = fs
  .readdirSync(path.join(root, 'test'))
  .filter((f) => /(cuda|cudaops_).*\.test\.mjs$/.test(f) || f === 'memory-plan.test.mjs' || f === 'kernel-abi.test.mjs')
  .sort()
const tests = emulated ? ['memory-plan.test.mjs', 'kernel-abi.test.mjs'] : allCudaTests
for (const f of allCudaTests) if (!tests.includes(f)) report.skipped.push({ what: `test/${f}`, why: 'emulated run: CI runs it' })
/** A tap line that reports a failed assertion (skips and todos are not failures). */
const failing = (line) => /^\s*not ok /.test(line) && !/# (SKIP|TODO)/.test(line)
/** The YAML block tap writes under each failing assertion (indented deeper than its `not ok` line). */
function failureDetails(lines) {
  const out = []
  for (let i = 0; i < lines.length; i++) {
    if (!failing(lines[i])) continue
    const m = /^(\s*)/.exec(lines[i])
    out.push(lines[i].trim())
    for (let j = i + 1; j < lines.length && j < i + 80 && /^\s/.test(lines[j]) && lines[j].search(/\S/) > m[1].length; j++)
      out.push(lines[j].slice(m[1].length))
  }
  return out.join('\n')
}
for (const f of tests) {
  if (left() < 60000) {
    report.skipped.push({ what: `test/${f}`, why: 'time budget' })
    continue
  }
  log(`test/${f}`)
  const t0 = Date.now()
  const r = spawnSync(process.execPath, [path.join(root, 'test', f)], {
    cwd: root,
    encoding: 'utf8',
    // run without the tap runner, a file would get tap's own 30 s limit (dist-cuda needs about 50 s there)
    env: { ...process.env, TAP_TIMEOUT: String(Math.max(60, Math.floor(left() / 1000))) },
    timeout: left() - 30000,
    maxBuffer: 64 << 20
  })
  const lines = (r.stdout ?? '').split('\n')
  const failed = lines.filter(failing)
  report.tests.push({
    file: f,
    status: r.status,
    seconds: (Date.now() - t0) / 1000,
    failures: failed.slice(0, 20).map((l) => l.trim()),
    // what tap says under each failure (found/wanted, the diff), so that a failure on a lent machine can be read here
    ...(r.status === 0 ? {} : { details: failureDetails(lines).slice(0, 12000) })
  })
  if (r.status !== 0) log(`  FAILED (${failed.length} failing lines)`)
}

// 3. planned versus measured peak memory on the device
{
  const { initModel } = require('../dist/cjs/index.js')
  const { readModelConfigFor } = require('../dist/cjs/train/memoryPlan.js')
  const { weightFiles } = require('../dist/cjs/model/config.js')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-gpu-check-'))
  try {
    // a GPU: the small preset at real lengths; emulated: the tiny one at a few tokens
    const shapes = emulated
      ? {
          model: { preset: 'tiny', arch: 'qwen2', layers: 2, intermediate: 96, merges: 40 },
          slots: 4,
          prompt: 12,
          completion: 4,
          chunk: 8,
          rows: 2
        }
      : { model: { preset: 'small', arch: 'qwen2', dtype: 'bf16' }, slots: 64, prompt: 512, completion: 256, chunk: 512, rows: 8 }
    initModel({ ...shapes.model, out: dir, seed: 7 })
    const config = readModelConfigFor(dir)
    for (const adapter of [
      undefined,
      {
        type: 'dora',
        r: 16,
        alpha: 16,
        dropout: 0.01,
        seed: 1,
        targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']
      }
    ]) {
      for (const recompute of [false, true]) {
        const opts = {
          bf16: !emulated,
          slots: shapes.slots,
          context: shapes.prompt + shapes.completion,
          prefillChunk: shapes.chunk,
          promptTokens: shapes.prompt,
          completionTokens: shapes.completion,
          microRows: shapes.rows,
          referencePass: true,
          activationRecomputation: recompute,
          ...(adapter ? { adapter } : {})
        }
        const label = `${adapter ? 'DoRA r=16' : 'full fine-tuning'}${recompute ? ', recomputation' : ''}`
        log(`memory: ${label}`)
        const planned = native().memoryPlan(config, { ...opts, device: 'counting' })
        const measured = native().memoryPlan(config, { ...opts, device, files: weightFiles(dir).files })
        const agree =
          planned.generation.peakBytes === measured.generation.peakBytes && planned.training.peakBytes === measured.training.peakBytes
        report.memory.push({
          label,
          planned,
          measured: { generation: measured.generation.peakBytes, training: measured.training.peakBytes },
          agree
        })
        if (!agree) log('  planned and measured peaks DIFFER')
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

// 4. NCCL on the device (a world of one; two ranks on two GPUs)
{
  const { default: ncclCheck } = await import(path.join(benchDir, 'nccl-check.mjs'))
  const r = await ncclCheck({ emulated, log, left })
  report.nccl = r.checks
  report.skipped.push(...r.skipped)
}

// 5. the GPU benches (emulated: the cudaops sanity timings on tiny shapes; the rest need a GPU to mean anything)
const benches = emulated ? ['cudaops'] : ['cudaops', 'sampling', 'editdist', 'train-cuda']
for (const b of ['cudaops', 'sampling', 'editdist', 'train-cuda'])
  if (!benches.includes(b)) report.skipped.push({ what: `bench/${b}`, why: 'emulated run: GPU timings only' })
for (const b of benches) {
  if (left() < 90000) {
    report.skipped.push({ what: `bench/${b}`, why: 'time budget' })
    continue
  }
  log(`bench/${b}`)
  const t0 = Date.now()
  try {
    const mod = await import(path.join(benchDir, `${b}.bench.mjs`))
    const out = await mod.default()
    writeResult(`${out.name ?? b}`, { ...out, emulated })
    report.benches.push({ name: b, seconds: (Date.now() - t0) / 1000, summary: out.summary ?? null })
  } catch (err) {
    report.benches.push({ name: b, seconds: (Date.now() - t0) / 1000, error: String(err?.message ?? err) })
  }
}

report.seconds = (Date.now() - started) / 1000
report.ok =
  report.tests.every((t) => t.status === 0) &&
  report.memory.every((m) => m.agree) &&
  report.nccl.every((c) => c.ok) &&
  report.benches.every((b) => !b.error)
const file = writeResult('gpu-check', report)
log(`${report.ok ? 'all checks passed' : 'SOME CHECKS FAILED'}; ${path.relative(process.cwd(), file)}`)
process.exit(report.ok ? 0 : 1)
