/**
 * Synthetic API-update tasks for the embedded default: a fictional library, `nova`, whose functions receive
 * updates of the kinds ReCode's data holds (renamed functions and arguments, reordered arguments, new
 * defaults that calls may drop, positional <-> keyword call styles, function -> method, moved modules,
 * deprecations with a replacement). Each task is a row with the ReCode fields (`dependency, new_version,
 * description, update_info, old_code, new_code`), so the same prompt builder and reward apply, plus `kind`
 * and `updateId`. Snippets are a few lines of valid Python so that a tiny model's context holds the prompt.
 *
 * Determinism: everything follows from `seed` (mulberry32 streams); the same options give the same tasks.
 * Held-out split: the generator first enumerates the library's updates (one update = one function changed in
 * one way, e.g. `nova.text.pad` renamed to `make_text`); a seeded ~20% of the updates of every kind are
 * reserved for the held-out tasks. Held-out tasks therefore show updates never seen in training (as
 * CodeUpdateArena's are unseen by ReCode's training), while every update kind appears on both sides.
 */
import { RecodeError, optionsArg } from '../errors'
import { mulberry32 } from '../random'

export type UpdateKind =
  | 'rename_function'
  | 'rename_argument'
  | 'reorder_arguments'
  | 'add_default'
  | 'keyword_only'
  | 'positional_only'
  | 'to_method'
  | 'move_module'
  | 'deprecate_replace'

export const UPDATE_KINDS: readonly UpdateKind[] = [
  'rename_function',
  'rename_argument',
  'reorder_arguments',
  'add_default',
  'keyword_only',
  'positional_only',
  'to_method',
  'move_module',
  'deprecate_replace'
]

/** A ReCode row (recode.md §1). */
export interface UpdateTaskRow {
  dependency: string
  new_version: string
  description: string
  update_info: string
  old_code: string
  new_code: string
}

export interface SyntheticTask extends UpdateTaskRow {
  kind: UpdateKind
  /** Identifies the update (function + change); held-out tasks use updates absent from training. */
  updateId: string
}

export interface SyntheticOptions {
  seed?: number
  /** Number of training tasks (default 2000) and held-out tasks (default 200). */
  train?: number
  heldOut?: number
  /** Restrict the tasks to these update kinds (default: all); the held-out split is unchanged. */
  kinds?: readonly UpdateKind[]
}

// ---- the fictional library ------------------------------------------------------------------------------

type ArgType = 'obj' | 'str' | 'char' | 'int' | 'list' | 'path' | 'enc' | 'mode' | 'url' | 'dict' | 'glob'

interface FunctionSpec {
  name: string
  params: Array<[string, ArgType]>
  /** What the call does, for the description. */
  purpose: string
  /** Name of the variable that holds the result. */
  result: string
}

interface ModuleSpec {
  name: string
  /** The module's class: instances are the first argument of functions whose first parameter is 'obj'. */
  cls: { name: string; ctorArgs: string[]; variable: string }
  functions: FunctionSpec[]
}

const LIBRARY = 'nova'

