// The torchrun / Slurm launch without MPI: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; the world's small
// collectives (token counts, metrics, DAPO's kept groups, barriers, rank 0's strings) go through NCCL on the training
// device, NCCL's unique id over the TCP rendezvous. No GPU and no NCCL here: device 'emulated' with recode's test
// NCCL (test/fixtures/nccl_mpi.c), whose transport is MPI -- so the two ranks are started by mpirun, but as torchrun
// would start them: RECODE_LAUNCHER=torchrun, RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* set per rank, and recode's own
// MPI shim made unloadable (RECODE_MPI_LIBRARY pointing at nothing), which each rank confirms at the end.
import t from 'tap'
import * as fs from 'fs'
import * as net from 'net'
import * as os from 'os'
import * as path from 'path'
import { spawn, spawnSync } from 'child_process'
import {
  buildTestNccl,
  EMULATED_BASE,
  haveMpicc,
  haveMpirun,
  metricsOf,
  mpirunArgs,
  trainChild as child,
  weights
} from './dist_helpers.mjs'
import { require } from './helpers.mjs'

const root = path.join(path.dirname(new URL(import.meta.url).pathname), '..')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-dist-torchrun-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

const why = !haveMpirun
  ? 'mpirun is not on PATH (the test NCCL runs over MPI)'
  : !haveMpicc
    ? 'mpicc is not on PATH (it builds the test NCCL)'
    : ''
if (why) t.comment(`skipping the two-rank tests: ${why}`)

const testNccl = why ? path.join(tmp, 'libnccl-test.so') : buildTestNccl(tmp)

