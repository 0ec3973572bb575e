// The reward's plumbing: `recode reward` (good file, bad lines, nothing left at OUT), the python worker
// pool (missing interpreter, a worker that dies, abort, Node exiting while workers idle), argument
// checks, and the one-pass placeholder restoration against the reference's sequential loop.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { root, rng, require } from './helpers.mjs'
import { wrap, randomText } from './reference/reward-cases.mjs'

const lib = require('../dist/cjs/index.js')
const text = require('../dist/cjs/reward/text.js')
const { rewards } = lib
const cli = path.join(root, 'dist', 'cjs', 'cli.js')

const python = process.env.RECODE_PYTHON || 'python3'
const probe = spawnSync(python, ['--version'], { encoding: 'utf8' })
const noPython = probe.status === 0 ? false : `no usable Python interpreter ('${python}': ${probe.error?.message ?? probe.stderr})`
if (noPython) t.comment(`skipping the tests that run Python: ${noPython}`)

t.teardown(() => lib.closePythonWorkers())

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-reward-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

function runCli(args, env = {}) {
  return spawnSync(process.execPath, [cli, 'reward', ...args], { encoding: 'utf8', env: { ...process.env, ...env } })
}

const goodRows = [
  { completion: wrap('x = 1\ny = 2'), target: 'x = 1\ny = 2', id: 'a' },
  { completion: wrap('x = 1  # one\ny = 3'), target: 'x = 1\ny = 2' },
  { completion: 'no answer at all', target: 'x = 1' },
  { completion: wrap('def f(:'), target: 'def f(): pass' }
]

t.test('recode reward scores a good file, to OUT and to stdout', { skip: noPython }, async (t) => {
  const input = path.join(tmp, 'good.jsonl')
  fs.writeFileSync(input, goodRows.map((r) => JSON.stringify(r)).join('\n') + '\n\n')
  const output = path.join(tmp, 'good.out.jsonl')
  const r = runCli(['--input', input, '--output', output])
  t.equal(r.status, 0, r.stderr)
  const lines = fs
    .readFileSync(output, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
  const expected = await rewards.score(
    goodRows.map((x) => x.completion),
    goodRows.map((x) => x.target)
  )
  t.equal(lines.length, goodRows.length)
  lines.forEach((line, i) => {
    t.equal(line.completion, goodRows[i].completion)
    t.equal(line.target, goodRows[i].target)
    t.equal(line.format, expected.format[i])
    t.equal(line.es_star, expected.esStar[i])
    t.equal(line.em_star, expected.emStar[i])
    t.equal(line.reward, line.format + line.es_star)
  })
  t.equal(lines[0].id, 'a', 'other fields are kept')
  t.same([lines[0].reward, lines[2].reward, lines[3].reward], [3, -3, -1])
  t.same(
    fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')),
    [],
    'no temporary file left'
  )

  const toStdout = runCli([`--input=${input}`])
  t.equal(toStdout.status, 0, toStdout.stderr)
  t.equal(toStdout.stdout, fs.readFileSync(output, 'utf8'), 'stdout gets the same lines')
})

t.test('recode reward reports bad lines with file and line, and leaves nothing at OUT', async (t) => {
  const cases = [
    { name: 'not JSON', lines: [JSON.stringify(goodRows[0]), '{"completion": "x", "target": '], line: 2, match: /not a JSON line/ },
    {
      name: 'missing target',
      lines: [JSON.stringify(goodRows[0]), '', JSON.stringify({ completion: 'x' })],
      line: 3,
      match: /field "target" is missing/
    },
    {
      name: 'completion not a string',
      lines: [JSON.stringify({ completion: null, target: 'x' })],
      line: 1,
      match: /field "completion" must be a string, got null/
    },
    { name: 'not an object', lines: [JSON.stringify(goodRows[0]), '[1, 2]'], line: 2, match: /expected a JSON object/ }
  ]
  for (const c of cases) {
    const input = path.join(tmp, `bad-${c.line}-${c.name.replace(/\W/g, '')}.jsonl`)
    fs.writeFileSync(input, c.lines.join('\n') + '\n')
    const output = path.join(tmp, 'bad.out.jsonl')
    const r = runCli(['--input', input, '--output', output])
    t.not(r.status, 0, `${c.name}: exit status is non-zero`)
    t.match(r.stderr, `${input}:${c.line}: `, `${c.name}: the error names file and line`)
    t.match(r.stderr, c.match, `${c.name}: and what is wrong`)
    t.match(r.stderr, /ERR_DATA/)
    t.notOk(fs.existsSync(output), `${c.name}: nothing at OUT`)
    t.same(
      fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')),
      [],
      `${c.name}: no temporary file`
    )
  }
  const missing = runCli(['--input', path.join(tmp, 'does-not-exist.jsonl')])
  t.not(missing.status, 0)
  t.match(missing.stderr, /does-not-exist\.jsonl: cannot read/)
  const noInput = runCli([])
  t.not(noInput.status, 0)
  t.match(noInput.stderr, /--input is required/)
  const unknown = runCli(['--input', 'x', '--frobnicate'])
  t.match(unknown.stderr, /unknown argument '--frobnicate'/)
})

t.test('a missing interpreter is ERR_PYTHON naming what was tried', async (t) => {
  const missing = path.join(tmp, 'no-such-python3')
  const err = await rewards.recode([wrap('x = 1')], ['x = 1'], { python: missing }).catch((e) => e)
  t.equal(err.code, 'ERR_PYTHON')
  t.match(err.message, missing)
  t.match(err.message, /the `python` option/)
  t.match(err.message, /ENOENT/)

  // Through RECODE_PYTHON (in a child, so this process's environment stays as it is).
  const script = `require(${JSON.stringify(path.join(root, 'dist', 'cjs', 'index.js'))}).rewards.esStar(['\`\`\`python\\nx\\n\`\`\`'], ['x']).then(() => process.exit(0), (e) => { console.log(JSON.stringify({ code: e.code, message: e.message })); process.exit(3) })`
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, RECODE_PYTHON: missing } })
  t.equal(child.status, 3, child.stderr)
  const reported = JSON.parse(child.stdout)
  t.equal(reported.code, 'ERR_PYTHON')
  t.match(reported.message, /RECODE_PYTHON/)

  const fromCli = runCli(['--input', path.join(tmp, 'whatever.jsonl'), '--python', missing])
  t.not(fromCli.status, 0, 'the CLI fails too (here on the input first)')
  const input = path.join(tmp, 'for-python.jsonl')
  fs.writeFileSync(input, JSON.stringify(goodRows[0]) + '\n')
  const output = path.join(tmp, 'for-python.out.jsonl')
  const cliPython = runCli(['--input', input, '--output', output, '--python', missing])
  t.not(cliPython.status, 0)
  t.match(cliPython.stderr, /ERR_PYTHON/)
  t.match(cliPython.stderr, missing)
  t.notOk(fs.existsSync(output), 'nothing written')

  // The format reward needs no Python at all.
  t.same([...(await rewards.format(['a</think><answer>b</answer>', 'x']))], [1, -1])
})

