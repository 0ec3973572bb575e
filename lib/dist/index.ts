/**
 * Training across processes: who launched us (mpirun, torchrun / Slurm, or nobody), the optional engines
 * (the MPI shim librecode_mpi.so and NCCL's libnccl.so.2, both opened at run time), and `World`, the handful of
 * collectives the training loop needs. Without a launcher the world is one process and nothing is loaded.
 */
import { RecodeError } from '../errors'
import { native } from '../native'
import { systemInfo, setNumThreads } from '../device'
import { rendezvous } from './rendezvous'

export interface EngineStatus {
  loaded: boolean
  /** Where it was looked for (the shim's path; NCCL's library name or RECODE_NCCL_LIBRARY). */
  library: string
  /** MPI: MPI_Get_library_version's first line; NCCL: ncclGetVersion's code (versionString: "2.21.5"). */
  version: string | number
  versionString?: string
  /** Why it is unavailable ('' when loaded). */
  error: string
}

export interface DistInfo {
  mpi: EngineStatus & { initialized: boolean; rank: number; size: number; localRank: number; localSize: number }
  /** hostMemory: the library reduces host memory (recode's test NCCL over MPI, for device 'emulated'), not GPU memory. */
  nccl: EngineStatus & { versionString: string; hostMemory: boolean }
}

/** What the optional engines are on this machine (probes once, loads nothing else). */
export function distInfo(): DistInfo {
  return native().distInfo() as DistInfo
}

/** Probes a given library as the MPI shim or as NCCL, uncached (tests; `recode doctor` uses distInfo). */
export function probeEngine(engine: 'mpi' | 'nccl', library: string): EngineStatus {
  return native().distProbe(engine, library) as EngineStatus
}

/** How this process was started, from its environment. */
export interface LaunchEnvironment {
  launcher: 'mpirun' | 'torchrun' | 'slurm' | 'none'
  rank: number
  size: number
  localRank: number
  /** torchrun / Slurm: the rendezvous address for NCCL's bootstrap. */
  masterAddr?: string
  masterPort?: number
}

const intEnv = (env: NodeJS.ProcessEnv, name: string): number | undefined => {
  const v = env[name]
  if (v === undefined || v === '') return undefined
  const n = Number(v)
  if (!Number.isInteger(n) || n < 0)
    throw new RecodeError('ERR_CONFIG', `environment variable ${name}=${JSON.stringify(v)} is not a non-negative integer`)
  return n
}

/**
 * The launcher's variables: Open MPI's OMPI_COMM_WORLD_*, MPICH / Intel MPI's PMI_RANK / PMI_SIZE (Hydra) and PMIx's
 * PMIX_RANK mean mpirun; RANK / WORLD_SIZE / LOCAL_RANK (+ MASTER_ADDR / MASTER_PORT) torchrun; SLURM_PROCID /
 * SLURM_NTASKS / SLURM_LOCALID srun. mpirun wins when both are set (srun --mpi=pmix sets both).
 */
export function launchEnvironment(env: NodeJS.ProcessEnv = process.env): LaunchEnvironment {
  // RECODE_LAUNCHER=torchrun (or slurm): the torchrun / Slurm variables even where an MPI launcher's are set too --
  // a world bootstrapped through NCCL, recode's MPI left alone
  const forced = env.RECODE_LAUNCHER
  if (forced !== undefined && forced !== '' && forced !== 'torchrun' && forced !== 'slurm')
    throw new RecodeError(
      'ERR_CONFIG',
      `environment variable RECODE_LAUNCHER=${JSON.stringify(forced)} must be 'torchrun' or 'slurm' (or unset)`
    )
  const ompi = forced ? undefined : intEnv(env, 'OMPI_COMM_WORLD_RANK')
  if (ompi !== undefined)
    return {
      launcher: 'mpirun',
      rank: ompi,
      size: intEnv(env, 'OMPI_COMM_WORLD_SIZE') ?? 1,
      localRank: intEnv(env, 'OMPI_COMM_WORLD_LOCAL_RANK') ?? 0
    }
  const pmi = forced ? undefined : (intEnv(env, 'PMI_RANK') ?? intEnv(env, 'PMIX_RANK'))
  if (pmi !== undefined)
    return {
      launcher: 'mpirun',
      rank: pmi,
      size: intEnv(env, 'PMI_SIZE') ?? intEnv(env, 'MPI_LOCALNRANKS') ?? 1,
      localRank: intEnv(env, 'MPI_LOCALRANKID') ?? 0
    }
  const rank = intEnv(env, 'RANK')
  const world = intEnv(env, 'WORLD_SIZE')
  if (rank !== undefined && world !== undefined && forced !== 'slurm') {
    return {
      launcher: 'torchrun',
      rank,
      size: world,
      localRank: intEnv(env, 'LOCAL_RANK') ?? 0,
      masterAddr: env.MASTER_ADDR,
      masterPort: intEnv(env, 'MASTER_PORT')
    }
  }
  const procid = intEnv(env, 'SLURM_PROCID')
  if (procid !== undefined)
    return {
      launcher: 'slurm',
      rank: procid,
      size: intEnv(env, 'SLURM_NTASKS') ?? 1,
      localRank: intEnv(env, 'SLURM_LOCALID') ?? 0,
      masterAddr: env.MASTER_ADDR,
      masterPort: intEnv(env, 'MASTER_PORT')
    }
  return { launcher: 'none', rank: 0, size: 1, localRank: 0 }
}

