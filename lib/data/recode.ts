/**
 * ReCode's training data: code-migration pairs, one JSON object per line with
 * `dependency, new_version, description, update_info, old_code, new_code`.
 *
 * The published file has known defects (rows with nulls, old == new, duplicate pairs, versions without the
 * `==` prefix, targets that are not valid Python, one library under two spellings). The loader reports
 * them all and can drop each kind; nothing is dropped silently.
 */
import { RecodeError, optionsArg } from '../errors'
import { mulberry32 } from '../random'
import { checkPythonSyntax } from '../eval/python'
import { expectObject, readJsonl, stringField } from './jsonl'

export interface MigrationExample {
  /** Library as written in the file (see `library` for the merged spelling). */
  dependency: string
  /** Library name with spellings merged (`Pandas` -> `pandas`): the most frequent spelling of its lowercase form. */
  library: string
  /** `new_version` as written, e.g. `==2.0.0` or `2.0.0`. */
  newVersion: string | null
  /** The version number the prompt shows: `new_version` without a leading `==` (the original strips two characters blindly). */
  version: string
  description: string | null
  updateInfo: string | null
  oldCode: string | null
  newCode: string | null
  /** 1-based line in the file. */
  line: number
}

export const MIGRATION_FIELDS = ['dependency', 'new_version', 'description', 'update_info', 'old_code', 'new_code'] as const

export type MigrationIssueKind =
  | 'nullField'
  | 'oldEqualsNew'
  | 'duplicatePair'
  | 'versionWithoutEq'
  | 'invalidPythonTarget'
  | 'librarySpelling'

export interface MigrationQualityReport {
  file: string
  rows: number
  /** Rows per merged library name. */
  libraries: Record<string, number>
  nullFields: { rows: number; byField: Record<string, number>; lines: number[] }
  oldEqualsNew: { rows: number; lines: number[] }
  /** Rows whose (old_code, new_code) pair already appeared earlier; `lines` are the repeats, the first copy is kept. */
  duplicatePairs: { rows: number; distinctPairs: number; lines: number[] }
  versionWithoutEq: { rows: number; lines: number[]; values: Record<string, number> }
  /** `new_code` that CPython's `ast.parse` rejects (checked only when a python3 was usable). */
  invalidPythonTarget: { checked: boolean; reason?: string; rows: number; lines: number[]; messages: Record<number, string> }
  /** Library names written in more than one spelling: merged name -> spelling -> rows. */
  librarySpellings: { rowsNotCanonical: number; groups: Record<string, Record<string, number>> }
}

export interface LoadMigrationOptions {
  /** Drop rows with any null field. */
  dropNullFields?: boolean
  /** Drop rows whose old_code equals new_code. */
  dropOldEqualsNew?: boolean
  /** Drop repeated (old_code, new_code) pairs, keeping the first. */
  dropDuplicates?: boolean
  /** Drop rows whose new_version lacks the `==` prefix (their version is still read correctly). */
  dropVersionWithoutEq?: boolean
  /** Drop rows whose new_code is not valid Python (needs python3). */
  dropInvalidTargets?: boolean
  /** Rewrite `dependency` to the merged spelling (default false: the file's text is kept in `dependency`; `library` is always merged). */
  normalizeLibraryNames?: boolean
  /** Run the `ast.parse` check (default true). When python3 is unusable the report says so, unless `dropInvalidTargets` demands it. */
  checkSyntax?: boolean
  python?: string
}

export interface MigrationData {
  examples: MigrationExample[]
  report: MigrationQualityReport
  /** How many rows each drop option removed (a row removed by an earlier option is not counted again). */
  dropped: Partial<Record<MigrationIssueKind, number>>
}

/** `==2.0.0` -> `2.0.0`, `2.0.0` -> `2.0.0`, `>=1.2` -> `1.2`: the version number, whatever the prefix. */
export function normalizeVersion(v: string | null): string {
  if (v === null) return ''
  return v
    .trim()
    .replace(/^(===|==|>=|<=|~=|!=|>|<|=)\s*/, '')
    .trim()
}

