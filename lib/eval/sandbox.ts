/**
 * Runs untrusted Python: one fresh interpreter per program, in a private temporary directory (its cwd,
 * HOME and TMPDIR), with a wall-clock timeout that kills the whole process tree, and resource limits
 * (address space, processes, file size, no core dumps) set by a small launcher before the program runs.
 *
 * Isolation, best first (probed once per interpreter; `recode doctor` prints which one is in force):
 * - bwrap: bubblewrap with every namespace unshared (no network, own pids), the host filesystem mounted
 *   read-only, fresh /tmp and /dev/shm, only the private directory writable;
 * - unshare: util-linux unshare with a new network and pid namespace; the filesystem is the host's;
 * - rlimits: limits and a process group only (no network isolation).
 * When running as root, programs also drop to uid/gid 65534 (setpriv): root ignores RLIMIT_NPROC, so
 * without the drop nothing would stop a fork bomb.
 */
import { spawn, spawnSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { RecodeError, abortError } from '../errors'
import { resolvePython } from './python'

export type IsolationKind = 'bwrap' | 'unshare' | 'rlimits'

export interface SandboxOptions {
  /** Interpreter (default: RECODE_PYTHON, else python3). It needs the packages programs import. */
  python?: string
  /** Wall-clock limit per program in ms (default 15000, as the CodeUpdateArena harness). */
  timeoutMs?: number
  /** Address-space limit in bytes (RLIMIT_AS; default 4 GiB). */
  memoryBytes?: number
  /** Process/thread limit inside the sandbox (RLIMIT_NPROC; default 256). */
  maxProcesses?: number
  /** Largest file a program may write, bytes (RLIMIT_FSIZE; default 64 MiB). */
  maxFileBytes?: number
  /** Bytes of stdout and of stderr kept (the tail; default 64 KiB). */
  maxOutputBytes?: number
  /** 'auto' (default) takes the best isolation that works here; naming one fails if it does not. */
  isolation?: 'auto' | IsolationKind
  /** Extra environment variables for the program. */
  env?: Record<string, string>
  /**
   * Modules imported before the program runs (a missing one is skipped). The original harnesses exec
   * programs inside a warm interpreter, so modules such as `tokenize` were already loaded there; a
   * program that deletes a library attribute (a rename update) and only then imports a module that needs
   * it behaves the same only if that module was imported first.
   */
  preimport?: string[]
}

export interface IsolationInfo {
  kind: IsolationKind
  /** Absolute interpreter path the sandbox runs. */
  python: string
  network: 'isolated' | 'host'
  filesystem: string
  /** Whether RLIMIT_NPROC is enforced (false when running as root without a usable uid drop). */
  processLimit: boolean
  /** uid programs run as. */
  uid: number
  /** One line for humans. */
  summary: string
  /** Why better isolation was not used. */
  fallbacks: string[]
}

export interface RunResult {
  /** ok: exit status 0; error: non-zero exit or killed by a signal; timeout: killed at the wall-clock limit. */
  status: 'ok' | 'error' | 'timeout'
  exitCode: number | null
  signal: string | null
  stdout: string
  stderr: string
  durationMs: number
}

export const DEFAULT_TIMEOUT_MS = 15000
const DEFAULT_MEMORY = 4 * 2 ** 30
const DEFAULT_NPROC = 256
const DEFAULT_FSIZE = 64 * 2 ** 20
const DEFAULT_OUTPUT = 64 * 1024
const NOBODY = 65534

// Sets the limits inside the sandbox, then runs the program as __main__. Limits are set here, after the
// namespaces exist, so RLIMIT_NPROC counts only the sandbox's own processes.
const LAUNCHER = [
  'import resource, runpy, sys',
  'a, p, f, c = (int(x) for x in sys.argv[1:5])',
  'resource.setrlimit(resource.RLIMIT_AS, (a, a))',
  'resource.setrlimit(resource.RLIMIT_NPROC, (p, p))',
  'resource.setrlimit(resource.RLIMIT_FSIZE, (f, f))',
  'resource.setrlimit(resource.RLIMIT_CORE, (0, 0))',
  'resource.setrlimit(resource.RLIMIT_CPU, (c, c + 1))',
  'for m in sys.argv[5].split(","):',
  '    try:',
  '        m and __import__(m)',
  '    except Exception:',
  '        pass',
  'sys.argv = sys.argv[6:]',
  'del a, p, f, c, m',
  "runpy.run_path(sys.argv[0], run_name='__main__')"
].join('\n')

interface Plan {
  info: IsolationInfo
  /** argv before the interpreter, given the private directory. */
  prefix: (dir: string) => string[]
  dropToNobody: boolean
}

const plans = new Map<string, Plan>()

function which (cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(path.delimiter)) {
    const p = path.join(dir, cmd)
    try {
      fs.accessSync(p, fs.constants.X_OK)
      return p
    } catch {}
  }
  return null
}

