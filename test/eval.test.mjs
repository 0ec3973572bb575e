// Evaluation: pass@k against exact binomials, code extraction, update-install statements, HumanEval's
// canonical solutions (100%), CodeUpdateArena's reference solutions (>= 95%; a deterministic sample by
// default, all 577 problems with RECODE_FULL_EVAL=1), wrong solutions failing, a solution that ignores
// the update failing UPass, the model path with a canned LanguageModel, and `recode eval`.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { root } from './helpers.mjs'
import { sharedData, pickPython } from './fixtures/shared.mjs'

const e = await import(path.join(root, 'dist/cjs/eval/evaluate.js'))
const metrics = await import(path.join(root, 'dist/cjs/eval/metrics.js'))
const { extractCode } = await import(path.join(root, 'dist/cjs/eval/extract.js'))
const programs = await import(path.join(root, 'dist/cjs/eval/programs.js'))
const d = await import(path.join(root, 'dist/cjs/data/index.js'))
const { probePython } = await import(path.join(root, 'dist/cjs/eval/python.js'))
const shared = sharedData()
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-eval-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

/** Exact 1 - C(n-c,k)/C(n,k) with BigInt binomials, to 1e-30. */
function exactPassAtK(n, c, k) {
  const C = (a, b) => {
    if (b < 0 || b > a) return 0n
    let r = 1n
    for (let i = 1n; i <= BigInt(b); i++) r = (r * (BigInt(a) - BigInt(b) + i)) / i
    return r
  }
  const scale = 10n ** 30n
  return 1 - Number((C(n - c, k) * scale) / C(n, k)) / 1e30
}

t.test('pass@k: product form equals the exact estimator; k > n is undefined', async (t) => {
  let worst = 0
  for (const n of [1, 2, 5, 10, 17, 30, 200]) {
    for (let c = 0; c <= n; c += n > 30 ? 13 : 1) {
      for (const k of [1, 2, 5, 10, 100]) {
        if (k > n) {
          t.equal(metrics.passAtK(n, c, k), null)
          continue
        }
        const got = metrics.passAtK(n, c, k)
        const want = exactPassAtK(n, c, k)
        worst = Math.max(worst, Math.abs(got - want))
      }
    }
  }
  t.ok(worst < 1e-12, `max abs error vs exact binomials ${worst}`)
  t.equal(metrics.passAtK(5, 0, 1), 0)
  t.equal(metrics.passAtK(5, 5, 5), 1)
  t.ok(Math.abs(metrics.passAtK(5, 2, 1) - 0.4) < 1e-15, 'pass@1 = c/n')
  t.equal(metrics.passAtK(10, 3, 10), 1, 'n - c < k: some sample of any k-subset passes')
  t.equal(
    metrics.meanPassAtK(
      [
        { n: 5, c: 1 },
        { n: 5, c: 4 }
      ],
      1
    ),
    0.5
  )
  t.equal(
    metrics.meanPassAtK(
      [
        { n: 1, c: 1 },
        { n: 5, c: 0 }
      ],
      5
    ),
    0,
    'problems with fewer than k samples are left out'
  )
  t.equal(metrics.meanPassAtK([{ n: 1, c: 1 }], 5), null)
  t.throws(() => metrics.passAtK(3, 4, 1), RangeError)
  t.throws(() => metrics.passAtK(3, 1, 0), RangeError)
})

