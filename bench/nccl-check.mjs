// The real-NCCL part of `npm run gpu-check`: the CUDA trainer's gradient sum through NCCL itself on GPU memory,
// which no test can run without a GPU (test/dist-cuda.test.mjs runs the same trainer path on device 'emulated'
// through recode's test NCCL over MPI).
//   1. a world of one: a training step of the tiny model, the gradients summed through ncclAllReduce (the identity
//      for one rank: the same bits after as before), then an AdamW update from them -- with the world itself joined
//      torchrun style first (RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT: the id over the rendezvous, the world's
//      host collectives staged through GPU memory and NCCL, each the identity for one rank);
//   2. two ranks where the machine has two GPUs: `mpirun -np 2` (where MPI is) and a torchrun-style pair without MPI
//      (RANK / WORLD_SIZE / MASTER_*) training on device cuda each give the weights and per-step metrics of one
//      process with gradAccumulation 2, bit for bit.
// Each part says why it is skipped (no NCCL, the test NCCL, one GPU, no mpirun).
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawn, spawnSync } from 'child_process'
import * as net from 'net'
import { root, require } from './lib.mjs'

async function freePort() {
  const server = net.createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = server.address().port
  await new Promise((resolve) => server.close(resolve))
  return port
}

/**
 * The world of a torchrun launch of one rank on `device`: joined through World.join (NCCL's id over the TCP
 * rendezvous at MASTER_ADDR:MASTER_PORT), then each of the world's host collectives through NCCL on the device --
 * every one the identity for one rank, so the bits must come back unchanged. The communicator stays joined (the
 * training step after it runs beside it, as in a torchrun run); returns the result and a function that leaves it.
 */
export async function torchrunWorldOfOne(device) {
  const { World } = require('../dist/cjs/index.js')
  const { native } = require('../dist/cjs/native.js')
  const port = await freePort()
  const saved = {
    MASTER_ADDR: process.env.MASTER_ADDR,
    MASTER_PORT: process.env.MASTER_PORT,
    RANK: process.env.RANK,
    WORLD_SIZE: process.env.WORLD_SIZE
  }
  Object.assign(process.env, { MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), RANK: '0', WORLD_SIZE: '1' })
  try {
    const world = new World(0, 1, 0, 1, 'torchrun')
    world.engine = 'nccl-pending'
    await world.join(device)
    // World's own methods skip a world of one: the native collectives directly, as a larger world calls them
    const sums = Float64Array.of(1.5, -0.1, 2 ** -40, 7)
    native().ncclWorldAllreduce(sums)
    const bytes = new TextEncoder().encode('run folder of rank 0 \u00e9')
    const sent = bytes.slice()
    native().ncclWorldBroadcast(bytes, 0)
    const gathered = native().ncclWorldAllgather(Float64Array.of(3, 1e-300))
    native().ncclWorldBarrier()
    const ok =
      world.engine === 'nccl' &&
      sums.join() === [1.5, -0.1, 2 ** -40, 7].join() &&
      Buffer.from(bytes).equals(Buffer.from(sent)) &&
      gathered.length === 2 &&
      gathered[0] === 3 &&
      gathered[1] === 1e-300
    return { ok, leave: () => world.finalize() }
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  }
}

/**
 * A world of one on `device` (test/dist-cuda.test.mjs runs it on 'emulated' through the test NCCL): a training step
 * of the tiny model, its gradients summed through NCCL -- which must leave them bit for bit as they were -- and an
 * AdamW update from them.
 */
export async function worldOfOne(device, dir) {
  const { initModel, loadModel, ModelTrainer, ncclUniqueId } = require('../dist/cjs/index.js')
  const torchrun = await torchrunWorldOfOne(device)
  initModel({ preset: 'tiny', arch: 'qwen2', out: path.join(dir, 'model'), seed: 11 })
  const model = await loadModel(path.join(dir, 'model'), { device, dtype: 'f32', maxBatch: 2, maxContext: 64 })
  const trainer = new ModelTrainer(model)
  try {
    const tokens = Array.from({ length: 24 }, (_, i) => (i * 7919 + 13) % 200)
    const weights = tokens.map((_, i) => (i === 0 ? 0 : 1 / 23))
    await trainer.step([{ tokens, weights }])
    const before = await trainer.gradients()
    await trainer.initNccl(ncclUniqueId(), 0, 1)
    await trainer.sumGradientsOverRanks()
    const after = await trainer.gradients()
    const gradientsUnchanged = before.every((g, k) =>
      Buffer.from(g.grad.buffer, g.grad.byteOffset, g.grad.byteLength).equals(
        Buffer.from(after[k].grad.buffer, after[k].grad.byteOffset, after[k].grad.byteLength)
      )
    )
    const gradNorm = await trainer.applyAdamW({ lr: 1e-3, maxGradNorm: 1 })
    return {
      ok: torchrun.ok && gradientsUnchanged && Number.isFinite(gradNorm) && gradNorm > 0,
      torchrunWorld: torchrun.ok,
      gradientsUnchanged,
      gradNorm
    }
  } finally {
    trainer.dispose()
    model.dispose()
    torchrun.leave()
  }
}

