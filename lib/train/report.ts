/**
 * The run's report page: one self-contained HTML file (inline CSS and SVG, no scripts or external assets) meant to
 * be read at a glance: a table of the held-out scores before and after (base, after the warm start, after RL), the
 * held-out scores over the run (a point per evaluation), a line chart per metric over steps (reward mean with a
 * +-std band, reward std, format rate, ES*, KL, clip fractions, entropy, response length, SFT and policy loss,
 * gradient norm, learning rate, throughput), noisy series smoothed (EMA) over their raw values drawn faint, a
 * series that is switched off said in words instead of drawn flat, and a few held-out tasks side by side with the
 * models' answers. Written atomically, so a viewer never sees half a page.
 */
import { writeFileAtomic } from '../atomicFile'
import { RecodeError, optionsArg } from '../errors'
import type { TrainConfig } from './config'
import { answerBadge, type EvaluationPoint, type HeldOutExample, type HeldOutScores } from './heldout'
import type { StepMetrics } from './metrics'

interface Series {
  label: string
  get: (r: StepMetrics) => number | undefined
}

export interface ChartSpec {
  id: string
  title: string
  series: Series[]
  /** Shade mean +- std of the first series. */
  band?: (r: StepMetrics) => [number, number] | undefined
  /** Draw an EMA of each series over its raw values (faint). */
  smooth?: boolean
  /** A dot at every point (sparse series such as the held-out evaluations). */
  markers?: boolean
  /** Y axis label. */
  unit?: string
  /** Why the series is off for this run (said in words instead of a flat chart), or undefined when it is on. */
  off?: (config: ReportConfig, records: StepMetrics[]) => string | undefined
}

/** The configuration fields the report reads (to say which series are off and why). */
export type ReportConfig = Partial<Pick<TrainConfig, 'klCoef' | 'policyUpdatesPerBatch' | 'entropyCoef' | 'algorithm' | 'reward'>>

const isSft = (r: StepMetrics): boolean => r.stage === 'warm-start' || r.stage === 'sft'

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined)
const field = (key: string) => (r: StepMetrics) => num(r[key])
/** Whether a recorded series is zero at every step where it is recorded (a metric of a switched-off term). */
const allZero = (records: StepMetrics[], key: string): boolean => records.every((r) => num(r[key]) === undefined || num(r[key]) === 0)

export const REPORT_CHARTS: ChartSpec[] = [
  {
    id: 'reward',
    title: 'Reward (mean, band = ±1 std)',
    series: [{ label: 'reward mean', get: field('rewardMean') }],
    band: (r) => {
      const m = num(r.rewardMean)
      const s = num(r.rewardStd)
      return m !== undefined && s !== undefined ? [m - s, m + s] : undefined
    },
    smooth: true
  },
  { id: 'reward-std', title: 'Reward std', series: [{ label: 'reward std', get: field('rewardStd') }], smooth: true },
  { id: 'format-rate', title: 'Format rate (rollouts)', series: [{ label: 'format rate', get: field('formatRate') }], smooth: true },
  {
    id: 'es-star',
    title: 'ES* and exact match (rollouts)',
    series: [
      { label: 'ES*', get: field('esStar') },
      { label: 'exact match', get: field('exactMatch') }
    ],
    smooth: true
  },
  {
    id: 'kl',
    title: 'KL to the reference policy',
    series: [{ label: 'KL', get: field('kl') }],
    smooth: true,
    off: (c, rs) =>
      c.klCoef === 0
        ? 'off: klCoef is 0, so the loss has no KL term and no reference log-probabilities are computed'
        : allZero(rs, 'kl')
          ? '0 at every step'
          : undefined
  },
  {
    id: 'clip-fraction',
    title: 'Clip fraction',
    series: [
      { label: 'clipped', get: field('clipFraction') },
      { label: 'low', get: field('clipFractionLow') },
      { label: 'high', get: field('clipFractionHigh') }
    ],
    smooth: true,
    off: (c, rs) =>
      !['clipFraction', 'clipFractionLow', 'clipFractionHigh'].every((k) => allZero(rs, k))
        ? undefined
        : c.policyUpdatesPerBatch === 1
          ? 'off: one policy update per batch (policyUpdatesPerBatch 1), so the probability ratio is exactly 1 and nothing is clipped'
          : '0 at every step'
  },
  { id: 'entropy', title: 'Entropy of the rollouts (nats / token)', series: [{ label: 'entropy', get: field('entropy') }], smooth: true },
  { id: 'response-length', title: 'Response length (tokens)', series: [{ label: 'length', get: field('responseLength') }], smooth: true },
  {
    id: 'sft-loss',
    title: 'SFT loss (warm start: mean NLL per target token)',
    series: [{ label: 'SFT loss', get: (r) => (isSft(r) ? num(r.loss) : undefined) }],
    smooth: true
  },
  {
    id: 'loss',
    title: 'Policy loss',
    series: [{ label: 'loss', get: (r) => (isSft(r) ? undefined : num(r.loss)) }],
    smooth: true
  },
  { id: 'grad-norm', title: 'Gradient norm (before clipping)', series: [{ label: 'grad norm', get: field('gradNorm') }], smooth: true },
  { id: 'lr', title: 'Learning rate', series: [{ label: 'lr', get: field('lr') }] },
  {
    id: 'tokens-per-second',
    title: 'Throughput (tokens / s)',
    series: [{ label: 'tokens/s', get: field('tokensPerSecond') }],
    smooth: true
  },
  {
    id: 'held-out',
    title: 'Held-out evaluation',
    series: [
      { label: 'format rate', get: (r) => num(r.eval?.formatRate) },
      { label: 'ES*', get: (r) => num(r.eval?.esStar) },
      { label: 'exact match', get: (r) => num(r.eval?.exactMatch) }
    ]
  }
]

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e']
/** Series shorter than this are drawn raw only (an average of a handful of points hides more than it shows). */
const SMOOTH_MIN_POINTS = 8