t.test("code extraction follows the prompt's format", async (t) => {
  const full = 'Reasoning about <answer> tags...\n</think>\n<answer>\n```python\ndef f():\n    return 1\n```\n</answer>'
  t.same(extractCode(full), { code: 'def f():\n    return 1\n', method: 'answer-fence' })
  t.same(extractCode('x</think><answer>\n```\nprint(2)\n```</answer>'), { code: 'print(2)\n', method: 'answer-fence' })
  t.same(extractCode('</think>\n<answer>\nprint(3)\n</answer>'), { code: 'print(3)\n', method: 'answer' })
  t.same(extractCode('Here:\n```python\na = 1\n```\nand\n```python\nb = 2\n```'), { code: 'a = 1\n', method: 'fence' })
  t.same(extractCode('def g():\n    pass\n'), { code: 'def g():\n    pass\n', method: 'bare' })
  t.same(extractCode('I think the answer is...'), { code: 'I think the answer is...', method: 'bare' })
  t.same(extractCode('thinking forever without closing'.padEnd(40) + '</think> nothing'), { code: null, method: 'none' })
  t.same(extractCode('</think><answer></answer>'), { code: null, method: 'none' })
  t.same(extractCode(''), { code: null, method: 'none' })
  t.same(extractCode('   \n'), { code: null, method: 'none' })
  t.same(
    extractCode('<answer>\n```python\nunclosed = 1\n```'),
    { code: 'unclosed = 1\n', method: 'answer-fence' },
    'an unclosed answer still counts'
  )
})

t.test('update install statements per update type', async (t) => {
  const u = (updateType, functionPath, signature, implementation) => ({
    updateType,
    functionPath,
    signature,
    implementation,
    updateId: 'x'
  })
  t.same(
    programs.updateInstallStatements(
      u('add-argument', 'math.sin', "math.sin(x, unit='radians')", 'def sin(x, unit="radians"):\n    pass\n')
    ),
    ['math.sin = sin']
  )
  t.same(
    programs.updateInstallStatements(u('modify-output-data_type', 'numpy.linalg.norm', 'numpy.linalg.norm(x)', 'def norm(x):\n    pass\n')),
    ['numpy.linalg.norm = norm']
  )
  t.same(
    programs.updateInstallStatements(
      u('add-output-semantics', 're.sub', 're.sub(p)', 'def helper():\n    pass\n\ndef sub(p):\n    pass\n')
    ),
    ['re.sub = sub'],
    'helper functions do not confuse the name'
  )
  t.same(
    programs.updateInstallStatements(u('modify-function-name', 'math.sin', 'def math.sine(x,/)', '# renamed\ndef sine(x):\n    pass\n')),
    ['del math.sin', "setattr(math, 'sine', sine)"]
  )
  t.same(programs.updateInstallStatements(u('add-function', 'math.comb', 'math.multicomb(n, k, /)', 'def multicomb(n, k):\n    pass\n')), [
    "setattr(math, 'multicomb', multicomb)"
  ])
  t.throws(() => programs.updateInstallStatements(u('modify-function-semantics', 'math.sin', 'math.sin(x)', 'def sin(x): pass')), {
    code: 'ERR_DATA'
  })
})

const cuaPick = pickPython(probePython, ['numpy', 'sympy', 'torch', 'pandas'])
const basePick = pickPython(probePython, [])

