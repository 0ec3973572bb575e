/**
 * `recode train`'s console output: one progress line that a terminal redraws in place, and messages (held-out
 * scores, checkpoints, logs) printed above it. On a terminal a message clears the progress line, is printed, and
 * the progress line is drawn again below it, so the two never share a line and no stale progress line stays on
 * screen; elsewhere (a log file, a pipe) everything is a plain line and progress a line every few seconds.
 */
import type { TrainEvent } from '../train/trainer'
import type { HeldOutScores } from '../train/heldout'

/** The part of a stream the printer writes to (process.stdout / stderr, or a test's fake). */
export interface TextSink {
  write: (text: string) => unknown
  isTTY?: boolean
}

export interface ProgressIO {
  /** Where messages go (default process.stdout). */
  out?: TextSink
  /** Where the progress line goes (default process.stderr); its isTTY decides between redrawing and plain lines. */
  err?: TextSink
  /** Milliseconds clock for the redraw throttle (default Date.now). */
  now?: () => number
}

export const scoreLine = (s: Pick<HeldOutScores, 'formatRate' | 'esStar' | 'exactMatch'>): string =>
  `format rate ${(s.formatRate * 100).toFixed(1)}%   ES* ${s.esStar.toFixed(3)}   exact match ${(s.exactMatch * 100).toFixed(1)}%`

const CLEAR = '\r\x1b[K'

export interface ProgressPrinter {
  onEvent: (e: TrainEvent) => void
  /** A message above the progress line (or a plain line). */
  message: (text: string) => void
  /** Ends the progress line (a newline after it on a terminal); later messages are plain lines. */
  finish: () => void
}

export function progressPrinter(io: ProgressIO = {}): ProgressPrinter {
  const out = io.out ?? process.stdout
  const err = io.err ?? process.stderr
  const now = io.now ?? Date.now
  const tty = err.isTTY === true
  let last = -Infinity
  let current = '' // the progress line now on screen ('' = none)
  const bar = (done: number, total: number): string => {
    const width = 24
    const filled = Math.round((done / Math.max(1, total)) * width)
    return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`
  }
  const line = (text: string, force: boolean): void => {
    const t = now()
    if (!force && t - last < (tty ? 200 : 5000)) return
    last = t
    if (tty) {
      err.write(`${CLEAR}${text}`)
      current = text
    } else err.write(text + '\n')
  }
  const message = (text: string): void => {
    if (tty && current !== '') {
      err.write(CLEAR)
      out.write(text + '\n')
      err.write(current)
    } else out.write(text + '\n')
  }
  const finish = (): void => {
    if (tty && current !== '') err.write('\n')
    current = ''
  }
  const onEvent = (e: TrainEvent): void => {
    switch (e.type) {
      case 'start':
        message(`run folder: ${e.runDir}${e.resumedFrom !== null ? ` (resuming after step ${e.resumedFrom})` : ''}`)
        message(
          `training:   ${e.config.algorithm}, ${e.totalSteps} steps${e.config.warmStartSteps > 0 && e.config.algorithm !== 'sft' ? ` (${e.config.warmStartSteps} of them SFT warm start)` : ''}, model ${e.config.model}, data ${e.config.data}, reward ${e.config.reward}`
        )
        break
      case 'eval':
        message(
          `held-out ${e.label === 'before' ? 'before training' : e.label === 'after' ? 'after training' : e.label === 'after-warm-start' ? 'after warm start' : `at step ${e.step}`}: ${scoreLine(e.scores)}`
        )
        break
      case 'progress': // within-phase progress only redraws a terminal; logs get the step lines
        if (tty) line(`${e.what} ${bar(e.done, e.total)} ${e.done}/${e.total}`, e.done === e.total)
        break
      case 'step': {
        const m = e.metrics
        const parts = [`${e.stage} step ${e.step}/${e.totalSteps} ${bar(e.step, e.totalSteps)}`]
        if (m.loss !== undefined) parts.push(`loss ${m.loss.toFixed(4)}`)
        if (m.rewardMean !== undefined) parts.push(`reward ${m.rewardMean.toFixed(3)}`)
        if (m.formatRate !== undefined) parts.push(`format ${(m.formatRate * 100).toFixed(0)}%`)
        if (m.tokensPerSecond !== undefined) parts.push(`${Math.round(m.tokensPerSecond)} tok/s`)
        line(parts.join('  '), e.step === e.totalSteps)
        break
      }
      case 'checkpoint':
        message(`checkpoint: ${e.dir}`)
        break
      case 'log':
        message(e.message)
        break
    }
  }
  return { onEvent, message, finish }
}
