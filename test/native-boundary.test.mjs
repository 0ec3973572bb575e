// Issue 11, native boundary: transferring (detaching) the ArrayBuffer of an input or an output while an async
// binding runs never crashes the process; the job gives the result of the original input, or rejects with
// ERR_INVALID_ARG for an output that can no longer receive it; an array detached before the call gives
// ERR_INVALID_ARG. Each case runs in a child process (test/native_boundary_child.mjs) so a native crash
// fails the case, with its signal, instead of killing tap.
import t from 'tap'
import { spawn } from 'node:child_process'
import path from 'node:path'
import { root } from './helpers.mjs'

const seed = Number(process.env.RECODE_TEST_SEED ?? Date.now() % 1e9)
t.comment(`seed ${seed} (RECODE_TEST_SEED reproduces it)`)

function runCase(which) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--expose-gc', path.join(root, 'test', 'native_boundary_child.mjs'), which, String(seed)], {
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => {
      stdout += d
    })
    child.stderr.on('data', (d) => {
      stderr += d
    })
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }))
  })
}

// case -> the number of checks it reports (a child that stops early fails the count)
const cases = {
  'editdist:clone': 2,
  'editdist:worker': 2,
  'sample:clone': 1,
  'sample:worker': 1,
  'logprob:clone': 2,
  'logprob:worker': 2,
  'rl:clone': 2,
  'rl:worker': 2,
  'adamw:clone': 3,
  'adamw:worker': 3,
  'model:clone': 3,
  'model:worker': 3,
  detached: 8
}

for (const [which, count] of Object.entries(cases)) {
  t.test(which, async (t) => {
    const r = await runCase(which)
    t.equal(r.signal, null, `no crash (signal ${r.signal})`)
    t.equal(r.code, 0, `exit code 0${r.stderr ? `; stderr: ${r.stderr.slice(-2000)}` : ''}`)
    let checks = []
    try {
      checks = JSON.parse(r.stdout.trim().split('\n').pop() || '[]')
    } catch {
      t.fail(`unreadable output: ${r.stdout.slice(-500)}`)
    }
    t.equal(checks.length, count, 'every check of the case ran')
    for (const c of checks) t.ok(c.ok, c.name + (c.ok ? '' : ` (${c.detail})`))
  })
}
