// Sampling throughput at vocabulary 151,936 for batch 1, 64 and 256: rows per second and effective bandwidth
// (logits bytes / time) beside the machine's measured copy bandwidth. Target (issue 3): CPU within 3x of one
// read of the logits; on an H100 within 3x of the HBM floor (~46 us for 256 rows fp32).
import { createRequire } from 'module'
import * as os from 'os'
import { timeAsync, copyBandwidth } from './lib.mjs'

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
const { sample, systemInfo } = require('../dist/cjs/index.js')

const VOCAB = 151936

export default async function () {
  const info = systemInfo()
  const devices = ['cpu', ...(info.cuda.available ? ['cuda'] : [])]
  const copy = copyBandwidth(256 * VOCAB * 4)
  const logits = new Float32Array(256 * VOCAB)
  let x = 12345
  for (let i = 0; i < logits.length; i++) {
    // cheap LCG noise: logits-like spread without Math.random cost
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    logits[i] = (x / 4294967296) * 8 - 4
  }
  const modes = [
    { name: 'temperature 1 (unfiltered)', opts: { temperature: 1 } },
    { name: 'top-p 0.9', opts: { topP: 0.9 } },
    { name: 'top-k 50 + top-p 0.95 + min-p 0.05', opts: { topK: 50, topP: 0.95, minP: 0.05 } }
  ]
  const results = []
  let step = 0
  for (const device of devices) {
    for (const mode of modes) {
      for (const batch of [1, 64, 256]) {
        const view = logits.subarray(0, batch * VOCAB)
        const s = await timeAsync(
          `${device} ${mode.name} b${batch}`,
          () => sample(view, batch, { ...mode.opts, seed: 1, step: step++, device }),
          { minSamples: 5, maxTime: 2 }
        )
        const cpuSeconds =
          device === 'cpu'
            ? await cpuSecondsPerCall(() => sample(view, batch, { ...mode.opts, seed: 2, device }), batch >= 64 ? 2 : 20)
            : null
        const bytes = batch * VOCAB * 4
        const oneRead = bytes / copy // time to copy the logits once: a conservative stand-in for one read
        results.push({
          device,
          mode: mode.name,
          batch,
          vocab: VOCAB,
          seconds: s,
          cpuSecondsPerCall: cpuSeconds,
          rowsPerSecond: batch / s,
          effectiveGBps: bytes / s / 1e9,
          copyGBps: copy / 1e9,
          ratioToOneCopy: s / oneRead
        })
      }
    }
  }
  const lines = results.map(
    (r) =>
      `${r.device.padEnd(5)} ${r.mode.padEnd(36)} batch ${String(r.batch).padStart(3)}: ` +
      `${(r.seconds * 1e3).toFixed(3)} ms (cpu time ${r.cpuSecondsPerCall === null ? '-' : (r.cpuSecondsPerCall * 1e3).toFixed(2) + ' ms'}), ${r.rowsPerSecond.toFixed(0)} rows/s, ${r.effectiveGBps.toFixed(2)} GB/s ` +
      `(${r.ratioToOneCopy.toFixed(1)}x the time of one ${((r.batch * VOCAB * 4) / 1e6).toFixed(1)} MB copy)`
  )
  const summary =
    `copy bandwidth ${(copy / 1e9).toFixed(2)} GB/s (Float32Array.set of ${((256 * VOCAB * 4) / 1e6).toFixed(0)} MB); ` +
    `threads ${info.threads}, SIMD ${info.simdActive}, load average ${os
      .loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')}\n` +
    lines.join('\n')
  return { name: 'sampling', results, summary }
}