export default async function ncclCheck({ emulated, log, left }) {
  const out = { checks: [], skipped: [] }
  const skip = (what, why) => {
    log(`${what}: skipped: ${why}`)
    out.skipped.push({ what, why })
  }
  if (emulated) {
    skip('nccl', "emulated run: NCCL reduces GPU memory (test/dist-cuda.test.mjs covers device 'emulated' through the test NCCL)")
    return out
  }
  const { distInfo, systemInfo, readMetrics } = require('../dist/cjs/index.js')
  const nccl = distInfo().nccl
  if (!nccl.loaded) {
    skip('nccl', `NCCL not found: ${nccl.error}`)
    return out
  }
  if (nccl.hostMemory) {
    skip('nccl', `${nccl.library} is recode's test NCCL (host memory), not NCCL: unset RECODE_NCCL_LIBRARY`)
    return out
  }
  log(`nccl: NCCL ${nccl.versionString} (${nccl.library})`)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-nccl-check-'))
  try {
    // 1. a world of one
    const one = await worldOfOne('cuda', dir)
    log(
      `nccl world of one: torchrun-style world ${one.torchrunWorld ? 'joined, host collectives exact' : 'FAILED'}, gradients ${one.gradientsUnchanged ? 'unchanged' : 'CHANGED'} by the sum, gradNorm ${one.gradNorm}`
    )
    out.checks.push({ what: 'nccl world of one', ...one, version: nccl.versionString })

    // 2. two ranks on two GPUs
    const gpus = systemInfo().cuda.devices.length
    const mpi = distInfo().mpi
    const haveMpirun = spawnSync('mpirun', ['--version'], { stdio: 'ignore' }).status === 0
    if (gpus < 2) skip('nccl two ranks', `one GPU (${gpus} visible)`)
    else if (left() < 180000) skip('nccl two ranks', 'time budget')
    else {
      const config = {
        preset: 'tiny',
        device: 'cuda',
        computeDtype: 'fp32',
        warmStartSteps: 0,
        steps: 3,
        warmupSteps: 1,
        promptsPerStep: 2,
        samplesPerPrompt: 4,
        maxCompletionTokens: 16,
        checkpointEvery: 0,
        gradAccumulation: 2,
        algorithm: 'grpo',
        gradClip: 0.5,
        synthetic: { seed: 3, train: 40, heldOut: 2 }
      }
      const child = path.join(root, 'test/dist_train_child.mjs')
      const args = (runDir) => [child, JSON.stringify(config), runDir]
      const run = (cmd, pre, runDir) => {
        const r = spawnSync(cmd, [...pre, ...args(runDir)], { encoding: 'utf8', timeout: Math.max(1000, left() - 30000) })
        if (r.status !== 0) throw new Error(`${cmd} failed (${r.status}): ${(r.stderr ?? '').slice(-1500)}`)
      }
      const metrics = (d) =>
        readMetrics(path.join(d, 'metrics.jsonl')).records.map(({ time, tokensPerSecond, phaseSeconds, stepSeconds, ...r }) =>
          JSON.stringify(r)
        )
      const weights = (d) => fs.readFileSync(path.join(d, 'model', 'model.safetensors'))
      const compare = (what, two) => {
        const sameMetrics = JSON.stringify(metrics(one)) === JSON.stringify(metrics(two))
        const sameWeights = weights(one).equals(weights(two))
        log(`${what}: metrics ${sameMetrics ? 'identical' : 'DIFFER'}, weights ${sameWeights ? 'identical' : 'DIFFER'}`)
        out.checks.push({ what, ok: sameMetrics && sameWeights, sameMetrics, sameWeights })
      }
      const one = path.join(dir, 'one')
      run(process.execPath, [], one)
      // (a) mpirun: the world over MPI, the gradients through NCCL
      if (!mpi.loaded || !haveMpirun) skip('nccl two ranks (mpirun)', mpi.loaded ? 'mpirun is not on PATH' : `MPI: ${mpi.error}`)
      else {
        const two = path.join(dir, 'two-mpirun')
        run('mpirun', ['-np', '2', '--bind-to', 'none', ...(process.getuid() === 0 ? ['--allow-run-as-root'] : []), process.execPath], two)
        compare('nccl two ranks (mpirun)', two)
      }
      // (b) torchrun style, no MPI: two processes started here with RANK / WORLD_SIZE / LOCAL_RANK / MASTER_*, the
      // world's collectives and the gradients through NCCL, the id over the rendezvous
      const two = path.join(dir, 'two-torchrun')
      const port = await freePort()
      const ranks = [0, 1].map(
        (rank) =>
          new Promise((resolve) => {
            const p = spawn(process.execPath, args(two), {
              stdio: ['ignore', 'ignore', 'pipe'],
              env: {
                ...process.env,
                RECODE_LAUNCHER: 'torchrun',
                RANK: String(rank),
                LOCAL_RANK: String(rank),
                WORLD_SIZE: '2',
                MASTER_ADDR: '127.0.0.1',
                MASTER_PORT: String(port)
              }
            })
            let err = ''
            p.stderr.on('data', (d) => {
              err += d
            })
            const timer = setTimeout(() => p.kill('SIGKILL'), Math.max(1000, left() - 30000))
            p.on('exit', (code) => {
              clearTimeout(timer)
              resolve({ rank, code, err })
            })
          })
      )
      const failed = (await Promise.all(ranks)).filter((r) => r.code !== 0)
      if (failed.length > 0)
        throw new Error(`torchrun-style rank ${failed[0].rank} failed (${failed[0].code}): ${failed[0].err.slice(-1500)}`)
      compare('nccl two ranks (torchrun style)', two)
    }
  } catch (err) {
    log(`nccl: FAILED: ${err?.message ?? err}`)
    out.checks.push({ what: 'nccl', ok: false, error: String(err?.message ?? err) })
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return out
}
