// Training across processes: the optional engines are found or not and say why (MPI shim, NCCL), the launcher's
// environment is read, the collectives work under mpirun, and `mpirun -np 2` training gives bit for bit the
// weights and per-step metrics of one process running the same global batch with gradAccumulation 2 (GRPO, DAPO
// with dynamic sampling, SFT; full fine-tuning and DoRA with dropout), resumes across rank counts, and a rank killed
// mid-run ends the run with an error naming it.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawn, spawnSync } from 'child_process'
import { require } from './helpers.mjs'
import { haveMpirun, metricsOf, mpirunArgs, trainChild as child, weights } from './dist_helpers.mjs'

const { distInfo, probeEngine, launchEnvironment, rendezvous, ncclUniqueId } = require('../dist/cjs/index.js')
const root = path.join(path.dirname(new URL(import.meta.url).pathname), '..')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-dist-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

const info = distInfo()
const mpiWhy = !info.mpi.loaded ? `the MPI shim is not loaded: ${info.mpi.error}` : !haveMpirun ? 'mpirun is not on PATH' : ''

t.test('engines: the shim and NCCL are found or not, and say why', async (t) => {
  t.equal(typeof info.mpi.loaded, 'boolean')
  if (info.mpi.loaded) {
    t.match(info.mpi.version, /MPI/, `MPI library version: ${info.mpi.version}`)
    t.equal(info.mpi.error, '')
  } else t.match(info.mpi.error, /MPI shim could not be loaded/, `no MPI: ${info.mpi.error}`)
  const missing = probeEngine('mpi', path.join(tmp, 'no-such-librecode_mpi.so'))
  t.equal(missing.loaded, false)
  t.match(
    missing.error,
    /could not be loaded .*no-such-librecode_mpi\.so.*apt-get install openmpi-bin/,
    'a missing shim: the dlopen error and how to get MPI'
  )
  const wrongShim = probeEngine('mpi', 'libm.so.6')
  t.equal(wrongShim.loaded, false)
  t.match(wrongShim.error, /libm\.so\.6 lacks recode_mpi_abi_version/, 'a library that is not the shim is named as such')

  const ncclMissing = probeEngine('nccl', path.join(tmp, 'libnccl.so.2'))
  t.equal(ncclMissing.loaded, false)
  t.match(ncclMissing.error, /NCCL could not be loaded .*libnccl\.so\.2.*RECODE_NCCL_LIBRARY/)
  const notNccl = probeEngine('nccl', 'libm.so.6')
  t.equal(notNccl.loaded, false)
  t.match(
    notNccl.error,
    /libm\.so\.6 lacks ncclGetVersion/,
    "a library without NCCL's entry points is refused, naming the first missing one"
  )
  if (info.nccl.loaded) t.match(info.nccl.versionString, /^\d+\.\d+\.\d+$/, `NCCL ${info.nccl.versionString}`)
  else t.match(info.nccl.error, /NCCL could not be loaded/, `NCCL: ${info.nccl.error}`)
  t.throws(() => probeEngine('gloo', 'x'), { code: 'ERR_INVALID_ARG' })

  const doctor = spawnSync(process.execPath, [path.join(root, 'dist/cjs/cli.js'), 'doctor', '--json'], { encoding: 'utf8' })
  const d = JSON.parse(doctor.stdout).dist
  t.equal(d.mpi.loaded, info.mpi.loaded, 'doctor reports MPI')
  t.equal(d.nccl.loaded, info.nccl.loaded, 'doctor reports NCCL')
  t.equal(d.launch.launcher, 'none')
})

t.test('launch environment: mpirun, torchrun, Slurm, nothing', async (t) => {
  t.same(launchEnvironment({}), { launcher: 'none', rank: 0, size: 1, localRank: 0 })
  t.same(launchEnvironment({ OMPI_COMM_WORLD_RANK: '3', OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_LOCAL_RANK: '1' }), {
    launcher: 'mpirun',
    rank: 3,
    size: 4,
    localRank: 1
  })
  t.same(launchEnvironment({ PMI_RANK: '1', PMI_SIZE: '2', MPI_LOCALRANKID: '1' }), { launcher: 'mpirun', rank: 1, size: 2, localRank: 1 })
  t.same(launchEnvironment({ RANK: '5', WORLD_SIZE: '8', LOCAL_RANK: '1', MASTER_ADDR: 'node0', MASTER_PORT: '29500' }), {
    launcher: 'torchrun',
    rank: 5,
    size: 8,
    localRank: 1,
    masterAddr: 'node0',
    masterPort: 29500
  })
  t.same(launchEnvironment({ SLURM_PROCID: '2', SLURM_NTASKS: '4', SLURM_LOCALID: '0' }), {
    launcher: 'slurm',
    rank: 2,
    size: 4,
    localRank: 0,
    masterAddr: undefined,
    masterPort: undefined
  })
  t.same(
    launchEnvironment({ OMPI_COMM_WORLD_RANK: '0', OMPI_COMM_WORLD_SIZE: '2', RANK: '1', WORLD_SIZE: '2' }).launcher,
    'mpirun',
    'mpirun wins over torchrun variables'
  )
  t.throws(() => launchEnvironment({ RANK: 'x', WORLD_SIZE: '2' }), { code: 'ERR_CONFIG', message: /RANK="x"/ })
})

