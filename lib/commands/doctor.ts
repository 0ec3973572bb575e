import { execFileSync } from 'child_process'
import { systemInfo } from '../device'
import { distInfo, launchEnvironment, rendezvousPort } from '../dist'
import { addonPath } from '../native'
import type { Command } from './types'
import { isolationSummary, probeIsolation } from '../eval/sandbox'

function probe(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10000 })
      .trim()
      .split('\n')[0]
  } catch {
    return 'not found'
  }
}

/** What the sandbox probe measured (cached, so this costs nothing after isolationSummary). */
function sandboxProtections(): Record<string, unknown> | null {
  try {
    const info = probeIsolation(undefined, 'auto', true)
    return { kind: info.kind, full: info.full, missing: info.missing, ...info.protections }
  } catch {
    return null
  }
}

/** The facts `recode doctor` prints, as data (also used by benchmarks to describe the machine). */
export function doctorReport(): Record<string, unknown> {
  const pkg = require('../../../package.json')
  const info = systemInfo()
  return {
    recode: pkg.version,
    node: process.version,
    napi: process.versions.napi,
    platform: `${process.platform}-${process.arch}`,
    addon: addonPath(),
    cpu: {
      model: info.cpuModel,
      hardwareThreads: info.hardwareThreads,
      threadsUsed: info.threads,
      simdDetected: info.simdDetected,
      simdUsed: info.simdActive,
      compiler: info.compiler
    },
    cuda: info.cuda,
    dist: distReport(),
    python3: probe(process.env.RECODE_PYTHON ?? 'python3', ['--version']),
    sandbox: isolationSummary(),
    sandboxProtections: sandboxProtections()
  }
}

export const doctor: Command = {
  name: 'doctor',
  summary:
    'print what recode found on this machine: CPU, SIMD, CUDA library, driver and devices, MPI and NCCL, python3, which sandbox protections hold',
  usage: 'recode doctor [--json]',
  async run(argv) {
    const r = doctorReport() as any
    if (argv.includes('--json')) {
      console.log(JSON.stringify(r, null, 2))
      return 0
    }
    const lines = [
      `recode ${r.recode}  node ${r.node}  N-API ${r.napi}  ${r.platform}`,
      `addon:    ${r.addon}`,
      `cpu:      ${r.cpu.model}, ${r.cpu.hardwareThreads} hardware threads, using ${r.cpu.threadsUsed}`,
      `simd:     detected ${r.cpu.simdDetected}, using ${r.cpu.simdUsed} (chosen at run time; RECODE_SIMD=baseline forces the portable path)`,
      `cuda:     library ${r.cuda.libraryLoaded ? 'loaded from ' + r.cuda.libraryPath : 'not loaded'}`
    ]
    if (r.cuda.driverVersion !== undefined)
      lines.push(`          driver API ${fmtCuda(r.cuda.driverVersion)}, runtime ${fmtCuda(r.cuda.runtimeVersion)} (linked statically)`)
    for (const d of r.cuda.devices)
      lines.push(
        `          device ${d.index}: ${d.name}, compute ${d.computeCapability}, ${(d.memoryBytes / 2 ** 30).toFixed(1)} GiB, ${d.multiprocessors} SMs`
      )
    lines.push(
      r.cuda.available ? '          GPU backend: available' : `          GPU backend: unavailable: ${r.cuda.reason}; the CPU backend serves`
    )
    const d = r.dist
    lines.push(
      d.mpi.loaded
        ? `mpi:      ${d.mpi.version} (shim ${d.mpi.library}); launch: mpirun -np N recode train ..., or recode train --nproc N`
        : `mpi:      unavailable: ${d.mpi.error}; training runs in one process`
    )
    lines.push(
      d.nccl.loaded
        ? d.nccl.hostMemory
          ? `nccl:     ${d.nccl.library} is recode's test NCCL over MPI (host memory: device emulated only)`
          : `nccl:     ${d.nccl.versionString} (${d.nccl.library}); device cuda with several ranks sums gradients through it; launch: mpirun, or torchrun / srun without MPI (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)`
        : `nccl:     unavailable: ${d.nccl.error}; device cuda trains in one process`
    )
    if (d.launch.launcher !== 'none')
      lines.push(
        `launch:   started by ${d.launch.launcher} as rank ${d.launch.rank} of ${d.launch.size} (local rank ${d.launch.localRank})` +
          (d.launch.launcher === 'mpirun'
            ? '; collectives over MPI'
            : `; collectives through NCCL on device cuda, its id from ${d.launch.masterAddr ?? '(MASTER_ADDR unset)'}:${d.launch.masterPort === undefined ? '(MASTER_PORT unset)' : rendezvousPort(d.launch.masterPort)}${d.nccl.loaded ? '' : ' -- but NCCL is unavailable'}; cpu training needs mpirun`)
      )
    lines.push(`python3:  ${r.python3}`)
    lines.push(`sandbox:  ${r.sandbox}`)
    console.log(lines.join('\n'))
    return 0
  }
}

/** The optional collective engines and how this process was launched (nothing is initialised). */
function distReport(): Record<string, any> {
  try {
    const d = distInfo()
    return {
      mpi: { loaded: d.mpi.loaded, library: d.mpi.library, version: d.mpi.version, error: d.mpi.error },
      nccl: d.nccl,
      launch: launchEnvironment()
    }
  } catch (err) {
    const why = (err as Error).message
    return { mpi: { loaded: false, error: why }, nccl: { loaded: false, error: why }, launch: { launcher: 'none' } }
  }
}

function fmtCuda(v: number): string {
  return v ? `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` : 'none'
}
