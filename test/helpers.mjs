// Shared test utilities: seeded randomness (the seed is printed so a failure can be replayed with
// RECODE_TEST_SEED), poisoned output buffers, relative-error checks (elementwise and normwise), tolerances per
// dtype, and the backend matrix.
import * as fs from 'fs'
import { createRequire } from 'module'
import * as path from 'path'
import { fileURLToPath } from 'url'

export const require = createRequire(import.meta.url)
export const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
export const shared = path.join(root, '..', 'shared')

/** Deterministic PRNG (mulberry32) seeded from RECODE_TEST_SEED or fresh; prints the seed. */
export function rng(t, label = '') {
  const seed = process.env.RECODE_TEST_SEED ? Number(process.env.RECODE_TEST_SEED) : (Math.random() * 2 ** 32) >>> 0
  t.comment(`seed ${seed}${label ? ' (' + label + ')' : ''} — replay with RECODE_TEST_SEED=${seed}`)
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
  return {
    seed,
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    normal: () => Math.sqrt(-2 * Math.log(next() + 1e-300)) * Math.cos(2 * Math.PI * next()),
    pick: (arr) => arr[Math.floor(next() * arr.length)]
  }
}

/**
 * Token log-probabilities of a bf16 trainer against the fp32 CPU trainer, relative to max(1, |logp|): every
 * activation on the way to the logits is rounded to bf16 (unit roundoff u = 2^-9) about ten times per layer
 * (norms, projections, attention, gate/up, down, residuals) plus the final norm. With two layers, ~20 roundings
 * in the worst case add up to 20u = 0.04 relative on the logits, which enter logp twice (target and log-sum-exp):
 * 0.08. Typical errors are ~5e-3; seeds with one token near 0.05 occur (CI saw 5.3e-2 against an older 0.03).
 */
export const BF16_TRAIN_LOGP_TOL = 40 * 2 ** -9

/**
 * Gradients (and AdamW's first moment, linear in them) of a bf16 trainer against the fp32 CPU trainer: the backward
 * rounds the activation gradients to bf16 as often as the forward rounds the activations, on top of the forward's
 * error in the logits, so twice the log-prob bound: 80 x 2^-9. Typical errors are 1-3e-2; seeds near 0.1 occur (CI saw
 * 9.7e-2 against an older 0.08).
 */
export const BF16_TRAIN_GRAD_TOL = 80 * 2 ** -9

/** Relative tolerances per dtype for comparisons against a float64 reference. */
export const tolerance = { f64: 1e-12, f32: 1e-5, bf16: 2e-2, f16: 2e-3 }

/** max |a-b| / max(|b|, floor) over the arrays. */
export function maxRelError(actual, expected, floor = 1e-6) {
  let worst = 0
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i],
      e = expected[i]
    if (Number.isNaN(a) !== Number.isNaN(e)) return Infinity
    if (a === e) continue
    const err = Math.abs(a - e) / Math.max(Math.abs(e), floor)
    if (!(err <= worst)) worst = err
  }
  return worst
}

/**
 * Normwise relative error max|a - e| / max(max|e|, floor) (max|a - e| where that scale is 0): elementwise
 * relative error is meaningless for outputs that cancel to ~0 (sums of random products), so errors are measured
 * against the tensor's scale. A NaN or infinite output (a poisoned or unwritten one) gives Infinity.
 */
export function relErr(actual, expected, floor = 0) {
  let err = 0
  let mag = floor
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i])
    if (!Number.isFinite(actual[i]) || Number.isNaN(d)) return Infinity
    err = Math.max(err, d)
    mag = Math.max(mag, Math.abs(expected[i]))
  }
  return mag === 0 ? err : err / mag
}

/** Fills a typed array with a value no correct kernel writes, so untouched outputs are caught. */
export function poison(arr) {
  if (arr instanceof Float32Array || arr instanceof Float64Array) arr.fill(NaN)
  else arr.fill(-0x5eadbeef | 0)
  return arr
}

/** The backends every kernel test runs: always cpu and emulated, plus cuda when a GPU is usable. */
export function backends(t, addon) {
  const info = addon.systemInfo()
  const list = ['cpu', 'emulated']
  if (info.cuda.available) list.push('cuda')
  else t.comment(`cuda backend skipped: ${info.cuda.reason}`)
  return list
}

/** The odd sizes every kernel test covers: one element, and lengths off the SIMD-width, warp and block multiples (tails). */
export const oddSizes = [1, 17, 1000, 4097]