t.test('torchrun-style rendezvous: rank 0 hands every rank the same id; a missing rank is named', async (t) => {
  if (info.nccl.loaded) t.equal(ncclUniqueId().length, 128, 'NCCL gives a 128-byte unique id')
  else
    t.throws(
      () => ncclUniqueId(),
      { code: 'ERR_NCCL_UNAVAILABLE', message: /NCCL could not be loaded/ },
      'without NCCL: an error saying why'
    )
  const port = await new Promise((resolve) => {
    const s = require('net')
      .createServer()
      .listen(0, () => {
        const p = s.address().port
        s.close(() => resolve(p))
      })
  })
  const id = Uint8Array.from({ length: 128 }, (_, i) => (i * 37 + 11) & 255)
  // the other ranks first: they retry until rank 0 listens
  const others = [1, 2, 3].map((rank) => rendezvous({ rank, size: 4, host: '127.0.0.1', port, timeoutMs: 30000 }))
  const got = await Promise.all([rendezvous({ rank: 0, size: 4, host: '127.0.0.1', port, payload: id, timeoutMs: 30000 }), ...others])
  for (const [r, g] of got.entries()) t.same(Array.from(g), Array.from(id), `rank ${r} has rank 0's id`)
  const late = rendezvous({ rank: 0, size: 3, host: '127.0.0.1', port, payload: id, timeoutMs: 1500 })
  const one = rendezvous({ rank: 2, size: 3, host: '127.0.0.1', port, timeoutMs: 1500 })
  one.catch(() => {}) // it may fail while `late` is awaited: checked below, not an unhandled rejection
  await t.rejects(late, { code: 'ERR_DIST', message: /rank\(s\) 1 of 3 did not arrive/ }, 'rank 0 names the rank that never came')
  await t.rejects(one, { code: 'ERR_DIST' }, 'the waiting rank fails too')
})

t.test('collectives under mpirun -np 2', { skip: mpiWhy || false }, async (t) => {
  const r = spawnSync('mpirun', [...mpirunArgs(2), process.execPath, path.join(root, 'test/dist_collectives_child.mjs')], {
    encoding: 'utf8',
    timeout: 120000
  })
  t.equal(r.status, 0, r.stderr)
  const lines = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .sort((a, b) => a.rank - b.rank)
  t.equal(lines.length, 2)
  for (const [k, l] of lines.entries()) {
    t.match(l, {
      rank: k,
      size: 2,
      localRank: k,
      launcher: 'mpirun',
      f32: [2, -2],
      f64: [0.1 + 0.2],
      i64: String(2 ** 41 + 1),
      gathered: [[0], [10, 11]],
      bcast: 7
    })
  }
  t.same(lines[0].scattered, [0 + 1, 1 + 2], 'rank 0 gets the sum of block 0')
  t.same(lines[1].scattered, [2 + 3, 3 + 4], 'rank 1 gets the sum of block 1')
})

// ---- training ---------------------------------------------------------------------------------------------

const base = {
  preset: 'tiny',
  warmStartSteps: 0,
  steps: 5,
  warmupSteps: 1,
  promptsPerStep: 2,
  samplesPerPrompt: 4,
  maxCompletionTokens: 16,
  checkpointEvery: 0,
  gradAccumulation: 2,
  synthetic: { seed: 3, train: 40, heldOut: 2 }
}
const dora = { adapter: { type: 'dora', r: 4, alpha: 8, dropout: 0.05 } }

function runRanks(ranks, config, dir, extra) {
  const args = [child, config === undefined ? '' : JSON.stringify(config), dir, ...(extra !== undefined ? [String(extra)] : [])]
  const r =
    ranks === 1
      ? spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 300000 })
      : spawnSync('mpirun', [...mpirunArgs(ranks), process.execPath, ...args], { encoding: 'utf8', timeout: 300000 })
  if (r.status !== 0) throw new Error(`${ranks} rank(s) failed (${r.status}): ${r.stderr.slice(-2000)}`)
  return r
}

