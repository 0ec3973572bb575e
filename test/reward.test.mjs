// The ReCode reward against a Python reference that uses CPython's own `re` and `ast`
// (test/reference/recode_reward.py): hand-written tricky completions, random token soups, and completions
// built from every row of the ReCode data. Values must agree to 1e-12, normalised code exactly.
import t from 'tap'
import * as fs from 'fs'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { root, shared, rng, require } from './helpers.mjs'
import { handWritten, randomCases, perturb, wrap } from './reference/reward-cases.mjs'

const lib = require('../dist/cjs/index.js')
const text = require('../dist/cjs/reward/text.js')
const { rewards } = lib

const referenceScript = path.join(root, 'test', 'reference', 'recode_reward.py')
// RECODE_SHARED points elsewhere when the checkout is not beside the shared folder (e.g. a worktree).
const dataFile = path.join(process.env.RECODE_SHARED || shared, 'data', 'recode', 'api_update.jsonl')
const python = process.env.RECODE_PYTHON || 'python3'
const probe = spawnSync(python, ['--version'], { encoding: 'utf8' })
const noPython = probe.status === 0 ? false : `no usable Python interpreter ('${python}': ${probe.error?.message ?? probe.stderr})`
const noData = fs.existsSync(dataFile) ? false : `ReCode data not found at ${dataFile}`
if (noPython) t.comment(`skipping the Python comparisons: ${noPython}`)
if (noData) t.comment(`skipping the data-file checks: ${noData}`)

t.teardown(() => lib.closePythonWorkers())

/** Runs the Python reference over the cases (one process, JSON lines in and out). */
function reference(cases) {
  const input = cases.map((c) => JSON.stringify({ completion: c.completion, target: c.target })).join('\n') + '\n'
  const r = spawnSync(python, [referenceScript], { input, encoding: 'utf8', maxBuffer: 1 << 30 })
  if (r.status !== 0) throw new Error(`reference failed: ${r.stderr}`)
  const out = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
  if (out.length !== cases.length) throw new Error(`reference gave ${out.length} results for ${cases.length} cases`)
  return out
}

const show = (s) => (s === null ? 'null' : JSON.stringify(s.length > 300 ? s.slice(0, 300) + '…' : s))

/** Compares rewards.score and the text helpers with the reference; reports the first mismatches in detail. */
async function compareWithReference(t, cases) {
  const expected = reference(cases)
  const got = await rewards.score(
    cases.map((c) => c.completion),
    cases.map((c) => c.target)
  )
  const problems = []
  for (let i = 0; i < cases.length; i++) {
    const e = expected[i]
    const why = []
    if (got.format[i] !== e.format) why.push(`format ${got.format[i]} vs ${e.format}`)
    if (!(Math.abs(got.esStar[i] - e.es_star) <= 1e-12)) why.push(`es_star ${got.esStar[i]} vs ${e.es_star}`)
    if (got.emStar[i] !== e.em_star) why.push(`em_star ${got.emStar[i]} vs ${e.em_star}`)
    if (!(Math.abs(got.reward[i] - (e.format + e.es_star)) <= 1e-12)) why.push(`reward ${got.reward[i]} vs ${e.format + e.es_star}`)
    const code = text.completionCode(cases[i].completion)
    if (code !== e.code) why.push(`code ${show(code)} vs ${show(e.code)}`)
    const target = text.normalizeCode(cases[i].target)
    if (target !== e.target_code) why.push(`target ${show(target)} vs ${show(e.target_code)}`)
    if (got.validPython[i] !== (e.valid ? 1 : 0)) why.push(`valid ${got.validPython[i]} vs ${e.valid}`)
    if (got.hasBlock[i] !== (e.code === null ? 0 : 1)) why.push(`hasBlock ${got.hasBlock[i]}`)
    if (why.length) problems.push(`${cases[i].name}: ${why.join('; ')}\n    completion ${show(cases[i].completion)}`)
  }
  t.equal(problems.length, 0, `${cases.length} cases agree with the Python reference`)
  for (const p of problems.slice(0, 8)) t.comment(p)
  return { expected, got }
}

