/**
 * The syntax check: CPython's own parser (`ast.parse`) in long-lived `python3` worker processes.
 *
 * A pool per interpreter, one worker per core, started on first use. Protocol (newline framed): a request
 * is one line holding a JSON array of source strings (JSON.stringify escapes newlines and lone surrogates,
 * which Python's json turns back into the same str); the reply is one line with one '1' (parses) or '0'
 * (ast.parse raised anything: SyntaxError, ValueError, RecursionError, MemoryError...) per source, in
 * order. The first line a worker prints is `ready <version>`. Workers are unref'd while idle so they never
 * keep Node alive; a worker that dies is replaced. If one dies in the middle of a request (a parser crash on
 * some pathological source), the request is split in halves and retried on fresh workers, down to the one
 * source that kills it, which counts as invalid: ast.parse did not return.
 *
 * The verdict is the interpreter's own, so it follows its version (Python 3.12 accepts f-strings that reuse
 * their quotes, which 3.11 rejects): score with the same Python as the rewards being compared with.
 */
import { spawn, type ChildProcess } from 'child_process'
import * as os from 'os'
import { abortError, optionsArg } from '../errors'
import { RecodeError } from '../errors'

// Runs with -I -S (no site, no user paths, environment ignored): nothing but the standard library's ast.
const WORKER_SOURCE = [
  'import ast, json, sys',
  'def parses(source):',
  '    try:',
  '        ast.parse(source)',
  '        return "1"',
  '    except Exception:',
  '        return "0"',
  'out = sys.stdout',
  'out.write("ready %d.%d.%d\\n" % sys.version_info[:3])',
  'out.flush()',
  'while True:',
  '    line = sys.stdin.buffer.readline()',
  '    if not line:',
  '        break',
  '    out.write("".join(parses(s) for s in json.loads(line)) + "\\n")',
  '    out.flush()'
].join('\n')

export interface PythonOptions {
  /** Interpreter to run (default: RECODE_PYTHON, else `python3` on PATH). */
  python?: string
  signal?: AbortSignal
  /** Longest a request may take before its worker is killed (default 120 s). */
  timeoutMs?: number
}

/** The interpreter an options object selects, and where the choice came from (for error messages). */
export function pythonCommand(options: PythonOptions = {}): { command: string; from: string } {
  options = optionsArg(options, 'pythonCommand')
  if (options.python !== undefined && options.python !== '') return { command: options.python, from: 'the `python` option' }
  const env = process.env.RECODE_PYTHON
  if (env !== undefined && env !== '') return { command: env, from: 'RECODE_PYTHON' }
  return { command: 'python3', from: 'the default (`python3` on PATH)' }
}

/** The worker process ended before answering; `culprit` when this request was the one it was parsing. */
class WorkerDied extends Error {
  constructor(
    message: string,
    readonly culprit = false
  ) {
    super(message)
  }
}

interface Pending {
  count: number
  settled: boolean
  resolve: (flags: string) => void
  reject: (err: Error) => void
  timer?: NodeJS.Timeout
}

class Worker {
  private readonly child: ChildProcess
  private readonly pending: Pending[] = []
  private stdoutBuffer = ''
  private stderrTail = ''
  started = false
  dead = false
  readonly ready: Promise<string>