const cases = [
  ['GRPO, full fine-tuning, KL to the base, ZeRO-1 (default), clipping', { algorithm: 'grpo', klCoef: 0.001, gradClip: 0.5 }],
  ['GRPO, full fine-tuning, KL to the base, ZeRO-1 off', { algorithm: 'grpo', klCoef: 0.001, gradClip: 0.5, zero1: false }],
  ['GRPO, DoRA with dropout', { algorithm: 'grpo', ...dora }],
  ['DAPO with dynamic sampling, full fine-tuning', { algorithm: 'dapo', dynamicSampling: true, maxGenerationBatches: 3 }],
  ['DAPO with dynamic sampling, DoRA', { algorithm: 'dapo', dynamicSampling: true, maxGenerationBatches: 3, ...dora }],
  ['SFT, full fine-tuning, ZeRO-1', { algorithm: 'sft' }],
  ['SFT, full fine-tuning, ZeRO-1 off', { algorithm: 'sft', zero1: false }],
  ['SFT, DoRA with dropout', { algorithm: 'sft', ...dora }]
]
for (const [name, extra] of cases) {
  t.test(`mpirun -np 2 equals one process with gradAccumulation 2: ${name}`, { skip: mpiWhy || false }, async (t) => {
    const config = { ...base, ...extra }
    const tag = `${config.algorithm}-${config.adapter ? 'dora' : 'full'}-${config.zero1 === false ? 'nozero' : 'zero'}`
    const one = path.join(tmp, `${tag}-one`)
    const two = path.join(tmp, `${tag}-two`)
    runRanks(1, config, one)
    const out = runRanks(2, config, two).stdout
    const zero = config.zero1 ?? !config.adapter
    t.match(
      out,
      new RegExp(`data parallel: 2 ranks \\(mpirun\\), 1 micro-batch\\(es\\) each, ZeRO-1 ${zero ? 'on' : 'off'}`),
      `ZeRO-1 ${zero ? 'on' : 'off'}`
    )
    const m1 = metricsOf(one)
    t.equal(m1.length, 5)
    t.ok(
      m1.some((r) => r.gradNorm > 0 && r.lr > 0),
      'the run learns (non-zero gradients at a non-zero learning rate)'
    )
    if (config.dynamicSampling)
      t.ok(
        m1.some((r) => r.generationBatches > 1),
        'dynamic sampling dropped groups and drew again'
      )
    t.same(metricsOf(two), m1, 'per-step metrics are identical')
    t.ok(weights(two).equals(weights(one)), 'the trained weights are identical, bit for bit')
    t.same(
      fs.readdirSync(two).filter((f) => f.endsWith('.tmp')),
      [],
      'nothing half-written'
    )
  })
}

t.test(
  'a checkpoint resumes on another number of ranks exactly (DoRA; full fine-tuning with ZeRO-1)',
  { skip: mpiWhy || false },
  async (t) => {
    for (const [kind, config] of [
      ['dora', { ...base, algorithm: 'grpo', ...dora }],
      ['zero1', { ...base, algorithm: 'grpo', gradClip: 0.5 }]
    ]) {
      const whole = path.join(tmp, `resume-${kind}-whole`)
      runRanks(1, config, whole)
      for (const [first, second] of [
        [2, 1],
        [1, 2]
      ]) {
        const dir = path.join(tmp, `resume-${kind}-${first}-${second}`)
        runRanks(first, config, dir, 3)
        runRanks(second, undefined, dir, 'resume')
        t.same(metricsOf(dir), metricsOf(whole), `${kind}, ${first} rank(s) then ${second}: the same metrics`)
        t.ok(weights(dir).equals(weights(whole)), `${kind}, ${first} rank(s) then ${second}: the same weights`)
      }
    }
  }
)

t.test('gradAccumulation must be a multiple of the ranks', { skip: mpiWhy || false }, async (t) => {
  const dir = path.join(tmp, 'bad-accumulation')
  t.throws(
    () => runRanks(2, { ...base, algorithm: 'sft', gradAccumulation: 1 }, dir),
    /config\.gradAccumulation \(1\) must be a multiple of the number of ranks \(2\)/
  )
})

