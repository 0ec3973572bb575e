// Data loaders: the shared ReCode / CodeUpdateArena / HumanEval files, the quality report's counts (the
// known defects of api_update.jsonl), drop options, version normalisation, splits, and malformed input
// (errors name file and line).
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import * as zlib from 'zlib'
import { spawnSync } from 'child_process'
import { root } from './helpers.mjs'
import { sharedData } from './fixtures/shared.mjs'

const d = await import(path.join(root, 'dist/cjs/data/index.js'))
const py = await import(path.join(root, 'dist/cjs/eval/python.js'))
const shared = sharedData()
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-data-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const write = (name, text) => {
  const f = path.join(tmp, name)
  fs.writeFileSync(f, text)
  return f
}
const row = (o = {}) =>
  JSON.stringify({
    dependency: 'numpy',
    new_version: '==1.0',
    description: 'd',
    update_info: 'u',
    old_code: 'x = 1',
    new_code: 'y = 1',
    ...o
  })

t.test('normalizeVersion keeps the version number', async (t) => {
  t.equal(d.normalizeVersion('==2.0.0'), '2.0.0')
  t.equal(d.normalizeVersion('2.0.0'), '2.0.0', 'no prefix: unchanged (the original slice would give 0.0)')
  t.equal(d.normalizeVersion('>=1.2'), '1.2')
  t.equal(d.normalizeVersion(' == 0.17 '), '0.17')
  t.equal(d.normalizeVersion(null), '')
})

t.test('quality report on a small file: every defect kind, drops, spellings', async (t) => {
  const file = write(
    'small.jsonl',
    [
      row(),
      row({ old_code: null, update_info: null }),
      row({ old_code: 'same', new_code: 'same' }),
      row(),
      row({ new_version: '2.0.0', dependency: 'Numpy' }),
      row({ new_code: 'def f(:\n  pass', old_code: 'a' }),
      ''
    ].join('\n')
  )
  const syntax = py.probePython().error === undefined
  const m = await d.loadMigrationData(file)
  const r = m.report
  t.equal(r.rows, 6)
  t.same(r.nullFields, { rows: 1, byField: { update_info: 1, old_code: 1 }, lines: [2] })
  t.same(r.oldEqualsNew.lines, [3])
  t.same(r.duplicatePairs.lines, [4, 5], 'rows 4 and 5 repeat the pair of row 1')
  t.same(r.versionWithoutEq, { rows: 1, lines: [5], values: { '2.0.0': 1 } })
  t.same(r.librarySpellings.groups, { numpy: { numpy: 5, Numpy: 1 } })
  t.same(r.libraries, { numpy: 6 })
  t.equal(m.examples[4].version, '2.0.0')
  t.equal(m.examples[4].library, 'numpy')
  t.equal(m.examples[4].dependency, 'Numpy', 'dependency kept as written unless normalizeLibraryNames')
  if (syntax) {
    t.same(r.invalidPythonTarget.lines, [6])
    t.match(r.invalidPythonTarget.messages[6], /SyntaxError/)
  } else {
    t.comment(`ast.parse check skipped: no usable python3 (${py.probePython().error})`)
  }
  const all = await d.loadMigrationData(file, {
    dropNullFields: true,
    dropOldEqualsNew: true,
    dropDuplicates: true,
    dropVersionWithoutEq: true,
    dropInvalidTargets: syntax,
    normalizeLibraryNames: true
  })
  t.same(
    all.examples.map((e) => e.line),
    syntax ? [1] : [1, 6]
  )
  t.same(
    all.dropped,
    { nullField: 1, oldEqualsNew: 1, duplicatePair: 2, versionWithoutEq: 0, ...(syntax ? { invalidPythonTarget: 1 } : {}) },
    'row 5 is both a duplicate and unprefixed: counted once, by the first drop that removes it'
  )
  const one = await d.loadMigrationData(file, { dropDuplicates: true, normalizeLibraryNames: true, checkSyntax: false })
  t.same(
    one.examples.map((e) => e.line),
    [1, 2, 3, 6]
  )
  t.equal(one.report.invalidPythonTarget.checked, false)
})