t.test(
  'HumanEval: canonical solutions pass, wrong ones fail with their category',
  { skip: !shared ? 'shared data not found' : basePick.python === null ? `no python3: ${basePick.why}` : false },
  async (t) => {
    const problems = d.loadHumanEval(path.join(shared, 'humaneval', 'HumanEval.jsonl.gz'))
    const r = await e.evaluate({
      benchmark: 'humaneval',
      data: problems,
      completions: problems.map((p) => ({ id: p.taskId, completion: p.canonicalSolution })),
      sandbox: { python: basePick.python, concurrency: 2 }
    })
    const failed = r.records.filter((x) => x.c === 0)
    t.comment(
      `HumanEval canonical solutions: ${r.problems - failed.length}/${r.problems} pass = ${(100 * r.passAtK['1']).toFixed(2)}% (${r.programsRun} programs in ${r.seconds.execute.toFixed(1)} s, ${r.isolation.kind}, ${basePick.why})`
    )
    for (const f of failed) t.comment(`  FAIL ${f.id}: ${f.samples[0].category} ${f.samples[0].errorType}: ${f.samples[0].message}`)
    t.equal(r.passAtK['1'], 1, 'pass@1 = 100%')
    t.equal(r.passAtK['5'], null, 'pass@5 undefined with one sample')
    t.match(e.formatEvaluation(r), /\| humaneval \| 164 \| 100\.0 \| n\/a \|/)

    const p = problems.slice(0, 4)
    const wrong = [
      { id: p[0].taskId, completion: '    return not True\n' },
      {
        id: p[1].taskId,
        completion: '</think>\n<answer>\n```python\ndef separate_paren_groups(paren_string):\n    return [paren_string[\n```\n</answer>'
      },
      { id: p[2].taskId, completion: 'I would truncate the number but I am not sure how.</think>' },
      { id: p[3].taskId, completion: '    while True:\n        pass\n' },
      {
        id: p[0].taskId,
        completion:
          '</think>\n<answer>\n```python\ndef has_close_elements(numbers, threshold):\n    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```\n</answer>'
      },
      { id: p[1].taskId, completion: '    raise ValueError("no")\n' }
    ]
    const w = await e.evaluate({
      benchmark: 'humaneval',
      data: p,
      completions: wrong,
      k: [1, 2],
      // the loop is killed at the limit; the limit is far above what the other programs need on a loaded machine
      sandbox: { python: basePick.python, concurrency: 2, timeoutMs: 20000 }
    })
    const cats = w.records.map((x) => x.samples.map((s) => s.category))
    t.same(cats, [['assertion', 'passed'], ['syntax_error', 'exception'], ['no_code'], ['timeout']])
    t.same(w.failures, { syntax_error: 1, exception: 1, assertion: 1, timeout: 1, no_code: 1 })
    t.same(
      w.records.map((x) => x.passAtK),
      [
        { 1: 0.5, 2: 1 },
        { 1: 0, 2: 0 },
        { 1: 0, 2: null },
        { 1: 0, 2: null }
      ]
    )
    t.equal(w.passAtK['1'], 0.125)
    t.equal(w.passAtK['2'], 0.5, 'k = 2 averaged over the two problems with two samples')
  }
)