  constructor(
    private readonly command: string,
    private readonly from: string,
    private readonly onExit: (w: Worker) => void
  ) {
    this.child = spawn(command, ['-I', '-S', '-c', WORKER_SOURCE], { stdio: ['pipe', 'pipe', 'pipe'], windowsHide: true })
    this.child.stdout!.setEncoding('latin1')
    this.child.stderr!.setEncoding('utf8')
    this.child.stdin!.on('error', () => {
      /* a dead worker's EPIPE; the exit handler reports it */
    })
    this.child.stderr!.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-2000)
    })
    this.ready = new Promise<string>((resolve, reject) => {
      const startTimer = setTimeout(() => {
        this.kill()
        reject(this.failure(`did not start within 30 s`))
      }, 30000)
      startTimer.unref()
      this.child.stdout!.on('data', (chunk: string) => {
        this.stdoutBuffer += chunk
        let newline: number
        while ((newline = this.stdoutBuffer.indexOf('\n')) >= 0) {
          const line = this.stdoutBuffer.slice(0, newline)
          this.stdoutBuffer = this.stdoutBuffer.slice(newline + 1)
          if (!this.started) {
            clearTimeout(startTimer)
            if (!line.startsWith('ready ')) {
              this.kill()
              reject(this.failure(`printed ${JSON.stringify(line.slice(0, 200))} instead of its ready line`))
              return
            }
            this.started = true
            this.updateRef()
            resolve(line.slice(6))
            continue
          }
          this.reply(line)
        }
      })
      this.child.on('error', (err) => {
        clearTimeout(startTimer)
        this.dead = true
        reject(this.failure(err.message))
        this.failPending(err.message)
        this.onExit(this)
      })
      this.child.on('close', (code, signal) => {
        // after stdio closed: stderr is complete
        clearTimeout(startTimer)
        this.dead = true
        const why = signal !== null ? `was killed by ${signal}` : `exited with code ${code}`
        if (!this.started) reject(this.failure(why + (this.stderrTail ? `: ${this.stderrTail.trim()}` : '')))
        this.failPending(why)
        this.onExit(this)
      })
    })
    this.ready.catch(() => {
      /* reported to whoever awaits it */
    })
    this.updateRef()
  }

  private failure(why: string): RecodeError {
    return new RecodeError(
      'ERR_PYTHON',
      `could not run the Python syntax checker with '${this.command}' (from ${this.from}): ${why}. ` +
        'Install Python 3, or name an interpreter with the `python` option, --python or RECODE_PYTHON.'
    )
  }

  /** Requests the pool has handed to this worker and not yet got back (counted before it is ready). */
  assigned = 0

  /** One '1'/'0' per source, in order. Rejects with WorkerDied if the process dies first. */
  check(sources: string[], timeoutMs: number, signal?: AbortSignal): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      if (this.dead) {
        reject(new WorkerDied('worker is not running'))
        return
      }
      const request: Pending = { count: sources.length, settled: false, resolve, reject }
      request.timer = setTimeout(() => {
        settle(
          request,
          new RecodeError('ERR_PYTHON', `the Python syntax check did not answer within ${timeoutMs / 1000} s; its worker was stopped`)
        )
        this.kill()
      }, timeoutMs)
      if (signal) {
        const onAbort = (): void => settle(request, abortError())
        signal.addEventListener('abort', onAbort, { once: true })
        const done = request.resolve
        request.resolve = (flags) => {
          signal.removeEventListener('abort', onAbort)
          done(flags)
        }
        const failed = request.reject
        request.reject = (err) => {
          signal.removeEventListener('abort', onAbort)
          failed(err)
        }
      }
      this.pending.push(request)
      this.updateRef()
      this.child.stdin!.write(JSON.stringify(sources) + '\n')
    })
  }

  private reply(line: string): void {
    const request = this.pending.shift()
    this.updateRef()
    if (!request) return
    if (line.length !== request.count) {
      settle(
        request,
        new RecodeError('ERR_PYTHON', `the Python syntax checker answered ${line.length} results for ${request.count} sources`)
      )
      this.kill()
      return
    }
    settle(request, line)
  }

  private failPending(why: string): void {
    // Python answers requests in order, so the first one pending is the one it was working on.
    this.pending.splice(0).forEach((request, i) => settle(request, new WorkerDied(why, i === 0)))
  }

  /** Starting and busy workers keep Node alive (a request is waiting on them); idle ones do not. */
  private updateRef(): void {
    const busy = (this.pending.length > 0 || !this.started) && !this.dead
    const handles: any[] = [this.child, this.child.stdin, this.child.stdout, this.child.stderr]
    for (const h of handles) {
      if (h === null || h === undefined) continue
      if (busy) h.ref?.()
      else h.unref?.()
    }
  }

  kill(): void {
    if (!this.dead) this.child.kill('SIGKILL')
    this.dead = true
  }
}

function settle(request: Pending, result: string | Error): void {
  if (request.settled) return
  request.settled = true
  if (request.timer) clearTimeout(request.timer)
  if (typeof result === 'string') request.resolve(result)
  else request.reject(result)
}

const MAX_SOURCES_PER_REQUEST = 64

class Pool {
  private workers: Worker[] = []

  constructor(
    private readonly command: string,
    private readonly from: string,
    private readonly size: number
  ) {}

