// Edit distance kernels: the plain dynamic programme (here in JavaScript, and natively) is the reference;
// the CPU fast path at both SIMD levels, the CUDA kernel through the SIMT emulation, and the real GPU when
// one is usable must all agree with it exactly, on random and adversarial strings and on real code pairs.
import t from 'tap'
import * as fs from 'fs'
import * as path from 'path'
import { native } from '../dist/cjs/native.js'
import { editDistance, editDistanceSync, similarity, similarities, codePointLength, setSimdLevel } from '../dist/cjs/index.js'
import { rng, poison, backends, oddSizes, shared } from './helpers.mjs'

const addon = native()

// Textbook Levenshtein over code points ([...s] splits a string into code points, as Python indexes it).
function levenshtein(s1, s2) {
  const a = [...s1],
    b = [...s2]
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    prev = cur
  }
  return prev[b.length]
}

const alphabets = {
  binary: ['a', 'b'],
  dna: [...'ACGT'],
  code: [...'abcdefghijklmnopqrstuvwxyz_ABCDEFXYZ0123456789 ()[]{}.,:=+-*/\'"\n    '],
  unicode: [...'aé中😀🎉\u{10FFFF}\u{1F600}ßx\n'], // astral characters are one code point each
  wide: Array.from({ length: 3000 }, (_, i) => String.fromCodePoint(0x4e00 + i)) // more distinct symbols than a word has rows
}

function randomString(r, n, alphabet) {
  let s = ''
  for (let i = 0; i < n; i++) s += r.pick(alphabet)
  return s
}

// A copy of s with k random single-character edits (so distances are small and prefixes/suffixes shared).
function mutate(r, s, k, alphabet) {
  const cps = [...s]
  for (let e = 0; e < k; e++) {
    const at = r.int(0, cps.length)
    const op = r.int(0, 2)
    if (op === 0 || cps.length === 0) cps.splice(at, 0, r.pick(alphabet))
    else if (op === 1) cps.splice(Math.min(at, cps.length - 1), 1)
    else cps[Math.min(at, cps.length - 1)] = r.pick(alphabet)
  }
  return cps.join('')
}

// Random pairs over every alphabet at the odd sizes and the word-boundary sizes, half of them near copies.
function randomPairs(r, { maxLen = 5000, count = 1 } = {}) {
  const a = [],
    b = []
  const lengths = [
    ...oddSizes,
    0,
    2,
    63,
    64,
    65,
    127,
    128,
    129,
    255,
    256,
    257,
    320,
    448,
    512,
    513,
    2047,
    2048,
    2049,
    4096 + 65,
    5000
  ].filter((n) => n <= maxLen)
  for (const [name, alphabet] of Object.entries(alphabets)) {
    for (const n of lengths) {
      for (let c = 0; c < count; c++) {
        const s = randomString(r, n, alphabet)
        a.push(s)
        if ((n + c) % 2 === 0) b.push(mutate(r, s, r.int(0, 1 + (n >> 4)), alphabet))
        else b.push(randomString(r, r.pick(lengths), name === 'wide' ? alphabets.wide : alphabet))
      }
    }
  }
  return { a, b }
}

// Hand-picked cases: empty sides, identical strings, one character, word-boundary lengths, 5,000 code
// points, astral characters (one unit each), long common prefixes and suffixes.
function adversarialPairs(r) {
  const a = [],
    b = []
  const add = (x, y) => {
    a.push(x)
    b.push(y)
  }
  add('', '')
  add('', 'abc')
  add('😀😀', '')
  add('same string', 'same string')
  add('x', 'x')
  add('x', 'y')
  add('x', 'yyyxyyy')
  add('😀', '😁')
  add('a😀b', 'ab')
  add('😀😀😀', '😀😀') // two UTF-16 units less, one code point less
  add('\u{1F600}', '\uD83D') // a lone high surrogate is a character of its own
  add('\uDC00\uD800', '\uD800\uDC00')
  for (const n of [63, 64, 65, 127, 128, 129, 5000]) {
    const s = randomString(r, n, alphabets.code)
    add(s, s)
    add(s, '')
    add(s, s.slice(1))
    add(s, mutate(r, s, 3, alphabets.code))
    add(s, randomString(r, n, alphabets.code))
    add(randomString(r, n, alphabets.unicode), randomString(r, n + 1, alphabets.unicode))
    add('😀'.repeat(n), '😀'.repeat(n - 1) + 'x')
  }
  const core = randomString(r, 300, alphabets.code)
  const prefix = randomString(r, 3000, alphabets.code),
    suffix = randomString(r, 2000, alphabets.code)
  add(prefix + core + suffix, prefix + randomString(r, 200, alphabets.code) + suffix)
  add(prefix + 'a' + suffix, prefix + suffix)
  add('a'.repeat(4000), 'a'.repeat(3000) + 'b' + 'a'.repeat(999))
  return { a, b }
}

