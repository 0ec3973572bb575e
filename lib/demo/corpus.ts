/**
 * The corpus the demo base model is pre-trained on (lib/demo/base.ts): the situation of a code LLM whose API
 * knowledge is stale. It holds
 *   - programs that use the fictional library `nova` in its OLD API (the old code of synthetic tasks; never a new
 *     code, never an update note),
 *   - plain Python programs,
 *   - code-editing instructions on both ("Rename the variable a to b.", "Swap the arguments x and y in the call to
 *     f.") answered in ReCode's think/answer format: the instruction tuning every code chat model has had, which
 *     teaches copying and editing code, but not reading API documentation.
 * The held-out updates' new names (new function, argument, module and selector names) never occur in it:
 * `heldOutNewNames` lists them and `baseCorpus` drops any document that would contain one (and says how many).
 *
 * Deterministic: every document follows from (seed, index) through mulberry32 streams.
 */
import { RecodeError } from '../errors'
import { CHATML_TEMPLATE } from '../model/init'
import { RECODE_ANSWER_INSTRUCTION, RECODE_PREFILL, renderPrompt, type PromptTemplate, buildMessages } from '../prompts'
import { mulberry32 } from '../random'
import { type ApiEdit, type ApiEditNames, apiEdit, syntheticTasks, syntheticUpdates } from '../train/synthetic'

/** The editing prompt of the base corpus: ReCode's layout (instruction in <doc>, code in a fence, the same
 * answer instruction and prefill), with an edit request where ReCode has an API update. */
export const EDIT_PROMPT: PromptTemplate = {
  name: 'demo-edit',
  system:
    'You are a helpful coding assistant. Your task is to edit the code as requested. You first thinks about the reasoning process in the mind and then provides the solution.',
  user:
    '\nEdit the code as follows:\n<doc>\n{instruction}\n</doc>\nThe code is:\n```python\n{old_code}\n```\n\n' +
    RECODE_ANSWER_INSTRUCTION +
    '\n',
  prefill: RECODE_PREFILL
}

/**
 * Stage 7 words the editing prompt in varied ways (system sentence, the lines before the request and before the code),
 * as instruction data does, so that the model reads the request in `<doc>` whatever surrounds it. None is ReCode's
 * update prompt ("performed an API update", "The old version of the code is").
 */
const FRAME_SYSTEMS = [
  EDIT_PROMPT.system,
  'You are a helpful coding assistant. Your task is to change the given code so that it follows the request. You first thinks about the reasoning process in the mind and then provides the solution.',
  'You are an expert Python programmer. Rewrite the code as the note below asks. You first think about the reasoning process in the mind and then provide the solution.',
  'You are a careful code reviewer who applies requested changes. You first thinks about the reasoning process in the mind and then provides the new code.'
]
const FRAME_REQUESTS = [
  'Edit the code as follows:',
  'A maintainer asks for this change:',
  'Apply the change that this note describes:',
  'Here is what has to change, and why:',
  'Change request:'
]
const FRAME_CODES = ['The code is:', 'The current code is:', 'The code to change is:', 'Here is the code:', 'Code:']

function framedPrompt(r: Rng): PromptTemplate {
  return {
    name: 'demo-edit-framed',
    system: r.pick(FRAME_SYSTEMS),
    user: `\n${r.pick(FRAME_REQUESTS)}\n<doc>\n{instruction}\n</doc>\n${r.pick(FRAME_CODES)}\n\`\`\`python\n{old_code}\n\`\`\`\n\n${RECODE_ANSWER_INSTRUCTION}\n`,
    prefill: RECODE_PREFILL
  }
}

/** One code-editing task: old code, an instruction, and the edited code. */
export interface EditTask {
  instruction: string
  /** What the answer's reasoning says (default: the instruction restated). */
  reasoning?: string
  old_code: string
  new_code: string
  kind: string
}

/** A pre-training document: text, and the character offset where the loss starts (0: every token). */
export interface CorpusDocument {
  text: string
  /** Characters before this offset are context only (the prompt of an editing task). */
  lossFrom: number
  kind: 'nova' | 'python' | 'edit-nova' | 'edit-python' | 'edit-api' | 'copy'
}

interface Rng {
  next: () => number
  int: (lo: number, hi: number) => number
  pick: <T>(xs: readonly T[]) => T
}

function rng(seed: number, label: string): Rng {
  let h = 2166136261 ^ seed
  for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 16777619)
  const next = mulberry32(h)
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (xs) => xs[Math.floor(next() * xs.length)]
  }
}

// ---- the names that must not occur --------------------------------------------------------------------

/**
 * The new names the held-out updates of `seed` introduce: new function names (renames and replacements),
 * new keyword names (renamed arguments, selectors) and new module names, each with the pattern that marks its
 * use in code or prose as the NEW API (`nova.util`, `span=`, `fetch_cells`).
 */
