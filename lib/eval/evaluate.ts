/**
 * Evaluation on CodeUpdateArena (pass@k and UPass@k) and HumanEval (pass@k): samples come from a
 * LanguageModel (prompted with the ReCode presets, rendered by the model's chat template) or from
 * completions made elsewhere; every sample's code runs in the sandbox.
 */
import { RecodeError, abortError, invalidArg, optionsArg } from '../errors'
import type { LanguageModel } from '../model/types'
import { loadCodeUpdateArena } from '../data/codeupdatearena'
import type { CodeUpdateArenaProblem } from '../data/codeupdatearena'
import { loadHumanEval } from '../data/humaneval'
import type { HumanEvalProblem } from '../data/humaneval'
import { expectObject, readJsonl, stringField } from '../data/jsonl'
import { codeUpdateArenaPrompt, humanEvalPrompt, renderPrompt } from '../prompts'
import type { PromptTemplate } from '../prompts'
import { extractCode } from './extract'
import type { ExtractionMethod } from './extract'
import { codeUpdateArenaPrograms, humanEvalProgram } from './programs'
import { classifyRun, passAtK, meanPassAtK } from './metrics'
import type { FailureCategory } from './metrics'
import { probeIsolation, describeIsolation, runPrograms, defaultConcurrency } from './sandbox'
import type { SandboxOptions, IsolationInfo } from './sandbox'
import { probePython } from './python'

export type Benchmark = 'codeupdatearena' | 'humaneval'

/**
 * Standard-library modules already loaded in the original CodeUpdateArena harness's interpreter (it execs
 * each program in a fork of itself). Loading them first keeps, for example, a test that imports numpy after
 * a rename update deleted `itertools.product` working as it did there (numpy's import needs `tokenize`,
 * which needs `itertools.product`), and one that imports `random` after `math.cos` was renamed. Only the
 * standard library is loaded: numpy, pandas and torch (also loaded there) cost too much per program.
 */
export const CODEUPDATEARENA_PREIMPORT = [
  'abc',
  'bisect',
  'collections',
  'contextlib',
  'copy',
  'dataclasses',
  'datetime',
  'decimal',
  'enum',
  'fractions',
  'functools',
  'hashlib',
  'heapq',
  'inspect',
  'itertools',
  'json',
  'linecache',
  'math',
  'numbers',
  'operator',
  'pickle',
  'random',
  're',
  'secrets',
  'statistics',
  'string',
  'struct',
  'textwrap',
  'tokenize',
  'types',
  'typing',
  'warnings',
  'weakref'
]

export interface Completion {
  /** prog_syn_id (CodeUpdateArena) or task_id (HumanEval). */
  id: string
  /** Model output (think/answer format) or bare code; for HumanEval, bare text continues the prompt. */
  completion: string
}

export interface EvaluateProgress {
  phase: 'generate' | 'execute'
  done: number
  total: number
}

export interface EvaluateOptions {
  benchmark: Benchmark
  /** A data file (either CodeUpdateArena layout, or HumanEval JSONL/.gz) or already-loaded problems. */
  data: string | CodeUpdateArenaProblem[] | HumanEvalProblem[]
  /** Generates the samples. Either this or `completions`. */
  model?: LanguageModel
  /** Completions made elsewhere: a JSONL file of `{"id", "completion"}` or the list itself. */
  completions?: string | Completion[]
  /** Samples per problem when generating (default 1). */
  samples?: number
  /** Sampling settings (defaults: the original CodeUpdateArena runs used temperature 0.8, top_p 0.7, 512 tokens). */
  temperature?: number
  topP?: number
  maxNewTokens?: number
  seed?: number
  /** Prompts per generate() call (default 8). */
  batchSize?: number
  /** Prompt preset name or custom template (default: recode-codeupdatearena / humaneval). */
  prompt?: string | PromptTemplate
  /** pass@k values to report (default [1, 5]); k larger than the samples of a problem is left out. */
  k?: number[]
  /** Also run each passing CodeUpdateArena sample without the update (UPass; default true). */
  upass?: boolean
  /** Only these problem ids. */
  ids?: string[]
  /** Only the first `limit` problems (after `ids`). */
  limit?: number
  /** Sandbox settings (interpreter, timeout, memory, isolation) and how many programs run at once. */
  sandbox?: SandboxOptions & { concurrency?: number }
  signal?: AbortSignal
  onProgress?: (p: EvaluateProgress) => void
}