/** Reads and validates the file (every row must be an object with the six fields, strings or null). */
export function readMigrationRows(file: string): MigrationExample[] {
  const rows: MigrationExample[] = []
  for (const rec of readJsonl(file)) {
    const obj = expectObject(rec, file)
    const where = `${file}:${rec.line}`
    for (const key of Object.keys(obj)) {
      if (!(MIGRATION_FIELDS as readonly string[]).includes(key))
        throw new RecodeError('ERR_DATA', `${where}: unknown field '${key}' (expected ${MIGRATION_FIELDS.join(', ')})`)
    }
    const dependency = stringField(obj, 'dependency', where) as string
    if (dependency.trim() === '') throw new RecodeError('ERR_DATA', `${where}: field 'dependency' is empty`)
    const newVersion = stringField(obj, 'new_version', where, true)
    rows.push({
      dependency,
      library: dependency,
      newVersion,
      version: normalizeVersion(newVersion),
      description: stringField(obj, 'description', where, true),
      updateInfo: stringField(obj, 'update_info', where, true),
      oldCode: stringField(obj, 'old_code', where, true),
      newCode: stringField(obj, 'new_code', where, true),
      line: rec.line
    })
  }
  if (rows.length === 0) throw new RecodeError('ERR_DATA', `${file}: no rows`)
  return rows
}

/** Loads the file, writes the quality report, applies the drop options. */
export async function loadMigrationData(file: string, options: LoadMigrationOptions = {}): Promise<MigrationData> {
  options = optionsArg(options, 'loadMigrationData')
  const rows = readMigrationRows(file)

  // Library spellings: group by lowercase, the most frequent spelling names the group (ties: first seen).
  const spellings = new Map<string, Map<string, number>>()
  for (const r of rows) {
    const key = r.dependency.trim().toLowerCase()
    const m = spellings.get(key) ?? new Map<string, number>()
    m.set(r.dependency, (m.get(r.dependency) ?? 0) + 1)
    spellings.set(key, m)
  }
  const canonical = new Map<string, string>()
  for (const [key, m] of spellings) {
    let best = ''
    let bestCount = -1
    for (const [name, count] of m)
      if (count > bestCount) {
        best = name
        bestCount = count
      }
    canonical.set(key, best)
  }
  const spellingGroups: Record<string, Record<string, number>> = {}
  let rowsNotCanonical = 0
  for (const [key, m] of spellings) {
    if (m.size < 2) continue
    const name = canonical.get(key) as string
    spellingGroups[name] = Object.fromEntries(m)
    for (const [spelling, count] of m) if (spelling !== name) rowsNotCanonical += count
  }
  for (const r of rows) r.library = canonical.get(r.dependency.trim().toLowerCase()) as string

  const nullLines: number[] = []
  const byField: Record<string, number> = {}
  const oldEqNewLines: number[] = []
  const dupLines: number[] = []
  const pairsSeen = new Set<string>()
  const versionLines: number[] = []
  const versionValues: Record<string, number> = {}
  const libraries: Record<string, number> = {}
  for (const r of rows) {
    libraries[r.library] = (libraries[r.library] ?? 0) + 1
    const nulls = (
      [
        ['new_version', r.newVersion],
        ['description', r.description],
        ['update_info', r.updateInfo],
        ['old_code', r.oldCode],
        ['new_code', r.newCode]
      ] as Array<[string, string | null]>
    )
      .filter(([, v]) => v === null)
      .map(([k]) => k)
    if (nulls.length > 0) nullLines.push(r.line)
    for (const k of nulls) byField[k] = (byField[k] ?? 0) + 1
    if (r.oldCode !== null && r.oldCode === r.newCode) oldEqNewLines.push(r.line)
    const pair = JSON.stringify([r.oldCode, r.newCode])
    if (pairsSeen.has(pair)) dupLines.push(r.line)
    else pairsSeen.add(pair)
    if (r.newVersion !== null && !r.newVersion.trim().startsWith('==')) {
      versionLines.push(r.line)
      versionValues[r.newVersion] = (versionValues[r.newVersion] ?? 0) + 1
    }
  }

  const invalid: MigrationQualityReport['invalidPythonTarget'] = { checked: false, rows: 0, lines: [], messages: {} }
  if (options.checkSyntax !== false || options.dropInvalidTargets === true) {
    const targets = rows.map((r) => r.newCode ?? '')
    try {
      const results = await checkPythonSyntax(targets, options.python)
      invalid.checked = true
      results.forEach((msg, i) => {
        if (msg !== null && rows[i].newCode !== null) {
          invalid.rows++
          invalid.lines.push(rows[i].line)
          invalid.messages[rows[i].line] = msg
        }
      })
    } catch (err) {
      if (options.dropInvalidTargets === true) throw err
      invalid.reason = (err as Error).message
    }
  } else {
    invalid.reason = 'syntax check turned off'
  }

  const report: MigrationQualityReport = {
    file,
    rows: rows.length,
    libraries,
    nullFields: { rows: nullLines.length, byField, lines: nullLines },
    oldEqualsNew: { rows: oldEqNewLines.length, lines: oldEqNewLines },
    duplicatePairs: {
      rows: dupLines.length,
      distinctPairs: new Set(
        dupLines.map((l) => {
          const r = rows.find((x) => x.line === l) as MigrationExample
          return JSON.stringify([r.oldCode, r.newCode])
        })
      ).size,
      lines: dupLines
    },
    versionWithoutEq: { rows: versionLines.length, lines: versionLines, values: versionValues },
    invalidPythonTarget: invalid,
    librarySpellings: { rowsNotCanonical, groups: spellingGroups }
  }

  const drops: Array<[MigrationIssueKind, boolean | undefined, Set<number>]> = [
    ['nullField', options.dropNullFields, new Set(nullLines)],
    ['oldEqualsNew', options.dropOldEqualsNew, new Set(oldEqNewLines)],
    ['duplicatePair', options.dropDuplicates, new Set(dupLines)],
    ['versionWithoutEq', options.dropVersionWithoutEq, new Set(versionLines)],
    ['invalidPythonTarget', options.dropInvalidTargets, new Set(invalid.lines)]
  ]
  const dropped: MigrationData['dropped'] = {}
  let examples = rows
  for (const [kind, on, lines] of drops) {
    if (on !== true) continue
    const before = examples.length
    examples = examples.filter((r) => !lines.has(r.line))
    dropped[kind] = before - examples.length
  }
  if (options.normalizeLibraryNames === true) {
    examples = examples.map((r) => ({ ...r, dependency: r.library }))
  }
  return { examples, report, dropped }
}