async function freePort() {
  const server = net.createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

const noMpi = path.join(tmp, 'no-such-librecode_mpi.so')
const torchrunEnv = (port, extra = {}) => ({
  ...process.env,
  RECODE_NCCL_LIBRARY: testNccl,
  RECODE_MPI_LIBRARY: noMpi,
  RECODE_LAUNCHER: 'torchrun',
  WORLD_SIZE: '2',
  MASTER_ADDR: '127.0.0.1',
  MASTER_PORT: String(port),
  ...extra
})

// one process, no launcher: the reference
function runOne(config, dir) {
  const r = spawnSync(process.execPath, [child, JSON.stringify(config), dir], {
    encoding: 'utf8',
    env: { ...process.env, RECODE_NCCL_LIBRARY: testNccl },
    timeout: 600000
  })
  if (r.status !== 0) throw new Error(`one process failed (${r.status}): ${r.stderr.slice(-2000)}`)
  return r
}
// two ranks, torchrun style: each rank's RANK / LOCAL_RANK from its MPI rank (the test NCCL's transport)
async function runTwo(config, dir) {
  const env = torchrunEnv(await freePort())
  return spawnSync('mpirun', twoRankArgs(config, dir, env), { encoding: 'utf8', env, timeout: 600000 })
}
function twoRankArgs(config, dir, env) {
  const pass = [
    'RECODE_NCCL_LIBRARY',
    'RECODE_MPI_LIBRARY',
    'RECODE_LAUNCHER',
    'WORLD_SIZE',
    'MASTER_ADDR',
    'MASTER_PORT',
    'RECODE_DIST_TIMEOUT'
  ].filter((k) => env[k] !== undefined)
  return [
    ...mpirunArgs(2),
    ...pass.flatMap((k) => ['-x', k]),
    'sh',
    '-c',
    'RANK=$OMPI_COMM_WORLD_RANK LOCAL_RANK=$OMPI_COMM_WORLD_LOCAL_RANK exec "$@"',
    'sh',
    process.execPath,
    child,
    JSON.stringify(config),
    dir
  ]
}

const base = EMULATED_BASE

const cases = [
  ['GRPO, full fine-tuning, clipping, ZeRO-1 on', { algorithm: 'grpo', gradClip: 0.5 }],
  [
    'DAPO with dynamic sampling (kept-group counts summed over ranks)',
    { algorithm: 'dapo', dynamicSampling: true, maxGenerationBatches: 3 }
  ],
  ['SFT, full fine-tuning', { algorithm: 'sft' }]
]
for (const [name, extra] of cases) {
  t.test(
    `emulated, torchrun style (no recode MPI): 2 ranks equal one process with gradAccumulation 2: ${name}`,
    { skip: why || false },
    async (t) => {
      const config = { ...base, ...extra }
      const one = path.join(tmp, `${config.algorithm}-one`)
      const two = path.join(tmp, `${config.algorithm}-two`)
      runOne(config, one)
      const r = await runTwo(config, two)
      t.equal(r.status, 0, `two ranks exit 0 (stderr: ${r.stderr.slice(-1500)})`)
      t.match(r.stdout, /data parallel: 2 ranks \(torchrun\), 1 micro-batch\(es\) each/, 'rank 0 reports a torchrun world')
      t.equal(
        r.stdout.split('\n').filter((l) => l === "engine nccl, recode's MPI not loaded").length,
        2,
        "both ranks' collectives went through NCCL, recode's MPI shim never loaded"
      )
      const m1 = metricsOf(one)
      t.equal(m1.length, base.steps)
      t.ok(
        m1.some((m) => m.gradNorm > 0 && m.lr > 0),
        'the run learns'
      )
      t.same(metricsOf(two), m1, 'per-step metrics are identical')
      t.ok(weights(two).equals(weights(one)), 'the trained weights are identical, bit for bit')
    }
  )
}

t.test('torchrun style on the cpu device without MPI: an error naming mpirun', async (t) => {
  const dir = path.join(tmp, 'cpu')
  const r = spawnSync(process.execPath, [child, JSON.stringify({ ...base, device: 'cpu', algorithm: 'sft', steps: 1 }), dir], {
    encoding: 'utf8',
    env: { ...torchrunEnv(1), RANK: '0', LOCAL_RANK: '0' },
    timeout: 120000
  })
  t.not(r.status, 0)
  t.match(r.stderr, /rank 0: ERR_DIST started by torchrun as rank 0 of 2 without MPI, with config\.device 'cpu'.*mpirun -np 2 recode train/)
  t.notOk(fs.existsSync(dir), 'no run folder is left')
})

t.test('Slurm style without MASTER_ADDR / MASTER_PORT: an error saying how to set them', async (t) => {
  const env = { ...process.env, SLURM_PROCID: '1', SLURM_NTASKS: '2', SLURM_LOCALID: '0' }
  for (const k of ['MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE', 'OMPI_COMM_WORLD_RANK', 'PMI_RANK', 'PMIX_RANK']) delete env[k]
  const dir = path.join(tmp, 'slurm-no-master')
  const r = spawnSync(process.execPath, [child, JSON.stringify({ ...base, algorithm: 'sft', steps: 1 }), dir], {
    encoding: 'utf8',
    env,
    timeout: 120000
  })
  t.not(r.status, 0)
  t.match(
    r.stderr,
    /rank 1: ERR_DIST started by slurm as rank 1 of 2: MASTER_ADDR and MASTER_PORT must name rank 0's host .*scontrol show hostnames/
  )
  t.notOk(fs.existsSync(dir), 'no run folder is left')
})

t.test(
  'torchrun style: a rank whose peer never comes stops within the bounded rendezvous, naming it',
  { skip: why || false },
  async (t) => {
    // RECODE_DIST_TIMEOUT 1 s: the rendezvous waits 2 s for the other rank, then each lone rank says who is missing
    const port = await freePort()
    const config = JSON.stringify({ ...base, algorithm: 'sft', steps: 1 })
    for (const rank of [0, 1]) {
      const dir = path.join(tmp, `alone-${rank}`)
      const r = spawnSync(process.execPath, [child, config, dir], {
        encoding: 'utf8',
        env: { ...torchrunEnv(port, { RECODE_DIST_TIMEOUT: '1' }), RANK: String(rank), LOCAL_RANK: '0' },
        timeout: 120000
      })
      t.not(r.status, 0, `rank ${rank} alone fails`)
      t.match(
        r.stderr,
        rank === 0
          ? /rank 0: ERR_DIST rendezvous on port \d+: rank\(s\) 1 of 2 did not arrive within 2 s/
          : /rank 1: ERR_DIST rendezvous: rank 1 could not get the id from rank 0 at 127\.0\.0\.1:\d+ within 2 s/,
        `rank ${rank} names the rank that never came`
      )
    }
  }
)

t.test(
  'torchrun style: a rank that stops answering ends the run on the others, named, within the timeout',
  { skip: why || false },
  async (t) => {
    // SIGSTOP: alive but silent, so mpirun (the test NCCL's transport) notices nothing; the heartbeats to rank 0 must
    const dir = path.join(tmp, 'stopped')
    const config = { ...base, algorithm: 'grpo', steps: 400, checkpointEvery: 1 }
    const env = torchrunEnv(await freePort(), { RECODE_DIST_TIMEOUT: '5' })
    const p = spawn('mpirun', twoRankArgs(config, dir, env), { stdio: ['ignore', 'pipe', 'pipe'], env })
    let out = ''
    p.stdout.on('data', (d) => {
      out += d
    })
    p.stderr.on('data', (d) => {
      out += d
    })
    const exited = new Promise((resolve) => p.on('exit', (code) => resolve(code)))
    for (let i = 0; i < 1200 && !/step 2\n/.test(out); i++) await new Promise((resolve) => setTimeout(resolve, 100))
    t.match(out, /step 2\n/, 'the run trains')
    const victim = Number(fs.readFileSync(`${dir}.pid-1`, 'utf8'))
    const stoppedAt = Date.now()
    process.kill(victim, 'SIGSTOP')
    const backstop = setTimeout(() => {
      p.kill('SIGKILL')
      try {
        process.kill(victim, 'SIGKILL')
      } catch {}
    }, 120000)
    const code = await exited
    clearTimeout(backstop)
    try {
      process.kill(victim, 'SIGKILL')
    } catch {}
    const seconds = (Date.now() - stoppedAt) / 1000
    t.not(code, 0, 'the launcher fails')
    t.ok(seconds < 60, `the run ended ${seconds.toFixed(1)} s after rank 1 stopped (timeout 5 s)`)
    t.match(out, /recode: rank 0 of 2: rank 1 stopped answering \(no heartbeat for 5\.0 s\)/, 'rank 0 names the silent rank')
    t.same(
      fs.readdirSync(path.join(dir, 'checkpoints')).filter((f) => f.includes('tmp')),
      [],
      'no half-written checkpoint'
    )
  }
)

// The heartbeats alone (src/dist/liveness.cpp through a test-only binding), on plain processes: a rank killed with
// SIGKILL (no launcher here to notice) is named by rank 0, which relays the name to the others before it exits.
const liveChild = path.join(root, 'test/dist_liveness_child.mjs')
function startRanks(size, port, timeoutMs, mode) {
  return Array.from({ length: size }, (_, rank) => {
    const p = spawn(process.execPath, [liveChild, String(rank), String(size), String(port), String(timeoutMs), mode], {
      stdio: ['ignore', 'pipe', 'pipe']
    })
    const r = { p, out: '', err: '' }
    p.stdout.on('data', (d) => {
      r.out += d
    })
    p.stderr.on('data', (d) => {
      r.err += d
    })
    r.exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal })))
    return r
  })
}
const killAll = (ranks) => {
  for (const r of ranks) if (r.p.exitCode === null) r.p.kill('SIGKILL')
}