// The shared data sits beside the repository (../shared); a git worktree one level deeper finds it at ../../shared.
const codePairsFile = [shared, path.join(shared, '..', '..', 'shared')]
  .map((d) => path.join(d, 'data', 'recode', 'api_update.jsonl'))
  .find((f) => fs.existsSync(f))

function loadCodePairs() {
  const file = codePairsFile
  const rows = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((r) => typeof r.old_code === 'string' && typeof r.new_code === 'string') // some rows lack old_code
  return { a: rows.map((r) => r.old_code), b: rows.map((r) => r.new_code) }
}

// Runs `device` (at the current SIMD level) on pairs with a poisoned output and checks every distance.
async function checkDevice(t, device, { a, b }, want, label) {
  const out = poison(new Int32Array(a.length))
  const got = await addon.editDistanceBatch(device, a, b, out)
  t.equal(got, out, 'resolves with the output buffer it was given')
  let bad = 0
  for (let i = 0; i < a.length; i++) {
    if (got[i] !== want[i] && bad++ < 5) {
      t.fail(`${label} pair ${i} (${codePointLength(a[i])} x ${codePointLength(b[i])} code points): got ${got[i]}, want ${want[i]}`)
    }
  }
  t.equal(bad, 0, `${label}: ${a.length} pairs agree with the reference`)
}

const devices = backends(t, addon)

t.test('native reference agrees with the JavaScript dynamic programme', async (t) => {
  const r = rng(t, 'reference')
  const pairs = randomPairs(r, { maxLen: 300 })
  const adv = adversarialPairs(r)
  const a = [...pairs.a, ...adv.a.filter((s, i) => s.length <= 600 && adv.b[i].length <= 600)]
  const b = [...pairs.b, ...adv.b.filter((s, i) => s.length <= 600 && adv.a[i].length <= 600)]
  const got = addon.editDistanceReference(a, b, poison(new Int32Array(a.length)))
  let bad = 0
  for (let i = 0; i < a.length; i++) if (got[i] !== levenshtein(a[i], b[i])) bad++
  t.equal(bad, 0, `${a.length} pairs`)
  t.equal(levenshtein('kitten', 'sitting'), 3)
  t.equal(levenshtein('😀😀😀', '😀😀'), 1)
})

for (const device of devices) {
  const levels = device === 'cpu' ? ['baseline', 'avx2'] : ['auto']
  for (const level of levels) {
    t.test(`${device}${device === 'cpu' ? ' ' + level : ''}: random and adversarial strings`, async (t) => {
      setSimdLevel(level)
      t.teardown(() => setSimdLevel('auto'))
      const r = rng(t, `${device} ${level}`)
      // The emulation runs every CUDA thread as a fiber: fewer and shorter random pairs keep it quick.
      const random = randomPairs(r, device === 'emulated' ? { maxLen: 2100, count: 1 } : { maxLen: 5000, count: 2 })
      const adv = adversarialPairs(r)
      for (const [label, pairs] of [
        ['random', random],
        ['adversarial', adv]
      ]) {
        const want = addon.editDistanceReference(pairs.a, pairs.b, new Int32Array(pairs.a.length))
        await checkDevice(t, device, pairs, want, `${device} ${level} ${label}`)
      }
    })
  }
}

