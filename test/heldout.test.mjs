// Held-out evaluation (the embedded default's before/after numbers) with a model whose answers are known,
// and the `recode demo` command end to end on a tiny random model.
import t from 'tap'
import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { evaluateHeldOut, syntheticTasks, closePythonWorkers } from '../dist/cjs/index.js'
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
  t.ok(fs.existsSync(path.join(out, 'model', 'config.json')), 'the tiny model folder is in the run')
  t.throws(
    () => execFileSync(process.execPath, [path.join(root, 'dist/cjs/cli.js'), 'demo', '--tasks', '0'], { stdio: 'pipe' }),
    'bad --tasks is rejected'
  )
  fs.rmSync(out, { recursive: true, force: true })
})