const MODULES: ModuleSpec[] = [
  {
    name: 'text',
    cls: { name: 'Doc', ctorArgs: ["'the quick fox'", "'hello world'", "'a b c'"], variable: 'doc' },
    functions: [
      {
        name: 'tokenize',
        params: [
          ['line', 'str'],
          ['sep', 'char']
        ],
        purpose: 'split a line of text into tokens',
        result: 'tokens'
      },
      {
        name: 'pad',
        params: [
          ['line', 'str'],
          ['width', 'int'],
          ['fill', 'char']
        ],
        purpose: 'pad a string to a fixed width',
        result: 'padded'
      },
      {
        name: 'count_chars',
        params: [
          ['line', 'str'],
          ['ch', 'char']
        ],
        purpose: 'count a character in a string',
        result: 'count'
      },
      { name: 'word_count', params: [['doc', 'obj']], purpose: 'count the words of a document', result: 'words' },
      {
        name: 'summarize',
        params: [
          ['doc', 'obj'],
          ['limit', 'int'],
          ['style', 'mode']
        ],
        purpose: 'summarize a document',
        result: 'summary'
      }
    ]
  },
  {
    name: 'calc',
    cls: { name: 'Vector', ctorArgs: ['[1, 2, 3]', '[0.5, 1.5]', '[4, 0, 2]'], variable: 'vec' },
    functions: [
      {
        name: 'scale',
        params: [
          ['values', 'list'],
          ['factor', 'int']
        ],
        purpose: 'scale a list of numbers',
        result: 'scaled'
      },
      {
        name: 'clamp',
        params: [
          ['x', 'int'],
          ['low', 'int'],
          ['high', 'int']
        ],
        purpose: 'clamp a number into a range',
        result: 'bounded'
      },
      {
        name: 'power',
        params: [
          ['base', 'int'],
          ['exp', 'int']
        ],
        purpose: 'raise a number to a power',
        result: 'result'
      },
      { name: 'norm', params: [['vec', 'obj']], purpose: 'compute the length of a vector', result: 'length' },
      {
        name: 'dot',
        params: [
          ['vec', 'obj'],
          ['other', 'list']
        ],
        purpose: 'compute a dot product',
        result: 'product'
      }
    ]
  },
  {
    name: 'files',
    cls: { name: 'Folder', ctorArgs: ["'data'", "'logs'", "'out/tmp'"], variable: 'folder' },
    functions: [
      {
        name: 'read_text',
        params: [
          ['path', 'path'],
          ['encoding', 'enc']
        ],
        purpose: 'read a text file',
        result: 'content'
      },
      {
        name: 'write_text',
        params: [
          ['path', 'path'],
          ['data', 'str'],
          ['mode', 'mode']
        ],
        purpose: 'write text to a file',
        result: 'written'
      },
      {
        name: 'copy_file',
        params: [
          ['src', 'path'],
          ['dst', 'path']
        ],
        purpose: 'copy a file',
        result: 'copied'
      },
      {
        name: 'list_dir',
        params: [
          ['folder', 'obj'],
          ['pattern', 'glob']
        ],
        purpose: 'list the files of a folder',
        result: 'names'
      }
    ]
  },
  {
    name: 'grid',
    cls: { name: 'Grid', ctorArgs: ['3, 4', '2, 2', '5, 1'], variable: 'g' },
    functions: [
      {
        name: 'fill',
        params: [
          ['g', 'obj'],
          ['value', 'int'],
          ['rows', 'int']
        ],
        purpose: 'fill rows of a grid with a value',
        result: 'filled'
      },
      {
        name: 'resize',
        params: [
          ['g', 'obj'],
          ['width', 'int'],
          ['height', 'int']
        ],
        purpose: 'resize a grid',
        result: 'resized'
      },
      { name: 'transpose', params: [['g', 'obj']], purpose: 'transpose a grid', result: 'flipped' },
      {
        name: 'get_cell',
        params: [
          ['g', 'obj'],
          ['row', 'int'],
          ['col', 'int']
        ],
        purpose: 'read one cell of a grid',
        result: 'cell'
      }
    ]
  },
  {
    name: 'net',
    cls: { name: 'Session', ctorArgs: ["'http://example.com'", "'http://localhost:8080'", "'https://api.test'"], variable: 'session' },
    functions: [
      {
        name: 'fetch',
        params: [
          ['url', 'url'],
          ['timeout', 'int']
        ],
        purpose: 'download a web page',
        result: 'page'
      },
      {
        name: 'post',
        params: [
          ['url', 'url'],
          ['payload', 'dict'],
          ['retries', 'int']
        ],
        purpose: 'send data to a server',
        result: 'reply'
      },
      {
        name: 'ping',
        params: [
          ['host', 'str'],
          ['count', 'int']
        ],
        purpose: 'check that a host answers',
        result: 'alive'
      },
      { name: 'close', params: [['session', 'obj']], purpose: 'close a network session', result: 'closed' }
    ]
  }
]