export interface SplitOptions {
  /** Seed of the shuffle (default 0). */
  seed?: number
  /** Fraction of rows in the test split (default 0.1) when no libraries are held out. */
  testFraction?: number
  /** Hold out whole libraries (matched case-insensitively against the merged name): their rows form the test split. */
  holdOutLibraries?: string[]
}

/**
 * Deterministic train/test split. By seed: identical (old_code, new_code) pairs go to the same side, so
 * duplicates never leak across. By libraries: every row of the named libraries is test data.
 */
export function splitMigrationData(
  examples: MigrationExample[],
  options: SplitOptions = {}
): { train: MigrationExample[]; test: MigrationExample[] } {
  options = optionsArg(options, 'splitMigrationData')
  if (options.holdOutLibraries !== undefined) {
    const held = new Set(options.holdOutLibraries.map((l) => l.toLowerCase()))
    const known = new Set(examples.map((e) => e.library.toLowerCase()))
    for (const l of held)
      if (!known.has(l))
        throw new RecodeError(
          'ERR_INVALID_ARG',
          `holdOutLibraries: no rows for library '${l}' (libraries: ${[...new Set(examples.map((e) => e.library))].join(', ')})`
        )
    return {
      train: examples.filter((e) => !held.has(e.library.toLowerCase())),
      test: examples.filter((e) => held.has(e.library.toLowerCase()))
    }
  }
  const fraction = options.testFraction ?? 0.1
  if (!(fraction >= 0 && fraction <= 1)) throw new RecodeError('ERR_INVALID_ARG', `testFraction must be in [0, 1], got ${fraction}`)
  const groups = new Map<string, MigrationExample[]>()
  for (const e of examples) {
    const key = JSON.stringify([e.oldCode, e.newCode])
    const g = groups.get(key) ?? []
    g.push(e)
    groups.set(key, g)
  }
  const order = [...groups.values()]
  const random = mulberry32(options.seed ?? 0)
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    const t = order[i]
    order[i] = order[j]
    order[j] = t
  }
  const testTarget = Math.round(examples.length * fraction)
  const test: MigrationExample[] = []
  const train: MigrationExample[] = []
  for (const g of order) (test.length < testTarget ? test : train).push(...g)
  const byLine = (a: MigrationExample, b: MigrationExample): number => a.line - b.line
  return { train: train.sort(byLine), test: test.sort(byLine) }
}
