// One rank (or the single process) of the data-parallel tests in dist.test.mjs: train(config) with a reward that
// varies within most groups and is constant in others (so DAPO's dynamic sampling drops some and refills).
// argv: config JSON, run folder, [stopAfterStep | 'resume']. Writes its pid to <run folder>.pid-<rank> first.
import fs from 'fs'
import { train, currentWorld, distInfo } from '../dist/esm/index.mjs'

const [configJson, runDir, extra] = process.argv.slice(2)
const world = currentWorld()
fs.writeFileSync(`${runDir}.pid-${world.rank}`, String(process.pid))
const rewardFunction = (completions, rows) => completions.map((c, k) => (rows[k].new_code.length % 3 === 0 ? 1 : (c.length % 7) / 7))
const onEvent = (e) => {
  if (e.type === 'step') process.stdout.write(`step ${e.step}\n`)
  if (e.type === 'log') process.stdout.write(`${e.message}\n`)
}
try {
  if (extra === 'resume') await train(undefined, { resume: runDir, rewardFunction, onEvent })
  else await train(JSON.parse(configJson), { runDir, rewardFunction, onEvent, ...(extra ? { stopAfterStep: Number(extra) } : {}) })
  // what carried the world's collectives, and whether recode's own MPI shim was loaded (dist-torchrun.test)
  process.stdout.write(`engine ${world.engine}, recode's MPI ${distInfo().mpi.loaded ? 'loaded' : 'not loaded'}\n`)
  world.finalize()
} catch (err) {
  process.stderr.write(`rank ${world.rank}: ${err.code ?? ''} ${err.message}\n`)
  if (world.size > 1) world.abort(1)
  process.exit(1)
}