t.test(
  'CodeUpdateArena reference solutions, wrong solutions, UPass',
  {
    skip: !shared
      ? 'shared data not found'
      : cuaPick.python === null
        ? `needs a python3 with numpy, sympy, torch, pandas: ${cuaPick.why}`
        : false
  },
  async (t) => {
    const all = d.loadCodeUpdateArena(path.join(shared, 'codeupdatearena', 'arena_grouped_2024-07-02.jsonl')).problems
    const full = process.env.RECODE_FULL_EVAL === '1'
    const stride = 20
    const problems = full ? all : all.filter((_, i) => i % stride === 0)
    // A generous timeout: the reference run checks correctness, and a machine shared by many jobs can take
    // far longer than the original 15 s to import torch. UPass of every reference solution runs only with
    // RECODE_FULL_EVAL=1 (it doubles the programs); UPass itself is checked on the sine problem below.
    const timeoutMs = Number(process.env.RECODE_EVAL_TIMEOUT_MS ?? 60000)
    t.comment(`interpreter ${cuaPick.why}`)
    t.comment(
      full
        ? `all ${all.length} problems (RECODE_FULL_EVAL=1)`
        : `deterministic sample: every ${stride}th problem, ${problems.length} of ${all.length} (RECODE_FULL_EVAL=1 runs all)`
    )
    const r = await e.evaluate({
      benchmark: 'codeupdatearena',
      data: problems,
      completions: problems.map((p) => ({ id: p.id, completion: p.refSolution })),
      upass: full,
      sandbox: { python: cuaPick.python, concurrency: 2, timeoutMs }
    })
    const passed = r.records.filter((x) => x.c === 1).length
    t.comment(
      `reference solutions: ${passed}/${r.problems} pass = ${(100 * r.passAtK['1']).toFixed(2)}%${full ? `, UPass ${(100 * r.upassAtK['1']).toFixed(2)}%` : ''} (${r.programsRun} programs in ${r.seconds.execute.toFixed(1)} s, timeout ${timeoutMs / 1000} s, ${r.isolation.kind})`
    )
    for (const x of r.records) {
      const s = x.samples[0]
      if (!s.passed) t.comment(`  FAIL ${x.id}: ${s.category} ${s.errorType} (${s.testsPassed}/${s.testsTotal} tests): ${s.message}`)
      else if (full && !s.upassed) t.comment(`  passes without the update too (not UPass): ${x.id}`)
    }
    t.comment(e.formatEvaluation(r).split('\n').join('\n# '))
    t.ok(r.passAtK['1'] >= 0.95, `pass@1 ${r.passAtK['1']} >= 0.95`)
    t.same(Object.keys(r.perPackage).sort(), [...new Set(problems.map((p) => p.update.package))].sort())

    // Deliberately wrong solutions: the right signature, a wrong body.
    const some = problems.filter((p) => p.update.package !== 'torch').slice(0, 6)
    const wrong = some.map((p) => {
      const sig = p.solutionSignature.trim().replace(/^def\s+/, '')
      const name = sig.slice(0, sig.indexOf('('))
      return { id: p.id, completion: `def ${name}(*args, **kwargs):\n    return None\n` }
    })
    const w = await e.evaluate({
      benchmark: 'codeupdatearena',
      data: some,
      completions: wrong,
      sandbox: { python: cuaPick.python, concurrency: 2 }
    })
    t.equal(w.passAtK['1'], 0, 'wrong solutions fail')
    t.equal(w.upassAtK['1'], 0)

    // A solution that ignores the update (converts degrees itself): passes, but also without the update.
    const sine = all.find((p) => p.id === '[math.sin]:[modify-output-semantics]:[update-0]:[prog_syn-0]')
    const ignoring =
      'from typing import List, Tuple\nimport math\n\ndef calculate_sine_values(degrees_list: List[int]) -> List[Tuple[float, float]]:\n    return [(d, math.sin(abs(d) % 360 * 3.141592653589793 / 180)) for d in degrees_list]\n'
    const u = await e.evaluate({
      benchmark: 'codeupdatearena',
      data: [sine],
      completions: [
        { id: sine.id, completion: sine.refSolution },
        { id: sine.id, completion: ignoring }
      ],
      k: [1, 2],
      sandbox: { python: cuaPick.python, concurrency: 2 }
    })
    const [ref, ign] = u.records[0].samples
    t.same([ref.passed, ref.upassed, ref.passedWithoutUpdate], [true, true, false], 'the reference solution needs the update')
    t.same([ign.passed, ign.upassed, ign.passedWithoutUpdate], [true, false, true], 'the update-ignoring solution passes but fails UPass')
    t.same(u.passAtK, { 1: 1, 2: 1 })
    t.same(u.upassAtK, { 1: 0.5, 2: 1 })
  }
)

