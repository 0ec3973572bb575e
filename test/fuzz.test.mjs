// Fuzzing the readers of untrusted files: the native safetensors header parser and the JSONL readers (the
// shared reader and the ReCode, CodeUpdateArena, HumanEval and `recode reward` readers on top of it). Valid
// files are mutated (byte flips, truncation, insertion, duplication, splices of JSON tokens, gzip) with a
// printed seed; every case must either read or fail with a RecodeError carrying a code. The native parser
// runs in-process: it reports every malformation by a recode::Error, so a crash here is a bug to fix.
// FUZZ_CASES sets the number of cases per reader (default 1500 for the header parser, 400 per JSONL reader).
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import * as zlib from 'zlib'
import { require, rng } from './helpers.mjs'

const lib = require('../dist/cjs/index.js')
const { native } = require('../dist/cjs/native.js')
const { writeSafetensors } = require('../dist/cjs/safetensors.js')
const { readJsonl } = require('../dist/cjs/data/jsonl.js')
const { readMigrationRows } = require('../dist/cjs/data/recode.js')
const { loadCodeUpdateArena } = require('../dist/cjs/data/codeupdatearena.js')
const { loadHumanEval } = require('../dist/cjs/data/humaneval.js')
const { readRewardRows } = require('../dist/cjs/commands/reward.js')

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-fuzz-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const casesFor = (fallback) => (process.env.FUZZ_CASES ? Number(process.env.FUZZ_CASES) : fallback)

// Tokens spliced into the text: structure, literals the readers must type-check, escapes (valid, invalid,
// lone surrogates), numbers out of range, deep nesting, newlines that split a record.
const TOKENS = [
  '{',
  '}',
  '[',
  ']',
  '"',
  ':',
  ',',
  'null',
  'true',
  'false',
  '0',
  '-1',
  '1e999',
  '-0',
  '18446744073709551616',
  '9007199254740993',
  '"x"',
  '""',
  '\\',
  '\\u',
  '\\uzzzz',
  '\\ud800',
  '\\udc00',
  '\\u00e9',
  '\\"',
  '\n',
  '\r\n',
  ' ',
  '\t',
  '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[',
  '{"a":'.repeat(80),
  '\u0000',
  '\u00ff',
  '😀',
  '"dtype"',
  '"shape"',
  '"data_offsets"',
  '"F32"',
  '"BF16"',
  '"F16"',
  '"I64"',
  '"__metadata__"',
  '[0, 4]',
  '[4, 0]',
  '[1, 2, 3]'
]

function mutate(r, bytes) {
  let b = Buffer.from(bytes)
  const rounds = r.int(1, 4)
  for (let k = 0; k < rounds; k++) {
    const at = r.int(0, Math.max(0, b.length - 1))
    switch (r.int(0, 7)) {
      case 0: {
        // flip bits of a byte
        if (b.length > 0) b[at] ^= 1 << r.int(0, 7)
        break
      }
      case 1: {
        // random byte
        if (b.length > 0) b[at] = r.int(0, 255)
        break
      }
      case 2: // truncate
        b = b.subarray(0, at)
        break
      case 3: {
        // insert random bytes
        const ins = Buffer.alloc(r.int(1, 8))
        for (let i = 0; i < ins.length; i++) ins[i] = r.int(0, 255)
        b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)])
        break
      }
      case 4: // delete a run
        b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + r.int(1, 16)))])
        break
      case 5: {
        // duplicate a run elsewhere
        const len = r.int(1, 32)
        const from = r.int(0, Math.max(0, b.length - 1))
        b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + len), b.subarray(at)])
        break
      }
      default: {
        // splice a JSON token in place of a run of 0-8 bytes
        const tok = Buffer.from(r.pick(TOKENS))
        b = Buffer.concat([b.subarray(0, at), tok, b.subarray(Math.min(b.length, at + r.int(0, 8)))])
      }
    }
  }
  return b
}

/** Runs `read` on `cases` files made by `make(r)`; fails on any error that is not an error with a code naming the file. */
function fuzz(t, name, r, cases, make, read) {
  const file = path.join(tmp, name)
  let readOk = 0
  const codes = new Map()
  let bad = 0
  for (let i = 0; i < cases; i++) {
    fs.writeFileSync(file, make(r))
    try {
      read(file)
      readOk++
    } catch (err) {
      if (typeof err?.code === 'string' && (err instanceof lib.RecodeError || err instanceof Error)) {
        codes.set(err.code, (codes.get(err.code) ?? 0) + 1)
        if (!err.message.includes(file)) {
          bad++
          if (bad <= 5) t.fail(`${name} case ${i}: the error does not name the file: ${err.message}`)
        }
      } else {
        bad++
        if (bad <= 5) {
          const keep = path.join(tmp, `${name}.case${i}`)
          fs.copyFileSync(file, keep)
          t.fail(`${name} case ${i}: not an error with a code: ${err?.name}: ${err?.message}`)
        }
      }
    }
  }
  t.equal(bad, 0, `${name}: ${cases} mutated files, ${readOk} read, errors ${JSON.stringify(Object.fromEntries(codes))}`)
  return codes
}

