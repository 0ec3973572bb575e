// Edit distance throughput in GCUPS = sum(|a_i| |b_i|) / (seconds * 1e9), the full DP grid counted even
// though the bit-parallel code computes 64 cells per word operation and skips common prefixes/suffixes.
// Pairs of 0.2-4 KB code strings are cut from the ReCode data (old_code / new_code of consecutive rows,
// concatenated): batches of 1, 64 and 4,096 pairs, on one thread and on all, beside fastest-levenshtein
// (npm; Myers over UTF-16 units, single-threaded JavaScript) and a plain JavaScript DP loop in this process.
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { timeAsync, timeSync, require, shared } from './lib.mjs'

const recode = require('../dist/cjs/index.js')
const { distance: fastestLevenshtein } = require('fastest-levenshtein')

function dataFile() {
  const candidates = [shared, path.join(shared, '..', '..', 'shared')].map((d) => path.join(d, 'data', 'recode', 'api_update.jsonl'))
  const file = candidates.find((f) => fs.existsSync(f))
  if (!file) throw new Error(`editdist bench: api_update.jsonl not found (looked in ${candidates.join(', ')})`)
  return file
}

// Deterministic pairs: a = old code of consecutive rows joined, b = their new code, cut to [200, 4000]
// code points (a and b with independent lengths). Like a completion vs its target: related, not equal.
function makePairs(count, fixedLength) {
  const rows = fs
    .readFileSync(dataFile(), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((r) => typeof r.old_code === 'string' && typeof r.new_code === 'string')
  let seed = 0x9e3779b9 + count
  const rand = () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0
    return seed / 2 ** 32
  }
  const length = () => fixedLength ?? 200 + Math.floor(rand() * 3801)
  const a = [],
    b = []
  for (let i = 0; i < count; i++) {
    let row = Math.floor(rand() * rows.length)
    const la = length(),
      lb = length()
    let sa = '',
      sb = ''
    while ([...sa].length < la || [...sb].length < lb) {
      sa += rows[row].old_code + '\n\n'
      sb += rows[row].new_code + '\n\n'
      row = (row + 1) % rows.length
    }
    a.push([...sa].slice(0, la).join(''))
    b.push([...sb].slice(0, lb).join(''))
  }
  return { a, b }
}

// Near copies, as a completion close to its target: b is a with about `rate` of its characters edited.
function makeNearCopies(count, length, rate) {
  const { a } = makePairs(count, length)
  let seed = 12345
  const rand = () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0
    return seed / 2 ** 32
  }
  const b = a.map((s) => {
    const cps = [...s]
    for (let e = Math.round(cps.length * rate); e > 0; e--) {
      const at = Math.floor(rand() * cps.length),
        op = rand()
      if (op < 1 / 3) cps.splice(at, 0, 'x')
      else if (op < 2 / 3) cps.splice(at, 1)
      else cps[at] = 'y'
    }
    return cps.join('')
  })
  return { a, b }
}

function cellsOf({ a, b }) {
  let cells = 0
  for (let i = 0; i < a.length; i++) cells += recode.codePointLength(a[i]) * recode.codePointLength(b[i])
  return cells
}

// The plain dynamic programme in JavaScript (two rows, code points).
function dpDistance(s1, s2) {
  const a = Array.from(s1, (c) => c.codePointAt(0)),
    b = Array.from(s2, (c) => c.codePointAt(0))
  let prev = new Int32Array(b.length + 1),
    cur = new Int32Array(b.length + 1)
  for (let j = 0; j <= b.length; j++) prev[j] = j
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i
    const ai = a[i - 1]
    for (let j = 1; j <= b.length; j++) {
      const sub = prev[j - 1] + (ai === b[j - 1] ? 0 : 1)
      const del = prev[j] + 1,
        ins = cur[j - 1] + 1
      cur[j] = Math.min(sub, del, ins)
    }
    const t = prev
    prev = cur
    cur = t
  }
  return prev[b.length]
}

// Cells per second of CPU time (all threads of this process), for a machine shared with other jobs where
// wall-clock medians understate the code's speed. Runs fn for about `seconds` of wall time.
async function cpuTimeGcups(fn, cells, seconds = 1.5) {
  await fn()
  const start = process.cpuUsage(),
    wall = Date.now()
  let reps = 0
  while (reps < 2 || Date.now() - wall < seconds * 1000) {
    await fn()
    reps++
  }
  const used = process.cpuUsage(start)
  return +((cells * reps) / ((used.user + used.system) / 1e6) / 1e9).toFixed(3)
}

