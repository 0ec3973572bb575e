// The byte-level BPE tokenizer init-model writes: loads in @huggingface/tokenizers, round-trips arbitrary
// text (non-ASCII, control bytes, emoji, random code points), encodes ChatML special tokens as single ids,
// and `recode init-model` writes a complete folder from the command line.
import t from 'tap'
import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require, rng, root } from './helpers.mjs'

const { initModel } = require('../dist/cjs/index.js')
const { loadTokenizer } = require('../dist/cjs/model/tokenizer.js')
const { bytesToUnicode, learnMerges } = require('../dist/cjs/model/bpe.js')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-tok-test-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

t.test("byte map is GPT-2's: 256 distinct printable characters, printable bytes map to themselves", async (t) => {
  const m = bytesToUnicode()
  t.equal(new Set(m).size, 256)
  t.equal(m[65], 'A')
  t.equal(m[32], '\u0120', "space is 'Ġ'")
  t.equal(m[10], '\u010a', "newline is 'Ċ'")
})

t.test('merges are learned from the corpus, most frequent pair first', async (t) => {
  const merges = learnMerges('aaab aaab aaab', 3)
  t.same(merges[0], ['a', 'a'], 'the most frequent pair merges first')
  t.ok(merges.length <= 3)
})

t.test('round trip of arbitrary text; special tokens are single ids', async (t) => {
  const r = rng(t)
  const dir = path.join(tmp, 'm')
  initModel({ preset: 'small', arch: 'qwen2', out: dir })
  const tok = loadTokenizer(dir)
  const samples = ['def f(x):\n    return x + 1\n', 'héllo wörld — 世界 🙂🙂 ǅ', '\u0000\u0001\t\r\n  \u00a0 trailing  ', '']
  for (let i = 0; i < 30; i++) {
    let s = ''
    const n = r.int(1, 40)
    for (let j = 0; j < n; j++) {
      const kind = r.int(0, 3)
      const cp =
        kind === 0 ? r.int(32, 126) : kind === 1 ? r.int(0x80, 0x7ff) : kind === 2 ? r.int(0x800, 0xd7ff) : r.int(0x10000, 0x10ffff)
      s += String.fromCodePoint(cp)
    }
    samples.push(s)
  }
  for (const s of samples) {
    const ids = tok.encode(s)
    t.equal(tok.decode(ids), s, `round trip ${JSON.stringify(s).slice(0, 40)}`)
  }
  const code = 'def is_prime(n: int) -> bool:\n    return n > 1'
  t.ok(tok.encode(code).length < new TextEncoder().encode(code).length / 1.5, 'merges compress Python code')
  const chat = '<|im_start|>user\nhi<|im_end|>\n<|endoftext|>'
  const ids = tok.encode(chat)
  t.equal(ids[0], tok.tokenToId('<|im_start|>'))
  t.ok(ids.includes(tok.tokenToId('<|im_end|>')) && ids.at(-1) === tok.tokenToId('<|endoftext|>'))
  t.equal(tok.decode(ids, { skipSpecialTokens: true }), 'user\nhi\n', 'special tokens are skipped on request')
  t.equal(tok.size, JSON.parse(fs.readFileSync(path.join(dir, 'config.json'))).vocab_size, 'the vocabulary fills config.vocab_size')
})

t.test('recode init-model writes a complete folder; bad options are clear errors', async (t) => {
  const out = path.join(tmp, 'cli')
  const cli = path.join(root, 'dist', 'cjs', 'cli.js')
  const text = execFileSync(
    'node',
    [cli, 'init-model', '--preset', 'tiny', '--arch', 'qwen3', '--out', out, '--seed', '5', '--dtype', 'bf16'],
    { encoding: 'utf8' }
  )
  t.match(text, /parameters/)
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json'])
    t.ok(fs.existsSync(path.join(out, f)), f)
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json')))
  t.same(cfg.architectures, ['Qwen3ForCausalLM'])
  t.equal(cfg.torch_dtype, 'bfloat16')
  const again = path.join(tmp, 'cli2')
  execFileSync('node', [cli, 'init-model', '--preset', 'tiny', '--arch', 'qwen3', '--out', again, '--seed', '5', '--dtype', 'bf16'])
  t.ok(
    fs.readFileSync(path.join(out, 'model.safetensors')).equals(fs.readFileSync(path.join(again, 'model.safetensors'))),
    'the same seed writes the same weights'
  )
  let err = ''
  try {
    execFileSync('node', [cli, 'init-model', '--preset', 'huge', '--out', path.join(tmp, 'x')], { encoding: 'utf8', stdio: 'pipe' })
  } catch (e) {
    err = e.stderr
  }
  t.match(err, /preset must be one of tiny, small/)
})