t.test('safetensors header parser under mutation', async (t) => {
  const r = rng(t, 'safetensors')
  const valid = []
  const a = path.join(tmp, 'seed-a.safetensors')
  writeSafetensors(
    a,
    {
      'model.embed_tokens.weight': { dtype: 'F32', shape: [3, 2], data: new Float32Array(6).fill(1) },
      'model.norm.weight': { dtype: 'BF16', shape: [2], data: new Uint16Array([0x3f80, 0x3f80]) },
      'lm_head.weight': { dtype: 'F16', shape: [2, 2], data: new Uint16Array(4) },
      empty: { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) }
    },
    { format: 'pt', note: 'é "quoted" \\ \u0001' }
  )
  valid.push(fs.readFileSync(a))
  // A hand-written header with escapes in names and spacing the writer never produces.
  const json = Buffer.from(
    '{ "\\u00e9\\ud83d\\ude00\\n" : {"dtype":"F32","shape":[1],"data_offsets":[0,4]},\n\t"b": {"shape": [ 2 ], "dtype": "BF16", "data_offsets": [4, 8]} , "__metadata__": {"k": "v"} }'
  )
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(json.length))
  valid.push(Buffer.concat([len, json, Buffer.alloc(8)]))
  for (const v of valid) {
    const f = path.join(tmp, 'check.safetensors')
    fs.writeFileSync(f, v)
    t.ok(native().safetensorsHeader(f).length >= 2, 'the seed files read')
  }
  // Half of the cases mutate the header JSON alone and write its true length, so that the JSON parser and
  // the field checks see the damage rather than the length check; the other half mutate the whole file.
  const make = (rr) => {
    const v = rr.pick(valid)
    if (rr.next() < 0.5) return mutate(rr, v)
    const n = Number(v.readBigUInt64LE(0))
    const header = mutate(rr, v.subarray(8, 8 + n))
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(BigInt(header.length))
    return Buffer.concat([len, header, v.subarray(8 + n)])
  }
  const codes = fuzz(t, 'header.safetensors', r, casesFor(1500), make, (f) => native().safetensorsHeader(f))
  t.same(
    [...codes.keys()].filter((c) => c !== 'ERR_MODEL'),
    [],
    'every failure is ERR_MODEL'
  )
})

t.test('JSONL readers under mutation', async (t) => {
  const r = rng(t, 'jsonl')
  const migration = [
    {
      dependency: 'numpy',
      new_version: '==1.25.0',
      description: 'np.int removed',
      update_info: 'use int',
      old_code: 'import numpy as np\nx = np.int(3)',
      new_code: 'x = int(3)'
    },
    {
      dependency: 'pandas',
      new_version: null,
      description: 'append → concat',
      update_info: null,
      old_code: 'df.append(o)',
      new_code: 'pd.concat([df, o])'
    }
  ]
  const update = {
    description: 'd',
    rationale: 'r',
    docstring: 'doc',
    signature: 'math.sin(x, unit="radians")',
    imports: ['import math', 'old_sin = math.sin'],
    implementation: 'def sin(x, unit="radians"):\n    return old_sin(x)',
    update_type: 'modify-output-semantics',
    function_path: 'math.sin',
    package: 'math',
    update_id: '[math.sin]:[modify-output-semantics]:[update-0]'
  }
  const problem = (i) => ({
    prog_syn_id: `[math.sin]:[modify-output-semantics]:[update-0]:[prog_syn-${i}]`,
    scenario: 's',
    problem: 'p',
    solution_signature: 'def f(x):',
    unit_tests: ['def test_a():\n    assert f(0) == 0', 'def test_b():\n    assert True'],
    prog_syn_imports: 'import math',
    ref_solution: 'def f(x):\n    return math.sin(x)'
  })
  const arenaGrouped = [{ update, prog_syn_examples: [problem(0), problem(1)] }]
  const arenaUngrouped = [
    { ...update, ...problem(0) },
    { ...update, ...problem(1), unit_tests: 'def test_a():\n    assert 1\n\ndef test_b():\n    assert 2' }
  ]
  const humaneval = [0, 1].map((i) => ({
    task_id: `HumanEval/${i}`,
    prompt: 'def f(x):\n    """doc"""\n',
    canonical_solution: '    return x\n',
    test: 'def check(c):\n    assert c(1) == 1\n',
    entry_point: 'f'
  }))
  const reward = [
    { completion: '<think>x</think>\n<answer>\n```python\nx = 1\n```\n</answer>', target: 'x = 1', id: 7 },
    { completion: 'no code', target: 'y = 2' }
  ]
  const text = (rows) => Buffer.from(rows.map((x) => JSON.stringify(x)).join('\n') + '\n')
  const readers = [
    ['jsonl', [text(migration), text(humaneval)], readJsonl],
    ['migration', [text(migration)], readMigrationRows],
    ['arena', [text(arenaGrouped), text(arenaUngrouped)], loadCodeUpdateArena],
    ['humaneval', [text(humaneval)], loadHumanEval],
    ['reward', [text(reward)], (f) => readRewardRows(f)]
  ]
  // A tenth of the cases are gzip-compressed after mutation (the readers detect gzip by its magic bytes),
  // and another tenth are gzip streams that are themselves mutated.
  const make = (seeds) => (rr) => {
    const b = mutate(rr, rr.pick(seeds))
    const u = rr.next()
    if (u < 0.1) return zlib.gzipSync(b)
    if (u < 0.2) return mutate(rr, zlib.gzipSync(b))
    return b
  }
  for (const [name, seeds, read] of readers) {
    for (const s of seeds) {
      const f = path.join(tmp, `check-${name}.jsonl`)
      fs.writeFileSync(f, s)
      read(f) // the seed files read
    }
    const codes = fuzz(t, `${name}.jsonl`, r, casesFor(400), make(seeds), read)
    t.same(
      [...codes.keys()].filter((c) => c !== 'ERR_DATA'),
      [],
      `${name}: every failure is ERR_DATA`
    )
  }
})