export function heldOutNewNames(seed: number): Array<{ name: string; pattern: RegExp }> {
  const out: Array<{ name: string; pattern: RegExp }> = []
  // a function name used as code: called, reached as an attribute, or imported (the English words `process` or
  // `convert` in ReCode's own prompt text are not uses)
  const word = (w: string): RegExp => new RegExp(`\\.${w}(?!\\w)|(?<![\\w.])${w}\\s*\\(|import [\\w ,.]*(?<![\\w.])${w}(?!\\w)`)
  for (const id of syntheticUpdates(seed).heldOut) {
    const [, kind, key] = id.split('/')
    if (kind === 'rename_function') out.push({ name: key, pattern: word(key) })
    else if (kind === 'rename_argument') {
      const p = key.split(':')[1]
      out.push({ name: `${p}=`, pattern: new RegExp(`(?<![\\w.])${p}=`) })
    } else if (kind === 'move_module') {
      out.push({ name: `nova.${key}`, pattern: new RegExp(`nova\\.${key}(?!\\w)|from nova import (?:[\\w ,]*, )?${key}(?!\\w)`) })
    } else if (kind === 'deprecate_replace') {
      const [fn, sel] = key.split(':')
      out.push({ name: fn, pattern: word(fn) }, { name: `${sel}=`, pattern: new RegExp(`(?<![\\w.])${sel}=`) })
    }
  }
  const byName = new Map(out.map((n) => [n.name, n]))
  return [...byName.values()]
}

// ---- plain Python programs ----------------------------------------------------------------------------

const NAMES = {
  fn: [
    'total_of',
    'largest',
    'smallest',
    'average',
    'count_even',
    'join_words',
    'reverse_list',
    'first_long',
    'square_all',
    'clean_line',
    'word_lengths',
    'add_up',
    'halve',
    'double_all',
    'shout'
  ],
  list: ['nums', 'numbers', 'values', 'xs', 'scores', 'ages', 'prices', 'points'],
  words: ['words', 'names', 'tags', 'labels', 'parts', 'tokens'],
  acc: ['acc', 'total', 'best', 'result', 'out', 'answer', 'tally'],
  elem: ['x', 'n', 'v', 'num', 'score', 'p'],
  word: ['w', 'word', 'name', 'tag', 'label'],
  str: ['line', 'sentence', 'message', 'raw', 'title'],
  cls: ['Counter', 'Box', 'Account', 'Timer', 'Bag', 'Queue'],
  attr: ['count', 'items', 'balance', 'ticks', 'contents', 'entries']
}
const NUM_LISTS = ['[1, 2, 3]', '[4, 8, 15, 16]', '[3, 1, 2]', '[10, 20, 30]', '[7, 7, 9]', '[5, 0, 2, 6]', '[2, 4]']
const WORD_LISTS = ["['red', 'green', 'blue']", "['a', 'bb', 'ccc']", "['one', 'two']", "['north', 'south', 'east']"]
const STRINGS = ["'hello world'", "'the cat sat'", "'a b c d'", "'Python is fun'", "'keep it short'"]
const SMALL = ['0', '1', '2', '3', '5', '10']

/** Plain Python programs from a dozen shapes with varied names and values. */
function plainProgram(r: Rng): string {
  const f = r.pick(NAMES.fn)
  const xs = r.pick(NAMES.list)
  const acc = r.pick(NAMES.acc)
  const x = r.pick(NAMES.elem)
  const ws = r.pick(NAMES.words)
  const w = r.pick(NAMES.word)
  const s = r.pick(NAMES.str)
  const k = r.pick(SMALL)
  switch (r.int(0, 11)) {
    case 0:
      return `def ${f}(${xs}):\n    ${acc} = 0\n    for ${x} in ${xs}:\n        ${acc} += ${x}\n    return ${acc}\n\n\nprint(${f}(${r.pick(NUM_LISTS)}))`
    case 1:
      return `${xs} = ${r.pick(NUM_LISTS)}\n${acc} = [${x} * ${k} for ${x} in ${xs} if ${x} > ${r.pick(SMALL)}]\nprint(${acc})`
    case 2:
      return `${s} = ${r.pick(STRINGS)}\n${ws} = ${s}.split(' ')\nprint(len(${ws}))`
    case 3:
      return `def ${f}(${xs}):\n    ${acc} = ${xs}[0]\n    for ${x} in ${xs}:\n        if ${x} > ${acc}:\n            ${acc} = ${x}\n    return ${acc}\n\n\n${xs} = ${r.pick(NUM_LISTS)}\nprint(${f}(${xs}))`
    case 4:
      return `${ws} = ${r.pick(WORD_LISTS)}\n${acc} = {}\nfor ${w} in ${ws}:\n    ${acc}[${w}] = len(${w})\nprint(${acc})`
    case 5: {
      const c = r.pick(NAMES.cls)
      const a = r.pick(NAMES.attr)
      return `class ${c}:\n    def __init__(self):\n        self.${a} = 0\n\n    def add(self, ${x}):\n        self.${a} += ${x}\n        return self.${a}\n\n\n${acc} = ${c}()\n${acc}.add(${k})\nprint(${acc}.${a})`
    }
    case 6:
      return `${x} = ${r.pick(['10', '5', '3', '8'])}\nwhile ${x} > ${k}:\n    print(${x})\n    ${x} -= 1`
    case 7:
      return `def ${f}(${s}, ${w}=${r.pick(["' '", "','", "'-'"])}):\n    return ${s}.strip().split(${w})\n\n\nprint(${f}(${r.pick(STRINGS)}, ${w}=${r.pick(["' '", "','"])}))`
    case 8:
      return `${xs} = ${r.pick(NUM_LISTS)}\ntry:\n    ${acc} = sum(${xs}) / len(${xs})\nexcept ZeroDivisionError:\n    ${acc} = 0\nprint(${acc})`
    case 9:
      return `import os\n\n${s} = os.path.join(${r.pick(["'data'", "'logs'", "'out'"])}, ${r.pick(["'a.txt'", "'b.csv'", "'notes.md'"])})\nprint(os.path.exists(${s}))`
    case 10:
      return `def ${f}(${ws}):\n    return [${w}.upper() for ${w} in ${ws}]\n\n\n${ws} = ${r.pick(WORD_LISTS)}\nprint(${f}(${ws}))`
    default:
      return `${xs} = ${r.pick(NUM_LISTS)}\n${acc} = sorted(${xs}, reverse=${r.pick(['True', 'False'])})\nprint(${acc}[${r.pick(['0', '1', '-1'])}])`
  }
}