const VALUES: Record<Exclude<ArgType, 'obj'>, string[]> = {
  str: ["'hello world'", "'a,b,c'", "'nova rocks'", "'x y z'", "'data point'", "'one two'"],
  char: ["','", "' '", "'*'", "'-'", "'.'"],
  int: ['0', '1', '2', '3', '5', '8', '10', '16', '42'],
  list: ['[1, 2, 3]', '[4, 5]', '[0.5, 1.5, 2.5]', '[10, 20, 30, 40]', '[7]'],
  path: ["'notes.txt'", "'data.csv'", "'out/log.txt'", "'config.ini'", "'report.md'"],
  enc: ["'utf-8'", "'ascii'", "'latin-1'"],
  mode: ["'short'", "'full'", "'append'", "'fast'", "'safe'"],
  url: ["'http://example.com'", "'https://api.test/items'", "'http://localhost:8080/ping'"],
  dict: ["{'id': 1}", "{'name': 'nova'}", "{'a': 1, 'b': 2}"],
  glob: ["'*.txt'", "'*.csv'", "'log_*'"]
}

/** Variable names used when an argument is bound to a variable in the setup lines. */
const ARG_VARIABLES: Partial<Record<ArgType, string[]>> = {
  str: ['line', 'message', 'raw', 'sentence'],
  list: ['values', 'numbers', 'items'],
  path: ['path', 'filename', 'source'],
  url: ['url', 'endpoint'],
  int: ['n', 'size', 'limit'],
  dict: ['payload', 'body']
}

const NEW_VERBS = ['split', 'make', 'build', 'compute', 'get', 'load', 'apply', 'scan', 'parse', 'merge', 'fetch', 'emit', 'take', 'find']
const NEW_NOUNS = ['tokens', 'words', 'items', 'data', 'values', 'text', 'cells', 'result', 'range', 'chunk', 'block', 'entry']
const NEW_PARAMS = [
  'size',
  'count',
  'amount',
  'ratio',
  'target',
  'source',
  'step',
  'span',
  'key',
  'level',
  'limit',
  'item',
  'unit',
  'depth',
  'scale',
  'char',
  'value',
  'text'
]
const NEW_MODULES = ['io', 'core', 'util', 'ops', 'tools', 'base', 'extra', 'compat']
const GENERIC_FUNCTIONS = ['process', 'transform', 'run_op', 'convert', 'dispatch', 'execute']
const SELECTOR_KEYWORDS = ['op', 'kind', 'action', 'method', 'how']

// ---- randomness -----------------------------------------------------------------------------------------

/** A stream seeded by (seed, label), so that changing one part of the generator does not shift the others. */
function stream(seed: number, label: string): Rng {
  let h = 2166136261 ^ seed
  for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 16777619)
  const next = mulberry32(h ^ Math.imul(seed, 0x9e3779b1))
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: <T>(arr: readonly T[]): T => arr[Math.floor(next() * arr.length)]
  }
}

interface Rng {
  next: () => number
  int: (lo: number, hi: number) => number
  pick: <T>(arr: readonly T[]) => T
}

// ---- updates --------------------------------------------------------------------------------------------

/** What an update changes, by kind (the fields its kind uses are set). */
export interface UpdateChange {
  /** rename_function / deprecate_replace: the new function name. */
  newName?: string
  /** rename_argument: index of the renamed parameter and its new name. */
  paramIndex?: number
  newParam?: string
  /** reorder_arguments: the two swapped parameter indices. */
  swap?: [number, number]
  /** add_default: the default value of the last parameter. */
  defaultValue?: string
  /** move_module: the new module name. */
  newModule?: string
  /** deprecate_replace: the selector keyword of the replacement. */
  selector?: string
}

interface Update extends UpdateChange {
  id: string
  kind: UpdateKind
  module: ModuleSpec
  fn: FunctionSpec
  version: string
}