export interface SampleRecord {
  index: number
  passed: boolean
  /** CodeUpdateArena: passed with the update and failed (some test) without it. */
  upassed?: boolean
  /** CodeUpdateArena: all tests passed without the update too (the solution does not need it). */
  passedWithoutUpdate?: boolean
  /** 'passed', or why it failed (the first failing test's reason). */
  category: 'passed' | FailureCategory
  errorType?: string
  message?: string
  testsPassed: number
  testsTotal: number
  extraction: ExtractionMethod
}

export interface ProblemRecord {
  id: string
  package?: string
  updateType?: string
  n: number
  /** Samples that passed. */
  c: number
  /** Samples that UPassed (CodeUpdateArena). */
  u?: number
  passAtK: Record<string, number | null>
  upassAtK?: Record<string, number | null>
  samples: SampleRecord[]
}

export interface EvaluationResult {
  benchmark: Benchmark
  data: string
  problems: number
  /** Problems of the data with no completion (left out of every score). */
  missing: number
  samplesPerProblem: { min: number; max: number }
  k: number[]
  passAtK: Record<string, number | null>
  upassAtK?: Record<string, number | null>
  perPackage?: Record<string, { problems: number; passAtK: Record<string, number | null>; upassAtK: Record<string, number | null> }>
  failures: Record<FailureCategory, number>
  programsRun: number
  isolation: IsolationInfo
  seconds: { generate: number; execute: number }
  records: ProblemRecord[]
}

/** Reads a completions file: one JSON object per line with `id` (or `task_id` / `prog_syn_id`) and `completion`. */
export function loadCompletions(file: string): Completion[] {
  return readJsonl(file).map((rec) => {
    const obj = expectObject(rec, file)
    const where = `${file}:${rec.line}`
    const key = 'id' in obj ? 'id' : 'task_id' in obj ? 'task_id' : 'prog_syn_id' in obj ? 'prog_syn_id' : 'id'
    return { id: stringField(obj, key, where) as string, completion: stringField(obj, 'completion', where) as string }
  })
}

interface Item {
  id: string
  package?: string
  updateType?: string
  arena?: CodeUpdateArenaProblem
  human?: HumanEvalProblem
}

function loadItems(options: EvaluateOptions): { items: Item[]; dataName: string } {
  const { benchmark, data } = options
  let items: Item[]
  let dataName: string
  if (benchmark === 'codeupdatearena') {
    const problems = typeof data === 'string' ? loadCodeUpdateArena(data).problems : (data as CodeUpdateArenaProblem[])
    dataName = typeof data === 'string' ? data : '(problems given)'
    items = problems.map((p) => ({ id: p.id, package: p.update.package, updateType: p.update.updateType, arena: p }))
  } else if (benchmark === 'humaneval') {
    const problems = typeof data === 'string' ? loadHumanEval(data) : (data as HumanEvalProblem[])
    dataName = typeof data === 'string' ? data : '(problems given)'
    items = problems.map((p) => ({ id: p.taskId, human: p }))
  } else {
    throw invalidArg(`benchmark must be 'codeupdatearena' or 'humaneval', got '${String(benchmark)}'`)
  }
  if (options.ids !== undefined) {
    const wanted = new Set(options.ids)
    items = items.filter((i) => wanted.has(i.id))
  }
  if (options.limit !== undefined) items = items.slice(0, Math.max(0, options.limit))
  if (items.length === 0) throw invalidArg('no problems to evaluate (check ids / limit)')
  return { items, dataName }
}