t.test('hand-written tricky completions match the Python reference', { skip: noPython }, async (t) => {
  const { expected, got } = await compareWithReference(t, handWritten)
  // A few outcomes stated outright, so that a reference bug cannot hide a wrong expectation.
  const byName = (name) => handWritten.findIndex((c) => c.name === name)
  t.equal(got.esStar[byName('no fence at all')], -2)
  t.equal(got.esStar[byName('invalid Python')], -2)
  t.equal(got.esStar[byName('NUL byte')], -2, 'a NUL byte makes ast.parse raise')
  t.equal(got.esStar[byName('deep unary minus (MemoryError in the parser)')], -2)
  t.equal(got.esStar[byName('long + chain (RecursionError building the AST)')], -2)
  t.equal(got.esStar[byName('empty everything')], -2, 'an empty completion has no block')
  t.equal(got.esStar[byName('empty fence body')], 2, 'empty code and empty target: sim = 1')
  t.equal(got.esStar[byName('empty fence body, non-empty target')], -1.5)
  t.equal(got.emStar[byName('identical after normalisation (EM* +2)')], 2)
  t.equal(got.emStar[byName('comments leave trailing spaces (EM* -1.5)')], -1.5)
  t.equal(got.format[byName('<think> inside the think')], -1)
  t.equal(got.format[byName('missing </answer>')], -1)
  t.equal(got.format[byName('trailing whitespace after </answer>')], 1)
  t.equal(got.format[byName('trailing \\ufeff after </answer>')], -1)
  t.equal(got.format[byName('plain good answer')], 1)
  t.equal(got.reward[byName('plain good answer')], 3)
  const emoji = byName('emoji count as one character each')
  t.equal(expected[emoji].distance, 1, 'the reference counts an emoji as one character')
  t.ok(Math.abs(got.similarity[emoji] - (1 - 1 / 8)) < 1e-15, 'and so do we (8 code points against 7)')
  t.equal(
    text.completionCode(handWritten[byName('eleven and more strings: placeholder 1 prefixes placeholder 10')].completion).split('\n')[10],
    "s10 = 'v1'0",
    'literal 10 comes back as literal 1 + "0"'
  )
  t.equal(
    text.completionCode(handWritten[byName('apostrophes in comments start a "string"')].completion),
    'x = 1  \nz = 3',
    'the apostrophe quirk eats a line'
  )
})

t.test('random token soups match the Python reference', { skip: noPython }, async (t) => {
  await compareWithReference(t, randomCases(rng(t, 'token soups'), 3000))
})

