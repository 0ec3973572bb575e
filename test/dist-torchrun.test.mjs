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
import { spawnSync } from 'child_process'
import { require } from './helpers.mjs'

const { readMetrics } = require('../dist/cjs/index.js')
const root = path.join(path.dirname(new URL(import.meta.url).pathname), '..')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-dist-torchrun-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

const haveMpirun = spawnSync('mpirun', ['--version'], { stdio: 'ignore' }).status === 0
const haveMpicc = spawnSync('mpicc', ['--version'], { stdio: 'ignore' }).status === 0
const why = !haveMpirun
  ? 'mpirun is not on PATH (the test NCCL runs over MPI)'
  : !haveMpicc
    ? 'mpicc is not on PATH (it builds the test NCCL)'
    : ''
if (why) t.comment(`skipping the two-rank tests: ${why}`)

const testNccl = path.join(tmp, 'libnccl-test.so')
if (!why) {
  const r = spawnSync(
    'mpicc',
    ['-shared', '-fPIC', '-O2', '-fvisibility=hidden', '-o', testNccl, path.join(root, 'test/fixtures/nccl_mpi.c')],
    {
      encoding: 'utf8'
    }
  )
  if (r.status !== 0) throw new Error(`mpicc failed: ${r.stderr}`)
}

async function freePort() {
  const server = net.createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

const child = path.join(root, 'test/dist_train_child.mjs')
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
  const pass = ['RECODE_NCCL_LIBRARY', 'RECODE_MPI_LIBRARY', 'RECODE_LAUNCHER', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT']
  const args = [
    '-np',
    '2',
    '--oversubscribe',
    '--bind-to',
    'none',
    ...(process.getuid() === 0 ? ['--allow-run-as-root'] : []),
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
  return spawnSync('mpirun', args, { encoding: 'utf8', env, timeout: 600000 })
}

const metricsOf = (dir) =>
  readMetrics(path.join(dir, 'metrics.jsonl')).records.map((r) => {
    const { time, tokensPerSecond, phaseSeconds, stepSeconds, ...rest } = r
    return rest
  })
const weights = (dir) => fs.readFileSync(path.join(dir, 'model', 'model.safetensors'))

const base = {
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

t.test('RECODE_LAUNCHER must name a launcher', async (t) => {
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
})