t.test('banded block kernel: exact within its band, never below the distance outside it', async (t) => {
  const r = rng(t, 'band')
  const pairs = randomPairs(r, { maxLen: 2100 })
  const adv = adversarialPairs(r)
  const a = [...pairs.a, ...adv.a],
    b = [...pairs.b, ...adv.b]
  const want = addon.editDistanceReference(a, b, new Int32Array(a.length))
  const bands = Int32Array.from(want, (d) => r.int(0, 2 * d + 2))
  for (const level of ['baseline', 'avx2']) {
    setSimdLevel(level)
    const got = addon.editDistanceWithin(a, b, bands, poison(new Int32Array(a.length)))
    let inside = 0,
      outside = 0,
      bad = 0
    for (let i = 0; i < a.length; i++) {
      if (want[i] <= bands[i]) {
        inside++
        if (got[i] !== want[i]) bad++
      } else {
        outside++
        if (!(got[i] >= want[i] && got[i] > bands[i])) bad++
      }
    }
    t.equal(bad, 0, `${level}: ${inside} pairs within their band exact, ${outside} outside it bounded`)
  }
  setSimdLevel('auto')
})

t.test(
  'real code pairs from api_update.jsonl (old_code vs new_code)',
  { skip: codePairsFile ? false : `../shared/data/recode/api_update.jsonl not found from ${shared}` },
  async (t) => {
    const pairs = loadCodePairs()
    t.ok(pairs.a.length > 1000, `${pairs.a.length} rows`)
    const want = addon.editDistanceReference(pairs.a, pairs.b, new Int32Array(pairs.a.length))
    for (const device of devices) {
      if (device === 'cpu') {
        for (const level of ['baseline', 'avx2']) {
          setSimdLevel(level)
          await checkDevice(t, device, pairs, want, `cpu ${level} api_update`)
        }
        setSimdLevel('auto')
      } else {
        const n = pairs.a.length
        await checkDevice(t, device, { a: pairs.a.slice(0, n), b: pairs.b.slice(0, n) }, want.slice(0, n), `${device} api_update`)
      }
    }
  }
)

t.test('pre-encoded code points give the same distances', async (t) => {
  const r = rng(t, 'encoded')
  const { a, b } = randomPairs(r, { maxLen: 1000 })
  const want = addon.editDistanceReference(a, b, new Int32Array(a.length))
  const chars = []
  const offsets = [0]
  for (let i = 0; i < a.length; i++) {
    for (const s of [a[i], b[i]]) {
      for (const c of s) chars.push(c.codePointAt(0))
      offsets.push(chars.length)
    }
  }
  for (const device of devices) {
    const out = poison(new Int32Array(a.length))
    await addon.editDistanceEncoded(device, Uint32Array.from(chars), Int32Array.from(offsets), out)
    t.same(Array.from(out), Array.from(want), `${device}: ${a.length} pairs`)
  }
})

t.test('public API: editDistance, editDistanceSync, similarity, similarities', async (t) => {
  const r = rng(t, 'api')
  const { a, b } = randomPairs(r, { maxLen: 600 })
  const want = Array.from(addon.editDistanceReference(a, b, new Int32Array(a.length)))
  t.same(Array.from(await editDistance(a, b)), want, 'editDistance (auto device)')
  t.same(Array.from(await editDistance(a, b, { device: 'cpu' })), want, 'editDistance on cpu')
  t.same(Array.from(editDistanceSync(a, b)), want, 'editDistanceSync')
  const out = poison(new Int32Array(a.length))
  t.equal(editDistanceSync(a, b, { out }), out, 'writes into a given out buffer')
  t.same(Array.from(out), want)
  t.same(Array.from(await editDistance([], [])), [], 'empty batch')

  t.equal(similarity('', ''), 1, 'both empty: 1')
  t.equal(similarity('abc', ''), 0)
  t.equal(similarity('kitten', 'sitting'), 1 - 3 / 7)
  t.equal(similarity('😀😀😀😀', '😀😀😀'), 1 - 1 / 4, 'lengths in code points')
  t.equal(codePointLength('a😀\uD800'), 3)
  const sims = await similarities(a, b)
  t.ok(sims instanceof Float64Array)
  let worst = 0
  for (let i = 0; i < a.length; i++) {
    const longest = Math.max([...a[i]].length, [...b[i]].length)
    const expected = longest === 0 ? 1 : 1 - want[i] / longest
    worst = Math.max(worst, Math.abs(sims[i] - expected))
    if (sims[i] !== similarity(a[i], b[i])) t.fail(`similarities[${i}] differs from similarity()`)
  }
  t.equal(worst, 0, 'similarities = 1 - d / max(len)')
})

