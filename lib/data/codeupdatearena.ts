/**
 * CodeUpdateArena: synthetic updates to Python functions, each with program-synthesis problems that need
 * the update, and unit tests. Two layouts are read:
 * - grouped (the 2024-07-02 file): one line = `{update: {...}, prog_syn_examples: [{...}, ...]}`;
 * - ungrouped (the final benchmark): one line = one problem, the update's fields and the problem's fields
 *   side by side (`description, ..., update_id, scenario, problem, ..., prog_syn_id`).
 * Both become the same flat `CodeUpdateArenaProblem` list.
 */
import { RecodeError } from '../errors'
import { expectObject, readJsonl, stringField } from './jsonl'

export interface CodeUpdateArenaUpdate {
  description: string
  rationale: string
  docstring: string
  /** The new signature, e.g. `math.sin(x, unit='radians')` (sometimes with a leading `def `). */
  signature: string
  imports: string
  /** Python source of the updated function (it calls the saved original, e.g. `old_sin`). */
  implementation: string
  /** e.g. `modify-output-semantics`, `modify-function-name`, `add-function`. */
  updateType: string
  /** e.g. `math.sin`. */
  functionPath: string
  package: string
  updateId: string
}

export interface CodeUpdateArenaProblem {
  /** prog_syn_id, e.g. `[math.sin]:[modify-output-semantics]:[update-0]:[prog_syn-0]`. */
  id: string
  update: CodeUpdateArenaUpdate
  scenario: string
  problem: string
  solutionSignature: string
  /** One source text per unit test, each defining one test function. */
  unitTests: string[]
  /** The problem's import block (it also saves the original function, e.g. `old_sin = math.sin`). */
  imports: string
  refSolution: string
  /** Where the problem came from (for messages). */
  source: { file: string; line: number }
}

export interface CodeUpdateArenaData {
  file: string
  format: 'grouped' | 'ungrouped'
  problems: CodeUpdateArenaProblem[]
  /** Distinct update ids. */
  updates: number
}

const UPDATE_FIELDS: Array<[keyof CodeUpdateArenaUpdate, string]> = [
  ['description', 'description'],
  ['rationale', 'rationale'],
  ['docstring', 'docstring'],
  ['signature', 'signature'],
  ['imports', 'imports'],
  ['implementation', 'implementation'],
  ['updateType', 'update_type'],
  ['functionPath', 'function_path'],
  ['package', 'package'],
  ['updateId', 'update_id']
]

function readUpdate(obj: Record<string, unknown>, where: string): CodeUpdateArenaUpdate {
  const u: Partial<CodeUpdateArenaUpdate> = {}
  for (const [key, field] of UPDATE_FIELDS) u[key] = textField(obj, field, where)
  return u as CodeUpdateArenaUpdate
}

/** A text field that may also be stored as a list of lines (imports in some copies). */
function textField(obj: Record<string, unknown>, key: string, where: string): string {
  const v = obj[key]
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v.join('\n')
  return stringField(obj, key, where) as string
}

function readProblem(
  obj: Record<string, unknown>,
  update: CodeUpdateArenaUpdate,
  where: string,
  file: string,
  line: number
): CodeUpdateArenaProblem {
  const id = stringField(obj, 'prog_syn_id', where) as string
  const unitTests = parseUnitTests(obj.unit_tests, `${where} (prog_syn_id ${id})`)
  return {
    id,
    update,
    scenario: textField(obj, 'scenario', where),
    problem: textField(obj, 'problem', where),
    solutionSignature: textField(obj, 'solution_signature', where),
    unitTests,
    imports: textField(obj, 'prog_syn_imports', where),
    refSolution: textField(obj, 'ref_solution', where),
    source: { file, line }
  }
}

/**
 * Unit tests come as a list of sources, a JSON-encoded list, or one text with the tests separated by
 * blank lines. Test bodies may themselves contain blank lines, so a test starts only at a blank line
 * followed by an unindented line, and leading comment/decorator blocks join the test that follows them.
 */