t.test(
  'evaluate with a LanguageModel (canned outputs) and cancellation',
  { skip: !shared ? 'shared data not found' : basePick.python === null ? `no python3: ${basePick.why}` : false },
  async (t) => {
    const problems = d.loadHumanEval(path.join(shared, 'humaneval', 'HumanEval.jsonl.gz')).slice(0, 3)
    const seen = []
    const model = {
      renderChat: (messages, opts) => {
        seen.push(opts)
        return messages.map((m) => m.content).join('|')
      },
      generate: async (prompts, opts) =>
        prompts.map((prompt) => {
          const p = problems.find((q) => prompt.includes(q.prompt))
          const good = `reasoning</think>\n<answer>\n\`\`\`python\n${p.prompt}${p.canonicalSolution}\`\`\`\n</answer>`
          return Array.from({ length: opts.n }, (_, i) => ({
            text: i === 0 ? good : 'no idea</think>',
            tokenIds: [],
            logprobs: [],
            finishReason: 'eos'
          }))
        }),
      dispose: () => {}
    }
    const progress = []
    const r = await e.evaluate({
      benchmark: 'humaneval',
      data: problems,
      model,
      samples: 2,
      k: [1, 2],
      batchSize: 2,
      sandbox: { python: basePick.python, concurrency: 2 },
      onProgress: (p) => progress.push(p.phase)
    })
    t.same(
      seen,
      [{ continueFinalMessage: true }, { continueFinalMessage: true }, { continueFinalMessage: true }],
      'the prefill is continued'
    )
    t.same(
      r.records.map((x) => [x.n, x.c]),
      [
        [2, 1],
        [2, 1],
        [2, 1]
      ]
    )
    t.equal(r.passAtK['1'], 0.5)
    t.equal(r.passAtK['2'], 1)
    t.ok(progress.includes('generate') && progress.includes('execute'))
    const ac = new AbortController()
    ac.abort()
    await t.rejects(e.evaluate({ benchmark: 'humaneval', data: problems, model, signal: ac.signal }), { code: 'ABORT_ERR' })
    await t.rejects(e.evaluate({ benchmark: 'humaneval', data: problems }), { code: 'ERR_INVALID_ARG' })
    await t.rejects(e.evaluate({ benchmark: 'humaneval', data: problems, completions: [{ id: 'HumanEval/999', completion: 'x' }] }), {
      code: 'ERR_DATA',
      message: /HumanEval\/999/
    })
  }
)

t.test(
  'recode eval',
  { skip: !shared ? 'shared data not found' : basePick.python === null ? `no python3: ${basePick.why}` : false },
  async (t) => {
    const cli = path.join(root, 'dist/cjs/cli.js')
    const data = path.join(shared, 'humaneval', 'HumanEval.jsonl.gz')
    const problems = d.loadHumanEval(data).slice(0, 3)
    const comp = path.join(tmp, 'completions.jsonl')
    fs.writeFileSync(
      comp,
      problems.map((p, i) => JSON.stringify({ id: p.taskId, completion: i === 2 ? '    return 0\n' : p.canonicalSolution })).join('\n') +
        '\n'
    )
    const out = path.join(tmp, 'out', 'result.json')
    const res = spawnSync(
      process.execPath,
      [
        cli,
        'eval',
        'humaneval',
        '--data',
        data,
        '--completions',
        comp,
        '--output',
        out,
        '--python',
        basePick.python,
        '--k',
        '1,5',
        '--quiet'
      ],
      { encoding: 'utf8' }
    )
    t.equal(res.status, 0, res.stderr)
    t.match(res.stdout, /\| humaneval \| 3 \| 66\.7 \| n\/a \|/)
    t.match(res.stdout, /161 problem\(s\) had no completion/)
    const json = JSON.parse(fs.readFileSync(out, 'utf8'))
    t.same(json.passAtK, { 1: 2 / 3, 5: null })
    t.equal(json.records.length, 3)
    t.equal(json.records[2].samples[0].category, 'assertion')
    const bad = spawnSync(process.execPath, [cli, 'eval', 'humaneval', '--data', data, '--completions', path.join(tmp, 'missing.jsonl')], {
      encoding: 'utf8'
    })
    t.equal(bad.status, 1)
    t.match(bad.stderr, /missing\.jsonl: cannot read.*\[ERR_DATA\]/)
    const notModel = spawnSync(process.execPath, [cli, 'eval', 'humaneval', '--data', data, '--model', tmp], { encoding: 'utf8' })
    t.equal(notModel.status, 1, '--model on a folder that is not a model fails')
    t.match(notModel.stderr, /config\.json.*\[ERR_MODEL\]/s)
    // end to end with a real (tiny, random) model folder: generation, extraction, execution, scores
    const modelDir = path.join(tmp, 'tiny')
    spawnSync(process.execPath, [cli, 'init-model', '--preset', 'tiny', '--arch', 'qwen2', '--out', modelDir], { encoding: 'utf8' })
    const modelOut = path.join(tmp, 'model-eval.json')
    const run = spawnSync(
      process.execPath,
      [
        cli,
        'eval',
        'humaneval',
        '--data',
        data,
        '--model',
        modelDir,
        '--limit',
        '2',
        '--samples',
        '2',
        '--max-new-tokens',
        '8',
        '--k',
        '1',
        '--output',
        modelOut,
        '--python',
        basePick.python,
        '--quiet'
      ],
      { encoding: 'utf8' }
    )
    t.equal(run.status, 0, `eval --model runs (${run.stderr.slice(0, 300)})`)
    const modelJson = JSON.parse(fs.readFileSync(modelOut, 'utf8'))
    t.equal(modelJson.records.length, 2, 'one record per evaluated problem')
    t.equal(modelJson.records[0].samples.length, 2, 'two samples each')
    t.type(modelJson.passAtK['1'], 'number')
    const usage = spawnSync(process.execPath, [cli, 'eval', 'mbpp', '--data', data], { encoding: 'utf8' })
    t.equal(usage.status, 1)
    t.match(usage.stderr, /usage: recode eval codeupdatearena\|humaneval/)
  }
)

