// The bundled synthetic API-update tasks: deterministic for a seed, valid Python on both sides, every update
// kind present, held-out updates disjoint from training, ReCode's row fields.
import t from 'tap'
import { spawnSync } from 'child_process'
import { syntheticTasks, syntheticUpdates, UPDATE_KINDS } from '../dist/cjs/train/synthetic.js'
import { rng } from './helpers.mjs'

const FIELDS = ['dependency', 'new_version', 'description', 'update_info', 'old_code', 'new_code']

t.test('deterministic for a seed, different across seeds', async (t) => {
  const r = rng(t)
  const seed = r.int(0, 1e6)
  const a = syntheticTasks({ seed, train: 300, heldOut: 50 })
  const b = syntheticTasks({ seed, train: 300, heldOut: 50 })
  t.same(a, b, `seed ${seed} twice`)
  const c = syntheticTasks({ seed: seed + 1, train: 300, heldOut: 50 })
  t.not(JSON.stringify(c.train), JSON.stringify(a.train), 'another seed, other tasks')
  t.equal(a.train.length, 300)
  t.equal(a.heldOut.length, 50)
  t.same(syntheticTasks({ seed, train: 0, heldOut: 3 }).train, [], 'zero tasks allowed')
})

t.test('rows have the ReCode fields, every kind on both sides, held-out updates unseen in training', async (t) => {
  const r = rng(t)
  const seed = r.int(0, 1e6)
  const { train, heldOut } = syntheticTasks({ seed, train: 2000, heldOut: 200 })
  for (const task of [...train, ...heldOut]) {
    for (const f of FIELDS)
      if (typeof task[f] !== 'string' || task[f] === '') {
        t.fail(`field ${f} of ${task.updateId}`)
        return
      }
    if (!task.new_version.startsWith('==')) {
      t.fail(`new_version ${task.new_version}`)
      return
    }
    if (task.old_code === task.new_code) {
      t.fail(`old == new for ${task.updateId}`)
      return
    }
  }
  t.pass('all rows well-formed')
  for (const kind of UPDATE_KINDS) {
    t.ok(
      train.some((x) => x.kind === kind),
      `train has ${kind}`
    )
    t.ok(
      heldOut.some((x) => x.kind === kind),
      `held-out has ${kind}`
    )
  }
  const trainIds = new Set(train.map((x) => x.updateId))
  t.ok(
    heldOut.every((x) => !trainIds.has(x.updateId)),
    'no held-out update appears in training'
  )
  const trainPairs = new Set(train.map((x) => x.update_info + '\0' + x.old_code))
  t.ok(
    heldOut.every((x) => !trainPairs.has(x.update_info + '\0' + x.old_code)),
    'no held-out (note, old code) pair appears in training'
  )
  const split = syntheticUpdates(seed)
  t.ok(
    split.heldOut.every((id) => !split.train.includes(id)),
    'update split is disjoint'
  )
  t.ok(
    split.heldOut.length >= UPDATE_KINDS.length && split.heldOut.length < split.train.length,
    `${split.heldOut.length} held-out of ${split.heldOut.length + split.train.length} updates`
  )
  // Sizes fit a tiny model's context.
  const longest = Math.max(...train.map((x) => x.update_info.length + x.old_code.length))
  t.ok(longest < 600, `longest note + old code: ${longest} characters`)
})

t.test('the update note names every identifier the new code introduces', async (t) => {
  const { train, heldOut } = syntheticTasks({ seed: rng(t).int(0, 1e6), train: 500, heldOut: 100 })
  const ids = (s) => new Set(s.match(/[A-Za-z_][A-Za-z0-9_]*/g))
  let bad = 0
  for (const task of [...train, ...heldOut]) {
    const before = ids(task.old_code)
    for (const id of ids(task.new_code)) {
      if (!before.has(id) && !task.update_info.includes(id)) {
        if (bad++ < 3) t.fail(`${task.updateId}: ${id} is in the new code but not in the note`)
      }
    }
  }
  t.equal(bad, 0, 'every new identifier is in the update note')
})

t.test('old and new code are valid Python (ast.parse)', async (t) => {
  const { train, heldOut } = syntheticTasks({ seed: rng(t).int(0, 1e6), train: 1500, heldOut: 200 })
  const codes = [...train, ...heldOut].flatMap((x) => [x.old_code, x.new_code])
  const script =
    'import ast, json, sys\nbad = []\nfor i, c in enumerate(json.load(sys.stdin)):\n    try:\n        ast.parse(c)\n    except SyntaxError as e:\n        bad.append([i, str(e)])\nprint(json.dumps(bad))\n'
  const res = spawnSync('python3', ['-c', script], { input: JSON.stringify(codes), encoding: 'utf8', maxBuffer: 1 << 26 })
  if (res.error || res.status !== 0) {
    t.fail(`python3 could not run: ${res.error?.message ?? res.stderr}`)
    return
  }
  const bad = JSON.parse(res.stdout)
  t.same(
    bad.slice(0, 3).map(([i, e]) => `${codes[i]}\n${e}`),
    [],
    `${codes.length} snippets parse`
  )
  t.equal(bad.length, 0)
})

t.test('a subset of kinds', async (t) => {
  const { train, heldOut } = syntheticTasks({ seed: 3, train: 100, heldOut: 20, kinds: ['rename_function', 'add_default'] })
  t.same([...new Set(train.map((x) => x.kind))].sort(), ['add_default', 'rename_function'])
  t.same([...new Set(heldOut.map((x) => x.kind))].sort(), ['add_default', 'rename_function'])
  const all = syntheticTasks({ seed: 3, train: 10, heldOut: 200 })
  const allowed = new Set(all.heldOut.map((x) => x.updateId))
  t.ok(
    heldOut.every((x) => !train.some((y) => y.updateId === x.updateId)),
    'still disjoint'
  )
  t.ok(allowed.size > 0)
  t.throws(() => syntheticTasks({ kinds: ['rename_module'] }), { code: 'ERR_INVALID_ARG', message: /kinds/ })
})

t.test('bad options are rejected', async (t) => {
  t.throws(() => syntheticTasks({ seed: -1 }), { code: 'ERR_INVALID_ARG', message: /seed/ })
  t.throws(() => syntheticTasks({ train: 1.5 }), { code: 'ERR_INVALID_ARG', message: /train/ })
  t.throws(() => syntheticTasks({ heldOut: -2 }), { code: 'ERR_INVALID_ARG', message: /heldOut/ })
})