function applicableKinds(fn: FunctionSpec): UpdateKind[] {
  const n = fn.params.length
  const kinds: UpdateKind[] = ['rename_function', 'move_module', 'deprecate_replace']
  if (n >= 2) kinds.push('rename_argument', 'add_default', 'keyword_only', 'positional_only')
  if (n >= 3 || (n === 2 && fn.params[0][1] !== 'obj')) kinds.push('reorder_arguments')
  if (fn.params[0][1] === 'obj') kinds.push('to_method')
  return kinds
}

/** Every update of the library for this seed: each applicable kind of each function, in a few variants. */
function enumerateUpdates(seed: number): Update[] {
  const out: Update[] = []
  const r = stream(seed, 'updates')
  const variants = 3
  for (const module of MODULES) {
    for (const fn of module.functions) {
      for (const kind of applicableKinds(fn)) {
        const seen = new Set<string>()
        for (let v = 0; v < variants; v++) {
          const u: Update = { id: '', kind, module, fn, version: `==2.${r.int(1, 9)}.${r.int(0, 4)}` }
          const taken = new Set(module.functions.map((f) => f.name))
          const paramNames = fn.params.map((p) => p[0])
          let key = ''
          for (let attempt = 0; attempt < 50; attempt++) {
            switch (kind) {
              case 'rename_function': {
                let name = `${r.pick(NEW_VERBS)}_${r.pick(NEW_NOUNS)}`
                if (taken.has(name)) name = `${name}_v2`
                u.newName = name
                key = name
                break
              }
              case 'rename_argument': {
                u.paramIndex = r.int(1, fn.params.length - 1)
                const choices = NEW_PARAMS.filter((p) => !paramNames.includes(p))
                u.newParam = r.pick(choices)
                key = `${u.paramIndex}:${u.newParam}`
                break
              }
              case 'reorder_arguments': {
                const lo = fn.params[0][1] === 'obj' ? 1 : 0
                const i = r.int(lo, fn.params.length - 2)
                const j = r.int(i + 1, fn.params.length - 1)
                u.swap = [i, j]
                key = `${i}:${j}`
                break
              }
              case 'add_default': {
                const type = fn.params[fn.params.length - 1][1] as Exclude<ArgType, 'obj'>
                u.defaultValue = r.pick(VALUES[type])
                key = u.defaultValue
                break
              }
              case 'keyword_only':
              case 'positional_only':
              case 'to_method':
                key = 'only'
                break
              case 'move_module': {
                u.newModule = r.pick(NEW_MODULES)
                key = u.newModule
                break
              }
              case 'deprecate_replace': {
                u.newName = r.pick(GENERIC_FUNCTIONS)
                u.selector = r.pick(SELECTOR_KEYWORDS)
                key = `${u.newName}:${u.selector}`
                break
              }
            }
            if (!seen.has(key)) break
          }
          if (seen.has(key)) continue
          seen.add(key)
          u.id = `${module.name}.${fn.name}/${kind}/${key}`
          out.push(u)
        }
      }
    }
  }
  return out
}

// ---- notes ----------------------------------------------------------------------------------------------

function signature(fn: FunctionSpec, params = fn.params.map((p) => p[0])): string {
  return `${fn.name}(${params.join(', ')})`
}

