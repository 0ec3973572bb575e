// `recode train`'s console output: on a terminal one progress line redrawn in place, with checkpoint / eval / log
// messages printed above it (never on it, and no stale progress line left behind); elsewhere plain lines.
import t from 'tap'
import { require } from './helpers.mjs'

const { progressPrinter } = require('../dist/cjs/commands/progress.js')

/** What a terminal shows after the writes: \r to column 0, ESC[K clears to the end of the line, \n a new line. */
function screen(writes) {
  const lines = ['']
  let col = 0
  const text = writes.join('')
  for (let i = 0; i < text.length; i++) {
    const row = lines.length - 1
    if (text.startsWith('\x1b[K', i)) {
      lines[row] = lines[row].slice(0, col)
      i += 2
    } else if (text[i] === '\r') col = 0
    else if (text[i] === '\n') {
      lines.push('')
      col = 0
    } else {
      lines[row] = lines[row].slice(0, col) + text[i] + lines[row].slice(col + 1)
      col++
    }
  }
  return lines
}

const scores = { formatRate: 0.5, esStar: -0.25, exactMatch: 0.125, reward: 0, completions: 8 }
const step = (n) => ({ type: 'step', stage: 'grpo', step: n, totalSteps: 4, metrics: { step: n, rewardMean: 0.5 } })
const events = [
  { type: 'eval', label: 'before', step: 0, scores },
  { type: 'progress', what: 'generating', done: 1, total: 8 },
  step(1),
  { type: 'progress', what: 'generating', done: 8, total: 8 },
  step(2),
  { type: 'checkpoint', step: 2, dir: '/run/checkpoints/step-2' },
  { type: 'eval', label: 'periodic', step: 2, scores },
  step(3),
  { type: 'log', message: 'a log line' },
  step(4)
]

t.test('on a terminal, messages go above one progress line that is redrawn after them', async (t) => {
  const writes = []
  const sink = { isTTY: true, write: (s) => writes.push(s) }
  let clock = 0
  const p = progressPrinter({ out: sink, err: sink, now: () => (clock += 1000) })
  for (const e of events) p.onEvent(e)
  p.finish()
  const shown = screen(writes)
  t.same(
    shown,
    [
      'held-out before training: format rate 50.0%   ES* -0.250   exact match 12.5%',
      'checkpoint: /run/checkpoints/step-2',
      'held-out at step 2: format rate 50.0%   ES* -0.250   exact match 12.5%',
      'a log line',
      'grpo step 4/4 [########################]  reward 0.500',
      ''
    ],
    'every message on its own line, one progress line at the end'
  )
  const lastCheckpoint = writes.findIndex((w) => w.startsWith('checkpoint:'))
  t.equal(writes[lastCheckpoint - 1], '\r\x1b[K', 'the progress line is cleared before a message')
  t.match(writes[lastCheckpoint + 1], /^grpo step 2\/4/, 'and drawn again after it')
})

t.test('elsewhere, everything is a plain line', async (t) => {
  const writes = []
  const sink = { isTTY: false, write: (s) => writes.push(s) }
  let clock = 0
  const p = progressPrinter({ out: sink, err: sink, now: () => (clock += 10_000) })
  for (const e of events) p.onEvent(e)
  p.finish()
  t.notOk(writes.join('').includes('\r'), 'no carriage returns')
  t.notOk(writes.join('').includes('\x1b'), 'no escape sequences')
  t.ok(
    writes.every((w) => w.endsWith('\n')),
    'whole lines only'
  )
  t.ok(writes.includes('checkpoint: /run/checkpoints/step-2\n'), 'the checkpoint is said')
  t.equal(writes.filter((w) => w.startsWith('grpo step')).length, 4, 'a line per step (the clock allows each)')
  t.notOk(
    writes.some((w) => w.startsWith('generating')),
    'within-phase progress stays off a log'
  )
})

t.test('a message before any progress line is a plain line on a terminal too', async (t) => {
  const writes = []
  const sink = { isTTY: true, write: (s) => writes.push(s) }
  const p = progressPrinter({ out: sink, err: sink, now: () => 0 })
  p.message('first')
  p.finish()
  t.same(writes, ['first\n'])
})