/**
 * Exponential moving average with a span of about a tenth of the series (2..50 points), debiased at the start as
 * TensorBoard's smoothing is, so the first points are not pulled towards 0.
 */
export function emaSmooth(ys: readonly number[]): number[] {
  const span = Math.min(50, Math.max(2, Math.round(ys.length / 10)))
  const alpha = 2 / (span + 1)
  const out: number[] = []
  let acc = 0
  let weight = 0
  for (const y of ys) {
    acc = (1 - alpha) * acc + alpha * y
    weight = (1 - alpha) * weight + alpha
    out.push(acc / weight)
  }
  return out
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string)
}

/** Round numbers for axis ticks: about `count` ticks covering [lo, hi]. */
function ticks(lo: number, hi: number, count = 5): number[] {
  if (lo === hi) return [lo]
  const raw = (hi - lo) / count
  const mag = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag
  const out: number[] = []
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v)
  return out
}

function fmt(v: number): string {
  if (v === 0) return '0'
  const a = Math.abs(v)
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1)
  return String(Number(v.toPrecision(3)))
}

/** One chart as inline SVG, or '' when no record has a value for it. */
export function renderChart(spec: ChartSpec, records: StepMetrics[], marks: ReadonlyArray<{ step: number; label: string }> = []): string {
  const W = 560
  const H = 240
  const m = { left: 60, right: 16, top: 12, bottom: 40 }
  const points = spec.series.map((s) =>
    records.map((r) => [r.step, s.get(r)] as const).filter((p): p is readonly [number, number] => p[1] !== undefined)
  )
  const bands = spec.band
    ? records.map((r) => [r.step, spec.band!(r)] as const).filter((p): p is readonly [number, [number, number]] => p[1] !== undefined)
    : []
  const all = points.flat()
  if (all.length === 0) return ''
  const xs = all.map((p) => p[0])
  const ys = [...all.map((p) => p[1]), ...bands.flatMap((b) => b[1])]
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)]
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)]
  if (x0 === x1) {
    x0 -= 1
    x1 += 1
  }
  if (y0 === y1) {
    const d = Math.abs(y0) * 0.1 || 1
    y0 -= d
    y1 += d
  }
  const pad = (y1 - y0) * 0.05
  y0 -= pad
  y1 += pad
  const px = (x: number): number => m.left + ((x - x0) / (x1 - x0)) * (W - m.left - m.right)
  const py = (y: number): number => H - m.bottom - ((y - y0) / (y1 - y0)) * (H - m.top - m.bottom)
  const parts: string[] = []
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${escapeHtml(spec.title)}" data-chart="${spec.id}">`
  )
  parts.push(`<title>${escapeHtml(spec.title)}</title>`)
  parts.push(
    `<rect x="${m.left}" y="${m.top}" width="${W - m.left - m.right}" height="${H - m.top - m.bottom}" fill="#fff" stroke="#ccc"/>`
  )
  for (const t of ticks(y0, y1)) {
    const y = py(t).toFixed(1)
    parts.push(
      `<line x1="${m.left}" x2="${W - m.right}" y1="${y}" y2="${y}" stroke="#eee"/><text x="${m.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle" class="tick">${fmt(t)}</text>`
    )
  }
  for (const t of ticks(x0, x1).filter((v) => Number.isInteger(v))) {
    const x = px(t).toFixed(1)
    parts.push(
      `<line x1="${x}" x2="${x}" y1="${H - m.bottom}" y2="${H - m.bottom + 4}" stroke="#888"/><text x="${x}" y="${H - m.bottom + 16}" text-anchor="middle" class="tick">${t}</text>`
    )
  }
  parts.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 6}" text-anchor="middle" class="axis">step</text>`)
  // Phase boundaries (the end of the warm start) as dashed verticals, where they fall inside the chart.
  for (const mark of marks) {
    if (mark.step <= x0 || mark.step >= x1) continue
    const x = px(mark.step).toFixed(1)
    parts.push(
      `<line x1="${x}" x2="${x}" y1="${m.top}" y2="${H - m.bottom}" stroke="#999" stroke-dasharray="4 3" class="mark"/><text x="${x}" y="${H - m.bottom - 4}" text-anchor="start" dx="3" class="tick">${escapeHtml(mark.label)}</text>`
    )
  }
  if (bands.length > 1) {
    const upper = bands.map((b) => `${px(b[0]).toFixed(1)},${py(b[1][1]).toFixed(1)}`)
    const lower = bands
      .slice()
      .reverse()
      .map((b) => `${px(b[0]).toFixed(1)},${py(b[1][0]).toFixed(1)}`)
    parts.push(`<polygon points="${[...upper, ...lower].join(' ')}" fill="${COLORS[0]}" fill-opacity="0.15" stroke="none" class="band"/>`)
  }
  let smoothed = false
  points.forEach((pts, i) => {
    if (pts.length === 0) return
    const color = COLORS[i % COLORS.length]
    const coords = (ps: ReadonlyArray<readonly [number, number]>): string =>
      ps.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(' ')
    const series = `data-series="${escapeHtml(spec.series[i].label)}"`
    if (pts.length === 1) parts.push(`<circle cx="${px(pts[0][0]).toFixed(1)}" cy="${py(pts[0][1]).toFixed(1)}" r="3" fill="${color}"/>`)
    else if (spec.smooth === true && pts.length >= SMOOTH_MIN_POINTS) {
      smoothed = true
      const ema = emaSmooth(pts.map((p) => p[1]))
      parts.push(`<polyline points="${coords(pts)}" fill="none" stroke="${color}" stroke-width="1" stroke-opacity="0.25" class="raw"/>`)
      parts.push(
        `<polyline points="${coords(pts.map((p, k) => [p[0], ema[k]] as const))}" fill="none" stroke="${color}" stroke-width="1.75" class="smoothed" ${series}/>`
      )
    } else parts.push(`<polyline points="${coords(pts)}" fill="none" stroke="${color}" stroke-width="1.5" ${series}/>`)
    if (spec.markers === true && pts.length > 1)
      for (const p of pts)
        parts.push(
          `<circle cx="${px(p[0]).toFixed(1)}" cy="${py(p[1]).toFixed(1)}" r="3" fill="${color}" class="marker"><title>step ${p[0]}: ${fmt(p[1])}</title></circle>`
        )
  })
  if (spec.unit !== undefined)
    parts.push(
      `<text x="12" y="${(m.top + H - m.bottom) / 2}" text-anchor="middle" class="axis" transform="rotate(-90 12 ${(m.top + H - m.bottom) / 2})">${escapeHtml(spec.unit)}</text>`
    )
  const legend = spec.series.map((s, i) => ({ s, i })).filter(({ i }) => points[i].length > 0)
  const legendStep = Math.max(70, Math.floor((W - m.left - m.right - 16) / Math.max(1, legend.length)))
  legend.forEach(({ s, i }, k) => {
    const x = m.left + 8 + k * legendStep
    parts.push(
      `<rect x="${x}" y="${m.top + 6}" width="10" height="10" fill="${COLORS[i % COLORS.length]}"/><text x="${x + 14}" y="${m.top + 15}" class="legend">${escapeHtml(s.label)}</text>`
    )
  })
  parts.push('</svg>')
  const note = smoothed ? ' <span class="note">(moving average; raw values faint)</span>' : ''
  return `<figure id="${spec.id}"><figcaption>${escapeHtml(spec.title)}${note}</figcaption>${parts.join('')}</figure>`
}

