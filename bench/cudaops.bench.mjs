// Transformer CUDA kernels: attention forward/backward TFLOP/s (head dim 128, seq 4k, causal; FLOP convention of
// anchors.md: forward 4*B*H*S*S*d, halved when causal; backward 2.5x forward), GEMM TFLOP/s (2*M*N*K) and
// decode bandwidth, on a GPU when one is usable. Timings use device-resident data (cudaOpsTime: back-to-back
// launches between two device synchronisations), the median of several such runs.
// Without a GPU it says why it skipped and records kernel-launch sanity timings of the SIMT emulation on tiny
// shapes: those show the emulated kernels run, and are no statement about performance.
import { spawnSync } from 'child_process'
import { native } from '../dist/cjs/native.js'
import { median } from './lib.mjs'

const TARGET_ATTENTION_TFLOPS = 200 // issue 4, H100, causal, head dim 128, seq 4k

// PyTorch's scaled_dot_product_attention on the same GPU (the peer named in issue 4), when python3 with a
// CUDA-enabled torch is installed; otherwise says why not.
const SDPA_SCRIPT = `
import sys, torch, torch.nn.functional as F
B, S, H, D, causal = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == '1'
assert torch.cuda.is_available(), 'torch has no usable CUDA device'
q, k, v = (torch.randn(B, H, S, D, device='cuda', dtype=torch.bfloat16) for _ in range(3))
for _ in range(3): F.scaled_dot_product_attention(q, k, v, is_causal=causal)
torch.cuda.synchronize()
times = []
for _ in range(5):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(10): F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    b.record(); torch.cuda.synchronize(); times.append(a.elapsed_time(b) / 10 / 1000)
times.sort(); print(times[len(times) // 2])
`
function torchSdpaSeconds(B, S, H, D, causal) {
  const r = spawnSync('python3', ['-c', SDPA_SCRIPT, String(B), String(S), String(H), String(D), causal ? '1' : '0'], {
    encoding: 'utf8',
    timeout: 120000
  })
  if (r.status !== 0) return { error: (r.error?.message ?? r.stderr ?? '').trim().split('\n').pop() || 'python3 failed' }
  return { seconds: Number(r.stdout.trim()) }
}

function timeMedian(addon, device, opts, runs = 5) {
  const xs = []
  for (let i = 0; i < runs; i++) xs.push(addon.cudaOpsTime(device, opts))
  return median(xs)
}

