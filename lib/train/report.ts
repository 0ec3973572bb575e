/**
 * The run's report page: one self-contained HTML file (inline CSS and SVG, no scripts or external assets) with
 * a line chart per metric over steps (reward mean with a +-std band, reward std, format rate, ES*, KL, clip
 * fractions, entropy, response length, and loss, gradient norm, learning rate, throughput and held-out
 * evaluation when recorded). Written atomically, so a viewer never sees half a page.
 */
import { writeFileAtomic } from '../atomicFile'
import { RecodeError, optionsArg } from '../errors'
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
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined)
const field = (key: string) => (r: StepMetrics) => num(r[key])

export const REPORT_CHARTS: ChartSpec[] = [
  {
    id: 'reward',
    title: 'Reward (mean, band = ±1 std)',
    series: [{ label: 'reward mean', get: field('rewardMean') }],
    band: (r) => {
      const m = num(r.rewardMean)
      const s = num(r.rewardStd)
      return m !== undefined && s !== undefined ? [m - s, m + s] : undefined
    }
  },
  { id: 'reward-std', title: 'Reward std', series: [{ label: 'reward std', get: field('rewardStd') }] },
  { id: 'format-rate', title: 'Format rate', series: [{ label: 'format rate', get: field('formatRate') }] },
  {
    id: 'es-star',
    title: 'ES*',
    series: [
      { label: 'ES*', get: field('esStar') },
      { label: 'exact match', get: field('exactMatch') }
    ]
  },
  { id: 'kl', title: 'KL to the reference policy', series: [{ label: 'KL', get: field('kl') }] },
  {
    id: 'clip-fraction',
    title: 'Clip fraction',
    series: [
      { label: 'clipped', get: field('clipFraction') },
      { label: 'low', get: field('clipFractionLow') },
      { label: 'high', get: field('clipFractionHigh') }
    ]
  },
  { id: 'entropy', title: 'Entropy (nats / token)', series: [{ label: 'entropy', get: field('entropy') }] },
  { id: 'response-length', title: 'Response length (tokens)', series: [{ label: 'length', get: field('responseLength') }] },
  { id: 'loss', title: 'Loss', series: [{ label: 'loss', get: field('loss') }] },
  { id: 'grad-norm', title: 'Gradient norm (before clipping)', series: [{ label: 'grad norm', get: field('gradNorm') }] },
  { id: 'lr', title: 'Learning rate', series: [{ label: 'lr', get: field('lr') }] },
  { id: 'tokens-per-second', title: 'Throughput (tokens / s)', series: [{ label: 'tokens/s', get: field('tokensPerSecond') }] },
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
export function renderChart(spec: ChartSpec, records: StepMetrics[]): string {
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
  if (bands.length > 1) {
    const upper = bands.map((b) => `${px(b[0]).toFixed(1)},${py(b[1][1]).toFixed(1)}`)
    const lower = bands
      .slice()
      .reverse()
      .map((b) => `${px(b[0]).toFixed(1)},${py(b[1][0]).toFixed(1)}`)
    parts.push(`<polygon points="${[...upper, ...lower].join(' ')}" fill="${COLORS[0]}" fill-opacity="0.15" stroke="none" class="band"/>`)
  }
  points.forEach((pts, i) => {
    if (pts.length === 0) return
    const color = COLORS[i % COLORS.length]
    const coords = pts.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(' ')
    if (pts.length === 1) parts.push(`<circle cx="${px(pts[0][0]).toFixed(1)}" cy="${py(pts[0][1]).toFixed(1)}" r="3" fill="${color}"/>`)
    else
      parts.push(
        `<polyline points="${coords}" fill="none" stroke="${color}" stroke-width="1.5" data-series="${escapeHtml(spec.series[i].label)}"/>`
      )
  })
  const legend = spec.series.map((s, i) => ({ s, i })).filter(({ i }) => points[i].length > 0)
  const legendStep = Math.max(70, Math.floor((W - m.left - m.right - 16) / Math.max(1, legend.length)))
  legend.forEach(({ s, i }, k) => {
    const x = m.left + 8 + k * legendStep
    parts.push(
      `<rect x="${x}" y="${m.top + 6}" width="10" height="10" fill="${COLORS[i % COLORS.length]}"/><text x="${x + 14}" y="${m.top + 15}" class="legend">${escapeHtml(s.label)}</text>`
    )
  })
  parts.push('</svg>')
  return `<figure id="${spec.id}"><figcaption>${escapeHtml(spec.title)}</figcaption>${parts.join('')}</figure>`
}

export interface ReportOptions {
  title?: string
  /** Extra key/value facts shown above the charts (configuration, before/after summary, run folder). */
  facts?: Record<string, string | number | boolean>
}

export function renderReport(records: StepMetrics[], options: ReportOptions = {}): string {
  options = optionsArg(options, 'renderReport')
  if (!Array.isArray(records)) throw new RecodeError('ERR_INVALID_ARG', 'renderReport: records must be an array of step metrics')
  const title = options.title ?? 'recode training report'
  const sorted = [...records].sort((a, b) => a.step - b.step)
  // Time per phase: one series per phase name found in the records.
  const phases = [...new Set(sorted.flatMap((r) => Object.keys(r.phaseSeconds ?? {})))]
  const phaseChart: ChartSpec = {
    id: 'phase-seconds',
    title: 'Seconds per phase',
    series: phases.map((name) => ({ label: name, get: (r: StepMetrics) => num(r.phaseSeconds?.[name]) }))
  }
  const charts = [...REPORT_CHARTS, phaseChart].map((c) => renderChart(c, sorted)).filter((s) => s !== '')
  const facts = Object.entries(options.facts ?? {})
    .map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(String(v))}</td></tr>`)
    .join('')
  const last = sorted[sorted.length - 1]
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px} table{border-collapse:collapse;margin-bottom:16px} th,td{text-align:left;padding:2px 10px;border-bottom:1px solid #ddd;font-size:13px}
.charts{display:flex;flex-wrap:wrap;gap:16px} figure{margin:0;background:#fff;border:1px solid #ddd;padding:8px}
figcaption{font-size:14px;font-weight:600;margin-bottom:4px} .tick{font-size:10px;fill:#555} .axis{font-size:11px;fill:#333} .legend{font-size:11px;fill:#333}
</style></head>
<body><h1>${escapeHtml(title)}</h1>
<p>${sorted.length} steps recorded${last ? `, last step ${last.step}` : ''}.</p>
${facts ? `<table>${facts}</table>` : ''}
<div class="charts">${charts.join('\n')}</div>
</body></html>
`
}

/** Renders and writes the report atomically. */
export function writeReport(file: string, records: StepMetrics[], options: ReportOptions = {}): void {
  writeFileAtomic(file, renderReport(records, options))
}