export { rendezvous, type RendezvousOptions } from './rendezvous'

/** NCCL's unique id (128 bytes) for ncclCommInitRank; ERR_NCCL_UNAVAILABLE, saying why, without NCCL. */
export function ncclUniqueId(): Uint8Array {
  return native().ncclUniqueId() as Uint8Array
}

/**
 * The NCCL unique id of a world, on every rank: rank 0 makes it and hands it to the others over MPI (mpirun). A
 * world of one makes its own. ERR_NCCL_UNAVAILABLE, saying why, without NCCL.
 */
export function ncclIdOfWorld(world: World): Uint8Array {
  if (world.size === 1) return ncclUniqueId()
  const info = distInfo().nccl
  if (!info.loaded)
    throw new RecodeError(
      'ERR_NCCL_UNAVAILABLE',
      `rank ${world.rank}: the CUDA trainer sums gradients through NCCL, which is unavailable: ${info.error}`
    )
  // every rank learns whether rank 0 could make one, so none waits in the broadcast for an id that never comes
  let id: Uint8Array = new Uint8Array(128)
  let failure: unknown
  if (world.isRoot) {
    try {
      id = ncclUniqueId()
    } catch (err) {
      failure = err
    }
  }
  const ok = world.broadcast(Float64Array.of(failure === undefined ? 1 : 0))[0] === 1
  if (failure !== undefined) throw failure
  if (!ok) throw new RecodeError('ERR_NCCL', `rank ${world.rank}: rank 0 could not make the NCCL unique id (see its error)`)
  return world.broadcast(id)
}

/**
 * Each rank of a node takes its own GPU: CUDA_VISIBLE_DEVICES becomes entry `localRank` of its list (or the number
 * `localRank` when unset). Must run before CUDA starts in this process; a list of one (a launcher that already
 * narrowed it, e.g. Slurm's --gpus-per-task) is kept.
 */
export function selectLocalGpu(localRank: number, env: NodeJS.ProcessEnv = process.env): void {
  const list = env.CUDA_VISIBLE_DEVICES
  if (list === undefined || list === '') env.CUDA_VISIBLE_DEVICES = String(localRank)
  else {
    const entries = list.split(',')
    if (entries.length > 1 && localRank < entries.length) env.CUDA_VISIBLE_DEVICES = entries[localRank]
  }
}

/** Bytes a world moved through its collectives (the bench reports them per step). */
export interface Traffic {
  bytes: number
  calls: number
}

/**
 * The processes of one training run. A world of one has no engine and every collective is the identity. Collectives
 * block the main thread (every call from the thread that initialised MPI).
 */
export class World {
  readonly traffic: Traffic = { bytes: 0, calls: 0 }
  /** Whether heartbeats watch the other ranks (RECODE_DIST_TIMEOUT seconds, default 30; needs MPI_THREAD_MULTIPLE). */
  watchdog = false
  /**
   * What carries the collectives: MPI (mpirun), or NCCL on the training device (torchrun / Slurm without MPI:
   * 'nccl-pending' until `join` has the device and the rendezvous; no collective works before).
   */
  engine: 'none' | 'mpi' | 'nccl-pending' | 'nccl' = 'none'
  constructor(
    readonly rank: number,
    readonly size: number,
    readonly localRank: number,
    readonly localSize: number,
    readonly launcher: LaunchEnvironment['launcher']
  ) {}