/** A training batch of sequences of the given lengths: random tokens below V, random loss weights (0 on each
 * sequence's first token, which has no prediction, and on about one token in five). */
export function randomTrainBatch(r, V, lens) {
  return lens.map((n) => ({
    tokens: Array.from({ length: n }, () => r.int(0, V - 1)),
    weights: Array.from({ length: n }, (_, j) => (j === 0 || r.next() < 0.2 ? 0 : r.normal() * 0.5))
  }))
}

/** log-softmax of row `row` of logits [T x V] at `target`, in float64. */
export function logSoftmaxAt(logits, V, row, target) {
  let max = -Infinity
  for (let v = 0; v < V; v++) max = Math.max(max, logits[row * V + v])
  let s = 0
  for (let v = 0; v < V; v++) s += Math.exp(logits[row * V + v] - max)
  return logits[row * V + target] - max - Math.log(s)
}

/** Random adapter tensors for a trainer's `parameters()`: B non-zero (so dA sees it), m near its initial row norms,
 * A as drawn. Returns [{ name, shape, data }]. */
export function randomAdapterTensors(r, params) {
  return params.map((p) => {
    const data = new Float32Array(p.data.length)
    for (let i = 0; i < data.length; i++) {
      if (p.name.endsWith('lora_magnitude_vector')) data[i] = p.data[i] * (0.8 + 0.4 * r.next())
      else if (p.name.endsWith('lora_B.weight')) data[i] = r.normal() * 0.05
      else data[i] = p.data[i]
    }
    return { name: p.name, shape: p.shape, data }
  })
}

/**
 * train(config(device)) on the cpu and on each device (run folders under `dir`), each run's 3 steps and the file
 * `written[0]` checked; then each device held to the cpu run: the two warm-start steps' loss within 1e-4 and grad
 * norm within `gradNormTol` (relative), and its GRPO step (`grpo` names it) finite with a non-zero gradient.
 */
export async function trainMatchesCpu(t, { dir, devices, config, written: [file, what], gradNormTol, grpo }) {
  const { train, readMetrics } = require('../dist/cjs/index.js')
  const runs = {}
  for (const device of ['cpu', ...devices]) {
    const runDir = path.join(dir, `run-${device}`)
    const res = await train(config(device), { runDir })
    t.equal(res.summary.steps, 3, `${device}: 3 steps`)
    t.ok(fs.existsSync(path.join(runDir, file)), `${device}: ${what}`)
    runs[device] = readMetrics(path.join(runDir, 'metrics.jsonl')).records
  }
  for (const device of devices) {
    const [a, b] = [runs.cpu, runs[device]]
    for (const k of [0, 1]) {
      t.ok(
        Math.abs(b[k].loss - a[k].loss) <= 1e-4 * Math.abs(a[k].loss),
        `${device} warm-start step ${k + 1}: loss ${b[k].loss.toFixed(6)} vs cpu ${a[k].loss.toFixed(6)}`
      )
      t.ok(
        Math.abs(b[k].gradNorm - a[k].gradNorm) <= gradNormTol * a[k].gradNorm,
        `${device} warm-start step ${k + 1}: grad norm ${b[k].gradNorm.toFixed(6)} vs cpu ${a[k].gradNorm.toFixed(6)}`
      )
    }
    t.ok(
      Number.isFinite(b[2].loss) && Number.isFinite(b[2].gradNorm) && b[2].gradNorm > 0,
      `${device} ${grpo}: loss ${b[2].loss} grad norm ${b[2].gradNorm}`
    )
  }
}

/** Options of the small models the device-trainer tests train: hidden 64 with 4 heads (head_dim 16, the smallest
 * the attention kernels take), vocab ~300. */
export const smallTrainModel = { preset: 'tiny', layers: 2, intermediate: 96, merges: 40 }

