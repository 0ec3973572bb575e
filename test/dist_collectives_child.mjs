// One rank of the collectives test in dist.test.mjs: prints one JSON line of what each collective returned.
import { createRequire } from 'module'
import { currentWorld } from '../dist/esm/index.mjs'

const require = createRequire(import.meta.url)
const addon = require('node-gyp-build')(new URL('..', import.meta.url).pathname)
const w = currentWorld()
const f32 = Float32Array.of(w.rank + 0.5, -1)
addon.mpiAllreduce(f32)
const f64 = w.allreduce(Float64Array.of(w.rank === 0 ? 0.1 : 0.2))
const i64 = BigInt64Array.of(BigInt(w.rank) + 2n ** 40n)
addon.mpiAllreduce(i64)
const gathered = w.allgatherv(Float64Array.from({ length: w.rank + 1 }, (_, i) => 10 * w.rank + i))
const bcast = w.broadcast(Float64Array.of(w.rank === 1 ? 7 : -1), 1)
const scattered = addon.mpiReduceScatter(Float32Array.from({ length: 2 * w.size }, (_, i) => i + w.rank))
w.barrier()
console.log(
  JSON.stringify({
    rank: w.rank,
    size: w.size,
    localRank: w.localRank,
    launcher: w.launcher,
    f32: Array.from(f32),
    f64: Array.from(f64),
    i64: i64[0].toString(),
    gathered: gathered.map((a) => Array.from(a)),
    bcast: bcast[0],
    scattered: Array.from(scattered)
  })
)
w.finalize()