function realPython (python: string): string {
  const res = spawnSync(python, ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8', timeout: 30000 })
  if (res.error || res.status !== 0) {
    throw new RecodeError('ERR_PYTHON', `cannot run the Python interpreter '${python}': ${res.error ? res.error.message : res.stderr.trim().slice(-300)}`)
  }
  const exe = res.stdout.trim()
  return exe === '' ? python : exe
}

function bwrapArgs (dir: string): string[] {
  return ['--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--tmpfs', '/tmp', '--tmpfs', '/dev/shm',
    '--bind', dir, dir, '--chdir', dir, '--unshare-all', '--die-with-parent', '--new-session', '--']
}

/** Tries a plan with a tiny program that also checks the network is really gone where it should be. */
function tryPlan (plan: Plan): string | null {
  const dir = makePrivateDir(plan.dropToNobody)
  try {
    const check = plan.info.network === 'isolated'
      ? "import socket\ns = socket.socket()\ns.settimeout(2)\nr = s.connect_ex(('192.0.2.1', 9))\nprint('ok' if r != 0 else 'network reachable')"
      : "print('ok')"
    fs.writeFileSync(path.join(dir, 'probe.py'), check)
    const argv = [...plan.prefix(dir), plan.info.python, '-B', '-c', LAUNCHER, String(DEFAULT_MEMORY), String(DEFAULT_NPROC), String(DEFAULT_FSIZE), '30', '', 'probe.py']
    const res = spawnSync(argv[0], argv.slice(1), { cwd: dir, env: sandboxEnv(dir, {}), encoding: 'utf8', timeout: 30000 })
    if (res.error) return res.error.message
    if (res.status === 0 && res.stdout.trim() === 'ok') return null
    return (res.stdout.trim() + ' ' + res.stderr.trim()).trim().split('\n').slice(-2).join(' ').slice(0, 300) || `exit status ${res.status}`
  } finally {
    removeDir(dir)
  }
}

/**
 * Finds the best isolation that works for this interpreter (cached). `requested` other than 'auto'
 * insists on one kind and throws ERR_PYTHON when it does not work here.
 */
export function probeIsolation (python?: string, requested: 'auto' | IsolationKind = 'auto'): IsolationInfo {
  return planFor(python, requested).info
}

function planFor (python: string | undefined, requested: 'auto' | IsolationKind): Plan {
  const exe = resolvePython(python)
  const key = `${exe}\0${requested}`
  const cached = plans.get(key)
  if (cached !== undefined) return cached
  const real = realPython(exe)
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
  const setpriv = isRoot ? which('setpriv') : null
  const bwrap = which('bwrap')
  const unshare = which('unshare')
  const fallbacks: string[] = []
  const uid = typeof process.getuid === 'function' ? process.getuid() : -1

  const candidates: Plan[] = []
  const drops = isRoot ? (setpriv !== null ? [true, false] : [false]) : [false]
  if (isRoot && setpriv === null) fallbacks.push('running as root and setpriv not found: cannot drop to an unprivileged uid, so RLIMIT_NPROC is not enforced')
  const drop = (on: boolean): string[] => on ? [setpriv as string, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--'] : []
  const fsReadOnly = 'host filesystem read-only; private directory writable; fresh /tmp and /dev/shm'
  // Best isolation first; within a kind, the uid drop first (it is what makes RLIMIT_NPROC bite for root).
  for (const kind of ['bwrap', 'unshare', 'rlimits'] as IsolationKind[]) {
    if (requested !== 'auto' && requested !== kind) continue
    if ((kind === 'bwrap' && bwrap === null) || (kind === 'unshare' && unshare === null)) continue
    for (const on of drops) {
      const who = on ? NOBODY : uid
      const limitOk = !isRoot || on
      const userns = !isRoot || on
      const prefix = kind === 'bwrap'
        ? (dir: string) => [...drop(on), bwrap as string, ...bwrapArgs(dir)]
        : kind === 'unshare'
          ? () => [...drop(on), unshare as string, ...(userns ? ['--user', '--map-root-user'] : []), '--net', '--pid', '--fork', '--kill-child', '--']
          : () => drop(on)
      const filesystem = kind === 'bwrap' ? fsReadOnly : `host filesystem, writable where uid ${who} may write`
      candidates.push({
        dropToNobody: on,
        prefix,
        info: { kind, python: real, network: kind === 'rlimits' ? 'host' : 'isolated', filesystem, processLimit: limitOk, uid: who, summary: '', fallbacks }
      })
    }
  }
  if (bwrap === null && (requested === 'auto' || requested === 'bwrap')) fallbacks.push('bwrap not found on PATH')
  if (unshare === null && (requested === 'auto' || requested === 'unshare')) fallbacks.push('unshare not found on PATH')

  for (const plan of candidates) {
    const failure = tryPlan(plan)
    if (failure === null) {
      const i = plan.info
      i.summary = `${i.kind}: network ${i.network === 'isolated' ? 'isolated' : 'NOT isolated'}; ${i.filesystem}; ` +
        `runs as uid ${i.uid}${i.processLimit ? '' : ' (process limit not enforced for root)'}; rlimits on memory, processes, file size; timeout kills the process tree`
      plans.set(key, plan)
      return plan
    }
    fallbacks.push(`${plan.info.kind}${plan.dropToNobody ? ' as uid 65534' : ''} does not work here: ${failure}`)
  }
  throw new RecodeError('ERR_PYTHON', `no usable sandbox for ${real}${requested !== 'auto' ? ` with isolation '${requested}'` : ''}: ${fallbacks.join('; ')}`)
}

function sandboxEnv (dir: string, extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: dir,
    TMPDIR: dir,
    LANG: 'C.UTF-8',
    LC_ALL: 'C.UTF-8',
    PYTHONDONTWRITEBYTECODE: '1',
    PYTHONUNBUFFERED: '1',
    PYTHONIOENCODING: 'utf-8',
    // One thread per math library: programs run in parallel across cores already.
    OMP_NUM_THREADS: '1',
    OPENBLAS_NUM_THREADS: '1',
    MKL_NUM_THREADS: '1',
    NUMEXPR_NUM_THREADS: '1',
    MPLBACKEND: 'Agg',
    MPLCONFIGDIR: dir
  }
  if (process.env.PYTHONPATH !== undefined) env.PYTHONPATH = process.env.PYTHONPATH
  if (process.env.VIRTUAL_ENV !== undefined) env.VIRTUAL_ENV = process.env.VIRTUAL_ENV
  return { ...env, ...extra }
}

function makePrivateDir (forNobody: boolean): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-sandbox-'))
  if (forNobody) fs.chownSync(dir, NOBODY, NOBODY)
  return dir
}