function updateNote(u: Update, r: Rng): string {
  const q = `${LIBRARY}.${u.module.name}.${u.fn.name}`
  const params = u.fn.params.map((p) => p[0])
  switch (u.kind) {
    case 'rename_function':
      return r.pick([
        `${q} has been renamed to ${LIBRARY}.${u.module.name}.${u.newName}. The old name has been removed.`,
        `The function ${q} is now called ${u.newName}; use ${LIBRARY}.${u.module.name}.${u.newName} instead.`
      ])
    case 'rename_argument':
      return r.pick([
        `The ${params[u.paramIndex!]} argument of ${q} has been renamed to ${u.newParam}.`,
        `${q} renamed its keyword argument ${params[u.paramIndex!]} to ${u.newParam}.`
      ])
    case 'reorder_arguments': {
      const next = [...params]
      const [i, j] = u.swap!
      ;[next[i], next[j]] = [next[j], next[i]]
      return `The parameters of ${q} have been reordered: the signature changed from ${signature(u.fn)} to ${signature(u.fn, next)}.`
    }
    case 'add_default': {
      const last = params[params.length - 1]
      return r.pick([
        `The ${last} argument of ${q} now defaults to ${u.defaultValue}, so calls can omit it.`,
        `${q} gained a default value for ${last} (${u.defaultValue}); passing it explicitly is no longer needed.`
      ])
    }
    case 'keyword_only':
      return `The arguments of ${q} after ${params[0]} are now keyword-only: pass ${params.slice(1).join(', ')} by name.`
    case 'positional_only':
      return `The arguments of ${q} are now positional-only; passing ${params.slice(1).join(', ')} by name raises a TypeError.`
    case 'to_method':
      return `${q}(${params[0]}, ...) has been deprecated in favor of the ${u.module.cls.name}.${u.fn.name}() method; call it on the ${u.module.cls.name} object.`
    case 'move_module':
      return r.pick([
        `${q} has been moved to ${LIBRARY}.${u.newModule}.${u.fn.name}.`,
        `The function ${u.fn.name} moved from ${LIBRARY}.${u.module.name} to ${LIBRARY}.${u.newModule}; the old location has been removed.`
      ])
    case 'deprecate_replace':
      return `${q} has been deprecated. Use ${LIBRARY}.${u.module.name}.${u.newName}(..., ${u.selector}='${u.fn.name}') instead.`
  }
}

// ---- code -----------------------------------------------------------------------------------------------

type ImportStyle = 'module' | 'names' | 'package'

interface Arg {
  name: string
  value: string
  keyword: boolean
}

interface CallSite {
  module: string
  /** Function name, or method name when `receiver` is set. */
  name: string
  args: Arg[]
  /** Method call on this variable instead of a module function. */
  receiver?: string
  /** Whether the class constructor is used in the setup lines (import it in 'names' style). */
}

function renderCall(c: CallSite, style: ImportStyle): string {
  const args = c.args.map((a) => (a.keyword ? `${a.name}=${a.value}` : a.value)).join(', ')
  if (c.receiver) return `${c.receiver}.${c.name}(${args})`
  const callee = style === 'module' ? `${c.module}.${c.name}` : style === 'names' ? c.name : `${LIBRARY}.${c.module}.${c.name}`
  return `${callee}(${args})`
}

function renderImports(style: ImportStyle, uses: Array<[string, string]>): string[] {
  if (style === 'package') return [`import ${LIBRARY}`]
  const byModule = new Map<string, string[]>()
  for (const [m, name] of uses) {
    const list = byModule.get(m) ?? []
    if (!list.includes(name)) list.push(name)
    byModule.set(m, list)
  }
  if (style === 'module') return [`from ${LIBRARY} import ${[...byModule.keys()].join(', ')}`]
  return [...byModule.entries()].map(([m, names]) => `from ${LIBRARY}.${m} import ${names.join(', ')}`)
}

function renderClass(module: string, cls: string, style: ImportStyle): string {
  return style === 'module' ? `${module}.${cls}` : style === 'names' ? cls : `${LIBRARY}.${module}.${cls}`
}

interface Snippet {
  style: ImportStyle
  wrapped: boolean
  setup: Array<{ variable: string; value: string; isObject: boolean }>
  args: Arg[]
  resultVar: string
}