// ---- generic code edits -------------------------------------------------------------------------------

/** Names edits introduce: none of them is a nova name (old or new). */
const EDIT_VARS = [
  'result_set',
  'total_sum',
  'row_list',
  'name_map',
  'counter',
  'buffer',
  'output',
  'entries_list',
  'accum',
  'holder',
  'field',
  'record',
  'sample',
  'temp',
  'stats',
  'payload_in',
  'subject',
  'inputs'
]
const EDIT_FNS = [
  'collect_rows',
  'sum_fields',
  'read_block',
  'show_list',
  'pick_first',
  'draw_line',
  'sort_names',
  'trim_text',
  'split_line',
  'mark_done',
  'count_rows',
  'push_item',
  'pull_rows',
  'fold_values',
  'check_name',
  'send_note'
]
const EDIT_KWS = [
  'verbose',
  'strict',
  'sep',
  'flag',
  'mode_name',
  'prefix',
  'width_in',
  'order',
  'label',
  'tag',
  'weight',
  'factor',
  'offset',
  'index',
  'style_name'
]
const EDIT_VALUES = ["'yes'", "'no'", 'True', 'False', '7', '12', '99', "'auto'", "'left'", 'None']

interface Call {
  /** Index of the callee's first character and of the closing parenthesis. */
  start: number
  end: number
  callee: string
  args: string[]
}