export default async function () {
  const cores = os.cpus().length
  const sets = [
    { label: '1 pair (2 KB)', pairs: makePairs(1, 2000) },
    { label: '64 pairs (0.2-4 KB)', pairs: makePairs(64) },
    { label: '4096 pairs (0.2-4 KB)', pairs: makePairs(4096) },
    { label: '1024 near copies (1.5 KB, 5% edited)', pairs: makeNearCopies(1024, 1500, 0.05) }
  ]
  const results = []
  const lines = []
  for (const { label, pairs } of sets) {
    const n = pairs.a.length
    const cells = cellsOf(pairs)
    const gcups = (seconds, c = cells) => +(c / seconds / 1e9).toFixed(3)
    const want = recode.editDistanceSync(pairs.a, pairs.b, { device: 'cpu' })
    const row = { set: label, pairs: n, cells }

    recode.setNumThreads(1)
    const run = () => recode.editDistance(pairs.a, pairs.b, { device: 'cpu' })
    row.single = gcups(await timeAsync(`recode 1 thread ${label}`, run))
    row.singleCpuTime = await cpuTimeGcups(run, cells)
    if (n === 1)
      row.singleSync = gcups(timeSync(`recode sync ${label}`, () => recode.editDistanceSync(pairs.a, pairs.b, { device: 'cpu' })))
    recode.setSimdLevel('baseline')
    row.singleBaseline = gcups(
      await timeAsync(`recode 1 thread baseline ${label}`, () => recode.editDistance(pairs.a, pairs.b, { device: 'cpu' }))
    )
    recode.setSimdLevel('auto')
    recode.setNumThreads(cores)
    row.threads = cores
    row.multi = gcups(await timeAsync(`recode ${cores} threads ${label}`, run))
    row.multiPerCore = +(row.multi / cores).toFixed(3)
    row.multiPerCoreCpuTime = await cpuTimeGcups(run, cells)

    // fastest-levenshtein counts UTF-16 units; the check below shows whether that changed any distance here.
    // fastest-levenshtein runs on (at most) the first 256 pairs: its rate per cell, not the whole batch.
    const flPairs = Math.min(n, 256)
    const flCells = cellsOf({ a: pairs.a.slice(0, flPairs), b: pairs.b.slice(0, flPairs) })
    const fl = timeSync(
      `fastest-levenshtein ${label}`,
      () => {
        for (let i = 0; i < flPairs; i++) fastestLevenshtein(pairs.a[i], pairs.b[i])
      },
      { minSamples: 3, maxTime: 1 }
    )
    row.fastestLevenshtein = gcups(fl, flCells)
    row.fastestLevenshteinPairs = flPairs
    let flDiffers = 0
    for (let i = 0; i < flPairs; i++) if (fastestLevenshtein(pairs.a[i], pairs.b[i]) !== want[i]) flDiffers++
    row.fastestLevenshteinMismatches = flDiffers

    // The JS DP loop is ~100x slower: it runs on (at most) the first 4 pairs of the set.
    const sub = Math.min(n, 4)
    const subCells = cellsOf({ a: pairs.a.slice(0, sub), b: pairs.b.slice(0, sub) })
    for (let i = 0; i < sub; i++) if (dpDistance(pairs.a[i], pairs.b[i]) !== want[i]) throw new Error(`DP loop disagrees on pair ${i}`)
    row.jsDp = gcups(
      timeSync(
        `JS DP ${label}`,
        () => {
          for (let i = 0; i < sub; i++) dpDistance(pairs.a[i], pairs.b[i])
        },
        { minSamples: 2, maxTime: 0.5 }
      ),
      subCells
    )
    row.jsDpPairs = sub

    if (recode.cudaAvailable()) {
      row.cuda = gcups(await timeAsync(`recode cuda ${label}`, () => recode.editDistance(pairs.a, pairs.b, { device: 'cuda' })))
    }
    row.singleVsFastestLevenshtein = +(row.single / row.fastestLevenshtein).toFixed(2)
    row.multiVsFastestLevenshtein = +(row.multi / row.fastestLevenshtein).toFixed(2)
    row.multiVsJsDp = +(row.multi / row.jsDp).toFixed(1)
    results.push(row)
    lines.push(
      `${label.padEnd(37)} recode 1 thread ${row.single} GCUPS (per CPU-second ${row.singleCpuTime}; baseline SIMD ${row.singleBaseline}), ` +
        `${cores} threads ${row.multi} (${row.multiPerCore}/core); fastest-levenshtein ${row.fastestLevenshtein}, JS DP ${row.jsDp}; ` +
        `multi/fastest-levenshtein ${row.multiVsFastestLevenshtein}x, 1 thread/fastest-levenshtein ${row.singleVsFastestLevenshtein}x` +
        (row.cuda !== undefined ? `; cuda ${row.cuda}` : '')
    )
  }
  lines.push(
    `load average ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')} on ${cores} cores while measuring (wall-clock GCUPS suffer when other jobs share the machine)`
  )
  const info = recode.systemInfo()
  if (!info.cuda.available) lines.push(`cuda not measured: ${info.cuda.reason}`)
  return { name: 'editdist', loadAverage: os.loadavg(), results, summary: lines.join('\n') }
}
