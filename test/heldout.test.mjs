// Held-out evaluation (the embedded default's before/after numbers) with a model whose answers are known,
// and the `recode demo` command end to end on a tiny random model.
import t from 'tap'
import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { evaluateHeldOut, syntheticTasks, closePythonWorkers, initModel } from '../dist/cjs/index.js'
import { evaluateHeldOutDetailed, pickExamples, examplesText, oldCodeScores, oldCodeLine } from '../dist/cjs/train/heldout.js'
import { root } from './helpers.mjs'

t.teardown(() => closePythonWorkers())

function cannedModel(answers) {
  const seen = []
  return {
    seen,
    renderChat: (messages, opts) => {
      seen.push({ messages, opts })
      return messages.map((m) => `${m.role}: ${m.content}`).join('\n')
    },
    generate: async (prompts) => prompts.map((_, i) => [{ text: answers(i), tokenIds: [], logprobs: [], finishReason: 'eos' }]),
    dispose: () => {}
  }
}

t.test('a model that answers with the target scores format 1, ES* 2, exact match 1', async (t) => {
  const { heldOut } = syntheticTasks({ seed: 3, train: 0, heldOut: 6 })
  const perfect = cannedModel((i) => ` reasoning</think>\n<answer>\n\`\`\`python\n${heldOut[i].new_code}\n\`\`\`\n</answer>`)
  const s = await evaluateHeldOut(perfect, heldOut)
  t.same({ f: s.formatRate, e: s.esStar, m: s.exactMatch, r: s.reward, n: s.completions }, { f: 1, e: 2, m: 1, r: 3, n: 6 })
  t.equal(perfect.seen[0].opts.continueFinalMessage, true, 'the ReCode prefill is continued')
  t.match(perfect.seen[0].messages.at(-1).content, /^Let me solve this step by step\.\n<think>$/)
  t.match(perfect.seen[0].messages[1].content, heldOut[0].old_code, 'the old code is in the prompt')

  const copyOld = cannedModel((i) => ` x</think><answer>\`\`\`python\n${heldOut[i].old_code}\n\`\`\`</answer>`)
  const c = await evaluateHeldOut(copyOld, heldOut)
  t.equal(c.formatRate, 1)
  t.equal(c.exactMatch, 0, 'old code is never the new code')
  t.ok(c.esStar > -1.5 && c.esStar < 2, `copying the old code scores in between (${c.esStar.toFixed(3)})`)
  const ref = await oldCodeScores(heldOut)
  t.same(
    { f: ref.formatRate, e: ref.esStar, m: ref.exactMatch, n: ref.completions },
    { f: 1, e: c.esStar, m: 0, n: 6 },
    'oldCodeScores is that model, without a model'
  )
  t.match(oldCodeLine(ref), new RegExp(`old code unchanged scores ES\\* ${ref.esStar.toFixed(3)}`), 'the line the CLI prints')

  const noFormat = cannedModel(() => 'no idea')
  const z = await evaluateHeldOut(noFormat, heldOut)
  t.same({ f: z.formatRate, e: z.esStar, m: z.exactMatch }, { f: 0, e: -2, m: 0 })
})