/** Chooses the concrete arguments, the import style and the layout of one task. */
function makeSnippet(u: Update, r: Rng): Snippet {
  const style = r.pick<ImportStyle>(['module', 'module', 'names', 'package'])
  const wrapped = r.next() < 0.3
  const setup: Snippet['setup'] = []
  const args: Arg[] = u.fn.params.map(([name, type], i) => {
    if (type === 'obj') {
      const ctorArgs = r.pick(u.module.cls.ctorArgs)
      setup.push({ variable: u.module.cls.variable, value: ctorArgs, isObject: true })
      return { name, value: u.module.cls.variable, keyword: false }
    }
    const value = u.kind === 'add_default' && i === u.fn.params.length - 1 ? u.defaultValue! : r.pick(VALUES[type])
    if (i === 0 && ARG_VARIABLES[type]) {
      const variable = r.pick(ARG_VARIABLES[type]!)
      setup.push({ variable, value, isObject: false })
      return { name, value: variable, keyword: false }
    }
    return { name, value, keyword: false }
  })
  if (u.kind === 'reorder_arguments') {
    // Swapped arguments must differ, or the update would not show in the code.
    const [i, j] = u.swap!
    const type = u.fn.params[j][1] as Exclude<ArgType, 'obj'>
    for (let attempt = 0; attempt < 20 && args[i].value === args[j].value; attempt++) args[j].value = r.pick(VALUES[type])
    if (args[i].value === args[j].value) args[j].value = args[i].value === '1' ? '2' : '1'
  }
  // Call style of the old code: what the update kind needs to be visible, else a random mix
  // (trailing arguments by keyword) that the new code keeps.
  const n = args.length
  switch (u.kind) {
    case 'rename_argument':
      for (let i = u.paramIndex!; i < n; i++) args[i].keyword = true
      break
    case 'reorder_arguments':
    case 'keyword_only':
      break
    case 'positional_only':
      for (let i = 1; i < n; i++) args[i].keyword = true
      break
    default: {
      const firstKeyword = r.next() < 0.3 ? r.int(1, Math.max(1, n)) : n
      for (let i = Math.max(1, firstKeyword); i < n; i++) args[i].keyword = true
      if (u.kind === 'add_default' && r.next() < 0.5) args[n - 1].keyword = true
    }
  }
  return { style, wrapped, setup, args, resultVar: u.fn.result }
}

/** Renders the old (before the update) or new (after) code of a snippet. */
function renderCode(u: Update, s: Snippet, after: boolean): string {
  const m = u.module
  let call: CallSite = { module: m.name, name: u.fn.name, args: s.args.map((a) => ({ ...a })) }
  const uses: Array<[string, string]> = []
  if (after) {
    const args = call.args
    switch (u.kind) {
      case 'rename_function':
        call.name = u.newName!
        break
      case 'rename_argument':
        args[u.paramIndex!].name = u.newParam!
        break
      case 'reorder_arguments': {
        const [i, j] = u.swap!
        ;[args[i], args[j]] = [args[j], args[i]]
        break
      }
      case 'add_default':
        args.pop()
        break
      case 'keyword_only':
        for (let i = 1; i < args.length; i++) args[i].keyword = true
        break
      case 'positional_only':
        for (const a of args) a.keyword = false
        break
      case 'to_method':
        call = { module: m.name, name: u.fn.name, args: args.slice(1), receiver: args[0].value }
        break
      case 'move_module':
        call.module = u.newModule!
        break
      case 'deprecate_replace':
        call.name = u.newName!
        args.push({ name: u.selector!, value: `'${u.fn.name}'`, keyword: true })
        break
    }
  }
  for (const st of s.setup) if (st.isObject) uses.push([m.name, m.cls.name])
  if (!call.receiver) uses.push([call.module, call.name])
  const imports = renderImports(s.style, uses)
  const callText = renderCall(call, s.style)
  const lines: string[] = [...imports, '']
  const objectSetup = s.setup
    .filter((st) => st.isObject)
    .map((st) => `${st.variable} = ${renderClass(m.name, m.cls.name, s.style)}(${st.value})`)
  if (s.wrapped) {
    const inputs = s.setup.filter((st) => !st.isObject).map((st) => st.variable)
    lines.push('', `def run(${inputs.join(', ')}):`)
    for (const line of objectSetup) lines.push(`    ${line}`)
    lines.push(`    ${s.resultVar} = ${callText}`, `    return ${s.resultVar}`)
  } else {
    for (const st of s.setup) if (!st.isObject) lines.push(`${st.variable} = ${st.value}`)
    lines.push(...objectSetup, `${s.resultVar} = ${callText}`, `print(${s.resultVar})`)
  }
  return lines.join('\n')
}