t.test('liveness: a killed rank is named by rank 0 and, through it, by the others', async (t) => {
  const ranks = startRanks(3, await freePort(), 30000, 'stay')
  const backstop = setTimeout(() => killAll(ranks), 120000)
  for (let i = 0; i < 1200 && !ranks.every((r) => r.out.includes('connected')); i++)
    await new Promise((resolve) => setTimeout(resolve, 100))
  t.ok(
    ranks.every((r) => r.out.includes('connected')),
    'three ranks connected'
  )
  const killedAt = Date.now()
  ranks[2].p.kill('SIGKILL')
  const [r0, r1] = await Promise.all([ranks[0].exited, ranks[1].exited])
  clearTimeout(backstop)
  const seconds = (Date.now() - killedAt) / 1000
  t.ok(seconds < 30, `both others ended ${seconds.toFixed(1)} s after the kill, well before the 30 s heartbeat timeout`)
  t.equal(r0.code, 1)
  t.equal(r1.code, 1)
  t.match(ranks[0].err, /recode: rank 0 of 3: rank 2 died \(its connection to rank 0 closed\); ending this rank/)
  t.match(ranks[1].err, /recode: rank 1 of 3: rank 2 failed \(rank 0 saw its connection close or go silent\); ending this rank/)
})

t.test('liveness: ranks that end cleanly, in any order, name no one', async (t) => {
  const ranks = startRanks(3, await freePort(), 30000, 'stop')
  const backstop = setTimeout(() => killAll(ranks), 120000)
  const ends = await Promise.all(ranks.map((r) => r.exited))
  clearTimeout(backstop)
  t.same(
    ends.map((e) => e.code),
    [0, 0, 0],
    ranks.map((r) => r.err).join('')
  )
  t.ok(
    ranks.every((r) => r.out === 'connected\nstopped\n'),
    'each connected and stopped'
  )
})

