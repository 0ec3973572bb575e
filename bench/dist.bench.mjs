// Data parallelism on one machine: training-phase tokens/s of SFT steps on the tiny preset for 1 rank x 2 threads
// (one process, gradAccumulation 2) versus 2 ranks x 1 thread (mpirun -np 2, one micro-batch each), the same global
// batch and the same result bit for bit (test/dist.test.mjs). Bytes moved per step: the gradient sum is a
// reduce-scatter plus an all-gather of the float32 gradients, each rank sending and receiving 2 (N-1)/N x 4 bytes
// per trainable parameter, plus a few float64 metric sums. Without mpirun or the MPI shim it says why it skipped.
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { require, root, median } from './lib.mjs'

const { distInfo, readMetrics, readSafetensors } = require('../dist/cjs/index.js')

const STEPS = 8
const config = {
  preset: 'tiny',
  algorithm: 'sft',
  steps: STEPS,
  warmupSteps: 1,
  promptsPerStep: 8,
  maxCompletionTokens: 64,
  gradAccumulation: 2,
  checkpointEvery: 0,
  synthetic: { seed: 3, train: 200, heldOut: 2 }
}

function run(ranks, threads, dir, cfgFile) {
  const env = { ...process.env, RECODE_NUM_THREADS: String(threads) }
  const cli = [path.join(root, 'dist/cjs/cli.js'), 'train', '--config', cfgFile, '--run-dir', dir]
  const r =
    ranks === 1
      ? spawnSync(process.execPath, cli, { env, encoding: 'utf8' })
      : spawnSync(
          'mpirun',
          [
            '-np',
            String(ranks),
            '--oversubscribe',
            '--bind-to',
            'none',
            ...(process.getuid() === 0 ? ['--allow-run-as-root'] : []),
            process.execPath,
            ...cli
          ],
          { env, encoding: 'utf8' }
        )
  if (r.status !== 0) throw new Error(`${ranks} rank(s): ${r.stderr.slice(-1000)}`)
  // the first step pays for allocation and warm-up: left out
  const tps = readMetrics(path.join(dir, 'metrics.jsonl'))
    .records.slice(1)
    .map((m) => m.tokensPerSecond)
  return median(tps)
}

export default async function () {
  const info = distInfo()
  const mpirun = spawnSync('mpirun', ['--version'], { stdio: 'ignore' }).status === 0
  if (!info.mpi.loaded || !mpirun) {
    const why = !info.mpi.loaded ? info.mpi.error : 'mpirun is not on PATH'
    return { name: 'dist', results: { skipped: why }, summary: `dist: skipped (${why})` }
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-dist-bench-'))
  try {
    const cfgFile = path.join(tmp, 'config.json')
    fs.writeFileSync(cfgFile, JSON.stringify(config))
    const one = run(1, 2, path.join(tmp, 'one'), cfgFile)
    const two = run(2, 1, path.join(tmp, 'two'), cfgFile)
    const model = readSafetensors(path.join(tmp, 'two', 'model', 'model.safetensors'))
    const params = Object.values(model.tensors).reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0)
    const N = 2
    const gradientBytes = ((2 * (N - 1)) / N) * 4 * params
    const results = {
      mpi: info.mpi.version,
      hardwareThreads: os.cpus().length,
      trainableParameters: params,
      tokensPerSecond: { '1 rank x 2 threads': one, '2 ranks x 1 thread': two },
      bytesPerStepPerRank: { gradients: gradientBytes, metrics: 8 * 2 * N },
      config
    }
    return {
      name: 'dist',
      results,
      summary:
        `dist: SFT training phase, tiny model (${(params / 1e6).toFixed(2)} M parameters): 1 rank x 2 threads ${one.toFixed(0)} tok/s, ` +
        `2 ranks x 1 thread ${two.toFixed(0)} tok/s; ${(gradientBytes / 2 ** 20).toFixed(2)} MiB sent (and received) per rank per step`
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true })
  }
}