export interface ReportOptions {
  title?: string
  /** Extra key/value facts shown above the charts (configuration, before/after summary, run folder). */
  facts?: Record<string, string | number | boolean>
  /** The run's configuration: which series are off (KL at klCoef 0, clipping with one update per batch, ...). */
  config?: ReportConfig
  /** The run's held-out evaluations (before, periodic, after): plotted a point per evaluation. */
  evaluations?: EvaluationPoint[]
  /** Held-out scores for the before / after table. */
  scores?: Partial<Record<'oldCode' | 'before' | 'afterWarmStart' | 'after', Pick<HeldOutScores, 'formatRate' | 'esStar' | 'exactMatch'>>>
  /** Held-out tasks with the models' answers, shown side by side. */
  examples?: HeldOutExample[]
}

const MODEL_COLUMNS = [
  ['before', 'base model'],
  ['afterWarmStart', 'after the SFT warm start'],
  ['after', 'after training']
] as const
// the scores table opens with the reference: what answering with the old code unchanged scores (ES* is read against it)
const SCORE_COLUMNS = [['oldCode', 'old code unchanged'], ...MODEL_COLUMNS] as const

function scoresTable(scores: NonNullable<ReportOptions['scores']>, algorithm: string | undefined): string {
  const cols = SCORE_COLUMNS.filter(([k]) => scores[k] !== undefined)
  if (cols.length === 0) return ''
  const title = (k: (typeof SCORE_COLUMNS)[number][0], t: string): string =>
    k === 'after' && algorithm !== undefined ? `after ${algorithm === 'sft' ? 'SFT' : `${algorithm.toUpperCase()}`}` : t
  const pct = (v: number): string => `${(v * 100).toFixed(1)}%`
  const rows: Array<[string, (s: Pick<HeldOutScores, 'formatRate' | 'esStar' | 'exactMatch'>) => string]> = [
    ['format rate', (s) => pct(s.formatRate)],
    ['ES* (−2 … 2)', (s) => s.esStar.toFixed(3)],
    ['exact match', (s) => pct(s.exactMatch)]
  ]
  const head = `<tr><th>held-out (greedy)</th>${cols.map(([k, t]) => `<th>${escapeHtml(title(k, t))}</th>`).join('')}</tr>`
  const body = rows
    .map(([name, f]) => `<tr><th>${escapeHtml(name)}</th>${cols.map(([k]) => `<td>${escapeHtml(f(scores[k]!))}</td>`).join('')}</tr>`)
    .join('')
  return `<table class="scores" id="scores">${head}${body}</table>`
}