function describe(u: Update): string {
  const where = u.kind === 'move_module' ? `${LIBRARY}.${u.newModule}` : `${LIBRARY}.${u.module.name}`
  return `The code demonstrates how to ${u.fn.purpose} with ${where} after the API update.`
}

function makeTask(u: Update, r: Rng): SyntheticTask {
  const s = makeSnippet(u, r)
  const oldCode = renderCode(u, s, false)
  const newCode = renderCode(u, s, true)
  if (oldCode === newCode) throw new RecodeError('ERR_INTERNAL', `synthetic: update ${u.id} produced identical old and new code`)
  return {
    dependency: LIBRARY,
    new_version: u.version,
    description: describe(u),
    update_info: updateNote(u, r),
    old_code: oldCode,
    new_code: newCode,
    kind: u.kind,
    updateId: u.id
  }
}

// ---- the split ------------------------------------------------------------------------------------------

/** Updates of the library for a seed, split into training and held-out updates (~20% of every kind held out). */
export function syntheticUpdates(seed = 1): { train: string[]; heldOut: string[] } {
  const { train, heldOut } = splitUpdates(seed)
  return { train: train.map((u) => u.id), heldOut: heldOut.map((u) => u.id) }
}

function splitUpdates(seed: number): { train: Update[]; heldOut: Update[] } {
  const all = enumerateUpdates(seed)
  const r = stream(seed, 'split')
  const train: Update[] = []
  const heldOut: Update[] = []
  for (const kind of UPDATE_KINDS) {
    const ofKind = all.filter((u) => u.kind === kind)
    // Fisher-Yates with the split stream, then the first ~20% (at least one) are held out.
    for (let i = ofKind.length - 1; i > 0; i--) {
      const j = Math.floor(r.next() * (i + 1))
      ;[ofKind[i], ofKind[j]] = [ofKind[j], ofKind[i]]
    }
    const k = Math.max(1, Math.round(ofKind.length * 0.2))
    heldOut.push(...ofKind.slice(0, k))
    train.push(...ofKind.slice(k))
  }
  return { train, heldOut }
}

function sampleTasks(updates: Update[], count: number, r: Rng): SyntheticTask[] {
  const out: SyntheticTask[] = []
  const seen = new Set<string>()
  // Cycle through the kinds so that every kind is represented even in small sets, then pick an update of
  // that kind; retry a few times to avoid exact duplicates.
  const byKind = UPDATE_KINDS.map((k) => updates.filter((u) => u.kind === k)).filter((l) => l.length > 0)
  for (let i = 0; i < count; i++) {
    const pool = byKind[i % byKind.length]
    let task = makeTask(r.pick(pool), r)
    for (let attempt = 0; attempt < 8 && seen.has(task.update_info + task.old_code); attempt++) task = makeTask(r.pick(pool), r)
    seen.add(task.update_info + task.old_code)
    out.push(task)
  }
  // Shuffle so that kinds do not come in a fixed rotation.
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(r.next() * (i + 1))
    ;[out[i], out[j]] = [out[j], out[i]]
  }
  return out
}

/**
 * Generates `train` training tasks and `heldOut` held-out tasks (defaults 2000 and 200) for `seed`
 * (default 1). Same options, same tasks. Held-out tasks use only updates that no training task uses.
 */
