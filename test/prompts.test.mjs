// Prompt presets: ReCode's training prompt character for character (system, user, prefill), the version
// number shown as intended (not the original's new_version[2:] cut), Python's "None" for null fields,
// the CodeUpdateArena evaluation prompt's fields, custom templates, and rendering through a chat template
// with the prefill continued.
import t from 'tap'
import * as fs from 'fs'
import * as path from 'path'
import { root } from './helpers.mjs'

const p = await import(path.join(root, 'dist/cjs/prompts.js'))
const qwen = JSON.parse(fs.readFileSync(path.join(root, 'test/fixtures/qwen2.5-tokenizer_config.json'), 'utf8')).chat_template

const example = {
  dependency: 'PyTorch',
  library: 'PyTorch',
  newVersion: '2.0.0',
  version: '2.0.0',
  description: 'desc',
  updateInfo: 'torch.compile was added.',
  oldCode: 'import torch\nmodel = torch.jit.script(model)',
  newCode: 'model = torch.compile(model)',
  line: 1
}
const system =
  'You are a helpful coding assistant. Your task is to transform the old version of the code into the new version specified, based on the update information. You first thinks about the reasoning process in the mind and then provides the solution.'
const instruction =
  'Show your work in <think> </think> tags. And return the final code in <answer> </answer>, the code within <answer></answer> should be enclosed in ```python ``` tags.'

t.test('training prompt, exactly as ReCode builds it', async (t) => {
  const m = p.migrationPrompt(example)
  t.same(m, [
    { role: 'system', content: system },
    {
      role: 'user',
      content:
        '\nPyTorch performed an API update in version 2.0.0, and the update content includes:\n<doc>\ntorch.compile was added.\n</doc>\nThe old version of the code is:\n```python\nimport torch\nmodel = torch.jit.script(model)\n```\n\n' +
        instruction +
        '\n'
    },
    { role: 'assistant', content: 'Let me solve this step by step.\n<think>' }
  ])
  t.match(
    p.migrationPrompt(example, 'recode-train', { originalVersionSlice: true })[1].content,
    /in version 0\.0,/,
    "the original's slice, on request"
  )
  t.match(
    p.migrationPrompt({ ...example, newVersion: '==1.2.3', version: '1.2.3' }, 'recode-train', { originalVersionSlice: true })[1].content,
    /in version 1\.2\.3,/
  )
  const nulls = p.migrationPrompt({ ...example, oldCode: null, updateInfo: null })[1].content
  t.match(nulls, /<doc>\nNone\n<\/doc>/, 'null prints as None, as the original f-string does')
  t.match(nulls, /```python\nNone\n```/)
})

t.test('rendered with the Qwen2.5 template, or the ChatML template ReCode passes, the prefill is continued', async (t) => {
  const m = p.migrationPrompt(example)
  const expected = `<|im_start|>system\n${system}<|im_end|>\n<|im_start|>user\n${m[1].content}<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think>`
  t.equal(p.renderPrompt(m, qwen), expected)
  t.equal(p.renderPrompt(m, p.RECODE_CHATML_TEMPLATE), expected, "same text through the template of ReCode's GRPO script")
  // A LanguageModel renders with its own template.
  const calls = []
  const model = {
    renderChat: (_msgs, opts) => {
      calls.push(opts)
      return 'X'
    }
  }
  t.equal(p.renderPrompt(m, model), 'X')
  t.same(calls, [{ continueFinalMessage: true }])
  t.equal(p.renderPrompt(m.slice(0, 2), qwen).slice(-22), '<|im_start|>assistant\n', 'no prefill: a generation prompt opens the turn')
})

t.test('CodeUpdateArena evaluation prompt', async (t) => {
  const problem = {
    id: 'x',
    update: {
      description: 'Add a unit argument.',
      rationale: 'r',
      docstring: 'DOC',
      signature: "math.sin(x, unit='radians')",
      imports: 'import math',
      implementation: 'def sin(x): pass',
      updateType: 'add-argument',
      functionPath: 'math.sin',
      package: 'math',
      updateId: 'u'
    },
    scenario: 'SCEN',
    problem: 'PROB',
    solutionSignature: 'def f(x):',
    unitTests: ['def test_a():\n    pass\n'],
    imports: 'import math',
    refSolution: 'def f(x): pass',
    source: { file: 'f', line: 1 }
  }
  const m = p.codeUpdateArenaPrompt(problem)
  t.equal(
    m[0].content,
    'You are a helpful code assistant. You first think about the reasoning process in the mind and then provide a Python solution to a problem in a real-world scenario.'
  )
  t.equal(
    m[1].content,
    "\nUpdate Note: There's an recent update to a function math.sin \u2013 Add a unit argument.. The function now has a new function signature \u2013 math.sin(x, unit='radians'). Here is a detailed documentation about the update:\n<doc>\nDOC\n</doc>\nScenario: SCEN\nProblem: PROB\nSolution Signature: def f(x):\n\n" +
      instruction +
      '\n'
  )
  t.equal(m[2].content, p.RECODE_PREFILL)
})

t.test('custom templates and placeholders', async (t) => {
  const custom = { name: 'mine', system: '', user: 'Migrate {dependency} {{literal}} to {version}:\n{old_code}', prefill: '' }
  t.same(
    p.migrationPrompt(example, custom),
    [{ role: 'user', content: 'Migrate PyTorch {literal} to 2.0.0:\nimport torch\nmodel = torch.jit.script(model)' }],
    'empty system and prefill are left out'
  )
  t.throws(() => p.migrationPrompt(example, { ...custom, user: 'uses {no_such_field}' }), {
    code: 'ERR_INVALID_ARG',
    message: /mine: no field 'no_such_field'/
  })
  t.throws(() => p.migrationPrompt(example, 'no-such-preset'), { code: 'ERR_INVALID_ARG', message: /unknown prompt preset/ })
  t.throws(() => p.migrationPrompt(example, { name: 'x', user: 1 }), { code: 'ERR_INVALID_ARG' })
  t.same(Object.keys(p.promptPresets).sort(), ['humaneval', 'recode-codeupdatearena', 'recode-train'])
  const he = p.humanEvalPrompt({
    taskId: 'HumanEval/0',
    prompt: 'def f():\n    """doc"""\n',
    entryPoint: 'f',
    canonicalSolution: '',
    test: '',
    source: {}
  })
  t.equal(he.length, 3)
  t.match(he[1].content, /```python\ndef f\(\):\n {4}"""doc"""\n\n```/)
  t.equal(he[2].content, p.RECODE_PREFILL)
})