t.test('liveness: ranks that never connect are named within twice the timeout', async (t) => {
  const r = spawnSync(process.execPath, [liveChild, '0', '3', String(await freePort()), '1000', 'stay'], {
    encoding: 'utf8',
    timeout: 60000
  })
  t.not(r.status, 0)
  t.match(r.stderr, /liveness: rank\(s\) 1, 2 of 3 did not connect to rank 0 within 2 s/)
})

t.test('RECODE_LAUNCHER must name a launcher; the rendezvous port', async (t) => {
  const { launchEnvironment } = require('../dist/cjs/index.js')
  t.same(
    launchEnvironment({ RECODE_LAUNCHER: 'torchrun', OMPI_COMM_WORLD_RANK: '1', OMPI_COMM_WORLD_SIZE: '2', RANK: '1', WORLD_SIZE: '2' }),
    {
      launcher: 'torchrun',
      rank: 1,
      size: 2,
      localRank: 0,
      masterAddr: undefined,
      masterPort: undefined
    }
  )
  t.equal(
    launchEnvironment({ RECODE_LAUNCHER: 'slurm', PMI_RANK: '0', RANK: '1', WORLD_SIZE: '2', SLURM_PROCID: '1', SLURM_NTASKS: '2' })
      .launcher,
    'slurm'
  )
  t.throws(() => launchEnvironment({ RECODE_LAUNCHER: 'pbs' }), { code: 'ERR_CONFIG', message: /RECODE_LAUNCHER="pbs"/ })
  const { rendezvousPort } = require('../dist/cjs/index.js')
  t.equal(rendezvousPort(29500, {}), 29500, 'MASTER_PORT')
  t.equal(
    rendezvousPort(29500, { TORCHELASTIC_USE_AGENT_STORE: 'True' }),
    29501,
    "the next port where torchrun's agent store holds MASTER_PORT"
  )
  t.equal(
    rendezvousPort(29500, { TORCHELASTIC_USE_AGENT_STORE: 'True', RECODE_RENDEZVOUS_PORT: '40000' }),
    40000,
    'RECODE_RENDEZVOUS_PORT wins'
  )
  t.throws(() => rendezvousPort(65535, { TORCHELASTIC_USE_AGENT_STORE: 'True' }), { code: 'ERR_CONFIG' })
})
