/**
 * Per-step metrics as JSON Lines (`metrics.jsonl`): one object per optimizer step, appended and fsync'd so that
 * a crash loses at most the line being written. On resume the writer drops a torn last line (a crash mid-write)
 * and the lines of steps after the checkpoint being resumed, so the file continues exactly where the run does.
 */
import * as fs from 'fs'
import { RecodeError } from '../errors'

/** What the trainers record each step; every field but `step` is optional (a chart is drawn for each present). */
export interface StepMetrics {
  step: number
  /** Wall-clock time (ms since the epoch) when the step ended. */
  time?: number
  lr?: number
  loss?: number
  gradNorm?: number
  rewardMean?: number
  rewardStd?: number
  formatRate?: number
  esStar?: number
  exactMatch?: number
  kl?: number
  clipFraction?: number
  clipFractionLow?: number
  clipFractionHigh?: number
  entropy?: number
  responseLength?: number
  tokensPerSecond?: number
  /** With config.rolloutCorrection: mean |trainer - generator log-prob| of the sampled tokens, and the fraction of
   * tokens whose correction weight was truncated or masked. */
  rolloutLogRatioAbs?: number
  rolloutCorrectedFraction?: number
  /** Seconds per phase: generation, reward, logprobs, backward, optimizer, ... */
  phaseSeconds?: Record<string, number>
  /** Held-out evaluation, when one ran at this step. */
  eval?: { formatRate?: number; esStar?: number; exactMatch?: number }
  [key: string]: unknown
}

export interface ReadMetricsResult {
  records: StepMetrics[]
  /** Whether the last line was incomplete (no newline or not JSON) and ignored. */
  tornTail: boolean
  /** Byte length of the complete lines (where a writer continues). */
  validBytes: number
}

/**
 * Reads metrics.jsonl. A torn last line is ignored (reported in `tornTail`); a malformed line elsewhere is an
 * error naming file and line. A missing file reads as empty.
 */
export function readMetrics(file: string): ReadMetricsResult {
  let buf: Buffer
  try {
    buf = fs.readFileSync(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], tornTail: false, validBytes: 0 }
    throw new RecodeError('ERR_DATA', `${file}: cannot read (${(err as Error).message})`)
  }
  // Each record is written with its newline last, so a crash mid-write leaves bytes after the final newline:
  // that tail is the torn line. Complete lines must all be valid.
  const records: StepMetrics[] = []
  const lastNl = buf.lastIndexOf(0x0a)
  const validBytes = lastNl + 1
  const tornTail = validBytes < buf.length
  const lines = buf.subarray(0, validBytes).toString('utf8').split('\n')
  lines.pop()
  lines.forEach((text, i) => {
    if (text.trim() === '') return
    let rec: unknown
    try {
      rec = JSON.parse(text)
    } catch {
      throw new RecodeError('ERR_DATA', `${file}:${i + 1}: not a metrics record (invalid JSON)`)
    }
    if (typeof rec !== 'object' || rec === null || !Number.isInteger((rec as StepMetrics).step)) {
      throw new RecodeError('ERR_DATA', `${file}:${i + 1}: not a metrics record (missing an integer "step")`)
    }
    records.push(rec as StepMetrics)
  })
  return { records, tornTail, validBytes }
}

export class MetricsWriter {
  readonly file: string
  private fd: number | undefined

  /**
   * Opens `file` for appending. With `resumeFromStep` (the step of the checkpoint being resumed), records of
   * later steps and a torn last line are cut off first; without it a torn last line is cut off only.
   */
  constructor(file: string, options: { resumeFromStep?: number } = {}) {
    this.file = file
    const { validBytes, tornTail } = readMetrics(file)
    let keepBytes = validBytes
    if (options.resumeFromStep !== undefined) {
      // Keep the prefix of lines whose step is <= the resumed step.
      const buf = validBytes > 0 ? fs.readFileSync(file).subarray(0, validBytes) : Buffer.alloc(0)
      let offset = 0
      while (offset < buf.length) {
        const nl = buf.indexOf(0x0a, offset)
        const text = buf.subarray(offset, nl).toString('utf8')
        if (text.trim() !== '' && (JSON.parse(text) as StepMetrics).step > options.resumeFromStep) break
        offset = nl + 1
      }
      keepBytes = offset
    }
    if (tornTail || keepBytes !== validBytes || options.resumeFromStep !== undefined) {
      if (fs.existsSync(file)) fs.truncateSync(file, keepBytes)
    }
    this.fd = fs.openSync(file, 'a')
  }

  /** Appends one record and fsyncs it. */
  append(record: StepMetrics): void {
    if (this.fd === undefined) throw new RecodeError('ERR_INVALID_ARG', `MetricsWriter(${this.file}): append after close`)
    if (!Number.isInteger(record.step))
      throw new RecodeError('ERR_INVALID_ARG', `MetricsWriter: record.step must be an integer, got ${record.step}`)
    const line = Buffer.from(JSON.stringify(record, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v)) + '\n')
    let done = 0
    while (done < line.length) done += fs.writeSync(this.fd, line, done, line.length - done)
    fs.fsyncSync(this.fd)
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd)
    this.fd = undefined
  }
}