  /**
   * torchrun / Slurm without MPI: the world's collectives through NCCL on `device` ('cuda', or 'emulated' with
   * recode's host-memory test NCCL). Rank 0 makes NCCL's unique id and hands it to the others over the TCP
   * rendezvous at MASTER_ADDR:MASTER_PORT (the 128 bytes only; no tensor goes over that socket). Every rank calls it
   * once the device is known; it returns once all have joined. A no-op for MPI worlds and worlds of one.
   */
  async join(device: string): Promise<void> {
    if (this.engine !== 'nccl-pending') return
    const who = `started by ${this.launcher} as rank ${this.rank} of ${this.size}`
    if (device !== 'cuda' && device !== 'emulated')
      throw new RecodeError(
        'ERR_DIST',
        `${who} without MPI, with config.device '${device}': CPU training sums gradients over MPI, and torchrun / Slurm ` +
          `bootstrap only NCCL, which carries GPU tensors (config.device 'cuda'). Launch CPU training with mpirun -np ${this.size} ` +
          `recode train ... (or srun --mpi=pmix), or train on 'cuda'`
      )
    const launch = launchEnvironment()
    if (launch.masterAddr === undefined || launch.masterAddr === '' || launch.masterPort === undefined)
      throw new RecodeError(
        'ERR_DIST',
        `${who}: MASTER_ADDR and MASTER_PORT must name rank 0's host and a free port for NCCL's bootstrap ` +
          `(torchrun sets them; under Slurm e.g. MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1) MASTER_PORT=29500)`
      )
    const port = rendezvousPort(launch.masterPort)
    const info = distInfo().nccl
    if (!info.loaded)
      throw new RecodeError('ERR_NCCL_UNAVAILABLE', `${who}: the world's collectives go through NCCL, which is unavailable: ${info.error}`)
    // rank 0 hands out an empty payload when it could not make the id, so the others fail at once, not at a timeout
    let id: Uint8Array = new Uint8Array(0)
    let failure: unknown
    if (this.isRoot) {
      try {
        id = ncclUniqueId()
      } catch (err) {
        failure = err
      }
    }
    const got = await rendezvous({
      rank: this.rank,
      size: this.size,
      host: launch.masterAddr,
      port,
      payload: id,
      timeoutMs: 2000 * (distTimeoutSeconds() || 30)
    })
    if (failure !== undefined) throw failure
    if (got.length !== 128) throw new RecodeError('ERR_NCCL', `rank ${this.rank}: rank 0 could not make the NCCL unique id (see its error)`)
    native().ncclWorldInit(got, this.rank, this.size, device)
    this.engine = 'nccl'
    // NCCL cannot say which rank died: heartbeats over a TCP connection to rank 0 (the port the rendezvous freed) name it
    const timeout = distTimeoutSeconds()
    if (timeout > 0) {
      native().ncclWorldWatch(launch.masterAddr, port, Math.min(2000, timeout * 250), timeout * 1000)
      this.watchdog = true
    }
  }

  private get nccl(): boolean {
    if (this.engine === 'nccl-pending')
      throw new RecodeError('ERR_DIST', `rank ${this.rank}: a collective before the world joined NCCL (World.join)`)
    return this.engine === 'nccl'
  }
  get isRoot(): boolean {
    return this.rank === 0
  }

  private count(bytes: number): void {
    this.traffic.bytes += bytes
    this.traffic.calls++
  }

  /** Sum over ranks, in place. Float64: exact when at most one rank contributes a non-zero per entry. */
  allreduce(a: Float64Array): Float64Array {
    if (this.size > 1) {
      if (this.nccl) native().ncclWorldAllreduce(a)
      else native().mpiAllreduce(a)
      this.count(a.byteLength)
    }
    return a
  }

  /** Every rank's array (any lengths), in rank order. */
  allgatherv(a: Float64Array): Float64Array[] {
    if (this.size === 1) return [a]
    const gather = (x: Float64Array): Float64Array =>
      (this.nccl ? native().ncclWorldAllgather(x) : native().mpiAllgather(x)) as Float64Array
    const lengths = gather(Float64Array.of(a.length))
    const max = Math.max(...lengths)
    const padded = new Float64Array(max)
    padded.set(a)
    const all = gather(padded)
    this.count(8 * this.size + padded.byteLength * this.size)
    return Array.from(lengths, (n, r) => all.slice(r * max, r * max + n))
  }

  broadcast<T extends ArrayBufferView>(a: T, root = 0): T {
    if (this.size > 1) {
      if (this.nccl) native().ncclWorldBroadcast(a, root)
      else native().mpiBroadcast(a, root)
      this.count(a.byteLength)
    }
    return a
  }

  barrier(): void {
    if (this.size > 1) {
      if (this.nccl) native().ncclWorldBarrier()
      else native().mpiBarrier()
    }
  }

  /** Sums a trainer's gradients over ranks (the same bits everywhere); `gradientBytes` counts the traffic. */
  reduceGradients(trainerHandle: unknown, gradientBytes: number): void {
    if (this.size === 1) return
    native().trainerReduceGradients(trainerHandle)
    // reduce-scatter + all-gather: each rank sends and receives (size - 1) / size of the buffer twice
    this.count((2 * gradientBytes * (this.size - 1)) / this.size)
  }

