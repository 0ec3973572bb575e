/**
 * HumanEval-format problems (`task_id, prompt, entry_point, canonical_solution, test`), plain or gzipped
 * JSON lines. HumanEval+ files from EvalPlus have the same fields (plus extra ones, ignored here).
 */
import { RecodeError } from '../errors'
import { expectObject, readJsonl, stringField } from './jsonl'

export interface HumanEvalProblem {
  taskId: string
  prompt: string
  entryPoint: string
  canonicalSolution: string
  /** Defines `check(candidate)`. */
  test: string
  source: { file: string; line: number }
}

export function loadHumanEval(file: string): HumanEvalProblem[] {
  const out: HumanEvalProblem[] = []
  const seen = new Set<string>()
  for (const rec of readJsonl(file)) {
    const obj = expectObject(rec, file)
    const where = `${file}:${rec.line}`
    const p: HumanEvalProblem = {
      taskId: stringField(obj, 'task_id', where) as string,
      prompt: stringField(obj, 'prompt', where) as string,
      entryPoint: stringField(obj, 'entry_point', where) as string,
      canonicalSolution: stringField(obj, 'canonical_solution', where) as string,
      test: stringField(obj, 'test', where) as string,
      source: { file, line: rec.line }
    }
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(p.entryPoint))
      throw new RecodeError('ERR_DATA', `${where}: entry_point '${p.entryPoint}' is not a Python identifier`)
    if (seen.has(p.taskId)) throw new RecodeError('ERR_DATA', `${where}: task_id '${p.taskId}' appears twice`)
    seen.add(p.taskId)
    out.push(p)
  }
  if (out.length === 0) throw new RecodeError('ERR_DATA', `${file}: no problems`)
  return out
}