  /** A running worker with the fewest requests in flight (starting one while the pool is not full). */
  private worker(): Worker {
    this.workers = this.workers.filter((w) => !w.dead)
    let best: Worker | undefined
    for (const w of this.workers) if (!best || w.assigned < best.assigned) best = w
    if (!best || (best.assigned > 0 && this.workers.length < this.size)) {
      best = new Worker(this.command, this.from, (dead) => {
        this.workers = this.workers.filter((w) => w !== dead)
      })
      this.workers.push(best)
    }
    best.assigned++
    return best
  }

  async check(sources: string[], timeoutMs: number, signal?: AbortSignal): Promise<string> {
    const w = this.worker()
    try {
      // A running worker gets the request now, synchronously, so that it parses while the caller goes on.
      return await (w.started ? w.check(sources, timeoutMs, signal) : w.ready.then(() => w.check(sources, timeoutMs, signal)))
    } catch (err) {
      if (!(err instanceof WorkerDied)) throw err
      if (signal?.aborted) throw abortError()
      // Queued behind the request that killed the worker: send it again as it is.
      if (!err.culprit) return await this.check(sources, timeoutMs, signal)
      // The process died parsing this request: bisect to find the source that kills the parser.
      if (sources.length === 1) return '0'
      const half = sources.length >> 1
      const [a, b] = await Promise.all([
        this.check(sources.slice(0, half), timeoutMs, signal),
        this.check(sources.slice(half), timeoutMs, signal)
      ])
      return a + b
    } finally {
      w.assigned--
    }
  }

  /** Starts every worker now; resolves with the interpreter's version. */
  async start(): Promise<string> {
    this.workers = this.workers.filter((w) => !w.dead)
    while (this.workers.length < this.size) {
      this.workers.push(
        new Worker(this.command, this.from, (dead) => {
          this.workers = this.workers.filter((w) => w !== dead)
        })
      )
    }
    const versions = await Promise.all(this.workers.map((w) => w.ready))
    return versions[0]
  }

  close(): void {
    for (const w of this.workers) w.kill()
    this.workers = []
  }
}

const pools = new Map<string, Pool>()

function poolSize(): number {
  return Math.max(1, typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length)
}

function poolFor(options: PythonOptions): Pool {
  const { command, from } = pythonCommand(options)
  let pool = pools.get(command)
  if (!pool) {
    pool = new Pool(command, from, poolSize())
    pools.set(command, pool)
  }
  return pool
}

/**
 * Starts the syntax-check workers ahead of the first reward (a training loop calls this once at start-up,
 * so that the first step does not wait for interpreters); resolves with the Python version they run.
 */
export async function startPythonWorkers(options: PythonOptions = {}): Promise<string> {
  options = optionsArg(options, 'startPythonWorkers')
  return await poolFor(options).start()
}

/**
 * For each source, whether `ast.parse(source)` returns (1) or raises (0) in CPython. Duplicate sources
 * are parsed once; requests are spread over the pool's workers.
 */
export async function pythonParses(sources: string[], options: PythonOptions = {}): Promise<Uint8Array> {
  options = optionsArg(options, 'pythonParses')
  if (options.signal?.aborted) throw abortError()
  const result = new Uint8Array(sources.length)
  if (sources.length === 0) return result
  const pool = poolFor(options)
  const firstIndex = new Map<string, number>()
  const unique: string[] = []
  const slot = new Int32Array(sources.length)
  for (let i = 0; i < sources.length; i++) {
    let u = firstIndex.get(sources[i])
    if (u === undefined) {
      u = unique.length
      firstIndex.set(sources[i], u)
      unique.push(sources[i])
    }
    slot[i] = u
  }
  const timeoutMs = options.timeoutMs ?? 120000
  const chunks: Array<Promise<string>> = []
  for (let start = 0; start < unique.length; start += MAX_SOURCES_PER_REQUEST) {
    chunks.push(pool.check(unique.slice(start, start + MAX_SOURCES_PER_REQUEST), timeoutMs, options.signal))
  }
  const flags = (await Promise.all(chunks)).join('')
  for (let i = 0; i < sources.length; i++) result[i] = flags.charCodeAt(slot[i]) === 0x31 ? 1 : 0
  return result
}

/** Whether CPython's ast.parse accepts one source. */
export async function pythonParsesOne(source: string, options: PythonOptions = {}): Promise<boolean> {
  return (await pythonParses([source], options))[0] === 1
}

/** Stops every syntax-check worker (they also end by themselves when Node exits). */
export function closePythonWorkers(): void {
  for (const pool of pools.values()) pool.close()
  pools.clear()
}