t.test('a rank killed mid-run ends the run with an error naming it', { skip: mpiWhy || false }, async (t) => {
  const dir = path.join(tmp, 'killed')
  const config = { ...base, algorithm: 'grpo', steps: 400, checkpointEvery: 1 }
  const p = spawn('mpirun', [...mpirunArgs(2), process.execPath, child, JSON.stringify(config), dir], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  p.stdout.on('data', (d) => {
    out += d
  })
  p.stderr.on('data', (d) => {
    out += d
  })
  const exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal })))
  // wait for a finished step (bounded by what is checked; the timeout is a backstop)
  for (let i = 0; i < 600 && !/step 2\n/.test(out); i++) await new Promise((resolve) => setTimeout(resolve, 100))
  t.match(out, /step 2\n/, 'the run trains')
  const victim = Number(fs.readFileSync(`${dir}.pid-1`, 'utf8'))
  const killedAt = Date.now()
  process.kill(victim, 'SIGKILL')
  const backstop = setTimeout(() => p.kill('SIGKILL'), 120000)
  const { code } = await exited
  clearTimeout(backstop)
  const seconds = (Date.now() - killedAt) / 1000
  t.not(code, 0, 'the launcher fails')
  t.ok(seconds < 60, `the others stopped ${seconds.toFixed(1)} s after the kill`)
  t.match(out, /process rank 1\b/, 'the error names rank 1 (mpirun: "process rank 1 ... exited on signal 9")')
  const leftovers = fs.readdirSync(path.join(dir, 'checkpoints')).filter((f) => f.includes('tmp'))
  t.same(leftovers, [], 'no half-written checkpoint')
})

t.test('a rank that stops answering ends the run, named, within the watchdog timeout', { skip: mpiWhy || false }, async (t) => {
  const dir = path.join(tmp, 'stopped')
  const config = { ...base, algorithm: 'grpo', steps: 400, checkpointEvery: 1 }
  const p = spawn('mpirun', [...mpirunArgs(2), process.execPath, child, JSON.stringify(config), dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RECODE_DIST_TIMEOUT: '10' }
  })
  let out = ''
  p.stdout.on('data', (d) => {
    out += d
  })
  p.stderr.on('data', (d) => {
    out += d
  })
  const exited = new Promise((resolve) => p.on('exit', (code) => resolve(code)))
  for (let i = 0; i < 600 && !/step 2\n/.test(out); i++) await new Promise((resolve) => setTimeout(resolve, 100))
  t.match(out, /step 2\n/, 'the run trains')
  const victim = Number(fs.readFileSync(`${dir}.pid-1`, 'utf8'))
  const stoppedAt = Date.now()
  process.kill(victim, 'SIGSTOP') // alive but silent: no exit for mpirun to notice
  const backstop = setTimeout(() => {
    p.kill('SIGKILL')
    try {
      process.kill(victim, 'SIGKILL')
    } catch {}
  }, 120000)
  const code = await exited
  clearTimeout(backstop)
  const seconds = (Date.now() - stoppedAt) / 1000
  t.not(code, 0, 'the launcher fails')
  t.ok(seconds < 60, `the run ended ${seconds.toFixed(1)} s after rank 1 stopped (watchdog 10 s)`)
  t.match(out, /rank 1 has not answered rank 0/, 'the error names the silent rank')
  t.same(
    fs.readdirSync(path.join(dir, 'checkpoints')).filter((f) => f.includes('tmp')),
    [],
    'no half-written checkpoint'
  )
})

t.test('Ctrl-C on recode train --nproc 2 saves a checkpoint as one process does', { skip: mpiWhy || false }, async (t) => {
  const dir = path.join(tmp, 'interrupted')
  const cfg = path.join(tmp, 'interrupted.json')
  fs.writeFileSync(cfg, JSON.stringify({ ...base, algorithm: 'grpo', steps: 400 }))
  const p = spawn(process.execPath, [path.join(root, 'dist/cjs/cli.js'), 'train', '--nproc', '2', '--config', cfg, '--run-dir', dir], {
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  p.stdout.on('data', (d) => {
    out += d
  })
  p.stderr.on('data', (d) => {
    out += d
  })
  const exited = new Promise((resolve) => p.on('exit', (code) => resolve(code)))
  for (let i = 0; i < 600 && !/grpo step \d+/.test(out); i++) await new Promise((resolve) => setTimeout(resolve, 100))
  t.match(out, /grpo step \d+/, 'the ranks train')
  p.kill('SIGINT') // what a terminal's Ctrl-C sends the launcher
  const backstop = setTimeout(() => p.kill('SIGKILL'), 120000)
  const code = await exited
  clearTimeout(backstop)
  t.equal(code, 130, 'exit status 130, as one process')
  const m = /stopped; checkpoint (\S+)/.exec(out)
  t.ok(m && fs.existsSync(path.join(m[1], 'manifest.json')), `a complete checkpoint: ${m?.[1]}`)
  t.equal((out.match(/stopped; checkpoint/g) ?? []).length, 1, 'said once, by rank 0')
})