export default async () => {
  const addon = native()
  const info = addon.systemInfo()
  const results = []
  if (info.cuda.available) {
    const gpu = info.cuda.infoJson
    const B = 4,
      S = 4096,
      H = 16,
      D = 128
    for (const causal of [true, false]) {
      const sec = timeMedian(addon, 'cuda', {
        op: 'attention_forward',
        dtype: 'bf16',
        B,
        T: S,
        Hq: H,
        Hkv: H,
        D,
        causal,
        iterations: 10,
        warmup: 2
      })
      const flops = (4 * B * H * S * S * D) / (causal ? 2 : 1)
      const torch = torchSdpaSeconds(B, S, H, D, causal)
      results.push({
        name: `attention forward bf16 B=${B} S=${S} H=${H} d=${D} causal=${causal}`,
        seconds: sec,
        tflops: flops / sec / 1e12,
        torchSdpa: torch.seconds
          ? { seconds: torch.seconds, tflops: flops / torch.seconds / 1e12, ratio: torch.seconds / sec }
          : { unavailable: torch.error }
      })
    }
    {
      const sec = timeMedian(
        addon,
        'cuda',
        { op: 'attention_backward', dtype: 'bf16', B, T: S, Hq: H, Hkv: H, D, iterations: 3, warmup: 1 },
        3
      )
      const flops = (2.5 * 4 * B * H * S * S * D) / 2
      results.push({ name: `attention backward bf16 B=${B} S=${S} H=${H} d=${D} causal=true`, seconds: sec, tflops: flops / sec / 1e12 })
    }
    for (const [M, N, K] of [
      [4096, 4096, 4096],
      [8192, 3584, 3584]
    ]) {
      for (const dtype of ['bf16', 'f32']) {
        const sec = timeMedian(addon, 'cuda', { op: 'gemm_forward', dtype, M, N, K, iterations: 10, warmup: 2 })
        results.push({ name: `gemm ${dtype} ${M}x${N}x${K}`, seconds: sec, tflops: (2 * M * N * K) / sec / 1e12 })
      }
    }
    for (const context of [4096, 16384]) {
      const Bd = 8,
        Hq = 28,
        Hkv = 4
      const sec = timeMedian(addon, 'cuda', {
        op: 'attention_decode',
        dtype: 'bf16',
        B: Bd,
        Hq,
        Hkv,
        D,
        context,
        iterations: 20,
        warmup: 2
      })
      const bytes = 2 * Bd * Hkv * context * D * 2 // K and V, bf16
      results.push({
        name: `decode bf16 B=${Bd} Hq=${Hq} Hkv=${Hkv} d=${D} context=${context}`,
        seconds: sec,
        gbPerSecond: bytes / sec / 1e9
      })
    }
    const causal = results[0]
    return {
      name: 'cudaops',
      results,
      summary:
        `GPU ${gpu}: causal attention forward ${causal.tflops.toFixed(1)} TFLOP/s at d=128, seq 4k ` +
        `(target >= ${TARGET_ATTENTION_TFLOPS}; FlashAttention-2 191-335 per anchors.md; torch SDPA ` +
        `${causal.torchSdpa.tflops ? causal.torchSdpa.tflops.toFixed(1) + ' TFLOP/s' : 'unavailable: ' + causal.torchSdpa.unavailable}); ` +
        results
          .filter((r) => r.name.startsWith('gemm'))
          .map((r) => `${r.name} ${r.tflops.toFixed(1)} TFLOP/s`)
          .join('; ')
    }
  }
  // No GPU: emulated sanity timings on tiny shapes (the emulation runs each CUDA thread as a fiber on the CPU).
  const reason = info.cuda.reason
  const cases = [
    ['attention forward f32 B=1 T=128 H=2 d=64', { op: 'attention_forward', dtype: 'f32', B: 1, T: 128, Hq: 2, Hkv: 2, D: 64 }],
    ['attention forward bf16 (wmma) B=1 T=128 H=2 d=64', { op: 'attention_forward', dtype: 'bf16', B: 1, T: 128, Hq: 2, Hkv: 2, D: 64 }],
    ['attention backward f32 B=1 T=128 H=2 d=64', { op: 'attention_backward', dtype: 'f32', B: 1, T: 128, Hq: 2, Hkv: 2, D: 64 }],
    ['gemm f32 128x128x128', { op: 'gemm_forward', dtype: 'f32', M: 128, N: 128, K: 128 }],
    ['gemm bf16 (wmma) 128x128x128', { op: 'gemm_forward', dtype: 'bf16', M: 128, N: 128, K: 128 }],
    ['decode f32 B=2 Hq=8 Hkv=2 d=64 context=1024', { op: 'attention_decode', dtype: 'f32', B: 2, Hq: 8, Hkv: 2, D: 64, context: 1024 }]
  ]
  for (const [name, opts] of cases) {
    const sec = timeMedian(addon, 'emulated', { ...opts, iterations: 2, warmup: 1 }, 3)
    results.push({ name: `emulated ${name}`, seconds: sec })
  }
  return {
    name: 'cudaops',
    results,
    summary:
      `skipped GPU measurements: ${reason}. Recorded SIMT-emulation launch timings on tiny shapes only ` +
      `(${results.map((r) => `${r.name}: ${(r.seconds * 1e3).toFixed(1)} ms`).join('; ')}); these say nothing about GPU speed.`
  }
}