function removeDir (dir: string): void {
  try {
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
  } catch {}
}

/** Keeps the last `limit` bytes of a stream. */
class Tail {
  private chunks: Buffer[] = []
  private size = 0
  constructor (private readonly limit: number) {}
  push (b: Buffer): void {
    this.chunks.push(b)
    this.size += b.length
    while (this.size - this.chunks[0].length >= this.limit) this.size -= (this.chunks.shift() as Buffer).length
  }

  text (): string {
    const all = Buffer.concat(this.chunks)
    return all.subarray(Math.max(0, all.length - this.limit)).toString('utf8')
  }
}

/** Runs one program (Python source) in a fresh sandboxed interpreter. */
export function runPython (source: string, options: SandboxOptions = {}, signal?: AbortSignal): Promise<RunResult> {
  if (typeof source !== 'string') return Promise.reject(new RecodeError('ERR_INVALID_ARG', 'program source must be a string'))
  if (signal?.aborted === true) return Promise.reject(abortError())
  const plan = planFor(options.python, options.isolation ?? 'auto')
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
  if (!(timeoutMs > 0)) return Promise.reject(new RecodeError('ERR_INVALID_ARG', `timeoutMs must be positive, got ${timeoutMs}`))
  const memory = options.memoryBytes ?? DEFAULT_MEMORY
  const nproc = options.maxProcesses ?? DEFAULT_NPROC
  const fsize = options.maxFileBytes ?? DEFAULT_FSIZE
  const cpuSeconds = Math.ceil(timeoutMs / 1000) + 1
  const preimport = options.preimport ?? []
  for (const m of preimport) if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(m)) return Promise.reject(new RecodeError('ERR_INVALID_ARG', `preimport: '${m}' is not a module name`))
  const dir = makePrivateDir(plan.dropToNobody)
  const file = 'program.py'
  fs.writeFileSync(path.join(dir, file), source)
  if (plan.dropToNobody) fs.chownSync(path.join(dir, file), NOBODY, NOBODY)
  const argv = [...plan.prefix(dir), plan.info.python, '-B', '-c', LAUNCHER, String(memory), String(nproc), String(fsize), String(cpuSeconds), preimport.join(','), file]
  const started = process.hrtime.bigint()
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { cwd: dir, env: sandboxEnv(dir, options.env ?? {}), stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    const stdout = new Tail(options.maxOutputBytes ?? DEFAULT_OUTPUT)
    const stderr = new Tail(options.maxOutputBytes ?? DEFAULT_OUTPUT)
    let timedOut = false
    let aborted = false
    // The child leads its own process group: killing the group takes every descendant that stayed in it;
    // with namespaces, the pid namespace dies with its first process, taking the rest.
    const killTree = (): void => {
      try { if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL') } catch {}
      try { child.kill('SIGKILL') } catch {}
    }
    const timer = setTimeout(() => { timedOut = true; killTree() }, timeoutMs)
    const onAbort = (): void => { aborted = true; killTree() }
    signal?.addEventListener('abort', onAbort, { once: true })
    child.stdout.on('data', (b: Buffer) => stdout.push(b))
    child.stderr.on('data', (b: Buffer) => stderr.push(b))
    const finish = (exitCode: number | null, sig: NodeJS.Signals | null, spawnError?: Error): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      killTree() // leftovers that outlived the main process (background children) go too
      removeDir(dir)
      if (spawnError !== undefined) {
        reject(new RecodeError('ERR_PYTHON', `cannot start the sandbox (${argv[0]}): ${spawnError.message}`, { cause: spawnError }))
        return
      }
      if (aborted) {
        reject(abortError())
        return
      }
      const durationMs = Number(process.hrtime.bigint() - started) / 1e6
      resolve({
        status: timedOut ? 'timeout' : exitCode === 0 ? 'ok' : 'error',
        exitCode,
        signal: sig,
        stdout: stdout.text(),
        stderr: stderr.text(),
        durationMs
      })
    }
    let done = false
    child.on('error', (err) => { if (!done) { done = true; finish(null, null, err) } })
    child.on('close', (code, sig) => { if (!done) { done = true; finish(code, sig) } })
  })
}