t.test('an interpreter that is not Python 3 is reported, not hung on', async (t) => {
  const fake = path.join(tmp, 'fake-python')
  fs.writeFileSync(fake, '#!/bin/sh\necho "Unknown option: -I" >&2\nexit 2\n', { mode: 0o755 })
  const err = await rewards.esStar([wrap('x = 1')], ['x = 1'], { python: fake }).catch((e) => e)
  t.equal(err.code, 'ERR_PYTHON')
  t.match(err.message, /exited with code 2: Unknown option: -I/)
})

t.test('a worker that never answers times out; one that prints something else is refused', { skip: noPython }, async (t) => {
  const silent = path.join(tmp, 'silent-python')
  fs.writeFileSync(
    silent,
    `#!/bin/sh\nexec ${JSON.stringify(python)} -c "import time; print('ready 3.0.0', flush=True); time.sleep(60)"\n`,
    { mode: 0o755 }
  )
  const started = Date.now()
  const err = await lib.pythonParses(['x = 1'], { python: silent, timeoutMs: 500 }).catch((e) => e)
  t.equal(err.code, 'ERR_PYTHON')
  t.match(err.message, /did not answer within 0.5 s/)
  t.ok(Date.now() - started < 10000, 'promptly')
  const chatty = path.join(tmp, 'chatty-python')
  fs.writeFileSync(chatty, '#!/bin/sh\necho "Python 2.7.18"\nexec sleep 60\n', { mode: 0o755 })
  const refused = await lib.pythonParses(['x = 1'], { python: chatty }).catch((e) => e)
  t.equal(refused.code, 'ERR_PYTHON')
  t.match(refused.message, /printed "Python 2.7.18" instead of its ready line/)
})

t.test('a worker that dies on one source: that source is invalid, the rest are answered', { skip: noPython }, async (t) => {
  // A wrapper interpreter whose ast.parse kills the process on sources containing CRASH_ME, as a parser
  // crash on a pathological input would.
  const wrapper = path.join(tmp, 'crashing-python')
  const patch = "import ast, os; _parse = ast.parse; ast.parse = lambda s, *a, **k: os._exit(9) if 'CRASH_ME' in s else _parse(s, *a, **k)"
  fs.writeFileSync(wrapper, `#!/bin/sh\n# args: -I -S -c SOURCE\nexec ${JSON.stringify(python)} "$1" "$2" "$3" "${patch}\n$4"\n`, {
    mode: 0o755
  })
  const sources = []
  const expected = []
  for (let i = 0; i < 150; i++) {
    const crash = i % 50 === 17
    const invalid = i % 7 === 5
    sources.push(crash ? `x${i} = 'CRASH_ME'` : invalid ? `def f${i}(:` : `x${i} = ${i}`)
    expected.push(crash || invalid ? 0 : 1)
  }
  const got = await lib.pythonParses(sources, { python: wrapper })
  t.same([...got], expected, 'every crash isolated, every other source answered')
  const again = await lib.pythonParses(['y = 2', 'def (:'], { python: wrapper })
  t.same([...again], [1, 0], 'the pool keeps working after its workers died')
})