function examplesSection(examples: HeldOutExample[]): string {
  if (examples.length === 0) return ''
  const kinds = MODEL_COLUMNS.filter(([k]) => examples.some((e) => e.answers[k] !== undefined))
  const pre = (text: string): string => `<pre>${escapeHtml(text)}</pre>`
  const head = `<tr><th>old code</th><th>update note</th><th>target</th>${kinds.map(([, t]) => `<th>answer ${escapeHtml(t)}</th>`).join('')}</tr>`
  const rows = examples.map((e) => {
    const answers = kinds.map(([k]) => {
      const a = e.answers[k]
      return a === undefined
        ? '<td></td>'
        : `<td class="${a.exact ? 'exact' : ''}"><div class="badge">${escapeHtml(answerBadge(a))}</div>${pre(`<think>${a.completion}`)}</td>`
    })
    return `<tr><td><div class="badge">task ${e.task + 1} · ${escapeHtml(e.dependency)}</div>${pre(e.oldCode)}</td><td>${pre(e.updateInfo)}</td><td>${pre(e.target)}</td>${answers.join('')}</tr>`
  })
  return `<h2>Held-out tasks side by side</h2><table class="examples" id="examples">${head}${rows.join('')}</table>`
}

export function renderReport(records: StepMetrics[], options: ReportOptions = {}): string {
  options = optionsArg(options, 'renderReport')
  if (!Array.isArray(records)) throw new RecodeError('ERR_INVALID_ARG', 'renderReport: records must be an array of step metrics')
  const title = options.title ?? 'recode training report'
  const config: ReportConfig = options.config ?? {}
  const sorted = [...records].sort((a, b) => a.step - b.step)
  // Time per phase: one series per phase name found in the records.
  const phases = [...new Set(sorted.flatMap((r) => Object.keys(r.phaseSeconds ?? {})))]
  const phaseChart: ChartSpec = {
    id: 'phase-seconds',
    title: 'Seconds per phase',
    series: phases.map((name) => ({ label: name, get: (r: StepMetrics) => num(r.phaseSeconds?.[name]) }))
  }
  // The held-out evaluations of the run, a point each (before at step 0, after at the last step), when given;
  // else those recorded in the metrics.
  const evaluations = options.evaluations ?? []
  const evalRecords: StepMetrics[] = evaluations.map((e) => ({
    step: e.step,
    formatRate: e.formatRate,
    esStar: e.esStar,
    exactMatch: e.exactMatch
  }))
  const evalCharts: ChartSpec[] = [
    {
      id: 'held-out-rates',
      title: 'Held-out format rate and exact match (greedy, each evaluation)',
      series: [
        { label: 'format rate', get: field('formatRate') },
        { label: 'exact match', get: field('exactMatch') }
      ],
      markers: true
    },
    {
      id: 'held-out-es-star',
      title: 'Held-out ES* (greedy, each evaluation)',
      series: [{ label: 'ES*', get: field('esStar') }],
      markers: true
    }
  ]
  // The RL phase starts after the last warm-start step: marked on the charts that span both.
  const lastWarm = sorted.filter((r) => r.stage === 'warm-start').at(-1)?.step
  const marks = lastWarm !== undefined && sorted.some((r) => r.step > lastWarm) ? [{ step: lastWarm, label: 'RL starts' }] : []
  const heldOutCharts = evalRecords.length > 0 ? evalCharts.map((c) => renderChart(c, evalRecords, marks)).filter((x) => x !== '') : []
  const offNotes: string[] = []
  const charts: string[] = []
  for (const c of [...REPORT_CHARTS, phaseChart]) {
    if (c.id === 'held-out' && heldOutCharts.length > 0) continue
    const html = renderChart(c, sorted, marks)
    if (html === '') continue
    const off = c.off?.(config, sorted)
    if (off !== undefined) {
      // A switched-off term would be a flat line: said in words in its place.
      charts.push(
        `<figure id="${c.id}" class="off" data-off="${c.id}"><figcaption>${escapeHtml(c.title)}</figcaption><p>${escapeHtml(off)}</p></figure>`
      )
      offNotes.push(`${c.title}: ${off}`)
    } else charts.push(html)
  }
  if (config.entropyCoef === 0 && config.algorithm !== 'sft')
    offNotes.push("Entropy bonus: off (entropyCoef 0); the entropy chart is the rollouts' measured entropy")
  const facts = Object.entries(options.facts ?? {})
    .map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(String(v))}</td></tr>`)
    .join('')
  const last = sorted[sorted.length - 1]
  const table = options.scores !== undefined ? scoresTable(options.scores, config.algorithm) : ''
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px} h2{font-size:16px;margin-top:24px} table{border-collapse:collapse;margin-bottom:16px} th,td{text-align:left;padding:2px 10px;border-bottom:1px solid #ddd;font-size:13px;vertical-align:top}
table.scores td{font-variant-numeric:tabular-nums;text-align:right} table.scores{font-size:15px}
.charts{display:flex;flex-wrap:wrap;gap:16px} figure{margin:0;background:#fff;border:1px solid #ddd;padding:8px}
figure.off{width:544px;color:#666} figure.off p{font-size:13px}
figcaption{font-size:14px;font-weight:600;margin-bottom:4px} .note{font-weight:400;color:#777;font-size:12px} .tick{font-size:10px;fill:#555} .axis{font-size:11px;fill:#333} .legend{font-size:11px;fill:#333}
table.examples pre{margin:0;font-size:11px;white-space:pre-wrap;max-width:340px} .badge{font-size:11px;color:#555;margin-bottom:2px} td.exact{background:#eefbe9}
</style></head>
<body><h1>${escapeHtml(title)}</h1>
<p>${sorted.length} steps recorded${last ? `, last step ${last.step}` : ''}.</p>
${table}
${facts ? `<table>${facts}</table>` : ''}
${heldOutCharts.length > 0 ? `<h2>Held-out scores over the run</h2><div class="charts">${heldOutCharts.join('\n')}</div>` : ''}
${offNotes.length > 0 ? `<h2>Switched off in this run</h2><ul class="off">${offNotes.map((n) => `<li>${escapeHtml(n)}</li>`).join('')}</ul>` : ''}
<h2>Training</h2>
<div class="charts">${charts.join('\n')}</div>
${examplesSection(options.examples ?? [])}
</body></html>
`
}

/** Renders and writes the report atomically. */
export function writeReport(file: string, records: StepMetrics[], options: ReportOptions = {}): void {
  writeFileAtomic(file, renderReport(records, options))
}