export function syntheticTasks(options: SyntheticOptions = {}): { train: SyntheticTask[]; heldOut: SyntheticTask[] } {
  options = optionsArg(options, 'syntheticTasks')
  const seed = options.seed ?? 1
  const trainCount = options.train ?? 2000
  const heldOutCount = options.heldOut ?? 200
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
    throw new RecodeError('ERR_INVALID_ARG', `syntheticTasks: seed must be an integer in [0, 4294967295], got ${seed}`)
  for (const [name, v] of [
    ['train', trainCount],
    ['heldOut', heldOutCount]
  ] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 1 << 20)
      throw new RecodeError('ERR_INVALID_ARG', `syntheticTasks: ${name} must be an integer in [0, 1048576], got ${v}`)
  }
  const kinds = options.kinds ?? UPDATE_KINDS
  if (!Array.isArray(kinds) || kinds.length === 0 || !kinds.every((k) => UPDATE_KINDS.includes(k))) {
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `syntheticTasks: kinds must be a non-empty array of ${UPDATE_KINDS.join(', ')}, got ${JSON.stringify(options.kinds)}`
    )
  }
  const split = splitUpdates(seed)
  const train = split.train.filter((u) => kinds.includes(u.kind))
  const heldOut = split.heldOut.filter((u) => kinds.includes(u.kind))
  return {
    train: sampleTasks(train, trainCount, stream(seed, 'train-tasks')),
    heldOut: sampleTasks(heldOut, heldOutCount, stream(seed, 'held-out-tasks'))
  }
}

// ---- API edits for the demo base model's corpus -------------------------------------------------------------

/** The new names an API edit introduces, drawn by the caller (lib/demo/corpus.ts: names no update of the data uses). */
export interface ApiEditNames {
  function: () => string
  param: () => string
  module: () => string
  selector: () => string
}

/**
 * One change of a nova call, of an update kind, with new names the caller draws: the code before and after and what
 * changed, so that lib/demo/corpus.ts can state it as an edit request (never as an update note: the base model must
 * learn to read notes by RL). Deterministic in (seed, index) and the names drawn.
 */
export interface ApiEdit extends UpdateChange {
  kind: UpdateKind
  module: string
  cls: string
  function: string
  params: string[]
  /** The call's first argument as written (the object of to_method). */
  receiver: string
  old_code: string
  new_code: string
}

export function apiEdit(seed: number, index: number, names: ApiEditNames): ApiEdit {
  const r = stream(seed, `api-edit${index}`)
  const module = r.pick(MODULES)
  const fn = r.pick(module.functions)
  const kind = r.pick(applicableKinds(fn))
  const params = fn.params.map((p) => p[0])
  const u: Update = { id: `edit${index}`, kind, module, fn, version: '' }
  switch (kind) {
    case 'rename_function':
      u.newName = names.function()
      break
    case 'rename_argument': {
      u.paramIndex = r.int(1, params.length - 1)
      u.newParam = names.param()
      if (params.includes(u.newParam)) u.newParam = `${u.newParam}_in`
      break
    }
    case 'reorder_arguments': {
      const lo = fn.params[0][1] === 'obj' ? 1 : 0
      const i = r.int(lo, params.length - 2)
      u.swap = [i, r.int(i + 1, params.length - 1)]
      break
    }
    case 'add_default': {
      const type = fn.params[params.length - 1][1] as Exclude<ArgType, 'obj'>
      u.defaultValue = r.pick(VALUES[type])
      break
    }
    case 'move_module':
      u.newModule = names.module()
      if (MODULES.some((m) => m.name === u.newModule)) u.newModule = `${u.newModule}_v2`
      break
    case 'deprecate_replace':
      u.newName = names.function()
      u.selector = names.selector()
      break
    default:
      break
  }
  const s = makeSnippet(u, r)
  const { id: _id, kind: _kind, module: _module, fn: _fn, version: _version, ...change } = u
  return {
    kind,
    module: module.name,
    cls: module.cls.name,
    function: fn.name,
    params,
    receiver: s.args[0].value,
    ...change,
    old_code: renderCode(u, s, false),
    new_code: renderCode(u, s, true)
  }
}