t.test('syntax checks: duplicates, empty batches, concurrency and abort', { skip: noPython }, async (t) => {
  t.match(await lib.startPythonWorkers(), /^3\.\d+\.\d+$/, 'workers start ahead of use and report their version')
  t.same([...(await lib.pythonParses([]))], [])
  const sources = Array.from({ length: 500 }, (_, i) => (i % 3 === 0 ? 'x = (' : `x = ${i % 10}`))
  const results = await Promise.all([lib.pythonParses(sources), lib.pythonParses(sources.slice(7)), lib.pythonParses(['pass'])])
  t.same(
    [...results[0]],
    sources.map((s) => (s === 'x = (' ? 0 : 1))
  )
  t.same([...results[1]], [...results[0]].slice(7))
  t.same([...results[2]], [1])
  const controller = new AbortController()
  controller.abort()
  const aborted = await rewards.recode([wrap('x = 1')], ['x = 1'], { signal: controller.signal }).catch((e) => e)
  t.equal(aborted.code, 'ABORT_ERR')
  const late = new AbortController()
  const pending = rewards.recode(
    Array(200)
      .fill(0)
      .map((_, i) => wrap(`x = ${i}`)),
    Array(200).fill('x = 1'),
    { signal: late.signal }
  )
  late.abort()
  t.equal((await pending.catch((e) => e)).code, 'ABORT_ERR', 'an abort during the call stops it')
})

t.test('idle workers do not keep Node alive', { skip: noPython }, async (t) => {
  const script = `const { rewards } = require(${JSON.stringify(path.join(root, 'dist', 'cjs', 'index.js'))});
rewards.recode(['\`\`\`python\\nx = 1\\n\`\`\`'], ['x = 1']).then((r) => console.log(r[0]))`
  const started = Date.now()
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20000 })
  t.equal(child.status, 0, child.stderr)
  t.equal(child.stdout.trim(), '1', 'format -1 + ES* 2')
  t.ok(Date.now() - started < 15000, 'and the process exits by itself')
})

t.test('argument checks', async (t) => {
  await t.rejects(rewards.recode(['a'], ['a', 'b']), { code: 'ERR_INVALID_ARG', message: /1 completions but 2 targets/ })
  await t.rejects(rewards.esStar('a', ['a']), { code: 'ERR_INVALID_ARG' })
  await t.rejects(rewards.emStar(['a', 3], ['a', 'b']), { code: 'ERR_INVALID_ARG', message: /completions\[1\]/ })
  await t.rejects(rewards.format([null]), { code: 'ERR_INVALID_ARG' })
  await t.rejects(rewards.recode(['a'], ['a'], { device: 'tpu' }), { code: 'ERR_INVALID_ARG' })
  t.same([...(await rewards.recode([], []))], [])
})

t.test('one-pass placeholder restoration equals the sequential str.replace loop', async (t) => {
  const r = rng(t, 'placeholders')
  let checked = 0
  for (let i = 0; i < 3000; i++) {
    // Codes with many short literals (so indices pass 10) and placeholder-like text around them.
    let code = ''
    const parts = r.int(0, 40)
    for (let k = 0; k < parts; k++)
      code += r.pick([
        "'a'",
        '"b"',
        "'STRING_PLACEHOLDER_1'",
        'STRING_PLACEHOLDER_',
        'STRING_PLACEHOLDER_12',
        '0',
        '7',
        ' ',
        '#',
        '\n',
        "'''c'''",
        randomText(r, 2)
      ])
    const { text: withPlaceholders, literals } = text.replaceStrings(code)
    const stripped = text.removeComments(withPlaceholders)
    const fast = text.restoreStrings(stripped, literals)
    const slow = text.restoreStringsSequentially(stripped, literals)
    if (fast !== slow) {
      t.fail(`restoration differs for ${JSON.stringify(code)}: ${JSON.stringify(fast)} vs ${JSON.stringify(slow)}`)
      return
    }
    checked++
  }
  t.equal(checked, 3000, 'all agree')
  t.equal(
    text.restoreStrings('STRING_PLACEHOLDER_10 STRING_PLACEHOLDER_1', ['"a"', '"b"', '"c"']),
    '"b"0 "b"',
    'placeholder 1 takes the front of placeholder 10'
  )
})
