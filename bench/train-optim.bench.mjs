// AdamW and global-norm clipping over a model's worth of fp32 tensors: recode's native step against
// torch.optim.AdamW (the peer: /usr/bin/python3's torch, or RECODE_TORCH_PYTHON's; same CPU and thread count), in parameters
// per second. Shapes: one 16M tensor, and 7 projections x 4 layers of a small decoder (many tensors per call).
import { spawnSync } from 'child_process'
import { require, timeSync } from './lib.mjs'

const { adamwStep, clipGradNorm } = require('../dist/cjs/train/optim.js')
const { native } = require('../dist/cjs/native.js')

function tensors(sizes) {
  return sizes.map((n) => {
    const param = new Float32Array(n)
    const grad = new Float32Array(n)
    for (let i = 0; i < n; i++) {
      param[i] = Math.sin(i) * 0.02
      grad[i] = Math.cos(i) * 1e-3
    }
    return { param, grad, expAvg: new Float32Array(n), expAvgSq: new Float32Array(n) }
  })
}

const SHAPES = {
  'one 16M tensor': [1 << 24],
  'decoder 4 layers x 7 projections (896 x 4864 MLP)': Array.from({ length: 4 }, () => [
    896 * 896,
    128 * 896,
    128 * 896,
    896 * 896,
    4864 * 896,
    4864 * 896,
    896 * 4864
  ]).flat()
}

function torchTimes(shapes, threads) {
  const py = `
import json, sys, time, torch
torch.set_num_threads(${threads})
out = {}
for name, sizes in json.loads(sys.argv[1]).items():
    for foreach in (False, True):
        ps = [torch.zeros(n, requires_grad=True) for n in sizes]
        for p in ps:
            p.grad = torch.randn(p.numel()) * 1e-3
        opt = torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.1, foreach=foreach)
        opt.step()
        times = []
        for _ in range(7):
            t0 = time.perf_counter(); opt.step(); times.append(time.perf_counter() - t0)
        clip = []
        for _ in range(7):
            t0 = time.perf_counter(); torch.nn.utils.clip_grad_norm_(ps, 1e9); clip.append(time.perf_counter() - t0)
        out[name + (' foreach' if foreach else '')] = {'adamw': sorted(times)[3], 'clip': sorted(clip)[3]}
out['torchVersion'] = torch.__version__
print(json.dumps(out))
`
  const python = process.env.RECODE_TORCH_PYTHON || '/usr/bin/python3'
  const r = spawnSync(python, ['-c', py, JSON.stringify(shapes)], { encoding: 'utf8', maxBuffer: 1 << 24 })
  if (r.status !== 0) return { error: (r.stderr || r.error?.message || 'python3-torch unavailable').trim().split('\n').pop() }
  return JSON.parse(r.stdout)
}

export default async function () {
  const threads = native().systemInfo().threads
  const results = []
  const torch = torchTimes(SHAPES, threads)
  const lines = []
  for (const [name, sizes] of Object.entries(SHAPES)) {
    const ts = tensors(sizes)
    const count = sizes.reduce((a, b) => a + b, 0)
    let step = 1
    const adamw = timeSync(`adamw ${name}`, () => adamwStep(ts, { lr: 1e-3, weightDecay: 0.1, step: step++ }), {
      minSamples: 5,
      maxTime: 4
    })
    const grads = ts.map((t) => t.grad)
    const clip = timeSync(`clip ${name}`, () => clipGradNorm(grads, 1e9), { minSamples: 5, maxTime: 3 })
    const peer = torch.error ? undefined : torch[name]
    const peerForeach = torch.error ? undefined : torch[`${name} foreach`]
    const best = peer && peerForeach ? Math.min(peer.adamw, peerForeach.adamw) : undefined
    results.push({
      shape: name,
      tensors: sizes.length,
      params: count,
      threads,
      adamwSeconds: adamw,
      adamwParamsPerSecond: count / adamw,
      clipSeconds: clip,
      clipParamsPerSecond: count / clip,
      torchAdamwSeconds: peer?.adamw,
      torchForeachAdamwSeconds: peerForeach?.adamw,
      torchClipSeconds: peer?.clip,
      speedupVsTorchAdamw: best ? best / adamw : undefined,
      speedupVsTorchClip: peer ? peer.clip / clip : undefined
    })
    lines.push(
      `${name}: AdamW ${(count / adamw / 1e6).toFixed(0)} Mparam/s (${(adamw * 1e3).toFixed(1)} ms)` +
        (best ? `, torch ${(count / best / 1e6).toFixed(0)} Mparam/s -> ${(best / adamw).toFixed(2)}x` : ` (torch: ${torch.error})`) +
        `; clip ${(count / clip / 1e6).toFixed(0)} Mparam/s` +
        (peer ? ` vs torch ${(count / peer.clip / 1e6).toFixed(0)}` : '')
    )
  }
  return {
    name: 'train-optim',
    torch: torch.torchVersion ?? torch.error,
    results,
    summary: [`peer: torch ${torch.torchVersion ?? torch.error}`, ...lines].join('\n')
  }
}