async function generateSamples(model: LanguageModel, items: Item[], options: EvaluateOptions): Promise<Map<string, string[]>> {
  const n = options.samples ?? 1
  if (!Number.isInteger(n) || n < 1) throw invalidArg(`samples must be a positive integer, got ${n}`)
  const batchSize = Math.max(1, options.batchSize ?? 8)
  const out = new Map<string, string[]>()
  for (let start = 0; start < items.length; start += batchSize) {
    if (options.signal?.aborted === true) throw abortError()
    const batch = items.slice(start, start + batchSize)
    const prompts = batch.map((it) =>
      renderPrompt(
        it.arena !== undefined
          ? codeUpdateArenaPrompt(it.arena, options.prompt)
          : humanEvalPrompt(it.human as HumanEvalProblem, options.prompt),
        model
      )
    )
    const gens = await model.generate(prompts, {
      n,
      temperature: options.temperature ?? 0.8,
      topP: options.topP ?? 0.7,
      maxNewTokens: options.maxNewTokens ?? 512,
      seed: options.seed,
      signal: options.signal
    })
    if (!Array.isArray(gens) || gens.length !== batch.length)
      throw new RecodeError(
        'ERR_MODEL',
        `generate() returned ${Array.isArray(gens) ? gens.length : 'no'} results for ${batch.length} prompts`
      )
    batch.forEach((it, i) =>
      out.set(
        it.id,
        gens[i].map((g) => g.text)
      )
    )
    options.onProgress?.({ phase: 'generate', done: Math.min(items.length, start + batch.length), total: items.length })
  }
  return out
}

function groupCompletions(list: Completion[], items: Item[], source: string): Map<string, string[]> {
  const known = new Set(items.map((i) => i.id))
  const out = new Map<string, string[]>()
  for (const [i, c] of list.entries()) {
    if (c === null || typeof c !== 'object' || typeof c.id !== 'string' || typeof c.completion !== 'string') {
      throw new RecodeError('ERR_DATA', `${source}: completion ${i + 1} must be {id: string, completion: string}`)
    }
    if (!known.has(c.id)) continue
    const arr = out.get(c.id) ?? []
    arr.push(c.completion)
    out.set(c.id, arr)
  }
  return out
}