t.test(
  'recode eval: SIGTERM (as Ctrl-C) stops the evaluation with status 143 and writes nothing',
  { skip: basePick.python === null ? `no python3: ${basePick.why}` : false },
  async (t) => {
    const { spawn } = await import('child_process')
    const dir = fs.mkdtempSync(path.join(tmp, 'sigterm-'))
    const data = path.join(dir, 'he.jsonl')
    const n = 40
    fs.writeFileSync(
      data,
      Array.from({ length: n }, (_, i) =>
        JSON.stringify({
          task_id: `HumanEval/${i}`,
          prompt: `def f${i}(x):\n`,
          canonical_solution: '    return x\n',
          test: 'def check(candidate):\n    assert candidate(1) == 1\n',
          entry_point: `f${i}`
        })
      ).join('\n') + '\n'
    )
    const comp = path.join(dir, 'completions.jsonl')
    fs.writeFileSync(
      comp,
      Array.from({ length: n }, (_, i) =>
        JSON.stringify({ id: `HumanEval/${i}`, completion: '    import time\n    time.sleep(0.5)\n    return x\n' })
      ).join('\n') + '\n'
    )
    const out = path.join(dir, 'out', 'result.json')
    const child = spawn(
      process.execPath,
      [
        path.join(root, 'dist/cjs/cli.js'),
        'eval',
        'humaneval',
        '--data',
        data,
        '--completions',
        comp,
        '--output',
        out,
        '--python',
        basePick.python,
        '--concurrency',
        '2'
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] }
    )
    let stderr = ''
    let sent = false
    // Sent once the first progress line shows programs running: bounded by what is checked, not by time.
    child.stderr.on('data', (b) => {
      stderr += b
      if (!sent && new RegExp(`execute: \\d+/${n}`).test(stderr)) {
        sent = true
        child.kill('SIGTERM')
      }
    })
    const backstop = setTimeout(() => child.kill('SIGKILL'), 600_000)
    const [code, signal] = await new Promise((resolve) => child.on('exit', (c, s) => resolve([c, s])))
    clearTimeout(backstop)
    t.ok(sent, 'programs were running when the signal came')
    t.equal(signal, null)
    t.equal(code, 143, stderr.slice(-300))
    t.match(stderr, /interrupted \(SIGTERM\); nothing written/)
    t.notOk(fs.existsSync(out), 'no output file')
  }
)
