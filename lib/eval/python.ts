/**
 * The Python interpreter that checks and runs code: `RECODE_PYTHON`, else `python3` on PATH (callers can
 * pass their own). Syntax checks go through CPython's own parser (`ast.parse`), batched through one
 * subprocess so that checking thousands of snippets costs one interpreter start.
 */
import { spawn, spawnSync } from 'child_process'
import { RecodeError } from '../errors'

/**
 * Why a finished interpreter run failed, never empty: its stderr's tail, else its exit status or signal
 * (`/bin/false` says nothing and exits 1).
 */
export function exitReason(status: number | null, signal: NodeJS.Signals | null, stderr: string): string {
  const tail = stderr.trim().slice(-500)
  if (tail !== '') return tail
  return signal !== null ? `killed by ${signal}, no message` : `exited with status ${String(status)}, no message`
}

export function resolvePython(python?: string): string {
  if (python !== undefined && python !== null && typeof python !== 'string')
    throw new RecodeError('ERR_INVALID_ARG', `python must be a string (an interpreter path or name), got ${typeof python}`)
  return python ?? process.env.RECODE_PYTHON ?? 'python3'
}

const SYNTAX_CHECK = `
import ast, json, sys, warnings
warnings.simplefilter('ignore')
sources = json.loads(sys.stdin.buffer.read().decode('utf-8'))
out = []
for s in sources:
    try:
        ast.parse(s)
        out.append(None)
    except SyntaxError as e:
        out.append('%s: %s (line %s)' % (type(e).__name__, e.msg, e.lineno))
    except Exception as e:
        out.append('%s: %s' % (type(e).__name__, e))
sys.stdout.write(json.dumps(out))
`

/**
 * For each source, null when `ast.parse` accepts it, else the parser's message. One python process for
 * the whole list. Rejects with ERR_PYTHON when the interpreter cannot be started.
 */
export function checkPythonSyntax(sources: string[], python?: string): Promise<Array<string | null>> {
  if (!Array.isArray(sources) || !sources.every((x) => typeof x === 'string'))
    return Promise.reject(new RecodeError('ERR_INVALID_ARG', 'checkPythonSyntax: sources must be an array of strings'))
  let exe: string
  try {
    exe = resolvePython(python)
  } catch (err) {
    return Promise.reject(err)
  }
  if (sources.length === 0) return Promise.resolve([])
  return new Promise((resolve, reject) => {
    const child = spawn(exe, ['-c', SYNTAX_CHECK], { stdio: ['pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (b: Buffer) => out.push(b))
    child.stderr.on('data', (b: Buffer) => err.push(b))
    child.on('error', (e) => reject(new RecodeError('ERR_PYTHON', `cannot run ${exe} for syntax checks: ${e.message}`, { cause: e })))
    child.on('close', (code, signal) => {
      if (code !== 0) {
        reject(
          new RecodeError('ERR_PYTHON', `${exe} syntax check failed: ${exitReason(code, signal, Buffer.concat(err).toString('utf8'))}`)
        )
        return
      }
      try {
        const parsed = JSON.parse(Buffer.concat(out).toString('utf8')) as Array<string | null>
        if (!Array.isArray(parsed) || parsed.length !== sources.length) throw new Error('wrong number of results')
        resolve(parsed)
      } catch (e) {
        reject(new RecodeError('ERR_PYTHON', `${exe} syntax check returned unreadable output: ${(e as Error).message}`))
      }
    })
    child.stdin.on('error', () => {}) // the close handler reports a dead interpreter
    child.stdin.end(JSON.stringify(sources))
  })
}

export interface PythonInfo {
  python: string
  /** e.g. "3.11.2"; undefined when the interpreter did not start. */
  version?: string
  /** Module name -> version string, or null when it does not import. */
  modules: Record<string, string | null>
  error?: string
}

/** Which of `modules` import under `python` (synchronous; one short interpreter run). */
export function probePython(python?: string, modules: string[] = []): PythonInfo {
  if (!Array.isArray(modules) || !modules.every((m) => typeof m === 'string'))
    throw new RecodeError('ERR_INVALID_ARG', 'probePython: modules must be an array of module names')
  const exe = resolvePython(python)
  const script =
    'import json, sys, importlib\nr = {}\nfor m in sys.argv[1:]:\n    try:\n        mod = importlib.import_module(m)\n        r[m] = str(getattr(mod, "__version__", "?"))\n    except Exception:\n        r[m] = None\nprint(json.dumps({"version": sys.version.split()[0], "modules": r}))'
  const res = spawnSync(exe, ['-c', script, ...modules], { encoding: 'utf8', timeout: 60000 })
  if (res.error || res.status !== 0) {
    return {
      python: exe,
      modules: Object.fromEntries(modules.map((m) => [m, null])),
      error: res.error ? res.error.message : exitReason(res.status, res.signal, res.stderr ?? '')
    }
  }
  try {
    const parsed = JSON.parse(res.stdout.trim().split('\n').pop() ?? '')
    return { python: exe, version: parsed.version, modules: parsed.modules }
  } catch {
    return { python: exe, modules: Object.fromEntries(modules.map((m) => [m, null])), error: 'unreadable probe output' }
  }
}
