// Full fine-tuning on the GPU (src/model/cuda_train_step.cpp): one training step (forward with kept
// activations, fused next-token log-probs, backward through every layer) and the AdamW update of every
// parameter, on a random model of Qwen2.5-1.5B's dimensions (init-model preset 'qwen2.5-1.5b-shape': hidden
// 1536, 28 layers, 12 heads, 2 kv heads, head_dim 128, intermediate 8960, vocab 151936, tied head), batch
// 4 x 512 tokens, in both compute dtypes of the CUDA backend:
//   f32: the model loaded as fp32 (SIMT fp32 kernels): MFU against the H100 SXM's dense fp32 peak (67 TFLOP/s);
//   bf16: the model loaded as bf16 (tensor-core GEMM and attention, fp32 masters): MFU against the H100 SXM's
//         dense bf16 tensor-core peak (989 TFLOP/s).
// Then DoRA r = 64 on every projection (bf16, the base frozen): the adapter-training step and its update.
// Model FLOPs: 6 x parameters x tokens (parameters: every matrix including the tied output head), the
// convention of the question; attention's S^2 term is reported beside it, not counted.
// Without a usable GPU it prints why it skipped and returns an empty result (the emulation says nothing
// about GPU speed, and a 1.5B model through it would take hours).
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require, timeTrainerStep } from './lib.mjs'

const { loadModel, initModel, ModelTrainer } = require('../dist/cjs/index.js')
const { native } = require('../dist/cjs/native.js')
const { DECODER_PROJECTIONS: ALL } = require('../dist/cjs/model/projections.js')

const PEAK_TFLOPS = { f32: 67, bf16: 989 } // H100 SXM5 dense: fp32 non-tensor, bf16 tensor core

export default async function () {
  const info = native().systemInfo()
  if (!info.cuda.available) {
    const reason = `no usable GPU: ${info.cuda.reason}`
    console.log(`train-cuda: skipped (${reason})`)
    return { name: 'train-cuda', results: {}, summary: `skipped: ${reason}` }
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-train-cuda-bench-'))
  try {
    const dir = path.join(tmp, 'qwen2.5-1.5b-shape')
    initModel({ preset: 'qwen2.5-1.5b-shape', arch: 'qwen2', out: dir, seed: 1, dtype: 'bf16' })
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json')))
    const C = cfg.hidden_size
    const H = cfg.num_attention_heads
    const Hkv = cfg.num_key_value_heads
    const D = cfg.head_dim ?? C / H
    const F = cfg.intermediate_size
    const V = cfg.vocab_size
    const L = cfg.num_hidden_layers
    const params = L * (C * H * D + 2 * C * Hkv * D + H * D * C + 3 * C * F + (H + 2 * Hkv) * D + 2 * C) + V * C + C
    const B = 4
    const S = 512
    const tokens = B * S
    let seed = 7
    const rand = () => {
      seed = (seed * 1103515245 + 12345) >>> 0
      return seed
    }
    const batch = Array.from({ length: B }, () => {
      const ids = Array.from({ length: S }, () => rand() % V)
      return { tokens: ids, weights: ids.map((_, j) => (j === 0 ? 0 : 1 / (B * (S - 1)))) }
    })
    const flops = 6 * params * tokens
    const attnFlops = B * 3 * 2 * S * S * H * D // causal: 4 S^2 H D / 2 forward, twice that backward
    let gpu = {}
    try {
      gpu = JSON.parse(info.cuda.infoJson)
    } catch {
      gpu = { raw: info.cuda.infoJson }
    }
    const results = {
      gpu,
      model: { preset: 'qwen2.5-1.5b-shape', hidden: C, layers: L, heads: H, kvHeads: Hkv, headDim: D, intermediate: F, vocab: V, params },
      batch: { sequences: B, tokensPerSequence: S },
      dtypes: {}
    }
    const lines = []
    for (const dtype of ['bf16', 'f32']) {
      const m = await loadModel(dir, { device: 'cuda', dtype, maxBatch: 1, maxContext: S })
      const tr = new ModelTrainer(m)
      try {
        const [stepSec, adamSec] = await timeTrainerStep(tr, batch, { label: dtype, lr: 1e-6, minSamples: 3, stepTime: 10, adamTime: 5 })
        const total = stepSec + adamSec
        const tflops = flops / total / 1e12
        results.dtypes[dtype] = {
          stepSeconds: stepSec,
          adamwSeconds: adamSec,
          tokensPerSecond: tokens / total,
          modelTflops: tflops,
          peakTflops: PEAK_TFLOPS[dtype],
          mfu: tflops / PEAK_TFLOPS[dtype],
          attentionTflopsNotCounted: attnFlops / stepSec / 1e12
        }
        lines.push(
          `${dtype}: forward+backward ${(stepSec * 1e3).toFixed(0)} ms + AdamW ${(adamSec * 1e3).toFixed(0)} ms = ${(tokens / total).toFixed(0)} tokens/s, ` +
            `${tflops.toFixed(1)} model TFLOP/s = ${((100 * tflops) / PEAK_TFLOPS[dtype]).toFixed(1)}% MFU of the H100's dense ${dtype} peak (${PEAK_TFLOPS[dtype]} TFLOP/s)`
        )
      } finally {
        tr.dispose()
        m.dispose()
      }
    }
    // DoRA r = 64 (alpha 128, dropout 0.05) on every projection, bf16: the base frozen (no weight-gradient GEMMs),
    // so the model FLOPs are 4 x parameters x tokens (forward + activation gradients); the adapters' own products
    // and the DoRA norms / merge after each update are extra work, not counted
    {
      const m = await loadModel(dir, { device: 'cuda', dtype: 'bf16', maxBatch: 1, maxContext: S })
      const tr = new ModelTrainer(m, { adapter: { type: 'dora', r: 64, alpha: 128, dropout: 0.05, targetModules: ALL, seed: 1 } })
      try {
        const [stepSec, adamSec] = await timeTrainerStep(tr, batch, {
          label: 'dora r64 bf16',
          lr: 1e-6,
          minSamples: 3,
          stepTime: 10,
          adamTime: 5
        })
        const adapterParams = (await tr.parameters()).reduce((n, p) => n + p.data.length, 0)
        const total = stepSec + adamSec
        const tflops = (4 * params * tokens) / total / 1e12
        results.doraR64 = {
          dtype: 'bf16',
          adapterParams,
          stepSeconds: stepSec,
          adamwAndMergeSeconds: adamSec,
          tokensPerSecond: tokens / total,
          modelTflops4N: tflops,
          mfu: tflops / PEAK_TFLOPS.bf16
        }
        lines.push(
          `DoRA r=64 bf16 (${(adapterParams / 1e6).toFixed(1)}M adapter parameters): forward+backward ${(stepSec * 1e3).toFixed(0)} ms + AdamW/norms/merge ${(adamSec * 1e3).toFixed(0)} ms = ${(tokens / total).toFixed(0)} tokens/s, ` +
            `${tflops.toFixed(1)} TFLOP/s at 4 x params x tokens = ${((100 * tflops) / PEAK_TFLOPS.bf16).toFixed(1)}% of the bf16 peak`
        )
      } finally {
        tr.dispose()
        m.dispose()
      }
    }
    const summary =
      `training step, Qwen2.5-1.5B-shaped random model (${(params / 1e9).toFixed(2)}B parameters), ${B} x ${S} tokens, forward+backward+AdamW:\n` +
      lines.join('\n')
    return { name: 'train-cuda', results, summary }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true })
  }
}