  /**
   * Ends every process of the run (MPI_Abort): a rank that failed must not leave the others waiting. An NCCL world
   * aborts its communicator and exits; the launcher (torchrun, srun --kill-on-bad-exit) ends the others, and their
   * watchdog does where it does not.
   */
  abort(code = 1): never {
    if (this.engine === 'nccl') native().ncclWorldAbort(code)
    if (this.engine === 'mpi') native().mpiAbort(code)
    process.exit(code)
  }

  finalize(): void {
    if (this.engine === 'nccl') native().ncclWorldDestroy()
    if (this.engine === 'mpi') native().mpiFinalize()
  }
}

let world: World | undefined

/**
 * The world of this process: under mpirun, MPI is initialised and each rank keeps hardware threads / ranks on this
 * node for its kernels (unless RECODE_NUM_THREADS says otherwise). torchrun / Slurm without MPI: a world whose
 * collectives go through NCCL once `join` knows the training device (CPU training there is an error naming mpirun).
 * Otherwise one process.
 */
export function currentWorld(): World {
  if (world !== undefined) return world
  const launch = launchEnvironment()
  if (launch.launcher === 'none' || launch.size === 1) {
    world = new World(0, 1, 0, 1, launch.launcher)
    return world
  }
  if (launch.launcher === 'mpirun') {
    const info = distInfo()
    if (!info.mpi.loaded)
      throw new RecodeError(
        'ERR_DIST',
        `started by ${launch.launcher} as rank ${launch.rank} of ${launch.size}, but MPI is unavailable: ${info.mpi.error}`
      )
    const r = native().mpiInit() as { rank: number; size: number; localRank: number; localSize: number }
    if (r.size !== launch.size)
      throw new RecodeError(
        'ERR_DIST',
        `MPI reports ${r.size} ranks but the launcher's environment says ${launch.size} (is this recode's MPI the one mpirun belongs to?)`
      )
    world = new World(r.rank, r.size, r.localRank, r.localSize, launch.launcher)
    world.engine = 'mpi'
    if (r.localSize > 1) selectLocalGpu(r.localRank) // before systemInfo below starts CUDA
    // Heartbeats: a rank that stops answering (stopped, hung, its node gone) ends the run within the timeout, named.
    const timeout = distTimeoutSeconds()
    if (timeout > 0) world.watchdog = native().mpiWatchdog(Math.min(2000, timeout * 250), timeout * 1000) as boolean
    if (process.env.RECODE_NUM_THREADS === undefined) setNumThreads(Math.max(1, Math.floor(systemInfo().hardwareThreads / r.localSize)))
    return world
  }
  // torchrun / Slurm without MPI: NCCL carries the collectives once train() knows the device (World.join); the
  // rank takes its local GPU before anything starts CUDA
  world = new World(launch.rank, launch.size, launch.localRank, 1, launch.launcher)
  world.engine = 'nccl-pending'
  selectLocalGpu(launch.localRank)
  return world
}

/**
 * The port of the id's rendezvous and of the heartbeats on rank 0's host: RECODE_RENDEZVOUS_PORT when set; else
 * MASTER_PORT, or MASTER_PORT + 1 under torchrun's elastic agent (TORCHELASTIC_USE_AGENT_STORE=True: the agent's own
 * store already listens on MASTER_PORT).
 */
export function rendezvousPort(masterPort: number, env: NodeJS.ProcessEnv = process.env): number {
  const own = intEnv(env, 'RECODE_RENDEZVOUS_PORT')
  const port = own ?? (env.TORCHELASTIC_USE_AGENT_STORE === 'True' ? masterPort + 1 : masterPort)
  if (port < 1 || port > 65535)
    throw new RecodeError('ERR_CONFIG', `the rendezvous port ${port} (MASTER_PORT / RECODE_RENDEZVOUS_PORT) is not a TCP port`)
  return port
}

/**
 * RECODE_DIST_TIMEOUT (seconds, default 30): how long a silent rank may keep the others waiting (0: no watchdog).
 * The torchrun-style rendezvous waits twice as long for late ranks.
 */
function distTimeoutSeconds(): number {
  const v = process.env.RECODE_DIST_TIMEOUT
  const timeout = v === undefined || v === '' ? 30 : Number(v)
  if (!(timeout >= 0))
    throw new RecodeError('ERR_CONFIG', `RECODE_DIST_TIMEOUT=${JSON.stringify(v)} must be a number of seconds (0: no watchdog)`)
  return timeout
}
