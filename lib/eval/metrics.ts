/**
 * Scores: the unbiased pass@k estimator (Chen et al. 2021) `1 - C(n-c, k) / C(n, k)`, computed as the
 * product `prod_{i=n-c+1..n} (1 - k/i)` so no binomial ever overflows; failure categories from a run's
 * exit status and traceback.
 */
import type { RunResult } from './sandbox'

/**
 * pass@k for one problem with n samples of which c passed. null when k > n: the estimator is undefined
 * there (the usual code returns 1.0 whenever n - c < k, which would score a problem nobody solved as
 * solved when k > n).
 */
export function passAtK(n: number, c: number, k: number): number | null {
  if (!Number.isInteger(n) || !Number.isInteger(c) || !Number.isInteger(k) || n < 0 || c < 0 || c > n || k < 1) {
    throw new RangeError(`passAtK needs integers 0 <= c <= n and k >= 1 (n=${n}, c=${c}, k=${k})`)
  }
  if (k > n) return null
  if (n - c < k) return 1
  let allFail = 1
  for (let i = n - c + 1; i <= n; i++) allFail *= 1 - k / i
  return 1 - allFail
}

/** Mean pass@k over problems; problems where it is undefined (k > n) are left out; null when none is left. */
export function meanPassAtK(counts: Array<{ n: number; c: number }>, k: number): number | null {
  let sum = 0
  let m = 0
  for (const { n, c } of counts) {
    const v = passAtK(n, c, k)
    if (v === null) continue
    sum += v
    m++
  }
  return m === 0 ? null : sum / m
}

export type FailureCategory = 'syntax_error' | 'exception' | 'assertion' | 'timeout' | 'no_code'

export interface Failure {
  category: FailureCategory
  /** Exception class (e.g. `ZeroDivisionError`), `signal SIGKILL`, or `timeout`. */
  errorType: string
  /** Last lines of the traceback. */
  message: string
}

/** Why a run failed; null when it passed. */
export function classifyRun(r: RunResult): Failure | null {
  if (r.status === 'ok') return null
  if (r.status === 'timeout')
    return { category: 'timeout', errorType: 'timeout', message: `killed at the wall-clock limit after ${Math.round(r.durationMs)} ms` }
  const lines = r.stderr.replace(/\s+$/, '').split('\n')
  // The exception line is the last unindented line of the traceback.
  let last = ''
  for (let i = lines.length - 1; i >= 0; i--) {
    if (/^[A-Za-z_][\w.]*(:|$)/.test(lines[i])) {
      last = lines[i]
      break
    }
  }
  const m = /^([A-Za-z_][\w.]*)(?::|$)/.exec(last)
  const tail = lines.slice(-3).join('\n').slice(-600)
  if (m === null) {
    // Exit status 0 without the launcher's token: the program left early (os._exit(0), sys.exit(0)).
    if (r.exitCode === 0 && r.completed === false) {
      return {
        category: 'exception',
        errorType: 'incomplete',
        message: 'the program exited with status 0 before it ran to its end (os._exit, sys.exit or SystemExit)'
      }
    }
    const how = r.signal !== null ? `signal ${r.signal}` : `exit status ${String(r.exitCode)}`
    return { category: 'exception', errorType: how, message: tail === '' ? `the program ended with ${how} and no traceback` : tail }
  }
  const name = m[1].split('.').pop() as string
  const category: FailureCategory =
    name === 'SyntaxError' || name === 'IndentationError' || name === 'TabError'
      ? 'syntax_error'
      : name === 'AssertionError'
        ? 'assertion'
        : 'exception'
  return { category, errorType: name, message: last.length > 600 ? last.slice(0, 600) + '…' : category === 'syntax_error' ? tail : last }
}