t.test('cancellation through an AbortSignal rejects with ABORT_ERR', async (t) => {
  const r = rng(t, 'abort')
  // About 4e10 cells: seconds of work on this machine, so the abort lands while it runs.
  const a = Array.from({ length: 16 }, () => randomString(r, 50000, alphabets.code))
  const b = Array.from({ length: 16 }, () => randomString(r, 50000, alphabets.code))
  const controller = new AbortController()
  const started = Date.now()
  const pending = editDistance(a, b, { device: 'cpu', signal: controller.signal })
  setTimeout(() => controller.abort(), 20)
  await t.rejects(pending, { code: 'ABORT_ERR' })
  t.comment(`aborted after ${Date.now() - started} ms`)
  const aborted = AbortSignal.abort()
  await t.rejects(editDistance(['a'], ['b'], { signal: aborted }), { code: 'ABORT_ERR' }, 'an already aborted signal')
  await t.rejects(editDistance(a.slice(0, 2), b.slice(0, 2), { device: 'emulated', signal: aborted }), { code: 'ABORT_ERR' })
  const flag = new Int32Array(new SharedArrayBuffer(4)) // as lib/abort.ts makes it
  flag[0] = 1
  await t.rejects(
    addon.editDistanceBatch('emulated', a.slice(0, 2), b.slice(0, 2), new Int32Array(2), flag),
    { code: 'ABORT_ERR' },
    'the emulated path polls the flag between slices'
  )
})

t.test('bad arguments throw with a code, never crash', async (t) => {
  await t.rejects(editDistance('abc', ['x']), { code: 'ERR_INVALID_ARG' })
  await t.rejects(editDistance(['a', 'b'], ['x']), { code: 'ERR_INVALID_ARG' })
  await t.rejects(editDistance(['a', 3], ['x', 'y']), { code: 'ERR_INVALID_ARG' })
  await t.rejects(editDistance(['a'], ['x'], { device: 'gpu' }), { code: 'ERR_INVALID_ARG' })
  t.throws(() => editDistanceSync(['a'], [null]), { code: 'ERR_INVALID_ARG' })
  t.throws(() => editDistanceSync(['a'], ['b'], { out: new Int32Array(2) }), { code: 'ERR_INVALID_ARG' })
  t.throws(() => similarity('a', 5), { code: 'ERR_INVALID_ARG' })
  // The native boundary checks on its own too.
  t.throws(() => addon.editDistanceBatch('cpu', ['a'], ['b'], new Float64Array(1)), { code: 'ERR_INVALID_ARG' })
  t.throws(() => addon.editDistanceBatch('cpu', ['a'], ['b'], new Int32Array(1), [1]), { code: 'ERR_INVALID_ARG' })
  t.throws(() => addon.editDistanceBatchSync('cpu', ['a'], { length: 1 }, new Int32Array(1)), { code: 'ERR_INVALID_ARG' })
  t.throws(() => addon.editDistanceBatchSync('cpu', ['a', {}], ['b', 'c'], new Int32Array(2)), { code: 'ERR_INVALID_ARG' })
  t.throws(() => addon.editDistanceBatchSync('tpu', ['a'], ['b'], new Int32Array(1)), { code: 'ERR_INVALID_ARG' })
  t.throws(() => addon.editDistanceEncoded('cpu', new Uint32Array(3), Int32Array.of(0, 2), new Int32Array(1)), { code: 'ERR_INVALID_ARG' })
  t.throws(() => addon.editDistanceEncoded('cpu', new Uint32Array(3), Int32Array.of(0, 2, 1), new Int32Array(1)), {
    code: 'ERR_INVALID_ARG'
  })
  t.throws(() => addon.editDistanceEncoded('cpu', new Uint32Array(3), Int32Array.of(0, 2, 4), new Int32Array(1)), {
    code: 'ERR_INVALID_ARG'
  })
  t.throws(() => addon.editDistanceEncoded('cpu', [1, 2], Int32Array.of(0, 1, 2), new Int32Array(1)), { code: 'ERR_INVALID_ARG' })
  t.throws(() => addon.editDistanceReference(['a'], ['b', 'c'], new Int32Array(1)), { code: 'ERR_INVALID_ARG' })
  if (!addon.systemInfo().cuda.available) {
    t.throws(() => addon.editDistanceBatchSync('cuda', ['a'], ['b'], new Int32Array(1)), { code: 'ERR_CUDA_UNAVAILABLE' })
    await t.rejects(editDistance(['a'], ['b'], { device: 'cuda' }), { code: 'ERR_CUDA_UNAVAILABLE' })
  }
})
