// What the multi-process tests (dist, dist-cuda, dist-torchrun) share: the mpirun command line, the test NCCL's
// build, the tiny emulated run they compare, and how two runs are compared (metrics without timings, model bytes).
import * as fs from 'fs'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { require, root } from './helpers.mjs'

const { readMetrics } = require('../dist/cjs/index.js')

export const haveMpirun = spawnSync('mpirun', ['--version'], { stdio: 'ignore' }).status === 0
export const haveMpicc = spawnSync('mpicc', ['--version'], { stdio: 'ignore' }).status === 0

/** mpirun's options for n local ranks on a 2-core machine, as root when the tests are. */
export const mpirunArgs = (n) => [
  '-np',
  String(n),
  '--oversubscribe',
  '--bind-to',
  'none',
  ...(process.getuid() === 0 ? ['--allow-run-as-root'] : [])
]

/** The child that trains one rank (config JSON, run folder). */
export const trainChild = path.join(root, 'test/dist_train_child.mjs')

/** Builds the test NCCL (test/fixtures/nccl_mpi.c: NCCL's calls over MPI on host memory) into dir; returns its path. */
export function buildTestNccl(dir) {
  const lib = path.join(dir, 'libnccl-test.so')
  const r = spawnSync('mpicc', ['-shared', '-fPIC', '-O2', '-fvisibility=hidden', '-o', lib, path.join(root, 'test/fixtures/nccl_mpi.c')], {
    encoding: 'utf8'
  })
  if (r.status !== 0) throw new Error(`mpicc failed: ${r.stderr}`)
  return lib
}

/** A run's per-step metrics without the timings (which differ between any two runs). */
export const metricsOf = (dir) =>
  readMetrics(path.join(dir, 'metrics.jsonl')).records.map((r) => {
    const { time, tokensPerSecond, phaseSeconds, stepSeconds, ...rest } = r
    return rest
  })

/** The trained model's bytes. */
export const weights = (dir) => fs.readFileSync(path.join(dir, 'model', 'model.safetensors'))

/** The emulated-device run of the NCCL tests: small enough for the emulation on a loaded 2-core machine, still several
 * updates with clipping. */
export const EMULATED_BASE = {
  preset: 'tiny',
  device: 'emulated',
  warmStartSteps: 0,
  steps: 3,
  warmupSteps: 1,
  promptsPerStep: 2,
  samplesPerPrompt: 2,
  maxCompletionTokens: 8,
  checkpointEvery: 0,
  gradAccumulation: 2,
  synthetic: { seed: 5, train: 20, heldOut: 2 }
}