export function parseUnitTests(value: unknown, where: string): string[] {
  let tests: string[]
  if (Array.isArray(value)) {
    if (!value.every((x) => typeof x === 'string')) throw new RecodeError('ERR_DATA', `${where}: unit_tests must be strings`)
    tests = value as string[]
  } else if (typeof value === 'string') {
    const trimmed = value.trim()
    let asList: unknown
    if (trimmed.startsWith('[')) {
      try {
        asList = JSON.parse(trimmed)
      } catch {
        asList = undefined
      }
    }
    tests = Array.isArray(asList) && asList.every((x) => typeof x === 'string') ? (asList as string[]) : splitUnitTests(value)
  } else {
    throw new RecodeError('ERR_DATA', `${where}: field 'unit_tests' must be a string or a list of strings`)
  }
  tests = tests.filter((t) => t.trim() !== '')
  if (tests.length === 0) throw new RecodeError('ERR_DATA', `${where}: no unit tests`)
  for (const [i, t] of tests.entries()) {
    if (testFunctionName(t) === null) throw new RecodeError('ERR_DATA', `${where}: unit test ${i} defines no top-level function`)
  }
  return tests
}

function splitUnitTests(text: string): string[] {
  const lines = text.split('\n')
  const blocks: string[][] = [[]]
  for (let i = 0; i < lines.length; i++) {
    const startsBlock = i > 0 && lines[i - 1] === '' && /^\S/.test(lines[i])
    if (startsBlock && blocks[blocks.length - 1].some((l) => l.trim() !== '')) blocks.push([])
    blocks[blocks.length - 1].push(lines[i])
  }
  // Merge blocks without a top-level def into the next block (a comment or decorator above a test),
  // or into the previous one when nothing follows.
  const merged: string[][] = []
  let pending: string[] = []
  for (const b of blocks) {
    const withPending = [...pending, ...b]
    if (b.some((l) => /^(async\s+)?def\s/.test(l))) {
      merged.push(withPending)
      pending = []
    } else {
      pending = withPending
    }
  }
  if (pending.some((l) => l.trim() !== '')) {
    if (merged.length > 0) merged[merged.length - 1].push(...pending)
    else merged.push(pending)
  }
  return merged.map((b) => b.join('\n').replace(/\n+$/, '\n'))
}

/** The name of the first top-level function a unit test defines (the one the harness calls). */
export function testFunctionName(source: string): string | null {
  const m = /^(?:async\s+)?def\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(/m.exec(source)
  return m ? m[1] : null
}

/** Loads either layout; the format is detected per line. */
export function loadCodeUpdateArena(file: string): CodeUpdateArenaData {
  const problems: CodeUpdateArenaProblem[] = []
  const formats = new Set<'grouped' | 'ungrouped'>()
  const seen = new Map<string, string>()
  for (const rec of readJsonl(file)) {
    const obj = expectObject(rec, file)
    const where = `${file}:${rec.line}`
    if ('prog_syn_examples' in obj || ('update' in obj && typeof obj.update === 'object')) {
      formats.add('grouped')
      if (obj.update === null || typeof obj.update !== 'object' || Array.isArray(obj.update))
        throw new RecodeError('ERR_DATA', `${where}: field 'update' must be an object`)
      const update = readUpdate(obj.update as Record<string, unknown>, `${where} update`)
      if (!Array.isArray(obj.prog_syn_examples)) throw new RecodeError('ERR_DATA', `${where}: field 'prog_syn_examples' must be a list`)
      for (const [i, ex] of (obj.prog_syn_examples as unknown[]).entries()) {
        if (ex === null || typeof ex !== 'object' || Array.isArray(ex))
          throw new RecodeError('ERR_DATA', `${where}: prog_syn_examples[${i}] must be an object`)
        problems.push(readProblem(ex as Record<string, unknown>, update, `${where} prog_syn_examples[${i}]`, file, rec.line))
      }
    } else {
      formats.add('ungrouped')
      const update = readUpdate(obj, where)
      problems.push(readProblem(obj, update, where, file, rec.line))
    }
    const last = problems[problems.length - 1]
    if (last !== undefined && seen.has(last.id) && seen.get(last.id) !== where) {
      throw new RecodeError('ERR_DATA', `${where}: prog_syn_id '${last.id}' repeats one from ${seen.get(last.id)}`)
    }
    if (last !== undefined) seen.set(last.id, where)
  }
  if (problems.length === 0) throw new RecodeError('ERR_DATA', `${file}: no problems`)
  if (formats.size > 1) throw new RecodeError('ERR_DATA', `${file}: mixes the grouped and the ungrouped layouts`)
  return {
    file,
    format: [...formats][0],
    problems,
    updates: new Set(problems.map((p) => p.update.updateId)).size
  }
}