t.test('every row of the ReCode data matches the Python reference', { skip: noPython || noData }, async (t) => {
  const r = rng(t, 'perturbations')
  const rows = fs
    .readFileSync(dataFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
  const cases = []
  rows.forEach((row, i) => {
    cases.push({ name: `row ${i + 1} new_code`, completion: wrap(row.new_code), target: row.new_code })
    if (row.old_code !== null) cases.push({ name: `row ${i + 1} old_code`, completion: wrap(row.old_code), target: row.new_code })
    cases.push({ name: `row ${i + 1} perturbed`, completion: wrap(perturb(r, row.new_code)), target: row.new_code })
    if (i % 4 === 0) cases.push({ name: `row ${i + 1} target as completion text`, completion: row.new_code, target: row.old_code ?? '' })
  })
  t.comment(`${rows.length} rows, ${cases.length} completions`)
  await compareWithReference(t, cases)
})

t.test('documented facts about the data', { skip: noPython || noData }, async (t) => {
  const rows = fs
    .readFileSync(dataFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
  const withOld = rows.filter((row) => row.old_code !== null)
  // recode.md: "Copying the old code unchanged already scores a mean similarity of 0.72 to the target."
  // That figure is the similarity of the raw strings; after the reward's normalisation it is 0.75.
  const { similarities } = require('../dist/cjs/editdist.js')
  const raw = await similarities(
    withOld.map((row) => row.old_code),
    withOld.map((row) => row.new_code)
  )
  const meanRaw = raw.reduce((a, b) => a + b, 0) / raw.length
  t.ok(Math.abs(meanRaw - 0.72) < 0.005, `mean raw similarity of old_code to new_code is ${meanRaw.toFixed(4)} (doc: 0.72)`)
  const copies = await rewards.score(
    withOld.map((row) => wrap(row.old_code)),
    withOld.map((row) => row.new_code)
  )
  let sum = 0
  let valid = 0
  for (let i = 0; i < withOld.length; i++)
    if (copies.validPython[i]) {
      sum += copies.similarity[i]
      valid++
    }
  t.comment(`copying old_code: ${valid}/${withOld.length} parse after normalisation, mean reward similarity ${(sum / valid).toFixed(4)}`)
  t.ok(Math.abs(sum / valid - 0.752) < 0.01, 'the normalised similarity of the copies is about 0.75')

  // "50 new_code values that are not valid Python (a verbatim copy of such a target scores the minimum)".
  const parses = await lib.pythonParses(rows.map((row) => row.new_code))
  const invalid = rows.filter((_, i) => parses[i] === 0)
  t.equal(invalid.length, 50, '50 targets do not parse')
  const scored = await rewards.score(
    invalid.map((row) => wrap(row.new_code)),
    invalid.map((row) => row.new_code)
  )
  t.ok(
    scored.esStar.every((x) => x === -2),
    'each scores ES* = -2 when copied verbatim'
  )
  t.ok(
    scored.reward.every((x) => x === -1),
    'and reward -1 with a good format'
  )
})

/** Plain code-point Levenshtein distance (the reference for the ES components below). */
function levenshtein(a, b) {
  const x = [...a]
  const y = [...b]
  let prev = Array.from({ length: y.length + 1 }, (_, j) => j)
  for (let i = 1; i <= x.length; i++) {
    const cur = [i]
    for (let j = 1; j <= y.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x[i - 1] === y[j - 1] ? 0 : 1))
    prev = cur
  }
  return prev[y.length]
}

t.test('each training reward name is format + its component, with the documented values', { skip: noPython }, async (t) => {
  const target = 'import nova\nx = nova.load_v2(path)\nprint(x)'
  const near = 'import nova\nx = nova.load(path)\nprint(x)'
  const answer = (code, close = '</answer>') => ` I use the new name.</think>\n<answer>\n\`\`\`python\n${code}\n\`\`\`\n${close}`
  const cases = [
    { name: 'exact, good format', completion: answer(target) },
    { name: 'near, good format', completion: answer(near) },
    { name: 'exact, broken format', completion: answer(target, '') },
    { name: 'no python block', completion: ' hm</think>\n<answer>\nnothing here\n</answer>' },
    { name: 'code that does not parse', completion: answer('def f(:\n  pass') }
  ]
  const completions = cases.map((c) => c.completion)
  const targets = cases.map(() => target)
  const c = await rewards.score(completions, targets)
  const nt = text.normalizeCode(target)
  const nn = text.normalizeCode(near)
  const sim = 1 - levenshtein(nn, nt) / Math.max([...nn].length, [...nt].length)
  t.ok(sim > 0.5 && sim < 1, `the near miss has a similarity strictly inside (0.5, 1): ${sim}`)
  // [format, es*, es, em*, em] per case, as the reward module documents them
  const expected = [
    [1, 2, 1, 2, 1],
    [1, 3.5 * sim - 1.5, sim, -1.5, 0],
    [-1, 2, 1, 2, 1],
    [1, -2, 0, -2, 0],
    [1, -2, 0, -2, 0]
  ]
  const close = (a, b) => Math.abs(a - b) < 1e-12
  cases.forEach((k, i) => {
    const [f, esS, es, emS, em] = expected[i]
    t.ok(close(c.format[i], f), `${k.name}: format ${c.format[i]} = ${f}`)
    t.ok(close(c.esStar[i], esS), `${k.name}: ES* ${c.esStar[i]} = ${esS}`)
    t.ok(close(c.es[i], es), `${k.name}: ES ${c.es[i]} = ${es}`)
    t.ok(close(c.emStar[i], emS), `${k.name}: EM* ${c.emStar[i]} = ${emS}`)
    t.ok(close(c.em[i], em), `${k.name}: EM ${c.em[i]} = ${em}`)
    const byName = { 'es*': f + esS, es: f + es, 'em*': f + emS, em: f + em, format: f }
    for (const name of lib.TRAINING_REWARDS) {
      t.ok(close(lib.trainingReward(name, c)[i], byName[name]), `${k.name}: reward '${name}' = ${byName[name]}`)
    }
  })
  t.same([...lib.TRAINING_REWARDS].sort(), ['em', 'em*', 'es', 'es*', 'format'], 'the five reward names')
  t.same(Array.from(await rewards.em(completions, targets)), Array.from(c.em), 'rewards.em = score().em')
  t.same(Array.from(await rewards.es(completions, targets)), Array.from(c.es), 'rewards.es = score().es')
  t.throws(() => lib.trainingReward('bleu', c), { code: 'ERR_INVALID_ARG' }, 'an unknown name is refused')
  t.throws(() => lib.trainingReward('es', null), { code: 'ERR_INVALID_ARG' }, 'components that are not a score are refused')
})