export interface RunManyOptions extends SandboxOptions {
  /** Programs run at once (default: the number of CPU cores). */
  concurrency?: number
  signal?: AbortSignal
  onProgress?: (p: { done: number, total: number }) => void
}

/** Runs many programs, `concurrency` at a time; results in input order. */
export async function runPrograms (sources: string[], options: RunManyOptions = {}): Promise<RunResult[]> {
  const concurrency = Math.max(1, Math.floor(options.concurrency ?? defaultConcurrency()))
  const results: RunResult[] = new Array(sources.length)
  let next = 0
  let done = 0
  const worker = async (): Promise<void> => {
    while (next < sources.length) {
      if (options.signal?.aborted === true) throw abortError()
      const i = next++
      results[i] = await runPython(sources[i], options, options.signal)
      done++
      options.onProgress?.({ done, total: sources.length })
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, sources.length) }, worker))
  return results
}

export function defaultConcurrency (): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length
}

/** The line `recode doctor` prints about program isolation. */
export function isolationSummary (python?: string): string {
  try {
    const info = probeIsolation(python)
    const extra = info.fallbacks.length > 0 && (info.kind !== 'bwrap' || !info.processLimit) ? ` (${info.fallbacks.join('; ')})` : ''
    return `${info.summary}${extra}`
  } catch (err) {
    return `unavailable: ${(err as Error).message}`
  }
}
