/**
 * The programs the harness runs, assembled as the original benchmarks do.
 *
 * CodeUpdateArena (per unit test): the problem's imports, the update's implementation, the statement that
 * installs the update into its package, the candidate solution, the test function and a call to it, joined
 * by newlines. The same program without the install statement tells whether a solution really needs the
 * update (UPass).
 *
 * HumanEval: prompt + completion + test + `check(entry_point)`.
 */
import { RecodeError } from '../errors'
import type { CodeUpdateArenaProblem, CodeUpdateArenaUpdate } from '../data/codeupdatearena'
import { testFunctionName } from '../data/codeupdatearena'
import type { HumanEvalProblem } from '../data/humaneval'
import type { ExtractedCode } from './extract'

function section(code: string, title: string): string {
  const bar = '#'.repeat(10)
  return `${bar} Start: ${title} ${bar}\n${code}\n${bar}  End : ${title} ${bar}`
}

/** Top-level function names defined in a source text, in order. */
function topLevelDefs(source: string): string[] {
  return [...source.matchAll(/^(?:async\s+)?def\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(/gm)].map((m) => m[1])
}

/** The name the update gives the function: from the new signature, checked against the implementation. */
export function updatedFunctionName(update: CodeUpdateArenaUpdate): string {
  const defs = topLevelDefs(update.implementation)
  const sig = /^\s*(?:def\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*\(/.exec(update.signature)
  const fromSignature = sig === null ? null : (sig[1].split('.').pop() as string)
  if (fromSignature !== null && defs.includes(fromSignature)) return fromSignature
  if (defs.length === 1) return defs[0]
  if (fromSignature !== null) return fromSignature
  throw new RecodeError(
    'ERR_DATA',
    `update ${update.updateId}: cannot tell which function the implementation defines (signature '${update.signature}')`
  )
}

/**
 * Python statements that install the update: for changed arguments/outputs (and added semantics) the
 * package attribute is replaced (`math.sin = sin`); a rename deletes the old attribute and sets the new
 * one; an added function is set on the parent.
 */
export function updateInstallStatements(update: CodeUpdateArenaUpdate): string[] {
  const parts = update.updateType.split('-')
  const [action, place] = parts
  const aspect = parts.slice(2).join('-') || 'null'
  const pathParts = update.functionPath.split('.')
  if (pathParts.length < 2)
    throw new RecodeError('ERR_DATA', `update ${update.updateId}: function_path '${update.functionPath}' has no package part`)
  const parent = pathParts.slice(0, -1).join('.')
  const oldName = pathParts[pathParts.length - 1]
  const newName = updatedFunctionName(update)
  if (place === 'argument' || place === 'output' || (action === 'add' && aspect === 'semantics')) {
    return [`${update.functionPath} = ${newName}`]
  }
  if (action === 'modify' && place === 'function' && aspect === 'name') {
    return [`del ${parent}.${oldName}`, `setattr(${parent}, '${newName}', ${newName})`]
  }
  if (action === 'add' && place === 'function') {
    return [`setattr(${parent}, '${newName}', ${newName})`]
  }
  if (action === 'deprecate' && place === 'function') {
    return [`del ${update.functionPath}`]
  }
  throw new RecodeError('ERR_DATA', `update ${update.updateId}: unexpected update type '${update.updateType}'`)
}

export interface ArenaProgram {
  testIndex: number
  testName: string
  withUpdate: boolean
  source: string
}

/** One program per unit test, with (default) or without the update installed. */
export function codeUpdateArenaPrograms(problem: CodeUpdateArenaProblem, solution: string, withUpdate = true): ArenaProgram[] {
  const install = updateInstallStatements(problem.update).join('\n')
  return problem.unitTests.map((test, testIndex) => {
    const testName = testFunctionName(test)
    if (testName === null) throw new RecodeError('ERR_DATA', `${problem.id}: unit test ${testIndex} defines no function`)
    const sections = [
      section(problem.imports, 'Import statement(s)'),
      section(problem.update.implementation, 'Updated API implementation'),
      ...(withUpdate ? [install] : []),
      solution,
      test,
      `${testName}()`
    ]
    return { testIndex, testName, withUpdate, source: sections.join('\n') + '\n' }
  })
}

/**
 * The HumanEval program for a completion. A raw continuation (bare text) follows the prompt directly; code
 * extracted from a fenced answer that defines the entry point is appended after the prompt, so the
 * prompt's imports and helper functions stay available and the answer's definition wins.
 */
export function humanEvalProgram(problem: HumanEvalProblem, completion: string, extracted: ExtractedCode): string {
  let body: string
  if (extracted.method === 'bare') {
    body = problem.prompt + completion
  } else {
    const code = extracted.code ?? ''
    body = topLevelDefs(code).includes(problem.entryPoint) ? `${problem.prompt}\n${code}` : problem.prompt + code
  }
  return `${body}\n${problem.test}\ncheck(${problem.entryPoint})\n`
}