/** Scores samples on a benchmark. */
export async function evaluate(options: EvaluateOptions): Promise<EvaluationResult> {
  if (options === null || typeof options !== 'object') throw invalidArg('evaluate needs an options object')
  if (options.sandbox !== undefined) optionsArg(options.sandbox, 'evaluate', 'options.sandbox')
  if ((options.model === undefined) === (options.completions === undefined))
    throw invalidArg('evaluate needs exactly one of model and completions')
  const ks = options.k ?? [1, 5]
  for (const k of ks) if (!Number.isInteger(k) || k < 1) throw invalidArg(`k values must be positive integers, got ${k}`)
  if (options.signal?.aborted === true) throw abortError()
  const { items, dataName } = loadItems(options)
  const sandbox = { ...(options.sandbox ?? {}) }
  if (options.benchmark === 'codeupdatearena' && sandbox.preimport === undefined) sandbox.preimport = CODEUPDATEARENA_PREIMPORT
  // The interpreter is tried first so that one that cannot start is reported with its reason.
  const py = probePython(sandbox.python)
  if (py.error !== undefined) throw new RecodeError('ERR_PYTHON', `evaluate: cannot run the Python interpreter '${py.python}': ${py.error}`)
  // Refuses (ERR_SANDBOX_WEAK) before any work where isolation is weaker than full and not allowed; the
  // summary states the protections measured here with this run's limits.
  const probed = probeIsolation(sandbox.python, sandbox.isolation ?? 'auto', sandbox.allowWeakIsolation === true)
  const isolation: IsolationInfo = {
    ...probed,
    summary: describeIsolation(probed, sandbox) + (probed.missing.length > 0 ? `; missing: ${probed.missing.join(', ')}` : '')
  }

  const t0 = Date.now()
  let samples: Map<string, string[]>
  if (options.model !== undefined) {
    samples = await generateSamples(options.model, items, options)
  } else {
    const list = typeof options.completions === 'string' ? loadCompletions(options.completions) : (options.completions as Completion[])
    if (!Array.isArray(list)) throw invalidArg('completions must be a file path or a list of {id, completion}')
    const allIds = new Set(items.map((i) => i.id))
    if (options.ids === undefined && options.limit === undefined) {
      const unknown = list.find((c) => c !== null && typeof c === 'object' && typeof c.id === 'string' && !allIds.has(c.id))
      if (unknown !== undefined) throw new RecodeError('ERR_DATA', `completion id '${unknown.id}' is not a problem of ${dataName}`)
    }
    samples = groupCompletions(list, items, typeof options.completions === 'string' ? options.completions : 'completions')
  }
  const t1 = Date.now()
  const scored = items.filter((it) => (samples.get(it.id)?.length ?? 0) > 0)
  const missing = items.length - scored.length
  if (scored.length === 0) throw new RecodeError('ERR_DATA', 'no problem has a completion')

  // Pass 1: every sample's programs (with the update for CodeUpdateArena).
  interface Job {
    record: SampleRecord
    item: Item
    code: string | null
    programs: string[]
  }
  const jobs: Job[] = []
  const records: ProblemRecord[] = []
  for (const it of scored) {
    const texts = samples.get(it.id) as string[]
    const rec: ProblemRecord = {
      id: it.id,
      package: it.package,
      updateType: it.updateType,
      n: texts.length,
      c: 0,
      passAtK: {},
      samples: []
    }
    for (const [index, text] of texts.entries()) {
      const ex = extractCode(text)
      const testsTotal = it.arena !== undefined ? it.arena.unitTests.length : 1
      const record: SampleRecord = { index, passed: false, category: 'no_code', testsPassed: 0, testsTotal, extraction: ex.method }
      rec.samples.push(record)
      if (ex.code === null) {
        record.errorType = 'no code'
        record.message = 'no code block found in the output'
        continue
      }
      const programs =
        it.arena !== undefined
          ? codeUpdateArenaPrograms(it.arena, ex.code, true).map((p) => p.source)
          : [humanEvalProgram(it.human as HumanEvalProblem, text, ex)]
      jobs.push({ record, item: it, code: ex.code, programs })
    }
    records.push(rec)
  }
  const concurrency = sandbox.concurrency ?? defaultConcurrency()
  const flat = jobs.flatMap((j) => j.programs)
  let programsRun = 0
  const progressBase = { done: 0, total: flat.length }
  const runAll = async (sources: string[]): Promise<ReturnType<typeof runPrograms>> => {
    const res = await runPrograms(sources, {
      ...sandbox,
      concurrency,
      signal: options.signal,
      onProgress: (p) => options.onProgress?.({ phase: 'execute', done: progressBase.done + p.done, total: progressBase.total })
    })
    progressBase.done += sources.length
    programsRun += sources.length
    return res
  }
  const results = await runAll(flat)
  let at = 0
  for (const job of jobs) {
    const runs = results.slice(at, at + job.programs.length)
    at += job.programs.length
    let firstFailure = null
    for (const r of runs) {
      const f = classifyRun(r)
      if (f === null) job.record.testsPassed++
      else if (firstFailure === null) firstFailure = f
    }
    if (firstFailure === null) {
      job.record.passed = true
      job.record.category = 'passed'
    } else {
      job.record.category = firstFailure.category
      job.record.errorType = firstFailure.errorType
      job.record.message = firstFailure.message
    }
  }

  // Pass 2 (CodeUpdateArena): passing samples again without the update. Only they can UPass.
  const upass = options.benchmark === 'codeupdatearena' && options.upass !== false
  if (upass) {
    const passing = jobs.filter((j) => j.record.passed)
    const woPrograms = passing.map((j) =>
      codeUpdateArenaPrograms(j.item.arena as CodeUpdateArenaProblem, j.code as string, false).map((p) => p.source)
    )
    progressBase.total += woPrograms.reduce((s, p) => s + p.length, 0)
    const woResults = await runAll(woPrograms.flat())
    let k = 0
    passing.forEach((j, i) => {
      const runs = woResults.slice(k, k + woPrograms[i].length)
      k += woPrograms[i].length
      const allPassWithout = runs.every((r) => r.status === 'ok')
      j.record.passedWithoutUpdate = allPassWithout
      j.record.upassed = !allPassWithout
    })
    for (const j of jobs) if (!j.record.passed) j.record.upassed = false
    for (const rec of records) for (const s of rec.samples) if (s.upassed === undefined) s.upassed = false
  }
  const t2 = Date.now()

  const failures: Record<FailureCategory, number> = { syntax_error: 0, exception: 0, assertion: 0, timeout: 0, no_code: 0 }
  for (const rec of records) {
    rec.c = rec.samples.filter((s) => s.passed).length
    for (const s of rec.samples) if (s.category !== 'passed') failures[s.category]++
    for (const k of ks) rec.passAtK[String(k)] = passAtK(rec.n, rec.c, k)
    if (upass) {
      rec.u = rec.samples.filter((s) => s.upassed === true).length
      rec.upassAtK = {}
      for (const k of ks) rec.upassAtK[String(k)] = passAtK(rec.n, rec.u, k)
    }
  }
  const aggregate = (recs: ProblemRecord[], field: 'c' | 'u'): Record<string, number | null> =>
    Object.fromEntries(
      ks.map((k) => [
        String(k),
        meanPassAtK(
          recs.map((r) => ({ n: r.n, c: r[field] ?? 0 })),
          k
        )
      ])
    )

  const result: EvaluationResult = {
    benchmark: options.benchmark,
    data: dataName,
    problems: records.length,
    missing,
    samplesPerProblem: { min: Math.min(...records.map((r) => r.n)), max: Math.max(...records.map((r) => r.n)) },
    k: ks,
    passAtK: aggregate(records, 'c'),
    failures,
    programsRun,
    isolation,
    seconds: { generate: (t1 - t0) / 1000, execute: (t2 - t1) / 1000 },
    records
  }
  if (upass) result.upassAtK = aggregate(records, 'u')
  if (options.benchmark === 'codeupdatearena') {
    const byPkg = new Map<string, ProblemRecord[]>()
    for (const r of records) {
      const list = byPkg.get(r.package ?? '?') ?? []
      list.push(r)
      byPkg.set(r.package ?? '?', list)
    }
    result.perPackage = Object.fromEntries(
      [...byPkg.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([pkg, recs]) => [
          pkg,
          {
            problems: recs.length,
            passAtK: aggregate(recs, 'c'),
            upassAtK: upass ? aggregate(recs, 'u') : {}
          }
        ])
    )
  }
  return result
}