t.test('malformed migration files: errors name file and line', async (t) => {
  const bad = write('bad.jsonl', [row(), row(), '{"dependency": "numpy", oops}', row()].join('\n'))
  t.throws(() => d.readMigrationRows(bad), {
    code: 'ERR_DATA',
    message: new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3: not valid JSON`)
  })
  const missing = write(
    'missing.jsonl',
    row() + '\n' + JSON.stringify({ dependency: 'numpy', new_version: '==1', description: 'd', update_info: 'u', old_code: 'a' })
  )
  t.throws(() => d.readMigrationRows(missing), { code: 'ERR_DATA', message: /missing\.jsonl:2: missing field 'new_code'/ })
  const wrongType = write('type.jsonl', row({ old_code: 42 }))
  t.throws(() => d.readMigrationRows(wrongType), {
    code: 'ERR_DATA',
    message: /type\.jsonl:1: field 'old_code' must be a string, got number/
  })
  const extra = write('extra.jsonl', row({ surprise: 'x' }))
  t.throws(() => d.readMigrationRows(extra), { code: 'ERR_DATA', message: /extra\.jsonl:1: unknown field 'surprise'/ })
  const notObj = write('arr.jsonl', '\n\n[1, 2]\n')
  t.throws(() => d.readMigrationRows(notObj), { code: 'ERR_DATA', message: /arr\.jsonl:3: expected a JSON object, got an array/ })
  t.throws(() => d.readMigrationRows(write('empty.jsonl', '\n')), { code: 'ERR_DATA', message: /no rows/ })
  t.throws(() => d.readMigrationRows(path.join(tmp, 'nope.jsonl')), { code: 'ERR_DATA', message: /cannot read/ })
})

t.test('splits: deterministic by seed, duplicates kept together, or whole libraries held out', async (t) => {
  const lines = []
  for (let i = 0; i < 100; i++)
    lines.push(row({ dependency: ['numpy', 'torch', 'Torch', 'scipy'][i % 4], old_code: `x = ${i % 90}`, new_code: `y = ${i % 90}` }))
  const m = await d.loadMigrationData(write('split.jsonl', lines.join('\n')), { checkSyntax: false })
  const a = d.splitMigrationData(m.examples, { seed: 7, testFraction: 0.2 })
  const b = d.splitMigrationData(m.examples, { seed: 7, testFraction: 0.2 })
  const c = d.splitMigrationData(m.examples, { seed: 8, testFraction: 0.2 })
  t.same(
    a.test.map((e) => e.line),
    b.test.map((e) => e.line),
    'same seed, same split'
  )
  t.not(a.test.map((e) => e.line).join(), c.test.map((e) => e.line).join(), 'another seed, another split')
  t.equal(a.train.length + a.test.length, 100)
  t.ok(Math.abs(a.test.length - 20) <= 1, `test size ${a.test.length} ≈ 20`)
  const testPairs = new Set(a.test.map((e) => e.oldCode))
  t.notOk(
    a.train.some((e) => testPairs.has(e.oldCode)),
    'no (old, new) pair on both sides'
  )
  const held = d.splitMigrationData(m.examples, { holdOutLibraries: ['TORCH'] })
  t.equal(held.test.length, 50, 'torch and Torch rows are one library')
  t.ok(held.test.every((e) => e.library.toLowerCase() === 'torch'))
  t.equal(held.train.length, 50)
  t.throws(() => d.splitMigrationData(m.examples, { holdOutLibraries: ['jax'] }), {
    code: 'ERR_INVALID_ARG',
    message: /no rows for library 'jax'/
  })
  t.throws(() => d.splitMigrationData(m.examples, { testFraction: 2 }), { code: 'ERR_INVALID_ARG' })
})

t.test(
  'shared ReCode file: the known defects are all reported',
  { skip: shared ? false : 'shared data not found (set RECODE_SHARED_DATA)' },
  async (t) => {
    const file = path.join(shared, 'recode', 'api_update.jsonl')
    const m = await d.loadMigrationData(file)
    const r = m.report
    t.equal(r.rows, 1781)
    t.equal(r.nullFields.rows, 21)
    t.same(r.nullFields.byField, { update_info: 21, old_code: 21 })
    t.equal(r.oldEqualsNew.rows, 132)
    t.equal(r.duplicatePairs.rows, 84)
    t.equal(r.versionWithoutEq.rows, 96)
    t.same(Object.keys(r.librarySpellings.groups).sort(), ['Seaborn', 'pandas'])
    t.equal(r.libraries.pandas, 243)
    t.equal(r.libraries.Seaborn, 142)
    if (r.invalidPythonTarget.checked) t.equal(r.invalidPythonTarget.rows, 50, 'new_code rejected by ast.parse')
    else t.comment(`ast.parse check skipped: ${r.invalidPythonTarget.reason}`)
    const unprefixed = m.examples.find((e) => e.newVersion === '2.0.0')
    t.equal(unprefixed.version, '2.0.0', 'the version number, not the original\'s "0.0"')
    const clean = await d.loadMigrationData(file, {
      dropNullFields: true,
      dropOldEqualsNew: true,
      dropDuplicates: true,
      dropInvalidTargets: r.invalidPythonTarget.checked,
      normalizeLibraryNames: true
    })
    t.comment(`after dropping every defect: ${clean.examples.length} rows (${JSON.stringify(clean.dropped)})`)
    t.ok(clean.examples.every((e) => e.oldCode !== null && e.oldCode !== e.newCode))
    t.equal(new Set(clean.examples.map((e) => e.dependency)).size, 9, 'nine libraries once spellings are merged')
  }
)

t.test(
  'CodeUpdateArena: grouped file and the ungrouped layout give the same problems',
  { skip: shared ? false : 'shared data not found' },
  async (t) => {
    const grouped = d.loadCodeUpdateArena(path.join(shared, 'codeupdatearena', 'arena_grouped_2024-07-02.jsonl'))
    t.equal(grouped.format, 'grouped')
    t.equal(grouped.updates, 141)
    t.equal(grouped.problems.length, 577)
    t.equal(
      grouped.problems.reduce((s, p) => s + p.unitTests.length, 0),
      3611,
      'unit tests split with blank lines inside bodies kept'
    )
    for (const p of grouped.problems)
      for (const u of p.unitTests) if (d.testFunctionName(u) === null) t.fail(`${p.id}: a test without a function`)
    t.notOk(
      grouped.problems.some((p) => p.update.package === 'pandas'),
      'the early file has no pandas'
    )
    // The final benchmark's layout: the same fields, flattened, one problem per line.
    const raw = fs
      .readFileSync(path.join(shared, 'codeupdatearena', 'arena_grouped_2024-07-02.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .slice(0, 3)
      .map((l) => JSON.parse(l))
    const flat = raw.flatMap((g) => g.prog_syn_examples.map((ex) => ({ ...g.update, ...ex })))
    const ungroupedFile = write('ungrouped.jsonl', flat.map((o) => JSON.stringify(o)).join('\n') + '\n')
    const ungrouped = d.loadCodeUpdateArena(ungroupedFile)
    t.equal(ungrouped.format, 'ungrouped')
    t.equal(ungrouped.problems.length, flat.length)
    const strip = (p) => ({ ...p, source: undefined })
    t.same(ungrouped.problems.map(strip), grouped.problems.slice(0, flat.length).map(strip))
    // unit_tests as a list and prog_syn_imports as a list of lines are accepted too.
    const listForm = write(
      'list.jsonl',
      JSON.stringify({ ...flat[0], unit_tests: grouped.problems[0].unitTests, prog_syn_imports: flat[0].prog_syn_imports.split('\n') }) +
        '\n'
    )
    const lp = d.loadCodeUpdateArena(listForm).problems[0]
    t.same(lp.unitTests, grouped.problems[0].unitTests)
    t.equal(lp.imports, grouped.problems[0].imports)
    // Malformed lines.
    const broken = write('broken.jsonl', JSON.stringify(flat[0]) + '\n' + JSON.stringify({ ...flat[1], unit_tests: 42 }) + '\n')
    t.throws(() => d.loadCodeUpdateArena(broken), { code: 'ERR_DATA', message: /broken\.jsonl:2 .*unit_tests/ })
    const noImpl = { ...flat[1] }
    delete noImpl.implementation
    t.throws(() => d.loadCodeUpdateArena(write('noimpl.jsonl', JSON.stringify(noImpl))), {
      code: 'ERR_DATA',
      message: /noimpl\.jsonl:1: missing field 'implementation'/
    })
    t.throws(() => d.loadCodeUpdateArena(write('dup.jsonl', JSON.stringify(flat[0]) + '\n' + JSON.stringify(flat[0]))), {
      code: 'ERR_DATA',
      message: /dup\.jsonl:2: prog_syn_id .* repeats/
    })
    t.throws(() => d.loadCodeUpdateArena(write('mixed.jsonl', JSON.stringify(raw[0]) + '\n' + JSON.stringify(flat[0]))), {
      code: 'ERR_DATA',
      message: /mixes/
    })
  }
)

t.test('HumanEval: gzip and plain JSONL', { skip: shared ? false : 'shared data not found' }, async (t) => {
  const gz = path.join(shared, 'humaneval', 'HumanEval.jsonl.gz')
  const probs = d.loadHumanEval(gz)
  t.equal(probs.length, 164)
  t.equal(probs[0].taskId, 'HumanEval/0')
  t.equal(probs[0].entryPoint, 'has_close_elements')
  const plain = write('he.jsonl', zlib.gunzipSync(fs.readFileSync(gz)))
  t.same(
    d.loadHumanEval(plain).map((p) => p.taskId),
    probs.map((p) => p.taskId)
  )
  const lines = zlib.gunzipSync(fs.readFileSync(gz)).toString('utf8').split('\n').filter(Boolean)
  const o = JSON.parse(lines[1])
  delete o.test
  t.throws(() => d.loadHumanEval(write('he-bad.jsonl', lines[0] + '\n' + JSON.stringify(o))), {
    code: 'ERR_DATA',
    message: /he-bad\.jsonl:2: missing field 'test'/
  })
  t.throws(() => d.loadHumanEval(write('he-dup.jsonl', lines[0] + '\n' + lines[0])), {
    code: 'ERR_DATA',
    message: /he-dup\.jsonl:2: task_id 'HumanEval\/0' appears twice/
  })
  t.throws(() => d.loadHumanEval(write('corrupt.jsonl.gz', Buffer.from([0x1f, 0x8b, 1, 2, 3]))), {
    code: 'ERR_DATA',
    message: /corrupt gzip/
  })
})

t.test('recode data check', { skip: shared ? false : 'shared data not found' }, async (t) => {
  const cli = path.join(root, 'dist/cjs/cli.js')
  const res = spawnSync(process.execPath, [cli, 'data', 'check', path.join(shared, 'recode', 'api_update.jsonl')], { encoding: 'utf8' })
  t.equal(res.status, 0, res.stderr)
  t.match(res.stdout, /1781 rows/)
  t.match(res.stdout, /null fields: +21 rows/)
  t.match(res.stdout, /old_code == new_code: +132 rows/)
  t.match(res.stdout, /duplicate pairs: +84 repeated rows/)
  t.match(res.stdout, /version without '==': +96 rows/)
  t.match(res.stdout, /pandas <- 'pandas' 238 \/ 'Pandas' 5/)
  const json = spawnSync(
    process.execPath,
    [cli, 'data', 'check', path.join(shared, 'codeupdatearena', 'arena_grouped_2024-07-02.jsonl'), '--json'],
    { encoding: 'utf8' }
  )
  t.equal(json.status, 0, json.stderr)
  t.same(JSON.parse(json.stdout).problems, 577)
  const bad = spawnSync(process.execPath, [cli, 'data', 'check', write('cli-bad.jsonl', row() + '\n{nope')], { encoding: 'utf8' })
  t.equal(bad.status, 1)
  t.match(bad.stderr, /cli-bad\.jsonl:2: not valid JSON.*\[ERR_DATA\]/)
})