/** The device-trainer tests' model variants, written to `dir`/m<i> with seeds `seed` + i; each gets `dir` and `vocab`. */
export function trainModelVariants(dir, seed) {
  const { initModel } = require('../dist/cjs/index.js')
  const small = smallTrainModel
  const variants = [
    { name: 'qwen2 (qkv bias, untied, GQA 4:2)', opts: { ...small, arch: 'qwen2' } },
    { name: 'qwen3 (q/k norm, tied)', opts: { ...small, arch: 'qwen3', tieWordEmbeddings: true } },
    { name: 'llama (MQA 4:1, untied, 1 layer)', opts: { ...small, arch: 'llama', kvHeads: 1, layers: 1 } },
    { name: 'qwen2 tied, loaded as bf16', opts: { ...small, arch: 'qwen2', tieWordEmbeddings: true, dtype: 'bf16' }, dtype: 'bf16' }
  ]
  variants.forEach((v, i) => {
    v.dir = path.join(dir, `m${i}`)
    initModel({ ...v.opts, out: v.dir, seed: seed + i })
    v.vocab = JSON.parse(fs.readFileSync(path.join(v.dir, 'config.json'))).vocab_size
  })
  return variants
}

/** The devices the device-trainer tests hold to the cpu: 'emulated', plus 'cuda' when a GPU is usable. */
export function trainDevices(t) {
  const info = require('../dist/cjs/index.js').systemInfo()
  const devices = ['emulated']
  if (info.cuda.available) devices.push('cuda')
  else t.comment(`device 'cuda' skipped: ${info.cuda.reason}`)
  return devices
}

/**
 * Trainer B's forward then backward, with PPO-like weights that depend on the logp it returned (w_t = c_t *
 * exp(logp_t), first token 0), held to trainer A's one-call step on the same sequences: the same logp, loss and
 * gradients to the bit; then a second backward is refused. Returns the weights.
 */
export async function twoCallsEqualStep(t, A, B, batch) {
  const logp = await B.forward(batch.map((s) => s.tokens))
  const weights = batch.map((s, i) => s.weights.map((c, j) => (j === 0 ? 0 : c * Math.exp(logp[i][j]))))
  const lossB = await B.backward(weights)
  const resA = await A.step(batch.map((s, i) => ({ tokens: s.tokens, weights: weights[i] })))
  t.same(
    logp.map((x) => Array.from(x)),
    resA.logp.map((x) => Array.from(x)),
    'forward returns the logp the step computes'
  )
  t.equal(lossB, resA.loss, 'same loss')
  const gA = await A.gradients()
  const gB = await B.gradients()
  t.ok(
    gA.every((g, k) => g.name === gB[k].name && g.grad.every((x, j) => x === gB[k].grad[j])),
    'identical gradients for every tensor (deterministic kernels)'
  )
  await t.rejects(B.backward(weights), { code: 'ERR_INVALID_ARG', message: /no pending forward/ }, 'a forward takes one backward')
  return weights
}

/** A cancel flag as lib/abort.ts makes it (an Int32Array on a SharedArrayBuffer, which cannot be detached), raised. */
export function raisedCancelFlag() {
  const f = new Int32Array(new SharedArrayBuffer(4))
  f[0] = 1
  return f
}

/**
 * Aborts on a trainer: an aborted signal rejects before the job; a raised cancel flag stops the native step at a
 * layer boundary with the gradients accumulated so far untouched, and stops the backward (after the head and
 * final-norm gradients were added) with all gradients dropped; the trainer stays usable.
 */
export async function abortLeavesTrainerUsable(t, tr, batch) {
  const { native } = require('../dist/cjs/native.js')
  const ac = new AbortController()
  ac.abort()
  await t.rejects(tr.step(batch, { signal: ac.signal }), { code: 'ABORT_ERR' }, 'an aborted signal rejects before the job')
  await tr.step(batch)
  const before = await tr.gradients()
  const n = batch[0].tokens.length
  await t.rejects(
    native().trainerStep(
      tr.handle,
      Int32Array.of(n),
      Int32Array.from(batch[0].tokens),
      Float32Array.from(batch[0].weights),
      raisedCancelFlag()
    ),
    { code: 'ABORT_ERR' },
    'a raised cancel flag stops the native step'
  )
  const after = await tr.gradients()
  t.ok(
    after.every((g, k) => g.grad.every((x, j) => x === before[k].grad[j])),
    'an abort in the forward leaves the gradients as they were'
  )
  await tr.forward(batch.map((s) => s.tokens))
  await t.rejects(
    native().trainerBackward(tr.handle, Float32Array.from(batch[0].weights), raisedCancelFlag()),
    { code: 'ABORT_ERR' },
    'a raised cancel flag stops the native backward'
  )
  t.ok(
    (await tr.gradients()).every((g) => g.grad.every((x) => x === 0)),
    'an abort in the backward leaves no partial gradients'
  )
  t.ok(Number.isFinite((await tr.step(batch)).loss), 'the trainer is usable after an abort')
}