/** Calls with top-level arguments on one line: `callee(a, b, c)` (callee may be dotted). */
function findCalls(code: string): Call[] {
  const out: Call[] = []
  const re = /([A-Za-z_][\w.]*)\(/g
  for (let m = re.exec(code); m !== null; m = re.exec(code)) {
    const open = m.index + m[0].length - 1
    let depth = 0
    let end = -1
    let quote = ''
    for (let i = open; i < code.length; i++) {
      const c = code[i]
      if (quote !== '') {
        if (c === quote) quote = ''
        continue
      }
      if (c === "'" || c === '"') quote = c
      else if (c === '(' || c === '[' || c === '{') depth++
      else if (c === ')' || c === ']' || c === '}') {
        depth--
        if (depth === 0) {
          end = i
          break
        }
      } else if (c === '\n') break
    }
    if (end < 0) continue
    const inner = code.slice(open + 1, end)
    const args: string[] = []
    let d = 0
    let q = ''
    let cur = ''
    for (const c of inner) {
      if (q !== '') {
        if (c === q) q = ''
        cur += c
        continue
      }
      if (c === "'" || c === '"') q = c
      if (c === '(' || c === '[' || c === '{') d++
      if (c === ')' || c === ']' || c === '}') d--
      if (c === ',' && d === 0) {
        args.push(cur.trim())
        cur = ''
      } else cur += c
    }
    if (cur.trim() !== '') args.push(cur.trim())
    const callee = m[1]
    const last = callee.split('.').pop() as string
    if (
      ['print', 'len', 'sum', 'sorted', 'range', 'str', 'int', 'super'].includes(callee) ||
      /^[A-Z]/.test(last) ||
      callee.startsWith('self.')
    )
      continue
    if (code.slice(Math.max(0, m.index - 4), m.index) === 'def ') continue
    out.push({ start: m.index, end, callee, args })
  }
  return out
}

function replaceCall(code: string, c: Call, callee: string, args: string[]): string {
  return code.slice(0, c.start) + `${callee}(${args.join(', ')})` + code.slice(c.end + 1)
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

const ordinal = ['first', 'second', 'third', 'fourth', 'fifth']

/** Word pieces of made-up names (the API edits of stage 3): names no pool holds, so an edit can only copy them. */
const PIECES = [
  'al',
  'bor',
  'cav',
  'dex',
  'fin',
  'gul',
  'hap',
  'jor',
  'kel',
  'lum',
  'mav',
  'nib',
  'osk',
  'pel',
  'quo',
  'rin',
  'sul',
  'tav',
  'ump',
  'vek',
  'wiz',
  'yor',
  'zan',
  'brim',
  'clo',
  'drav',
  'fen',
  'glim',
  'hork',
  'ivo',
  'jax',
  'krell',
  'lorn',
  'mip',
  'nox',
  'orb',
  'pim',
  'ruk',
  'snee',
  'trel'
]

function madeUpName(r: Rng): string {
  const n = r.int(2, 3)
  const parts: string[] = []
  for (let i = 0; i < n; i++) parts.push(r.pick(PIECES))
  return r.next() < 0.5 ? parts.join('_') : parts.join('')
}

/** One random edit of `code` with its instruction, or undefined when the drawn edit does not apply. */
function editOf(code: string, r: Rng): EditTask | undefined {
  const calls = findCalls(code)
  const kind = r.pick([
    'rename_variable',
    'rename_call',
    'swap_args',
    'drop_arg',
    'keyword_arg',
    'positional_arg',
    'add_keyword',
    'method_call',
    'replace_literal'
  ])
  const fresh = (pool: string[]): string | undefined => {
    const free = pool.filter((n) => !new RegExp(`\\b${n}\\b`).test(code))
    return free.length > 0 ? r.pick(free) : undefined
  }
  switch (kind) {
    case 'rename_variable': {
      const names = [...code.matchAll(/^\s*([a-z_]\w*) = /gm)].map((m) => m[1]).filter((n) => n !== 'self')
      if (names.length === 0) return undefined
      const from = r.pick(names)
      const to = fresh(EDIT_VARS)
      if (to === undefined) return undefined
      const re = new RegExp(`(?<![\\w.'"])${escapeRe(from)}(?![\\w'"])(?!=)`, 'g')
      const instruction = r.pick([`Rename the variable ${from} to ${to}.`, `Use the name ${to} instead of ${from} for the variable.`])
      return { instruction, old_code: code, new_code: code.replace(re, to), kind }
    }
    case 'rename_call': {
      if (calls.length === 0) return undefined
      const c = r.pick(calls)
      const fn = c.callee.split('.').pop() as string
      const to = fresh(EDIT_FNS)
      if (to === undefined) return undefined
      // every use of the name: the calls, an import of it, its definition
      const re = new RegExp(`(?<![\\w'"])${escapeRe(fn)}(?![\\w'"])(?!=)`, 'g')
      const instruction = r.pick([
        `Rename the function ${fn} to ${to}.`,
        `Call ${to} instead of ${fn}.`,
        `The function ${fn} should be called ${to} now.`
      ])
      return { instruction, old_code: code, new_code: code.replace(re, to), kind }
    }
    case 'swap_args': {
      const cs = calls.filter((c) => c.args.length >= 2 && c.args.every((a) => !a.includes('=')))
      if (cs.length === 0) return undefined
      const c = r.pick(cs)
      const i = r.int(0, c.args.length - 2)
      const j = r.int(i + 1, c.args.length - 1)
      if (c.args[i] === c.args[j]) return undefined
      const args = [...c.args]
      ;[args[i], args[j]] = [args[j], args[i]]
      const fn = c.callee.split('.').pop()
      const instruction = r.pick([
        `Swap the arguments ${c.args[i]} and ${c.args[j]} in the call to ${fn}.`,
        `In the call to ${fn}, exchange the ${ordinal[i]} and the ${ordinal[j]} argument.`
      ])
      return { instruction, old_code: code, new_code: replaceCall(code, c, c.callee, args), kind }
    }
    case 'drop_arg': {
      const cs = calls.filter((c) => c.args.length >= 2)
      if (cs.length === 0) return undefined
      const c = r.pick(cs)
      const fn = c.callee.split('.').pop()
      const last = c.args[c.args.length - 1]
      const instruction = r.pick([`Remove the last argument (${last}) from the call to ${fn}.`, `Do not pass ${last} to ${fn} any more.`])
      return { instruction, old_code: code, new_code: replaceCall(code, c, c.callee, c.args.slice(0, -1)), kind }
    }
    case 'keyword_arg': {
      const cs = calls.filter((c) => c.args.length >= 1 && !c.args[c.args.length - 1].includes('='))
      if (cs.length === 0) return undefined
      const c = r.pick(cs)
      const k = fresh(EDIT_KWS)
      if (k === undefined) return undefined
      const fn = c.callee.split('.').pop()
      const last = c.args[c.args.length - 1]
      const args = [...c.args.slice(0, -1), `${k}=${last}`]
      const instruction = r.pick([
        `Pass ${last} to ${fn} as the keyword argument ${k}.`,
        `In the call to ${fn}, give the last argument by name: ${k}.`
      ])
      return { instruction, old_code: code, new_code: replaceCall(code, c, c.callee, args), kind }
    }
    case 'positional_arg': {
      const cs = calls.filter((c) => c.args.some((a) => /^\w+=/.test(a)))
      if (cs.length === 0) return undefined
      const c = r.pick(cs)
      const fn = c.callee.split('.').pop()
      const args = c.args.map((a) => a.replace(/^\w+=/, ''))
      const instruction = r.pick([`Pass every argument of ${fn} by position, without names.`, `Call ${fn} with positional arguments only.`])
      return { instruction, old_code: code, new_code: replaceCall(code, c, c.callee, args), kind }
    }
    case 'add_keyword': {
      if (calls.length === 0) return undefined
      const c = r.pick(calls)
      const k = fresh(EDIT_KWS)
      if (k === undefined) return undefined
      const v = r.pick(EDIT_VALUES)
      const fn = c.callee.split('.').pop()
      const instruction = r.pick([`Add the keyword argument ${k}=${v} to the call to ${fn}.`, `Call ${fn} with ${k} set to ${v} as well.`])
      return { instruction, old_code: code, new_code: replaceCall(code, c, c.callee, [...c.args, `${k}=${v}`]), kind }
    }
    case 'method_call': {
      const cs = calls.filter((c) => c.args.length >= 1 && /^[a-z_]\w*$/.test(c.args[0]))
      if (cs.length === 0) return undefined
      const c = r.pick(cs)
      const fn = c.callee.split('.').pop() as string
      const instruction = r.pick([`Call ${fn} as a method of ${c.args[0]}.`, `Write the call to ${fn} as ${c.args[0]}.${fn}(...).`])
      return { instruction, old_code: code, new_code: replaceCall(code, c, `${c.args[0]}.${fn}`, c.args.slice(1)), kind }
    }
    default: {
      const lits = [...code.matchAll(/'[^'\n]*'|\b\d+\b/g)].map((m) => m[0])
      if (lits.length === 0) return undefined
      const from = r.pick(lits)
      const to = r.pick(from.startsWith("'") ? ["'alpha'", "'beta'", "'gamma'", "'zeta'", "'omega'"] : ['4', '6', '9', '11', '64'])
      if (from === to || code.split(from).length !== 2) return undefined
      const instruction = r.pick([`Change the value ${from} to ${to}.`, `Use ${to} instead of ${from}.`])
      return { instruction, old_code: code, new_code: code.replace(from, to), kind }
    }
  }
}

// ---- API edits (stage 3) ------------------------------------------------------------------------------

// New names of the API edits: word lists no update of the synthetic data draws from, and made-up names half the
// time, so that the edit must copy the name from the request (as a migration copies it from the note).
const API_VERBS = ['read', 'pull', 'push', 'draw', 'mark', 'sort', 'trim', 'fold', 'send', 'show', 'pick', 'check', 'join', 'store']
const API_NOUNS = ['rows', 'lines', 'parts', 'bits', 'keys', 'nodes', 'pages', 'terms', 'slots', 'units', 'marks', 'spans']
const API_PARAMS = ['gap', 'margin', 'stride', 'bound', 'delay', 'tries', 'start', 'stop', 'weight', 'score', 'pad_to', 'n_items']
const API_MODULES = ['lib', 'api', 'kit', 'std', 'helpers', 'engine', 'shared', 'common', 'misc', 'legacy']
const API_SELECTORS = ['variant', 'style', 'using', 'via', 'task']

// Stage 7 draws new names mostly from the tokenizer's own pieces (any 1-3 of its lowercase pieces), else from every
// word of the corpus's lists or made up: far too many to guess, and they reach every piece of the vocabulary, so the
// model learns to copy any name from the request. (Some held-out names hold pieces, such as the `ply` of apply_chunk,
// that the earlier stages' documents never contain: only copying can write those.)
const BROAD_WORDS = [
  ...new Set(
    [...API_VERBS, ...API_NOUNS, ...API_PARAMS, ...API_MODULES, ...API_SELECTORS, ...EDIT_VARS, ...EDIT_FNS, ...EDIT_KWS].flatMap((w) =>
      w.split('_')
    )
  )
].filter((w) => w.length > 1)

const PYTHON_KEYWORDS = new Set(
  'and as assert async await break class continue def del elif else except false finally for from global if import in is lambda none nonlocal not or pass raise return true try while with yield'.split(
    ' '
  )
)

/** Every token of a tokenizer as text, by id (the input of namePieces). */
export function tokenStrings(tok: { size: number; decode: (ids: number[]) => string }): string[] {
  return Array.from({ length: tok.size }, (_, id) => tok.decode([id]))
}

/** The tokenizer's lowercase pieces of two letters or more (stage 7's names and the drills' are drawn from them). */
export function namePieces(vocab: Iterable<string>): string[] {
  return [...new Set([...vocab].filter((v) => /^[a-z]{2,}$/.test(v) && !PYTHON_KEYWORDS.has(v)))].sort()
}

function apiEditNames(r: Rng, pieces?: readonly string[]): ApiEditNames {
  if (pieces !== undefined) {
    const draw = (maxParts: number, sep: boolean): string => {
      for (;;) {
        const u = r.next()
        const n = r.int(1, maxParts)
        const parts =
          u < 0.6 && pieces.length > 0
            ? Array.from({ length: n }, () => r.pick(pieces))
            : u < 0.8
              ? [madeUpName(r).replace(/_/g, '')]
              : Array.from({ length: n }, () => r.pick(BROAD_WORDS))
        const name = parts.join(sep && r.next() < 0.5 ? '_' : '')
        if (!PYTHON_KEYWORDS.has(name)) return name
      }
    }
    return { function: () => draw(3, true), param: () => draw(2, true), module: () => draw(2, false), selector: () => draw(2, true) }
  }
  const name = (pool: () => string): string => (r.next() < 0.5 ? madeUpName(r) : pool())
  return {
    function: () => name(() => `${r.pick(API_VERBS)}_${r.pick(API_NOUNS)}`),
    param: () => name(() => r.pick(API_PARAMS)),
    module: () => name(() => r.pick(API_MODULES)).replace(/_/g, ''),
    selector: () => name(() => r.pick(API_SELECTORS))
  }
}

/**
 * The request that asks for an API edit and the reasoning its answer gives. Half the requests are imperative ("Call
 * nova.grid.pack_rows instead of nova.grid.fill.") and restated as they are; half state the change as a fact and
 * ask for the code to follow ("Since nova.grid.fill is now nova.grid.pack_rows, update the call."), and the
 * reasoning turns the fact into the imperative step. None is worded like the synthetic data's update notes (a test
 * holds every note against the corpus), and none comes in ReCode's update prompt.
 */
function apiEditRequest(e: ApiEdit, r: Rng, changelog = false): { instruction: string; reasoning: string } {
  const mq = `nova.${e.module}`
  const q = `${mq}.${e.function}`
  const sig = (ps: string[]): string => `${e.function}(${ps.join(', ')})`
  const rest = e.params.slice(1).join(', ')
  let steps: string[]
  let facts: string[]
  switch (e.kind) {
    case 'rename_function':
      steps = [
        `Call ${mq}.${e.newName} instead of ${q}.`,
        `Replace the function ${q} by ${mq}.${e.newName}.`,
        `Use the name ${e.newName} for ${q}.`
      ]
      facts = [`Since ${q} is now ${mq}.${e.newName}, update the call.`, `The new name of ${q} is ${e.newName}. Change the code to use it.`]
      break
    case 'rename_argument': {
      const p = e.params[e.paramIndex!]
      steps = [
        `In the call to ${q}, rename the keyword argument ${p} to ${e.newParam}.`,
        `Pass ${p} to ${e.function} under the name ${e.newParam}.`
      ]
      facts = [
        `The keyword ${p} of ${q} is now called ${e.newParam}; update the call.`,
        `${e.function} now spells its ${p} argument ${e.newParam}. Adjust the code.`
      ]
      break
    }
    case 'reorder_arguments': {
      const next = [...e.params]
      const [i, j] = e.swap!
      ;[next[i], next[j]] = [next[j], next[i]]
      steps = [
        `Reorder the arguments of ${q}: it takes ${sig(next)} instead of ${sig(e.params)}.`,
        `Swap the arguments ${e.params[i]} and ${e.params[j]} of ${e.function}.`,
        `Call ${e.function} with its parameters in the order ${sig(next)}.`
      ]
      facts = [
        `Since ${q} now takes ${sig(next)} rather than ${sig(e.params)}, update the call.`,
        `The parameter order of ${e.function} is ${sig(next)} now. Adjust the code.`
      ]
      break
    }
    case 'add_default': {
      const last = e.params[e.params.length - 1]
      steps = [
        `Remove the argument ${last} from the call to ${q}; ${e.defaultValue} is its default.`,
        `Leave out ${last} when calling ${e.function}: ${e.defaultValue} is the default value.`
      ]
      facts = [
        `${last} of ${q} is optional now (default ${e.defaultValue}); drop it from the call.`,
        `${e.function} uses ${e.defaultValue} for ${last} unless told otherwise. Simplify the call.`
      ]
      break
    }
    case 'keyword_only':
      steps = [`Pass ${rest} to ${q} by keyword.`, `In the call to ${e.function}, name the arguments ${rest}.`]
      facts = [`Since ${q} now wants ${rest} as keywords, update the call.`, `${e.function} accepts ${rest} only by name. Adjust the code.`]
      break
    case 'positional_only':
      steps = [`Pass the arguments ${rest} of ${q} by position, not by name.`, `Call ${e.function} without naming ${rest}.`]
      facts = [
        `Since ${q} no longer accepts ${rest} by name, update the call.`,
        `${e.function} takes ${rest} by position only. Adjust the code.`
      ]
      break
    case 'to_method':
      steps = [
        `Replace ${q}(${e.params[0]}, ...) with the method call on the ${e.cls} object.`,
        `Call ${e.function} as a method of the ${e.cls} object ${e.receiver}.`
      ]
      facts = [
        `${e.function} is now a method of ${e.cls}; update the code to call it on the object.`,
        `${e.cls} objects have a ${e.function}() method that replaces ${q}. Use it.`
      ]
      break
    case 'move_module':
      steps = [`Import ${e.function} from nova.${e.newModule} instead of ${mq}.`, `Use nova.${e.newModule}.${e.function} in place of ${q}.`]
      facts = [
        `${e.function} now lives in nova.${e.newModule} instead of ${mq}; update the code.`,
        `The module of ${e.function} is nova.${e.newModule} now. Adjust the imports and the call.`
      ]
      break
    case 'deprecate_replace':
      steps = [
        `Replace the call to ${q} with ${mq}.${e.newName}(..., ${e.selector}='${e.function}').`,
        `Call ${mq}.${e.newName} with ${e.selector}='${e.function}' instead of ${q}.`
      ]
      facts = [
        `Since ${q} is replaced by ${mq}.${e.newName}(..., ${e.selector}='${e.function}'), update the call.`,
        `Use ${mq}.${e.newName} for what ${q} did, selecting it with ${e.selector}='${e.function}'.`
      ]
      break
  }
  const step = r.pick(steps)
  if (changelog && r.next() < 0.5) return { instruction: r.pick(changelogEntries(e)), reasoning: step }
  return r.next() < 0.5 ? { instruction: step, reasoning: step } : { instruction: r.pick(facts), reasoning: step }
}

/**
 * The change as a changelog entry would word it (stage 7): the verbs of release notes ("renamed", "moved",
 * "deprecated", "defaults to") in sentence frames of their own, never one of the synthetic data's note templates and
 * never in ReCode's update prompt, so that the model knows the vocabulary of a change but still has to learn, by RL,
 * to read ReCode's notes and trust them over the old API it knows.
 */
function changelogEntries(e: ApiEdit): string[] {
  const mq = `nova.${e.module}`
  const q = `${mq}.${e.function}`
  const sig = (ps: string[]): string => `${e.function}(${ps.join(', ')})`
  const rest = e.params.slice(1).join(', ')
  switch (e.kind) {
    case 'rename_function':
      return [`Renamed: ${q} is ${mq}.${e.newName} from now on.`, `${q} was renamed; its new name is ${e.newName}.`]
    case 'rename_argument': {
      const p = e.params[e.paramIndex!]
      return [`Renamed argument: ${p} of ${q} is called ${e.newParam} now.`, `${q}: the keyword ${p} was renamed ${e.newParam}.`]
    }
    case 'reorder_arguments': {
      const next = [...e.params]
      const [i, j] = e.swap!
      ;[next[i], next[j]] = [next[j], next[i]]
      return [
        `Changed signature: ${mq}.${sig(next)} (was ${sig(e.params)}).`,
        `The order of the parameters of ${q} changed to ${sig(next)}.`
      ]
    }
    case 'add_default': {
      const last = e.params[e.params.length - 1]
      return [
        `New default: ${last}=${e.defaultValue} in ${q}, so it can be left out.`,
        `${q}: ${last} is optional now and defaults to ${e.defaultValue}.`
      ]
    }
    case 'keyword_only':
      return [`${q}: ${rest} must now be passed as keyword arguments.`, `Keyword-only from now on: ${rest} of ${q}.`]
    case 'positional_only':
      return [`${q}: ${rest} can no longer be passed by keyword.`, `Positional-only from now on: ${rest} of ${q}.`]
    case 'to_method':
      return [
        `Deprecated: ${q}(${e.params[0]}, ...). It became the method ${e.cls}.${e.function}().`,
        `${q} is deprecated; call ${e.function}() on the ${e.cls} object.`
      ]
    case 'move_module':
      return [
        `Moved: ${e.function} is in nova.${e.newModule} now, no longer in ${mq}.`,
        `${q} was moved; it lives at nova.${e.newModule}.${e.function}.`
      ]
    case 'deprecate_replace':
      return [
        `Deprecated: ${q}. Its replacement is ${mq}.${e.newName}(..., ${e.selector}='${e.function}').`,
        `${q} is deprecated in favour of ${mq}.${e.newName} with ${e.selector}='${e.function}'.`
      ]
  }
}

/** An edit request on a nova call of one of the update kinds, with new names drawn here (stage 3 of the base). */
export function apiEditTask(seed: number, r: Rng, varied = false, pieces?: readonly string[], kinds?: readonly string[]): EditTask {
  const names = apiEditNames(r, varied ? (pieces ?? []) : undefined)
  let e = apiEdit(seed, r.int(0, 0x7fffffff), names)
  // (every function admits a renaming kind, so a few redraws find one)
  for (let k = 0; kinds !== undefined && !kinds.includes(e.kind) && k < 100; k++) e = apiEdit(seed, r.int(0, 0x7fffffff), names)
  const task = { ...apiEditRequest(e, r, varied), old_code: e.old_code, new_code: e.new_code, kind: `api-${e.kind}` }
  return varied && r.next() < 0.5 ? renameVariables(task, names.param) : task
}

/**
 * The task with the variables its code assigns renamed, the same way everywhere (code, request, reasoning): stage 7
 * does this to half its API edits, so that even the unchanged lines must be copied from the prompt rather than
 * recalled from the programs the model has seen.
 */
function renameVariables(task: EditTask, fresh: () => string): EditTask {
  const vars = [...new Set([...task.old_code.matchAll(/^\s*([A-Za-z_]\w*) = /gm)].map((m) => m[1]))]
  const taken = new Set(task.old_code.match(/\w+/g))
  let out = task
  for (const v of vars) {
    let name = fresh()
    while (taken.has(name) || PYTHON_KEYWORDS.has(name)) name = `${name}_v`
    taken.add(name)
    const re = new RegExp(`(?<![\\w.'])${v}(?![\\w'])`, 'g')
    out = {
      ...out,
      instruction: out.instruction.replace(re, name),
      reasoning: out.reasoning?.replace(re, name),
      old_code: out.old_code.replace(re, name),
      new_code: out.new_code.replace(re, name)
    }
  }
  return out
}

/** A random editing task on a nova (old API) or plain program; changes nothing = drawn again. */
export function editTask(source: 'nova' | 'python', r: Rng, novaPrograms: string[]): EditTask {
  for (;;) {
    const code = source === 'nova' ? r.pick(novaPrograms) : plainProgram(r)
    const t = editOf(code, r)
    if (t !== undefined && t.new_code !== t.old_code) return t
  }
}

/** The chat text of an editing task's prompt (ChatML, continued assistant prefill). */
export function editPrompt(task: Pick<EditTask, 'instruction' | 'old_code'>, template: PromptTemplate = EDIT_PROMPT): string {
  return renderPrompt(buildMessages(template, { instruction: task.instruction, old_code: task.old_code }), CHATML_TEMPLATE)
}

/** The answer an editing task teaches: the instruction restated as reasoning, then the edited code. */
export function editAnswer(task: Pick<EditTask, 'instruction' | 'reasoning' | 'new_code'>): string {
  return ` ${task.reasoning ?? task.instruction}</think>\n<answer>\n\`\`\`python\n${task.new_code}\n\`\`\`\n</answer><|im_end|>`
}

// ---- the corpus ---------------------------------------------------------------------------------------

export interface BaseCorpusOptions {
  /** The synthetic data's seed whose held-out updates must stay unseen (the demo's: 1). */
  dataSeed?: number
  /** Seed of the documents. */
  seed?: number
}

/** nova programs in the old API: the old code of synthetic tasks from several generator seeds. */
export function novaPrograms(dataSeed: number): string[] {
  const out = new Set<string>()
  for (const s of [dataSeed, 101, 202, 303, 404]) {
    const { train, heldOut } = syntheticTasks({ seed: s, train: 1500, heldOut: 200 })
    for (const t of [...train, ...heldOut]) out.add(t.old_code)
  }
  return [...out].sort()
}

/** The update kinds whose edit writes a name the old code does not hold (stage 8 asks for these more often). */
export const NEW_NAME_KINDS: readonly string[] = ['rename_function', 'rename_argument', 'move_module', 'deprecate_replace']

/**
 * Document `i` of the corpus (documents are independent, so a run draws as many as it trains on). `editShare` of
 * them are editing tasks (7/12 on nova code, 5/12 on plain Python), the rest programs (5/8 nova, 3/8 plain). With
 * `apiEdits` (stage 3), 55% of the editing tasks are API edits of nova calls (apiEditTask), 20% generic edits of nova
 * code and 25% of plain Python. With `apiEdits` 'varied' (stage 7), 70% of them are API edits, asked for also as
 * changelog entries, named from `ctx.pieces`, half with the code's variables renamed, and every editing prompt is worded
 * in one of several ways (framedPrompt). `copyShare` of the documents are copying drills (copyDocument) instead;
 * stage 5 is drills only. `newNameShare` of the API edits (stage 8) are of the kinds that write a new name.
 */
export function corpusDocument(
  i: number,
  ctx: { seed: number; nova: string[]; forbidden: Array<{ pattern: RegExp }>; pieces?: readonly string[] },
  editShare = 0.6,
  apiEdits: boolean | 'varied' = false,
  copyShare = 0,
  newNameShare = 0
): CorpusDocument {
  for (let attempt = 0; ; attempt++) {
    const r = rng(ctx.seed, `doc${i}/${attempt}`)
    const u = r.next()
    let doc: CorpusDocument
    // (a draw only where drills can occur, so that stage 1-4 documents stay as they were)
    const drill = (apiEdits === 'varied' || copyShare > 0) && r.next() < copyShare
    if (drill) doc = copyDocument(r, ctx.pieces ?? BROAD_WORDS)
    else if (u < editShare) {
      const share = u / editShare
      const apiShare = apiEdits === 'varied' ? 0.7 : 0.55
      const api = apiEdits && share < apiShare
      const onNova = apiEdits ? share < apiShare + 0.2 : u < (editShare * 7) / 12
      // (a draw only where newNameShare is set, so that stage 1-7 documents stay as they were)
      const kinds = api && newNameShare > 0 && r.next() < newNameShare ? NEW_NAME_KINDS : undefined
      const t = api ? apiEditTask(ctx.seed, r, apiEdits === 'varied', ctx.pieces, kinds) : editTask(onNova ? 'nova' : 'python', r, ctx.nova)
      const prompt = editPrompt(t, apiEdits === 'varied' ? framedPrompt(r) : EDIT_PROMPT)
      doc = { text: prompt + editAnswer(t), lossFrom: prompt.length, kind: api ? 'edit-api' : onNova ? 'edit-nova' : 'edit-python' }
    } else if (u < editShare + ((1 - editShare) * 5) / 8) doc = { text: `${r.pick(ctx.nova)}\n<|endoftext|>`, lossFrom: 0, kind: 'nova' }
    else doc = { text: `${plainProgram(r)}\n<|endoftext|>`, lossFrom: 0, kind: 'python' }
    if (!ctx.forbidden.some((f) => f.pattern.test(doc.text))) return doc
    if (attempt > 100) throw new RecodeError('ERR_INTERNAL', `demo corpus: document ${i} keeps drawing a held-out name`)
  }
}

/**
 * A copying drill (stage 5): a list of names made of random tokenizer pieces, to be repeated exactly. Nothing but
 * attention to the prompt predicts them, which is what copying a new name from an update note takes.
 */
function copyDocument(r: Rng, pieces: readonly string[]): CorpusDocument {
  const names = Array.from({ length: r.int(4, 12) }, () =>
    Array.from({ length: r.int(1, 3) }, () => r.pick(pieces)).join(r.next() < 0.5 ? '_' : '')
  ).join(', ')
  const prompt = `<|im_start|>user\nRepeat these names exactly:\n<doc>\n${names}\n</doc><|im_end|>\n<|im_start|>assistant\n`
  return { text: `${prompt}${names}<|im_end|>`, lossFrom: prompt.length, kind: 'copy' }
}

/** The context `corpusDocument` needs, built once. */
export function corpusContext(options: BaseCorpusOptions = {}): {
  seed: number
  nova: string[]
  forbidden: Array<{ name: string; pattern: RegExp }>
  /** The tokenizer's name pieces (namePieces), once a tokenizer exists: the drills' and stage 7's names are drawn from them. */
  pieces?: readonly string[]
} {
  const dataSeed = options.dataSeed ?? 1
  const forbidden = heldOutNewNames(dataSeed)
  const nova = novaPrograms(dataSeed).filter((p) => !forbidden.some((f) => f.pattern.test(p)))
  return { seed: options.seed ?? 7, nova, forbidden }
}

/**
 * Held-out plain-Python editing tasks (a seed no training document uses): the general-ability probe of the paper
 * tables (editing skill that has nothing to do with API updates).
 */
export function generalTasks(n: number, seed = 0x9e11): EditTask[] {
  const r = rng(seed, 'general')
  const out: EditTask[] = []
  for (let i = 0; i < n; i++) out.push(editTask('python', r, []))
  return out
}
