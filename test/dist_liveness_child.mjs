// One process of the liveness tests in dist-torchrun.test.mjs: the heartbeats of a torchrun-style world, no NCCL.
// argv: rank, size, port, timeout ms, 'stay' (until killed) | 'stop' (a clean end after rank * 300 ms).
import { require } from './helpers.mjs'

const { native } = require('../dist/cjs/native.js')

const [rank, size, port, timeoutMs, mode] = process.argv.slice(2)
native().distLivenessStart(Number(rank), Number(size), '127.0.0.1', Number(port), 100, Number(timeoutMs))
process.stdout.write('connected\n')
if (mode === 'stop')
  setTimeout(
    () => {
      native().distLivenessStop()
      process.stdout.write('stopped\n')
    },
    300 * (Number(rank) + 1)
  )
else setInterval(() => {}, 1000)