/** The Markdown table `recode eval` prints: overall and per package, then failure counts. */
export function formatEvaluation(r: EvaluationResult): string {
  const pct = (v: number | null | undefined): string => (v === null || v === undefined ? 'n/a' : (100 * v).toFixed(1))
  const cols = r.k.flatMap((k) => (r.upassAtK !== undefined ? [`pass@${k}`, `UPass@${k}`] : [`pass@${k}`]))
  const row = (name: string, problems: number, pass: Record<string, number | null>, up?: Record<string, number | null>): string =>
    `| ${name} | ${problems} | ` +
    r.k.flatMap((k) => (up !== undefined ? [pct(pass[String(k)]), pct(up[String(k)])] : [pct(pass[String(k)])])).join(' | ') +
    ' |'
  const lines = [
    `| ${r.benchmark === 'codeupdatearena' ? 'package' : 'benchmark'} | problems | ${cols.join(' | ')} |`,
    `|---|---:|${cols.map(() => '---:').join('|')}|`
  ]
  if (r.perPackage !== undefined) {
    for (const [pkg, s] of Object.entries(r.perPackage))
      lines.push(row(pkg, s.problems, s.passAtK, r.upassAtK !== undefined ? s.upassAtK : undefined))
  }
  lines.push(row(r.perPackage !== undefined ? '**all**' : r.benchmark, r.problems, r.passAtK, r.upassAtK))
  const f = r.failures
  lines.push(
    '',
    `failed samples: ${f.syntax_error} syntax error, ${f.exception} exception, ${f.assertion} assertion, ${f.timeout} timeout, ${f.no_code} no code` +
      ` (${r.programsRun} programs in ${r.seconds.execute.toFixed(1)} s)`,
    `sandbox: ${r.isolation.summary}`
  )
  if (r.missing > 0) lines.push(`${r.missing} problem(s) had no completion and are not scored`)
  const undefinedK = r.k.filter((k) => r.passAtK[String(k)] === null)
  if (undefinedK.length > 0)
    lines.push(`pass@k for k = ${undefinedK.join(', ')} is not reported: more than the ${r.samplesPerProblem.max} sample(s) per problem`)
  return lines.join('\n')
}
