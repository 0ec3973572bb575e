import { parseArgs } from 'util'
import { RecodeError } from '../errors'
import { readJsonl } from '../data/jsonl'
import { loadMigrationData, MIGRATION_FIELDS } from '../data/recode'
import type { MigrationQualityReport } from '../data/recode'
import { loadCodeUpdateArena } from '../data/codeupdatearena'
import { loadHumanEval } from '../data/humaneval'
import type { Command } from './types'

const usage = 'recode data check FILE [--json] [--python P] [--no-syntax]'

function lineList(lines: number[], max = 12): string {
  if (lines.length === 0) return ''
  return ` (lines ${lines.slice(0, max).join(', ')}${lines.length > max ? `, … ${lines.length - max} more` : ''})`
}

/** The quality report as text. */
export function formatMigrationReport(r: MigrationQualityReport): string {
  const out = [
    `${r.file}: ${r.rows} rows, ReCode migration pairs`,
    `libraries: ${Object.entries(r.libraries)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
    `null fields:            ${r.nullFields.rows} rows${
      r.nullFields.rows > 0
        ? ' [' +
          Object.entries(r.nullFields.byField)
            .map(([k, v]) => `${k} ${v}`)
            .join(', ') +
          ']'
        : ''
    }${lineList(r.nullFields.lines)}`,
    `old_code == new_code:   ${r.oldEqualsNew.rows} rows${lineList(r.oldEqualsNew.lines)}`,
    `duplicate pairs:        ${r.duplicatePairs.rows} repeated rows of ${r.duplicatePairs.distinctPairs} distinct pairs${lineList(r.duplicatePairs.lines)}`,
    `version without '==':   ${r.versionWithoutEq.rows} rows [${Object.entries(r.versionWithoutEq.values)
      .map(([k, v]) => `'${k}' ${v}`)
      .join(
        ', '
      )}]${lineList(r.versionWithoutEq.lines)} — the version number is used as written (the original's new_version[2:] would cut it)`,
    r.invalidPythonTarget.checked
      ? `new_code not valid Python: ${r.invalidPythonTarget.rows} rows${lineList(r.invalidPythonTarget.lines)}`
      : `new_code not valid Python: not checked (${r.invalidPythonTarget.reason ?? 'no python3'})`,
    `library spellings:      ${
      Object.keys(r.librarySpellings.groups).length === 0
        ? 'consistent'
        : Object.entries(r.librarySpellings.groups)
            .map(
              ([name, s]) =>
                `${name} <- ${Object.entries(s)
                  .map(([k, v]) => `'${k}' ${v}`)
                  .join(' / ')}`
            )
            .join('; ')
    }`
  ]
  if (r.invalidPythonTarget.checked && r.invalidPythonTarget.rows > 0) {
    out.push('', 'invalid targets (first 10):')
    for (const line of r.invalidPythonTarget.lines.slice(0, 10)) out.push(`  line ${line}: ${r.invalidPythonTarget.messages[line]}`)
  }
  return out.join('\n')
}

export const data: Command = {
  name: 'data',
  summary: 'check a data file (ReCode migration pairs, CodeUpdateArena, HumanEval) and print its quality report',
  usage,
  async run(argv) {
    let parsed
    try {
      parsed = parseArgs({
        args: argv,
        allowPositionals: true,
        options: { json: { type: 'boolean' }, python: { type: 'string' }, 'no-syntax': { type: 'boolean' } }
      })
    } catch (err) {
      throw new RecodeError('ERR_INVALID_ARG', `${(err as Error).message}; usage: ${usage}`)
    }
    const [sub, file, ...rest] = parsed.positionals
    if (sub !== 'check' || file === undefined || rest.length > 0) throw new RecodeError('ERR_INVALID_ARG', `usage: ${usage}`)
    const first = readJsonl(file)[0]
    const keys = first !== undefined && first.value !== null && typeof first.value === 'object' ? Object.keys(first.value as object) : []
    if (MIGRATION_FIELDS.some((k) => keys.includes(k)) && keys.includes('old_code')) {
      const { report } = await loadMigrationData(file, { python: parsed.values.python, checkSyntax: parsed.values['no-syntax'] !== true })
      console.log(parsed.values.json === true ? JSON.stringify(report, null, 2) : formatMigrationReport(report))
      return 0
    }
    if (keys.includes('prog_syn_examples') || keys.includes('prog_syn_id')) {
      const d = loadCodeUpdateArena(file)
      const packages: Record<string, number> = {}
      for (const p of d.problems) packages[p.update.package] = (packages[p.update.package] ?? 0) + 1
      const tests = d.problems.reduce((s, p) => s + p.unitTests.length, 0)
      const summary = {
        file,
        benchmark: 'codeupdatearena',
        format: d.format,
        updates: d.updates,
        problems: d.problems.length,
        unitTests: tests,
        packages
      }
      console.log(
        parsed.values.json === true
          ? JSON.stringify(summary, null, 2)
          : `${file}: CodeUpdateArena (${d.format}), ${d.updates} updates, ${d.problems.length} problems, ${tests} unit tests\npackages: ${Object.entries(
              packages
            )
              .map(([k, v]) => `${k} ${v}`)
              .join(', ')}`
      )
      return 0
    }
    if (keys.includes('task_id') && keys.includes('entry_point')) {
      const probs = loadHumanEval(file)
      console.log(
        parsed.values.json === true
          ? JSON.stringify({ file, benchmark: 'humaneval', problems: probs.length }, null, 2)
          : `${file}: HumanEval format, ${probs.length} problems, all fields present`
      )
      return 0
    }
    throw new RecodeError(
      'ERR_DATA',
      `${file}:${first?.line ?? 1}: not a known format (fields: ${keys.join(', ') || 'none'}); expected ReCode migration pairs, CodeUpdateArena or HumanEval`
    )
  }
}
