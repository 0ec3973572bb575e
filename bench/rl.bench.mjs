// Advantages + policy loss for 512 sequences x 4,096 tokens (DAPO settings: clip 0.2/0.28, dual clip 10,
// token-mean; and GRPO with a k3 KL term; TRL's GSPO, CISPO, SAPO, delta with the rollout correction, and the
// entropy mask with the entropy bonus, issue 16): time per pass and effective bandwidth (bytes the pass must read
// and write / time) beside the measured copy bandwidth. Target (issue 3): >= 50% of memory bandwidth.
import { createRequire } from 'module'
import * as os from 'os'
import { timeAsync, timeSync } from './lib.mjs'

/** Process CPU seconds (all threads) per call, over `n` sequential calls: unlike wall time, it does not grow
 * when other processes compete for the cores. */
async function cpuSecondsPerCall(fn, n) {
  await fn()
  const c0 = process.cpuUsage()
  for (let i = 0; i < n; i++) await fn()
  const c = process.cpuUsage(c0)
  return (c.user + c.system) / 1e6 / n
}

const require = createRequire(import.meta.url)
const { grpoAdvantages, policyLoss, systemInfo } = require('../dist/cjs/index.js')

const B = 512,
  T = 4096,
  G = 8

function copyBandwidth(bytes) {
  const src = new Float32Array(bytes / 4).fill(1.5)
  const dst = new Float32Array(bytes / 4)
  return bytes / timeSync('copy', () => dst.set(src), { minSamples: 5, maxTime: 2 })
}

export default async function () {
  const info = systemInfo()
  const devices = ['cpu', ...(info.cuda.available ? ['cuda'] : [])]
  const n = B * T
  const copy = copyBandwidth(n * 4 * 4)
  let x = 7
  const rand = () => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    return x / 4294967296
  }
  const logp = Float32Array.from({ length: n }, () => -3 * rand())
  const oldLogp = Float32Array.from(logp, (v) => v + 0.2 * (rand() - 0.5))
  const refLogp = Float32Array.from(logp, (v) => v + 0.2 * (rand() - 0.5))
  const mask = Float32Array.from({ length: n }, (_, i) => (i % T < T - ((i / T) % 1000) ? 1 : 0))
  const rewards = Float32Array.from({ length: B }, () => rand())
  const entropy = Float32Array.from({ length: n }, () => 4 * rand())
  const rolloutLogp = Float32Array.from(oldLogp, (v) => v + 0.1 * (rand() - 0.5))
  const configs = [
    { name: 'DAPO (clip 0.2/0.28, dual 10, token-mean)', opts: { clipLow: 0.2, clipHigh: 0.28, clipRatioC: 10 }, withRef: false },
    {
      name: 'GRPO + k3 KL (seq-mean-token-mean)',
      opts: { klCoef: 0.001, klEstimator: 'k3', aggregation: 'seq-mean-token-mean' },
      withRef: true
    },
    // TRL's objectives (issue 16): the extended path beside the two above
    {
      name: 'GSPO (grpo, sequence-level ratio)',
      opts: { lossType: 'grpo', importanceSamplingLevel: 'sequence', clipLow: 3e-4, clipHigh: 4e-4 },
      withRef: false
    },
    { name: 'CISPO (cap 5, token-mean)', opts: { lossType: 'cispo', clipHigh: 5 }, withRef: false },
    { name: 'SAPO (tau 1.0/1.05)', opts: { lossType: 'sapo' }, withRef: false },
    {
      name: 'DAPO + delta 4 + rollout truncate (token, C 2)',
      opts: { lossType: 'dapo', clipHigh: 0.28, delta: 4, rolloutCorrection: { mode: 'truncate', level: 'token', c: 2 } },
      withRef: false,
      extraBytes: 1
    },
    {
      name: 'DAPO + top-20% entropy + entropy bonus',
      opts: { lossType: 'dapo', clipHigh: 0.28, topEntropyQuantile: 0.2, entropyCoef: 0.001 },
      withRef: false,
      extraBytes: 1
    }
  ]
  const results = []
  for (const device of devices) {
    for (const c of configs) {
      const gradOut = new Float32Array(n)
      const run = async () => {
        const advantages = grpoAdvantages(rewards, G, { convention: 'verl', scale: 'group', device })
        return policyLoss(
          {
            batch: B,
            length: T,
            logp,
            oldLogp,
            refLogp: c.withRef ? refLogp : undefined,
            advantages,
            mask,
            entropy: c.opts.topEntropyQuantile !== undefined ? entropy : undefined,
            rolloutLogp: c.opts.rolloutCorrection ? rolloutLogp : undefined
          },
          { ...c.opts, device, gradOut }
        )
      }
      const s = await timeAsync(`${device} ${c.name}`, run, { minSamples: 5, maxTime: 3 })
      const cpuSeconds = device === 'cpu' ? await cpuSecondsPerCall(run, 5) : null
      // bytes a pass must move: logp, oldLogp, mask (+ refLogp) read, grad written
      const bytes = n * 4 * ((c.withRef ? 5 : 4) + (c.extraBytes ?? 0))
      results.push({
        device,
        config: c.name,
        sequences: B,
        tokens: T,
        seconds: s,
        cpuSecondsPerCall: cpuSeconds,
        tokensPerSecond: n / s,
        effectiveGBps: bytes / s / 1e9,
        copyGBps: copy / 1e9,
        fractionOfCopyBandwidth: bytes / s / copy
      })
    }
  }
  const summary =
    `copy bandwidth ${(copy / 1e9).toFixed(2)} GB/s; threads ${info.threads}; load average ${os
      .loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')}\n` +
    results
      .map(
        (r) =>
          `${r.device.padEnd(5)} ${r.config.padEnd(48)}: ${(r.seconds * 1e3).toFixed(2)} ms (cpu time ${r.cpuSecondsPerCall === null ? '-' : (r.cpuSecondsPerCall * 1e3).toFixed(1) + ' ms'}), ${(r.tokensPerSecond / 1e6).toFixed(1)} M tokens/s, ` +
          `${r.effectiveGBps.toFixed(2)} GB/s = ${(100 * r.fractionOfCopyBandwidth).toFixed(0)}% of copy bandwidth`
      )
      .join('\n')
  return { name: 'rl', results, summary }
}