t.test('recode demo writes summary.json and names the run folder', async (t) => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-demo-'))
  const stdout = execFileSync(
    process.execPath,
    [path.join(root, 'dist/cjs/cli.js'), 'demo', '--out', out, '--tasks', '4', '--max-new-tokens', '12'],
    { encoding: 'utf8' }
  )
  t.match(stdout, `run folder: ${out}`)
  const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'))
  for (const k of ['formatRate', 'esStar', 'exactMatch', 'reward']) t.type(summary.before[k], 'number', `before.${k}`)
  t.equal(summary.tasks, 4)
  t.equal(summary.oldCode.completions, 4, 'the old-code reference over the same tasks')
  t.match(stdout, `old code unchanged scores ES* ${summary.oldCode.esStar.toFixed(3)}`, 'printed under the scores')
  t.match(stdout, /model: {4}\S*models\/nova-base \(the shipped demo base model/, 'the shipped demo base model by default')
  t.equal(summary.examples.length, 3, 'three tasks side by side by default')
  for (const what of ['update note:', 'old code:', 'target:', 'answer before training']) t.match(stdout, what, `prints ${what}`)
  t.match(stdout, summary.examples[0].oldCode.split('\n')[0], 'the old code itself')
  // a second model as "after": the same model here, so the scores and answers agree
  const tiny = path.join(out, 'tiny')
  initModel({ preset: 'tiny', arch: 'qwen2', out: tiny, seed: 1 })
  const out2 = path.join(out, 'again')
  const stdout2 = execFileSync(
    process.execPath,
    [
      path.join(root, 'dist/cjs/cli.js'),
      'demo',
      '--model',
      tiny,
      '--trained',
      tiny,
      '--out',
      out2,
      '--tasks',
      '4',
      '--examples',
      '2',
      '--max-new-tokens',
      '12'
    ],
    { encoding: 'utf8' }
  )
  const s2 = JSON.parse(fs.readFileSync(path.join(out2, 'summary.json'), 'utf8'))
  t.same(s2.after, s2.before, 'the same model scores the same')
  t.equal(s2.examples.length, 2)
  t.equal(s2.examples[0].answers.after.completion, s2.examples[0].answers.before.completion, 'both answers shown')
  t.match(stdout2, /answer before training[\s\S]*answer after training/, 'side by side in the output')
  t.match(stdout2, /^after: {2}format rate/m, 'after line')
  t.throws(
    () => execFileSync(process.execPath, [path.join(root, 'dist/cjs/cli.js'), 'demo', '--tasks', '0'], { stdio: 'pipe' }),
    'bad --tasks is rejected'
  )
  fs.rmSync(out, { recursive: true, force: true })
})

t.test('examples: the tasks that became exact first, then the largest ES* gains; shown in task order', async (t) => {
  const { heldOut } = syntheticTasks({ seed: 5, train: 0, heldOut: 6 })
  const good = (i) => ` ok</think>\n<answer>\n\`\`\`python\n${heldOut[i].new_code}\n\`\`\`\n</answer>`
  const old = (i) => ` ok</think>\n<answer>\n\`\`\`python\n${heldOut[i].old_code}\n\`\`\`\n</answer>`
  const before = await evaluateHeldOutDetailed(
    cannedModel((i) => (i === 1 ? good(i) : 'no idea')),
    heldOut
  )
  // after: tasks 4 and 2 exact (new), 1 stays exact, 0 and 3 copy the old code (an ES* gain), 5 nothing
  const after = await evaluateHeldOutDetailed(
    cannedModel((i) => (i === 4 || i === 2 || i === 1 ? good(i) : i === 0 || i === 3 ? old(i) : 'no idea')),
    heldOut
  )
  t.same(
    before.answers.map((a) => a.exact),
    [false, true, false, false, false, false]
  )
  t.equal(before.scores.exactMatch, 1 / 6)
  const picked = pickExamples(heldOut, { before: before.answers, after: after.answers }, 3)
  const gain = (i) => after.answers[i].esStar - before.answers[i].esStar
  const third = gain(0) >= gain(3) ? 0 : 3
  t.same(
    picked.map((e) => e.task),
    [2, 4, third].sort((a, b) => a - b),
    'the two newly exact tasks and the larger ES* gain'
  )
  t.equal(picked[0].oldCode, heldOut[picked[0].task].old_code)
  t.equal(picked.find((e) => e.task === 2).answers.after.exact, true)
  const text = examplesText(picked)
  t.match(text, `--- held-out task 3 (${heldOut[2].dependency}) ---`)
  t.match(text, /answer before training \(format wrong, ES\* -2\.00\):\n {4}<think>no idea/, 'the base answer with its scores')
  t.match(text, /answer after training \(format ok, ES\* 2\.00, exact match\)/, 'the trained answer with its scores')
  t.same(
    pickExamples(heldOut, { before: before.answers }, 2).map((e) => e.task),
    [0, 1],
    'without an after: the first tasks'
  )
})
